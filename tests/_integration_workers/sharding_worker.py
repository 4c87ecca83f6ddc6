"""lookax.lookahead on 8 host devices: NamedSharding over a 2-D mesh, jax.shard_map, replicas.

Run by tests/test_sharding.py in its own process, because the device count must be set before
jax is imported:

    python sharding_worker.py OUT.json

Each check runs in isolation and records {"ok": bool, "detail": str} under its name in OUT.json;
the test asserts every expected check is there and passed.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import dataclasses  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import lookax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from _helpers import assert_trees_bitwise_equal  # noqa: E402

SYNC_PERIOD = 3
NUM_STEPS = 7  # two syncs, then one step into the third cycle
ON_SYNC = ("keep", "reset", "interpolate")
SPECS = {
    "w": P("data", "model"),  # sharded over both mesh axes
    "b": P("model"),
    "v": P("data"),
    "c": P(),  # a replicated scalar
    "e": P(),  # a replicated vector
}

CHECKS: list[tuple[str, Callable[[], str]]] = []


def check(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    """Registers the decorated function as the check ``name``."""

    def register(fn: Callable[[], str]) -> Callable[[], str]:
        CHECKS.append((name, fn))
        return fn

    return register


def run_checks() -> dict[str, dict]:
    results = {}
    for name, fn in CHECKS:
        start = time.perf_counter()
        try:
            results[name] = {"ok": True, "detail": fn()}
        except Exception:  # noqa: BLE001 - recorded for the test to report
            results[name] = {"ok": False, "detail": traceback.format_exc()[-4000:]}
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
    return results


def host_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w": rng.normal(size=(8, 16)).astype(np.float32),
        "b": rng.normal(size=(16,)).astype(np.float32),
        "v": rng.normal(size=(4,)).astype(np.float32),
        "c": np.float32(0.7),
        "e": rng.normal(size=(6,)).astype(np.float32),
    }


def make_mesh(axis_type: AxisType) -> jax.sharding.Mesh:
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)


def put(tree: dict, mesh: jax.sharding.Mesh, specs: dict) -> dict:
    return {name: jax.device_put(tree[name], NamedSharding(mesh, specs[name])) for name in tree}


def loss(params: dict) -> jax.Array:
    # Elementwise terms plus a cross-device reduction, so the gradient is not trivially local.
    return (
        jnp.sum(jnp.sin(params["w"]) ** 2)
        + jnp.sum(params["b"] ** 2) * jnp.mean(params["v"] ** 2)
        + params["c"] ** 2
        + jnp.sum(jnp.cos(params["e"]))
    )


def local_grads(params: dict) -> dict:
    """A per-leaf gradient field that needs no communication (for shard_map)."""
    return {
        "w": jnp.cos(params["w"]) * params["w"],
        "b": 2.0 * params["b"],
        "v": params["v"] ** 3,
        "c": 2.0 * params["c"],
        "e": -jnp.sin(params["e"]),
    }


def make_tx(on_sync: str) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        lookax.lookahead(optax.adam(0.05), sync_period=SYNC_PERIOD, inner_state_on_sync=on_sync),
    )


def params_like_subtrees(state, params) -> list[dict]:
    """Every subtree of ``state`` laid out like ``params``: slow weights, moments, ..."""
    params_def = jax.tree.structure(params)
    is_like = lambda node: (  # noqa: E731
        isinstance(node, dict) and jax.tree.structure(node) == params_def
    )
    return [node for node in jax.tree.leaves(state, is_leaf=is_like) if is_like(node)]


def assert_state_sharded_like(state, params, expected_count: int, where: str) -> None:
    subtrees = params_like_subtrees(state, params)
    assert len(subtrees) == expected_count, (where, len(subtrees), expected_count)
    for subtree in subtrees:
        for name, leaf in subtree.items():
            param = params[name]
            assert leaf.shape == param.shape, (where, name)
            assert leaf.sharding.is_equivalent_to(param.sharding, leaf.ndim), (
                where,
                name,
                leaf.sharding,
                param.sharding,
            )


def expected_params_like(on_sync: str) -> int:
    # slow + adam's mu and nu (+ their copies at the last sync for 'interpolate')
    return 5 if on_sync == "interpolate" else 3


def lookahead_of(state) -> lookax.LookaheadState:
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, lookax.LookaheadState))
        if isinstance(node, lookax.LookaheadState)
    ]
    assert len(found) == 1, found
    return found[0]


def check_deferred_write(i: int, params, state, at_sync):
    """After step ``i + 1``: the params at the last sync are stored bitwise one call later.

    Returns the host copy of the params when step ``i + 1`` was a sync (the step donates
    them), else None.
    """
    if at_sync is not None:
        assert_trees_bitwise_equal(
            at_sync, state.lagging_slow, err_msg=f"slow weights stored after step {i + 1}"
        )
    if (i + 1) % SYNC_PERIOD:
        return None
    assert_trees_bitwise_equal(params, lookax.slow_params(state, params))
    return jax.tree.map(np.asarray, params)


def assert_close_trees(actual, expected, where: str) -> float:
    worst = 0.0
    for path, a, e in zip(
        jax.tree_util.tree_leaves_with_path(actual),
        jax.tree.leaves(actual),
        jax.tree.leaves(expected),
        strict=True,
    ):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype and a.shape == e.shape, (where, path[0])
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7, err_msg=f"{where} {path[0]}")
        if a.size and np.issubdtype(a.dtype, np.floating):
            worst = max(worst, float(np.max(np.abs(a - e))))
    return worst


def unsharded_run(on_sync: str, num_steps: int = NUM_STEPS):
    tx = make_tx(on_sync)
    device = jax.devices()[0]
    params = jax.device_put(host_params(), device)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(num_steps):
        params, state = step(params, state)
    return params, state


_UNSHARDED: dict = {}


def unsharded(on_sync: str):
    if on_sync not in _UNSHARDED:
        _UNSHARDED[on_sync] = unsharded_run(on_sync)
    return _UNSHARDED[on_sync]


# --- NamedSharding over a 2-D mesh, jit: shardings kept, results as unsharded. -----------


def named_sharding_check(axis_type: AxisType, on_sync: str) -> str:
    mesh = make_mesh(axis_type)
    tx = make_tx(on_sync)
    count = expected_params_like(on_sync)
    with jax.set_mesh(mesh):
        params = put(host_params(), mesh, SPECS)
        state = tx.init(params)
        assert_state_sharded_like(state, params, count, "eager init")
        jit_state = jax.jit(tx.init)(params)
        if axis_type == AxisType.Explicit:
            assert_state_sharded_like(jit_state, params, count, "jit init")
            state = jit_state
        else:
            # Under an Auto mesh, jit leaves the placement of values built inside it to XLA:
            # optax's jnp.zeros_like moments come out replicated (pass out_shardings, init
            # eagerly, or use an Explicit mesh). Lookahead's own slow copy keeps its sharding.
            assert_state_sharded_like(
                lookahead_of(jit_state).lagging_slow, params, 1, "jit init slow"
            )

        def step(params, state):
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            return optax.apply_updates(params, updates), state

        step = jax.jit(step, donate_argnums=(0, 1))
        at_sync = None
        for i in range(NUM_STEPS):
            params, state = step(params, state)
            if i == 1:
                compiled_after_two_steps = step._cache_size()
            at_sync = check_deferred_write(i, params, lookahead_of(state), at_sync)
            for name, leaf in params.items():
                assert leaf.sharding.is_equivalent_to(
                    NamedSharding(mesh, SPECS[name]), leaf.ndim
                ), (i, name, leaf.sharding)
            assert_state_sharded_like(state, params, count, f"after step {i + 1}")
        # Steady state from the second step on. (The first step may compile once more: jit
        # returns a replicated vector's sharding as P(None) on an Explicit mesh and P() on
        # an Auto one, equivalent to but keyed apart from what device_put gave; plain optax
        # does the same.)
        assert compiled_after_two_steps <= 2, compiled_after_two_steps
        assert step._cache_size() == compiled_after_two_steps, step._cache_size()
    inner = lookahead_of(state)
    assert int(inner.count) == NUM_STEPS and int(inner.phase) == NUM_STEPS % SYNC_PERIOD

    ref_params, ref_state = unsharded(on_sync)
    worst = assert_close_trees(params, ref_params, "params")
    worst = max(worst, assert_close_trees(state, ref_state, "state"))
    return f"max abs diff vs unsharded {worst:.3g}"


# Explicit is jax.make_mesh's default; Auto (GSPMD propagation) once, for the default option.
for axis_type, on_sync in [(AxisType.Explicit, o) for o in ON_SYNC] + [(AxisType.Auto, "keep")]:
    check(f"named_sharding[{axis_type.name}-{on_sync}]")(
        lambda a=axis_type, o=on_sync: named_sharding_check(a, o)
    )


# --- A per-device step under jax.shard_map, every inner-state option. -------------------


def state_specs(state, params):
    """PartitionSpecs for a state: params-shaped subtrees get the params' specs."""
    params_def = jax.tree.structure(params)
    is_like = lambda node: (  # noqa: E731
        isinstance(node, dict) and jax.tree.structure(node) == params_def
    )
    return jax.tree.map(lambda node: dict(SPECS) if is_like(node) else P(), state, is_leaf=is_like)


