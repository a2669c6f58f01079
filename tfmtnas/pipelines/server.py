"""A worker or parameter server of a ``--strategy=parameter_server`` cluster.

Reads ``TF_CONFIG`` (task type ``worker`` or ``ps``) and serves until stopped; the chief
runs ``tfmtnas-train --strategy=parameter_server`` and sends it work.

Example:
    TF_CONFIG='{"cluster": {"chief": ["a:2222"], "worker": ["b:2222"], "ps": ["c:2222"]},
                "task": {"type": "ps", "index": 0}}' tfmtnas-server
"""

from __future__ import annotations

from absl import app

from tfmtnas.pipelines.errors import binary_main, run_binary


@binary_main("tfmtnas-server")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tfmtnas.distribute import serve

    serve()


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
