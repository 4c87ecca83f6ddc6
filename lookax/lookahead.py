"""Lookahead (Zhang, Lucas, Hinton, Ba 2019) over plain parameters.

The slow weights live in the optimizer state, so the user's params keep their
structure and every optax/Flax wrapper keeps working. The synchronization is a
``jax.lax.cond`` on a phase counter, so a training step compiles once and runs
on any backend.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lookax import outer as outer_path
from lookax._checks import (
    check_choice,
    check_floating_params,
    check_found,
    check_inner,
    check_inner_state,
    check_lookahead_state_type,
    check_outer,
    check_outer_options,
    check_params_given,
    check_replica_axis_name,
    check_same_structure,
    check_slow_step_size,
    check_slow_weights_line_up,
    check_state_dtype,
    check_state_type,
    check_sync_period,
    check_tree_structure,
    check_update_params,
    state_dtype_for,
)
from lookax._jax_compat import vary_like
from lookax._typing import ArrayTree as ArrayTree  # for get_type_hints: see _typing.py
from lookax._typing import gradient_transformation_extra_args, safe_increment
from lookax.grouping import GroupedState, ungroup

__all__ = [
    "InnerStateOnSync",
    "LookaheadState",
    "init_from_inner",
    "lookahead",
    "slow_params",
]

InnerStateOnSync = Literal["keep", "reset", "interpolate"]
_INNER_STATE_CHOICES = ("keep", "reset", "interpolate")
_STATE_TYPE_HINT = (
    "; is it another optimizer's state, or a checkpoint restored without a target? "
    "(restore into jax.eval_shape(tx.init, params))"
)


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`.

    Attributes:
      count: number of ``update`` calls so far (int32, saturating at its
        maximum); the step at which a ``slow_step_size`` schedule is evaluated.
      phase: steps since the last sync, in ``[0, sync_period)`` (int32). Sync
        timing depends on this counter alone, so it stays right forever.
      lagging_slow: the slow weights as last written, a tree with the params'
        structure. NOT the current slow weights: plain Lookahead writes them one
        call after a sync (the outer path with ``sync_delay=1`` too), so right after
        a sync this copy is one sync behind. Read the slow weights with
        :func:`lookax.slow_params`.
      inner_state: the inner optimizer's state.
      inner_state_at_sync: the inner state as it was after the last sync; kept
        only by ``inner_state_on_sync='interpolate'`` (``None`` otherwise).
      outer_state: on the outer path (``outer=`` or ``replica_axis=``) a
        :class:`lookax.OuterState`: the outer optimizer's state per fragment
        (changed only at that fragment's outer steps) and the replicas' fault
        counters; ``None`` for plain Lookahead, whose slow weights are written
        one call late.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
    phase: jax.Array
    lagging_slow: optax.Params
    inner_state: optax.OptState
    inner_state_at_sync: optax.OptState | None = None
    outer_state: optax.OptState | None = None


def lookahead(
    inner: optax.GradientTransformation,
    sync_period: int | jax.Array = 5,
    slow_step_size: float | jax.Array | optax.Schedule | None = None,
    *,
    inner_state_on_sync: InnerStateOnSync = "keep",
    slow_dtype: Any = None,
    outer: optax.GradientTransformation | None = None,
    replica_axis: Any = None,
    sync_delay: int = 0,
    drop_nonfinite: bool | None = None,
    communication_dtype: Any = None,
    fragments: Any = 1,
) -> optax.GradientTransformationExtraArgs:
    r"""Lookahead: k steps forward with ``inner``, then one step back (or an outer step).

    With fast weights :math:`\theta` (the params you hold), slow weights
    :math:`\phi` (kept in the state), sync period :math:`k` and slow step size
    :math:`\alpha_t`, each call does

    .. math::

      u_t &= \mathrm{inner}(g_t, \theta_t) \\
      \text{if } (t + 1) \bmod k \ne 0:&\quad \theta_{t+1} = \theta_t + u_t \\
      \text{else}:&\quad \phi \leftarrow \phi + \alpha_t (\theta_t + u_t - \phi),
          \quad \theta_{t+1} = \phi

    i.e. Algorithm 1 of the paper: the slow weights start equal to the initial
    params and move after steps k, 2k, 3k, ... By hand, with :math:`\theta_0=1`,
    gradient 1 every step, inner ``optax.sgd(0.1)``, k=3, alpha=0.5, the params
    after steps 1..7 are .9 .8 .85 .75 .65 .70 .60.

    Rules:

    - Evaluate on :func:`lookax.slow_params` ``(state, params)``, never on
      ``state.lagging_slow``: the slow weights are written one call after a sync (from
      the params the sync produced), so right after a sync ``state.lagging_slow`` is stale.
    - **Keep Lookahead the last transform that changes the updates**: a
      transform chained after it, or an edit of the params between calls, moves
      the params off the target and the slow weights follow them. Put clipping
      and the like inside (``lookahead(chain(clip, adam))``) or before it.
    - Off a sync the updates are the inner updates bitwise and the slow weights
      never change, NaN params included; at a sync, NaN propagates as in the paper.

    The outer path (``outer=`` or ``replica_axis=``; :func:`lookax.diloco`,
    :func:`lookax.slowmo`): the slow step becomes any optax transformation of the
    pseudo-gradient :math:`\Delta = \phi - (\theta + u)`,
    :math:`\phi \leftarrow \phi + \mathrm{outer}(\Delta)`, with :math:`\Delta`
    averaged over the replicas of a mapped axis by one all-reduce inside the sync
    branch. How it runs and what it costs: ``docs/design.md``; replicas, faults and
    fragments step by step: ``docs/replicas.md``.

    Args:
      inner: the inner ("fast") optimizer; extra ``update`` arguments are passed
        on. Gradient accumulation goes outside, so that Lookahead counts real
        steps: ``optax.MultiSteps(lookax.lookahead(inner, ...), n)``.
      sync_period: k, an integer >= 1.
      slow_step_size: alpha in [0, 1], or an optax schedule of the step count.
        Default 0.5; not allowed together with ``outer``.
      inner_state_on_sync: ``'keep'`` (the paper), ``'reset'`` (``inner.init``
        of the new params after every sync) or ``'interpolate'`` (the inner
        state's params-shaped parts move like the weights, counters continue).
      slow_dtype: precision of the slow weights; ``None`` keeps each param's
        dtype. A wider one (``jnp.float32`` over bf16 params) keeps unrounded
        slow weights: ``slow_params(state, params, keep_slow_dtype=True)``.
      outer: an optax transformation for the slow step, applied at each sync
        to the (replica-averaged) pseudo-gradient; ``None``: alpha's step.
      replica_axis: the name of the mapped axis the replicas live on, or ``None``.
      sync_delay: ``0`` (the outer step at the sync call) or ``1`` (at the next
        call, which returns :math:`u + (\phi' - \theta)`: plain Lookahead's price).
      drop_nonfinite: leave a replica whose pseudo-gradient is not finite out of
        the average, re-initialize its inner state and count it
        (:func:`lookax.replica_health`); ``None``: on.
      communication_dtype: a floating dtype to all-reduce the pseudo-gradient in
        (``jnp.bfloat16`` halves the bytes), or ``None`` (the slow weights').
      fragments: Streaming DiLoCo: ``1``, an int F (contiguous groups of leaves
        of about equal size), a tree of fragment ids ``0 .. F-1`` (the params'
        structure or a prefix), or a callable ``params -> such a tree``; fragment
        ``i`` syncs at calls ``c`` with ``c % k == (i + 1) * k // F % k``.

    ``sync_delay`` to ``fragments`` apply to the outer path only; it needs
    ``sync_delay`` and ``fragments`` static (``optax.inject_hyperparams(...,
    static_args=("sync_delay", "fragments"))``). Bad concrete arguments raise
    ``TypeError`` (a wrong type) or ``ValueError`` (a bad value) naming them.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`LookaheadState`. ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = lookax.lookahead(optax.sgd(0.1), sync_period=3, slow_step_size=0.5)
      >>> params = jnp.array(1.0)
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     updates, state = tx.update(jnp.array(1.0), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> print(f"{float(params):.2f} {float(lookax.slow_params(state, params)):.2f}")
      0.85 0.85

    References:
      Zhang, Lucas, Hinton, Ba, `Lookahead Optimizer: k steps forward, 1 step
      back <https://arxiv.org/abs/1907.08610>`_, NeurIPS 2019 (Algorithm 1).
    """
    slow_step_size, slow_dtype = _check_arguments(
        inner, sync_period, slow_step_size, inner_state_on_sync, slow_dtype, outer, replica_axis
    )
    inner = optax.with_extra_args_support(inner)
    check_update_arguments = functools.partial(_check_update_arguments, inner=inner)
    alpha_at = functools.partial(_alpha_at, slow_step_size)
    if outer is not None or replica_axis is not None:
        path = outer_path.OuterPath.of(
            inner,
            outer,
            alpha_at,
            sync_period,
            replica_axis,
            inner_state_on_sync,
            slow_dtype,
            sync_delay=sync_delay,
            drop_nonfinite=drop_nonfinite,
            communication_dtype=communication_dtype,
            fragments=fragments,
        )
        return outer_path.outer_lookahead(path, _copy_tree, check_update_arguments, LookaheadState)
    check_outer_options(
        sync_period, sync_delay, drop_nonfinite, communication_dtype, fragments, on_outer_path=False
    )
    return _plain_lookahead(
        _Plan(inner, sync_period, slow_step_size, inner_state_on_sync, slow_dtype)
    )


def _check_arguments(
    inner: Any,
    sync_period: Any,
    slow_step_size: Any,
    inner_state_on_sync: Any,
    slow_dtype: Any,
    outer: Any,
    replica_axis: Any,
) -> tuple[Any, Any]:
    """Checks ``lookahead``'s arguments; returns the slow step size and slow dtype to use."""
    check_inner(inner)
    check_sync_period(sync_period)
    if outer is not None:
        check_outer(outer, slow_step_size, inner_state_on_sync)
    elif slow_step_size is None:
        slow_step_size = 0.5
    if slow_step_size is not None:
        check_slow_step_size(slow_step_size)
    check_replica_axis_name(replica_axis)
    check_choice("inner_state_on_sync", inner_state_on_sync, _INNER_STATE_CHOICES)
    # A precision: complex params get the complex dtype of it, real params the real one.
    return slow_step_size, check_state_dtype("slow_dtype", slow_dtype)


def _check_update_arguments(
    updates: Any, state: Any, params: Any, inner: optax.GradientTransformation
) -> None:
    """``update``'s arguments: params given, and a state and trees that go together."""
    check_update_params(params)
    check_state_type("lookahead", state, LookaheadState, _STATE_TYPE_HINT)
    check_same_structure("lookahead", "updates", updates, "params", params)
    check_same_structure("lookahead", "params", params, "state.lagging_slow", state.lagging_slow)
    check_inner_state(inner, state.inner_state, params)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What plain Lookahead's ``init`` and ``update`` close over, fixed at construction.

    ``sync_period`` and ``slow_step_size`` may be arrays (``optax.inject_hyperparams``).
    """

    inner: optax.GradientTransformationExtraArgs
    sync_period: Any  # an int, or an array under optax.inject_hyperparams
    slow_step_size: Any  # a number, an array or a schedule of the step count
    inner_state_on_sync: str
    slow_dtype: Any

    def alpha(self, count: jax.Array) -> jax.Array:
        """The slow step size at step ``count``."""
        alpha = _alpha_at(self.slow_step_size, count)
        assert alpha is not None  # for type checkers: plain Lookahead has a slow step size
        return alpha

    def is_sync(self, state: LookaheadState) -> jax.Array:
        """Whether the call that starts from ``state`` ends a k-cycle."""
        is_sync: jax.Array = state.phase + 1 >= self.sync_period
        return is_sync


def _alpha_at(slow_step_size: Any, count: jax.Array) -> jax.Array | None:
    """The slow step size at ``count`` (None when an outer optimizer makes the slow step)."""
    if slow_step_size is None:
        return None
    value = slow_step_size(count) if callable(slow_step_size) else slow_step_size
    # real: inject_hyperparams over complex params stores alpha as a complex number
    return jnp.real(jnp.asarray(value))


def _plain_lookahead(plan: _Plan) -> optax.GradientTransformationExtraArgs:
    """Plain Lookahead's ``init`` and ``update``: catch up, inner step, the sync's updates."""

    def init_fn(params: optax.Params) -> LookaheadState:
        check_floating_params(params)
        inner_state = plan.inner.init(params)
        interpolate = plan.inner_state_on_sync == "interpolate"
        return LookaheadState(
            count=jnp.zeros([], jnp.int32),
            phase=jnp.zeros([], jnp.int32),
            lagging_slow=_copy_tree(params, plan.slow_dtype),
            inner_state=inner_state,
            inner_state_at_sync=_copy_tree(inner_state) if interpolate else None,
        )

    def update_fn(
        updates: optax.Updates,
        state: LookaheadState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, LookaheadState]:
        _check_update_arguments(updates, state, params, plan.inner)
        assert params is not None  # for type checkers: _check_update_arguments raised
        state = _catch_up(plan, state, params)
        inner_updates, inner_state = plan.inner.update(
            updates, state.inner_state, params, **extra_args
        )
        new_updates, slow = _sync_updates(plan, state, params, inner_updates)
        return new_updates, _advance(plan, state, slow, inner_state)

    return gradient_transformation_extra_args(init_fn, update_fn)


def _copy_tree(tree: Any, dtype: Any = None) -> Any:
    """Fresh buffers (never aliases), so params and state can both be donated.

    The dtype is always given explicitly, so a weakly-typed leaf (``jnp.array(1.0)``)
    gives a strongly-typed copy: the type ``update`` returns, so the state's type does
    not change after the first step and a jitted step does not compile twice.
    """

    def copy(x: Any) -> jax.Array:
        return jnp.array(x, dtype=state_dtype_for(dtype, jnp.result_type(x)), copy=True)

    return jax.tree.map(copy, tree)


def _catch_up(plan: _Plan, state: LookaheadState, params: optax.Params) -> LookaheadState:
    """The deferred half of the previous call's sync (an identity otherwise).

    Copies the params into the deferred slow weights, and resets or interpolates
    the inner state, inside one ``lax.cond`` on the counters.
    """

    def after_sync(operands: tuple[Any, Any, Any, Any]) -> tuple[Any, Any, Any]:
        params, slow, inner_state, at_sync = operands
        slow = jax.tree.map(lambda p, s: p if _is_deferred(p, s) else s, params, slow)
        if plan.inner_state_on_sync == "reset":
            inner_state = _reset_like(plan.inner.init(params), inner_state)
        elif plan.inner_state_on_sync == "interpolate":
            alpha = plan.alpha(state.count - 1)  # the sync step's count
            inner_state = _interpolate_params_like(inner_state, at_sync, alpha, params)
            at_sync = inner_state
        return slow, inner_state, at_sync

    if plan.inner_state_on_sync == "keep":
        # Only what the copy changes crosses the cond: params and slow weights.
        pairs = zip(jax.tree.leaves(params), jax.tree.leaves(state.lagging_slow), strict=True)
        if not any(_is_deferred(p, s) for p, s in pairs):
            return state
        slow, _, _ = jax.lax.cond(
            _sync_pending(state),
            after_sync,
            lambda ops: ops[1:],
            (params, state.lagging_slow, (), ()),
        )
        return state._replace(lagging_slow=slow)
    slow, inner_state, at_sync = jax.lax.cond(
        _sync_pending(state),
        after_sync,
        lambda ops: ops[1:],
        (params, state.lagging_slow, state.inner_state, state.inner_state_at_sync),
    )
    return state._replace(lagging_slow=slow, inner_state=inner_state, inner_state_at_sync=at_sync)


def _sync_pending(state: LookaheadState) -> jax.Array:
    """Whether the last ``update`` call was a sync whose slow write is still to come.

    A sync resets ``phase`` to 0, and ``phase`` is 0 otherwise only before the
    first call (``count`` is 0 there and saturates, never wraps back to 0).
    """
    # asarray: an nnx.Optimizer holds the counters wrapped in nnx variables.
    return (jnp.asarray(state.phase) == 0) & (jnp.asarray(state.count) > 0)


def _is_deferred(param: Any, slow: Any) -> bool:
    """A leaf whose slow weight is taken from the params one call after a sync.

    That is every leaf whose slow dtype is its param's dtype. A wider (or
    otherwise different) slow dtype holds the unrounded target, which the params
    cannot give back, so that leaf is written during the sync call instead.
    """
    return jnp.result_type(slow) == jnp.result_type(param)


def _reset_like(fresh: Any, current: Any) -> Any:
    """Fresh inner state, each leaf given the type of the leaf it replaces.

    ``lax.cond`` needs both branches to agree on types; the cast also keeps
    weakly-typed initial values from widening the state. Inside ``shard_map``
    the type includes the mesh axes a value varies over: an ``init`` that
    builds a leaf from constants (``jnp.full(shape, v)`` rather than
    ``jnp.full_like(param, v)``) gives a device-invariant value, so it is cast
    to vary like the leaf it replaces.
    """

    def like(new: Any, old: Any) -> Any:
        return vary_like(jnp.asarray(new, dtype=jnp.result_type(old)), old)

    return jax.tree.map(like, fresh, current)


def _interpolate_params_like(
    current: optax.OptState,
    at_last_sync: optax.OptState,
    alpha: jax.Array,
    params: optax.Params,
) -> optax.OptState:
    is_params_like = _params_like_predicate(params)

    def move(now: Any, before: Any) -> Any:
        if not is_params_like(now):
            return now
        return jax.tree.map(
            lambda s, s0: (s0 + alpha.astype(s.dtype) * (s - s0)).astype(s.dtype), now, before
        )

    moved: optax.OptState = jax.tree.map(move, current, at_last_sync, is_leaf=is_params_like)
    return moved


def _params_like_predicate(params: optax.Params) -> Callable[[Any], bool]:
    """Matches subtrees of an optimizer state laid out like ``params``.

    A subtree matches when it has the params' tree structure and every leaf is a
    floating array of its param's shape: the moments of Adam, the momentum of
    SGD and so on. Counters and injected hyperparameters do not match (unless the
    params are themselves a single scalar, where the two cannot be told apart).

    Not ``optax.tree.map_params``: it finds those parts by running ``inner.init``
    on a placeholder, which raises for an init that reads the params' leaves
    (``lookax.grouped``'s plan, ``optax.lbfgs``), so that 'interpolate' would fail
    at the first sync where this predicate leaves such a state as it is.
    """
    params_def = jax.tree.structure(params)
    params_shapes = [jnp.shape(p) for p in jax.tree.leaves(params)]

    def is_params_like(node: Any) -> bool:
        treedef: Any  # jaxlib ships no type stubs for PyTreeDef
        leaves, treedef = jax.tree.flatten(node)
        if treedef != params_def:
            return False
        return all(
            jnp.shape(leaf) == shape and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
            for leaf, shape in zip(leaves, params_shapes, strict=True)
        )

    return is_params_like


def _sync_updates(
    plan: _Plan, state: LookaheadState, params: Any, inner_updates: Any
) -> tuple[Any, Any]:
    """The returned updates ``where(is_sync, d, u)``, and the slow weights after.

    Deferred leaves read the slow weights and leave them as they are. Leaves with a
    wider slow dtype get their new slow weights from a ``lax.cond`` that takes the
    inner updates, and the updates toward them.
    """
    is_sync, alpha = plan.is_sync(state), plan.alpha(state.count)
    treedef: Any  # jaxlib ships no type stubs for PyTreeDef
    p_leaves, treedef = jax.tree.flatten(params)
    u_leaves = treedef.flatten_up_to(inner_updates)
    s_leaves = list(treedef.flatten_up_to(state.lagging_slow))
    eager = [
        i for i, (p, s) in enumerate(zip(p_leaves, s_leaves, strict=True)) if not _is_deferred(p, s)
    ]
    if eager:

        def sync_now(operands: tuple[list[Any], list[Any], list[Any]]) -> list[Any]:
            p, u, s = operands
            new = [_target(alpha, pi, ui, si) for pi, ui, si in zip(p, u, s, strict=True)]
            # Inside shard_map the branches must agree on which mesh axes values vary over.
            return list(vary_like(new, s))

        new_eager = jax.lax.cond(
            is_sync,
            sync_now,
            lambda operands: operands[2],
            tuple([leaves[i] for i in eager] for leaves in (p_leaves, u_leaves, s_leaves)),
        )
        for i, new in zip(eager, new_eager, strict=True):
            s_leaves[i] = new
    eager_set = set(eager)
    out = []
    for i, (p, u, s) in enumerate(zip(p_leaves, u_leaves, s_leaves, strict=True)):
        target = s if i in eager_set else _target(alpha, p, u, s)
        # In the inner update's dtype, which can be wider than the params' (float32
        # hyperparameters injected over bf16 params); the widening is exact.
        toward_target = (target - p).astype(p.dtype).astype(u.dtype)
        out.append(jnp.where(is_sync, toward_target, u))
    return jax.tree.unflatten(treedef, out), jax.tree.unflatten(treedef, s_leaves)


def _target(alpha: jax.Array, param: Any, update: Any, slow: jax.Array) -> jax.Array:
    fast: jax.Array = (param + update).astype(slow.dtype)
    return slow + alpha.astype(slow.dtype) * (fast - slow)


def _advance(
    plan: _Plan, state: LookaheadState, slow: Any, inner_state: optax.OptState
) -> LookaheadState:
    """The state after this call: counters moved on, the new slow and inner states."""
    at_sync = state.inner_state_at_sync
    if plan.inner_state_on_sync == "interpolate":
        # An inner state whose types change on its first update (bf16 moments promoted
        # by float32 injected hyperparameters) keeps its copy's types in step, so the
        # next call's cond sees one type in both branches and the state's type is fixed.
        at_sync = _reset_like(at_sync, inner_state)
    return LookaheadState(
        count=safe_increment(state.count),
        phase=jnp.where(plan.is_sync(state), 0, state.phase + 1).astype(jnp.int32),
        lagging_slow=slow,
        inner_state=inner_state,
        inner_state_at_sync=at_sync,
    )


def init_from_inner(
    tx: optax.GradientTransformation,
    params: optax.Params,
    inner_state: optax.OptState,
) -> LookaheadState:
    """Starts Lookahead mid-run from an existing inner optimizer state.

    The slow weights start as a copy of the current ``params`` (a fresh k-cycle
    with count 0), and the inner optimizer carries on from ``inner_state``, so
    switching a running ``inner`` to ``lookahead(inner, ...)`` changes nothing
    until the first sync, k steps later.

    Args:
      tx: the ``lookahead(inner, ...)`` transformation to continue with.
      params: the current params (fast weights).
      inner_state: the state of ``inner`` as the running training left it.

    Returns:
      A :class:`LookaheadState` to use with ``tx.update``. To finish training on
      the slow weights, export ``lookax.slow_params(state, params)``.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> inner = optax.adam(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> inner_state = inner.init(params)  # ... after some training
      >>> tx = lookax.lookahead(inner, sync_period=5)
      >>> state = lookax.init_from_inner(tx, params, inner_state)
    """
    fresh = check_lookahead_state_type(tx.init(params), LookaheadState)
    expected = jax.tree.structure(fresh.inner_state)
    check_tree_structure(
        "init_from_inner", "inner_state", inner_state, "the inner optimizer's state", expected
    )
    at_sync = None if fresh.inner_state_at_sync is None else _copy_tree(inner_state)
    return fresh._replace(inner_state=inner_state, inner_state_at_sync=at_sync)


def _is_masked_node(node: Any) -> bool:
    return isinstance(node, optax.MaskedNode)


def _outermost_lookahead_states(opt_state: optax.OptState) -> list[LookaheadState]:
    """The outermost LookaheadStates, with the slow weights of grouped ones ungrouped."""
    found = []
    is_stop = lambda node: isinstance(node, LookaheadState | GroupedState)  # noqa: E731
    for node in jax.tree.leaves(opt_state, is_leaf=is_stop):
        if isinstance(node, LookaheadState):
            found.append(node)
        elif isinstance(node, GroupedState):
            found.extend(
                inner._replace(lagging_slow=ungroup(node, inner.lagging_slow))
                for inner in _outermost_lookahead_states(node.inner_state)
            )
    return found


def slow_params(
    opt_state: optax.OptState, params: optax.Params, *, keep_slow_dtype: bool = False
) -> Any:
    r"""The current slow weights of the Lookahead inside ``opt_state``, as a full params tree.

    Searches any (nested) optimizer state: ``optax.chain``, ``optax.masked``,
    ``optax.multi_transform``, ``inject_hyperparams``, ``MultiSteps``,
    :func:`lookax.grouped` (whose buffers it cuts back into the params' leaves), a
    Flax ``TrainState.opt_state`` or the state of an ``nnx.Optimizer``. For nested
    Lookahead it returns the outermost slow weights. This is what a model is
    evaluated on, as optax's ``schedule_free_eval_params(state, params)``.

    ``params`` is required: Lookahead writes the slow weights one call after a
    sync (the deferred slow write, see :func:`lookax.lookahead`), and until then
    they are the params. Per leaf the result is
    :math:`\mathrm{where}(\text{sync pending}, \theta, \phi)` where Lookahead
    runs, and the params elsewhere, in the params' dtypes. It is jit- and
    vmap-friendly (with batched counters the choice is made per batch element).

    Wider slow weights (``lookahead(..., slow_dtype=jnp.float32)`` over bf16
    params) hold the unrounded target; by default they come back rounded to the
    params' dtype, the model one evaluates. ``keep_slow_dtype=True`` returns them
    in their own dtype instead (e.g. to export float32 weights, or to continue
    from them); leaves where no Lookahead runs are the params either way.

    Args:
      opt_state: an optimizer state containing at least one ``LookaheadState``.
      params: the current params (the fast weights the state was updated with).
      keep_slow_dtype: return each slow leaf in the slow weights' dtype
        (``slow_dtype``) rather than cast to its param's dtype.

    Returns:
      A tree with the params' structure and shapes; the params' dtypes, or with
      ``keep_slow_dtype=True`` the slow weights' dtypes where Lookahead runs.

    Raises:
      TypeError: if ``params`` is ``None``.
      ValueError: if ``opt_state`` holds no ``LookaheadState``, or the slow
        weights do not line up with ``params``.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0), lookax.lookahead(optax.adam(1e-3)))
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> eval_params = lookax.slow_params(state, params)

      Float32 slow weights over bf16 params, in float32:

      >>> tx = lookax.lookahead(optax.adam(1e-3), slow_dtype=jnp.float32)
      >>> params = {"w": jnp.ones(3, jnp.bfloat16)}
      >>> state = tx.init(params)
      >>> lookax.slow_params(state, params, keep_slow_dtype=True)["w"].dtype
      dtype('float32')
    """
    check_params_given(
        "slow_params(opt_state, params)",
        params,
        "Lookahead writes the slow weights one update call after a sync, and until then they "
        "are the params",
    )
    found = _outermost_lookahead_states(opt_state)
    check_found(
        "slow_params", found, "LookaheadState", "is lookax.lookahead(...) part of this optimizer?"
    )
    base_leaves, base_def = jax.tree.flatten(params, is_leaf=_is_masked_node)
    merged = list(base_leaves)
    for state in found:
        slow_leaves, slow_def = jax.tree.flatten(state.lagging_slow, is_leaf=_is_masked_node)
        check_slow_weights_line_up(slow_leaves, slow_def, base_leaves, base_def)
        # Written at the sync (outer optimizer, replicas): never pending.
        pending = _sync_pending(state) if state.outer_state is None else None
        for i, (slow, param) in enumerate(zip(slow_leaves, base_leaves, strict=True)):
            if not _is_masked_node(slow):
                merged[i] = _current_slow_leaf(pending, param, slow, keep_slow_dtype)
    return jax.tree.unflatten(base_def, merged)


def _current_slow_leaf(
    pending: jax.Array | None, param: Any, slow: Any, keep_slow_dtype: bool = False
) -> jax.Array:
    if pending is None or not _is_deferred(param, slow):
        stored: jax.Array = jnp.asarray(slow)
        return stored if keep_slow_dtype else stored.astype(jnp.result_type(param))
    # With batched counters (jax.vmap over seeds) ``pending`` has the leading axes.
    pending = jnp.reshape(pending, pending.shape + (1,) * (jnp.ndim(slow) - pending.ndim))
    return jnp.where(pending, param, slow)
