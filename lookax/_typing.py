"""Typing helpers: each builds what optax builds, with the state's own type kept.

optax types every state as ``optax.OptState`` (an array tree), which the state
NamedTuples here are not to a type checker (a ``None`` field, a static plan), and
an ``update_fn`` that takes its own state type is narrower than optax's protocol.
These helpers pair ``init_fn`` and ``update_fn`` over one state type (checked),
then hand them to optax's constructors: the one place where the two typings meet.
They change nothing at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import jax
import optax

StateT = TypeVar("StateT")

# optax's ``Params``, ``Updates`` and ``OptState`` are its ``ArrayTree``: a recursive Union
# holding the forward reference ``'ArrayTree'``, which ``typing.get_type_hints`` evaluates in
# the globals of the module whose annotations use the alias. So every lookax module annotated
# with them imports this name (``from lookax._typing import ArrayTree as ArrayTree``), and
# ``typing.get_type_hints(lookax.adam)`` resolves. It is optax's own alias, not a new type.
ArrayTree = optax.Params


def gradient_transformation(
    init_fn: Callable[[optax.Params], StateT],
    update_fn: Callable[[optax.Updates, StateT, optax.Params | None], tuple[optax.Updates, StateT]],
) -> optax.GradientTransformation:
    """``optax.GradientTransformation(init_fn, update_fn)``."""
    return optax.GradientTransformation(
        cast(optax.TransformInitFn, init_fn), cast(optax.TransformUpdateFn, update_fn)
    )


def gradient_transformation_extra_args(
    init_fn: Callable[[optax.Params], StateT],
    update_fn: Callable[..., tuple[optax.Updates, StateT]],
) -> optax.GradientTransformationExtraArgs:
    """``optax.GradientTransformationExtraArgs(init_fn, update_fn)``.

    ``update_fn(updates, state, params=None, **extra_args)``.
    """
    return optax.GradientTransformationExtraArgs(
        cast(optax.TransformInitFn, init_fn), cast(optax.TransformUpdateExtraArgsFn, update_fn)
    )


def safe_increment(count: jax.Array) -> jax.Array:
    """``optax.safe_increment(count)``, typed as the array it returns."""
    return cast(jax.Array, optax.safe_increment(count))
