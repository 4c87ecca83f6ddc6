"""Lookahead's descendants: an outer optimizer on the slow weights, and replicas.

Lookahead's slow step ``slow += alpha * (fast - slow)`` is one SGD step of size
alpha on the pseudo-gradient ``delta = slow - fast``. ``lookax.lookahead(...,
outer=tx, replica_axis=name)`` generalizes both halves; the two aliases here carry
the papers' defaults:

- :func:`slowmo`: SlowMo (Wang, Tantia, Ballas, Rabbat, ICLR 2020), momentum
  on the slow step;
- :func:`diloco`: DiLoCo (Douillard et al. 2023), replicas training apart for
  ``sync_period`` steps, then an outer Nesterov step on their averaged
  pseudo-gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from lookax._checks import check_learning_rate, check_nonnegative, check_replica_count
from lookax.lookahead import LookaheadState, lookahead
from lookax.optimizers import sgd

__all__ = ["diloco", "replica_axes", "slowmo", "stack_replicas"]


def _map_replica_leaves(
    tree: Any, stacked: Callable[[Any], Any], shared: Callable[[Any], Any]
) -> Any:
    """``shared`` on Lookahead's counters (any nesting depth), ``stacked`` on the other leaves."""

    def visit(node: Any) -> Any:
        if not isinstance(node, LookaheadState):
            return jax.tree.map(stacked, node)
        return LookaheadState(
            count=shared(node.count),
            phase=shared(node.phase),
            lagging_slow=walk(node.lagging_slow),
            inner_state=walk(node.inner_state),
            inner_state_at_sync=walk(node.inner_state_at_sync),
            outer_state=walk(node.outer_state),
        )

    def walk(node: Any) -> Any:
        return jax.tree.map(visit, node, is_leaf=lambda x: isinstance(x, LookaheadState))

    return walk(tree)


def replica_axes(tree: Any, stacked: Any = 0, shared: Any = None) -> Any:
    """The ``in_axes`` (or ``PartitionSpec``) tree of a replicated state or params tree.

    Replicas hold their own params and optimizer state, as a leading replica axis
    on every leaf, except Lookahead's counters (``count`` and ``phase`` of every
    :class:`lookax.LookaheadState`, at any nesting depth: inside ``optax.chain``,
    ``optax.masked``, a nested Lookahead), which every replica shares: they decide
    the sync, so they must be replica-invariant for the sync to stay one
    ``lax.cond`` (batched counters under ``jax.vmap`` turn it into a select that
    runs both branches, and all-reduces, every step). Inner counters (Adam's
    step) are stacked like everything else: equal on every replica.

    Args:
      tree: an optimizer state (or params, or any tree containing them).
      stacked: what to put for a stacked leaf: ``0`` for ``jax.vmap``'s
        ``in_axes``/``out_axes``, ``P("replica")`` for ``jax.shard_map``.
      shared: what to put for Lookahead's counters: ``None`` for ``vmap``,
        ``P()`` for ``shard_map``.

    Returns:
      A tree with ``tree``'s structure holding ``stacked`` or ``shared`` per leaf.

    Example:
      >>> import jax, jax.numpy as jnp, optax, lookax
      >>> tx = optax.chain(optax.clip(1.0), lookax.diloco(optax.adam(1e-3), 4, replica_axis="r"))
      >>> state = lookax.stack_replicas(tx.init(jnp.zeros(3)), 2)
      >>> axes = lookax.replica_axes(state)
      >>> def step(p, s, g):
      ...     u, s = tx.update(g, s, p)
      ...     return optax.apply_updates(p, u), s
      >>> run = jax.vmap(step, in_axes=(0, axes, 0), out_axes=(0, axes), axis_name="r")
      >>> params, state = run(jnp.zeros((2, 3)), state, jnp.ones((2, 3)))
    """
    return _map_replica_leaves(tree, lambda _: stacked, lambda _: shared)


def stack_replicas(tree: Any, num_replicas: int) -> Any:
    """``tree`` (one replica's params or optimizer state) copied onto every replica.

    Every leaf gets a leading axis of size ``num_replicas`` (a broadcast: all
    replicas start identical, as they must), except Lookahead's counters, which
    the replicas share (see :func:`replica_axes`).

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = lookax.diloco(optax.adam(1e-3), 4, replica_axis="r")
      >>> state = lookax.stack_replicas(tx.init({"w": jnp.zeros(3)}), 4)
      >>> state.lagging_slow["w"].shape, state.count.shape
      ((4, 3), ())
    """
    check_replica_count(num_replicas)

    def stack(x: Any) -> jax.Array:
        return jnp.broadcast_to(x, (num_replicas, *jnp.shape(x)))

    return _map_replica_leaves(tree, stack, lambda x: x)


