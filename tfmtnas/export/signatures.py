"""The serving graph: raw features in, one named output per task; preprocessing included.

Two signatures are exported (names in :data:`SERVING_SIGNATURE`, :data:`EXAMPLES_SIGNATURE`):

``serving_default``
    One input per raw feature, named exactly as the feature, shape ``[None]``; ``string`` for
    categorical features (the values as they appear in the data), ``float32`` for numeric
    ones. Each input gets its own named ``TensorSpec``: a ``tf.function`` taking one dict
    argument would export inputs named ``f``, ``f_1``, ... instead of the feature names.

``predict_examples``
    One input ``examples``: serialized ``tf.Example`` protos, shape ``[None]``, parsed with
    :func:`example_feature_description`. A feature absent from an example takes the
    training default: a categorical feature the out-of-vocabulary id (it is parsed as
    :data:`MISSING_CATEGORY`, a value no vocabulary holds; a hashed feature hashes it like
    any other string), a numeric feature the training mean (it is parsed as NaN, which is
    imputed, see below).

Non-finite numbers: a NaN or infinite numeric input (in either signature) is imputed with the
training mean of that feature (its normalised value is 0), the same value a missing numeric
feature of a ``tf.Example`` gets; the prediction stays finite. Clients that want such
requests refused must check before sending.

Both return one output per task, named as the task, float32: ``[None]`` holding the
probability of a binary task or the value of a regression task, and ``[None, K]`` for a
``K``-class task, column ``j`` holding the probability of class id ``j`` (each row sums to
1); :func:`output_details` describes them as the export metadata records them. The graph
holds only TensorFlow ops (lookups, hashing, parsing, the model): no ``tf.py_function``, so
TF Serving runs it as is.

The model only has to follow the tfmtnas model contract: ``model.spec`` (a
:class:`~tfmtnas.features.FeatureSpec`), ``model.tasks`` (:class:`~tfmtnas.features.TaskSpec`
s) and ``model(preprocessed) -> {task name: tensor}`` where ``preprocessed`` is what
:class:`~tfmtnas.features.FeaturePreprocessor` returns. Baselines
(:class:`~tfmtnas.models.MultiTaskModel`) and derived children both qualify.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import tensorflow as tf

from tfmtnas import keras
from tfmtnas.errors import UserError
from tfmtnas.features import FeaturePreprocessor, FeatureSpec, TaskSpec

SERVING_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "predict_examples"
EXAMPLES_INPUT = "examples"
# What a categorical feature missing from a tf.Example is parsed as: out of vocabulary.
MISSING_CATEGORY = "\x00missing\x00"

# What a SignatureDef input can be called without TensorFlow renaming it (tf.function
# replaces every other character by "_" and prefixes names not starting with a letter).
_INPUT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def check_exportable_names(spec: FeatureSpec) -> None:
    """Raise ``ValueError`` if a feature name cannot be a signature input name as it is.

    TensorFlow would silently rename such an input (``item-id`` becomes ``item_id``), so a
    client sending the feature's real name would be refused. Rename the column instead.
    """
    bad = [n for n in spec.names if not _INPUT_NAME.match(n)]
    if bad:
        raise UserError(
            f"Feature names {bad} cannot be serving input names: use letters, digits and "
            f"'_', starting with a letter (TensorFlow would rename them).")


def serving_input_specs(spec: FeatureSpec) -> list[tf.TensorSpec]:
    """One named ``TensorSpec([None])`` per raw feature, in ``spec.names`` order."""
    return [tf.TensorSpec([None], spec.raw_dtype(name), name=name) for name in spec.names]


def example_feature_description(spec: FeatureSpec) -> dict[str, tf.io.FixedLenFeature]:
    """The ``tf.io.parse_example`` description of the raw features.

    Categorical: ``string`` scalar, default :data:`MISSING_CATEGORY` (out of vocabulary).
    Numeric: ``float32`` scalar, default NaN (imputed with the training mean).
    """
    out = {}
    for f in spec.categorical:
        out[f.name] = tf.io.FixedLenFeature([], tf.string, default_value=MISSING_CATEGORY)
    for f in spec.numeric:
        out[f.name] = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
    return out


def _model_contract(model) -> tuple[FeatureSpec, tuple[TaskSpec, ...]]:
    spec = getattr(model, "spec", None)
    tasks = getattr(model, "tasks", None)
    if not isinstance(spec, FeatureSpec) or not tasks or not callable(model):
        raise TypeError(
            f"Cannot export {type(model).__name__}: a tfmtnas model needs .spec (a "
            f"FeatureSpec), .tasks (TaskSpecs) and a call on preprocessed features.")
    tasks = tuple(tasks)
    if not all(isinstance(t, TaskSpec) for t in tasks):
        raise TypeError(f"model.tasks must be TaskSpec objects, got {tasks!r}.")
    return spec, tasks


def output_shape(task: TaskSpec) -> list[int | None]:
    """The shape of ``task``'s signature output: ``[None]``, or ``[None, K]`` for multiclass."""
    return [None, task.num_classes] if task.kind == "multiclass" else [None]