def constant_init_accumulator(learning_rate: float) -> optax.GradientTransformation:
    """AdaGrad-like; init builds its accumulator from constants (jnp.full(shape, ...)).

    Under shard_map such a value is device-invariant while the state it replaces at a 'reset'
    sync varies over the mesh; lookahead must give both cond branches the same type.
    """

    def init(params):
        return jax.tree.map(lambda p: jnp.full(jnp.shape(p), 0.1, jnp.result_type(p)), params)

    def update(updates, state, params=None):
        del params
        state = jax.tree.map(lambda a, g: a + g * g, state, updates)
        updates = jax.tree.map(lambda g, a: -learning_rate * g / jnp.sqrt(a), updates, state)
        return updates, state

    return optax.GradientTransformation(init, update)


def shard_map_check(on_sync: str, inner_name: str) -> str:
    mesh = make_mesh(AxisType.Explicit)
    inner = optax.adam(0.05) if inner_name == "adam" else constant_init_accumulator(0.05)
    tx = lookax.lookahead(inner, sync_period=SYNC_PERIOD, inner_state_on_sync=on_sync)

    def local_step(params, state):
        updates, state = tx.update(local_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    host = host_params()
    host_state = jax.tree.map(np.asarray, tx.init(jax.device_put(host, jax.devices()[0])))
    specs = state_specs(host_state, host)
    params = put(host, mesh, SPECS)
    state = jax.tree.map(
        lambda leaf, spec: jax.device_put(leaf, NamedSharding(mesh, spec)), host_state, specs
    )
    per_device = jax.jit(
        jax.shard_map(local_step, mesh=mesh, in_specs=(SPECS, specs), out_specs=(SPECS, specs)),
        donate_argnums=(0, 1),
    )
    unsharded = jax.jit(local_step)
    ref_params, ref_state = jax.device_put((host, host_state), jax.devices()[0])
    at_sync = None
    for i in range(NUM_STEPS):
        params, state = per_device(params, state)
        ref_params, ref_state = unsharded(ref_params, ref_state)
        at_sync = check_deferred_write(i, params, state, at_sync)
    assert int(state.count) == NUM_STEPS and int(state.phase) == NUM_STEPS % SYNC_PERIOD
    for name, leaf in state.lagging_slow.items():
        assert leaf.sharding.is_equivalent_to(params[name].sharding, leaf.ndim), name
    worst = assert_close_trees(params, ref_params, "params")
    worst = max(worst, assert_close_trees(state, ref_state, "state"))
    return f"max abs diff vs unsharded {worst:.3g}"


# constant_init matters for 'reset' only: that branch builds the inner state afresh.
for on_sync, inner_name in [(o, "adam") for o in ON_SYNC] + [("reset", "constant_init")]:
    check(f"shard_map[{on_sync}-{inner_name}]")(
        lambda o=on_sync, n=inner_name: shard_map_check(o, n)
    )


# --- apply_if_finite with sharded params. ------------------------------------------------

BAD_BLOCK = (0, 1)  # the device at mesh position data=0, model=1 sees a NaN


def finite_setup():
    mesh = make_mesh(AxisType.Explicit)
    params_specs = {"w": SPECS["w"], "b": SPECS["b"]}
    host = host_params()
    host = {"w": host["w"], "b": host["b"]}
    inner = lookax.lookahead(optax.adam(0.05), sync_period=SYNC_PERIOD)
    tx = optax.apply_if_finite(inner, max_consecutive_errors=5)
    host_state = tx.init(jax.device_put(host, jax.devices()[0]))

    params_def = jax.tree.structure(host)
    is_like = lambda node: (  # noqa: E731
        isinstance(node, dict) and jax.tree.structure(node) == params_def
    )
    specs = jax.tree.map(
        lambda node: dict(params_specs) if is_like(node) else P(), host_state, is_leaf=is_like
    )
    params = put(host, mesh, params_specs)
    state = jax.tree.map(
        lambda leaf, spec: jax.device_put(leaf, NamedSharding(mesh, spec)), host_state, specs
    )
    return mesh, params_specs, specs, inner, tx, params, state


def poisoned_local_grads(params: dict, poison: jax.Array) -> dict:
    """Inside shard_map: NaN in the local block of one device only, when ``poison``."""
    grads = {"w": jnp.cos(params["w"]), "b": 2.0 * params["b"]}
    on_bad_device = (jax.lax.axis_index("data") == BAD_BLOCK[0]) & (
        jax.lax.axis_index("model") == BAD_BLOCK[1]
    )
    grads["w"] = jnp.where(poison & on_bad_device, jnp.nan, grads["w"])
    return grads


def all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def per_device_step(local, mesh, params_specs, state_specs, check_vma: bool = True):
    """``local(params, state, poison)`` jitted as a shard_map step (poison replicated)."""
    return jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(params_specs, state_specs, P()),
            out_specs=(params_specs, state_specs),
            check_vma=check_vma,
        )
    )


