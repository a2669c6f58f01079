"""What every binary's ``main`` shares: quiet logging and one-line errors for bad input."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from absl import flags, logging

from tfmtnas.data.base import DataError

USER_ERRORS = (DataError, ValueError, KeyError, FileNotFoundError, NotADirectoryError)


def binary_main(program: str) -> Callable:
    """Decorate a binary's ``main``: a user error prints ``program: error: ...`` and exits 2.

    Logging is at WARNING unless ``--verbosity`` is given: TensorFlow's INFO lines about
    checkpoint sharding and SavedModel tracing would otherwise bury the progress and results.
    """

    def wrap(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(argv):
            if not flags.FLAGS["verbosity"].present:
                logging.set_verbosity(logging.WARNING)
            try:
                return main(argv)
            except USER_ERRORS as err:
                message = err.args[0] if isinstance(err, KeyError) and err.args else err
                print(f"{program}: error: {message}", file=sys.stderr)
                sys.exit(2)

        return run

    return wrap
