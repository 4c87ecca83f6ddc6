"""lookax.lookahead under JAX's transformations (docs/getting-started.md, "Where it works").

jax.jit with params and state donated; jax.vmap over seeds (and what it costs: with a batched
counter the sync's lax.cond becomes a select that runs both branches); jax.eval_shape(tx.init)
with concrete and ShapeDtypeStruct params; float64 under jax_enable_x64 (in a subprocess, so
x64 never leaks into this process).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import assert_trees_bitwise_equal, assert_trees_close, assert_worker_checks_passed

import lookax

SYNC_PERIOD = 3
NUM_STEPS = 7
ON_SYNC = ("keep", "reset", "interpolate")
X64_WORKER = Path(__file__).parent / "_integration_workers" / "x64_worker.py"


def random_tree(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        "scale": jnp.asarray(rng.normal(), jnp.float32),
    }


def loss(params: dict) -> jax.Array:
    return sum(jnp.sum(jnp.sin(leaf) + 0.5 * leaf**2) for leaf in jax.tree.leaves(params))


def make_tx(on_sync: str = "keep") -> optax.GradientTransformation:
    return lookax.lookahead(optax.adam(0.05), SYNC_PERIOD, 0.5, inner_state_on_sync=on_sync)


def step_fn(tx):
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    return step


# --- jit with donation -----------------------------------------------------------------------


@pytest.mark.parametrize("on_sync", ON_SYNC)
def test_jit_with_params_and_state_donated(on_sync):
    tx = make_tx(on_sync)
    donated = jax.jit(step_fn(tx), donate_argnums=(0, 1))
    plain = jax.jit(step_fn(tx))

    params = random_tree(0)
    state = tx.init(params)
    ref_params, ref_state = random_tree(0), tx.init(random_tree(0))
    with warnings.catch_warnings():
        # jax warns "Some donated buffers were not usable" when it cannot reuse one
        warnings.simplefilter("error")
        for _ in range(NUM_STEPS):
            inputs = jax.tree.leaves((params, state))
            params, state = donated(params, state)
            assert all(leaf.is_deleted() for leaf in inputs)  # every buffer was donated
            ref_params, ref_state = plain(ref_params, ref_state)
            assert_trees_bitwise_equal(params, ref_params)
            assert_trees_bitwise_equal(state, ref_state)
    assert int(state.count) == NUM_STEPS and int(state.phase) == NUM_STEPS % SYNC_PERIOD
    assert donated._cache_size() == 1


# --- vmap over seeds -------------------------------------------------------------------------

SEEDS = (0, 1, 2, 3)


def batched(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unbatched_runs(tx):
    step = jax.jit(step_fn(tx))
    runs = []
    for seed in SEEDS:
        params = random_tree(seed)
        state = tx.init(params)
        for _ in range(NUM_STEPS):
            params, state = step(params, state)
        runs.append((params, state))
    return runs


def counters_unbatched_axes(state: lookax.LookaheadState):
    """vmap axes for a lookahead(adam) state: params-shaped leaves batched, counters shared."""
    adam_state, empty = state.inner_state
    inner_axes = (optax.ScaleByAdamState(count=None, mu=0, nu=0), empty)
    at_sync_axes = None
    if state.inner_state_at_sync is not None:
        at_sync_axes = inner_axes
    return lookax.LookaheadState(
        count=None,
        phase=None,
        lagging_slow=0,
        inner_state=inner_axes,
        inner_state_at_sync=at_sync_axes,
    )


def share_counters(state: lookax.LookaheadState, axes: lookax.LookaheadState):
    """The batched state with the counters (identical across seeds) taken once."""

    def take(axis, subtree):
        return subtree if axis == 0 else jax.tree.map(lambda x: x[0], subtree)

    return jax.tree.map(take, axes, state, is_leaf=lambda node: node is None)


def primitive_names(jaxpr) -> set[str]:
    """Primitive names in a jaxpr, sub-jaxprs (cond branches, ...) included."""
    try:
        from jax.extend.core import jaxprs_in_params
    except ImportError:  # older jax
        jaxprs_in_params = jax.core.jaxprs_in_params
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jaxprs_in_params(eqn.params):
            names |= primitive_names(sub)
    return names


@pytest.mark.parametrize("on_sync", ON_SYNC)
def test_vmap_over_seeds(on_sync):
    tx = make_tx(on_sync)
    runs = unbatched_runs(tx)
    params = batched([random_tree(seed) for seed in SEEDS])

    # 1. Everything batched (vmap the whole step and init): the counters are batched too.
    state = jax.vmap(tx.init)(params)
    assert state.count.shape == (len(SEEDS),)
    step = jax.jit(jax.vmap(step_fn(tx)))
    p, s = params, state
    for _ in range(NUM_STEPS):
        p, s = step(p, s)
    for i, (ref_params, ref_state) in enumerate(runs):
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], p), ref_params)
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], s), ref_state)

    # 2. Counters shared across seeds (in_axes None): the same results.
    axes = counters_unbatched_axes(state)
    shared = share_counters(state, axes)
    step_shared = jax.jit(jax.vmap(step_fn(tx), in_axes=(0, axes), out_axes=(0, axes)))
    p, s = params, shared
    for _ in range(NUM_STEPS):
        p, s = step_shared(p, s)
    assert s.count.shape == () and int(s.count) == NUM_STEPS
    for i, (ref_params, ref_state) in enumerate(runs):
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], p), ref_params)
        assert_trees_close(
            jax.tree.map(lambda x, i=i: x[i], s.lagging_slow), ref_state.lagging_slow
        )
        slow_now = jax.tree.map(lambda x, i=i: x[i], lookax.slow_params(s, p))
        assert_trees_close(slow_now, lookax.slow_params(ref_state, ref_params))


@pytest.mark.compiler("looks for cond and select_n primitives in the vmapped step's jaxpr")
def test_vmap_cost_a_batched_counter_turns_the_cond_into_a_select():
    # The documented cost: with batched counters lax.cond cannot branch per example, so vmap
    # turns it into a select and both branches (the whole sync) run at every step. With the
    # counters unbatched the cond survives and a non-sync step skips the sync.
    tx = make_tx("keep")
    params = batched([random_tree(seed) for seed in SEEDS])
    state = jax.vmap(tx.init)(params)
    all_batched = jax.make_jaxpr(jax.vmap(step_fn(tx)))(params, state).jaxpr
    axes = counters_unbatched_axes(state)
    shared = share_counters(state, axes)
    counters_shared = jax.make_jaxpr(jax.vmap(step_fn(tx), in_axes=(0, axes), out_axes=(0, axes)))(
        params, shared
    ).jaxpr
    unbatched = jax.make_jaxpr(step_fn(tx))(random_tree(0), tx.init(random_tree(0))).jaxpr

    assert "cond" in primitive_names(unbatched)
    assert "cond" in primitive_names(counters_shared)
    assert "cond" not in primitive_names(all_batched)
    assert "select_n" in primitive_names(all_batched)


# --- eval_shape and ShapeDtypeStruct params --------------------------------------------------


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def shapes_and_dtypes(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


@pytest.mark.parametrize(
    "name",
    ["lookahead_adam_interpolate", "chain_clip_lookahead", "ranger", "inject_hyperparams"],
)
def test_eval_shape_of_init_and_update(name):
    tx = {
        "lookahead_adam_interpolate": make_tx("interpolate"),
        "chain_clip_lookahead": optax.chain(optax.clip_by_global_norm(1.0), make_tx("reset")),
        "ranger": lookax.ranger(1e-3),
        "inject_hyperparams": optax.inject_hyperparams(lookax.lookahead)(
            optax.adam(1e-3), sync_period=4, slow_step_size=0.5
        ),
    }[name]
    params = random_tree(0)
    params["half"] = jnp.ones((2, 2), jnp.bfloat16)
    concrete = tx.init(params)

    from_params = jax.eval_shape(tx.init, params)
    from_structs = jax.eval_shape(tx.init, abstract(params))
    assert jax.tree.structure(from_params) == jax.tree.structure(concrete)
    assert shapes_and_dtypes(from_params) == shapes_and_dtypes(concrete)
    assert shapes_and_dtypes(from_structs) == shapes_and_dtypes(concrete)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(from_structs))
    slow = jax.eval_shape(lookax.slow_params, from_structs, abstract(params))
    assert shapes_and_dtypes(slow) == shapes_and_dtypes(params)

    # update traced on abstract values: state comes back with the same shapes and dtypes.
    updates, new_state = jax.eval_shape(tx.update, abstract(params), from_structs, abstract(params))
    assert shapes_and_dtypes(updates) == shapes_and_dtypes(params)
    assert shapes_and_dtypes(new_state) == shapes_and_dtypes(concrete)


# --- float64 (subprocess) --------------------------------------------------------------------


@pytest.mark.slow
def test_float64_under_x64_in_a_subprocess(tmp_path, run_worker):
    out = tmp_path / "x64.json"
    run_worker(X64_WORKER, out, timeout=240)
    expected = [
        "float64_hand_example",
        "float64_matches_numpy_algorithm_1",
        "mixed_float64_float32_tree_and_ranger",
    ]
    assert_worker_checks_passed(json.loads(out.read_text()), expected)
    # x64 did not leak into this process
    assert jnp.zeros(()).dtype == jnp.float32
