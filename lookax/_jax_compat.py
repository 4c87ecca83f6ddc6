"""Shims over JAX versions: the mesh axes a value varies over inside ``jax.shard_map``.

Inside ``shard_map`` (with ``check_vma``) a value's type records the manual mesh axes
it varies over, and both branches of a ``lax.cond`` must agree on them. jax >= 0.10
calls that record ``manual_axis_type`` and casts with ``lax.pcast``; older releases
call it ``vma`` and cast with ``lax.pvary``.
"""

from __future__ import annotations

from typing import Any

import jax


def varying_axes(x: Any) -> frozenset[Any]:
    """The manual mesh axes ``x`` varies over inside ``shard_map`` (else empty)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10
    if manual is not None:
        return frozenset(manual.varying)
    return frozenset(getattr(aval, "vma", ()))  # older jax


def vary_like(x: Any, like: Any) -> Any:
    """``x`` (a tree) cast to vary over every mesh axis its twin leaf in ``like`` varies over."""
    return jax.tree.map(_vary_leaf_like, x, like)


def _vary_leaf_like(x: jax.Array, like: Any) -> jax.Array:
    missing = tuple(sorted(varying_axes(like) - varying_axes(x)))
    if not missing:
        return x
    varied: jax.Array
    if hasattr(jax.lax, "pcast"):
        varied = jax.lax.pcast(x, missing, to="varying")
    else:
        varied = getattr(jax.lax, "pvary")(x, missing)  # noqa: B009  (older jax; gone in 0.10)
    return varied
