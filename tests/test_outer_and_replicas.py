"""Lookahead with an outer optimizer and replicas (SlowMo, DiLoCo), in one process.

The outer step against plain Lookahead, SlowMo and DiLoCo against a float64 NumPy
reference of the papers' algorithms (1 and 4 replicas under ``jax.vmap(axis_name=...)``
with the counters unbatched), replica-invariant slow weights, and bad input. The
8-device ``shard_map`` runs, the HLO check and the two-process run are in
tests/test_sharding.py and tests/test_multiprocess.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import assert_trees_close, params_and_slow_params, scan_trajectory

import lookax

DIM, STEPS, K = 6, 13, 4  # syncs after steps 4, 8, 12
LR, WD = 0.05, 0.1


def targets(replicas: int) -> np.ndarray:
    """Each replica's data: a moving quadratic target per step, different per replica."""
    rng = np.random.default_rng(replicas)
    return rng.normal(size=(replicas, STEPS, DIM))


# --- float64 NumPy references of the papers' algorithms --------------------------------


class NumpyAdamW:
    """torch.optim.AdamW: decoupled decay, then the bias-corrected Adam step."""

    def __init__(self, b1=0.9, b2=0.999, eps=1e-8):
        self.b1, self.b2, self.eps = b1, b2, eps

    def init(self, p):
        return {"t": 0, "m": np.zeros_like(p), "v": np.zeros_like(p)}

    def step(self, p, g, s):
        t = s["t"] + 1
        p = p * (1 - LR * WD)
        m = self.b1 * s["m"] + (1 - self.b1) * g
        v = self.b2 * s["v"] + (1 - self.b2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - self.b2**t) + self.eps
        return p - LR / (1 - self.b1**t) * m / denom, {"t": t, "m": m, "v": v}


class NumpySgdMomentum:
    """torch.optim.SGD(momentum=0.9): the buffer starts as the first gradient."""

    def init(self, p):
        return {"b": None}

    def step(self, p, g, s):
        b = g if s["b"] is None else 0.9 * s["b"] + g
        return p - LR * b, {"b": b}


def numpy_outer_lookahead(target, inner, outer_lr, outer_momentum, nesterov):
    """M replicas, K inner steps apart, then the outer momentum step on the mean delta."""
    replicas = target.shape[0]
    slow = np.zeros(DIM)
    fast = [slow.copy() for _ in range(replicas)]
    states = [inner.init(slow) for _ in range(replicas)]
    buf, path_fast, path_slow = None, [], []
    for t in range(1, STEPS + 1):
        for m in range(replicas):
            grad = fast[m] - target[m, t - 1]  # of |p - target|^2 / 2
            fast[m], states[m] = inner.step(fast[m], grad, states[m])
        if t % K == 0:
            delta = np.mean([slow - f for f in fast], axis=0)
            buf = delta if buf is None else outer_momentum * buf + delta
            slow = slow - outer_lr * (delta + outer_momentum * buf if nesterov else buf)
            fast = [slow.copy() for _ in range(replicas)]
        path_fast.append(np.stack(fast))
        path_slow.append(slow.copy())
    return np.stack(path_fast), np.stack(path_slow)


# --- lookax under jax.vmap(axis_name=...) ------------------------------------------------


def run_replicas(tx, target):
    """The training loop, replicas as a vmapped axis, Lookahead's counters unbatched."""
    replicas = target.shape[0]
    one = tx.init(jnp.zeros(DIM, jnp.float32))
    state = jax.tree.map(lambda x: jnp.broadcast_to(x, (replicas, *jnp.shape(x))), one)
    state = state._replace(count=one.count, phase=one.phase)
    axes = jax.tree.map(lambda _: 0, one)._replace(count=None, phase=None)

    def step(params, state, target_t):
        updates, state = tx.update(params - target_t, state, params)
        return optax.apply_updates(params, updates), state

    vmapped = jax.vmap(step, in_axes=(0, axes, 0), out_axes=(0, axes), axis_name="replica")

    @jax.jit
    def run(params, state, target):
        def body(carry, target_t):
            params, state = vmapped(*carry, target_t)
            return (params, state), (params, lookax.slow_params(state, params))

        return jax.lax.scan(body, (params, state), jnp.swapaxes(target, 0, 1))[1]

    params = jnp.zeros((replicas, DIM), jnp.float32)
    fast, slow = run(params, state, jnp.asarray(target, jnp.float32))
    return np.asarray(fast), np.asarray(slow)  # (steps, replicas, dim)