def advance_to_sync_step(step, params, state):
    """k - 1 clean steps: the next step would be a sync."""
    for _ in range(SYNC_PERIOD - 1):
        params, state = step(params, state, jnp.bool_(False))
    return params, state


def local_update(tx, grads_of):
    """``local(params, state, poison)``: ``tx`` on ``grads_of(params, poison)``, applied."""

    def local(params, state, poison):
        updates, state = tx.update(grads_of(params, poison), state, params)
        return optax.apply_updates(params, updates), state

    return local


def assert_poisoned_sync_skipped(step, params, state, lookahead_of):
    """A NaN at the would-be sync step changes neither the params nor Lookahead's state;
    the next clean step is that sync, and the call after it stores the params it produced.

    ``lookahead_of(state)`` is the LookaheadState inside ``step``'s state. Returns the state
    after the skipped step.
    """
    params, state = advance_to_sync_step(step, params, state)
    skipped_params, skipped_state = step(params, state, jnp.bool_(True))
    assert_trees_bitwise_equal(skipped_params, params)
    assert_trees_bitwise_equal(lookahead_of(skipped_state), lookahead_of(state))
    params, state = step(skipped_params, skipped_state, jnp.bool_(False))
    lookahead = lookahead_of(state)
    assert int(lookahead.phase) == 0 and int(lookahead.count) == SYNC_PERIOD
    params_at_sync = params
    params, state = step(params, state, jnp.bool_(False))
    assert_trees_bitwise_equal(params_at_sync, lookahead_of(state).lagging_slow)
    return skipped_state


@check("apply_if_finite[jit-global-view]")
def _() -> str:
    # Under jit over sharded arrays the finiteness check is global: XLA reduces across devices.
    mesh, params_specs, specs, inner, tx, params, state = finite_setup()
    bad = np.zeros((8, 16), bool)
    bad[0, 5] = True  # one element, held by one device
    bad = jax.device_put(bad, NamedSharding(mesh, params_specs["w"]))

    @jax.jit
    def step(params, state, poison):
        grads = {"w": jnp.cos(params["w"]), "b": 2.0 * params["b"]}
        grads["w"] = jnp.where(poison & bad, jnp.nan, grads["w"])
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params, state = advance_to_sync_step(step, params, state)
    new_params, new_state = step(params, state, jnp.bool_(True))
    assert_trees_bitwise_equal(new_params, params)
    assert_trees_bitwise_equal(new_state.inner_state, state.inner_state)
    assert int(new_state.total_notfinite) == 1 and not bool(new_state.last_finite)
    return "skipped on every device"


@check("apply_if_finite[shard_map-local-flag-rejected-by-check_vma]")
def _() -> str:
    # apply_if_finite inside shard_map sees only the local block: its counters come out
    # device-varying, and shard_map refuses to return them as replicated (P()).
    mesh, params_specs, specs, inner, tx, params, state = finite_setup()
    local = local_update(tx, poisoned_local_grads)
    try:
        per_device_step(local, mesh, params_specs, specs)(params, state, jnp.bool_(True))
    except Exception as error:  # noqa: BLE001
        return f"raised {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    raise AssertionError("shard_map accepted device-varying counters as replicated")