def output_details(tasks) -> dict[str, dict]:
    """``{task: {"kind", "shape", "value"}}``: what each signature output holds.

    Example:
        >>> output_details([TaskSpec("digit", "multiclass:3")])["digit"]["shape"]
        [None, 3]
    """
    values = {"binary": "probability of the positive label (1)",
              "regression": "predicted value"}
    out = {}
    for t in tasks:
        value = values.get(t.kind) or (f"probability of each class id 0..{t.num_classes - 1}: "
                                       f"column j is P(class j); each row sums to 1")
        out[t.name] = {"kind": t.kind_text, "shape": output_shape(t), "value": value}
    return out


def _apply_model(model, preprocessed):
    if isinstance(model, keras.layers.Layer):
        return model(preprocessed, training=False)
    return model(preprocessed)


class ServingModule(tf.Module):
    """A ``tf.Module`` with the serving signatures of a trained tfmtnas model.

    Args:
        model: a trained model following the tfmtnas model contract (see module docstring).
        jit_compile: XLA-compile the model core (preprocessed numbers -> outputs) inside the
            signatures; string lookups and parsing stay outside. On census-sized MMoE the
            model core ran about 3x faster at batch 1 on CPU here (the whole call about
            1.35x), but TF Serving refuses XLA on CPU unless started with
            ``--xla_cpu_compilation_enabled=true``. Default False.

    Example:
        >>> module = ServingModule(model)
        >>> tf.saved_model.save(module, path, signatures=module.signatures())
    """

    def __init__(self, model, jit_compile: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.feature_spec, self.task_specs = _model_contract(model)
        check_exportable_names(self.feature_spec)
        # The model is reached through a plain function, not an attribute, so the SavedModel
        # does not carry what only training needs (optimizer slots, metric accumulators,
        # Keras' own per-layer traces): only the variables the signatures read are saved.
        self._apply_model = functools.partial(_apply_model, model)
        self.jit_compile = bool(jit_compile)
        if self.jit_compile:
            self._apply_model = tf.function(self._apply_model, jit_compile=True,
                                            autograph=False, reduce_retracing=True)
        self.preprocessor = FeaturePreprocessor(self.feature_spec, name="preprocessor")
        self._names = list(self.feature_spec.names)
        self._build()
        # autograph=False: nothing here needs it, and tracing then never re-reads source.
        self.serve = tf.function(self._serve_positional, autograph=False,
                                 input_signature=serving_input_specs(self.feature_spec))
        self.serve_examples = tf.function(
            self._serve_examples, autograph=False,
            input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
        used = {}
        for fn in self.signatures().values():
            used.update({id(v): v for v in fn.variables})
        self.model_variables = list(used.values())

    def _build(self) -> None:
        """Create every variable eagerly (tracing must not create them) and check outputs."""
        one = {n: tf.constant([""]) if self.feature_spec.raw_dtype(n) == tf.string
               else tf.constant([0.0]) for n in self._names}
        out = self.predict(one)
        for task in self.task_specs:
            expected = [1, *output_shape(task)[1:]]
            if out[task.name].shape.as_list() != expected:
                raise ValueError(f"Task {task.name!r}: the model returned shape "
                                 f"{out[task.name].shape} for one example, expected "
                                 f"{expected}.")

    def predict(self, features: Mapping[str, tf.Tensor],
                check_shapes: bool = True) -> dict[str, tf.Tensor]:
        """Raw feature tensors ``[B]`` -> ``{task: float32 [B] or [B, K]}`` (what both
        signatures run).

        ``check_shapes=False`` skips the in-graph shape checks, for inputs that cannot be
        wrong (``tf.io.parse_example`` output).
        """
        if check_shapes:
            features = self._check_batch(features)
        raw_out = self._apply_model(self.preprocessor(features))
        missing = [t.name for t in self.task_specs if t.name not in raw_out]
        if missing:
            raise ValueError(f"The model returned no output for tasks {missing}; "
                             f"got {sorted(raw_out)}.")
        return {t.name: tf.reshape(tf.cast(raw_out[t.name], tf.float32),
                                   [-1, *output_shape(t)[1:]])
                for t in self.task_specs}

    def _check_batch(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One value per example for every feature, all of one length; errors name features.

        A loaded signature does not check the shapes it is called with, so the graph does.
        The ranks are taken at run time: with the declared shape ``[None]`` both Python and
        Grappler would fold ``Rank`` to 1 and drop the check, so the tensors pass through an
        ``Optional`` whose declared element shape is unknown (no copy, two cheap ops).
        """
        names = self._names
        values = [features[n] for n in names]
        opaque = tf.raw_ops.OptionalGetValue(
            optional=tf.raw_ops.OptionalFromValue(components=values),
            output_types=[v.dtype for v in values],
            output_shapes=[tf.TensorShape(None)] * len(values))
        ranks = tf.stack([tf.raw_ops.Rank(input=v) for v in opaque])
        name_table = tf.constant(names)
        rank_ok = tf.debugging.Assert(
            tf.reduce_all(tf.equal(ranks, 1)),
            ["Every feature must be a vector of shape [batch] (one value per example); "
             "features of another rank:", tf.boolean_mask(name_table, ranks != 1)],
            summarize=len(names))
        with tf.control_dependencies([rank_ok]):
            rows = tf.stack([tf.shape(v)[0] for v in values])
        rows_ok = tf.debugging.Assert(
            tf.reduce_all(tf.equal(rows, rows[0])),
            [f"Every feature needs one value per example; features whose number of values "
             f"differs from that of {names[0]}:", tf.boolean_mask(name_table, rows != rows[0]),
             "values per feature:", rows],
            summarize=2 * len(names))
        with tf.control_dependencies([rows_ok]):
            return {n: tf.identity(v) for n, v in zip(names, values)}

    def _serve_positional(self, *features):
        return self.predict(dict(zip(self._names, features)))

    def _serve_examples(self, examples):
        parsed = tf.io.parse_example(examples, example_feature_description(self.feature_spec))
        return self.predict(parsed, check_shapes=False)

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """``{signature name: concrete function}`` for ``tf.saved_model.save``."""
        return {SERVING_SIGNATURE: self.serve.get_concrete_function(),
                EXAMPLES_SIGNATURE: self.serve_examples.get_concrete_function()}


def signature_inputs(spec: FeatureSpec) -> dict[str, list[str]]:
    """Input names of each signature (what clients must send)."""
    return {SERVING_SIGNATURE: list(spec.names), EXAMPLES_SIGNATURE: [EXAMPLES_INPUT]}
