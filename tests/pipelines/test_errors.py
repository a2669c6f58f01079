"""What every binary's main shares: WARNING logging by default, one-line user errors."""

import pytest
from absl import flags, logging

from tfmtnas.data.base import DataError
from tfmtnas.pipelines.errors import binary_main


@pytest.fixture
def verbosity():
    flag = flags.FLAGS["verbosity"]
    old_level, old_present = logging.get_verbosity(), flag.present
    logging.set_verbosity(logging.INFO)
    yield flag
    flag.present = old_present
    logging.set_verbosity(old_level)


def _level_seen_by_main():
    return binary_main("tfmtnas-x")(lambda argv: logging.get_verbosity())([])


def test_binaries_log_at_warning_unless_verbosity_is_given(verbosity):
    verbosity.present = 0
    assert _level_seen_by_main() == logging.WARNING
    logging.set_verbosity(logging.INFO)
    verbosity.present = 1  # as after --verbosity=0 on the command line
    assert _level_seen_by_main() == logging.INFO


def test_user_error_prints_one_line_and_exits_2(verbosity, capsys):
    @binary_main("tfmtnas-x")
    def main(argv):
        raise DataError("bad.csv:3: expected 5 fields, got 6")

    with pytest.raises(SystemExit) as done:
        main([])
    assert done.value.code == 2
    assert capsys.readouterr().err == "tfmtnas-x: error: bad.csv:3: expected 5 fields, got 6\n"


def test_user_error_class_is_narrow(verbosity, capsys):
    """A bug raising ValueError or KeyError is not dressed up as bad input."""

    for bug in (ValueError("internal invariant broken"), KeyError("weights")):
        @binary_main("tfmtnas-x")
        def main(argv, bug=bug):
            raise bug

        with pytest.raises(type(bug)):
            main([])
    assert capsys.readouterr().err == ""


def test_every_user_error_kind_is_one_line(verbosity, capsys):
    from tfmtnas.errors import MissingFileError, UserError
    from tfmtnas.export.versions import VersionExistsError

    for err in (UserError("--csv_hash wants name:bins"), MissingFileError("runs/x: no model"),
                VersionExistsError("Version 1 of m already exists")):
        @binary_main("tfmtnas-x")
        def main(argv, err=err):
            raise err

        with pytest.raises(SystemExit) as done:
            main([])
        assert done.value.code == 2
        assert capsys.readouterr().err == f"tfmtnas-x: error: {err}\n"


_SCRIPT = """
import sys
from absl import app
from tfmtnas.errors import DataError
from tfmtnas.pipelines.errors import binary_main

@binary_main("tfmtnas-x")
def main(argv):
    if sys.argv[-1] == "bug":
        raise ValueError("internal invariant broken")
    raise DataError("bad.csv:3: expected 5 fields, got 6")

app.run(main)
"""


@pytest.mark.parametrize("case, code", [("bug", 1), ("user", 2)])
def test_binary_exit_codes_in_a_real_process(case, code, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "binary.py"
    script.write_text(_SCRIPT)
    done = subprocess.run([sys.executable, str(script), case], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == code, done.stderr[-2000:]
    if case == "bug":
        assert "Traceback" in done.stderr and "internal invariant broken" in done.stderr
    else:
        assert "Traceback" not in done.stderr
        assert done.stderr.endswith("\ntfmtnas-x: error: bad.csv:3: expected 5 fields, got 6\n")
