"""``benchmarks/lm.py``: its data split is fixed and disjoint, and ``--quick`` trains every row."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys
from types import ModuleType

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "lm.py"


def _load_script() -> ModuleType:
    """The script as a module (importing it sets no XLA flag and runs nothing)."""
    spec = importlib.util.spec_from_file_location("lookax_lm_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lm() -> ModuleType:
    return _load_script()


def test_split_is_disjoint_non_empty_and_deterministic(lm):
    first, second = lm.split_files(), lm.split_files()
    assert first == second
    assert set(first) == {"train", "validation", "test"}
    sets = {name: set(files) for name, files in first.items()}
    for name, files in first.items():
        assert files, name
        assert files == sorted(files) and len(set(files)) == len(files), name
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    assert sets["train"] | sets["validation"] | sets["test"] == set(lm.stdlib_files())
    for path in first["validation"]:  # the rule is the hash of the path, nothing else
        assert lm.split_of(path) == "validation"
    for path in first["test"]:
        assert lm.split_of(path) == "test"
    assert all(not {"test", "tests", "site-packages"} & set(p.split("/")) for p in sets["train"])


@pytest.mark.slow
@pytest.mark.compiler("compares the bytes all-reduced per step, read from the compiled HLO")
def test_quick_run_has_every_available_row(lm, tmp_path):
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    expected = lm.expected_rows(quick=True)
    assert expected, "no row available"
    raw = json.loads((tmp_path / "lm_quick.json").read_text())
    rows = {row["key"]: row for row in raw["rows"]}
    assert list(rows) == [r.key for r in expected]
    text = (tmp_path / "lm_quick.md").read_text()
    assert lm.TABLE_HEADER in text and lm.TABLE_HEADER in result.stdout
    assert (tmp_path / "lm_quick_curves.png").stat().st_size > 0
    for spec in expected:
        row = rows[spec.key]
        assert f"| {spec.label} |" in text, spec.label
        assert f"done: {spec.label}:" in result.stdout, spec.label
        for key in ("validation_bpb", "test_bpb"):
            assert row[key] and all(math.isfinite(v) and v > 0 for v in row[key]), (key, row)
        assert row["lr"] in spec.grid
        if spec.replicas > 1:  # bytes all-reduced per step, from the HLO
            for source in ("bytes_compiled", "bytes_lowered"):
                found = row[source]
                assert found["per_step"] > 0 and found["peak"] >= found["per_step"], row
    if "data_parallel" in rows and "diloco" in rows:
        dp, diloco = rows["data_parallel"]["bytes_compiled"], rows["diloco"]["bytes_compiled"]
        assert dp["count_inside"] == 0 and diloco["count_outside"] == 0
        assert math.isclose(
            diloco["per_step"] * rows["diloco"]["period"], dp["per_step"], rel_tol=0.01
        )
    if "diloco_bf16" in rows and "diloco" in rows:  # half the bytes, in the lowered HLO
        bf16, f32 = rows["diloco_bf16"]["bytes_lowered"], rows["diloco"]["bytes_lowered"]
        assert bf16["peak"] < 0.6 * f32["peak"]
    if "streaming_diloco" in rows and "diloco" in rows:  # the same total, a lower peak
        streaming, whole = (
            rows["streaming_diloco"]["bytes_compiled"],
            rows["diloco"]["bytes_compiled"],
        )
        assert math.isclose(streaming["per_step"], whole["per_step"], rel_tol=0.01)
        assert streaming["peak"] < 0.5 * whole["peak"]
    expected_keys = {r.key for r in expected}
    for spec in lm.all_rows(lm.QUICK):
        if spec.key not in expected_keys:
            assert spec.key not in rows and f"left out: {spec.label}" in result.stdout
    assert "total run time:" in result.stdout
