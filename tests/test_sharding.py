"""lookax.lookahead on one machine with many devices (8 host CPU devices, in a subprocess).

The device count must be set (XLA_FLAGS=--xla_force_host_platform_device_count=8) before jax is
imported, so the checks live in tests/_integration_workers/sharding_worker.py, which runs once
per test run and reports each check by name. What each check holds:

- ``named_sharding[...]``: params sharded over a 2-D mesh (``NamedSharding``, a leaf sharded over
  both axes, leaves over one axis, replicated leaves and a scalar) under
  ``optax.chain(clip_by_global_norm, lookahead(adam))`` with each ``inner_state_on_sync``: every
  params-shaped state leaf (slow weights, moments, the moments' copy at the last sync) has its
  param's sharding after eager init, jit init and every donated jitted step (through two syncs);
  the step does not recompile in steady state; params and state agree with the same run on one
  device within rtol 1e-6. Explicit meshes (jax's default) for every option, an Auto mesh for
  the default one.
- ``shard_map[...]``: a per-device step under ``jax.shard_map`` (check_vma on) with each
  ``inner_state_on_sync``, equal to the unsharded run; plus an inner optimizer whose ``init``
  builds its state from constants, which a 'reset' sync must still type-match under shard_map.
- ``apply_if_finite[...]``: under jit over sharded arrays the finiteness check is global and a NaN
  in one device's block skips the step everywhere. Inside shard_map each device checks only its
  block: shard_map rejects the result (check_vma), or without the check the devices diverge. With
  a flag combined across the mesh (``lax.pmin``) every device skips, params, slow weights, inner
  state and counters unchanged, whether through apply_if_finite (check_vma off) or a ``lax.cond``
  on the combined flag (check_vma on).
- ``replicas[shard_map-...]``: 4 replicas on a 4 x 2 mesh ("replica", "model"), each holding the
  params sharded over its 2 "model" devices (a leading replica axis of size 4 on every state leaf
  but Lookahead's counters, which are replicated; the step is ``jax.vmap`` of one replica's step
  inside ``jax.shard_map``), training on their own targets for 7 steps. The params and the whole
  state equal a one-device simulation of the 4 replicas (``jax.vmap(axis_name="replica")`` of the
  same step) within rtol 1e-6 after every step; the slow weights are bitwise equal on the 4
  replicas after every step and change exactly at their fragment's outer steps (the leaves of
  the other fragment bitwise unchanged); right after an exact outer step every replica's params
  are within rtol 1e-6 of them, otherwise the replicas differ. The runs:

  - ``diloco``: ``lookax.diloco(lookax.adamw(...), 3, replica_axis="replica")``, outer steps at
    calls 3 and 6; ``lookahead``: ``lookax.lookahead(optax.adam(0.05), 3, 0.5,
    replica_axis="replica")``, the same calls.
  - ``diloco-overlapped``: the DiLoCo run with ``sync_delay=1``: the outer steps come one call
    after the syncs (calls 4 and 7), and the params then are the new slow weights plus each
    replica's own inner update.
  - ``streaming``: ``fragments=2``, ``sync_period=4``: "b" (fragment 0) takes its outer steps at
    calls 2 and 6, "w" (fragment 1) at call 4; ``streaming-overlapped``: the same with
    ``sync_delay=1`` (calls 3 and 7, and 5).
- ``replicas_hlo[...]``: the compiled shard_map step's HLO has a params-sized all-reduce, every
  collective lies in a computation reachable only through a ``conditional``'s branch (followed
  through calls, fusions, reducers), the params-sized all-reduces reduce over "replica" (groups
  of the 4 devices of one "model" index) and the scalar ones (the contributor count, the slow
  weights' fingerprint, a replica's finiteness flags over its "model" devices) over "replica" or
  "model"; for ``diloco`` and ``lookahead`` the same parse flags the control step that averages
  its gradients over "replica". ``[overlapped]``: the same for the ``sync_delay=1`` step.
  ``[parser-self-test]`` runs the parse on a small hand-written module (the
  ``true_computation=`` syntax, iota replica groups).
- ``replicas_hlo[streaming]``: with ``fragments`` F = 2 and F = 3 on three leaves of different
  sizes, the compiled step has exactly F outermost-conditional branches that all-reduce
  params-sized floats (operands over 64 bytes), each branch's total equal to one fragment's
  per-device bytes (its leaves' sizes x 4 / 2 "model" devices), every fragment matched by one
  branch, and no collective outside a branch.
- ``replicas_hlo[bf16-communication]``: with ``communication_dtype=jnp.bfloat16`` the lowered
  StableHLO all-reduces both params blocks as bf16 and no params-sized block in another dtype;
  the detail records the compiled HLO's all-reduce types (XLA:CPU widens bf16 to f32).
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
REPLICAS = [
    "replicas[shard_map-diloco]",
    "replicas[shard_map-lookahead]",
    "replicas[shard_map-diloco-overlapped]",
    "replicas[shard_map-streaming]",
    "replicas[shard_map-streaming-overlapped]",
    "replicas_hlo[parser-self-test]",
    "replicas_hlo[diloco]",
    "replicas_hlo[lookahead]",
    "replicas_hlo[overlapped]",
    "replicas_hlo[streaming]",
    "replicas_hlo[bf16-communication]",
]
ALL_CHECKS = NAMED_SHARDING + SHARD_MAP + APPLY_IF_FINITE + REPLICAS
# The worker runs every check whatever pytest selects; the marker only says which results
# read the compiler's output. The parser's self-test reads a hand-written module: not marked.
COMPILER_CHECKS = {
    name: "reads the conditionals and all-reduces (count, groups, bytes) of the step's HLO"
    for name in REPLICAS
    if name.startswith("replicas_hlo[") and name != "replicas_hlo[parser-self-test]"
}


@pytest.fixture(scope="module")
def report(tmp_path_factory, run_worker) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("sharding") / "report.json"
    run_worker(WORKER, out, timeout=300)
    return json.loads(out.read_text())


def test_worker_ran_exactly_the_expected_checks(report):
    assert sorted(report) == sorted(ALL_CHECKS)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.compiler(COMPILER_CHECKS[name]))
        if name in COMPILER_CHECKS
        else name
        for name in ALL_CHECKS
    ],
)
def test_check(report, name):
    result = report[name]
    assert result["ok"], f"{name} failed in the 8-device worker:\n{result['detail']}"
