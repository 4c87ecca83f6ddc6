"""Lookahead's outer path: an outer optimizer, replicas, faults, fewer bits, fragments.

Plain Lookahead (``lookax/lookahead.py``) moves the slow weights by
``alpha * (fast - slow)``: one SGD step of size alpha on the pseudo-gradient
``delta = slow - fast``. ``lookax.lookahead(..., outer=tx)`` or ``replica_axis=name``
builds the transformation of this module instead, which generalizes that step:

- ``outer``: any optax transformation makes the slow step (SlowMo, DiLoCo);
- ``replica_axis``: the replicas of a mapped axis average ``delta`` with one
  all-reduce inside the sync branch;
- ``sync_delay=1``: the outer step overlapped with the next inner step, so the
  inner updates never cross a ``lax.cond`` (the price of plain Lookahead);
- ``drop_nonfinite``: a replica whose ``delta`` is not finite is left out of the
  average and counted in :class:`OuterState`;
- ``communication_dtype``: ``delta`` is all-reduced in that dtype;
- ``fragments``: the params sync in F groups at staggered calls (Streaming DiLoCo),
  each with its own outer state, all-reduce and conditional branch.

How one ``update`` call runs, in order: the due fragments' outer steps (with
``sync_delay=1``: the fragments whose sync was the previous call), the inner state
reset of replicas the previous call's outer step left out (and of every replica
after a sync with ``inner_state_on_sync='reset'``), the inner update, the due fragments' outer
steps (``sync_delay=0``: the fragments that sync at this call), and the returned
updates, a select per leaf that XLA fuses into ``optax.apply_updates``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lookax._checks import (
    check_floating_params,
    check_found,
    check_fragment_count,
    check_fragment_ids,
    check_outer_options,
    check_outer_path_inner_state,
    check_period_divisible,
    check_replica_axis,
)
from lookax._jax_compat import vary_like, varying_axes
from lookax._typing import ArrayTree as ArrayTree  # for get_type_hints: see _typing.py
from lookax._typing import gradient_transformation_extra_args, safe_increment

__all__ = ["OuterState", "ReplicaHealth", "replica_health"]


class OuterState(NamedTuple):
    """The outer path's part of a :class:`lookax.LookaheadState` (its ``outer_state``).

    Attributes:
      per_fragment: the outer optimizer's state of each fragment (one entry
        without fragments); ``optax.EmptyState()`` where Lookahead's own
        ``alpha`` step is the outer step.
      dropped: int32, per replica: the outer steps (fragment syncs) this
        replica's non-finite pseudo-gradient was left out of.
      left_out: bool, per replica: whether the last outer step left it out.
      diverged: int32: the outer steps at which the replicas' slow weights
        disagreed before the step (replicas started from different params).
    """

    per_fragment: tuple[optax.OptState, ...]
    dropped: jax.Array
    left_out: jax.Array
    diverged: jax.Array


class ReplicaHealth(NamedTuple):
    """What :func:`replica_health` reads from an optimizer state (see :class:`OuterState`)."""

    dropped: jax.Array
    left_out: jax.Array
    diverged: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class OuterPath:
    """The static choices of the outer path, fixed at construction."""

    inner: optax.GradientTransformationExtraArgs
    outer: optax.GradientTransformation | None
    alpha_at: Callable[[jax.Array], jax.Array | None]
    sync_period: Any
    replica_axis: Any
    sync_delay: int
    drop_nonfinite: bool
    communication_dtype: Any
    fragments: Any
    reset_inner: bool
    slow_dtype: Any

    @classmethod
    def of(
        cls,
        inner: optax.GradientTransformationExtraArgs,
        outer: optax.GradientTransformation | None,
        alpha_at: Callable[[jax.Array], jax.Array | None],
        sync_period: Any,
        replica_axis: Any,
        inner_state_on_sync: str,
        slow_dtype: Any,
        **options: Any,
    ) -> OuterPath:
        """The path ``lookahead``'s arguments describe, checked (an error naming a bad one)."""
        sync_delay, fragments = check_outer_options(sync_period, **options, on_outer_path=True)
        check_outer_path_inner_state(inner_state_on_sync, fragments)
        drop = options["drop_nonfinite"]
        return cls(
            inner=inner,
            outer=outer,
            alpha_at=alpha_at,
            sync_period=sync_period,
            replica_axis=replica_axis,
            sync_delay=sync_delay,
            drop_nonfinite=True if drop is None else drop,
            communication_dtype=options["communication_dtype"],
            fragments=fragments,
            reset_inner=inner_state_on_sync == "reset",
            slow_dtype=slow_dtype,
        )


