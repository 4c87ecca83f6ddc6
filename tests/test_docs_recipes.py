"""The runnable recipes of the documentation run, and their own assertions hold.

Every ```python block of docs/replicas.md is a whole program (the DiLoCo loop with the
overlapped step, a fault and the recovery line; Streaming DiLoCo with a fragment per
Flax block); each runs in a fresh process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "replicas.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def test_the_page_has_its_recipes():
    assert len(BLOCKS) == 2
    assert "sync_delay=1" in BLOCKS[0] and "replica_health" in BLOCKS[0]
    assert "fragments=one_fragment_per_block" in BLOCKS[1]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_recipe_runs(index, tmp_path):
    script = tmp_path / f"recipe_{index}.py"
    script.write_text(BLOCKS[index])
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
