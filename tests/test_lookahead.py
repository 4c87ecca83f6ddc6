"""lookax.lookahead against a NumPy Algorithm 1, optax.lookahead and its own guarantees."""

from __future__ import annotations

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import (
    HAND_TRAJECTORY,
    assert_trees_bitwise_equal,
    jit_update_step,
    params_and_slow_params,
    scan_trajectory,
)
from flax.training import train_state
from hypothesis import given, settings
from hypothesis import strategies as st

import lookax

TREE_SHAPES = {"kernel": (3, 4, 2), "bias": (5,), "scalar": ()}
INNER_CHOICES = ("sgd_momentum", "adam")
SYNC_CHOICES = ("keep", "reset", "interpolate")
LR = {"sgd_momentum": 0.05, "adam": 0.02}


def random_tree(rng: np.random.Generator, leading: tuple[int, ...] = ()) -> dict:
    return {
        name: rng.normal(size=leading + shape).astype(np.float32)
        for name, shape in TREE_SHAPES.items()
    }


def make_inner(name: str) -> optax.GradientTransformation:
    if name == "sgd_momentum":
        return optax.sgd(LR[name], momentum=0.9)
    return optax.adam(LR[name])


# --- A NumPy reference: the paper's Algorithm 1, written step by step. -------------------


class NumpySgdMomentum:
    def init(self, params):
        return {"count": 0, "trace": {k: np.zeros_like(v) for k, v in params.items()}}

    def step(self, grads, state):
        trace = {k: grads[k] + np.float32(0.9) * state["trace"][k] for k in grads}
        updates = {k: -np.float32(LR["sgd_momentum"]) * v for k, v in trace.items()}
        return updates, {"count": state["count"] + 1, "trace": trace}

    moment_keys = ("trace",)


class NumpyAdam:
    """optax.adam's arithmetic: (1 - b) rounded from double, b ** t in float32."""

    b1, b2, eps = np.float32(0.9), np.float32(0.999), np.float32(1e-8)
    one_minus_b1, one_minus_b2 = np.float32(1 - 0.9), np.float32(1 - 0.999)

    def init(self, params):
        zeros = {k: np.zeros_like(v) for k, v in params.items()}
        return {"count": 0, "mu": zeros, "nu": {k: v.copy() for k, v in zeros.items()}}

    def step(self, grads, state):
        count = state["count"] + 1
        mu = {k: self.one_minus_b1 * g + self.b1 * state["mu"][k] for k, g in grads.items()}
        nu = {k: self.one_minus_b2 * g * g + self.b2 * state["nu"][k] for k, g in grads.items()}
        bc1 = np.float32(1) - self.b1 ** np.float32(count)
        bc2 = np.float32(1) - self.b2 ** np.float32(count)
        updates = {
            k: -np.float32(LR["adam"]) * (mu[k] / bc1) / (np.sqrt(nu[k] / bc2) + self.eps)
            for k in grads
        }
        return updates, {"count": count, "mu": mu, "nu": nu}

    moment_keys = ("mu", "nu")


NUMPY_INNER = {"sgd_momentum": NumpySgdMomentum(), "adam": NumpyAdam()}


def numpy_lookahead(params, grads_stream, k, alpha, inner, on_sync):
    """Algorithm 1: k inner steps on the fast weights, then slow += alpha * (fast - slow)."""
    fast = {n: v.copy() for n, v in params.items()}
    slow = {n: v.copy() for n, v in params.items()}
    state = inner.init(fast)
    state_at_sync = {key: {n: v.copy() for n, v in state[key].items()} for key in inner.moment_keys}
    fast_path, slow_path = [], []
    for t, grads in enumerate(grads_stream):
        updates, state = inner.step(grads, state)
        fast = {n: fast[n] + updates[n] for n in fast}
        if (t + 1) % k == 0:
            a = np.float32(alpha(t) if callable(alpha) else alpha)
            slow = {n: slow[n] + a * (fast[n] - slow[n]) for n in slow}
            fast = {n: v.copy() for n, v in slow.items()}
            if on_sync == "reset":
                state = inner.init(fast)
            elif on_sync == "interpolate":
                for key in inner.moment_keys:
                    state[key] = {
                        n: state_at_sync[key][n] + a * (state[key][n] - state_at_sync[key][n])
                        for n in state[key]
                    }
                    state_at_sync[key] = {n: v.copy() for n, v in state[key].items()}
        fast_path.append(fast)
        slow_path.append(slow)
    stack = lambda path: {n: np.stack([p[n] for p in path]) for n in TREE_SHAPES}  # noqa: E731
    return stack(fast_path), stack(slow_path)