def outer_lookahead(
    path: OuterPath,
    copy_tree: Callable[[Any, Any], Any],
    check_update_arguments: Callable[[Any, Any, Any], None],
    state_type: Any,
) -> optax.GradientTransformationExtraArgs:
    """The transformation ``lookax.lookahead`` returns on the outer path."""

    def init_fn(params: optax.Params) -> Any:
        check_floating_params(params)
        plan = FragmentPlan.of(path.fragments, params, path.sync_period)
        slow = copy_tree(params, path.slow_dtype)
        slow_leaves = jax.tree.leaves(slow)
        per_fragment = tuple(
            optax.EmptyState() if path.outer is None else path.outer.init(plan.tree(i, slow_leaves))
            for i in range(plan.count)
        )

        # A fresh buffer per counter: a training step may donate the whole state.
        def zero(dtype: Any = jnp.int32) -> jax.Array:
            return jnp.zeros([], dtype)

        return state_type(
            count=zero(),
            phase=zero(),
            lagging_slow=slow,
            inner_state=path.inner.init(params),
            outer_state=OuterState(per_fragment, zero(), zero(jnp.bool_), zero()),
        )

    def update_fn(
        updates: optax.Updates, state: Any, params: optax.Params | None = None, **extra_args: Any
    ) -> tuple[optax.Updates, Any]:
        check_update_arguments(updates, state, params)
        check_replica_axis(path.replica_axis)
        plan = FragmentPlan.of(path.fragments, params, path.sync_period)
        call = _Call(path, plan, Clock.of(state, path.sync_period, plan.count))

        def inner_step(inner_state: Any) -> tuple[Any, Any]:
            return path.inner.update(updates, inner_state, params, **extra_args)

        if path.sync_delay == 1:
            return _overlapped_update(call, inner_step, state, params)
        return _exact_update(call, inner_step, state, params)

    return gradient_transformation_extra_args(init_fn, update_fn)


class _Call(NamedTuple):
    """One ``update`` call on the outer path: its static choices, fragments and clock."""

    path: OuterPath
    plan: FragmentPlan
    clock: Clock


_InnerStep = Callable[[Any], tuple[Any, Any]]  # inner state -> (inner updates, inner state)


def _exact_update(call: _Call, inner_step: _InnerStep, state: Any, params: Any) -> tuple[Any, Any]:
    """``sync_delay=0``: a fragment's outer step at its sync call, on ``params + u``."""
    inner_state = _reset_inner_state(call, state.outer_state.left_out, state, params)
    u, inner_state = inner_step(inner_state)
    treedef: Any  # jaxlib ships no type stubs for PyTreeDef
    p, treedef = jax.tree.flatten(params)
    slow, outer_state, updates = _outer_steps(call, (p, treedef.flatten_up_to(u)), state)
    new_state = call.clock.advance(state, treedef.unflatten(slow), inner_state, outer_state)
    return treedef.unflatten(updates), new_state


