"""``lookax.lookahead``'s cond, plus a params-sized scratch buffer kept in the state.

Not a candidate for the library: it breaks the memory rule of DESIGN.md section
2 (state = inner state + one slow copy + scalars) by carrying one more
params-sized buffer. It exists to measure what the lookahead step's temporary
buffer costs. The inner updates must cross the cond, so they need a buffer of
their own; XLA:CPU allocates a step's temporaries afresh on every call, and a
temporary buffer larger than glibc's mmap threshold (32 MiB at most) is a fresh
mmap whose every 4 KiB page faults on first touch. Here the inner updates are
written into the donated scratch buffer instead (it is returned in the new
state, so its input and output alias), which takes the allocation off the
step and leaves the bytes moved unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from formulations import _common


class ScratchState(NamedTuple):
    count: jax.Array
    phase: jax.Array
    slow: optax.Params
    inner_state: optax.OptState
    scratch: optax.Params


def lookahead(inner, sync_period=5, slow_step_size=0.5):
    def init_fn(params):
        base = _common.init(inner, params)
        return ScratchState(*base, scratch=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params):
        u, inner_state = inner.update(updates, state.inner_state, params)
        is_sync = state.phase + 1 >= sync_period

        def sync(ops):
            u, slow = ops
            pairs = jax.tree.map(
                lambda p, d, s: _common.exact_sync_leaf(p, d, s, slow_step_size), params, u, slow
            )
            return _common.transpose_pairs(params, pairs)

        new_updates, slow = jax.lax.cond(is_sync, sync, lambda ops: ops, (u, state.slow))
        count, phase = _common.next_counters(state, is_sync)
        # The scratch output is the updates themselves: XLA writes them once, into
        # the donated scratch buffer, and apply_updates reads them from there.
        return new_updates, ScratchState(count, phase, slow, inner_state, new_updates)

    return optax.GradientTransformation(init_fn, update_fn)
