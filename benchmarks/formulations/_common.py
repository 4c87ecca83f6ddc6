"""Pieces shared by the formulations: the state and the exact sync of one leaf."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class State(NamedTuple):
    count: jax.Array
    phase: jax.Array
    slow: optax.Params
    inner_state: optax.OptState


def init(inner: optax.GradientTransformation, params: optax.Params) -> State:
    return State(
        count=jnp.zeros([], jnp.int32),
        phase=jnp.zeros([], jnp.int32),
        slow=jax.tree.map(lambda x: jnp.array(x, copy=True), params),
        inner_state=inner.init(params),
    )


def exact_sync_leaf(p: Any, u: Any, s: Any, alpha: float) -> tuple[Any, Any]:
    """(update, stored slow): ``p + update`` is the stored slow weight bit for bit."""
    target = s + alpha * ((p + u) - s)
    update = target - p
    return update, p + update


def next_counters(state: State, is_sync: jax.Array) -> tuple[jax.Array, jax.Array]:
    return optax.safe_increment(state.count), jnp.where(is_sync, 0, state.phase + 1).astype(
        jnp.int32
    )


def transpose_pairs(params: Any, pairs: Any) -> tuple[Any, Any]:
    leaves = jax.tree.structure(params).flatten_up_to(pairs)
    treedef = jax.tree.structure(params)
    return (
        treedef.unflatten([a for a, _ in leaves]),
        treedef.unflatten([b for _, b in leaves]),
    )
