"""lookax.lookahead on one machine with many devices (8 host CPU devices, in a subprocess).

The device count must be set (XLA_FLAGS=--xla_force_host_platform_device_count=8) before jax is
imported, so the checks live in tests/_integration_workers/sharding_worker.py, which runs once
per session and reports each check by name. What each check holds:

- ``named_sharding[...]``: params sharded over a 2-D mesh (``NamedSharding``, a leaf sharded over
  both axes, leaves over one axis, replicated leaves and a scalar) under
  ``optax.chain(clip_by_global_norm, lookahead(adam))`` with each ``inner_state_on_sync``: every
  params-shaped state leaf (slow weights, moments, the moments' copy at the last sync) has its
  param's sharding after eager init, jit init and every donated jitted step (through two syncs);
  the step does not recompile in steady state; params and state agree with the same run on one
  device within rtol 1e-6 (DESIGN.md section 4). Explicit meshes (jax's default) for every
  option, an Auto mesh for the default one.
- ``shard_map[...]``: a per-device step under ``jax.shard_map`` (check_vma on) with each
  ``inner_state_on_sync``, equal to the unsharded run; plus an inner optimizer whose ``init``
  builds its state from constants, which a 'reset' sync must still type-match under shard_map.
- ``apply_if_finite[...]``: under jit over sharded arrays the finiteness check is global and a NaN
  in one device's block skips the step everywhere. Inside shard_map each device checks only its
  block: shard_map rejects the result (check_vma), or without the check the devices diverge. With
  a flag combined across the mesh (``lax.pmin``) every device skips, params, slow weights, inner
  state and counters unchanged, whether through apply_if_finite (check_vma off) or a ``lax.cond``
  on the combined flag (check_vma on).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

WORKER = Path(__file__).parent / "_integration_workers" / "sharding_worker.py"

NAMED_SHARDING = [
    "named_sharding[Explicit-keep]",
    "named_sharding[Explicit-reset]",
    "named_sharding[Explicit-interpolate]",
    "named_sharding[Auto-keep]",
]
SHARD_MAP = [
    "shard_map[keep-adam]",
    "shard_map[reset-adam]",
    "shard_map[interpolate-adam]",
    "shard_map[reset-constant_init]",
]
APPLY_IF_FINITE = [
    "apply_if_finite[jit-global-view]",
    "apply_if_finite[shard_map-local-flag-rejected-by-check_vma]",
    "apply_if_finite[shard_map-local-flag-diverges-without-check_vma]",
    "apply_if_finite[shard_map-combined-flag]",
    "apply_if_finite[shard_map-combined-flag-cond-with-check_vma]",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory, run_worker) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("sharding") / "report.json"
    run_worker(WORKER, out, timeout=300)
    return json.loads(out.read_text())


def test_worker_ran_exactly_the_expected_checks(report):
    assert sorted(report) == sorted(NAMED_SHARDING + SHARD_MAP + APPLY_IF_FINITE)


@pytest.mark.parametrize("name", NAMED_SHARDING + SHARD_MAP + APPLY_IF_FINITE)
def test_check(report, name):
    result = report[name]
    assert result["ok"], f"{name} failed in the 8-device worker:\n{result['detail']}"
