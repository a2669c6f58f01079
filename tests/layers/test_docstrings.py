"""The examples in the layers' docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = ["experts", "gates", "gating", "mmoe", "ple", "shared_bottom", "cross_stitch", "towers"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"tfmtnas.layers.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