@functools.cache
def lookax_runner(inner_name: str, on_sync: str, schedule: bool = False):
    """One compiled scan per (inner, option); k and alpha are traced arguments."""

    def run(params, grads_stream, sync_period, alpha):
        slow_step_size = (lambda count: alpha[count]) if schedule else alpha
        tx = lookax.lookahead(
            make_inner(inner_name), sync_period, slow_step_size, inner_state_on_sync=on_sync
        )
        return scan_trajectory(tx, params, grads_stream, record=params_and_slow_params)

    return jax.jit(run)


@settings(deadline=None, max_examples=12, derandomize=True)
@given(
    inner_name=st.sampled_from(INNER_CHOICES),
    on_sync=st.sampled_from(SYNC_CHOICES),
    sync_period=st.integers(1, 7),
    alpha=st.floats(0.0, 1.0, width=32),
    seed=st.integers(0, 2**16),
)
def test_matches_numpy_algorithm_1(inner_name, on_sync, sync_period, alpha, seed):
    rng = np.random.default_rng(seed)
    params = random_tree(rng)
    grads = random_tree(rng, leading=(24,))
    fast, slow = lookax_runner(inner_name, on_sync)(
        params, grads, jnp.int32(sync_period), jnp.float32(alpha)
    )
    grads_stream = [{n: v[t] for n, v in grads.items()} for t in range(24)]
    ref_fast, ref_slow = numpy_lookahead(
        params, grads_stream, sync_period, alpha, NUMPY_INNER[inner_name], on_sync
    )
    for name in TREE_SHAPES:
        np.testing.assert_allclose(fast[name], ref_fast[name], rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(slow[name], ref_slow[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_slow_step_size_schedule_is_evaluated_at_the_step_count():
    rng = np.random.default_rng(0)
    params, grads = random_tree(rng), random_tree(rng, leading=(12,))
    alphas = np.linspace(0.1, 0.9, 12).astype(np.float32)  # a different alpha at every step
    fast, slow = lookax_runner("adam", "keep", schedule=True)(params, grads, 3, alphas)
    grads_stream = [{n: v[t] for n, v in grads.items()} for t in range(12)]
    ref_fast, ref_slow = numpy_lookahead(
        params, grads_stream, 3, lambda t: alphas[t], NUMPY_INNER["adam"], "keep"
    )
    for name in TREE_SHAPES:
        np.testing.assert_allclose(slow[name], ref_slow[name], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(fast[name], ref_fast[name], rtol=1e-6, atol=1e-6)


def test_hand_computed_trajectory():
    tx = lookax.lookahead(optax.sgd(0.1), sync_period=3, slow_step_size=0.5)
    params = jnp.float32(1.0)
    state = tx.init(params)
    step = jax.jit(tx.update)
    path = []
    for _ in range(7):
        updates, state = step(jnp.float32(1.0), state, params)
        params = optax.apply_updates(params, updates)
        path.append(float(params))
    np.testing.assert_allclose(path, HAND_TRAJECTORY, rtol=1e-6)


def test_slow_weights_match_optax_lookahead():
    rng = np.random.default_rng(1)
    params = random_tree(rng)
    grads = random_tree(rng, leading=(30,))
    inner = optax.sgd(0.05, momentum=0.9)

    ours = lookax.lookahead(inner, sync_period=4, slow_step_size=0.6)
    theirs = optax.lookahead(inner, sync_period=4, slow_step_size=0.6)

    @jax.jit
    def run(params, grads):
        def step(carry, g):
            p, s, lp, ls = carry
            u, s = ours.update(g, s, p)
            p = optax.apply_updates(p, u)
            lu, ls = theirs.update(g, ls, lp)
            lp = optax.apply_updates(lp, lu)
            return (p, s, lp, ls), (lookax.slow_params(s, p), lp.slow)

        lparams = optax.LookaheadParams.init_synced(params)
        carry = (params, ours.init(params), lparams, theirs.init(lparams))
        return jax.lax.scan(step, carry, grads)[1]

    our_slow, their_slow = run(params, grads)
    for name in TREE_SHAPES:
        np.testing.assert_allclose(our_slow[name], their_slow[name], rtol=1e-6, atol=1e-7)
    # The runs moved: the comparison is not between two copies of the initial params.
    assert not np.allclose(our_slow["kernel"][-1], params["kernel"])


# --- Exactness and the non-sync branch. ------------------------------------------------


@settings(deadline=None, max_examples=10, derandomize=True)
@given(
    dtype=st.sampled_from(["float32", "bfloat16", "float16"]),
    alpha=st.floats(0.0625, 0.9375, width=32),
    seed=st.integers(0, 2**16),
)
def test_apply_updates_lands_bitwise_on_slow_weights(dtype, alpha, seed):
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), random_tree(rng))
    grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), random_tree(rng, leading=(7,)))
    params_after, slow_after = _exactness_runner(dtype)(params, grads, jnp.float32(alpha))
    # Syncs happen after steps 2, 4, 6 (k=2); the call after each one stores the slow
    # weights, which are the params the sync's updates produced, bit for bit.
    for t in (1, 3, 5):
        for name in TREE_SHAPES:
            assert params_after[name].dtype == jnp.dtype(dtype)
            assert_trees_bitwise_equal(params_after[name][t], slow_after[name][t + 1])
            assert not np.array_equal(slow_after[name][t], slow_after[name][t + 1])  # it moved


