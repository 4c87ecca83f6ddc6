"""Shared fixtures."""

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
