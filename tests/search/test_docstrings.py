"""The search package's docstring examples run."""

import doctest

import pytest
import tensorflow as tf

from tfmtnas.search import analysis, methods, network, spec, streams, usage, warm_start


@pytest.mark.parametrize("module", [spec, network, methods, analysis, usage, streams,
                                    warm_start])
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"tf": tf}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
