"""lookax.lookahead composed with optax's wrappers (docs/getting-started.md, "Where it works").

optax.chain (clipping before lookahead, lookahead after a stateful transform), optax.MultiSteps
(k counts real optimizer steps), optax.masked / optax.multi_transform (Lookahead on a subset,
slow_params(state, params) returning the full tree), optax.inject_hyperparams over lookahead's
slow_step_size and sync_period (changed between steps without recompiling), apply_if_finite
(a NaN step changes nothing), nested lookahead, and ranger under another lookahead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import (
    HAND_TRAJECTORY,
    assert_trees_bitwise_equal,
    assert_trees_close,
    jit_update_step,
)

import lookax


def reference_lookahead_sgd(theta0, grad_fn, learning_rate, sync_periods, slow_step_sizes):
    """Algorithm 1 over SGD in float64, with k and alpha allowed to change every step.

    Sync timing follows lookax's phase counter: a step syncs when the steps since the last
    sync (this one included) reach the sync period in force at that step.
    """
    theta = np.asarray(theta0, np.float64)
    slow = theta.copy()
    phase = 0
    trajectory = []
    for k, alpha in zip(sync_periods, slow_step_sizes, strict=True):
        theta = theta - learning_rate * grad_fn(theta)
        if phase + 1 >= k:
            slow = slow + alpha * (theta - slow)
            theta = slow.copy()
            phase = 0
        else:
            phase += 1
        trajectory.append(theta.copy())
    return np.array(trajectory)


def reference_nested_lookahead_sgd(theta0, grad_fn, learning_rate, inner, outer, num_steps):
    """lookahead(lookahead(sgd, *inner), *outer) in float64; inner/outer = (k, alpha)."""
    (k_in, alpha_in), (k_out, alpha_out) = inner, outer
    theta = np.asarray(theta0, np.float64)
    slow_in, slow_out = theta.copy(), theta.copy()
    trajectory, outer_slow, inner_slow = [], [], []
    for t in range(1, num_steps + 1):
        fast = theta - learning_rate * grad_fn(theta)
        if t % k_in == 0:
            slow_in = slow_in + alpha_in * (fast - slow_in)
            fast = slow_in.copy()
        if t % k_out == 0:
            slow_out = slow_out + alpha_out * (fast - slow_out)
            fast = slow_out.copy()
            if t % k_in == 0:  # both synced: the inner slow weights follow the params
                slow_in = fast.copy()
        theta = fast
        trajectory.append(theta.copy())
        outer_slow.append(slow_out.copy())
        inner_slow.append(slow_in.copy())
    return np.array(trajectory), np.array(outer_slow), np.array(inner_slow)


def random_tree(seed: int, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "kernel": jnp.asarray(scale * rng.normal(size=(4, 3)), jnp.float32),
        "bias": jnp.asarray(scale * rng.normal(size=(3,)), jnp.float32),
    }


# --- optax.chain ---------------------------------------------------------------------------


def test_clipping_before_lookahead_equals_lookahead_fed_clipped_gradients():
    params = random_tree(0)
    grad_stream = [random_tree(100 + t, scale=10.0) for t in range(7)]  # global norm >> 1
    lookahead = lookax.lookahead(optax.adam(0.05), sync_period=3, slow_step_size=0.5)
    chained = optax.chain(optax.clip_by_global_norm(1.0), lookahead)

    def clip(grads):
        norm = optax.tree.norm(grads)
        return jax.tree.map(lambda g: g / jnp.maximum(norm, 1.0), grads)

    step_chained, step_plain = jit_update_step(chained), jit_update_step(lookahead)
    p_chained, s_chained = params, chained.init(params)
    p_plain, s_plain = params, lookahead.init(params)
    p_chained_at_sync = None
    for t, grads in enumerate(grad_stream, start=1):
        assert float(optax.tree.norm(grads)) > 5.0
        p_chained, s_chained = step_chained(p_chained, s_chained, grads)
        p_plain, s_plain = step_plain(p_plain, s_plain, jax.jit(clip)(grads))
        assert_trees_close(p_chained, p_plain)
        assert_trees_close(
            lookax.slow_params(s_chained, p_chained), lookax.slow_params(s_plain, p_plain)
        )
        if t % 3 == 1 and t > 1:  # the call after a sync stores the params it produced
            assert_trees_bitwise_equal(p_chained_at_sync, s_chained[1].lagging_slow)
        p_chained_at_sync = p_chained
    assert int(s_chained[1].count) == 7 and int(s_chained[1].phase) == 1
    assert len(step_chained.traces) == 1


def test_lookahead_after_a_stateful_transform_in_a_chain():
    # chain(scale_by_adam, lookahead(scale(-lr))) is lookahead(adam): scale_by_adam's state does
    # not depend on params, so it may sit outside the lookahead.
    params = random_tree(1)
    grad_stream = [random_tree(200 + t) for t in range(8)]
    inside = lookax.lookahead(optax.adam(0.05), sync_period=4, slow_step_size=0.7)
    outside = optax.chain(
        optax.scale_by_adam(), lookax.lookahead(optax.scale(-0.05), 4, slow_step_size=0.7)
    )
    step_inside, step_outside = jit_update_step(inside), jit_update_step(outside)
    p_in, s_in = params, inside.init(params)
    p_out, s_out = params, outside.init(params)
    for grads in grad_stream:
        p_in, s_in = step_inside(p_in, s_in, grads)
        p_out, s_out = step_outside(p_out, s_out, grads)
        assert_trees_close(p_out, p_in)
    assert_trees_close(lookax.slow_params(s_out, p_out), lookax.slow_params(s_in, p_in))
    assert_trees_bitwise_equal(p_out, lookax.slow_params(s_out, p_out))  # 8 steps: a sync ran
    stored = jax.tree.leaves(s_out[1].lagging_slow)
    assert not np.array_equal(jax.tree.leaves(p_out)[0], stored[0])  # and is still to be written


# --- optax.MultiSteps ----------------------------------------------------------------------


def test_multisteps_k_counts_real_optimizer_steps():
    every = 2
    tx = optax.MultiSteps(lookax.lookahead(optax.sgd(0.1), 3, 0.5), every_k_schedule=every)
    params = jnp.array(1.0, jnp.float32)  # strongly typed, as apply_updates returns it
    state = tx.init(params)
    micro_step = jit_update_step(tx)
    real = []
    for micro in range(every * len(HAND_TRAJECTORY)):
        before = params
        # micro-batch gradients 0.5 and 1.5 average to the hand example's gradient 1
        params, state = micro_step(params, state, jnp.array(0.5 if micro % 2 == 0 else 1.5))
        if (micro + 1) % every:
            assert float(params) == float(before)  # accumulating, no real step
        else:
            real.append(float(params))
    np.testing.assert_allclose(real, HAND_TRAJECTORY, rtol=1e-6)
    inner = state.inner_opt_state
    assert int(inner.count) == len(HAND_TRAJECTORY)  # real steps, not micro-steps
    assert int(inner.phase) == len(HAND_TRAJECTORY) % 3
    assert float(lookax.slow_params(state, params)) == pytest.approx(0.70, rel=1e-6)
    assert micro_step._cache_size() == 1


# --- optax.masked / optax.multi_transform --------------------------------------------------


def test_multi_transform_lookahead_on_a_subset_and_full_tree_slow_params():
    params = {"encoder": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(2), "b": jnp.ones(())}}
    labels = {"encoder": {"w": "lookahead"}, "head": {"w": "plain", "b": "plain"}}
    tx = optax.multi_transform(
        {"lookahead": lookax.lookahead(optax.sgd(0.1), 3, 0.5), "plain": optax.sgd(0.1)}, labels
    )
    grads = jax.tree.map(jnp.ones_like, params)
    step = jit_update_step(tx)
    state = tx.init(params)
    for t, expected in enumerate(HAND_TRAJECTORY, start=1):
        params, state = step(params, state, grads)
        np.testing.assert_allclose(params["encoder"]["w"], expected, rtol=1e-6)
        np.testing.assert_allclose(params["head"]["w"], 1 - 0.1 * t, rtol=1e-6)

        full = lookax.slow_params(state, params)
        assert jax.tree.structure(full) == jax.tree.structure(params)
        slow_expected = [1.0, 1.0, 0.85, 0.85, 0.85, 0.70, 0.70][t - 1]
        np.testing.assert_allclose(full["encoder"]["w"], slow_expected, rtol=1e-6)
        assert full["head"]["w"] is params["head"]["w"]  # untouched leaves are the params
        assert full["head"]["b"] is params["head"]["b"]
    assert len(step.traces) == 1

    # The state itself holds the slow weights alone, MaskedNode where Lookahead does not run.
    stored = state.inner_states["lookahead"].inner_state.lagging_slow
    assert isinstance(stored["head"]["w"], optax.MaskedNode)
    np.testing.assert_allclose(stored["encoder"]["w"], 0.70, rtol=1e-6)


def test_masked_lookahead_with_a_mask_function():
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "scale": jnp.ones(())}

    def only_kernels(tree):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: jax.tree_util.keystr(path).endswith("['kernel']"), tree
        )

    tx = optax.chain(
        optax.masked(lookax.lookahead(optax.sgd(0.1), 3, 0.5), only_kernels),
        optax.masked(
            optax.sgd(0.1), lambda tree: jax.tree.map(lambda m: not m, only_kernels(tree))
        ),
    )
    grads = jax.tree.map(jnp.ones_like, params)
    step = jit_update_step(tx)
    state = tx.init(params)
    for t, expected in enumerate(HAND_TRAJECTORY, start=1):
        params, state = step(params, state, grads)
        np.testing.assert_allclose(params["dense"]["kernel"], expected, rtol=1e-6)
        np.testing.assert_allclose(params["dense"]["bias"], 1 - 0.1 * t, rtol=1e-6)
        np.testing.assert_allclose(params["scale"], 1 - 0.1 * t, rtol=1e-6)
    full = lookax.slow_params(state, params)
    np.testing.assert_allclose(full["dense"]["kernel"], 0.70, rtol=1e-6)
    assert full["dense"]["bias"] is params["dense"]["bias"]
    assert full["scale"] is params["scale"]


# --- optax.inject_hyperparams over lookahead's alpha and k ---------------------------------


def test_inject_hyperparams_changes_alpha_and_k_between_steps_without_recompiling():
    tx = optax.inject_hyperparams(lookax.lookahead)(
        optax.sgd(0.1), sync_period=3, slow_step_size=0.5
    )
    params = jnp.array(1.0, jnp.float32)  # strongly typed, as apply_updates returns it
    state = tx.init(params)
    assert state.hyperparams["sync_period"].dtype == jnp.int32
    step = jit_update_step(tx)

    # (k, alpha) in force at each step: k and alpha change mid-cycle and at a sync boundary.
    schedule = [(3, 0.5)] * 3 + [(2, 0.25)] * 4 + [(4, 1.0)] * 5 + [(1, 0.5)] * 3
    trajectory = []
    for k, alpha in schedule:
        # New values of the same type (full_like keeps dtype and weak type: inject_hyperparams
        # stores a Python int weakly typed), so the jitted step sees the same input types.
        hyperparams = dict(state.hyperparams)
        hyperparams["sync_period"] = jnp.full_like(hyperparams["sync_period"], k)
        hyperparams["slow_step_size"] = jnp.full_like(hyperparams["slow_step_size"], alpha)
        state = state._replace(hyperparams=hyperparams)
        params, state = step(params, state, jnp.array(1.0))
        trajectory.append(float(params))

    reference = reference_lookahead_sgd(
        1.0, lambda theta: 1.0, 0.1, [k for k, _ in schedule], [a for _, a in schedule]
    )
    np.testing.assert_allclose(trajectory, reference, rtol=1e-6)
    np.testing.assert_allclose(trajectory[:3], HAND_TRAJECTORY[:3], rtol=1e-6)
    assert len(step.traces) == 1, "changing injected alpha or k recompiled the step"
    assert step._cache_size() == 1


# --- optax.apply_if_finite -----------------------------------------------------------------


@pytest.mark.parametrize("on_sync", ["keep", "interpolate"])
def test_apply_if_finite_skips_a_nan_step_completely(on_sync):
    k = 3
    tx = optax.apply_if_finite(
        lookax.lookahead(optax.adam(0.05), k, 0.5, inner_state_on_sync=on_sync),
        max_consecutive_errors=3,
    )
    params = random_tree(2)
    clean = [random_tree(300 + t) for t in range(2 * k)]
    nan_grads = jax.tree.map(lambda g: g.at[0].set(jnp.nan), clean[0])
    step = jit_update_step(tx)

    # Reference run without any NaN step.
    p_ref, s_ref = params, tx.init(params)
    reference = []
    for grads in clean:
        p_ref, s_ref = step(p_ref, s_ref, grads)
        reference.append((p_ref, s_ref.inner_state))

    # NaN steps at phase 1 (a non-sync step) and at phase k - 1 (a would-be sync).
    p, s = params, tx.init(params)
    for t, grads in enumerate(clean):
        phase = int(s.inner_state.phase)
        if phase in (1, k - 1):
            p_nan, s_nan = step(p, s, nan_grads)
            assert_trees_bitwise_equal(p_nan, p)  # params
            assert_trees_bitwise_equal(s_nan.inner_state, s.inner_state)  # slow, inner, counters
            assert not bool(s_nan.last_finite)
            assert int(s_nan.total_notfinite) == int(s.total_notfinite) + 1
            p, s = p_nan, s_nan
        p, s = step(p, s, grads)
        # The skipped step left no trace: the run continues exactly as the clean one.
        assert_trees_bitwise_equal(p, reference[t][0])
        assert_trees_bitwise_equal(s.inner_state, reference[t][1])
    assert int(s.total_notfinite) == 4
    assert len(step.traces) == 1


# --- nested lookahead and ranger under lookahead -------------------------------------------


def test_nested_lookahead_matches_the_nested_algorithm():
    inner, outer = (2, 0.5), (3, 0.8)
    tx = lookax.lookahead(lookax.lookahead(optax.sgd(0.1), *inner), *outer)
    theta0 = np.array([1.0, -2.0, 0.5], np.float32)
    num_steps = 13
    trajectory, outer_slow, inner_slow = reference_nested_lookahead_sgd(
        theta0, lambda theta: theta, 0.1, inner, outer, num_steps
    )
    params = jnp.asarray(theta0)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(params, state, params)  # gradient of |theta|^2 / 2
        return optax.apply_updates(params, updates), state

    for t in range(num_steps):
        params, state = step(params, state)
        np.testing.assert_allclose(params, trajectory[t], rtol=1e-6)
        # slow_params finds the outermost slow weights; the inner ones are one level down.
        outer_now = lookax.slow_params(state, params)
        inner_now = lookax.slow_params(state.inner_state, params)
        np.testing.assert_allclose(outer_now, outer_slow[t], rtol=1e-6)
        np.testing.assert_allclose(inner_now, inner_slow[t], rtol=1e-6)
        if (t + 1) % outer[0] == 0:
            np.testing.assert_array_equal(params, outer_now)
        if (t + 1) % inner[0] == 0:
            np.testing.assert_array_equal(params, inner_now)
    # The reference's "both synced" rule was exercised: steps 6 and 12.
    assert num_steps >= 2 * inner[0] * outer[0]


def test_ranger_under_another_lookahead():
    params = {"kernel": jnp.asarray(np.linspace(-1, 1, 12).reshape(4, 3), jnp.float32)}
    target = {"kernel": jnp.asarray(np.linspace(2, 3, 12).reshape(4, 3), jnp.float32)}

    def loss(params):
        return 0.5 * jnp.sum((params["kernel"] - target["kernel"]) ** 2)

    outer_k, ranger_k = 4, 6
    tx = lookax.lookahead(lookax.ranger(0.05, sync_period=ranger_k), outer_k, 0.5)
    # The same thing spelled out: ranger is lookahead(chain(centralize_gradients, radam)).
    spelled_out = lookax.lookahead(
        lookax.lookahead(
            optax.chain(
                lookax.centralize_gradients(),
                lookax.radam(0.05, b1=0.95, eps=1e-5, decoupled_weight_decay=True),
            ),
            ranger_k,
            0.5,
        ),
        outer_k,
        0.5,
    )

    def make(tx):
        @jax.jit
        def step(params, state):
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            return optax.apply_updates(params, updates), state

        return step

    step, step_spelled = make(tx), make(spelled_out)
    p, s = params, tx.init(params)
    p2, s2 = params, spelled_out.init(params)
    losses = [float(loss(p))]
    p_at_ranger_sync = None
    for t in range(1, 25):
        p, s = step(p, s)
        p2, s2 = step_spelled(p2, s2)
        losses.append(float(loss(p)))
        assert_trees_close(p, p2)
        ranger_state = s.inner_state
        assert isinstance(ranger_state, lookax.LookaheadState)
        if t % outer_k == 0:
            assert_trees_bitwise_equal(p, lookax.slow_params(s, p))
        if t % ranger_k == 0:
            assert_trees_bitwise_equal(p, lookax.slow_params(ranger_state, p))
        if t % ranger_k == 1 and t > 1:
            assert_trees_bitwise_equal(p_at_ranger_sync, ranger_state.lagging_slow)
        p_at_ranger_sync = p
    assert int(s.count) == 24 and int(s.inner_state.count) == 24
    # Gradient Centralization removes the per-column mean of the kernel's gradient, so the
    # column means never move; the centred part of the fit still improves.
    np.testing.assert_allclose(p["kernel"].mean(0), params["kernel"].mean(0), atol=1e-5)
    assert losses[-1] < losses[0]
