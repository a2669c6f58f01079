"""What every binary's ``main`` shares: quiet logging and one-line errors for bad input.

Only :class:`~tfmtnas.errors.UserError` (bad flags, data, model dirs) becomes a one-line
message with exit status 2. Any other exception is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from absl import flags, logging

from tfmtnas.errors import UserError

USER_ERRORS = (UserError,)


def binary_main(program: str) -> Callable:
    """Decorate a binary's ``main``: a user error prints ``program: error: ...`` and exits 2.

    A :class:`~tfmtnas.errors.UserError` prints its one line; anything else propagates, so
    ``app.run`` prints the traceback and exits 1.

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
                message = " ".join(str(err).split("\n"))
                print(f"{program}: error: {message}", file=sys.stderr)
                sys.exit(2)

        return run

    return wrap
