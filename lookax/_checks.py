"""Argument checks: the one place where lookax refuses a bad argument.

The convention: ``TypeError`` when an argument has the wrong type (not a real
number where one is needed: a string, a callable, a bool, a complex number; not
an int where an int is needed; not a Python bool for a static flag; not an
``optax.GradientTransformation`` or not callable where one is needed; a traced
value where a static one is needed), ``ValueError`` when the type is right but
the value is not (out of range, NaN, an unknown choice or dtype name, a wrong
tree structure or leaf shape, options that do not go together). ``update``
called without the ``params`` it needs is a ``ValueError``, as in optax's own
transformations. Messages name the argument and the bad value.

Concrete Python, NumPy and JAX scalars are checked when an optimizer is built.
Traced values (``optax.inject_hyperparams`` under ``jit``) cannot be checked
and pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

StateT = TypeVar("StateT")

# --- Scalars and dtypes ---


def is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def concrete_scalar(name: str, value: Any) -> np.ndarray | None:
    """Returns ``value`` as a 0-d NumPy array, or None when it is traced."""
    if is_traced(value):
        return None
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - reraised with the argument's name
        raise TypeError(f"{name} must be a scalar number, got {value!r}") from error
    if array.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {array.shape}: {value!r}")
    return array


def concrete_float(name: str, value: Any) -> float | None:
    """``value`` as a Python float, or None when it is traced.

    Raises ``TypeError`` naming ``name`` for anything that is not a real number
    (bools, strings, callables, complex numbers) and ``ValueError`` for an array
    that is not a scalar; a complex number with a zero imaginary part counts as real.
    """
    if isinstance(value, bool | np.bool_) or callable(value):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    array = concrete_scalar(name, value)
    if array is None:
        return None
    if jnp.issubdtype(array.dtype, jnp.complexfloating) and array.imag == 0:
        # optax.inject_hyperparams casts hyperparameters to the params' widest dtype,
        # which is complex for complex params.
        array = array.real
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(array)


def check_nonnegative(name: str, value: Any) -> None:
    number = concrete_float(name, value)
    if number is not None and not number >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_unit_interval(name: str, value: Any, *, include_one: bool) -> None:
    number = concrete_float(name, value)
    if number is None:
        return
    inside = 0.0 <= number <= 1.0 if include_one else 0.0 <= number < 1.0
    if not inside:
        interval = "[0, 1]" if include_one else "[0, 1)"
        hint = ""
        dtype = jnp.result_type(value)
        if number == 1.0 and jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
            hint = (
                f" ({name} rounds to 1 in {dtype}; under "
                "optax.inject_hyperparams with low-precision params pass "
                "hyperparam_dtype=jnp.float32)"
            )
        raise ValueError(f"{name} must be in {interval}, got {value!r}{hint}")


def check_learning_rate(learning_rate: Any, name: str = "learning_rate") -> None:
    if callable(learning_rate):
        return
    check_nonnegative(name, learning_rate)


def check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a Python bool (a static choice), got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def real_dtype(dtype: Any) -> np.dtype:
    """``dtype``'s real counterpart (``complex64`` -> ``float32``); real dtypes unchanged."""
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def check_state_dtype(name: str, dtype: Any) -> Any:
    """A state storage dtype: None, or a floating or complex dtype, taken as a precision.

    Returns None or a real dtype (``complex64`` gives ``float32``): each leaf's state is
    real or complex as its param is (:func:`state_dtype_for`), so one dtype serves a tree
    of real and complex params.
    """
    if dtype is None:
        return None
    message = f"{name} must be a floating or complex dtype or None, got {dtype!r}"
    precision = real_dtype(_as_dtype(dtype, message))
    if not jnp.issubdtype(precision, jnp.floating):
        raise ValueError(message)
    return jax.dtypes.canonicalize_dtype(precision)


