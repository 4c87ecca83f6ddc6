"""Smoke tests: ``benchmarks/step_time.py --quick`` and ``compile_floor.py --quick`` run."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    """Runs ``benchmarks/<script>`` in a clean JAX environment (float32, one device)."""
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_step_time_quick_prints_its_tables():
    result = _run_benchmark("step_time.py", "--quick", "--no-torch")
    out = result.stdout
    assert result.returncode == 0, result.stderr[-4000:]
    assert "## Machine" in out and "axpy bandwidth in this set" in out
    for tree in ("one leaf (quick)", "ResNet-50 stem /8 (quick)", "small leaves (quick)"):
        assert f"### {tree} -- Lookahead(Adam), k=5, alpha=0.5" in out, tree
        assert f"### {tree} -- leaf grouping" in out, tree
        if "small" not in tree:
            assert f"### {tree} -- Lookahead(Adam) with the gradients made inside the step" in out
        assert "PyTorch: skipped (not used (--no-torch))" in out
    # a timing row and a compile/memory row of the lead's Lookahead, with numbers
    rows = [line for line in out.splitlines() if line.startswith("| lookax.lookahead(optax.adam)")]
    assert len(rows) >= 6, out[-3000:]
    timing = [r for r in rows if len(r.strip("|").split("|")) == 9]
    compiled = [r for r in rows if len(r.strip("|").split("|")) == 15]
    assert len(timing) >= 6 and len(compiled) >= 6, rows
    for row in timing:  # ms/step, ratio to optax.adam, ..., MB/step
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and float(cells[5]) >= 0, row
    for row in compiled:  # DESIGN.md section 6: no temporary beyond the inner step's
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert 0 < int(cells[6]) <= int(cells[5]), row  # distinct kernels, kernels
        # one cond (the deferred copy), plus the gradient maker's where there is one
        assert int(cells[8]) == (2 if "(grads made in the step)" in row else 1), row
        # temp - ref, in params-sized buffers (a few scalars show on the tiny quick trees)
        assert abs(float(cells[13])) <= 0.1, row
    # the wide slow dtype materializes the inner updates: its temp is visible
    wide = [
        line.strip("|").split("|")
        for line in out.splitlines()
        if line.startswith("| lookax.lookahead(optax.adam, slow_dtype=float32)")
    ]
    wide_compiled = [cells for cells in wide if len(cells) == 15]
    assert len(wide_compiled) == 2, wide  # the two large quick trees
    assert all(float(cells[13]) >= 0.4 for cells in wide_compiled), wide_compiled
    assert "### one leaf (quick) -- each lookax optimizer / its optax twin" in out
    for name in ("sgd(momentum=0.9)", "adam", "adamw(wd=1e-2)", "adadelta", "lion", "rmsprop"):
        assert f"| {name}" in out, name
    assert "## Goals (DESIGN.md section 6)" in out
    assert "total run time:" in out


@pytest.mark.slow
def test_compile_floor_quick_prints_its_table():
    result = _run_benchmark("compile_floor.py", "--quick")
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[1].isdigit():
            rows[cells[0]] = cells
    assert set(rows) == {
        "optax.adam",
        "lookax.lookahead(optax.adam)",
        "probe: u crosses a cond, branch -u",
        "probe: u crosses a cond, branch swaps",
    }, result.stdout
    for name, (_, kernels, distinct, _, seconds, ratio) in rows.items():
        assert 0 < int(distinct) <= int(kernels), name
        assert float(seconds) > 0 and float(ratio) > 0, name
    # the cond's materialized updates and its sync branch add distinct kernels to Adam's
    assert int(rows["lookax.lookahead(optax.adam)"][2]) > int(rows["optax.adam"][2])
    assert "elementwise kernels: one shape" in result.stdout
