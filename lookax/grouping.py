r"""Leaf grouping: run a transformation on a few contiguous buffers, not many leaves.

A model with thousands of small parameter arrays makes an optax step launch
thousands of tiny kernels and pass thousands of state arrays in and out of the
compiled step; the per-kernel and per-array overheads, not the memory traffic,
set its speed. :func:`grouped` concatenates leaves that can share a buffer
(same dtype, placement and size, not sharded) into a few flat buffers, runs the
inner transformation on those buffers, and cuts the updates back into the
params' leaves.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lookax._checks import (
    check_layout,
    check_leaf_key,
    check_max_leaf_size,
    check_one_per_buffer,
    check_state_type,
    check_transformation,
)
from lookax._typing import ArrayTree as ArrayTree  # for get_type_hints: see _typing.py
from lookax._typing import gradient_transformation_extra_args

__all__ = ["GroupedState", "GroupingPlan", "grouped", "ungroup"]

LeafKey = Callable[[Any], Hashable | None]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class GroupingPlan:
    """Which params leaves share which buffer (static: part of the state's structure).

    Attributes:
      treedef: the params' tree structure.
      shapes: the shape of every params leaf, in ``treedef`` order.
      buffers: for each buffer the inner transformation sees, the indices of the
        leaves it holds, in order.
      flat: for each buffer, whether it is a flat concatenation (``True``) or a
        single leaf left as it is (``False``: a sharded or large leaf, a leaf
        alone in its class, or one the key function kept apart).
    """

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    buffers: tuple[tuple[int, ...], ...]
    flat: tuple[bool, ...]


class GroupedState(NamedTuple):
    """State of :func:`grouped`.

    Attributes:
      inner_state: the inner transformation's state, laid out over the buffers
        (a tuple with one entry per buffer wherever the inner state is
        params-shaped).
      plan: the :class:`GroupingPlan` fixed at ``init`` (static, no arrays).
    """

    inner_state: optax.OptState
    plan: GroupingPlan


def _placement(leaf: Any) -> tuple[bool, Hashable]:
    """(can join a flat buffer, placement key) of one leaf."""
    if isinstance(leaf, jax.core.Tracer):
        sharding = getattr(jax.typeof(leaf), "sharding", None)
        replicated = sharding is None or getattr(sharding, "is_fully_replicated", True)
        return replicated, ()
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:  # NumPy arrays and Python scalars
        return True, ()
    if not sharding.is_fully_replicated:
        return False, ()
    return True, tuple(sorted(device.id for device in sharding.device_set))


def _default_key(leaf: Any) -> Hashable | None:
    groupable, placement = _placement(leaf)
    if not groupable:
        return None
    return (jnp.result_type(leaf).name, placement)


def _make_plan(
    params: optax.Params, key: LeafKey | None, max_leaf_size: int | None
) -> GroupingPlan:
    leaves, treedef = jax.tree.flatten(params)
    shapes = tuple(tuple(np.shape(leaf)) for leaf in leaves)
    classes: dict[Hashable, list[int]] = {}
    alone: list[int] = []
    for index, leaf in enumerate(leaves):
        size = int(np.prod(shapes[index], dtype=np.int64))
        groupable, _ = _placement(leaf)
        leaf_key = _default_key(leaf) if key is None else key(leaf)
        too_big = max_leaf_size is not None and size > max_leaf_size
        if leaf_key is None or not groupable or too_big:
            alone.append(index)
            continue
        # The dtype always separates buffers (a concatenation would promote), and
        # so does the size: see the chunking below.
        classes.setdefault((jnp.result_type(leaf).name, size, leaf_key), []).append(index)
    buffers: list[tuple[int, ...]] = []
    flat: list[bool] = []
    for indices in classes.values():
        # XLA compiles one kernel per distinct slice (offset, shape) and shares a
        # kernel between identical ones. Cutting a class of n equal-size leaves
        # into chunks of ceil(sqrt(n)) leaves keeps both the buffers and the
        # distinct slices near sqrt(n): the leaf in slot j of every chunk is the
        # same slice of a same-shaped buffer.
        chunk = max(1, math.isqrt(len(indices) - 1) + 1)
        for start in range(0, len(indices), chunk):
            buffers.append(tuple(indices[start : start + chunk]))
            # A chunk of one leaf stays in the leaf's shape: nothing to gain, and
            # the inner kernels then are exactly the ungrouped ones.
            flat.append(len(buffers[-1]) > 1)
    buffers += [(index,) for index in alone]
    flat += [False] * len(alone)
    return GroupingPlan(treedef=treedef, shapes=shapes, buffers=tuple(buffers), flat=tuple(flat))


def _leaves_of(plan: GroupingPlan, name: str, tree: Any) -> list[Any]:
    check_layout("grouped", name, tree, "the params given to init", plan.treedef, plan.shapes)
    leaves: list[Any] = plan.treedef.flatten_up_to(tree)
    return leaves


def _gather(plan: GroupingPlan, leaves: list[Any]) -> tuple[Any, ...]:
    buffers = []
    for indices, flat in zip(plan.buffers, plan.flat, strict=True):
        if not flat:
            buffers.append(leaves[indices[0]])
        else:
            buffers.append(jnp.concatenate([jnp.ravel(leaves[i]) for i in indices]))
    return tuple(buffers)


def _scatter(plan: GroupingPlan, buffers: Any) -> Any:
    leaves: list[Any] = [None] * len(plan.shapes)
    for buffer, indices, flat in zip(buffers, plan.buffers, plan.flat, strict=True):
        if not flat:
            leaves[indices[0]] = buffer
            continue
        offset = 0
        for i in indices:
            size = int(np.prod(plan.shapes[i], dtype=np.int64))
            piece = jax.lax.slice(buffer, (offset,), (offset + size,))
            leaves[i] = jnp.reshape(piece, plan.shapes[i])
            offset += size
    return jax.tree.unflatten(plan.treedef, leaves)


def ungroup(state: GroupedState, buffers: Any) -> Any:
    """Cuts a tuple of buffers laid out as ``state``'s plan back into the params' tree.

    Use it on any params-shaped part of the inner state, e.g. Adam's moments.
    (:func:`lookax.slow_params` already ungroups the slow weights of a grouped
    Lookahead.)

    Args:
      state: a :class:`GroupedState` (from ``grouped(...).init``).
      buffers: a tuple with one array per buffer of ``state.plan``.

    Returns:
      A tree with the params' structure and shapes.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = lookax.grouped(optax.adam(1e-3))
      >>> params = {"a": jnp.ones(3), "b": jnp.zeros((2, 2))}
      >>> state = tx.init(params)
      >>> first_moment = lookax.ungroup(state, state.inner_state[0].mu)
      >>> first_moment["b"].shape
      (2, 2)
    """
    check_state_type("ungroup", state, GroupedState)
    check_one_per_buffer("ungroup: buffers", buffers, len(state.plan.buffers))
    return _scatter(state.plan, buffers)


def grouped(
    inner: optax.GradientTransformation,
    *,
    key: LeafKey | None = None,
    max_leaf_size: int | None = 65536,
) -> optax.GradientTransformationExtraArgs:
    r"""Runs ``inner`` on a few contiguous buffers instead of many small leaves.

    At ``init`` the params' leaves are sorted into buffers. Leaves of the same
    dtype, the same placement (devices) and the same number of elements, not
    sharded and at most ``max_leaf_size`` elements, are flattened and
    concatenated (in tree order) into 1-D buffers of about :math:`\sqrt{n}`
    leaves each, for a class of :math:`n` such leaves. Every other leaf stays a
    buffer of its own, in its own shape: a sharded leaf (its sharding is not
    fully replicated; concatenating it would move its shards between devices),
    a large leaf (already one efficient kernel), a leaf alone in its class. The
    plan is fixed at ``init`` and kept, static, in the state. Each ``update``
    concatenates the gradients (and the params) the same way, runs ``inner`` on
    the buffers, and slices the updates back into the params' leaves:

    .. math::

      (u_1, \dots, u_n) = \mathrm{split}\bigl(\mathrm{inner}(
          \mathrm{concat}(g_1, \dots, g_n),
          \mathrm{concat}(\theta_1, \dots, \theta_n))\bigr)

    Why equal sizes and :math:`\sqrt{n}`-leaf chunks: XLA compiles one kernel
    per distinct slice (offset and shape) of a buffer and shares one kernel
    between identical computations, so slicing one long buffer into :math:`n`
    leaves costs :math:`n` kernels to compile (about 20 ms each on a CPU), while
    equal-size leaves in equal chunks share kernels: the leaf in slot :math:`j`
    of every chunk is the same slice of a same-shaped buffer. Buffers and
    distinct slices both stay near :math:`\sqrt{n}`.

    When it is valid: ``inner`` must treat every element the same way whatever
    leaf it belongs to, as all of lookax's optimizers, optax's elementwise
    ones (``sgd``, ``adam``, ``adamw``, ``rmsprop``, ``adagrad``, ``adadelta``,
    ``lion``, ...) and :func:`lookax.lookahead` do. Then the trajectory is the
    ungrouped one: the same elementwise arithmetic, laid out differently (bit
    for bit in lookax's tests with these optimizers on XLA:CPU; XLA may fuse a
    multiply-add differently in a differently shaped kernel, which can move a
    result by an ulp). A transformation that looks at leaf shapes or per-leaf
    statistics is not valid here: :func:`lookax.centralize_gradients`,
    ``optax.scale_by_trust_ratio`` (LARS/LAMB), ``optax.adafactor``,
    ``optax.masked``/``multi_transform``, a weight-decay ``mask`` given as a
    tree. Global reductions (``optax.clip_by_global_norm``) see the same
    numbers, summed in another order. Wrap the elementwise part only, e.g.
    ``optax.chain(lookax.centralize_gradients(), lookax.grouped(lookax.radam()))``.

    Cost: one concatenation of the grouped gradients per step (a read and a
    write of each; also of the params if ``inner`` uses them), no change in
    state memory. It pays where leaves are many and small: thousands of kernels
    and state arrays become a few dozen. For a grouped Lookahead,
    ``lookax.slow_params(state, params)`` gives the slow weights in the params'
    shape (it cuts the buffers back into leaves).

    Under ``jax.jit``/``jax.eval_shape`` of ``init`` the shardings of auto-
    sharded arrays are not visible, and every leaf counts as unsharded; call
    ``init`` on placed arrays, or pass ``key``, to keep sharded leaves apart.

    Args:
      inner: the transformation to run on the buffers (elementwise, see above).
        Extra arguments given to ``update`` are passed on to it.
      key: optional function of a params leaf returning a hashable group key,
        or ``None`` to keep that leaf as a buffer of its own. Only leaves with
        equal keys share a buffer; dtype and size always separate buffers, and
        sharded leaves are always kept apart. The default key is the leaf's
        dtype and devices.
      max_leaf_size: leaves with more elements than this stay as they are
        (``None``: no limit).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`GroupedState`.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> params = [jnp.ones(10) * i for i in range(100)]  # many small leaves
      >>> tx = lookax.grouped(optax.adam(1e-3))
      >>> state = tx.init(params)
      >>> len(state.plan.buffers)  # chunks of ceil(sqrt(100)) = 10 leaves
      10
      >>> updates, state = tx.update(params, state, params)
      >>> params = optax.apply_updates(params, updates)
    """
    check_transformation("grouped", "inner", inner)
    check_leaf_key(key)
    check_max_leaf_size(max_leaf_size)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> GroupedState:
        plan = _make_plan(params, key, max_leaf_size)
        return GroupedState(inner.init(_gather(plan, jax.tree.leaves(params))), plan)

    def update_fn(
        updates: optax.Updates,
        state: GroupedState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, GroupedState]:
        check_state_type("grouped", state, GroupedState)
        plan = state.plan
        grouped_updates = _gather(plan, _leaves_of(plan, "updates", updates))
        grouped_params = None
        if params is not None:
            # Unused by the inner transformation, the concatenation is dead code
            # under jit and costs nothing.
            grouped_params = _gather(plan, _leaves_of(plan, "params", params))
        new_updates, inner_state = inner.update(
            grouped_updates, state.inner_state, grouped_params, **extra_args
        )
        check_one_per_buffer(
            "grouped: the inner transformation's updates", new_updates, len(plan.buffers)
        )
        return _scatter(plan, new_updates), GroupedState(inner_state, plan)

    return gradient_transformation_extra_args(init_fn, update_fn)