@check("apply_if_finite[shard_map-local-flag-diverges-without-check_vma]")
def _() -> str:
    # With check_vma=False the step runs, and the devices disagree: the one with the NaN skips
    # its block while every other device applies the update. This is why the flag must be
    # combined across devices.
    mesh, params_specs, specs, inner, tx, params, state = finite_setup()
    local = local_update(tx, poisoned_local_grads)
    step = per_device_step(local, mesh, params_specs, specs, check_vma=False)
    new_params, _ = step(params, state, jnp.bool_(True))
    before = np.asarray(params["w"])
    after = np.asarray(new_params["w"])
    blocks_unchanged = [
        [
            np.array_equal(
                before[4 * i : 4 * i + 4, 4 * j : 4 * j + 4],
                after[4 * i : 4 * i + 4, 4 * j : 4 * j + 4],
            )
            for j in range(4)
        ]
        for i in range(2)
    ]
    assert blocks_unchanged[BAD_BLOCK[0]][BAD_BLOCK[1]], blocks_unchanged
    assert sum(map(sum, blocks_unchanged)) == 1, blocks_unchanged
    return "the device with the NaN skipped, the other 7 stepped"


def combined_flag_grads(params: dict, poison: jax.Array) -> dict:
    """The recipe: a finiteness flag combined across all mesh axes, applied to every block."""
    grads = poisoned_local_grads(params, poison)
    finite_everywhere = jax.lax.pmin(all_finite(grads).astype(jnp.int32), ("data", "model"))
    return jax.tree.map(lambda g: jnp.where(finite_everywhere > 0, g, jnp.nan), grads)


@check("apply_if_finite[shard_map-combined-flag]")
def _() -> str:
    mesh, params_specs, specs, inner, tx, params, state = finite_setup()
    local = local_update(tx, combined_flag_grads)
    # check_vma off: apply_if_finite's counters are computed from varying values
    step = per_device_step(local, mesh, params_specs, specs, check_vma=False)
    skipped = assert_poisoned_sync_skipped(step, params, state, lambda s: s.inner_state)
    assert int(skipped.total_notfinite) == 1
    return "skipped on every device; the next clean step syncs"


@check("apply_if_finite[shard_map-combined-flag-cond-with-check_vma]")
def _() -> str:
    # The same skip without apply_if_finite, keeping check_vma on: pmin gives a
    # device-invariant flag, and a lax.cond on it skips the whole update everywhere.
    mesh, params_specs, specs, inner, tx, params, state = finite_setup()
    inner_specs = specs.inner_state
    inner_state = state.inner_state

    def local(params, state, poison):
        grads = poisoned_local_grads(params, poison)
        finite_everywhere = jax.lax.pmin(all_finite(grads).astype(jnp.int32), ("data", "model"))
        updates, state = jax.lax.cond(
            finite_everywhere > 0,
            lambda: inner.update(grads, state, params),
            lambda: (jax.tree.map(jnp.zeros_like, grads), state),
        )
        return optax.apply_updates(params, updates), state

    step = per_device_step(local, mesh, params_specs, inner_specs)
    assert_poisoned_sync_skipped(step, params, inner_state, lambda s: s)
    return "skipped on every device; the next clean step syncs"


# --- Replicas (DiLoCo, Lookahead with replica_axis) under jax.shard_map. -----------------
#
# A 4 x 2 mesh ("replica", "model"): 4 replicas, each holding a full copy of the params
# sharded over its 2 "model" devices. The replicas are a leading axis of size 4 on every
# state leaf but Lookahead's counters (P("replica", ..., "model") for params-shaped leaves,
# P("replica") for the others: Adam's count, the outer path's fault counters); the counters
# are replicated (P()). The gradient is elementwise (no collective over "model"), so the
# pseudo-gradient's psum over "replica" is the step's only params-sized collective. The
# reference simulates the 4 replicas on one device with jax.vmap(axis_name="replica") of the
# same per-replica step.

NUM_REPLICAS = 4
REPLICA_SHAPES = {"w": (8, 6), "b": (6,)}


@dataclasses.dataclass(frozen=True)
class ReplicaRun:
    """An outer-path optimizer over "replica" and when its fragments take their outer steps.

    Fragment ``i`` of F syncs at the calls ``c`` with ``c % H == (i + 1) * H // F % H``;
    its outer step (the slow weights' change) comes ``sync_delay`` calls later.
    """

    make_tx: Callable[[], optax.GradientTransformation]
    sync_period: int = SYNC_PERIOD
    fragments: int = 1
    sync_delay: int = 0
    fragment_of: tuple[tuple[str, int], ...] = (("w", 0), ("b", 0))

    def outer_step_at(self, call: int, name: str) -> bool:
        """Whether leaf ``name``'s slow weights take an outer step at call ``call``."""
        i, h = dict(self.fragment_of)[name], self.sync_period
        synced = call - self.sync_delay
        return synced >= 1 and synced % h == (i + 1) * h // self.fragments % h


def diloco_run(sync_period=SYNC_PERIOD, fragments=1, sync_delay=0, **options) -> ReplicaRun:
    """DiLoCo over "replica"; with 2 fragments, "b" (6 elements) syncs first, then "w" (48)."""

    def make_tx():
        return lookax.diloco(
            lookax.adamw(0.05, weight_decay=0.1),
            sync_period=sync_period,
            replica_axis="replica",
            sync_delay=sync_delay,
            fragments=fragments,
            **options,
        )

    fragment_of = (("w", 1), ("b", 0)) if fragments == 2 else (("w", 0), ("b", 0))
    return ReplicaRun(make_tx, sync_period, fragments, sync_delay, fragment_of)


REPLICA_RUNS = {
    "diloco": diloco_run(),
    "lookahead": ReplicaRun(
        lambda: lookax.lookahead(optax.adam(0.05), SYNC_PERIOD, 0.5, replica_axis="replica")
    ),
    "diloco-overlapped": diloco_run(sync_delay=1),  # outer steps at calls 4 and 7
    "streaming": diloco_run(4, fragments=2),  # "b" at calls 2 and 6, "w" at 4
    "streaming-overlapped": diloco_run(4, fragments=2, sync_delay=1),  # 3, 7; 5
}


