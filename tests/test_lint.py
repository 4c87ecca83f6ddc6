"""The code is lint-clean and formatted: ``ruff check`` and ``ruff format --check``.

The rules live in pyproject.toml (``[tool.ruff]``); fix a finding with
``ruff check --fix lookax tests benchmarks docs`` and ``ruff format lookax tests benchmarks docs``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["lookax", "tests", "benchmarks", "docs"]


@pytest.mark.parametrize(
    "command",
    [["check", "--no-cache"], ["format", "--check", "--no-cache"]],
    ids=["check", "format"],
)
def test_ruff(command: list[str]) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, (
        f"ruff {' '.join(command)} found problems:\n{completed.stdout}{completed.stderr}"
    )
