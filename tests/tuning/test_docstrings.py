"""The tuning package's docstring examples run."""

import doctest

import pytest

from tfmtnas.tuning import cost, objective, pareto, space


@pytest.mark.parametrize("module", [space, objective, pareto, cost])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