def diloco(
    inner: optax.GradientTransformation,
    sync_period: int = 500,
    outer_learning_rate: float | optax.Schedule = 0.7,
    outer_momentum: float = 0.9,
    *,
    replica_axis: Any = None,
    inner_state_on_sync: Literal["keep", "reset"] = "keep",
    sync_delay: int = 0,
    drop_nonfinite: bool | None = None,
    communication_dtype: Any = None,
    fragments: Any = 1,
) -> optax.GradientTransformationExtraArgs:
    r"""DiLoCo: replicas train apart for H steps, then one outer Nesterov step.

    Each of the :math:`M` replicas of the mapped axis ``replica_axis`` runs
    ``inner`` (the paper: AdamW) on its own data, with no communication, for
    :math:`H` = ``sync_period`` steps from the shared slow weights
    :math:`\phi`. Then, with :math:`\theta^{(m)}` replica :math:`m`'s params:

    .. math::

      \Delta &= \frac{1}{M} \sum_m \bigl(\phi - \theta^{(m)}\bigr)
          \quad\text{(one all-reduce every } H \text{ steps)} \\
      b &\leftarrow \mu b + \Delta, \qquad
      \phi \leftarrow \phi - \eta\,(\Delta + \mu b)
          \quad\text{(Nesterov SGD, as torch.optim.SGD)}

    and every replica restarts from :math:`\phi`, keeping its inner state. It is
    ``lookax.lookahead(inner, sync_period, outer=lookax.sgd(outer_learning_rate,
    momentum=outer_momentum, nesterov=True), replica_axis=replica_axis)``; read
    :func:`lookax.lookahead` for the cost and the rules (replicas start from
    identical params; the training step must not average gradients over
    ``replica_axis``).

    Args:
      inner: the inner optimizer, e.g. ``lookax.adamw(4e-4, weight_decay=0.1)``.
      sync_period: H, inner steps between syncs (the paper: 500).
      outer_learning_rate: :math:`\eta` (the paper: 0.7).
      outer_momentum: :math:`\mu` (the paper: 0.9).
      replica_axis: the mapped axis the replicas live on (a ``jax.shard_map``
        mesh axis or a ``jax.vmap`` ``axis_name``); ``None``: one replica.
      inner_state_on_sync: ``'keep'`` (the paper) or ``'reset'``.
      sync_delay: ``1`` overlaps the outer step with the next inner step
        (Streaming DiLoCo's overlap, tau = 1; the price of plain Lookahead);
        ``0`` (the paper) takes it at the sync call.
      drop_nonfinite: leave a replica with a non-finite pseudo-gradient out of
        the average (``None``: on), count it (:func:`lookax.replica_health`) and
        reset its inner state.
      communication_dtype: all-reduce the pseudo-gradient in this dtype (e.g.
        ``jnp.bfloat16``); ``None``: the slow weights' dtype.
      fragments: Streaming DiLoCo's fragments (Douillard et al. 2025): an int
        F, a tree of fragment ids or a callable; fragment ``i`` syncs at calls
        ``c`` with ``c % H == (i + 1) * H // F % H``. See
        :func:`lookax.lookahead` for the exact rules.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; evaluate on
      ``lookax.slow_params(state, params)``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, lookax
      >>> tx = lookax.diloco(lookax.adamw(1e-3), sync_period=4, replica_axis="replica")
      >>> params = lookax.stack_replicas(jnp.zeros(3), 4)  # 4 replicas, identical params
      >>> state = lookax.stack_replicas(tx.init(jnp.zeros(3)), 4)
      >>> axes = lookax.replica_axes(state)  # Lookahead's counters shared
      >>> def step(p, s, g):
      ...     u, s = tx.update(g, s, p)
      ...     return optax.apply_updates(p, u), s
      >>> run = jax.vmap(step, in_axes=(0, axes, 0), out_axes=(0, axes), axis_name="replica")
      >>> params, state = run(params, state, jnp.ones((4, 3)))

    References:
      Douillard et al., `DiLoCo: Distributed Low-Communication Training of
      Language Models <https://arxiv.org/abs/2311.08105>`_, 2023 (Algorithm 1);
      Douillard et al., `Streaming DiLoCo with overlapping communication
      <https://arxiv.org/abs/2501.18512>`_, 2025 (fragments, overlap).
    """
    outer = _outer_sgd(outer_learning_rate, outer_momentum, nesterov=True)
    return lookahead(
        inner,
        sync_period,
        outer=outer,
        replica_axis=replica_axis,
        inner_state_on_sync=inner_state_on_sync,
        sync_delay=sync_delay,
        drop_nonfinite=drop_nonfinite,
        communication_dtype=communication_dtype,
        fragments=fragments,
    )