@functools.cache
def _exactness_runner(dtype):
    del dtype  # one compiled function per params dtype

    def run(params, grads, alpha):
        tx = lookax.lookahead(optax.adam(0.3), sync_period=2, slow_step_size=alpha)
        return scan_trajectory(tx, params, grads, record=lambda p, s: (p, s.lagging_slow))

    return jax.jit(run)


def test_wide_slow_dtype_keeps_unrounded_slow_weights_within_one_ulp():
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), random_tree(rng))
    tx = lookax.lookahead(optax.adam(0.05), 3, 0.37, slow_dtype=jnp.float32)
    state = tx.init(params)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.lagging_slow))
    step = jax.jit(tx.update)
    syncs = 0
    for t in range(30):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        updates, state = step(grads, state, params)
        assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
        params = optax.apply_updates(params, updates)
        if (t + 1) % 3 == 0:
            syncs += 1
            for p, s in zip(
                jax.tree.leaves(params), jax.tree.leaves(state.lagging_slow), strict=True
            ):
                rounded = np.asarray(s.astype(jnp.bfloat16), np.float32)
                actual = np.asarray(p, np.float32)
                magnitude = np.maximum(np.abs(rounded), np.float32(2.0**-126))
                bf16_ulp = 2.0 ** (np.floor(np.log2(magnitude)) - 7)
                assert np.all(np.abs(actual - rounded) <= bf16_ulp)
    assert syncs == 10


STRUCTURE_SHAPES = {"kernel": (3, 4, 2), "bias": (5,)}  # no scalar: shapes tell arrays apart