def _overlapped_update(
    call: _Call, inner_step: _InnerStep, state: Any, params: Any
) -> tuple[Any, Any]:
    """``sync_delay=1``: a fragment's outer step at the call after its sync, on the params.

    The sync call returns the inner updates (the params become the fast weights);
    the pending call takes the outer step in a ``lax.cond`` that sees only the
    params, the slow weights and the outer state, and returns ``u + (slow' - params)``.
    """
    treedef: Any  # jaxlib ships no type stubs for PyTreeDef
    p, treedef = jax.tree.flatten(params)
    left_out = state.outer_state.left_out  # by the outer step of the previous call
    slow, outer_state, _ = _outer_steps(call, (p,), state)
    state = state._replace(lagging_slow=treedef.unflatten(slow), outer_state=outer_state)
    inner_state = _reset_inner_state(call, left_out, state, params)
    u, inner_state = inner_step(inner_state)
    u_leaves = treedef.flatten_up_to(u)
    pending, ids = call.clock.pending, call.plan.ids
    out = [
        jnp.where(pending[ids[j]], uj + _toward(s, pj, uj), uj)
        for j, (pj, uj, s) in enumerate(zip(p, u_leaves, slow, strict=True))
    ]
    return jax.tree.unflatten(treedef, out), call.clock.advance(
        state, state.lagging_slow, inner_state, outer_state
    )


def _toward(slow: jax.Array, param: jax.Array, update: jax.Array) -> jax.Array:
    """``slow - param`` in the params' dtype, then the update's (which may be wider)."""
    return (slow - param.astype(slow.dtype)).astype(param.dtype).astype(update.dtype)


# --- The clock: which fragment syncs, and which one is pending, at this call -------------


class Clock(NamedTuple):
    """Per fragment, whether this call is its sync and whether it is the call after it.

    Calls ``c = 1, 2, ...`` (``c = count + 1``, ``phase = (c - 1) % H``): fragment
    ``i`` of F syncs when ``c % H == (i + 1) * H // F % H``, i.e. when ``phase ==
    (i + 1) * H // F - 1``; fragment F-1 syncs at H, 2H, ... as the whole model does.
    """

    sync: list[jax.Array]
    pending: list[jax.Array]
    after_pending: list[jax.Array]
    period: Any

    @classmethod
    def of(cls, state: Any, sync_period: Any, fragments: int) -> Clock:
        phase, count = jnp.asarray(state.phase), jnp.asarray(state.count)
        period = jnp.asarray(sync_period)
        sync, pending, after_pending = [], [], []
        for i in range(fragments):
            sync_phase = (i + 1) * period // fragments - 1
            last = i == fragments - 1
            sync.append(phase + 1 >= sync_period if last else phase == sync_phase)
            pending.append((phase == (sync_phase + 1) % period) & (count > 0))
            after_pending.append((phase == (sync_phase + 2) % period) & (count > 1))
        return cls(sync, pending, after_pending, sync_period)

    @staticmethod
    def any(flags: list[jax.Array]) -> jax.Array:
        out = flags[0]
        for flag in flags[1:]:
            out = out | flag
        return out

    def advance(self, state: Any, slow: Any, inner_state: Any, outer_state: OuterState) -> Any:
        is_last = jnp.asarray(state.phase) + 1 >= self.period
        return state._replace(
            count=safe_increment(jnp.asarray(state.count)),
            phase=jnp.where(is_last, 0, jnp.asarray(state.phase) + 1).astype(jnp.int32),
            lagging_slow=slow,
            inner_state=inner_state,
            outer_state=outer_state,
        )