def check_floating_dtype(name: str, dtype: Any) -> None:
    """None or a real floating dtype (``ValueError`` for other dtypes)."""
    if dtype is None:
        return
    message = f"{name} must be a floating dtype (e.g. jnp.bfloat16) or None, got {dtype!r}"
    if not jnp.issubdtype(_as_dtype(dtype, message), jnp.floating):
        raise ValueError(message)


def _as_dtype(dtype: Any, message: str) -> np.dtype:
    """``dtype`` as a NumPy dtype: an unknown dtype name is a bad value, a non-dtype a bad type."""
    try:
        parsed: np.dtype = jnp.dtype(dtype)
    except TypeError as error:
        raise (ValueError if isinstance(dtype, str) else TypeError)(message) from error
    return parsed


def check_mu_dtype(mu_dtype: Any) -> Any:
    return check_state_dtype("mu_dtype", mu_dtype)


def state_dtype_for(precision: Any, param_dtype: Any) -> Any:
    """The dtype of a param's state leaf with the given precision (None: the param's dtype).

    Complex params get the complex dtype of that precision (``bfloat16`` and ``float32``
    give ``complex64``, there is no narrower one); real params its real dtype.
    """
    if precision is None:
        return param_dtype
    precision = real_dtype(precision)
    if jnp.issubdtype(param_dtype, jnp.complexfloating):
        return jax.dtypes.canonicalize_dtype(jnp.promote_types(precision, jnp.complex64))
    return jax.dtypes.canonicalize_dtype(precision)


# --- Trees and optimizer states ---


def check_transformation(where: str, name: str, value: Any, example: str = "") -> None:
    if not isinstance(value, optax.GradientTransformation):
        raise TypeError(
            f"{where}: {name} must be an optax.GradientTransformation{example}, "
            f"got {_short_repr(value)}"
        )


def check_state_type(where: str, state: Any, state_type: type, hint: str = "") -> None:
    """``state`` is the ``state_type`` that ``init`` made, not another optimizer's state."""
    if not isinstance(state, state_type):
        raise TypeError(
            f"{where}: state must be the {state_type.__name__} that tx.init returned, got "
            f"{type(state).__name__}{hint}"
        )


def check_same_structure(
    where: str, name: str, tree: Any, reference_name: str, reference: Any
) -> None:
    """``tree`` has the tree structure and leaf shapes of ``reference``."""
    leaves, treedef = jax.tree.flatten(reference)
    check_layout(where, name, tree, reference_name, treedef, [np.shape(leaf) for leaf in leaves])


def check_layout(
    where: str, name: str, tree: Any, reference_name: str, treedef: Any, shapes: Sequence[Any]
) -> None:
    """``tree`` has the structure ``treedef`` and the leaf ``shapes`` of ``reference_name``.

    It runs at every ``update`` call: leaf paths are made only for the message.
    """
    check_tree_structure(where, name, tree, reference_name, treedef)
    for index, (leaf, shape) in enumerate(zip(jax.tree.leaves(tree), shapes, strict=True)):
        if np.shape(leaf) != tuple(shape):
            raise ValueError(
                f"{where}: leaf {_leaf_path(tree, index)} has shape {np.shape(leaf)} in {name} "
                f"but {tuple(shape)} in {reference_name}"
            )


def check_tree_structure(
    where: str, name: str, tree: Any, reference_name: str, treedef: Any
) -> None:
    got: Any = jax.tree.structure(tree)  # Any: jaxlib ships no type stubs for PyTreeDef
    if got != treedef:
        raise ValueError(
            f"{where}: {name} and {reference_name} have different tree structures:\n"
            f"  {name}: {got}\n  {reference_name}: {treedef}"
        )


def _leaf_path(tree: Any, index: int) -> str:
    path, _ = jax.tree_util.tree_flatten_with_path(tree)[0][index]
    return jax.tree_util.keystr(path) or "<root>"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def check_found(where: str, found: Sequence[Any], what: str, hint: str) -> None:
    """``opt_state`` holds at least one ``what`` (``found`` lists them)."""
    if not found:
        raise ValueError(f"{where}: no {what} found in opt_state; {hint}")


