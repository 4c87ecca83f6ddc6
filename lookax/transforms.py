r"""Composable building blocks of the lookax optimizers.

Each ``scale_by_*`` function returns an :class:`optax.GradientTransformation`
that turns gradients into a learning-rate-free *direction* :math:`d_t`; the
aliases in :mod:`lookax.optimizers` chain it with weight decay and
``optax.scale_by_learning_rate``, so that :math:`\theta_{t+1} = \theta_t - \eta_t d_t`.
Where optax already has the exact piece (``optax.scale_by_rms``,
``optax.scale_by_stddev``, ``optax.trace``, ``optax.scale_by_adadelta``,
``optax.scale_by_lion``, ``optax.add_decayed_weights``), the aliases use it;
this module holds the pieces whose semantics differ from optax's (PyTorch's
first momentum step and dampening, eps placements, AMSGrad on the raw second
moment, NAdam's momentum schedule, RAdam's rectification, weight decay rounded
as PyTorch rounds it) and :func:`centralize_gradients`.

The update rules, references and differences from PyTorch and optax are in the
aliases' docstrings (:func:`lookax.adam` for :func:`scale_by_adam`, ...). The
step scalars and the handling of hyperparameters live in ``lookax._numerics``,
the complex-params rule in ``lookax._complex`` (docs: the ``complex-params``
section of docs/optimizers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lookax._checks import (
    check_adam_like,
    check_axis,
    check_flag,
    check_learning_rate,
    check_mu_dtype,
    check_nonnegative,
    check_unit_interval,
    concrete_float,
    is_traced,
)
from lookax._complex import complex_as_real
from lookax._numerics import (
    cast_scalar,
    host_float,
    is_concrete_zero,
    log_beta,
    nadam_coefficients,
    one_minus_power,
    radam_rectification,
    scalar,
    scalar_dtype,
    step_as_float,
)
from lookax._typing import ArrayTree as ArrayTree  # for get_type_hints: see _typing.py
from lookax._typing import gradient_transformation, safe_increment

__all__ = [
    "AddDecoupledWeightDecayState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByMomentumState",
    "ScaleByNadamState",
    "ScaleByRAdamState",
    "add_decoupled_weight_decay",
    "centralize_gradients",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_momentum",
    "scale_by_nadam",
    "scale_by_radam",
]


# --------------------------------------------------------------------------
# Decoupled weight decay, rounded as PyTorch rounds it.
# --------------------------------------------------------------------------


class AddDecoupledWeightDecayState(NamedTuple):
    """State of :func:`add_decoupled_weight_decay`.

    Attributes:
      count: number of updates so far (int32), where a learning-rate schedule
        is evaluated.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do