def slowmo(
    inner: optax.GradientTransformation,
    sync_period: int = 12,
    outer_learning_rate: float | optax.Schedule = 1.0,
    outer_momentum: float = 0.5,
    *,
    replica_axis: Any = None,
    inner_state_on_sync: Literal["keep", "reset"] = "keep",
    sync_delay: int = 0,
    drop_nonfinite: bool | None = None,
    communication_dtype: Any = None,
    fragments: Any = 1,
) -> optax.GradientTransformationExtraArgs:
    r"""SlowMo: slow momentum on the averaged pseudo-gradient of every k steps.

    After :math:`\tau` = ``sync_period`` inner steps from the slow weights
    :math:`x_{t,0}` (with replicas: averaged over them, :math:`x_{t,\tau}`), the
    paper's Algorithm 1 with base learning rate :math:`\gamma`, slow learning
    rate :math:`\alpha` and slow momentum :math:`\beta` does

    .. math::

      u_{t+1} = \beta u_t + \frac{1}{\gamma}\bigl(x_{t,0} - x_{t,\tau}\bigr), \qquad
      x_{t+1,0} = x_{t,0} - \alpha\gamma\, u_{t+1}

    With a constant :math:`\gamma` this is SGD with momentum on the
    pseudo-gradient :math:`\Delta = x_{t,0} - x_{t,\tau}` (the buffer
    :math:`m = \gamma u`): :math:`m \leftarrow \beta m + \Delta`,
    :math:`x \leftarrow x - \alpha m`, i.e. ``lookax.lookahead(inner,
    sync_period, outer=lookax.sgd(outer_learning_rate,
    momentum=outer_momentum), replica_axis=replica_axis)``. (Under an inner
    learning-rate schedule the paper rescales the buffer by :math:`1/\gamma_t`;
    pass your own ``outer`` to :func:`lookax.lookahead` for that.) With one
    worker and :math:`\beta = 0` it is Lookahead with :math:`\alpha`.

    Args:
      inner: the base optimizer (the paper: SGD with Nesterov momentum, Adam).
      sync_period: :math:`\tau`, inner steps between syncs.
      outer_learning_rate: :math:`\alpha` (fairscale's SlowMo default: 1.0).
      outer_momentum: :math:`\beta` (fairscale's SlowMo default: 0.5).
      replica_axis: the mapped axis of the workers, or ``None``: one worker.
      inner_state_on_sync: ``'keep'`` or ``'reset'``.
      sync_delay: ``0`` or ``1``; drop_nonfinite: ``None`` (on) or a bool;
        communication_dtype: a dtype or ``None``; fragments: an int, tree or
        callable: as in :func:`diloco` and :func:`lookax.lookahead`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; evaluate on
      ``lookax.slow_params(state, params)``.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = lookax.slowmo(optax.sgd(0.1, momentum=0.9), sync_period=4)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)

    References:
      Wang, Tantia, Ballas, Rabbat, `SlowMo: Improving Communication-Efficient
      Distributed SGD with Slow Momentum <https://arxiv.org/abs/1910.00643>`_,
      ICLR 2020 (Algorithm 1).
    """
    outer = _outer_sgd(outer_learning_rate, outer_momentum, nesterov=False)
    return lookahead(
        inner,
        sync_period,
        outer=outer,
        replica_axis=replica_axis,
        inner_state_on_sync=inner_state_on_sync,
        sync_delay=sync_delay,
        drop_nonfinite=drop_nonfinite,
        communication_dtype=communication_dtype,
        fragments=fragments,
    )


def _outer_sgd(
    learning_rate: Any, momentum: Any, *, nesterov: bool
) -> optax.GradientTransformation:
    """The outer SGD, its arguments checked under the names the caller knows them by."""
    check_learning_rate(learning_rate, "outer_learning_rate")
    check_nonnegative("outer_momentum", momentum)
    return sgd(learning_rate, momentum=momentum, nesterov=nesterov)
