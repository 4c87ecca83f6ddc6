"""Dtypes, shapes and bad input (docs/design.md, "State dtypes and structure").

bf16 params, mixed-dtype trees, scalar leaves, empty trees and None leaves work; integer leaves
and mismatched trees are rejected with messages that name the problem; sync timing survives the
int32 step counter's saturation; a 10^5-step lax.scan run has params equal to the slow weights
at every sync and slow weights that never move in between.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import HAND_TRAJECTORY, assert_trees_bitwise_equal

import lookax

INT32_MAX = int(np.iinfo(np.int32).max)


def make_step(tx, grad_fn=None):
    @jax.jit
    def step(params, state):
        grads = grad_fn(params) if grad_fn else jax.tree.map(lambda p: jnp.sin(p) + 0.5, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    return step


# --- dtypes and shapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_tx",
    [
        lambda: lookax.lookahead(optax.adam(0.05), 3, 0.5),
        lambda: lookax.lookahead(optax.adam(0.05), 3, 0.5, inner_state_on_sync="interpolate"),
        lambda: lookax.ranger(0.05, sync_period=3),
    ],
    ids=["lookahead_adam", "lookahead_adam_interpolate", "ranger"],
)
def test_bf16_and_mixed_dtype_trees_keep_every_dtype(make_tx):
    tx = make_tx()
    params = {
        "bf16_kernel": jnp.linspace(-1, 1, 12, dtype=jnp.bfloat16).reshape(4, 3),
        "f16": jnp.linspace(0, 1, 3, dtype=jnp.float16),
        "f32": jnp.linspace(-2, 2, 5, dtype=jnp.float32),
        "bf16_scalar": jnp.asarray(0.5, jnp.bfloat16),
    }
    dtypes = jax.tree.map(lambda p: p.dtype, params)
    state = tx.init(params)
    step = make_step(tx)
    params_at_sync = None
    for t in range(1, 8):
        params, state, updates = step(params, state)
        assert jax.tree.map(lambda p: p.dtype, params) == dtypes
        assert jax.tree.map(lambda u: u.dtype, updates) == dtypes
        slow = lookax.slow_params(state, params)
        assert jax.tree.map(lambda s: s.dtype, slow) == dtypes
        assert jax.tree.map(lambda s: s.dtype, state.lagging_slow) == dtypes
        if t % 3 == 0:  # at a sync the slow weights are the params apply_updates produced
            assert_trees_bitwise_equal(params, slow)
        if t % 3 == 1 and t > 1:  # and the next call stores them bit for bit, every dtype
            assert_trees_bitwise_equal(params_at_sync, state.lagging_slow)
        params_at_sync = params
        assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))
    assert step._cache_size() == 1


def test_inner_updates_wider_than_bf16_params():
    # inject_hyperparams stores the learning rate as a float32 array, so sgd's updates for bf16
    # params come out float32. Both branches of the sync cond must return that dtype, and at a
    # sync apply_updates still lands bit for bit on the (bf16) slow weights.
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    tx = lookax.lookahead(inner, 3, 0.5)
    params = {"w": jnp.asarray([1.0, -0.3], jnp.bfloat16), "f": jnp.asarray([2.0], jnp.float32)}
    state = tx.init(params)
    step = make_step(tx)
    params_at_sync = None
    for t in range(1, 8):
        params, state, updates = step(params, state)
        assert updates["w"].dtype == jnp.float32  # the inner optimizer's choice, kept
        assert params["w"].dtype == jnp.bfloat16
        if t % 3 == 1 and t > 1:  # the call after a sync stored the params it produced
            assert_trees_bitwise_equal(params_at_sync, state.lagging_slow)
        params_at_sync = params


def test_interpolate_with_an_inner_state_that_changes_dtype_after_init():
    # inject_hyperparams(adam) over bf16 params: Adam's bf16 first moment becomes float32 on the
    # first update (float32 b1). The copy kept for 'interpolate' follows the inner state's types.
    inner = optax.inject_hyperparams(optax.adam)(learning_rate=0.05)
    tx = lookax.lookahead(inner, 2, 0.5, inner_state_on_sync="interpolate")
    params = {"w": jnp.asarray([1.0, -0.3, 0.2], jnp.bfloat16)}
    state = tx.init(params)
    assert state.inner_state.inner_state[0].mu["w"].dtype == jnp.bfloat16
    step = make_step(tx)
    params_at_sync = None
    for t in range(1, 6):
        params, state, _ = step(params, state)
        at_sync_mu = state.inner_state_at_sync.inner_state[0].mu["w"]
        assert at_sync_mu.dtype == state.inner_state.inner_state[0].mu["w"].dtype
        if t % 2 == 1 and t > 1:
            assert_trees_bitwise_equal(params_at_sync, state.lagging_slow)
        params_at_sync = params
    assert params["w"].dtype == jnp.bfloat16


def test_scalar_leaves_follow_the_hand_trajectory():
    tx = lookax.lookahead(optax.sgd(0.1), 3, 0.5)
    params = {"a": jnp.asarray(1.0, jnp.float32), "b": (jnp.asarray(1.0, jnp.float32),)}
    state = tx.init(params)
    step = make_step(tx, grad_fn=lambda p: jax.tree.map(jnp.ones_like, p))
    for expected in HAND_TRAJECTORY:
        params, state, _ = step(params, state)
        assert params["a"].shape == () and state.lagging_slow["b"][0].shape == ()
        np.testing.assert_allclose([params["a"], params["b"][0]], expected, rtol=1e-6)


def test_weakly_typed_params_give_a_stable_state_type():
    # jnp.array(1.0) is weakly typed; the slow copy is strongly typed from init on, as the
    # update returns it, so a step whose params keep their type compiles once.
    tx = optax.MultiSteps(lookax.lookahead(optax.sgd(0.1), 3, 0.5), every_k_schedule=2)
    params = jnp.array(1.0)
    assert params.weak_type
    state = tx.init(params)
    assert not state.inner_opt_state.lagging_slow.weak_type
    _, new_state = jax.jit(tx.update)(params, state, params)
    # Lookahead's own state keeps its types. (The whole MultiSteps state does too from
    # optax 0.2.8 on; older optax lets MultiSteps' acc_grads turn weakly typed.)
    assert jax.tree.map(jax.typeof, new_state.inner_opt_state) == jax.tree.map(
        jax.typeof, state.inner_opt_state
    )


@pytest.mark.parametrize("on_sync", ["keep", "reset", "interpolate"])
@pytest.mark.parametrize(
    "params", [{}, (), [], {"a": {}, "b": ()}], ids=["dict", "tuple", "list", "nested"]
)
def test_empty_trees(params, on_sync):
    tx = lookax.lookahead(optax.adam(0.1), 2, 0.5, inner_state_on_sync=on_sync)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for _ in range(3):  # through a sync
        updates, state = step(params, state, params)
        assert updates == params
    assert int(state.count) == 3 and int(state.phase) == 1
    assert lookax.slow_params(state, params) == params


def test_none_leaves_as_optax_allows():
    # optax treats None as an empty subtree: nothing to optimize there.
    tx = lookax.lookahead(optax.adam(0.1), 2, 0.5)
    params = {"w": jnp.ones(2), "frozen": None}
    grads = {"w": jnp.ones(2), "frozen": None}
    state = tx.init(params)
    assert state.lagging_slow["frozen"] is None
    for t in range(1, 5):
        updates, state = jax.jit(tx.update)(grads, state, params)
        assert updates["frozen"] is None
        params = optax.apply_updates(params, updates)
        assert params["frozen"] is None
        if t % 2 == 0:
            assert_trees_bitwise_equal(params["w"], lookax.slow_params(state, params)["w"])
    full = lookax.slow_params(state, params)
    assert full["frozen"] is None and full["w"].shape == (2,)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_])
def test_integer_leaves_are_rejected_at_init_naming_the_leaf(dtype):
    tx = lookax.lookahead(optax.adam(0.1))
    params = {"w": jnp.ones(2), "layer": {"step_count": jnp.zeros(3, dtype)}}
    with pytest.raises(TypeError) as raised:
        tx.init(params)
    message = str(raised.value)
    assert "['layer']['step_count']" in message
    assert jnp.dtype(dtype).name in message
    assert "optax.masked" in message  # says what to do instead


def test_the_suggested_fix_for_integer_leaves_works():
    params = {"w": jnp.ones(2), "step_count": jnp.zeros((), jnp.int32)}
    is_float = jax.tree.map(lambda p: jnp.issubdtype(p.dtype, jnp.floating), params)
    tx = optax.masked(lookax.lookahead(optax.sgd(0.1), 3, 0.5), is_float)
    state = tx.init(params)
    grads = {"w": jnp.ones(2), "step_count": jnp.zeros((), jnp.int32)}
    for expected in HAND_TRAJECTORY:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(params["w"], expected, rtol=1e-6)
    assert params["step_count"].dtype == jnp.int32


def test_mismatched_updates_and_params_are_rejected_naming_both():
    tx = lookax.lookahead(optax.adam(0.1))
    params = {"w": jnp.ones(2), "b": jnp.ones(3)}
    state = tx.init(params)
    with pytest.raises(ValueError, match="updates and params have different tree structures"):
        tx.update({"w": jnp.ones(2)}, state, params)
    with pytest.raises(ValueError) as raised:
        tx.update({"w": jnp.ones(2), "bias": jnp.ones(3)}, state, params)
    assert "'bias'" in str(raised.value) and "'b'" in str(raised.value)  # both structures shown
    with pytest.raises(ValueError, match=re.escape("leaf ['b'] has shape (4,) in updates")):
        tx.update({"w": jnp.ones(2), "b": jnp.ones(4)}, state, params)
    with pytest.raises(ValueError, match="updates and params"):  # raised while tracing, too
        jax.jit(tx.update)({"w": jnp.ones(2)}, state, params)


def test_params_not_matching_the_state_are_rejected():
    tx = lookax.lookahead(optax.adam(0.1))
    state = tx.init({"w": jnp.ones(2)})
    other = {"w": jnp.ones(2), "extra": jnp.ones(1)}
    with pytest.raises(
        ValueError, match="params and state.lagging_slow have different tree structures"
    ):
        tx.update(other, state, other)
    with pytest.raises(ValueError, match=re.escape("leaf ['w'] has shape (3,) in params")):
        tx.update({"w": jnp.ones(3)}, state, {"w": jnp.ones(3)})


def test_a_state_that_is_not_a_lookahead_state_is_rejected():
    tx = lookax.lookahead(optax.adam(0.1))
    params = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match="LookaheadState that tx.init returned, got tuple"):
        tx.update(params, optax.adam(0.1).init(params), params)
    with pytest.raises(TypeError, match="got dict"):  # e.g. a checkpoint restored untargeted
        tx.update(params, tx.init(params)._asdict(), params)


def test_the_state_of_another_inner_optimizer_is_rejected_naming_both():
    params = {"w": jnp.ones(2)}
    sgd_state = lookax.lookahead(lookax.sgd(0.1, momentum=0.9), 3).init(params)
    tx = lookax.lookahead(lookax.adam(0.1), 3)
    for update in (tx.update, jax.jit(tx.update)):  # at trace time under jit
        with pytest.raises(ValueError, match="inner_state belongs to another optimizer") as raised:
            update(params, sgd_state, params)
        assert "ScaleByAdamState" in str(raised.value)  # what the inner optimizer's init gives
        assert "ScaleByMomentumState" in str(raised.value)  # what the state holds
    # The outer path (outer=, replicas) runs the same check.
    outer = lookax.lookahead(lookax.adam(0.1), 4, outer=optax.sgd(0.7, momentum=0.9))
    other = lookax.lookahead(lookax.sgd(0.1, momentum=0.9), 4, outer=optax.sgd(0.7))
    with pytest.raises(ValueError, match="inner_state belongs to another optimizer"):
        outer.update(params, other.init(params), params)
    diloco = lookax.diloco(lookax.adam(0.1), 4, replica_axis="replica")
    sgd_states = jax.vmap(lookax.diloco(optax.sgd(0.1), 4).init)(lookax.stack_replicas(params, 2))
    with pytest.raises(ValueError, match="inner_state belongs to another optimizer"):
        stacked = lookax.stack_replicas(params, 2)
        jax.vmap(diloco.update, axis_name="replica")(stacked, sgd_states, stacked)


def test_structures_in_that_error_are_shortened_for_big_trees():
    params = {f"layer_{i:03d}": jnp.ones(2) for i in range(400)}
    sgd_state = lookax.lookahead(optax.sgd(0.1, momentum=0.9)).init(params)
    with pytest.raises(ValueError, match="belongs to another optimizer") as raised:
        lookax.lookahead(optax.adam(0.1)).update(params, sgd_state, params)
    assert len(str(raised.value)) < 2000 and "leaves)" in str(raised.value)


def test_inner_states_of_the_same_optimizer_pass_the_check():
    params = {"w": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2)}
    inners = [
        optax.inject_hyperparams(optax.adam)(learning_rate=0.1),
        optax.chain(optax.clip_by_global_norm(1.0), lookax.adam(0.1)),
        optax.masked(lookax.adam(0.1), {"w": True, "b": False}),
        optax.apply_if_finite(lookax.radam(0.1), 3),
        lookax.lookahead(lookax.sgd(0.1, momentum=0.9), 2),  # nested
    ]
    for inner in inners:
        tx = lookax.lookahead(inner, 2)
        # made from float32 params, updated with bf16 ones: dtypes are not structure
        state = tx.init(jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params))
        for _ in range(3):
            _, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)


def test_a_grouped_plan_that_tracing_cannot_see_passes_the_check():
    # lookax.grouped fixes its plan at init from the placed arrays (e.g. keeping sharded
    # leaves apart), which jax.eval_shape of init does not see: the buffers differ, the
    # optimizer is the same. Here a key tells traced leaves from placed ones.
    key = lambda leaf: None if isinstance(leaf, jax.core.Tracer) else "together"  # noqa: E731
    tx = lookax.lookahead(lookax.grouped(optax.adam(0.1), key=key), 2)
    params = {"a": jnp.ones(3), "b": jnp.ones(3)}
    state = tx.init(params)
    traced = jax.eval_shape(tx.init, params)
    assert jax.tree.structure(state.inner_state) != jax.tree.structure(traced.inner_state)
    for _ in range(3):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        params = optax.apply_updates(params, updates)
    assert np.all(np.isfinite(np.asarray(params["a"])))


@pytest.mark.parametrize("as_transformation", [False, True])
def test_multisteps_inside_lookahead_is_refused_naming_the_fix(as_transformation):
    accumulating = optax.MultiSteps(optax.adam(0.1), every_k_schedule=4)
    inner = accumulating.gradient_transformation() if as_transformation else accumulating
    fix = "optax.MultiSteps(lookax.lookahead(inner, ...), every_k_schedule=n)"
    with pytest.raises(ValueError, match=re.escape(fix)):
        lookax.lookahead(inner, 2)
    with pytest.raises(ValueError, match="MultiSteps"):
        lookax.diloco(inner, 2)


def test_multisteps_outside_lookahead_counts_real_steps():
    tx = optax.MultiSteps(lookax.lookahead(optax.sgd(0.1), 2, 0.5), every_k_schedule=3)
    params = jnp.array(1.0)
    state = tx.init(params)
    for _ in range(6):  # six micro-batches: two real steps, one sync
        updates, state = tx.update(jnp.array(1.0), state, params)
        params = optax.apply_updates(params, updates)
    assert int(state.inner_opt_state.count) == 2
    # fast 1 -> .9 -> .8; at the sync the slow weights move to 1 + .5 (.8 - 1) = .9
    np.testing.assert_allclose(params, 0.9, rtol=1e-6)
    np.testing.assert_allclose(lookax.slow_params(state, params), 0.9, rtol=1e-6)


def test_missing_params_are_rejected():
    tx = optax.chain(optax.clip(1.0), lookax.lookahead(optax.adam(0.1)))
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="requires params"):
        tx.update(params, tx.init(params))


# --- counters ------------------------------------------------------------------------------


def test_sync_timing_past_the_int32_counter_saturation():
    k = 3
    schedule_calls = []

    def alpha_schedule(count):
        schedule_calls.append(count)
        return 0.5  # evaluated at the saturated count without trouble

    tx = lookax.lookahead(optax.sgd(0.1), k, alpha_schedule, inner_state_on_sync="interpolate")
    params = jnp.asarray(1.0, jnp.float32)
    state = tx.init(params)._replace(count=jnp.asarray(INT32_MAX - 4, jnp.int32))
    step = make_step(tx, grad_fn=jnp.ones_like)
    counts, trajectory = [], []
    for _ in range(4 * k + 1):  # 13 steps, 9 of them with the counter saturated
        params, state, _ = step(params, state)
        counts.append(int(state.count))
        trajectory.append(float(params))
    assert counts[:4] == [INT32_MAX - 3, INT32_MAX - 2, INT32_MAX - 1, INT32_MAX]
    assert all(c == INT32_MAX for c in counts[4:])  # saturates, never wraps negative
    # Sync every k steps throughout: the hand example, continued.
    expected = [*HAND_TRAJECTORY, 0.5, 0.55, 0.45, 0.35, 0.40, 0.30]
    np.testing.assert_allclose(trajectory, expected, rtol=1e-5)
    assert int(state.phase) == (4 * k + 1) % k
    # Traced once: one call for the target's alpha, one for the deferred interpolation's.
    assert len(schedule_calls) == 2


def test_a_hundred_thousand_steps_in_lax_scan():
    num_steps, k = 100_000, 7
    tx = lookax.lookahead(optax.adam(1e-2), k, 0.5)
    params = {"w": jnp.asarray([0.5, -1.0, 2.0], jnp.float32), "b": jnp.asarray(0.1, jnp.float32)}
    target = {"w": jnp.asarray([1.0, 2.0, -3.0], jnp.float32), "b": jnp.asarray(0.7, jnp.float32)}

    def body(carry, t):
        params, state = carry
        noise = 0.1 * jnp.sin(0.37 * t.astype(jnp.float32))  # keeps the fast weights moving
        grads = jax.tree.map(lambda p, y: p - y + noise, params, target)
        updates, new_state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        params_are_slow = jax.tree.map(
            jnp.array_equal, params, lookax.slow_params(new_state, params)
        )
        slow_unchanged = jax.tree.map(jnp.array_equal, new_state.lagging_slow, state.lagging_slow)
        record = (
            new_state.phase == 0,
            jnp.all(jnp.stack(jax.tree.leaves(params_are_slow))),
            jnp.all(jnp.stack(jax.tree.leaves(slow_unchanged))),
        )
        return (params, new_state), record

    run = jax.jit(lambda params, state: jax.lax.scan(body, (params, state), jnp.arange(num_steps)))
    (params, state), (synced, params_are_slow, slow_unchanged) = run(params, tx.init(params))
    synced, params_are_slow, slow_unchanged = map(
        np.asarray, (synced, params_are_slow, slow_unchanged)
    )

    assert int(state.count) == num_steps and int(state.phase) == num_steps % k
    sync_steps = np.flatnonzero(synced) + 1
    np.testing.assert_array_equal(sync_steps, np.arange(k, num_steps + 1, k))
    assert params_are_slow[synced].all()  # params == slow weights at every sync, bitwise
    # The stored slow weights are written on the call after each sync, and only then.
    written = np.concatenate([[False], synced[:-1]])
    assert slow_unchanged[~written].all()
    assert not slow_unchanged[written].any()
    for p, y in zip(jax.tree.leaves(params), jax.tree.leaves(target), strict=True):
        np.testing.assert_allclose(p, y, atol=0.2)  # converged near the target


# --- one convention: TypeError for a wrong type, ValueError for a bad value ----------------

_SGD = optax.sgd(0.1)


def _traced_sync_delay():
    return jax.jit(lambda delay: (lookax.diloco(_SGD, 4, sync_delay=delay), delay)[1])(1)


@pytest.mark.parametrize(
    ("build", "error", "name"),
    [
        pytest.param(lambda: lookax.adam("0.1"), TypeError, "learning_rate", id="str-number"),
        pytest.param(lambda: lookax.adam(1 + 1j), TypeError, "learning_rate", id="complex-number"),
        pytest.param(lambda: lookax.adam(-1.0), ValueError, "learning_rate", id="negative"),
        pytest.param(lambda: lookax.adam(b1=float("nan")), ValueError, "b1", id="nan"),
        pytest.param(
            lambda: lookax.sgd(0.1, momentum=0.9, nesterov=1), TypeError, "nesterov", id="int-flag"
        ),
        pytest.param(lambda: lookax.adam(mu_dtype=3), TypeError, "mu_dtype", id="not-a-dtype"),
        pytest.param(
            lambda: lookax.adam(mu_dtype="not a dtype"), ValueError, "mu_dtype", id="dtype-name"
        ),
        pytest.param(
            lambda: lookax.adam(mu_dtype=jnp.int32), ValueError, "mu_dtype", id="integer-dtype"
        ),
        pytest.param(lambda: lookax.lookahead(_SGD, 1.5), TypeError, "sync_period", id="float-k"),
        pytest.param(lambda: lookax.lookahead(_SGD, 0), ValueError, "sync_period", id="zero-k"),
        pytest.param(
            lambda: lookax.lookahead(_SGD, inner_state_on_sync=1),
            TypeError,
            "inner_state_on_sync",
            id="choice-not-a-str",
        ),
        pytest.param(
            lambda: lookax.lookahead(_SGD, inner_state_on_sync="average"),
            ValueError,
            "inner_state_on_sync",
            id="unknown-choice",
        ),
        pytest.param(lambda: lookax.lookahead(object()), TypeError, "inner", id="inner-object"),
        pytest.param(
            lambda: lookax.lookahead(optax.MultiSteps(_SGD, 2)),
            ValueError,
            "MultiSteps",
            id="inner-multisteps",
        ),
        pytest.param(
            lambda: lookax.lookahead(_SGD, outer=object()), TypeError, "outer", id="outer-object"
        ),
        pytest.param(
            lambda: lookax.lookahead(_SGD, 4, 0.5, outer=_SGD),
            ValueError,
            "either outer or slow_step_size",
            id="outer-and-alpha",
        ),
        pytest.param(
            lambda: lookax.lookahead(_SGD, replica_axis=3), TypeError, "replica_axis", id="axis"
        ),
        pytest.param(
            lambda: lookax.diloco(_SGD, 4, sync_delay=1.0), TypeError, "sync_delay", id="float-int"
        ),
        pytest.param(_traced_sync_delay, TypeError, "sync_delay is traced", id="traced-static"),
        pytest.param(
            lambda: lookax.diloco(_SGD, 4, sync_delay=2), ValueError, "sync_delay", id="delay-2"
        ),
        pytest.param(
            lambda: lookax.lookahead(_SGD, 4, sync_delay=1),
            ValueError,
            "sync_delay=1 applies to the outer path only",
            id="plain-path-option",
        ),
        pytest.param(
            lambda: lookax.diloco(_SGD, 4, drop_nonfinite=1),
            TypeError,
            "drop_nonfinite",
            id="int-bool",
        ),
        pytest.param(
            lambda: lookax.diloco(_SGD, 4, fragments=True), TypeError, "fragments", id="bool-int"
        ),
        pytest.param(
            lambda: lookax.diloco(_SGD, 4, fragments=0), ValueError, "fragments", id="no-fragment"
        ),
        pytest.param(
            lambda: lookax.diloco(_SGD, 4, outer_learning_rate="x"),
            TypeError,
            "outer_learning_rate",
            id="outer-lr-str",
        ),
        pytest.param(lambda: lookax.grouped(object()), TypeError, "inner", id="grouped-inner"),
        pytest.param(
            lambda: lookax.grouped(_SGD, key=3), TypeError, "key", id="grouped-key-not-callable"
        ),
        pytest.param(
            lambda: lookax.grouped(_SGD, max_leaf_size=1.5),
            TypeError,
            "max_leaf_size",
            id="grouped-float-size",
        ),
        pytest.param(
            lambda: lookax.grouped(_SGD, max_leaf_size=-1),
            ValueError,
            "max_leaf_size",
            id="grouped-negative-size",
        ),
    ],
)
def test_wrong_types_raise_type_error_and_bad_values_value_error(build, error, name):
    with pytest.raises(error, match=re.escape(name)) as raised:
        build()
    assert type(raised.value) is error  # not a subclass: the convention is exact


@pytest.mark.parametrize(
    ("num_replicas", "error"),
    [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)],
)
def test_stack_replicas_needs_a_positive_integer(num_replicas, error):
    with pytest.raises(error, match=f"num_replicas must be an integer >= 1, got {num_replicas!r}"):
        lookax.stack_replicas({"w": jnp.zeros(3)}, num_replicas)
