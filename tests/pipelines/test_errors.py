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