# --- Lookahead and the outer path ---


def check_inner(inner: Any) -> None:
    """A transformation (anything with ``init`` and ``update``), not an ``optax.MultiSteps``.

    ``MultiSteps``'s ``update`` runs once per micro-batch, so Lookahead would count
    micro-batches and sync in the middle of an accumulation. ``MultiSteps``
    gives either itself or a transformation whose ``init`` is its bound method.
    """
    owner = getattr(getattr(inner, "init", None), "__self__", None)
    if isinstance(inner, optax.MultiSteps) or isinstance(owner, optax.MultiSteps):
        raise ValueError(
            "lookahead: inner is an optax.MultiSteps, whose update runs once per "
            "micro-batch, so Lookahead would count micro-batches and sync in the middle "
            "of an accumulation. Put MultiSteps outside: "
            "optax.MultiSteps(lookax.lookahead(inner, ...), every_k_schedule=n)"
        )
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
        raise TypeError(
            f"lookahead: inner must be an optax.GradientTransformation, got {_short_repr(inner)}"
        )


def check_sync_period(sync_period: Any) -> None:
    message = f"sync_period must be an integer >= 1, got {sync_period!r}"
    if isinstance(sync_period, bool | np.bool_):
        raise TypeError(message)
    array = concrete_scalar("sync_period", sync_period)
    if array is None:
        return
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{message} of dtype {array.dtype}")
    if int(array) < 1:
        raise ValueError(message)


def check_slow_step_size(slow_step_size: Any) -> None:
    if not callable(slow_step_size):
        check_unit_interval("slow_step_size", slow_step_size, include_one=True)


def check_outer(outer: Any, slow_step_size: Any, inner_state_on_sync: Any) -> None:
    """An outer optimizer, which makes the slow step: no slow step size to go with it."""
    example = " (e.g. optax.sgd(0.7, momentum=0.9, nesterov=True))"
    check_transformation("lookahead", "outer", outer, example)
    if slow_step_size is not None:
        raise ValueError(
            "lookahead: pass either outer or slow_step_size, not both: the outer optimizer "
            f"makes the slow step (slow_step_size={slow_step_size!r}); "
            "outer=optax.sgd(alpha) is plain Lookahead"
        )
    if inner_state_on_sync == "interpolate":
        raise ValueError(
            "lookahead: inner_state_on_sync='interpolate' moves the inner state by the slow "
            "step size, which an outer optimizer does not have; use 'keep' or 'reset'"
        )


def check_replica_axis_name(replica_axis: Any) -> None:
    if replica_axis is not None and not isinstance(replica_axis, str | tuple):
        raise TypeError(f"lookahead: replica_axis must be an axis name, got {replica_axis!r}")


def check_replica_axis(replica_axis: Any) -> None:
    """A clear error, at trace time, when ``replica_axis`` is not a mapped axis here."""
    if replica_axis is None:
        return
    try:
        jax.lax.psum(1, replica_axis)  # the axis size, known while tracing: no collective
    except NameError as error:
        raise ValueError(
            f"lookahead: replica_axis={replica_axis!r} is not a mapped axis where update() is "
            "traced; call it inside jax.shard_map over a mesh axis of that name or inside "
            f"jax.vmap(..., axis_name={replica_axis!r})"
        ) from error


def check_floating_params(params: Any) -> None:
    """Floating-point params: Lookahead interpolates weights."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"lookahead: params leaf {jax.tree_util.keystr(path) or '<root>'} has dtype "
                f"{dtype}; Lookahead interpolates weights and needs floating-point params "
                "(keep integer arrays out of the optimized tree, e.g. with optax.masked)"
            )


def check_lookahead_state_type(fresh: Any, state_type: type[StateT]) -> StateT:
    """``init_from_inner``'s ``tx`` is a ``lookahead``: its ``init`` returned ``fresh``."""
    if not isinstance(fresh, state_type):
        raise TypeError(
            f"init_from_inner: tx must be a lookax.lookahead(...) transformation, its init "
            f"returned {type(fresh).__name__}"
        )
    return fresh


