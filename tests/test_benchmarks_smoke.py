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


def _run_benchmark(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
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
        timeout=timeout,
    )


# The script's one run serves both its smoke check and the compiled-program rows: a split
# would run it twice (pytest -n 2 may give the two halves to different workers).
@pytest.mark.slow
@pytest.mark.compiler("bounds the conds, kernels and temporary bytes the compiled rows print")
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
    for row in compiled:  # the design: no temporary beyond the inner step's
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
    assert "## Goals (docs/design.md)" in out
    _assert_outer_rows(out)
    assert "total run time:" in out


OUTER_ROWS = [
    "lookax.lookahead(optax.adam) k=16",
    "lookahead(adam, outer=Nesterov, sync_delay=0)",
    "lookahead(adam, outer=Nesterov, sync_delay=1)",
    "lookahead(adam, outer=Nesterov, sync_delay=1, drop_nonfinite=False)",
    "lookahead(adam, outer=Nesterov, sync_delay=1, communication_dtype=bf16)",
    "lookahead(adam, outer=heavy-ball, sync_delay=0)",
    "lookahead(adam, outer=heavy-ball, sync_delay=1)",
]
FRAGMENTS_ROW = "lookahead(adam, outer=Nesterov, sync_delay=1, fragments={})"


def _assert_outer_rows(out: str) -> None:
    """The outer-path set: every row timed and compiled, on both large quick trees."""
    for tree, fragments in (("one leaf (quick)", ()), ("ResNet-50 stem /8 (quick)", (4,))):
        for suffix, where in (("", "gradients as input"), (" (grads made in the step)", None)):
            where = where or "gradients made in the step"
            title = f"### {tree} -- outer path, H=16 ({where})"
            assert title in out, title
            section = out.split(title, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
            cells = [
                [c.strip() for c in line.strip("|").split("|")]
                for line in section.splitlines()
                if line.startswith("| ")
            ]
            names = OUTER_ROWS + [FRAGMENTS_ROW.format(f) for f in fragments]
            for name in (n + suffix for n in names):
                timing = [r for r in cells if r[0] == name and len(r) == 9]
                compiled = [r for r in cells if r[0] == name and len(r) == 15]
                assert len(timing) == len(compiled) == 1, (name, section[-3000:])
                ms, ratio = float(timing[0][1]), float(timing[0][2])
                assert ms > 0 and ratio > 0, timing
                temp = float(compiled[0][13])  # temp - optax.adam's, in params buffers
                assert math.isfinite(temp) and temp >= -0.1, compiled
                if tree == "one leaf (quick)":  # one leaf: the params-buffer counts are exact
                    bound = {"sync_delay=0": 2.1, "drop_nonfinite=False": 1.1, "bf16": 0.6}
                    limit = next((b for k, b in bound.items() if k in name), 0.1)
                    assert temp <= limit, (name, temp)
            assert FRAGMENTS_ROW.format(16) not in section  # 9 leaves: F=16 is skipped
    assert "fragments=16: skipped, the tree has 9 leaves" in out
    goals = _section_rows(out, "Goals")
    outer = [r for r in goals if r[1].startswith("(outer, H=16")]
    expected = ["sync_delay=1 (Nesterov) / adam <= 1.20", "heavy-ball sync_delay=1 temp"]
    expected += ["exact path (sync_delay=0) temp", "fragments F=4 step time"]
    for goal in expected:
        found = [r for r in outer if goal in r[1]]
        assert len(found) >= 2, (goal, outer)  # as input and made in the step
        assert all(r[3] in ("met", "NOT met") and r[2] for r in found), found


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
    goal = "goal (docs/design.md): whole training step Lookahead / plain <= 1.03:"
    assert goal in out and "the 95% interval settles it for" in out
    assert "total run time:" in out


def _table_after(text: str, header: str) -> list[list[str]]:
    """The cells of the markdown table under ``header`` (header and separator left out)."""
    table = text.split(header, 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


@pytest.mark.slow
@pytest.mark.compiler("counts the all-reduces (and their bytes) in the compiled HLO's table")
def test_replicas_quick_writes_its_table(tmp_path):
    # 13 compiled training programs (the option and fault rows included): a few minutes
    result = _run_benchmark("replicas.py", "--quick", "--out", str(tmp_path), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    text = (tmp_path / "replicas_quick.md").read_text()
    assert (tmp_path / "replicas_quick.png").stat().st_size > 0
    header = (
        "| method | H | replicas × batch | inner lr | test accuracy | Δ vs data parallel (pp) "
        "| all-reduces / step (in sync branch) | bytes all-reduced / step |"
    )
    assert header in text and header in result.stdout
    rows = _table_after(text, header)
    assert [(r[0], r[1]) for r in rows] == [
        ("DiLoCo", "2"),
        ("DiLoCo", "4"),
        ("data parallel", "—"),
        ("one replica alone", "—"),
        ("SlowMo", "12"),
        ("Lookahead", "5"),
    ], rows
    for row in rows:  # test accuracy: mean ± std over seeds, fractions
        mean, std = (float(x) for x in row[4].split()[0:3:2])
        assert 0.0 <= mean <= 1.0 and 0.0 <= std <= 1.0, row
    # From the compiled HLO: all-reduces outside (inside) a sync branch, and bytes per step.
    count = {(r[0], r[1]): r[6] for r in rows}
    sent = {(r[0], r[1]): float(r[7]) for r in rows}
    data_parallel = sent[("data parallel", "—")]
    assert count[("data parallel", "—")] == "1 (0)", count  # the gradients, every step
    assert data_parallel > sent[("DiLoCo", "2")] > sent[("DiLoCo", "4")] > 0, sent
    for h in ("2", "4"):  # the params-sized all-reduce and two scalars, in the sync branch only
        assert count[("DiLoCo", h)].startswith("0 ("), count
        assert 0 <= sent[("DiLoCo", h)] * int(h) - data_parallel <= 64, sent
    for key in [("one replica alone", "—"), ("Lookahead", "5")]:
        assert count[key] == "0 (0)" and sent[key] == 0.0, (count, sent)
    assert sent[("SlowMo", "12")] * 12 <= 8, sent  # no replicas: at most a scalar
    _assert_option_rows(text)
    _assert_fault_rows(text)
    assert "total run time:" in result.stdout


def _assert_option_rows(text: str) -> None:
    """sync_delay=1 at each H, a bf16 all-reduce and Streaming DiLoCo beside DiLoCo."""
    header = "| method | H | inner lr | test accuracy | Δ vs DiLoCo at equal H (pp) |"
    assert header in text, text[-3000:]
    rows = {(r[0], r[1]): r for r in _table_after(text, header)}
    assert list(rows) == [
        ("DiLoCo", "2"),
        ("DiLoCo, sync_delay=1", "2"),
        ("DiLoCo", "4"),
        ("DiLoCo, sync_delay=1", "4"),
        ("DiLoCo, bfloat16 all-reduce", "4"),
        ("Streaming DiLoCo F=2", "4"),
        ("Streaming DiLoCo F=4", "4"),
    ], list(rows)
    for key, row in rows.items():
        accuracy = float(row[3].split()[0])
        assert 0.0 <= accuracy <= 1.0, row
        if key[0] != "DiLoCo":  # Δ against DiLoCo at equal H: mean ± standard error
            assert all(math.isfinite(float(x)) for x in row[4].split()[0:3:2]), row
        assert all(math.isfinite(float(c)) and float(c) > 0 for c in row[6:10]), row
    # bytes / step and peak at one step, lowered then compiled
    f32 = [float(c) for c in rows[("DiLoCo", "4")][6:10]]
    bf16 = [float(c) for c in rows[("DiLoCo, bfloat16 all-reduce", "4")][6:10]]
    assert f32[0] == f32[1] and f32[2] == f32[3], f32  # float32: lowered as compiled
    # the lowered bf16 all-reduce: half the float32 bytes (the scalars aside, 20 B)
    assert abs(2 * bf16[2] - f32[2]) <= 64 and bf16[2] < 0.6 * bf16[3], (bf16, f32)
    peaks = [float(rows[(name, "4")][9]) for name in ("DiLoCo", "Streaming DiLoCo F=2")]
    peaks.append(float(rows[("Streaming DiLoCo F=4", "4")][9]))
    assert peaks[0] > peaks[1] > peaks[2] > 0, peaks  # one fragment at a time
    for name in ("Streaming DiLoCo F=2", "Streaming DiLoCo F=4"):  # every leaf once per H
        assert 0 <= float(rows[(name, "4")][7]) - f32[1] <= 64, rows[(name, "4")]


def _assert_fault_rows(text: str) -> None:
    """NaN gradients on replica 1: kept (NaN everywhere), dropped, recovered, skipped."""
    header = "| DiLoCo H = 4, replica 1's gradients NaN at steps 15-17 |"
    assert header in text, text[-3000:]
    rows = {r[0]: r for r in _table_after(text, header)}
    assert list(rows) == [
        "clean run (no fault)",
        "drop_nonfinite=False",
        "drop_nonfinite=True",
        "drop_nonfinite=True + recovery onto the slow weights",
        "optax.apply_if_finite(inner, 5) inside",
    ], list(rows)
    # columns: inner lr, test accuracy, Δ vs clean, runs with NaN weights, dropped per replica
    kept = rows["drop_nonfinite=False"]
    assert "NaN weights" in kept[2] and kept[4] == "2 of 2", kept  # reported as NaN
    dropped = {name: [float(x) for x in r[5].split(" / ")] for name, r in rows.items()}
    for name, row in rows.items():
        if name != "drop_nonfinite=False":
            assert row[4] == "0 of 2" and 0.0 <= float(row[2].split()[0]) <= 1.0, row
        assert len(dropped[name]) == 4, row
    assert dropped["clean run (no fault)"] == [0, 0, 0, 0], dropped
    assert dropped["optax.apply_if_finite(inner, 5) inside"] == [0, 0, 0, 0], dropped
    for name in ("drop_nonfinite=True", "drop_nonfinite=True + recovery onto the slow weights"):
        others = [dropped[name][i] for i in (0, 2, 3)]
        assert dropped[name][1] >= 1 and others == [0, 0, 0], dropped  # replica 1 only
    # left out until the end without the recovery line; back after it
    assert (
        dropped["drop_nonfinite=True"][1]
        > dropped["drop_nonfinite=True + recovery onto the slow weights"][1]
    ), dropped
