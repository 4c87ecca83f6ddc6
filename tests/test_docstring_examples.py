"""Every docstring example in the library runs and prints what it says."""

import doctest
import importlib

import pytest

MODULES = [
    "lookax.lookahead",
    "lookax.replicas",
    "lookax.outer",
    "lookax.transforms",
    "lookax.optimizers",
    "lookax.grouping",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
