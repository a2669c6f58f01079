"""What every binary's ``main`` shares: quiet logging, one-line errors for bad input, and
help that lists the binary's flags however it is started.

Only :class:`~tfmtnas.errors.UserError` (bad flags, data, model dirs) becomes a one-line
message with exit status 2. Any other exception is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from absl import app, flags, logging

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


def run_binary(main: Callable, module: str) -> None:
    """``app.run(main)`` for the binary module named ``module`` (pass its ``__name__``).

    absl's ``--helpshort`` (and ``--help``) lists the key flags of the module named
    ``sys.argv[0]``: the binary's own module under ``python -m``, but the launcher script
    when the binary runs as an installed console script (``tfmtnas-train``), which defines
    no flag. The binary's key flags are made the launcher's too, and the binary's docstring
    becomes the usage text when the launcher has none.
    """
    main_module = sys.modules["__main__"]
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    if not getattr(main_module, "__doc__", None):
        main_module.__doc__ = sys.modules[module].__doc__
    app.run(main)
