"""The inner update inside both branches of the cond.

The cond takes the gradients, the inner state and the slow weights; each branch
runs ``inner.update`` itself, so nothing params-sized is computed before the
cond. The updates still leave the cond as a params-sized buffer.
"""

from __future__ import annotations

import jax
import optax

from formulations import _common


def lookahead(inner, sync_period=5, slow_step_size=0.5):
    def update_fn(updates, state, params):
        is_sync = state.phase + 1 >= sync_period

        def sync(ops):
            grads, inner_state, slow = ops
            u, inner_state = inner.update(grads, inner_state, params)
            pairs = jax.tree.map(
                lambda p, d, s: _common.exact_sync_leaf(p, d, s, slow_step_size), params, u, slow
            )
            new_updates, slow = _common.transpose_pairs(params, pairs)
            return new_updates, inner_state, slow

        def no_sync(ops):
            grads, inner_state, slow = ops
            u, inner_state = inner.update(grads, inner_state, params)
            return u, inner_state, slow

        new_updates, inner_state, slow = jax.lax.cond(
            is_sync, sync, no_sync, (updates, state.inner_state, state.slow)
        )
        count, phase = _common.next_counters(state, is_sync)
        return new_updates, _common.State(count, phase, slow, inner_state)

    return optax.GradientTransformation(lambda p: _common.init(inner, p), update_fn)
