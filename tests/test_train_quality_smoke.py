"""``benchmarks/train_quality.py`` end to end with tiny settings, and its statistics helpers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_quality.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_script():
    if "train_quality" in sys.modules:
        return sys.modules["train_quality"]
    spec = importlib.util.spec_from_file_location("train_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_quality"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_writes_tables_plots_and_json(tmp_path):
    command = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--steps",
        "100",
        "--eval-every",
        "25",
        "--seeds",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    text = (tmp_path / "RESULTS_train_quality_quick.md").read_text()
    assert text.startswith("## Training quality (MNIST-1D)\n")
    for heading in (
        "### Test accuracy (%), mean ± std over seeds",
        "### Wobble: std of test accuracy over the last evaluations",
        "### Best learning rate per optimizer",
        "### Paired differences, Lookahead minus the inner optimizer alone",
        "### Reading",
    ):
        assert heading in text
    assert "| optimizer | lr | alone | LA k=5 α=0.5 | LA k=5 α=0.8 | LA k=10 α=0.5 |" in text
    assert "Command: `python benchmarks/train_quality.py --quick --steps 100" in text

    # --quick: Adam only, the 3 middle learning rates of its grid, here 2 seeds.
    runs = json.loads((tmp_path / "train_quality_quick.json").read_text())["runs"]
    assert len(runs) == 4 * 3
    assert {r["optimizer"] for r in runs} == {"adam"}
    assert sorted({r["lr"] for r in runs}) == pytest.approx([3e-3, 1e-2, 3e-2])
    assert {(r["k"], r["alpha"]) for r in runs} == {(None, None), (5, 0.5), (5, 0.8), (10, 0.5)}
    for run in runs:
        assert len(run["final_test_acc"]) == 2
        # 100 steps of Adam (with or without Lookahead) learn something: far above 10% chance.
        assert all(25.0 < acc <= 100.0 for acc in run["final_test_acc"]), run
        assert not any(run["diverged"]), run

    for name in ("train_quality_quick_acc_vs_lr.png", "train_quality_quick_curves.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_bad_flags_exit_with_a_clear_message(capsys):
    module = _load_script()
    with pytest.raises(SystemExit) as exit_info:
        module._parse_args(["--optimizers", "adam,adagrad"])
    assert exit_info.value.code == 2
    assert (
        "unknown optimizer(s): adagrad. Choose from: sgd_momentum, adam" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        module._parse_args(["--steps", "120", "--eval-every", "50"])
    assert "must be a multiple of --eval-every" in capsys.readouterr().err


def test_paired_statistics_and_verdicts():
    module = _load_script()
    mean, se = module.paired(np.array([1.0, 2.0, 3.0, 2.0]))
    assert mean == pytest.approx(2.0)
    assert se == pytest.approx(np.std([1.0, 2.0, 3.0, 2.0], ddof=1) / 2.0)
    # Non-finite differences (diverged runs' wobble) are left out, not propagated.
    assert module.paired(np.array([1.0, np.nan, 3.0]))[0] == pytest.approx(2.0)
    assert module.verdict(1.0, 0.4) == "Lookahead better"
    assert module.verdict(1.0, 0.6) == "no clear difference"
    assert module.verdict(-1.0, 0.4) == "Lookahead worse"
    # Lower is better for wobble and loss.
    assert module.verdict(-1.0, 0.4, higher_is_better=False) == "Lookahead better"
    assert module.verdict(float("nan"), 0.1) == "n/a"


def test_the_grid_spans_at_least_30x_and_the_settings_are_the_papers():
    module = _load_script()
    assert set(module.BASES) == {"sgd_momentum", "adam", "radam", "lion"}
    for _, _, grid in module.BASES.values():
        assert max(grid) / min(grid) >= 30
    assert [(k, a) for _, k, a in module.VARIANTS] == [(None, None), (5, 0.5), (5, 0.8), (10, 0.5)]
