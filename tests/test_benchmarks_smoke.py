"""Smoke tests: the ``--quick`` modes of ``benchmarks/step_time.py``, ``train_step.py`` and
``replicas.py`` run and print their tables."""

from __future__ import annotations

import math
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


def _section_rows(out: str, title: str) -> list[list[str]]:
    """The cells of the table rows printed under the ``## <title>...`` heading."""
    section = out.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]  # no header


@pytest.mark.slow
def test_train_step_quick_prints_its_tables():
    result = _run_benchmark("train_step.py", "--quick")
    out = result.stdout
    assert result.returncode == 0, result.stderr[-4000:]
    pairs = {(m, i) for m in ("cnn", "lm") for i in ("adam(1e-3)", "sgd(0.1, momentum=0.9)")}
    # headline: ms/step, lookahead/plain and its interval, cpu, bytes and compile ratios;
    # no bound on times (they are noise on a shared machine)
    steps = _section_rows(out, "Step time: Lookahead / plain, whole training step")
    assert {(r[0], r[1]) for r in steps} == pairs and len(steps) == 4, out[-3000:]
    for row in steps:
        for cell in (row[2], row[3], row[4], row[6], row[8], row[9]):
            assert math.isfinite(float(cell)) and float(cell) > 0, row
        for ratio, interval in ((row[4], row[5]), (row[6], row[7])):  # wall, cpu
            if interval != "-":  # the median's interval: none from --quick's 2 rounds
                low, high = (float(x) for x in interval.split("-"))
                assert 0 < low <= float(ratio) <= high, row
    compiles = _section_rows(out, "Compile time")
    assert {(r[0], r[1]) for r in compiles} == pairs and len(compiles) == 4, out[-3000:]
    for row in compiles:
        assert all(float(c) > 0 for c in row[2:]), row
    memory = _section_rows(out, "Compiled memory")
    assert sorted((r[0], r[1], r[2]) for r in memory) == sorted(
        (m, i, step) for m, i in pairs for step in ("plain", "lookahead")
    ), out[-3000:]
    for row in memory:  # argument, output, alias, temp MB; the loss after the timed steps
        assert all(float(c) >= 0 for c in row[3:8]), row
        assert math.isfinite(float(row[11])), row
    goal = "goal (DESIGN.md section 6): whole training step Lookahead / plain <= 1.03:"
    assert goal in out and "the 95% interval settles it for" in out
    assert "total run time:" in out


@pytest.mark.slow
def test_replicas_quick_writes_its_table(tmp_path):
    result = _run_benchmark("replicas.py", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    text = (tmp_path / "replicas_quick.md").read_text()
    assert (tmp_path / "replicas_quick.png").stat().st_size > 0
    header = (
        "| method | H | replicas × batch | inner lr | test accuracy | Δ vs data parallel (pp) "
        "| all-reduces / step (in sync branch) | bytes all-reduced / step |"
    )
    assert header in text and header in result.stdout
    table = text.split(header, 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("DiLoCo", "2"),
        ("DiLoCo", "5"),
        ("data parallel", "—"),
        ("one replica alone", "—"),
        ("SlowMo", "12"),
        ("Lookahead", "5"),
    ], table
    for row in rows:  # test accuracy: mean ± std over seeds, fractions
        mean, std = (float(x) for x in row[4].split()[0:3:2])
        assert 0.0 <= mean <= 1.0 and 0.0 <= std <= 1.0, row
    # From the compiled HLO: all-reduces outside (inside) a sync branch, and bytes per step.
    count = {(r[0], r[1]): r[6] for r in rows}
    sent = {(r[0], r[1]): float(r[7]) for r in rows}
    data_parallel = sent[("data parallel", "—")]
    assert count[("data parallel", "—")] == "1 (0)", count  # the gradients, every step
    assert data_parallel > sent[("DiLoCo", "2")] > sent[("DiLoCo", "5")] > 0, sent
    for h in ("2", "5"):  # one params-sized all-reduce, in the sync branch only: 1/H of DP's
        assert count[("DiLoCo", h)] == "0 (1)", count
        assert math.isclose(sent[("DiLoCo", h)] * int(h), data_parallel, rel_tol=1e-3), sent
    for key in [("one replica alone", "—"), ("SlowMo", "12"), ("Lookahead", "5")]:
        assert count[key] == "0 (0)" and sent[key] == 0.0, (count, sent)
    assert "total run time:" in result.stdout