def check_params_given(where: str, params: Any, why: str) -> None:
    """``params`` is not None (``TypeError``: None is no params tree)."""
    if params is None:
        raise TypeError(f"{where} needs params: {why}")


def check_slow_weights_line_up(
    slow_leaves: Sequence[Any], slow_def: Any, params_leaves: Sequence[Any], params_def: Any
) -> None:
    if len(slow_leaves) != len(params_leaves):
        raise ValueError(
            "slow_params: the slow weights do not line up with params:\n"
            f"  params: {params_def}\n  slow:   {slow_def}"
        )


def check_update_params(params: Any) -> None:
    """``update`` got ``params``; a ``ValueError`` otherwise, as optax's transformations raise."""
    if params is None:
        raise ValueError(
            "lookahead: update() requires params (the current fast weights): "
            "call tx.update(grads, state, params)"
        )


def check_inner_state(inner: Any, inner_state: Any, params: Any) -> None:
    """Refuses an inner state of another optimizer (``lookahead(sgd)``'s for ``lookahead(adam)``).

    Its tree structure is compared with that of ``inner.init(params)``, traced
    abstractly (``jax.eval_shape``: nothing runs, and under ``jit`` only at trace
    time). Where the exact structures differ, the node types are compared in
    order, so that static data (a :func:`lookax.grouped` plan made from placed
    arrays) and the number of its buffers do not count. A state whose leaves are
    not arrays (wrapped by a framework) is not checked.
    """
    if not all(_is_array_leaf(leaf) for leaf in jax.tree.leaves(inner_state)):
        return
    try:
        expected: Any = jax.tree.structure(jax.eval_shape(inner.init, params))
    except Exception:  # an init that cannot be traced abstractly: nothing to compare with
        return
    got: Any = jax.tree.structure(inner_state)  # Any: jaxlib ships no stubs for PyTreeDef
    if expected == got or _node_types(expected) == _node_types(got):
        return
    raise ValueError(
        "lookahead: the state's inner_state belongs to another optimizer: its tree "
        "structure is not the one the inner optimizer's init gives (a state made by another "
        "optimizer's init, or restored from another optimizer's checkpoint?)\n"
        f"  inner.init(params): {_shortened(expected)}\n"
        f"  state.inner_state:  {_shortened(got)}"
    )


def _is_array_leaf(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float | complex)


def _node_types(treedef: Any) -> list[type]:
    """The types of a tree structure's nodes (leaves left out), depth first."""
    data = treedef.node_data()
    if data is None:
        return []
    types = [data[0]]
    for child in treedef.children():
        types.extend(_node_types(child))
    return types