def make_replica_mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((NUM_REPLICAS, 2), ("replica", "model"))


def replica_spec(shape: tuple[int, ...]) -> P:
    """A stacked params leaf: over "replica", its last axis over "model"."""
    return P("replica", *[None] * (len(shape) - 1), "model")


def replica_problem(shapes: dict | None = None):
    """Identical starting params on every replica; targets that differ per replica and step."""
    shapes = REPLICA_SHAPES if shapes is None else shapes
    rng = np.random.default_rng(11)
    one = {k: rng.normal(size=shape).astype(np.float32) for k, shape in shapes.items()}
    params = {k: np.broadcast_to(v, (NUM_REPLICAS, *v.shape)).copy() for k, v in one.items()}
    shift = np.arange(NUM_REPLICAS, dtype=np.float32)
    targets = [
        {
            k: (rng.normal(size=v.shape) + shift.reshape(-1, *([1] * (v.ndim - 1)))).astype(
                np.float32
            )
            for k, v in params.items()
        }
        for _ in range(NUM_STEPS)
    ]
    return one, params, targets


def replica_local_step(tx, average_grads: bool = False):
    """One replica's step: its own gradient, then tx.

    ``average_grads`` makes the step the forbidden one (gradients averaged over "replica"
    every step): the HLO check's negative control.
    """

    def local_step(params, state, target):
        grads = jax.tree.map(lambda p, t: (p - t) + 0.1 * p**3, params, target)
        if average_grads:
            grads = jax.lax.pmean(grads, "replica")
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return local_step


def replica_state(tx, one: dict):
    """Host state for 4 replicas, its shard_map specs and its vmap axes.

    Every leaf gets a leading replica axis (params-shaped leaves: their params' specs, the
    others P("replica")) except Lookahead's counters, shared: P() / in_axes None.
    """
    one_state = jax.tree.map(np.asarray, tx.init(jax.device_put(one, jax.devices()[0])))
    # the workers' directory: on sys.path as a script, not when the tests import this module
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _replica_state import stack_over_replicas

    host_state, stacked = stack_over_replicas(one_state, NUM_REPLICAS)

    def spec(path, leaf, is_stacked):
        if not is_stacked:
            return P()
        name = getattr(path[-1], "key", None)
        if name in one and np.shape(leaf) == one[name].shape:
            return replica_spec(one[name].shape)
        return P("replica")

    specs = jax.tree_util.tree_map_with_path(spec, one_state, stacked)
    axes = lookax.replica_axes(one_state)
    # The counters are shared, the slow weights and fault counters have a replica axis.
    assert specs.count == P() and specs.phase == P() and axes.count is None
    assert specs.outer_state.dropped == P("replica")
    for name, value in one.items():
        assert host_state.lagging_slow[name].shape == (NUM_REPLICAS, *value.shape), name
    return host_state, specs, axes


def replica_steps(run: ReplicaRun, average_grads: bool = False, shapes: dict | None = None):
    """(mesh, specs, sharded jitted step, vmapped jitted step, host params/state, targets)."""
    tx = run.make_tx()
    mesh = make_replica_mesh()
    one, host, targets = replica_problem(shapes)
    params_specs = {k: replica_spec(v.shape) for k, v in one.items()}
    host_state, specs, axes = replica_state(tx, one)
    local_step = replica_local_step(tx, average_grads)
    # Each device's replica (a leading axis of 1 on its blocks) under vmap, as in docs/replicas.md.
    local = jax.vmap(local_step, in_axes=(0, axes, 0), out_axes=(0, axes))
    sharded = jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(params_specs, specs, params_specs),
            out_specs=(params_specs, specs),
        )
    )
    vmapped = jax.jit(
        jax.vmap(local_step, in_axes=(0, axes, 0), out_axes=(0, axes), axis_name="replica")
    )
    return mesh, specs, sharded, vmapped, host, host_state, targets


def put_specs(tree, mesh, specs):
    return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), tree, specs)


def params_specs_of(host: dict) -> dict:
    return {k: replica_spec(v.shape[1:]) for k, v in host.items()}


def assert_replica_step(run: ReplicaRun, call: int, params, state, slow_before, where: str):
    """After call ``call``: which slow weights moved, and where the replicas stand.

    The slow weights are bitwise equal on the 4 replicas after every call, and change (all
    replicas alike) exactly at their fragment's outer steps. Right after an exact outer step
    (``sync_delay=0``) every replica's params are on them within rtol 1e-6; otherwise the
    replicas differ (trained apart on their own data; after an overlapped outer step each
    replica's params are the new slow weights plus its own inner update).
    """
    slow = jax.tree.map(np.asarray, lookax.slow_params(state, params))
    moved = []
    for name, p in params.items():
        s, p = slow[name], np.asarray(p)
        for r in range(1, NUM_REPLICAS):
            assert np.array_equal(s[r], s[0]), f"{where}: {name} slow of replica {r} != 0"
        due = run.outer_step_at(call, name)
        moved_here = not np.array_equal(s, slow_before[name])
        assert moved_here == due, f"{where}: {name}'s slow weights moved: {moved_here}"
        moved += [name] * due
        if due and run.sync_delay == 0:
            np.testing.assert_allclose(p, s, rtol=1e-6, atol=1e-7, err_msg=f"{where} {name}")
        else:
            assert not np.allclose(p[1], p[0]), f"{where}: {name} equal on replicas 0 and 1"
    return slow, moved


