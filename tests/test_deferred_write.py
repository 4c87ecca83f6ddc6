"""The deferred slow write (docs/design.md): what it promises and what it compiles to.

The slow weights are written one call after a sync, from the params the sync's updates
produced. These tests pin the consequences: params and slow weights bitwise equal after
every sync (also under ``jax.vmap`` with batched counters), the "Lookahead last" rule, and
the compiled step's shape (no temporary beyond the inner step's).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import assert_trees_bitwise_equal, compiled_temp_bytes, scan_trajectory

import lookax

K = 3


@functools.cache
def _vmapped_run(dtype):
    """Three seeds in one ``jax.vmap``, counters batched with everything else."""
    del dtype  # one compiled function per dtype
    tx = lookax.lookahead(optax.adam(0.05), sync_period=K, slow_step_size=0.37)

    def run(params, grads):
        record = lambda p, s: (p, lookax.slow_params(s, p), s.lagging_slow)
        return scan_trajectory(tx, params, grads, record=record)

    return jax.jit(jax.vmap(run))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_params_equal_slow_weights_bitwise_after_every_sync_under_vmap(dtype):
    rng = np.random.default_rng(0)
    seeds, steps = 3, 3 * K + 1
    params = {
        "w": jnp.asarray(rng.normal(size=(seeds, 4, 3)), dtype),
        "b": jnp.asarray(rng.normal(size=(seeds, 3)), dtype),
    }
    grads = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=(p.shape[0], steps, *p.shape[1:])), dtype), params
    )
    fast, slow_now, stored = _vmapped_run(dtype)(params, grads)
    for t in range(K - 1, steps - 1, K):  # the syncs
        at = lambda tree, t=t: jax.tree.map(lambda x: x[:, t], tree)  # noqa: E731
        assert_trees_bitwise_equal(at(fast), at(slow_now))
        assert_trees_bitwise_equal(at(fast), jax.tree.map(lambda x, t=t: x[:, t + 1], stored))
    # The check can fail: between syncs the fast weights have left the slow ones.
    assert not np.array_equal(fast["w"][:, K], slow_now["w"][:, K])


def test_a_transform_chained_after_lookahead_moves_the_slow_weights_with_the_params():
    """Lookahead should be last: the slow weights follow whatever params the next call sees."""
    params = jnp.float32(1.0)
    last = lookax.lookahead(optax.sgd(0.1), sync_period=K, slow_step_size=0.5)
    not_last = optax.chain(last, optax.scale(2.0))  # doubles every update, the sync's too
    state_last, state = last.init(params), not_last.init(params)
    p_last, p = params, params
    for _ in range(K + 1):
        u, state_last = last.update(jnp.float32(1.0), state_last, p_last)
        p_last = optax.apply_updates(p_last, u)
        u, state = not_last.update(jnp.float32(1.0), state, p)
        p = optax.apply_updates(p, u)
    # Alone: theta = 1 - .1 - .1 - .1 = .7, target 1 + .5 (.7 - 1) = .85, one more step .75.
    assert float(state_last.lagging_slow) == pytest.approx(0.85, rel=1e-6)
    assert float(p_last) == pytest.approx(0.75, rel=1e-6)
    # Chained: the fast steps are doubled (.8 .6), the sync's update toward the target
    # 1 + .5 (.5 - 1) = .75 is doubled from .15 to .3, so the params land at .9, and the
    # slow weights follow them there, not to the target.
    assert float(state[0].lagging_slow) == pytest.approx(0.9, rel=1e-6)
    assert float(p) == pytest.approx(0.9 - 0.2, rel=1e-6)


@pytest.mark.compiler("bounds XLA's temporary buffer bytes (memory_analysis) of the step")
def test_compiled_step_needs_no_temporary_beyond_adams():
    params = {"w": jnp.zeros((256, 1024)), "b": jnp.zeros((1024,)), "c": jnp.zeros((64, 64))}
    params_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    adam_temp = compiled_temp_bytes(optax.adam(1e-3), params)
    lookahead_temp = compiled_temp_bytes(lookax.lookahead(optax.adam(1e-3), 5, 0.5), params)
    assert abs(lookahead_temp - adam_temp) <= 4096, (lookahead_temp, adam_temp, params_bytes)
    # The measure sees a params-sized temporary where there is one: the wide slow-dtype
    # path materializes the inner updates for its cond.
    bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    wide = lookax.lookahead(optax.adam(1e-3), 5, 0.5, slow_dtype=jnp.float32)
    wide_temp = compiled_temp_bytes(wide, bf16) - compiled_temp_bytes(optax.adam(1e-3), bf16)
    assert wide_temp >= params_bytes // 2 // 2, (wide_temp, params_bytes)