def _update_jaxpr(tx, params):
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    closed = jax.make_jaxpr(lambda g, s, p: tx.update(g, s, p))(grads, state, params)
    n_grads, n_state = len(jax.tree.leaves(grads)), len(jax.tree.leaves(state))
    invars = closed.jaxpr.invars
    state_in = jax.tree.unflatten(jax.tree.structure(state), invars[n_grads : n_grads + n_state])
    state_out = jax.tree.unflatten(
        jax.tree.structure(state), closed.jaxpr.outvars[len(jax.tree.leaves(params)) :]
    )
    return closed.jaxpr, invars[:n_grads], state_in, state_out, invars[n_grads + n_state :]


def _index(variables, var) -> int:
    return next(i for i, candidate in enumerate(variables) if candidate is var)


@pytest.mark.compiler("counts the jaxpr's lax.cond equations and follows their operands")
@pytest.mark.parametrize("on_sync", SYNC_CHOICES)
def test_one_cond_takes_only_params_and_state_never_the_inner_updates(on_sync):
    params = {n: jnp.zeros(s) for n, s in STRUCTURE_SHAPES.items()}
    tx = lookax.lookahead(optax.adam(1e-3), 5, 0.5, inner_state_on_sync=on_sync)
    jaxpr, grads_in, state_in, state_out, params_in = _update_jaxpr(tx, params)
    conds = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "cond"]
    assert len(conds) == 1, jaxpr
    (cond,) = conds
    # Every params-sized operand is a params or state input of update: nothing computed in
    # the step (the inner updates above all) crosses the cond, and neither do the gradients.
    params_shapes = set(STRUCTURE_SHAPES.values())
    sized = [v for v in cond.invars[1:] if tuple(v.aval.shape) in params_shapes]
    state_vars = jax.tree.leaves(state_in._replace(count=None, phase=None))
    assert all(any(v is w for w in params_in + state_vars) for v in sized), cond.invars
    if on_sync == "keep":  # only the params and the slow weights
        assert len(sized) == 2 * len(params), sized
    # The stored slow weights are the cond's outputs, passed through by its identity branch.
    identity, copy = cond.params["branches"]
    slow_pairs = zip(
        jax.tree.leaves(state_in.lagging_slow), jax.tree.leaves(state_out.lagging_slow), strict=True
    )
    for param_var, (var_in, var_out) in zip(params_in, slow_pairs, strict=True):
        position, out_position = _index(cond.invars[1:], var_in), _index(cond.outvars, var_out)
        param_position = _index(cond.invars[1:], param_var)
        assert identity.jaxpr.outvars[out_position] is identity.jaxpr.invars[position]
        assert copy.jaxpr.outvars[out_position] is copy.jaxpr.invars[param_position]
    # The returned updates are selects made outside any cond.
    for var in jaxpr.outvars[: len(params)]:
        assert not any(var is out for out in cond.outvars)


def test_slow_weights_bitwise_unchanged_off_sync_even_with_nan_fast_weights():
    params = {"w": jnp.arange(4.0), "b": jnp.float32(2.0)}
    tx = lookax.lookahead(optax.sgd(0.1), sync_period=3)
    state = tx.init(params)
    step = jax.jit(tx.update)
    slow_before = jax.tree.map(np.asarray, state.lagging_slow)
    nan_params = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(2):  # steps 1 and 2 of a 3-cycle: no sync
        _, state = step(grads, state, nan_params)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, state.lagging_slow), slow_before)
    # At the sync, non-finite values propagate as in the paper; the write comes a call later.
    updates, state = step(grads, state, nan_params)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, state.lagging_slow), slow_before)
    assert all(np.isnan(np.asarray(u)).all() for u in jax.tree.leaves(updates))
    slow_now = lookax.slow_params(state, nan_params)
    assert all(np.isnan(np.asarray(leaf)).all() for leaf in jax.tree.leaves(slow_now))
    _, state = step(grads, state, nan_params)
    assert all(np.isnan(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state.lagging_slow))


