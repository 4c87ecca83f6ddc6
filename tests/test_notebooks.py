"""The notebooks in notebooks/ run top to bottom, and are committed executed.

Each notebook is executed with nbclient in a fresh kernel (the ``python3`` kernel of this
environment, from ipykernel), from a copy in a temporary directory so the committed file is
never rewritten; any cell error fails the test, and each cell has a time limit. The
notebooks carry their own assertions (schedules against textbook formulas, Lookahead
against the paper's hand-worked example), so running them checks numbers, not only that
they run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["trajectories.ipynb", "schedules.ipynb", "flax_training.ipynb"]
CELL_TIMEOUT_S = 300  # each notebook runs in about a minute on 2 cores


def test_the_expected_notebooks_exist():
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_with_outputs_and_no_errors(name):
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    for index, cell in enumerate(code_cells):
        assert cell.get("execution_count") is not None, f"{name}: code cell {index} never ran"
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"{name}: code cell {index} has an error"
    figures = sum(
        "image/png" in output.get("data", {}) for cell in code_cells for output in cell.outputs
    )
    assert figures >= 1, f"{name}: no figure in the committed outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_top_to_bottom(name, tmp_path):
    source = NOTEBOOKS_DIR / name
    copy = tmp_path / name
    shutil.copy(source, copy)
    notebook = nbformat.read(copy, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
