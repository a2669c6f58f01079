"""``tfmtnas-prepare``: one streaming pass from CSV/TSV click logs to a prepared dataset folder.

Writes train/validation/test shards of ``tf.Example`` records, ``spec.json``, vocabulary
files and ``manifest.json`` into ``--output_dir`` (see :mod:`tfmtnas.data.prepare`), prints
progress lines to stderr and a JSON summary to stdout.

Example:
    tfmtnas-prepare --input='logs/clicks-*.csv.gz' --output_dir=clicks_prepared \\
        --labels=click:binary,buy:binary --numeric=price,dwell --log_numeric=price \\
        --key_column=user --hash_columns=query:1000000 --bad_rows=skip
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from tfmtnas.pipelines import flags as pipeline_flags
from tfmtnas.pipelines.errors import binary_main, run_binary

pipeline_flags.define_prepare_flags()
flags.adopt_module_key_flags(pipeline_flags)  # --helpshort lists them


def _print_progress(progress) -> None:
    print(f"tfmtnas-prepare: {progress}", file=sys.stderr, flush=True)


@binary_main("tfmtnas-prepare")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tfmtnas.data.prepare import prepare

    manifest = prepare(**pipeline_flags.prepare_options(), progress=_print_progress)
    print(json.dumps({
        "output_dir": pipeline_flags.FLAGS.output_dir,
        "rows": {s: v["rows"] for s, v in manifest["splits"].items()},
        "skipped_rows": manifest["skipped_rows"],
        "seconds": manifest["seconds"], "rows_per_second": manifest["rows_per_second"],
    }, indent=1))


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