def test_non_sync_updates_are_the_inner_updates_bitwise():
    rng = np.random.default_rng(11)
    params, grads = random_tree(rng), random_tree(rng, leading=(9,))
    inner = optax.adam(0.02)
    tx = lookax.lookahead(inner, sync_period=4, slow_step_size=0.5)
    la_step, inner_step = jax.jit(tx.update), jax.jit(inner.update)
    state = tx.init(params)
    for t in range(9):
        g = jax.tree.map(lambda x, t=t: x[t], grads)
        inner_state = state.inner_state  # as the catch-up leaves it ('keep': unchanged)
        updates, state = la_step(g, state, params)
        expected, _ = inner_step(g, inner_state, params)
        if (t + 1) % 4:
            chex.assert_trees_all_equal(updates, expected)
        else:
            assert not np.array_equal(updates["kernel"], expected["kernel"])
        params = optax.apply_updates(params, updates)


def test_donated_jitted_step_compiles_once_and_init_never_aliases():
    params = {n: jnp.ones(s) for n, s in TREE_SHAPES.items()}
    tx = lookax.lookahead(optax.adam(1e-2), sync_period=3, inner_state_on_sync="interpolate")
    state = tx.init(params)
    for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(state.lagging_slow), strict=True):
        assert p.unsafe_buffer_pointer() != s.unsafe_buffer_pointer()
    buffers = [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(state)]
    assert len(set(buffers)) == len(buffers)
    train_step = jit_update_step(tx, donate=True)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(10):
        params, state = train_step(params, state, grads)
    assert len(train_step.traces) == 1
    assert int(state.count) == 10 and int(state.phase) == 1


def test_alpha_one_reproduces_inner_and_alpha_zero_returns_to_start():
    rng = np.random.default_rng(5)
    params, grads = random_tree(rng), random_tree(rng, leading=(12,))
    run = lookax_runner("adam", "keep")
    fast_one, _ = run(params, grads, 4, jnp.float32(1.0))
    inner_path = scan_trajectory(make_inner("adam"), params, grads)
    for name in TREE_SHAPES:
        np.testing.assert_allclose(fast_one[name], inner_path[name], rtol=1e-6, atol=1e-7)

    fast_zero, slow_zero = run(params, grads, 4, jnp.float32(0.0))
    for t in (3, 7, 11):
        for name in TREE_SHAPES:
            np.testing.assert_array_equal(fast_zero[name][t], params[name])
            np.testing.assert_array_equal(slow_zero[name][t], params[name])
    assert not np.allclose(fast_zero["bias"][5], params["bias"])  # it moved between syncs


def test_sync_timing_survives_counter_saturation():
    tx = lookax.lookahead(optax.sgd(0.1), sync_period=3, slow_step_size=0.5)
    params = jnp.float32(1.0)
    state = tx.init(params)._replace(count=jnp.int32(np.iinfo(np.int32).max - 4))
    step = jax.jit(tx.update)
    phases, counts = [], []
    for _ in range(9):
        updates, state = step(jnp.float32(1.0), state, params)
        params = optax.apply_updates(params, updates)
        phases.append(int(state.phase))
        counts.append(int(state.count))
        if phases[-1] == 0:
            assert float(params) == float(lookax.slow_params(state, params))
    assert phases == [1, 2, 0] * 3
    assert counts[-1] == np.iinfo(np.int32).max  # saturated, never wrapped


# --- Inner state at a sync. -------------------------------------------------------------


