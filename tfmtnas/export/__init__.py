"""Ship trained models to TF Serving: versioned SavedModels with named signatures.

- :func:`export_saved_model`: a trained model (baseline or derived child) to
  ``<root>/<name>/<version>/``, written aside and renamed into place.
- Signatures (:mod:`tfmtnas.export.signatures`): ``serving_default`` takes one named input
  per raw feature; ``predict_examples`` takes serialized ``tf.Example`` strings; both
  return one output per task.
- :mod:`tfmtnas.export.metadata`: what ``assets.extra/tfmtnas.json`` records
  (:class:`ExportMetadata`, :func:`read_metadata`).
- :class:`SavedModelPredictor`: batch predictions from an exported folder.
- :mod:`tfmtnas.export.client`: TF Serving gRPC requests and REST bodies from raw rows
  (needs ``tensorflow-serving-api``, the ``serving`` extra).
- :class:`tfmtnas.export.capi.CApiSession`: load and run an export through TensorFlow's C
  API, the C++ path a model server takes (checks and latency without Python's call cost;
  imported on demand, it is not loaded by ``import tfmtnas.export``).

Example:
    >>> path = export_saved_model(model, "saved_models", name="mmoe")
    >>> SavedModelPredictor(path).predict(rows)
"""

from tfmtnas.export.inputs import to_columns
from tfmtnas.export.metadata import METADATA_FILE, ExportMetadata, read_metadata
from tfmtnas.export.predictor import SavedModelPredictor
from tfmtnas.export.saved_model import export_saved_model, load_signatures, write_saved_model
from tfmtnas.export.signatures import (
    EXAMPLES_INPUT,
    EXAMPLES_SIGNATURE,
    SERVING_SIGNATURE,
    ServingModule,
    example_feature_description,
    serving_input_specs,
)
from tfmtnas.export.versions import VersionExistsError, existing_versions, next_version

__all__ = [
    "EXAMPLES_INPUT",
    "EXAMPLES_SIGNATURE",
    "METADATA_FILE",
    "SERVING_SIGNATURE",
    "ExportMetadata",
    "SavedModelPredictor",
    "ServingModule",
    "VersionExistsError",
    "example_feature_description",
    "existing_versions",
    "export_saved_model",
    "load_signatures",
    "next_version",
    "read_metadata",
    "serving_input_specs",
    "to_columns",
    "write_saved_model",
]