# --- Fragments ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FragmentPlan:
    """Which fragment each params leaf (in ``jax.tree.leaves`` order) belongs to."""

    ids: tuple[int, ...]
    count: int
    treedef: Any

    @classmethod
    def of(cls, fragments: Any, params: Any, sync_period: Any) -> FragmentPlan:
        leaves, treedef = jax.tree.flatten(params)
        if isinstance(fragments, int):
            ids = _contiguous_fragments(fragments, [jnp.size(x) for x in leaves])
        else:
            ids = check_fragment_ids(
                fragments(params) if callable(fragments) else fragments, params
            )
        count = max(ids, default=0) + 1
        check_period_divisible(sync_period, count)
        return cls(tuple(ids), count, treedef)

    def members(self, i: int) -> list[int]:
        return [j for j, f in enumerate(self.ids) if f == i]

    def tree(self, i: int, leaves: Sequence[Any], only: bool = False) -> Any:
        """Fragment ``i``'s leaves in the params' structure, ``optax.MaskedNode`` elsewhere.

        ``leaves`` are every leaf (``only=False``) or fragment ``i``'s alone (``only=True``).
        """
        if self.count == 1:
            return self.treedef.unflatten(list(leaves))
        members = iter(leaves) if only else None
        full = []
        for j, f in enumerate(self.ids):
            if f != i:
                full.append(optax.MaskedNode())
            else:
                full.append(next(members) if members is not None else leaves[j])
        return self.treedef.unflatten(full)