def _two_cycles(on_sync, steps=4):
    """``history[t]`` is (state, params, grads) after step t (grads of step t)."""
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.float32(0.5)}
    inner = optax.adam(0.1)
    tx = lookax.lookahead(inner, sync_period=2, slow_step_size=0.5, inner_state_on_sync=on_sync)
    state = tx.init(params)
    history = [(state, params, None)]
    for t in range(steps):
        grads = jax.tree.map(lambda p, t=t: jnp.full_like(p, t + 1.0), params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append((state, params, grads))
    return inner, params, history


def test_reset_reinitialises_inner_state_counters_included():
    inner, params, history = _two_cycles("reset", steps=5)
    # The sync after step 4 is completed at the start of call 5: the inner optimizer starts
    # over from the params the sync produced (its counter restarts too).
    params_at_sync, grads = history[4][1], history[5][2]
    expected = inner.update(grads, inner.init(params_at_sync), params_at_sync)[1]
    chex.assert_trees_all_equal(history[5][0].inner_state, expected)
    assert int(history[5][0].inner_state[0].count) == 1


def test_interpolate_moves_moments_like_weights_and_counters_continue():
    _, _, keep_history = _two_cycles("keep")
    _, _, history = _two_cycles("interpolate")
    # The first sync (step 2) is completed at the start of call 3: the moments move halfway
    # from their initial zeros, and that is the snapshot the next sync interpolates from.
    adam_kept = keep_history[2][0].inner_state[0]
    adam_interp = history[3][0].inner_state_at_sync[0]
    chex.assert_trees_all_close(adam_interp.mu, jax.tree.map(lambda m: 0.5 * m, adam_kept.mu))
    chex.assert_trees_all_close(adam_interp.nu, jax.tree.map(lambda v: 0.5 * v, adam_kept.nu))
    assert int(adam_interp.count) == 2  # counters continue
    assert int(history[3][0].inner_state[0].count) == 3
    assert keep_history[2][0].inner_state_at_sync is None


# --- Arguments and bad input. -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name", "error"),
    [
        ({"sync_period": 0}, "sync_period", ValueError),
        ({"sync_period": -3}, "sync_period", ValueError),
        ({"sync_period": 2.5}, "sync_period", TypeError),
        ({"sync_period": True}, "sync_period", TypeError),
        ({"sync_period": jnp.float32(3.0)}, "sync_period", TypeError),
        ({"sync_period": np.array([2, 3])}, "sync_period", ValueError),
        ({"slow_step_size": -0.1}, "slow_step_size", ValueError),
        ({"slow_step_size": 1.5}, "slow_step_size", ValueError),
        ({"slow_step_size": float("nan")}, "slow_step_size", ValueError),
        ({"slow_step_size": jnp.float32(2.0)}, "slow_step_size", ValueError),
        ({"slow_step_size": "half"}, "slow_step_size", TypeError),
        ({"inner_state_on_sync": "average"}, "inner_state_on_sync", ValueError),
        ({"slow_dtype": jnp.int32}, "slow_dtype", ValueError),
    ],
)
def test_invalid_hyperparameters_raise_naming_the_argument(kwargs, name, error):
    with pytest.raises(error, match=name):
        lookax.lookahead(optax.sgd(0.1), **kwargs)


@pytest.mark.parametrize(
    "sync_period", [1, np.int64(4), np.uint8(2), jnp.int16(3), jnp.asarray(5, jnp.int32)]
)
def test_valid_sync_period_of_any_integer_dtype(sync_period):
    tx = lookax.lookahead(optax.sgd(0.1), sync_period=sync_period, slow_step_size=np.float64(1))
    params = jnp.ones(2)
    state = tx.init(params)
    for _ in range(int(sync_period)):
        updates, state = tx.update(jnp.ones(2), state, params)
        params = optax.apply_updates(params, updates)
    assert int(state.phase) == 0


def test_traced_hyperparameters_are_accepted_unchecked():
    @jax.jit
    def one_step(k, alpha):
        tx = lookax.lookahead(optax.sgd(1.0), k, alpha)
        params = jnp.zeros(())
        updates, state = tx.update(jnp.float32(-1.0), tx.init(params), params)
        return optax.apply_updates(params, updates), state.phase

    params, phase = one_step(jnp.int32(1), jnp.float32(0.25))  # sync after one step
    assert float(params) == 0.25 and int(phase) == 0