def add_decoupled_weight_decay(
    learning_rate: Any,
    weight_decay: float | jax.Array = 0.0,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""Decoupled weight decay as PyTorch applies and rounds it: shrink, then step.

    Placed after ``optax.scale_by_learning_rate`` (the incoming updates are the
    step :math:`u_t`), it returns updates that move the params to
    :math:`\theta_{t-1}(1 - \eta_t\lambda) + u_t`, PyTorch's
    ``p.mul_(1 - lr * weight_decay)`` then ``p.add_(step)``. See
    :func:`lookax.adamw` for the rule, the reference and how this differs from
    ``optax.add_decayed_weights``. Complex params shrink as complex numbers,
    which is PyTorch's rule too.

    Args:
      learning_rate: the same float or schedule as the learning-rate step
        before it (a schedule is evaluated at the update count, 0-based).
      weight_decay: :math:`\lambda \ge 0`. A Python/NumPy zero skips the work.
      mask: as ``optax.add_decayed_weights``: a pytree of bools, or a function
        of the params returning one, selecting the leaves that decay.

    Returns:
      An :class:`optax.GradientTransformation` whose ``update`` needs
      ``params`` (unless ``weight_decay`` is a concrete zero).

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = optax.chain(optax.scale_by_learning_rate(0.1),
      ...                  lookax.add_decoupled_weight_decay(0.1, weight_decay=0.5))
      >>> params = jnp.array([2.0])
      >>> updates, _ = tx.update(jnp.array([1.0]), tx.init(params), params)
      >>> print(optax.apply_updates(params, updates))  # 2 * (1 - 0.05) - 0.1
      [1.8]
    """
    check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    skip = is_concrete_zero(weight_decay)
    if not callable(learning_rate):
        learning_rate = host_float(learning_rate)
    weight_decay = host_float(weight_decay)

    def init_fn(params: optax.Params) -> AddDecoupledWeightDecayState:
        del params
        return AddDecoupledWeightDecayState(count=jnp.zeros([], jnp.int32))

    def update_fn(
        updates: optax.Updates,
        state: AddDecoupledWeightDecayState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, AddDecoupledWeightDecayState]:
        new_state = AddDecoupledWeightDecayState(count=safe_increment(state.count))
        if skip:
            return updates, new_state
        if params is None:
            raise ValueError(
                "add_decoupled_weight_decay: update() needs params (weight decay "
                "shrinks them): call tx.update(updates, state, params)"
            )
        rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
        if isinstance(rate, float) and isinstance(weight_decay, float):
            keep = 1.0 - rate * weight_decay  # float64, as PyTorch's 1 - lr * wd
        else:
            keep = 1 - scalar(rate) * scalar(weight_decay)

        def step(u: jax.Array, p: jax.Array) -> jax.Array:
            # The select keeps XLA from contracting the multiply-add into an FMA,
            # so the shrink is rounded on its own, as PyTorch's separate p.mul_.
            # (NaN params still give NaN updates through the subtraction.)
            shrunk = jnp.where(p == p, p * cast_scalar(keep, p), 0)
            return ((shrunk + u) - p).astype(u.dtype)

        return jax.tree.map(step, updates, params), new_state

    tx = gradient_transformation(init_fn, update_fn)
    return tx if mask is None else optax.masked(tx, mask)


# --------------------------------------------------------------------------
# Gradient centralization.
# --------------------------------------------------------------------------


def _centralize_leaf(g: jax.Array, axis: Any, path: str) -> jax.Array:
    ndim = g.ndim

    def center_keeping(kept: int) -> Callable[[jax.Array], jax.Array]:
        reduce_axes = tuple(a for a in range(ndim) if a != kept)
        return lambda x: x - jnp.mean(x, axis=reduce_axes, keepdims=True)

    if not is_traced(axis):
        axis = int(axis)
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"centralize_gradients: output_axis={axis} is out of range for leaf "
                f"{path or '<root>'} of shape {g.shape}"
            )
        return center_keeping(axis % ndim)(g)

    # A traced axis (e.g. from optax.inject_hyperparams): one branch per axis.
    index = jnp.mod(jnp.asarray(axis, jnp.int32), ndim)
    centered: jax.Array = jax.lax.switch(index, [center_keeping(a) for a in range(ndim)], g)
    return centered


def centralize_gradients(
    output_axis: int | jax.Array = -1, *, conv_only: bool = False
) -> optax.GradientTransformation:
    r"""Gradient Centralization: removes the mean of each output unit's gradient.

    Every leaf with more than one axis (more than three with
    ``conv_only=True``) loses its mean over all axes but the output axis;
    vectors and scalars (biases, norms) pass through. This is the GC operator
    as Ranger 2020.9.4 applies it to the raw gradient; see :func:`lookax.ranger`
    for the reference. Complex params: see :ref:`complex-params`.

    Args:
      output_axis: the axis that indexes output units (negative counts from the
        end). Flax kernels put it last (``Dense`` ``[in, out]``, ``Conv``
        ``[kh, kw, in, out]``), hence the default; PyTorch weights put it first
        (``Linear`` ``[out, in]``): use ``0`` for a torch-layout tree, as
        ``optax.centralize`` does. A traced integer
        (``optax.inject_hyperparams``) works too: each leaf then selects its
        reduction with a ``lax.switch``.
      conv_only: centralize only leaves with ``ndim > 3`` (convolution kernels),
        as Ranger's ``gc_conv_only=True``.

    Returns:
      A stateless :class:`optax.GradientTransformation`.

    Raises:
      TypeError: ``output_axis`` is not an integer or ``conv_only`` not a bool.
      ValueError: (at the first update) ``output_axis`` is out of range for a
        leaf.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.centralize_gradients(output_axis=-1)
      >>> grads = {"kernel": jnp.array([[1.0, 2.0], [3.0, 6.0]]), "bias": jnp.ones(2)}
      >>> updates, _ = tx.update(grads, tx.init(grads))
      >>> print(updates["kernel"])
      [[-1. -2.]
       [ 1.  2.]]
    """
    check_axis("output_axis", output_axis)
    check_flag("conv_only", conv_only)
    min_ndim = 4 if conv_only else 2

    def update_fn(
        updates: optax.Updates, state: optax.EmptyState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.EmptyState]:
        del params

        def centralize(path: Any, g: jax.Array | None) -> jax.Array | None:
            if g is None or jnp.ndim(g) < min_ndim:
                return g
            return _centralize_leaf(g, output_axis, jax.tree_util.keystr(path))

        return jax.tree_util.tree_map_with_path(centralize, updates), state

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    return gradient_transformation(init_fn, update_fn)


# --------------------------------------------------------------------------
# SGD momentum (torch.optim.SGD).
# --------------------------------------------------------------------------


class ScaleByMomentumState(NamedTuple):
    """State of :func:`scale_by_momentum`.

    Attributes:
      count: number of updates so far (int32); the first step is special.
      trace: the momentum buffer (PyTorch's ``momentum_buffer``).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
    trace: optax.Updates


def _check_nesterov(momentum: Any, dampening: Any) -> None:
    momentum_value = concrete_float("momentum", momentum)
    dampening_value = concrete_float("dampening", dampening)
    if momentum_value is not None and momentum_value <= 0.0:
        raise ValueError(f"nesterov=True requires momentum > 0, got momentum={momentum!r}")
    if dampening_value is not None and dampening_value != 0.0:
        raise ValueError(
            f"nesterov=True requires dampening == 0 (as torch.optim.SGD), "
            f"got dampening={dampening!r}"
        )


def scale_by_momentum(
    momentum: float | jax.Array = 0.9,
    dampening: float | jax.Array = 0.0,
    nesterov: bool = False,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Heavy-ball momentum exactly as ``torch.optim.SGD`` keeps it.

    See :func:`lookax.sgd` for the update rule and the reference. Complex
    params: see :ref:`complex-params`.

    Args:
      momentum: :math:`\mu \ge 0`.
      dampening: :math:`\tau \in [0, 1]`.
      nesterov: Nesterov momentum; requires ``momentum > 0`` and
        ``dampening == 0``, as PyTorch.
      mu_dtype: precision of the buffer; ``None`` keeps the params' dtype.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByMomentumState`.
    """
    check_nonnegative("momentum", momentum)
    check_unit_interval("dampening", dampening, include_one=True)
    check_flag("nesterov", nesterov)
    if nesterov:
        _check_nesterov(momentum, dampening)
    mu_dtype = check_mu_dtype(mu_dtype)
    first_step_is_plain = is_concrete_zero(dampening)  # (1 - 0) * g is g already
    momentum = host_float(momentum)
    dampening = host_float(dampening)

    def init_fn(params: optax.Params) -> ScaleByMomentumState:
        return ScaleByMomentumState(
            count=jnp.zeros([], jnp.int32), trace=optax.tree.zeros_like(params, dtype=mu_dtype)
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByMomentumState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByMomentumState]:
        del params
        is_first = state.count == 0

        def new_buffer(g: jax.Array, b: jax.Array) -> jax.Array:
            buffer = cast_scalar(momentum, b) * b + cast_scalar(1 - dampening, g) * g
            return buffer if first_step_is_plain else jnp.where(is_first, g, buffer)

        trace = jax.tree.map(new_buffer, updates, state.trace)
        if nesterov:
            direction = jax.tree.map(
                lambda g, b: (g + cast_scalar(momentum, b) * b).astype(g.dtype), updates, trace
            )
        else:
            direction = jax.tree.map(lambda g, b: b.astype(g.dtype), updates, trace)
        trace = _store_like(trace, state.trace)
        return direction, ScaleByMomentumState(count=safe_increment(state.count), trace=trace)

    return complex_as_real(gradient_transformation(init_fn, update_fn))


# --------------------------------------------------------------------------
# AdaGrad (torch.optim.Adagrad).
# --------------------------------------------------------------------------


class ScaleByAdagradState(NamedTuple):
    """State of :func:`scale_by_adagrad`.

    Attributes:
      sum_of_squares: running sum of squared gradients (PyTorch's ``sum``).
    """

    sum_of_squares: optax.Updates


def scale_by_adagrad(
    initial_accumulator_value: float | jax.Array = 0.0,
    eps: float | jax.Array = 1e-10,
) -> optax.GradientTransformation:
    r"""AdaGrad's direction as ``torch.optim.Adagrad`` computes it.

    See :func:`lookax.adagrad` for the update rule and the reference. Complex
    params: see :ref:`complex-params`.

    Args:
      initial_accumulator_value: :math:`s_0 \ge 0`.
      eps: :math:`\epsilon \ge 0`, outside the square root.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByAdagradState`.
    """
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)
    check_nonnegative("eps", eps)
    initial_accumulator_value = host_float(initial_accumulator_value)
    eps = host_float(eps)

    def init_fn(params: optax.Params) -> ScaleByAdagradState:
        return ScaleByAdagradState(
            sum_of_squares=optax.tree.full_like(params, initial_accumulator_value)
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByAdagradState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByAdagradState]:
        del params
        sum_of_squares = jax.tree.map(
            lambda g, s: (s + g * g).astype(s.dtype), updates, state.sum_of_squares
        )
        direction = jax.tree.map(
            lambda g, s: (g / (jnp.sqrt(s) + cast_scalar(eps, s))).astype(g.dtype),
            updates,
            sum_of_squares,
        )
        return direction, ScaleByAdagradState(sum_of_squares=sum_of_squares)

    return complex_as_real(gradient_transformation(init_fn, update_fn))


# --------------------------------------------------------------------------
# Adam family: shared moment handling.
# --------------------------------------------------------------------------


def _update_moments(
    updates: optax.Updates, mu: optax.Updates, nu: optax.Updates, b1: Any, b2: Any
) -> tuple[optax.Updates, optax.Updates]:
    """PyTorch's ``exp_avg.lerp_(g, 1 - b1)`` and ``exp_avg_sq`` EMA (unrounded)."""
    new_mu = optax.tree.update_moment(updates, mu, b1, 1)
    new_nu = optax.tree.update_moment_per_elem_norm(updates, nu, b2, 2)
    return new_mu, new_nu


def _store_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, old: x.astype(old.dtype), tree, like)


def _zero_moments(params: optax.Params, mu_dtype: Any) -> dict[str, Any]:
    """The count and zero first and second moments that every Adam-like state starts with."""
    return {
        "count": jnp.zeros([], jnp.int32),
        "mu": optax.tree.zeros_like(params, dtype=mu_dtype),
        "nu": optax.tree.zeros_like(params),
    }


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`.

    Attributes:
      count: number of updates so far (int32).
      mu: first moment (PyTorch's ``exp_avg``).
      nu: second moment (``exp_avg_sq``).
      nu_max: running maximum of ``nu`` (``max_exp_avg_sq``) with
        ``amsgrad=True``; ``None`` otherwise.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None = None


def scale_by_adam(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    *,
    amsgrad: bool = False,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Adam's direction as ``torch.optim.Adam`` computes it.

    See :func:`lookax.adam` for the update rule and the reference. Complex
    params: see :ref:`complex-params`.

    Args:
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`, added to the bias-corrected root.
      amsgrad: keep the running maximum of :math:`v_t` (extra state).
      mu_dtype: precision of :math:`m`; ``None`` keeps the params' dtype.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByAdamState`.
    """
    check_adam_like(b1, b2, eps)
    check_flag("amsgrad", amsgrad)
    mu_dtype = check_mu_dtype(mu_dtype)
    b1, b2, eps = host_float(b1), host_float(b2), host_float(eps)

    def init_fn(params: optax.Params) -> ScaleByAdamState:
        nu_max = optax.tree.zeros_like(params) if amsgrad else None
        return ScaleByAdamState(**_zero_moments(params, mu_dtype), nu_max=nu_max)

    def update_fn(
        updates: optax.Updates, state: ScaleByAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByAdamState]:
        del params
        count = safe_increment(state.count)
        t = step_as_float(count)
        inv_bias_correction1 = 1 / one_minus_power(log_beta(b1), t)
        sqrt_bias_correction2 = jnp.sqrt(one_minus_power(log_beta(b2), t))
        mu, nu = _update_moments(updates, state.mu, state.nu, b1, b2)
        nu_max = None
        if amsgrad:
            nu_max = jax.tree.map(
                lambda v, old: jnp.maximum(old, v).astype(old.dtype), nu, state.nu_max
            )

        def direction(g: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
            denom = jnp.sqrt(v) / cast_scalar(sqrt_bias_correction2, v) + cast_scalar(eps, v)
            return (m * cast_scalar(inv_bias_correction1, m) / denom).astype(g.dtype)

        updates = jax.tree.map(direction, updates, mu, nu_max if amsgrad else nu)
        new_state = ScaleByAdamState(
            count=count,
            mu=_store_like(mu, state.mu),
            nu=_store_like(nu, state.nu),
            nu_max=nu_max,
        )
        return updates, new_state

    return complex_as_real(gradient_transformation(init_fn, update_fn))


# --------------------------------------------------------------------------
# NAdam (torch.optim.NAdam).
# --------------------------------------------------------------------------


class ScaleByNadamState(NamedTuple):
    r"""State of :func:`scale_by_nadam`.

    Attributes:
      count: number of updates so far (int32).
      mu: first moment (``exp_avg``).
      nu: second moment (``exp_avg_sq``).
      log_factor_product: :math:`\log \prod_{i \le t} \mu_i - t \log\beta_1`
        (0 at the start), in the step-scalar dtype (float32, float64 under
        x64); PyTorch stores the product itself (``mu_product``).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
    mu: optax.Updates
    nu: optax.Updates
    log_factor_product: jax.Array


def scale_by_nadam(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    momentum_decay: float | jax.Array = 4e-3,
    *,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""NAdam's direction as ``torch.optim.NAdam`` computes it.

    See :func:`lookax.nadam` for the update rule and the reference. Complex
    params: see :ref:`complex-params`.

    Args:
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`, added to the bias-corrected root.
      momentum_decay: :math:`\psi \ge 0` (PyTorch's default ``4e-3``).
      mu_dtype: precision of :math:`m`; ``None`` keeps the params' dtype.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByNadamState`.
    """
    check_adam_like(b1, b2, eps)
    check_nonnegative("momentum_decay", momentum_decay)
    mu_dtype = check_mu_dtype(mu_dtype)
    b1, b2, eps = host_float(b1), host_float(b2), host_float(eps)
    momentum_decay = host_float(momentum_decay)

    def init_fn(params: optax.Params) -> ScaleByNadamState:
        return ScaleByNadamState(
            **_zero_moments(params, mu_dtype), log_factor_product=jnp.zeros([], scalar_dtype())
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByNadamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByNadamState]:
        del params
        count = safe_increment(state.count)
        t = step_as_float(count)
        grad_coefficient, momentum_coefficient, log_factors = nadam_coefficients(
            b1, momentum_decay, state.log_factor_product, t
        )
        bias_correction2 = one_minus_power(log_beta(b2), t)
        mu, nu = _update_moments(updates, state.mu, state.nu, b1, b2)

        def direction(g: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
            denom = jnp.sqrt(v / cast_scalar(bias_correction2, v)) + cast_scalar(eps, v)
            numerator = (
                cast_scalar(grad_coefficient, g) * g + cast_scalar(momentum_coefficient, m) * m
            )
            return (numerator / denom).astype(g.dtype)

        updates = jax.tree.map(direction, updates, mu, nu)
        new_state = ScaleByNadamState(
            count=count,
            mu=_store_like(mu, state.mu),
            nu=_store_like(nu, state.nu),
            log_factor_product=log_factors.astype(state.log_factor_product.dtype),
        )
        return updates, new_state

    return complex_as_real(gradient_transformation(init_fn, update_fn))


# --------------------------------------------------------------------------
# RAdam (torch.optim.RAdam).
# --------------------------------------------------------------------------


class ScaleByRAdamState(NamedTuple):
    """State of :func:`scale_by_radam`.

    Attributes:
      count: number of updates so far (int32).
      mu: first moment (``exp_avg``).
      nu: second moment (``exp_avg_sq``).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
    mu: optax.Updates
    nu: optax.Updates


def scale_by_radam(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    *,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""RAdam's direction as ``torch.optim.RAdam`` computes it.

    See :func:`lookax.radam` for the update rule and the reference. Complex
    params: see :ref:`complex-params`.

    Args:
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`, added to the uncorrected :math:`\sqrt{v_t}`.
      mu_dtype: precision of :math:`m`; ``None`` keeps the params' dtype.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByRAdamState`.
    """
    check_adam_like(b1, b2, eps)
    mu_dtype = check_mu_dtype(mu_dtype)
    b1, b2, eps = host_float(b1), host_float(b2), host_float(eps)

    def init_fn(params: optax.Params) -> ScaleByRAdamState:
        return ScaleByRAdamState(**_zero_moments(params, mu_dtype))

    def update_fn(
        updates: optax.Updates, state: ScaleByRAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByRAdamState]:
        del params
        count = safe_increment(state.count)
        t = step_as_float(count)
        inv_bias_correction1 = 1 / one_minus_power(log_beta(b1), t)
        sqrt_bias_correction2 = jnp.sqrt(one_minus_power(log_beta(b2), t))
        _, rectified, rect = radam_rectification(b2, t)
        rectified_scale = rect * sqrt_bias_correction2 * inv_bias_correction1
        mu, nu = _update_moments(updates, state.mu, state.nu, b1, b2)

        def direction(g: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
            adaptive = cast_scalar(rectified_scale, v) / (jnp.sqrt(v) + cast_scalar(eps, v))
            scale = jnp.where(rectified, adaptive, cast_scalar(inv_bias_correction1, v))
            return (m * scale).astype(g.dtype)

        updates = jax.tree.map(direction, updates, mu, nu)
        new_state = ScaleByRAdamState(
            count=count, mu=_store_like(mu, state.mu), nu=_store_like(nu, state.nu)
        )
        return updates, new_state

    return complex_as_real(gradient_transformation(init_fn, update_fn))
