"""Argument checks shared by lookax's constructors.

Concrete Python, NumPy and JAX scalars are checked when an optimizer is built,
and a bad one raises ``ValueError`` naming the argument and the value. Traced
values (``optax.inject_hyperparams`` under ``jit``) cannot be checked and pass.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def concrete_scalar(name: str, value: Any) -> np.ndarray | None:
    """Returns ``value`` as a 0-d NumPy array, or None when it is traced."""
    if is_traced(value):
        return None
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - reraised with the argument's name
        raise ValueError(f"{name} must be a scalar number, got {value!r}") from error
    if array.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {array.shape}: {value!r}")
    return array


def concrete_float(name: str, value: Any) -> float | None:
    """``value`` as a Python float, or None when it is traced.

    Raises ``ValueError`` naming ``name`` for anything that is not a real
    scalar number (bools, strings, arrays of other shapes, callables); a
    complex number with a zero imaginary part counts as real.
    """
    if isinstance(value, bool | np.bool_) or callable(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    array = concrete_scalar(name, value)
    if array is None:
        return None
    if jnp.issubdtype(array.dtype, jnp.complexfloating) and array.imag == 0:
        # optax.inject_hyperparams casts hyperparameters to the params' widest dtype,
        # which is complex for complex params.
        array = array.real
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
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


def check_learning_rate(learning_rate: Any) -> None:
    if callable(learning_rate):
        return
    check_nonnegative("learning_rate", learning_rate)


def check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a Python bool (a static choice), got {value!r}")


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
    try:
        precision = real_dtype(dtype)
    except TypeError as error:
        raise ValueError(message) from error
    if not jnp.issubdtype(precision, jnp.floating):
        raise ValueError(message)
    return jax.dtypes.canonicalize_dtype(precision)


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


def check_sync_period(sync_period: Any) -> None:
    if isinstance(sync_period, bool | np.bool_):
        raise ValueError(f"sync_period must be an integer >= 1, got {sync_period!r}")
    array = concrete_scalar("sync_period", sync_period)
    if array is None:
        return
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"sync_period must be an integer >= 1, got {sync_period!r} of dtype {array.dtype}"
        )
    if int(array) < 1:
        raise ValueError(f"sync_period must be an integer >= 1, got {sync_period!r}")


def check_slow_step_size(slow_step_size: Any) -> None:
    if not callable(slow_step_size):
        check_unit_interval("slow_step_size", slow_step_size, include_one=True)