def replicas_shard_map_check(run_name: str) -> str:
    run = REPLICA_RUNS[run_name]
    mesh, specs, sharded, vmapped, host, host_state, targets = replica_steps(run)
    params_specs = params_specs_of(host)
    params, state = put_specs(host, mesh, params_specs), put_specs(host_state, mesh, specs)
    device = jax.devices()[0]
    ref_params, ref_state = jax.device_put((host, host_state), device)
    slow, ref_slow = dict(host_state.lagging_slow), dict(host_state.lagging_slow)
    worst, outer_steps = 0.0, []
    for i in range(NUM_STEPS):
        params, state = sharded(params, state, put_specs(targets[i], mesh, params_specs))
        ref_params, ref_state = vmapped(ref_params, ref_state, jax.device_put(targets[i], device))
        for name, leaf in state.lagging_slow.items():
            assert leaf.sharding.is_equivalent_to(params[name].sharding, leaf.ndim), name
        worst = max(worst, assert_close_trees(params, ref_params, f"params after {i + 1}"))
        worst = max(worst, assert_close_trees(state, ref_state, f"state after {i + 1}"))
        slow, moved = assert_replica_step(run, i + 1, params, state, slow, f"shard_map {i + 1}")
        ref_slow, _ = assert_replica_step(run, i + 1, ref_params, ref_state, ref_slow, "vmap")
        if moved:
            outer_steps.append(f"{i + 1}:{'+'.join(moved)}")
    assert len(outer_steps) >= 2, outer_steps
    assert int(state.count) == NUM_STEPS and int(state.phase) == NUM_STEPS % run.sync_period
    assert not np.asarray(lookax.replica_health(state).dropped).any()
    return f"outer steps (call:leaves) {outer_steps}; max abs diff vs vmap reference {worst:.3g}"


for run_name in REPLICA_RUNS:
    check(f"replicas[shard_map-{run_name}]")(lambda n=run_name: replicas_shard_map_check(n))


# --- HLO: the replica all-reduce lives only inside the sync branch. ----------------------

COLLECTIVES = (
    "all-reduce",
    "all-reduce-start",
    "all-gather",
    "all-gather-start",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
    "collective-permute-start",
    "ragged-all-to-all",
    "collective-broadcast",
)


def parse_hlo(text: str):
    """Computations of an HLO module text: {name: [(opcode, instruction line)]}, the entry."""
    computations: dict[str, list[tuple[str, str]]] = {}
    entry, current = None, None
    header = re.compile(r"^(ENTRY\s+)?%([^\s(]+)\s*\(.*\{\s*$")
    opcode = re.compile(r"=\s*.*?(?<![\w.\-])([a-z][a-z0-9\-]*)\(")
    for line in text.splitlines():
        if current is None:
            match = header.match(line)
            if match:
                current = match.group(2)
                computations[current] = []
                if match.group(1):
                    entry = current
        elif line.startswith("}"):
            current = None
        elif line.strip():
            body = re.sub(r",\s*metadata=\{.*?\}(?=,|$)", "", line)
            match = opcode.search(body)
            computations[current].append((match.group(1) if match else "", body))
    assert entry is not None and computations, "no ENTRY computation parsed"
    return computations, entry


def call_edges(computations):
    """{caller: (computations it calls as conditional branches, every other callee)}."""
    names = set(computations)
    edges = {}
    for caller, instructions in computations.items():
        branches, others = set(), set()
        for op, line in instructions:
            branch_names = set()
            for group in re.findall(r"branch_computations=\{([^}]*)\}", line):
                branch_names |= {n.strip().lstrip("%") for n in group.split(",") if n.strip()}
            for key in ("true_computation", "false_computation"):
                branch_names |= set(re.findall(rf"{key}=%?([\w.\-]+)", line))
            assert not branch_names or op == "conditional", (op, line)
            assert branch_names <= names, (branch_names - names, line)
            branches |= branch_names
            referenced = {n for n in re.findall(r"%([\w.\-]+)", line) if n in names}
            others |= referenced - branch_names
        edges[caller] = (branches, others)
    return edges


def reachable(starts, edges, follow_branches: bool) -> set[str]:
    seen, todo = set(), list(starts)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        branches, others = edges[name]
        todo.extend(others)
        if follow_branches:
            todo.extend(branches)
    return seen


def expand_replica_groups(line: str) -> list[list[int]]:
    """replica_groups={{0,2},{1,3}} or the iota form [G,S]<=[dims]T(perm)."""
    match = re.search(r"replica_groups=\{((?:\{[\d,\s]*\},?\s*)*)\}", line)
    if match:
        return [
            [int(x) for x in g.split(",") if x.strip()]
            for g in re.findall(r"\{([^}]*)\}", match.group(1))
        ]
    match = re.search(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", line)
    assert match, f"no replica_groups in {line}"
    shape = [int(x) for x in match.group(1).split(",")]
    ids = np.arange(int(np.prod([int(x) for x in match.group(2).split(",")])))
    ids = ids.reshape([int(x) for x in match.group(2).split(",")])
    if match.group(3):
        ids = ids.transpose([int(x) for x in match.group(3).split(",")])
    return ids.reshape(shape).tolist()


def lowered_replica_step(run: ReplicaRun, average_grads=False, shapes: dict | None = None):
    """The lowered shard_map step (StableHLO by ``.as_text()``), and its mesh."""
    mesh, specs, sharded, _, host, host_state, targets = replica_steps(run, average_grads, shapes)
    params_specs = params_specs_of(host)
    args = (
        put_specs(host, mesh, params_specs),
        put_specs(host_state, mesh, specs),
        put_specs(targets[0], mesh, params_specs),
    )
    return sharded.lower(*args), mesh


def compiled_replica_step(run: ReplicaRun, average_grads=False, shapes: dict | None = None):
    """The HLO text of the compiled shard_map step, and its mesh."""
    lowered, mesh = lowered_replica_step(run, average_grads, shapes)
    return lowered.compile().as_text(), mesh


def collectives_by_place(text: str):
    """Every collective instruction as (computation, opcode, line), split by where it runs.

    Returns (in_branches, elsewhere, branch roots): ``in_branches`` are the collectives in
    computations reachable only through a conditional's branch; ``elsewhere`` the ones in
    computations reachable from ENTRY without entering a branch (ENTRY, fusions, while
    bodies, reducers, ...).
    """
    computations, entry = parse_hlo(text)
    edges = call_edges(computations)
    branch_roots = set().union(*(branches for branches, _ in edges.values()))
    outside = reachable([entry], edges, follow_branches=False)
    inside = reachable(branch_roots, edges, follow_branches=True)
    assert inside | outside == reachable([entry], edges, follow_branches=True)
    collectives = [
        (name, op, line)
        for name, instructions in computations.items()
        for op, line in instructions
        if op in COLLECTIVES
    ]
    for name, op, _ in collectives:
        assert name in inside | outside, f"{op} in {name}, a computation ENTRY never calls"
    in_branches = [c for c in collectives if c[0] in inside and c[0] not in outside]
    elsewhere = [c for c in collectives if c[0] in outside]
    return in_branches, elsewhere, branch_roots


FLOAT_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2}
PARAMS_SIZED = 64  # bytes: above every scalar all-reduce's (count, fingerprint, ok flags)


