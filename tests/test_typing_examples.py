"""The type-checked examples (tests/typing_examples.py, checked by mypy in .ci/run) also run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import typing_examples  # noqa: E402


def test_typing_examples_run() -> None:
    typing_examples.run_all()