def relative_error(actual, expected) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


CASES = {
    "diloco": (
        lambda axis: lookax.diloco(lookax.adamw(LR, weight_decay=WD), K, replica_axis=axis),
        NumpyAdamW(),
        (0.7, 0.9, True),
    ),
    "slowmo": (
        lambda axis: lookax.slowmo(lookax.sgd(LR, momentum=0.9), K, replica_axis=axis),
        NumpySgdMomentum(),
        (1.0, 0.5, False),
    ),
}


@pytest.mark.parametrize("replicas", [1, 4])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_the_papers_algorithm_in_float64_numpy(name, replicas):
    make, numpy_inner, outer = CASES[name]
    target = targets(replicas)
    fast, slow = run_replicas(make("replica"), target)
    ref_fast, ref_slow = numpy_outer_lookahead(target, numpy_inner, *outer)
    # fast: (steps, replicas, dim); slow: (steps, replicas, dim), the same on every replica
    assert relative_error(fast, ref_fast) < 1e-5
    for m in range(replicas):
        assert relative_error(slow[:, m], ref_slow) < 1e-5
    for t in range(K - 1, STEPS, K):  # after each sync
        assert np.all(slow[t] == slow[t, :1]), "slow weights differ between replicas"
        np.testing.assert_allclose(fast[t], slow[t], rtol=1e-6, atol=1e-7)
    if replicas > 1:  # the replicas really trained apart between syncs
        assert not np.allclose(fast[K], fast[K, :1])
    assert not np.allclose(ref_slow[-1], 0.0)


def test_outer_sgd_is_plain_lookahead():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.zeros(4)}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(10, *p.shape)), p.dtype), params)
    plain = lookax.lookahead(optax.adam(0.05), 3, 0.6)
    outer = lookax.lookahead(optax.adam(0.05), 3, outer=optax.sgd(0.6))

    def trajectory(tx):
        run = lambda p: scan_trajectory(tx, p, grads, record=params_and_slow_params)
        return jax.jit(run)(params)

    assert_trees_close(trajectory(plain), trajectory(outer))
    # The outer path stores the slow weights at the sync itself: nothing is pending.
    state = outer.init(params)
    for t in range(3):
        u, state = outer.update(jax.tree.map(lambda x, t=t: x[t], grads), state, params)
        params = optax.apply_updates(params, u)
    assert int(state.phase) == 0
    np.testing.assert_allclose(state.lagging_slow["w"], params["w"], rtol=1e-6)
    assert lookax.slow_params(state, params)["w"] is not params["w"]


def test_outer_state_changes_only_at_a_sync():
    tx = lookax.slowmo(optax.sgd(0.1), sync_period=3)
    params = jnp.ones(2)
    state = tx.init(params)
    traces = []
    for _ in range(6):
        updates, state = tx.update(jnp.ones(2), state, params)
        params = optax.apply_updates(params, updates)
        traces.append(np.asarray(state.outer_state.per_fragment[0][1].trace))
    np.testing.assert_array_equal(traces[0], 0.0)
    np.testing.assert_array_equal(traces[1], traces[0])
    assert not np.array_equal(traces[2], traces[1])  # the sync after step 3
    np.testing.assert_array_equal(traces[4], traces[3])
    assert not np.array_equal(traces[5], traces[4])


def test_bad_outer_and_replica_arguments():
    with pytest.raises(TypeError, match="outer must be an optax.GradientTransformation"):
        lookax.lookahead(optax.sgd(0.1), 4, outer=lambda x: x)
    with pytest.raises(ValueError, match="either outer or slow_step_size"):
        lookax.lookahead(optax.sgd(0.1), 4, 0.5, outer=optax.sgd(0.5))
    with pytest.raises(ValueError, match="interpolate"):
        lookax.lookahead(optax.sgd(0.1), 4, outer=optax.sgd(0.5), inner_state_on_sync="interpolate")
    with pytest.raises(TypeError, match="replica_axis"):
        lookax.lookahead(optax.sgd(0.1), 4, replica_axis=3)
    tx = lookax.diloco(optax.sgd(0.1), 4, replica_axis="replicas")
    params = jnp.ones((2, 3))
    state = jax.vmap(tx.init)(params)
    step = jax.vmap(lambda p, s: tx.update(p, s, p), axis_name="workers")  # a different name
    with pytest.raises(ValueError, match="replica_axis='replicas' is not a mapped axis"):
        step(params, state)
