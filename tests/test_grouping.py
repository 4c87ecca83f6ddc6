"""lookax.grouped: the leaf-grouping wrapper runs the same trajectory on fewer buffers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import assert_trees_bitwise_equal, jit_update_step

import lookax
from lookax.grouping import GroupedState, grouped, ungroup


def _mixed_params(seed: int = 0) -> dict:
    """Leaves sharing (dtype, size) in different shapes, others alone, two dtypes."""
    rng = np.random.default_rng(seed)

    def leaf(shape, dtype=jnp.float32):
        return jnp.asarray(rng.normal(size=shape), dtype)

    return {
        "conv": leaf((3, 3, 2, 4)),
        "dense": leaf((8, 9)),
        "scalar": leaf(()),
        "bias": leaf((1,)),
        "bf16": leaf((6,), jnp.bfloat16),
        "layers": [
            leaf((7,)),
            leaf((2, 3), jnp.bfloat16),
            leaf((6,)),
            leaf((4, 1)),
            leaf((72,)),
        ],
    }


def _gradient_stream(params: dict, steps: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(steps)
    ]


def _run(tx: optax.GradientTransformation, params: dict, grads: list) -> tuple[list, object]:
    step = jit_update_step(tx)
    state = tx.init(params)
    trajectory = []
    for g in grads:
        params, state = step(params, state, g)
        trajectory.append(params)
    return trajectory, state


INNERS = {
    "optax.adam": lambda: optax.adam(1e-2),
    "lookax.lion": lambda: lookax.lion(1e-3, weight_decay=0.1),
    "lookahead(sgd momentum)": lambda: lookax.lookahead(
        optax.sgd(0.05, momentum=0.9), sync_period=3, slow_step_size=0.5
    ),
}


@pytest.mark.parametrize("name", sorted(INNERS))
def test_trajectory_is_bitwise_the_ungrouped_one(name):
    params = _mixed_params()
    grads = _gradient_stream(params, steps=7)
    plain, _ = _run(INNERS[name](), params, grads)
    grouped_run, state = _run(grouped(INNERS[name]()), params, grads)
    assert isinstance(state, GroupedState)
    for step, (a, b) in enumerate(zip(plain, grouped_run, strict=True)):
        assert_trees_bitwise_equal(b, a, err_msg=f"{name} after step {step + 1}")


def test_plan_groups_equal_size_leaves_of_one_dtype():
    params = _mixed_params()
    state = grouped(optax.adam(1e-3)).init(params)
    plan = state.plan
    leaves = jax.tree.leaves(params)
    assert sorted(i for b in plan.buffers for i in b) == list(range(len(leaves)))
    for indices, flat in zip(plan.buffers, plan.flat, strict=True):
        assert len({(leaves[i].dtype, leaves[i].size) for i in indices}) == 1
        assert flat == (len(indices) > 1)
    # (f32, 72): conv, dense, layers[4] -> chunks of ceil(sqrt(3)) = 2 and 1 leaves;
    # (bf16, 6): bf16, layers[1]; (f32, 1): bias, scalar; the rest alone.
    sizes = sorted(
        (str(leaves[b[0]].dtype), leaves[b[0]].size, len(b))
        for b, f in zip(plan.buffers, plan.flat, strict=True)
        if f
    )
    assert sizes == [("bfloat16", 6, 2), ("float32", 1, 2), ("float32", 72, 2)]
    mu = state.inner_state[0].mu
    assert isinstance(mu, tuple) and len(mu) == len(plan.buffers)
    for m, indices, flat in zip(mu, plan.buffers, plan.flat, strict=True):
        first = leaves[indices[0]]
        expected = (first.size * len(indices),) if flat else first.shape
        assert m.shape == expected and m.dtype == first.dtype


def test_many_small_leaves_make_sqrt_n_buffers():
    params = [jnp.full((4, 5) if i % 2 else (20,), float(i)) for i in range(50)]
    state = grouped(optax.sgd(0.1, momentum=0.9)).init(params)
    assert len(state.plan.buffers) == 7  # chunks of ceil(sqrt(50)) = 8 leaves: 6 x 8 + 2
    assert [len(b) for b in state.plan.buffers] == [8] * 6 + [2]
    big = {"big": jnp.ones(70_000), "small": jnp.ones(3), "small2": jnp.ones(3)}
    plan = grouped(optax.adam(1e-3)).init(big).plan
    assert plan.buffers == ((1, 2), (0,)) and plan.flat == (True, False)
    plan = grouped(optax.adam(1e-3), max_leaf_size=None).init(big).plan
    assert plan.buffers == ((0,), (1, 2)) and plan.flat == (False, True)  # alone in its class


def test_key_none_keeps_leaves_apart():
    params = _mixed_params()
    tx = grouped(optax.adam(1e-3), key=lambda leaf: None)
    state = tx.init(params)
    assert len(state.plan.buffers) == len(jax.tree.leaves(params))
    assert not any(state.plan.flat)
    updates, _ = jax.jit(tx.update)(params, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_grouped_lookahead_slow_weights_match_ungrouped():
    params = _mixed_params()
    grads = _gradient_stream(params, steps=5)
    inner = INNERS["lookahead(sgd momentum)"]
    plain_path, plain_state = _run(inner(), params, grads)
    grouped_path, grouped_state = _run(grouped(inner()), params, grads)
    params = grouped_path[-1]  # step 5 of k = 3: the slow weights are the stored ones
    expected = lookax.slow_params(plain_state, plain_path[-1])
    # slow_params cuts the grouped buffers back into the params' leaves, alone and
    # inside a chain too.
    chained = (optax.EmptyState(), grouped_state)
    for slow in (
        lookax.slow_params(grouped_state, params),
        lookax.slow_params(chained, params),
    ):
        assert jax.tree.structure(slow) == jax.tree.structure(params)
        for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(slow), strict=True):
            assert x.shape == y.shape and x.dtype == y.dtype
            np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_ungroup_cuts_a_params_shaped_inner_state_back():
    params = _mixed_params()
    grads = _gradient_stream(params, steps=3)
    _, plain_state = _run(optax.adam(1e-3), params, grads)
    _, grouped_state = _run(grouped(optax.adam(1e-3)), params, grads)
    mu = ungroup(grouped_state, grouped_state.inner_state[0].mu)
    assert jax.tree.structure(mu) == jax.tree.structure(params)
    for x, y in zip(jax.tree.leaves(plain_state[0].mu), jax.tree.leaves(mu), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_composes_and_eval_shape_matches_init():
    params = _mixed_params()
    tx = optax.chain(optax.clip_by_global_norm(1.0), grouped(optax.adam(1e-3)))
    state = tx.init(params)
    shapes = jax.eval_shape(tx.init, params)
    assert jax.tree.structure(shapes) == jax.tree.structure(state)
    updates, _ = jax.jit(tx.update)(params, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)


def test_empty_tree():
    tx = grouped(optax.adam(1e-3))
    state = tx.init({})
    updates, _ = tx.update({}, state, {})
    assert updates == {}


def test_bad_input_raises():
    with pytest.raises(TypeError, match="inner"):
        grouped("adam")
    with pytest.raises(TypeError, match="key"):
        grouped(optax.adam(1e-3), key=3)
    with pytest.raises(ValueError, match="max_leaf_size"):
        grouped(optax.adam(1e-3), max_leaf_size=-1)
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    tx = grouped(optax.adam(1e-3))
    state = tx.init(params)
    with pytest.raises(ValueError, match="structure"):
        tx.update({"a": jnp.ones(3)}, state, params)
    with pytest.raises(ValueError, match=r"\['b'\].*shape"):
        tx.update({"a": jnp.ones(3), "b": jnp.ones(4)}, state, params)
    with pytest.raises(TypeError, match="GroupedState"):
        tx.update(params, optax.adam(1e-3).init(params), params)
    with pytest.raises(TypeError, match="GroupedState"):
        ungroup(optax.adam(1e-3).init(params), ())


_SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from lookax.grouping import grouped

    mesh = Mesh(np.array(jax.devices()), ("x",))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("x"))
    params = {
        "a": jax.device_put(jnp.arange(9.0), replicated),
        "b": jax.device_put(jnp.arange(8.0).reshape(4, 2), split),
        "c": jax.device_put(jnp.ones((3, 3)), replicated),
    }
    grads = jax.tree.map(lambda p: p * 0.1 + 1.0, params)
    results = []
    for tx in (optax.adam(1e-2), grouped(optax.adam(1e-2))):
        state = tx.init(params)
        step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
            *tx.update(g, s, p)))
        p = params
        for _ in range(3):
            p, state = step(p, state, grads)
        results.append((p, state))
    (plain, _), (grp, state) = results
    plan = state.plan
    assert plan.buffers == ((0, 2), (1,)) and plan.flat == (True, False), plan
    for k in params:
        np.testing.assert_array_equal(np.asarray(plain[k]), np.asarray(grp[k]))
    assert grp["b"].sharding.spec == P("x"), grp["b"].sharding
    print("OK")
    """
)


@pytest.mark.slow
def test_sharded_leaves_are_not_concatenated():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env.pop("JAX_ENABLE_X64", None)
    result = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