def test_update_without_params_raises():
    tx = lookax.lookahead(optax.sgd(0.1))
    state = tx.init(jnp.ones(3))
    with pytest.raises(ValueError, match="requires params"):
        tx.update(jnp.ones(3), state)


def test_integer_params_are_rejected():
    tx = lookax.lookahead(optax.sgd(0.1))
    with pytest.raises(TypeError, match=r"\['steps'\] has dtype int32"):
        tx.init({"w": jnp.ones(2), "steps": jnp.zeros(2, jnp.int32)})


def test_extra_args_reach_the_inner_optimizer():
    seen = []

    def update_fn(updates, state, params=None, *, loss=None, **extra):
        seen.append(loss)
        return jax.tree.map(lambda g: -loss * g, updates), state

    inner = optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)
    tx = lookax.lookahead(inner, sync_period=10)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    params = jnp.ones(2)
    updates, _ = tx.update(jnp.ones(2), tx.init(params), params, loss=3.0, unrelated=1)
    assert seen == [3.0]
    np.testing.assert_array_equal(updates, -3.0 * np.ones(2))


# --- Finding the slow weights. ----------------------------------------------------------


def _trained(tx, params, steps=5):
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_slow_params_in_a_chain_and_nested_lookahead():
    params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    tx = optax.chain(optax.clip_by_global_norm(1.0), lookax.lookahead(optax.sgd(0.1), 2))
    params, state = _trained(tx, params)  # syncs after steps 2 and 4, written at 3 and 5
    chex.assert_trees_all_equal(lookax.slow_params(state, params), state[1].lagging_slow)
    params, state = _trained(tx, params, steps=2)  # a sync just ran: its slow weights are params
    chex.assert_trees_all_equal(lookax.slow_params(state, params), params)
    assert not np.array_equal(state[1].lagging_slow["w"], params["w"])

    nested = lookax.lookahead(lookax.lookahead(optax.sgd(0.1), 2), 3)
    params, state = _trained(nested, {"w": jnp.ones(3)}, steps=5)
    chex.assert_trees_all_equal(lookax.slow_params(state, params), state.lagging_slow)  # outermost
    assert not np.array_equal(state.lagging_slow["w"], state.inner_state.lagging_slow["w"])
    # Both synced after step 6: the whole nest restarts from the outer target.
    params, state = _trained(nested, {"w": jnp.ones(3)}, steps=7)
    chex.assert_trees_all_equal(state.lagging_slow, state.inner_state.lagging_slow)


def test_slow_params_requires_params_and_says_why():
    tx = lookax.lookahead(optax.sgd(0.1), 2)
    state = tx.init(jnp.ones(3))
    params = inspect.signature(lookax.slow_params).parameters["params"]
    assert params.default is inspect.Parameter.empty  # required, as the signature says
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'params'"):
        lookax.slow_params(state)
    with pytest.raises(TypeError, match="needs params"):
        lookax.slow_params(state, None)


def _lookahead_state(opt_state):
    is_state = lambda node: isinstance(node, lookax.LookaheadState)  # noqa: E731
    (state,) = [node for node in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(node)]
    return state