def all_reduce_float_bytes(line: str) -> int:
    """The float bytes an all-reduce instruction returns (a tuple's elements summed)."""
    match = re.match(r"\s*(?:ROOT\s+)?%[\w.\-]+\s*=\s*(.*?)\s*all-reduce(?:-start)?\(", line)
    assert match, line
    total = 0
    for dtype, dims in re.findall(r"\b(f64|f32|bf16|f16)\[([\d,]*)\]", match.group(1)):
        total += FLOAT_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d]))
    return total


def mesh_groups(mesh: jax.sharding.Mesh, axis: int) -> list[list[int]]:
    """The partition ids (positions in the mesh's device list) of a reduction over ``axis``."""
    position = np.arange(mesh.devices.size).reshape(mesh.devices.shape)
    groups = np.moveaxis(position, axis, -1).reshape(-1, mesh.devices.shape[axis])
    return sorted(sorted(g) for g in groups.tolist())


def replicas_hlo_check(tx_name: str, control: bool = True) -> str:
    text, mesh = compiled_replica_step(REPLICA_RUNS[tx_name])
    in_branches, elsewhere, branch_roots = collectives_by_place(text)
    assert branch_roots, "no conditional in the compiled step"
    assert not elsewhere, "collectives outside a conditional branch:\n" + "\n".join(
        f"{name}: {line.strip()[:300]}" for name, _, line in elsewhere
    )
    all_reduces = [c for c in in_branches if c[1] in ("all-reduce", "all-reduce-start")]
    assert len(all_reduces) == len(in_branches), [c[1] for c in in_branches]
    # The params-sized all-reduces reduce over "replica": groups of 4 devices that share a
    # "model" index. The scalar ones (the contributor count and the slow weights' fingerprint
    # over "replica", a replica's finiteness flags over its 2 "model" devices) are small.
    over_replica, over_model = mesh_groups(mesh, 0), mesh_groups(mesh, 1)
    params_sized = [c for c in all_reduces if all_reduce_float_bytes(c[2]) > PARAMS_SIZED]
    assert params_sized, "no params-sized all-reduce in the compiled step"
    for _, _, line in all_reduces:
        groups = sorted(sorted(g) for g in expand_replica_groups(line))
        large = all_reduce_float_bytes(line) > PARAMS_SIZED
        allowed = [over_replica] if large else [over_replica, over_model]
        assert groups in allowed, (groups, allowed, line.strip()[:400])
    detail = (
        f"{len(params_sized)} params-sized and {len(all_reduces) - len(params_sized)} scalar "
        f"all-reduce(s), only in {sorted({c[0] for c in all_reduces})} (conditional branches: "
        f"{sorted(branch_roots)})"
    )
    if not control:
        return detail
    # Negative control: the same parse flags a step that averages its gradients over
    # "replica" (forbidden with replicas), an all-reduce outside the branch on every step.
    control_text, _ = compiled_replica_step(REPLICA_RUNS[tx_name], average_grads=True)
    _, control_elsewhere, _ = collectives_by_place(control_text)
    assert any(op.startswith("all-reduce") for _, op, _ in control_elsewhere), (
        "the parse missed the per-step gradient all-reduce of the control"
    )
    return f"{detail}; control: {len(control_elsewhere)} collective(s) outside the branches"


SYNTHETIC_HLO = """HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%inner (p: f32[4]) -> f32[4] {
  %p = f32[4] parameter(0)
  ROOT %r = f32[4] all-reduce(%p), replica_groups=[2,4]<=[4,2]T(1,0), to_apply=%add
}

%on_true (p: f32[4]) -> f32[4] {
  %p = f32[4] parameter(0)
  ROOT %c = f32[4] call(%p), to_apply=%inner
}

%on_false (p: f32[4]) -> f32[4] {
  ROOT %p = f32[4] parameter(0)
}

%body (p: f32[4]) -> f32[4] {
  %p = f32[4] parameter(0)
  ROOT %g = f32[4] all-gather(%p), replica_groups={{0,1},{2,3}}, dimensions={0}
}

ENTRY %main (x: f32[4], q: pred[]) -> (f32[4], f32[4]) {
  %x = f32[4] parameter(0)
  %q = pred[] parameter(1)
  %k = f32[4] conditional(%q, %x, %x), true_computation=%on_true, false_computation=%on_false
  %f = f32[4] fusion(%x), kind=kLoop, calls=%body, metadata={op_name="a/b" x=1}
  ROOT %t = (f32[4], f32[4]) tuple(%k, %f)
}
"""