def _shortened(treedef: Any, limit: int = 600) -> str:
    text = str(treedef)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]} ... {text[-limit // 2 :]} ({treedef.num_leaves} leaves)"


def check_outer_options(
    sync_period: Any,
    sync_delay: Any,
    drop_nonfinite: Any,
    communication_dtype: Any,
    fragments: Any,
    *,
    on_outer_path: bool,
) -> tuple[int, Any]:
    """The outer path's options: valid values, and only where there is an outer path.

    ``optax.inject_hyperparams`` passes every numeric argument, defaults included,
    as an array, traced under ``jit``: plain Lookahead ignores a traced
    ``sync_delay`` or ``fragments``; the outer path needs them static.

    Returns:
      ``sync_delay`` and ``fragments``, concrete integers as Python ints.
    """
    sync_delay = check_static_int("sync_delay", sync_delay, on_outer_path)
    fragments = check_static_int("fragments", fragments, on_outer_path)
    if sync_delay is None:  # traced, on plain Lookahead
        sync_delay, fragments = 0, 1
    check_sync_delay(sync_delay)
    if drop_nonfinite is not None and not isinstance(drop_nonfinite, bool):
        raise TypeError(f"lookahead: drop_nonfinite must be None or a bool, got {drop_nonfinite!r}")
    check_floating_dtype("lookahead: communication_dtype", communication_dtype)
    check_fragments(sync_period, fragments)
    if not on_outer_path:
        refuse_outer_options(sync_delay, drop_nonfinite, communication_dtype, fragments)
    return sync_delay, fragments


def check_static_int(name: str, value: Any, on_outer_path: bool) -> Any:
    """A concrete integer scalar as a Python int; a traced one as None (plain path only)."""
    if not isinstance(value, jax.Array | np.ndarray | np.generic):
        return value
    if is_traced(value):
        if on_outer_path:
            raise TypeError(
                f"lookahead: {name} is traced, but the outer path needs it static; under "
                f"optax.inject_hyperparams pass static_args=({name!r}, ...)"
            )
        return None
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise TypeError(f"lookahead: {name} must be an integer, got {value!r}")
    if value.shape != ():
        raise ValueError(f"lookahead: {name} must be an integer scalar, got {value!r}")
    return int(value)


def check_sync_delay(sync_delay: Any) -> None:
    message = f"lookahead: sync_delay must be 0 or 1, got {sync_delay!r}"
    if isinstance(sync_delay, bool) or not isinstance(sync_delay, int):
        raise TypeError(message)
    if sync_delay not in (0, 1):
        raise ValueError(message)


def check_fragments(sync_period: Any, fragments: Any) -> None:
    """An int >= 1 that divides ``sync_period``, or a tree or callable checked at ``init``."""
    message = (
        "lookahead: fragments must be an int >= 1, a tree of fragment ids or a callable, "
        f"got {fragments!r}"
    )
    if isinstance(fragments, bool):
        raise TypeError(message)
    if isinstance(fragments, int):
        if fragments < 1:
            raise ValueError(message)
        check_period_divisible(sync_period, fragments)


def refuse_outer_options(
    sync_delay: Any, drop_nonfinite: Any, communication_dtype: Any, fragments: Any
) -> None:
    """Plain Lookahead: the outer path's options must keep their defaults."""
    given = {
        "sync_delay": (sync_delay, 0),
        "drop_nonfinite": (drop_nonfinite, None),
        "communication_dtype": (communication_dtype, None),
        "fragments": (fragments, 1),
    }
    for name, (value, default) in given.items():
        if value is not default and not (isinstance(value, int) and value == default):
            raise ValueError(
                f"lookahead: {name}={value!r} applies to the outer path only (pass outer= or "
                "replica_axis=); plain Lookahead already makes its slow step at the price of "
                "the inner step"
            )


def check_outer_path_inner_state(inner_state_on_sync: str, fragments: Any) -> None:
    """On the outer path the inner state is kept or reset, and reset only without fragments."""
    if inner_state_on_sync == "interpolate":
        raise ValueError(
            "lookahead: inner_state_on_sync='interpolate' moves the inner state by plain "
            "Lookahead's alpha; with outer= or replica_axis= use 'keep' or 'reset'"
        )
    if inner_state_on_sync == "reset" and fragments != 1:
        raise ValueError(
            f"lookahead: inner_state_on_sync='reset' with fragments={fragments!r}: the inner "
            "state's counters (e.g. Adam's step count) are shared by every leaf, so a reset "
            "of one fragment is undefined; use 'keep'"
        )


def check_period_divisible(sync_period: Any, fragments: int) -> None:
    """``sync_period`` divisible by the number of fragments (when both are concrete)."""
    if fragments == 1 or is_traced(sync_period):
        return
    if int(sync_period) % fragments:
        raise ValueError(
            f"lookahead: sync_period={int(sync_period)} must be divisible by the number of "
            f"fragments ({fragments}), so the fragments sync evenly spread over each period"
        )


def check_replica_count(num_replicas: Any) -> None:
    message = f"stack_replicas: num_replicas must be an integer >= 1, got {num_replicas!r}"
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int | np.integer):
        raise TypeError(message)
    if num_replicas < 1:
        raise ValueError(message)


def check_fragment_count(fragments: int, num_leaves: int) -> None:
    if fragments > num_leaves:
        raise ValueError(
            f"lookahead: fragments={fragments} needs at least {fragments} params leaves "
            f"(one per fragment), the params have {num_leaves}"
        )


def check_fragment_ids(tree: Any, params: Any) -> list[int]:
    """The fragment id of every params leaf, from a tree of ids (the params' tree or a prefix).

    The ids must be ``0 .. F-1``, each used by a leaf.
    """
    try:
        full = jax.tree.map(lambda i, sub: jax.tree.map(lambda _: i, sub), tree, params)
    except (ValueError, TypeError) as error:
        raise ValueError(
            "lookahead: fragments must be an int, or a tree of fragment ids with the params' "
            f"structure (or a prefix of it), or a callable returning one; got {tree!r} for "
            f"params of structure {jax.tree.structure(params)}"
        ) from error
    ids = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(full):
        message = (
            f"lookahead: fragments{jax.tree_util.keystr(path)} must be an int >= 0 "
            f"(a fragment id), got {leaf!r}"
        )
        if isinstance(leaf, bool) or not isinstance(leaf, int):
            raise TypeError(message)
        if leaf < 0:
            raise ValueError(message)
        ids.append(leaf)
    missing = sorted(set(range(max(ids, default=0) + 1)) - set(ids))
    if missing:
        raise ValueError(
            f"lookahead: fragments uses ids up to {max(ids)} but not {missing}; the ids "
            "must be 0 .. F-1, each used by at least one leaf"
        )
    return ids


# --- Grouping ---


def check_leaf_key(key: Any) -> None:
    if key is not None and not callable(key):
        raise TypeError(f"grouped: key must be a function of a leaf or None, got {key!r}")


def check_max_leaf_size(max_leaf_size: Any) -> None:
    if max_leaf_size is None:
        return
    message = f"grouped: max_leaf_size must be an integer >= 0 or None, got {max_leaf_size!r}"
    if isinstance(max_leaf_size, bool) or not isinstance(max_leaf_size, int | np.integer):
        raise TypeError(message)
    if max_leaf_size < 0:
        raise ValueError(message)


def check_one_per_buffer(name: str, buffers: Any, count: int) -> None:
    """``buffers`` is a tuple with one array per buffer of a grouping plan."""
    message = f"{name} must be a tuple with one array per buffer ({count})"
    if not isinstance(buffers, tuple):
        raise TypeError(f"{message}, got {type(buffers).__name__}")
    if len(buffers) != count:
        raise ValueError(f"{message}, got {len(buffers)}")


# --- Optimizer hyperparameters ---


def check_axis(name: str, axis: Any) -> None:
    """An axis: a Python, NumPy or JAX integer scalar (``TypeError`` otherwise); traced passes."""
    if is_traced(axis):
        return
    is_integer_scalar = (
        isinstance(axis, int | np.integer) and not isinstance(axis, bool | np.bool_)
    ) or (
        isinstance(axis, jax.Array | np.ndarray)
        and np.ndim(axis) == 0
        and jnp.issubdtype(axis.dtype, jnp.integer)
    )
    if not is_integer_scalar:
        raise TypeError(f"{name} must be an integer axis, got {axis!r}")


def check_adam_like(b1: Any, b2: Any, eps: Any) -> None:
    """Adam's ``b1`` and ``b2`` in [0, 1) and ``eps`` >= 0."""
    check_unit_interval("b1", b1, include_one=False)
    check_unit_interval("b2", b2, include_one=False)
    check_nonnegative("eps", eps)
