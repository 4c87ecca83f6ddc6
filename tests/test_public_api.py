"""What users see of the public API: type hints that resolve, examples on public names only."""

from __future__ import annotations

import inspect
import json
import re
import typing
from pathlib import Path

import jax
import optax
import pytest

import lookax
import lookax.mnist1d
from lookax import _mnist1d

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _public(module: typing.Any) -> list[str]:
    return [
        name
        for name in module.__all__
        if inspect.isfunction(getattr(module, name)) or inspect.isclass(getattr(module, name))
    ]


@pytest.mark.parametrize("name", _public(lookax))
def test_type_hints_resolve_for_every_public_function_and_class(name):
    # optax's Params is a Union holding the forward reference 'ArrayTree', which
    # typing.get_type_hints evaluates in the globals of the module that uses it.
    hints = typing.get_type_hints(getattr(lookax, name))
    assert all(hint is not None for hint in hints.values())


def test_type_hints_are_the_annotated_types():
    hints = typing.get_type_hints(lookax.adam)
    assert hints["return"] is optax.GradientTransformationExtraArgs
    hints = typing.get_type_hints(lookax.slow_params)
    assert jax.Array in typing.get_args(hints["params"])  # optax's ArrayTree, evaluated
    assert hints["keep_slow_dtype"] is bool
    assert typing.get_type_hints(lookax.LookaheadState)["count"] is jax.Array


@pytest.mark.parametrize("name", _public(lookax.mnist1d))
def test_type_hints_resolve_in_the_mnist1d_module(name):
    typing.get_type_hints(getattr(lookax.mnist1d, name))


def test_the_mnist1d_module_gives_what_the_notebooks_use():
    assert lookax.mnist1d.__doc__
    for name in lookax.mnist1d.__all__:
        assert getattr(lookax.mnist1d, name) is getattr(_mnist1d, name)
        assert getattr(lookax.mnist1d, name).__doc__, name
    assert "mnist1d" not in lookax.__all__  # it needs the [demo] extra: not imported by lookax


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebooks_import_public_names_only(path):
    private = re.compile(r"\blookax\._\w|\bfrom lookax import[^\n]*\b_\w")
    cells = json.loads(path.read_text())["cells"]
    found = [
        line
        for cell in cells
        for line in "".join(cell["source"]).splitlines()
        if private.search(line)
    ]
    assert not found, f"{path.name} uses private lookax names: {found}"


def test_there_are_notebooks_to_check():
    assert len(NOTEBOOKS) >= 3