@pytest.mark.parametrize("jit", [False, True])
def test_slow_params_in_the_slow_dtype_on_request(jit):
    # bf16 leaves keep float32 slow weights (written at the sync), a float32 leaf's are taken
    # from the params one call after it, and a leaf without Lookahead is the params.
    params = {
        "bf16": jnp.asarray([1.0, -2.0, 3.0], jnp.bfloat16),
        "f32": jnp.ones(2),
        "plain": jnp.ones(2, jnp.bfloat16),
    }
    lookahead = lookax.lookahead(optax.adam(0.01), 2, 0.37, slow_dtype=jnp.float32)
    labels = {"bf16": "lookahead", "f32": "lookahead", "plain": "plain"}
    tx = optax.multi_transform({"lookahead": lookahead, "plain": optax.sgd(0.1)}, labels)
    slow_params = functools.partial(lookax.slow_params, keep_slow_dtype=True)
    if jit:
        slow_params = jax.jit(slow_params)
    for steps, pending in ((2, True), (3, False)):  # right after the sync; one call later
        trained, state = _trained(tx, params, steps=steps)
        wide, narrow = slow_params(state, trained), lookax.slow_params(state, trained)
        slow = _lookahead_state(state).lagging_slow
        assert {name: leaf.dtype for name, leaf in wide.items()} == {
            "bf16": jnp.float32,
            "f32": jnp.float32,
            "plain": jnp.bfloat16,
        }
        chex.assert_trees_all_equal(wide["bf16"], slow["bf16"])  # unrounded
        assert not np.array_equal(wide["bf16"], wide["bf16"].astype(jnp.bfloat16).astype(float))
        chex.assert_trees_all_equal(narrow["bf16"], slow["bf16"].astype(jnp.bfloat16))
        chex.assert_trees_all_equal(wide["f32"], trained["f32"] if pending else slow["f32"])
        chex.assert_trees_all_equal(wide["f32"], narrow["f32"])
        chex.assert_trees_all_equal(wide["plain"], trained["plain"])


def test_slow_params_fills_untouched_leaves_from_params():
    params = {"encoder": jnp.ones(3), "head": jnp.ones(2)}
    labels = {"encoder": "lookahead", "head": "plain"}
    tx = optax.multi_transform(
        {"lookahead": lookax.lookahead(optax.sgd(0.1), 2, 0.5), "plain": optax.sgd(0.1)},
        labels,
    )
    params, state = _trained(tx, params, steps=3)
    full = lookax.slow_params(state, params)
    assert jax.tree.structure(full) == jax.tree.structure(params)
    np.testing.assert_array_equal(full["head"], params["head"])
    # after step 2 the encoder synced to 1 - 0.5 * 0.2 = 0.9; step 3 moved the fast weights on.
    np.testing.assert_allclose(full["encoder"], 0.9 * np.ones(3), rtol=1e-6)
    assert not np.allclose(params["encoder"], full["encoder"])


def test_slow_params_on_a_train_state_and_without_lookahead():
    params = {"w": jnp.ones(3)}
    state = train_state.TrainState.create(
        apply_fn=lambda p, x: p["w"] @ x, params=params, tx=lookax.lookahead(optax.adam(0.1), 2)
    )
    state = state.apply_gradients(grads={"w": jnp.ones(3)})
    assert lookax.slow_params(state.opt_state, state.params)["w"].shape == (3,)
    with pytest.raises(ValueError, match="no LookaheadState"):
        lookax.slow_params(optax.adam(0.1).init(params), params)


def test_adopting_lookahead_mid_run_continues_the_inner_optimizer():
    inner = optax.adam(0.1)
    params = {"w": jnp.array([1.0, 2.0, 3.0])}
    grads = {"w": jnp.array([0.5, -1.0, 2.0])}
    inner_state = inner.init(params)
    for _ in range(4):  # a run that started without Lookahead
        updates, inner_state = inner.update(grads, inner_state, params)
        params = optax.apply_updates(params, updates)
    tx = lookax.lookahead(inner, sync_period=3, slow_step_size=0.5)
    state = lookax.init_from_inner(tx, params, inner_state)
    chex.assert_trees_all_equal(state.lagging_slow, params)
    plain_params, plain_state = params, inner_state
    for _ in range(2):  # before the first sync: exactly the inner optimizer
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        plain_updates, plain_state = inner.update(grads, plain_state, plain_params)
        plain_params = optax.apply_updates(plain_params, plain_updates)
    chex.assert_trees_all_equal(params, plain_params)
    chex.assert_trees_all_equal(state.inner_state, plain_state)
    with pytest.raises(ValueError, match="inner_state and the inner optimizer's state have"):
        lookax.init_from_inner(tx, params, optax.sgd(0.1).init(params))