def _contiguous_fragments(fragments: int, sizes: list[int]) -> list[int]:
    """F contiguous groups of leaves of about equal element count, none empty.

    A leaf goes to the fragment its midpoint falls in: leaf j, after ``before_j``
    elements, has midpoint ``before_j + size_j / 2`` and goes to fragment
    ``floor(F * midpoint / total)``; then each boundary moves just enough that every
    fragment keeps at least one leaf.
    """
    check_fragment_count(fragments, len(sizes))
    total = max(sum(sizes), 1)
    ids, before = [], 0
    for size in sizes:
        ids.append(min(fragments - 1, int(fragments * (before + size / 2) // total)))
        before += size
    # Each fragment i starts at the first leaf of id >= i, clamped so that fragment i
    # starts after fragment i-1 and leaves a leaf for every later fragment.
    starts = [0]
    for i in range(1, fragments):
        natural = next((j for j, f in enumerate(ids) if f >= i), len(ids))
        starts.append(min(max(natural, starts[-1] + 1), len(ids) - (fragments - i)))
    out = []
    for i in range(fragments):
        end = starts[i + 1] if i + 1 < fragments else len(ids)
        out += [i] * (end - starts[i])
    return out


# --- The outer steps ---------------------------------------------------------------------


def _outer_steps(
    call: _Call, fast_parts: tuple[list[Any], ...], state: Any
) -> tuple[list[Any], OuterState, list[Any] | None]:
    """Each due fragment's outer step, inside conditionals.

    A fragment is due at its sync call (``sync_delay=0``) or at the call after it
    (``sync_delay=1``), with the slow step size of its sync call.

    ``fast_parts`` add up to the fast weights: ``(params,)`` (the overlapped step)
    or ``(params, u)`` (the exact step). Per fragment a first ``lax.cond`` checks
    the replicas (scalars out: finite pseudo-gradients, how many, agreeing slow
    weights), then a second one, taken when the fragment is due and some replica
    is finite, makes the outer step. Only the fragment's leaves, its outer state
    and scalars cross them. The exact step's second cond also returns the
    fragment's updates (``slow' - params`` after its outer step, ``u`` otherwise).

    Returns:
      The slow weights' leaves, the outer state, and the updates' leaves (exact
      step) or None.
    """
    path, plan = call.path, call.plan
    due = call.clock.pending if path.sync_delay == 1 else call.clock.sync
    alpha = path.alpha_at(state.count - 1 if path.sync_delay == 1 else state.count)
    slow = list(jax.tree.leaves(state.lagging_slow))
    outer_state: OuterState = state.outer_state
    per_fragment = list(outer_state.per_fragment)
    health = (outer_state.dropped, outer_state.left_out, outer_state.diverged)
    updates = list(fast_parts[1]) if len(fast_parts) == 2 else None
    for i in range(plan.count):
        members = plan.members(i)
        step = _FragmentStep(path, plan, i, alpha)
        parts = tuple([part[j] for j in members] for part in fast_parts)
        slow_i = [slow[j] for j in members]
        ok, contributors, health = step.check(due[i], parts, slow_i, health)
        new_slow, per_fragment[i], *landing = jax.lax.cond(
            due[i],
            step.unless_none_finite,
            lambda ops: (ops[1], ops[2], *ops[0][1:]),  # the exact step: u
            (parts, slow_i, per_fragment[i], ok, contributors),
        )
        for k, j in enumerate(members):
            slow[j] = new_slow[k]
            if updates is not None:
                updates[j] = landing[0][k]
    return slow, OuterState(tuple(per_fragment), *health), updates


@dataclasses.dataclass(frozen=True, eq=False)
class _FragmentStep:
    """Fragment ``index``'s sync: check the replicas, average, one outer step."""

    path: OuterPath
    plan: FragmentPlan
    index: int
    alpha: jax.Array | None

    def check(
        self, due: jax.Array, fast_parts: Any, slow: list[Any], health: tuple[Any, ...]
    ) -> tuple[jax.Array, jax.Array, tuple[Any, ...]]:
        """(this replica is finite, how many are, the health counters after).

        A ``lax.cond`` on ``due``: it reads the fragment and all-reduces scalars.
        Without replicas and without the finite check there is nothing to check.
        """
        axis = self.path.replica_axis
        if not self.path.drop_nonfinite and axis is None:
            return jnp.asarray(True), jnp.asarray(1, jnp.int32), health

        def run(operands: Any) -> Any:
            fast_parts, slow, (dropped, _, diverged) = operands
            ok = self._finite(self._delta(fast_parts, slow))
            counters = (
                dropped + (~ok).astype(jnp.int32),
                ~ok,
                diverged + self._slow_weights_disagree(slow),
            )
            # Inside shard_map the branches must agree on which mesh axes values vary over.
            return vary_like(ok, health[1]), self._contributors(ok), vary_like(counters, health)

        def skip(operands: Any) -> Any:
            return vary_like(jnp.asarray(True), health[1]), jnp.asarray(0, jnp.int32), health

        checked: tuple[jax.Array, jax.Array, tuple[Any, ...]]
        checked = jax.lax.cond(due, run, skip, (fast_parts, slow, health))
        return checked

    def unless_none_finite(self, operands: Any) -> Any:
        """The outer step, skipped (the exact step: updates ``u``) with no finite replica.

        A cond of its own inside the sync branch: under ``jax.vmap`` inside
        ``jax.shard_map`` the count can come out batched, and the cond a select.
        """
        if not self.path.drop_nonfinite:
            return self(operands)
        return jax.lax.cond(
            operands[4] > 0, self, lambda ops: (ops[1], ops[2], *ops[0][1:]), operands
        )

    def __call__(self, operands: Any) -> Any:
        """The average of the finite replicas' ``delta`` (one all-reduce), then the outer step."""
        fast_parts, slow, outer_state, ok, contributors = operands
        path = self.path
        delta = self._delta(fast_parts, slow)
        if path.drop_nonfinite:
            delta = [jnp.where(ok, d, jnp.zeros([], d.dtype)) for d in delta]
        sent = delta
        if path.communication_dtype is not None:
            sent = [d.astype(_wire_dtype(path.communication_dtype, d.dtype)) for d in delta]
        total = sent if path.replica_axis is None else jax.lax.psum(sent, path.replica_axis)
        mean = [
            t.astype(d.dtype) / jnp.maximum(contributors, 1).astype(d.dtype)
            for t, d in zip(total, delta, strict=True)
        ]
        new_slow, new_outer = self._apply((mean, slow, outer_state))
        # Inside shard_map the branches must agree on which mesh axes values vary over.
        new_slow, new_outer = vary_like((new_slow, new_outer), (slow, outer_state))
        return (new_slow, new_outer, *self._landing(fast_parts, new_slow))

    @staticmethod
    def _landing(fast_parts: tuple[list[Any], ...], slow: list[Any]) -> tuple[list[Any], ...]:
        """The exact step's updates, from the params onto the slow weights (else nothing)."""
        if len(fast_parts) != 2:
            return ()
        params, inner_updates = fast_parts
        toward = [_toward(s, p, u) for s, p, u in zip(slow, params, inner_updates, strict=True)]
        return (vary_like(toward, inner_updates),)

    @staticmethod
    def _delta(fast_parts: tuple[list[Any], ...], slow: list[Any]) -> list[jax.Array]:
        """The pseudo-gradient ``slow - fast``, fast being the sum of ``fast_parts``."""
        fast = [sum(parts[1:], parts[0]) for parts in zip(*fast_parts, strict=True)]
        return [s - f.astype(s.dtype) for f, s in zip(fast, slow, strict=True)]

    def _finite(self, delta: list[jax.Array]) -> jax.Array:
        """Whether every leaf of ``delta`` is finite, by a reduction (no params-sized mask)."""
        if not self.path.drop_nonfinite:
            return jnp.asarray(True)
        # The largest magnitude is finite iff every element is (XLA's max propagates NaN).
        ok = jnp.asarray(True)
        for d in delta:
            ok = ok & jnp.isfinite(jnp.max(jnp.abs(d), initial=0.0))
        return _all_over_other_axes(ok, delta, self.path.replica_axis)

    def _contributors(self, ok: jax.Array) -> jax.Array:
        """How many replicas' pseudo-gradients enter the average (a scalar all-reduce)."""
        axis = self.path.replica_axis
        if not self.path.drop_nonfinite:
            return jnp.asarray(1 if axis is None else jax.lax.psum(1, axis), jnp.int32)
        count = ok.astype(jnp.int32)
        return count if axis is None else jax.lax.psum(count, axis)

    def _apply(self, operands: Any) -> tuple[list[jax.Array], Any]:
        """One outer step on the fragment's slow weights: ``slow + outer(mean)``."""
        mean, slow, outer_state = operands
        outer = self.path.outer
        if outer is None:
            assert self.alpha is not None  # for type checkers: no outer means an alpha
            return [s - self.alpha.astype(s.dtype) * m for s, m in zip(slow, mean, strict=True)], (
                outer_state
            )
        slow_tree = self.plan.tree(self.index, slow, only=True)
        updates, outer_state = outer.update(
            self.plan.tree(self.index, mean, only=True), outer_state, slow_tree
        )
        return jax.tree.leaves(optax.apply_updates(slow_tree, updates)), outer_state

    def _slow_weights_disagree(self, slow: list[jax.Array]) -> jax.Array:
        """1 if the replicas hold different slow weights (one small all-reduce), else 0."""
        axis = self.path.replica_axis
        if axis is None or not slow:
            return jnp.zeros([], jnp.int32)
        total = sum(jnp.sum(jnp.real(s).astype(jnp.float32)) for s in slow)
        squares = sum(jnp.sum(jnp.abs(s).astype(jnp.float32) ** 2) for s in slow)
        fingerprint = jnp.stack([total, squares])
        extremes = jax.lax.pmax(jnp.concatenate([fingerprint, -fingerprint]), axis)
        disagree = jnp.any(extremes[:2] != -extremes[2:]) & jnp.all(jnp.isfinite(extremes))
        # Params sharded within a replica: each device saw its block; any block counts.
        other = _other_axes(slow, axis)
        flag = disagree.astype(jnp.int32)
        return jax.lax.pmax(flag, other) if other else flag


def _wire_dtype(communication_dtype: Any, leaf_dtype: Any) -> Any:
    """The all-reduce dtype of a leaf: complex leaves get the complex dtype of it."""
    if jnp.issubdtype(leaf_dtype, jnp.complexfloating):
        return jnp.promote_types(communication_dtype, jnp.complex64)
    return communication_dtype


def _other_axes(leaves: list[jax.Array], replica_axis: Any) -> tuple[Any, ...]:
    """The manual mesh axes the leaves vary over besides the replica axis (sorted)."""
    replica = set(replica_axis) if isinstance(replica_axis, tuple) else {replica_axis}
    axes: set[Any] = set()
    for leaf in leaves:
        axes |= varying_axes(leaf)
    return tuple(sorted(axes - replica, key=str))


def _all_over_other_axes(ok: jax.Array, leaves: list[jax.Array], replica_axis: Any) -> jax.Array:
    """``ok`` combined over the devices that hold one replica's blocks (sharded params)."""
    other = _other_axes(leaves, replica_axis)
    if not other:
        return ok
    combined: jax.Array = jax.lax.pmin(ok.astype(jnp.int32), other) > 0
    return combined


def _reset_inner_state(call: _Call, left_out: jax.Array, state: Any, params: Any) -> Any:
    """The inner state, re-initialized from the slow weights where a reset is due.

    Every replica at the call after a sync with ``inner_state_on_sync='reset'``;
    a replica the last outer step left out at the call after that outer step (with
    ``sync_delay=1`` the outer step's own call took its gradient at the replica's
    non-finite params, so a reset there would be undone by that call's update). A
    select per leaf, which XLA fuses into the inner update's reads: no cond takes
    the inner state.
    """
    path, clock = call.path, call.clock
    if not path.drop_nonfinite and not path.reset_inner:
        return state.inner_state
    after_outer_step = clock.pending if path.sync_delay == 0 else clock.after_pending
    reset = Clock.any(after_outer_step) & left_out
    if path.reset_inner:
        reset = reset | Clock.any(clock.pending)
    slow = jax.tree.map(lambda s, p: s.astype(jnp.result_type(p)), state.lagging_slow, params)
    fresh = path.inner.init(slow)

    def pick(new: Any, old: Any) -> Any:
        new = vary_like(jnp.asarray(new, dtype=jnp.result_type(old)), old)
        return jnp.where(reset, new, old)

    return jax.tree.map(pick, fresh, state.inner_state)


# --- Reading the state ---------------------------------------------------------------------


def replica_health(opt_state: optax.OptState) -> ReplicaHealth:
    """The fault counters of the outermost outer-path Lookahead in ``opt_state``.

    Returns:
      ``ReplicaHealth(dropped, left_out, diverged)``: per replica (a leading replica
      axis where the state has one) the number of outer steps, fragment syncs
      included, the replica's non-finite pseudo-gradient was left out of, and
      whether the last outer step left it out; and the number of outer steps at
      which the replicas' slow weights disagreed (replicas that started from
      different params: broadcast the initial params to every replica).

    Raises:
      ValueError: if ``opt_state`` holds no Lookahead on the outer path (built
        with ``outer=`` or ``replica_axis=``).

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = lookax.diloco(optax.sgd(0.1), sync_period=2)
      >>> params = jnp.zeros(3)
      >>> state = tx.init(params)
      >>> for g in (jnp.ones(3), jnp.full(3, jnp.nan)):
      ...     updates, state = tx.update(g, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> int(lookax.replica_health(state).dropped)
      1
      >>> params = lookax.slow_params(state, params)  # the recovery: back on the slow weights
    """
    is_outer = lambda node: isinstance(node, OuterState)  # noqa: E731
    nodes = jax.tree.leaves(opt_state, is_leaf=is_outer)
    found = [node for node in nodes if isinstance(node, OuterState)]
    check_found(
        "replica_health",
        found,
        "outer-path Lookahead state",
        "it is kept by lookax.lookahead(..., outer=... or replica_axis=...), lookax.diloco and "
        "lookax.slowmo",
    )
    return ReplicaHealth(found[0].dropped, found[0].left_out, found[0].diverged)
