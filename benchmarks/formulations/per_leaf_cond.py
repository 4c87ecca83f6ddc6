"""One ``lax.cond`` per leaf.

Same math as ``lookax.lookahead``, but each leaf gets its own cond, in the hope
that XLA would apply each leaf's updates right after its cond and reuse one
small temporary buffer for the inner updates instead of a params-sized one.
XLA:CPU's scheduler runs all the inner-update kernels first, so it does not.
"""

from __future__ import annotations

import jax
import optax

from formulations import _common


def lookahead(inner, sync_period=5, slow_step_size=0.5):
    def update_fn(updates, state, params):
        u, inner_state = inner.update(updates, state.inner_state, params)
        is_sync = state.phase + 1 >= sync_period

        def one_leaf(p, d, s):
            def sync(ops):
                d, s = ops
                return _common.exact_sync_leaf(p, d, s, slow_step_size)

            return jax.lax.cond(is_sync, sync, lambda ops: ops, (d, s))

        pairs = jax.tree.map(one_leaf, params, u, state.slow)
        new_updates, slow = _common.transpose_pairs(params, pairs)
        count, phase = _common.next_counters(state, is_sync)
        return new_updates, _common.State(count, phase, slow, inner_state)

    return optax.GradientTransformation(lambda p: _common.init(inner, p), update_fn)