@check("replicas_hlo[parser-self-test]")
def _() -> str:
    # The parse on a small module in the other syntaxes: true/false_computation, an all-reduce
    # one call below a branch, iota replica groups, a collective in a non-branch callee.
    in_branches, elsewhere, roots = collectives_by_place(SYNTHETIC_HLO)
    assert roots == {"on_true", "on_false"}, roots
    assert [(c[0], c[1]) for c in in_branches] == [("inner", "all-reduce")], in_branches
    assert [(c[0], c[1]) for c in elsewhere] == [("body", "all-gather")], elsewhere
    assert expand_replica_groups(in_branches[0][2]) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert expand_replica_groups(elsewhere[0][2]) == [[0, 1], [2, 3]]
    return "branch syntaxes, transitive calls and replica-group forms parsed"


for tx_name in ("diloco", "lookahead"):
    check(f"replicas_hlo[{tx_name}]")(lambda n=tx_name: replicas_hlo_check(n))


check("replicas_hlo[overlapped]")(lambda: replicas_hlo_check("diloco-overlapped", control=False))


# --- HLO: Streaming DiLoCo, one all-reduce per fragment, each in its own branch. ----------
#
# Three leaves whose fragments differ in size (per-device blocks of 20, 8 x 5 and 16 x 5
# floats), so the bytes a branch all-reduces name the fragment it belongs to. The fragments
# (contiguous in leaf order, about equal element counts): F=2 {a, b} {c}; F=3 {a} {b} {c}.
STREAMING_SHAPES = {"a": (40,), "b": (8, 10), "c": (16, 10)}
STREAMING_FRAGMENTS = {2: {"a": 0, "b": 0, "c": 1}, 3: {"a": 0, "b": 1, "c": 2}}


def top_level_branch_bytes(text: str) -> dict[str, int]:
    """Params-sized float bytes all-reduced under each branch of an outermost conditional.

    The outermost conditionals are the ones reachable from ENTRY without entering a branch;
    a branch's bytes include the conditionals nested in it.
    """
    computations, entry = parse_hlo(text)
    edges = call_edges(computations)
    outside = reachable([entry], edges, follow_branches=False)
    roots = set().union(*(edges[name][0] for name in outside))
    out = {}
    for root in sorted(roots):
        sizes = [
            all_reduce_float_bytes(line)
            for name in reachable([root], edges, follow_branches=True)
            for op, line in computations[name]
            if op in ("all-reduce", "all-reduce-start")
        ]
        out[root] = sum(b for b in sizes if b > PARAMS_SIZED)
    return out


def streaming_hlo(fragments: int) -> str:
    run = diloco_run(6, fragments=fragments)  # 6: divisible by both F
    text, _ = compiled_replica_step(run, shapes=STREAMING_SHAPES)
    _, elsewhere, _ = collectives_by_place(text)
    assert not elsewhere, "collectives outside a conditional branch:\n" + "\n".join(
        f"{name}: {line.strip()[:300]}" for name, _, line in elsewhere
    )
    expected = [0] * fragments  # per device: the last axis split over the 2 "model" devices
    for name, i in STREAMING_FRAGMENTS[fragments].items():
        expected[i] += 4 * int(np.prod(STREAMING_SHAPES[name])) // 2
    assert len(set(expected)) == fragments, expected
    per_branch = {root: b for root, b in top_level_branch_bytes(text).items() if b}
    assert sorted(per_branch.values()) == sorted(expected), (per_branch, expected)
    fragment_of = {b: expected.index(b) for b in per_branch.values()}
    return f"F={fragments}: " + ", ".join(
        f"{root} = fragment {fragment_of[b]} ({b} B)"
        for root, b in sorted(per_branch.items(), key=lambda item: fragment_of[item[1]])
    )


@check("replicas_hlo[streaming]")
def _() -> str:
    return "; ".join(streaming_hlo(fragments) for fragments in (2, 3))


# --- HLO: communication_dtype, the lowered all-reduce in bf16. ---------------------------


def stablehlo_all_reduces(text: str) -> list[list[tuple[tuple[int, ...], str]]]:
    """Each ``stablehlo.all_reduce``'s operands as (shape, element type)."""
    found = []
    pattern = r'"stablehlo\.all_reduce"\(.*?\}\) : \(([^)]*)\) ->'
    for operands in re.findall(pattern, text, flags=re.S):
        found.append(
            [
                (tuple(int(d) for d in dims.split("x") if d), dtype)
                for dims, dtype in re.findall(r"tensor<((?:\d+x)*)(\w+)>", operands)
            ]
        )
    return found


@check("replicas_hlo[bf16-communication]")
def _() -> str:
    lowered, _ = lowered_replica_step(diloco_run(communication_dtype=jnp.bfloat16))
    blocks = {(1, 8, 3), (1, 3)}  # one replica's params blocks on a device, under vmap
    operands = [o for ops in stablehlo_all_reduces(lowered.as_text()) for o in ops]
    params_sized = [(shape, dtype) for shape, dtype in operands if shape in blocks]
    assert {shape for shape, dtype in params_sized if dtype == "bf16"} == blocks, operands
    assert all(dtype == "bf16" for _, dtype in params_sized), params_sized
    compiled = [
        re.sub(r"\{[\d,]*\}", "", line.split("=", 1)[1].split("all-reduce(")[0]).strip()
        for line in lowered.compile().as_text().splitlines()
        if re.search(r"=.*\ball-reduce(-start)?\(", line)
    ]
    large = [c for c in compiled if re.search(r"(f32|bf16)\[1,8,3\]", c)]
    assert large, compiled
    return (
        f"lowered: params-sized all_reduce operands {sorted(params_sized)}; compiled (XLA:CPU) "
        f"params-sized all-reduce: {large} (every all-reduce: {compiled})"
    )


if __name__ == "__main__":
    assert jax.device_count() == 8, jax.devices()
    with open(sys.argv[1], "w") as out:
        json.dump(run_checks(), out, indent=1)
