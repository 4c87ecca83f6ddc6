"""The straightforward ``lax.cond`` Lookahead.

The cond closes over the inner updates, the params and the slow weights; the sync
branch computes ``fast = params + u``, the new slow weights, and returns
``new_slow - params`` as the updates. This is what one writes first. It is not
exact: ``params + (new_slow - params)`` can differ from ``new_slow`` in the last
bit, so the params and the stored slow weights drift apart by an ulp at a sync.
"""

from __future__ import annotations

import jax
import optax

from formulations import _common


def lookahead(inner, sync_period=5, slow_step_size=0.5):
    def update_fn(updates, state, params):
        u, inner_state = inner.update(updates, state.inner_state, params)
        is_sync = state.phase + 1 >= sync_period

        def sync(_):
            fast = jax.tree.map(lambda p, d: p + d, params, u)
            slow = jax.tree.map(lambda s, f: s + slow_step_size * (f - s), state.slow, fast)
            return jax.tree.map(lambda s, p: s - p, slow, params), slow

        def no_sync(_):
            return u, state.slow

        new_updates, slow = jax.lax.cond(is_sync, sync, no_sync, None)
        count, phase = _common.next_counters(state, is_sync)
        return new_updates, _common.State(count, phase, slow, inner_state)

    return optax.GradientTransformation(lambda p: _common.init(inner, p), update_fn)
