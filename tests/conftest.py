"""Shared fixtures; shared helpers are in tests/_helpers.py.

Markers (registered in pyproject.toml):

- ``slow``: multi-second tests (subprocesses, sharding, notebooks).
- ``compiler("reason")``: the test asserts on the compiled program rather than on what the
  optimizer computes: cond equations in a jaxpr, XLA's temporary buffer bytes, all-reduces in
  the HLO, the numbers a benchmark prints from them. The reason, one line, says what it reads.
  These tests run by default. A new jax or XLA release may change what they read without
  anything being wrong: there, run ``python -m pytest -m "not compiler"`` for the behaviour,
  then look at each failing ``compiler`` test's reason before updating its numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def run_worker():
    """Runs a worker script in a fresh CPU-only Python process and asserts it succeeded.

    A fresh process is how a test gets JAX flags that must be set before jax is imported
    (host device count, x64) without touching the pytest process.
    """

    def run(script: Path, *args: object, timeout: float) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env["JAX_PLATFORMS"] = "cpu"
        env.pop("JAX_ENABLE_X64", None)
        completed = subprocess.run(
            [sys.executable, str(script), *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
        return completed

    return run


def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in item.iter_markers("compiler"):
            if len(mark.args) != 1 or not isinstance(mark.args[0], str) or mark.kwargs:
                raise pytest.UsageError(
                    f"{item.nodeid}: pytest.mark.compiler takes one argument, a one-line reason"
                )
