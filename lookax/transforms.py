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
moment, NAdam's momentum schedule, RAdam's rectification) and
:func:`centralize_gradients`.

Step-dependent scalars (bias corrections, NAdam's :math:`\mu`-product, RAdam's
:math:`\rho_t` and rectification) are computed so that they keep float32
accuracy at every step: PyTorch computes them in float64 on the host, and the
textbook formulas lose up to several digits in float32 (a naive float32 RAdam
rectification term is 0.18% off at step 6 with ``b2=0.999``).

Complex parameters follow PyTorch: every ``scale_by_*`` piece treats a complex
number as two real parameters (``torch.view_as_real``), so the real and
imaginary parts have their own second moments and AMSGrad maxima, where optax
shares :math:`|g|^2` between them. State leaves keep the params' shape and
dtype (a per-part second moment is stored as the complex number
:math:`v_{re} + i\,v_{im}`), and ``mu_dtype`` gives the precision: a complex
leaf's first moment is complex, a real leaf's real. Pass gradients as JAX users
pass them to optax, the conjugate of ``jax.grad``'s output (PyTorch's
``.grad``). The complex branch is chosen statically by dtype: a tree without
complex leaves runs the real code alone.

Hyperparameters: concrete Python/NumPy/JAX scalars are validated at
construction and raise ``ValueError`` naming the argument; traced values (for
example from ``optax.inject_hyperparams`` under ``jit``) cannot be checked and
are used as given. Concrete Python/NumPy hyperparameters are used in float64 on
the host for the derived constants (``1 - b``, ``log(b)``), as PyTorch does;
JAX-array hyperparameters (what ``optax.inject_hyperparams`` passes) are used
at their own precision, so ``b2=0.999`` held as a float32 array means
``b2=0.99900001``.
"""

from __future__ import annotations

import fractions
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lookax._checks import (
    check_flag,
    check_learning_rate,
    check_mu_dtype,
    check_nonnegative,
    check_unit_interval,
    concrete_float,
    is_traced,
    state_dtype_for,
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
# Hyperparameter helpers (shared with lookax.optimizers).
# --------------------------------------------------------------------------


def _host_float(value: Any) -> Any:
    """Concrete Python/NumPy scalars become Python floats; JAX arrays pass through.

    Python floats are weakly typed in JAX (they take the dtype of the array they
    meet, so bf16 state stays bf16) and let the derived constants be computed in
    float64 on the host. Complex values give their real part: over complex params
    ``optax.inject_hyperparams`` casts hyperparameters to a complex dtype, and a
    complex scalar in the real view would turn it complex again.
    """
    if isinstance(value, int | float | np.number | np.ndarray) and not isinstance(
        value, bool | np.bool_
    ):
        return float(np.real(value))
    if isinstance(value, jax.Array) and _is_complex(value):
        return jnp.real(value)
    return value


def _is_concrete_zero(value: Any) -> bool:
    """True only for a Python or NumPy zero (never for a JAX array)."""
    return (
        isinstance(value, int | float | np.number | np.ndarray)
        and not isinstance(value, bool | np.bool_)
        and np.ndim(value) == 0
        and float(value) == 0.0
    )


def _scalar_dtype() -> Any:
    """dtype of step scalars: float64 under ``jax_enable_x64``, else float32."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _scalar(value: Any) -> Any:
    """A hyperparameter ready for scalar arithmetic in the step-scalar dtype."""
    if isinstance(value, float):
        return value
    return jnp.asarray(value, dtype=_scalar_dtype())


def _cast_scalar(value: Any, like: jax.Array) -> float | jax.Array:
    """A scalar for element-wise math with ``like``, in ``like``'s dtype."""
    if isinstance(value, float):
        return value
    return jnp.asarray(value).astype(jnp.result_type(like))


def _log_beta(beta: Any) -> Any:
    """``log(beta)`` accurate for ``beta`` near 1: ``log1p(-(1 - beta))``."""
    if isinstance(beta, float):
        with np.errstate(divide="ignore"):
            return float(np.log1p(-(1.0 - beta)))
    beta = _scalar(beta)
    return jnp.log1p(-(1 - beta))


def _one_minus_power(log_beta: Any, t: jax.Array) -> jax.Array:
    """``1 - beta**t`` as ``-expm1(t * log(beta))``: no cancellation for small t."""
    return -jnp.expm1(t * log_beta)


def _step_as_float(count: jax.Array) -> jax.Array:
    return count.astype(_scalar_dtype())


def _zeros_like(params: optax.Params, dtype: Any = None) -> Any:
    return optax.tree.zeros_like(params, dtype=dtype)


# --------------------------------------------------------------------------
# Complex parameters: PyTorch's real view.
# --------------------------------------------------------------------------


def _is_complex(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.complexfloating)


def _has_complex(tree: Any) -> bool:
    return any(_is_complex(x) for x in jax.tree.leaves(tree))


def _as_real(x: Any) -> Any:
    """``torch.view_as_real``: a complex leaf as real numbers on a trailing (re, im) axis."""
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1) if _is_complex(x) else x


def _from_real(y: jax.Array, dtype: Any) -> jax.Array:
    """The inverse of :func:`_as_real`, as the complex ``dtype``."""
    part = jnp.finfo(dtype).dtype  # complex64 -> float32
    return jax.lax.complex(y[..., 0].astype(part), y[..., 1].astype(part))


def _back_like(new: Any, old: Any) -> Any:
    """``new`` (computed on the real view) complex again where ``old`` was complex."""
    return _from_real(new, jnp.result_type(old)) if _is_complex(old) else new


def _complex_as_real(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` with PyTorch's rule for complex leaves: two real numbers each.

    PyTorch's optimizers apply ``torch.view_as_real`` to a complex parameter,
    its gradient and its state, so the real and imaginary parts have their own
    second moments, AMSGrad maxima and Lion signs (optax instead shares
    :math:`|g|^2` between them). ``tx`` must be element-wise and keep its
    per-parameter state in params-shaped trees (``optax.tree.map_params``
    finds them); its ``mu_dtype``, if any, must be real (it is the precision;
    a complex leaf's state is the complex dtype of that precision, e.g.
    ``bfloat16`` or ``float32`` give ``complex64``).

    A tree without complex leaves goes straight to ``tx`` (the choice is
    static, by dtype), so real params compile to exactly what ``tx`` compiles
    to. Otherwise ``tx`` runs on the real view, where complex leaves carry a
    trailing axis of size 2 and real leaves are left as they are, and its
    results are turned back into complex numbers.
    """

    def init_fn(params: optax.Params) -> optax.OptState:
        if not _has_complex(params):
            return tx.init(params)
        state = tx.init(jax.tree.map(_as_real, params))

        def back(leaf: jax.Array, param: Any) -> jax.Array:
            if not _is_complex(param):
                return leaf
            return _from_real(leaf, state_dtype_for(leaf.dtype, jnp.result_type(param)))

        return optax.tree.map_params(tx, back, state, params)

    def update_fn(
        updates: optax.Updates, state: optax.OptState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.OptState]:
        if not _has_complex(updates):
            return tx.update(updates, state, params)
        # The state of a complex leaf is complex (init_fn), and only then.
        real_view = jax.tree.map(_as_real, (updates, state, params))
        new_updates, new_state = tx.update(*real_view)
        return (
            jax.tree.map(_back_like, new_updates, updates),
            jax.tree.map(_back_like, new_state, state),
        )

    return gradient_transformation(init_fn, update_fn)


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
    r"""Decoupled weight decay as PyTorch applies it: shrink, then step.

    Placed after ``optax.scale_by_learning_rate`` (so the incoming updates are
    the step :math:`u_t = -\eta_t d_t`), it returns updates that move the
    params to

    .. math::

      \theta_t = \theta_{t-1}\,(1 - \eta_t\lambda) + u_t

    i.e. PyTorch's ``p.mul_(1 - lr * weight_decay)`` followed by
    ``p.add_(step)`` (``torch.optim.AdamW``, ``NAdam``/``RAdam`` with
    ``decoupled_weight_decay=True``, ``lion_pytorch.Lion``). Mathematically
    this is ``optax.add_decayed_weights`` placed before the learning rate
    (:math:`u_t - \eta_t\lambda\theta_{t-1}`, what ``optax.adamw`` does); the
    difference is rounding: the returned update is
    :math:`(\theta(1-\eta\lambda) + u) - \theta`, which is exact whenever the
    old and new params are within a factor 2 of each other, so
    ``optax.apply_updates`` lands on PyTorch's rounded value (up to where XLA
    contracts the multiply-add). Over hundreds of steps the two roundings
    otherwise drift apart by ~1e-5 relative (e.g. Lion, whose steps are all
    of one size). Complex params shrink as complex numbers, which is
    PyTorch's rule too (the shrink is the same for both parts).

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

    References:
      Loshchilov, Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019; ``torch.optim.AdamW``.
    """
    check_learning_rate(learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    skip = _is_concrete_zero(weight_decay)
    if not callable(learning_rate):
        learning_rate = _host_float(learning_rate)
    weight_decay = _host_float(weight_decay)

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
            keep = 1 - _scalar(rate) * _scalar(weight_decay)

        def step(u: jax.Array, p: jax.Array) -> jax.Array:
            # The select keeps XLA from contracting the multiply-add into an FMA,
            # so the shrink is rounded on its own, as PyTorch's separate p.mul_.
            # (NaN params still give NaN updates through the subtraction.)
            shrunk = jnp.where(p == p, p * _cast_scalar(keep, p), 0)
            return ((shrunk + u) - p).astype(u.dtype)

        return jax.tree.map(step, updates, params), new_state

    tx = gradient_transformation(init_fn, update_fn)
    return tx if mask is None else optax.masked(tx, mask)


# --------------------------------------------------------------------------
# Gradient centralization.
# --------------------------------------------------------------------------


def _validate_axis(name: str, axis: Any) -> None:
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
        raise ValueError(f"{name} must be an integer axis, got {axis!r}")


def _centralize_leaf(g: jax.Array, axis: Any, path: str) -> jax.Array:
    ndim = g.ndim
    if not is_traced(axis):
        axis = int(axis)
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"centralize_gradients: output_axis={axis} is out of range for leaf "
                f"{path or '<root>'} of shape {g.shape}"
            )
        reduce_axes = tuple(a for a in range(ndim) if a != axis % ndim)
        return g - jnp.mean(g, axis=reduce_axes, keepdims=True)

    # A traced axis (e.g. from optax.inject_hyperparams): one branch per axis.
    def center_keeping(kept: int) -> Callable[[jax.Array], jax.Array]:
        reduce_axes = tuple(a for a in range(ndim) if a != kept)
        return lambda x: x - jnp.mean(x, axis=reduce_axes, keepdims=True)

    index = jnp.mod(jnp.asarray(axis, jnp.int32), ndim)
    centered: jax.Array = jax.lax.switch(index, [center_keeping(a) for a in range(ndim)], g)
    return centered


def centralize_gradients(
    output_axis: int | jax.Array = -1, *, conv_only: bool = False
) -> optax.GradientTransformation:
    r"""Gradient Centralization: removes the mean of each output unit's gradient.

    For every leaf with more than one axis (more than three with
    ``conv_only=True``) and each index :math:`j` of the output axis,

    .. math::

      g_{\ldots j \ldots} \leftarrow g_{\ldots j \ldots}
          - \operatorname{mean}_{\text{all axes but the output axis}} g_{\ldots j \ldots}

    Vectors and scalars (biases, norms) pass through unchanged. This is the GC
    operator of Yong et al. 2020 as Ranger 2020.9.4 applies it to the raw
    gradient (``centralized_gradient`` with ``gc_conv_only``).

    Layout: Flax kernels put the output axis last (``Dense`` ``[in, out]``,
    ``Conv`` ``[kh, kw, in, out]``), hence the default ``output_axis=-1``.
    PyTorch weights put it first (``Linear`` ``[out, in]``, ``Conv2d``
    ``[out, in, kh, kw]``): use ``output_axis=0`` for a torch-layout tree; that
    is also what ``optax.centralize`` does.

    Complex leaves are centralized as complex numbers, i.e. their real and
    imaginary parts each on their own, as PyTorch's two-real-parameters rule.

    Args:
      output_axis: the axis that indexes output units (negative counts from the
        end). A traced integer (``optax.inject_hyperparams``) works too: each
        leaf then selects its reduction with a ``lax.switch``.
      conv_only: centralize only leaves with ``ndim > 3`` (convolution kernels),
        as Ranger's ``gc_conv_only=True``.

    Returns:
      A stateless :class:`optax.GradientTransformation`.

    Raises:
      ValueError: ``output_axis`` is not an integer, ``conv_only`` not a bool,
        or (at the first update) ``output_axis`` is out of range for a leaf.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.centralize_gradients(output_axis=-1)
      >>> grads = {"kernel": jnp.array([[1.0, 2.0], [3.0, 6.0]]), "bias": jnp.ones(2)}
      >>> updates, _ = tx.update(grads, tx.init(grads))
      >>> print(updates["kernel"])
      [[-1. -2.]
       [ 1.  2.]]

    References:
      Yong, Huang, Hua, Zhang, `Gradient Centralization: A New Optimization
      Technique for Deep Neural Networks <https://arxiv.org/abs/2004.01461>`_,
      ECCV 2020.
    """
    _validate_axis("output_axis", output_axis)
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
      trace: the momentum buffer (PyTorch's ``momentum_buffer``), in
        ``mu_dtype`` or the params' dtype.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
    trace: optax.Updates


def scale_by_momentum(
    momentum: float | jax.Array = 0.9,
    dampening: float | jax.Array = 0.0,
    nesterov: bool = False,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Heavy-ball momentum exactly as ``torch.optim.SGD`` keeps it.

    With momentum :math:`\mu` and dampening :math:`\tau`, the buffer starts as
    the first gradient and then accumulates dampened gradients:

    .. math::

      b_1 = g_1, \qquad b_t = \mu\, b_{t-1} + (1 - \tau)\, g_t \quad (t > 1), \\
      d_t = b_t \quad\text{or, with Nesterov,}\quad d_t = g_t + \mu\, b_t .

    The buffer holds gradients, not learning-rate-scaled steps, so a learning
    rate schedule applied afterwards (``optax.scale_by_learning_rate``) matches
    PyTorch's LR schedulers. With ``dampening=0`` this computes what
    ``optax.trace`` computes; PyTorch's first step (:math:`b_1 = g_1`, not
    :math:`(1-\tau) g_1`) is why it needs a step counter. Complex params:
    the buffer is complex, which is PyTorch's real-view rule for a linear
    update (see the module docs for ``mu_dtype``).

    Args:
      momentum: :math:`\mu \ge 0`.
      dampening: :math:`\tau \in [0, 1]`.
      nesterov: Nesterov momentum; requires ``momentum > 0`` and
        ``dampening == 0``, as PyTorch.
      mu_dtype: precision of the buffer (complex for complex params);
        ``None`` keeps the params' dtype.

    Concrete hyperparameters are validated here (``ValueError`` naming the
    argument); traced ones are used as given.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByMomentumState`.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = optax.chain(lookax.scale_by_momentum(0.9, dampening=0.5),
      ...                  optax.scale_by_learning_rate(0.1))
      >>> state = tx.init(jnp.zeros(1))
      >>> for _ in range(2):
      ...     updates, state = tx.update(jnp.ones(1), state)
      >>> print(updates)  # -0.1 * (0.9 * 1 + 0.5 * 1)
      [-0.14]

    References:
      Sutskever, Martens, Dahl, Hinton, `On the importance of initialization
      and momentum in deep learning <https://proceedings.mlr.press/v28/sutskever13.html>`_,
      ICML 2013; ``torch.optim.SGD``.
    """
    check_nonnegative("momentum", momentum)
    check_unit_interval("dampening", dampening, include_one=True)
    check_flag("nesterov", nesterov)
    if nesterov:
        momentum_value = concrete_float("momentum", momentum)
        dampening_value = concrete_float("dampening", dampening)
        if momentum_value is not None and momentum_value <= 0.0:
            raise ValueError(f"nesterov=True requires momentum > 0, got momentum={momentum!r}")
        if dampening_value is not None and dampening_value != 0.0:
            raise ValueError(
                f"nesterov=True requires dampening == 0 (as torch.optim.SGD), "
                f"got dampening={dampening!r}"
            )
    mu_dtype = check_mu_dtype(mu_dtype)
    first_step_is_plain = _is_concrete_zero(dampening)  # (1 - 0) * g is g already
    momentum = _host_float(momentum)
    dampening = _host_float(dampening)

    def init_fn(params: optax.Params) -> ScaleByMomentumState:
        return ScaleByMomentumState(
            count=jnp.zeros([], jnp.int32), trace=_zeros_like(params, mu_dtype)
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByMomentumState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByMomentumState]:
        del params
        is_first = state.count == 0

        def new_buffer(g: jax.Array, b: jax.Array) -> jax.Array:
            buffer = _cast_scalar(momentum, b) * b + _cast_scalar(1 - dampening, g) * g
            return buffer if first_step_is_plain else jnp.where(is_first, g, buffer)

        trace = jax.tree.map(new_buffer, updates, state.trace)
        if nesterov:
            direction = jax.tree.map(
                lambda g, b: (g + _cast_scalar(momentum, b) * b).astype(g.dtype), updates, trace
            )
        else:
            direction = jax.tree.map(lambda g, b: b.astype(g.dtype), updates, trace)
        trace = jax.tree.map(lambda b, old: b.astype(old.dtype), trace, state.trace)
        return direction, ScaleByMomentumState(count=safe_increment(state.count), trace=trace)

    return _complex_as_real(gradient_transformation(init_fn, update_fn))


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

    .. math::

      s_t = s_{t-1} + g_t^2, \qquad s_0 = \text{initial\_accumulator\_value}, \\
      d_t = \frac{g_t}{\sqrt{s_t} + \epsilon}

    ``eps`` is outside the square root, as PyTorch; ``optax.scale_by_rss``
    instead computes :math:`g_t / \sqrt{s_t + \epsilon}` (and defaults to
    :math:`s_0 = 0.1`). PyTorch's ``lr_decay`` is a learning-rate schedule and
    lives in :func:`lookax.adagrad`. Complex params: :math:`s` sums the squares
    of the real and of the imaginary parts separately, as PyTorch's
    ``view_as_real`` (stored as :math:`s_{re} + i\,s_{im}`).

    Args:
      initial_accumulator_value: :math:`s_0 \ge 0`.
      eps: :math:`\epsilon \ge 0`.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByAdagradState`.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.scale_by_adagrad()
      >>> updates, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> print(updates)  # 2 / sqrt(4)
      [1.]

    References:
      Duchi, Hazan, Singer, `Adaptive Subgradient Methods for Online Learning
      and Stochastic Optimization <https://jmlr.org/papers/v12/duchi11a.html>`_,
      JMLR 2011; ``torch.optim.Adagrad``.
    """
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)
    check_nonnegative("eps", eps)
    initial_accumulator_value = _host_float(initial_accumulator_value)
    eps = _host_float(eps)

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
            lambda g, s: (g / (jnp.sqrt(s) + _cast_scalar(eps, s))).astype(g.dtype),
            updates,
            sum_of_squares,
        )
        return direction, ScaleByAdagradState(sum_of_squares=sum_of_squares)

    return _complex_as_real(gradient_transformation(init_fn, update_fn))


# --------------------------------------------------------------------------
# Adam family: shared moment handling.
# --------------------------------------------------------------------------


def _validate_adam_like(b1: Any, b2: Any, eps: Any) -> None:
    check_unit_interval("b1", b1, include_one=False)
    check_unit_interval("b2", b2, include_one=False)
    check_nonnegative("eps", eps)


def _update_moments(
    updates: optax.Updates, mu: optax.Updates, nu: optax.Updates, b1: Any, b2: Any
) -> tuple[optax.Updates, optax.Updates]:
    """PyTorch's ``exp_avg.lerp_(g, 1 - b1)`` and ``exp_avg_sq`` EMA (unrounded)."""
    new_mu = optax.tree.update_moment(updates, mu, b1, 1)
    new_nu = optax.tree.update_moment_per_elem_norm(updates, nu, b2, 2)
    return new_mu, new_nu


def _store_like(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, old: x.astype(old.dtype), tree, like)


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`.

    Attributes:
      count: number of updates so far (int32).
      mu: first moment (PyTorch's ``exp_avg``), in ``mu_dtype`` or the
        params' dtype.
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

    .. math::

      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
      \hat v_t = v_t \ \text{or, with AMSGrad,}\ \max(\hat v_{t-1}, v_t), \\
      d_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t} / \sqrt{1-\beta_2^t} + \epsilon}

    AMSGrad takes the maximum of the raw :math:`v_t` and bias-corrects
    afterwards, as PyTorch (``optax.scale_by_amsgrad`` takes the maximum of the
    bias-corrected :math:`v_t`, which differs). Bias corrections are computed as
    :math:`1-\beta^t = -\mathrm{expm1}(t \log \beta)` with
    :math:`\log\beta = \mathrm{log1p}(-(1-\beta))`, accurate in float32 at every
    step; ``optax.scale_by_adam`` computes ``1 - b**t`` in float32, which is up
    to ~1e-5 relatively off in the first steps for ``b2=0.999``. Otherwise this
    is ``optax.scale_by_adam`` (``eps_root=0``) for real params. Complex
    params: the real and imaginary parts have their own :math:`v_t` and AMSGrad
    maximum, as PyTorch's ``view_as_real`` (``optax.scale_by_adam`` shares
    :math:`|g|^2` between them).

    Args:
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`, added to the bias-corrected root.
      amsgrad: keep the running maximum of :math:`v_t` (extra state).
      mu_dtype: precision of :math:`m` (a floating or complex dtype; complex
        for complex params); ``None`` keeps the params' dtype.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByAdamState`.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.scale_by_adam()
      >>> updates, state = tx.update(jnp.array([0.5]), tx.init(jnp.zeros(1)))
      >>> print(updates)  # the first Adam direction is g / (|g| + eps)
      [1.]

    References:
      Kingma, Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015; Reddi, Kale, Kumar, `On
      the Convergence of Adam and Beyond <https://openreview.net/forum?id=ryQu7f-RZ>`_,
      ICLR 2018; ``torch.optim.Adam``.
    """
    _validate_adam_like(b1, b2, eps)
    check_flag("amsgrad", amsgrad)
    mu_dtype = check_mu_dtype(mu_dtype)
    b1, b2, eps = _host_float(b1), _host_float(b2), _host_float(eps)

    def init_fn(params: optax.Params) -> ScaleByAdamState:
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=_zeros_like(params, mu_dtype),
            nu=_zeros_like(params),
            nu_max=_zeros_like(params) if amsgrad else None,
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByAdamState]:
        del params
        count = safe_increment(state.count)
        t = _step_as_float(count)
        inv_bias_correction1 = 1 / _one_minus_power(_log_beta(b1), t)
        sqrt_bias_correction2 = jnp.sqrt(_one_minus_power(_log_beta(b2), t))
        mu, nu = _update_moments(updates, state.mu, state.nu, b1, b2)
        nu_max = None
        if amsgrad:
            nu_max = jax.tree.map(
                lambda v, old: jnp.maximum(old, v).astype(old.dtype), nu, state.nu_max
            )

        def direction(g: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
            denom = jnp.sqrt(v) / _cast_scalar(sqrt_bias_correction2, v) + _cast_scalar(eps, v)
            return (m * _cast_scalar(inv_bias_correction1, m) / denom).astype(g.dtype)

        updates = jax.tree.map(direction, updates, mu, nu_max if amsgrad else nu)
        new_state = ScaleByAdamState(
            count=count,
            mu=_store_like(mu, state.mu),
            nu=_store_like(nu, state.nu),
            nu_max=nu_max,
        )
        return updates, new_state

    return _complex_as_real(gradient_transformation(init_fn, update_fn))


# --------------------------------------------------------------------------
# NAdam (torch.optim.NAdam).
# --------------------------------------------------------------------------


class ScaleByNadamState(NamedTuple):
    r"""State of :func:`scale_by_nadam`.

    Attributes:
      count: number of updates so far (int32).
      mu: first moment (``exp_avg``), in ``mu_dtype`` or the params' dtype.
      nu: second moment (``exp_avg_sq``).
      log_factor_product: :math:`\sum_{i \le t} \log(1 - \tfrac12\,0.96^{i\psi})`,
        i.e. :math:`\log \prod_{i \le t} \mu_i - t \log\beta_1` (0 at the
        start), a scalar in the step-scalar dtype (float32, float64 under x64).
        PyTorch stores the product itself (``mu_product``, a float32 tensor);
        the update needs :math:`1 - \prod`, which this gives without
        cancellation (``-expm1``) whether the product is near 1 or near 0.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
    mu: optax.Updates
    nu: optax.Updates
    log_factor_product: jax.Array


_LOG_096 = math.log(0.96)


def scale_by_nadam(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    momentum_decay: float | jax.Array = 4e-3,
    *,
    mu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""NAdam's direction as ``torch.optim.NAdam`` computes it.

    With the momentum schedule
    :math:`\mu_t = \beta_1 (1 - \tfrac12\, 0.96^{t\,\psi})` (:math:`\psi` the
    ``momentum_decay``) and :math:`\Pi_t = \prod_{i \le t} \mu_i`:

    .. math::

      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
      d_t = \left(\frac{1-\mu_t}{1-\Pi_t}\, g_t
            + \frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\, m_t\right)
            \Big/ \left(\sqrt{v_t / (1-\beta_2^t)} + \epsilon\right)

    Float32 accuracy: :math:`1-\mu_t = (1-\beta_1) + \tfrac12\beta_1
    0.96^{t\psi}` is a sum of positive terms; with
    :math:`\log\Pi_t = t\log\beta_1 + \sum_{i\le t}\mathrm{log1p}(-\tfrac12\,0.96^{i\psi})`
    (the first part in closed form, the sum carried in the state) the update
    uses :math:`1-\Pi_t = -\mathrm{expm1}(\log\Pi_t)` and
    :math:`1-\Pi_t\mu_{t+1} = -\mathrm{expm1}(\log\Pi_t + \log\mu_{t+1})`,
    so every coefficient keeps float32 accuracy whether :math:`\Pi_t` is near 0
    (the usual case) or near 1 (a huge ``momentum_decay``): :math:`1-\Pi_t`
    stays within 4e-7 (relative) of float64 over 1000 steps for ``b1`` in
    {0.9, 0.99, 0.999} and ``momentum_decay`` from 4e-3 to 1e3, where a
    float32 running product (PyTorch's ``mu_product``) drifts by up to 3e-5.
    ``optax.nadam`` is a different
    algorithm: Adam with Nesterov momentum at constant :math:`\mu = \beta_1`.
    Complex params: the real and imaginary parts have their own :math:`v_t`,
    as PyTorch's ``view_as_real``.

    Args:
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`, added to the bias-corrected root.
      momentum_decay: :math:`\psi \ge 0` (PyTorch's default ``4e-3``).
      mu_dtype: precision of :math:`m` (a floating or complex dtype; complex
        for complex params); ``None`` keeps the params' dtype.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByNadamState`.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.scale_by_nadam()
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> print(updates.round(4))  # as torch.optim.NAdam(lr=1.0)'s first step
      [ 1.0565 -1.0565]

    References:
      Dozat, `Incorporating Nesterov Momentum into Adam
      <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_, ICLR 2016
      workshop; ``torch.optim.NAdam``.
    """
    _validate_adam_like(b1, b2, eps)
    check_nonnegative("momentum_decay", momentum_decay)
    mu_dtype = check_mu_dtype(mu_dtype)
    b1, b2, eps = _host_float(b1), _host_float(b2), _host_float(eps)
    momentum_decay = _host_float(momentum_decay)

    def init_fn(params: optax.Params) -> ScaleByNadamState:
        return ScaleByNadamState(
            count=jnp.zeros([], jnp.int32),
            mu=_zeros_like(params, mu_dtype),
            nu=_zeros_like(params),
            log_factor_product=jnp.zeros([], _scalar_dtype()),
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByNadamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByNadamState]:
        del params
        count = safe_increment(state.count)
        t = _step_as_float(count)
        beta1 = _scalar(b1)
        log_b1 = _log_beta(b1)
        decay_exponent = _scalar(momentum_decay) * _LOG_096  # log(0.96 ** psi)

        def momentum_schedule(step: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
            """(mu, 1 - mu, log(mu / b1)) at ``step``; 1 - mu as a sum of positive terms."""
            half_decayed = 0.5 * jnp.exp(step * decay_exponent)
            mu = beta1 * (1 - half_decayed)
            return mu, (1 - beta1) + beta1 * half_decayed, jnp.log1p(-half_decayed)

        _, one_minus_mu_now, log_factor_now = momentum_schedule(t)
        mu_next, one_minus_mu_next, log_factor_next = momentum_schedule(t + 1)
        # log(prod mu_i) = t log(b1) + sum log(1 - 0.96**(i psi) / 2): the b1 part in
        # closed form (a long sum of equal terms would drift), the rest accumulated.
        log_factors = state.log_factor_product.astype(t.dtype) + log_factor_now
        log_product = t * log_b1 + log_factors
        one_minus_product = -jnp.expm1(log_product)
        one_minus_product_next = -jnp.expm1(log_product + log_b1 + log_factor_next)
        grad_coefficient = one_minus_mu_now / one_minus_product
        momentum_coefficient = mu_next / one_minus_product_next
        bias_correction2 = _one_minus_power(_log_beta(b2), t)

        mu, nu = _update_moments(updates, state.mu, state.nu, b1, b2)

        def direction(g: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
            denom = jnp.sqrt(v / _cast_scalar(bias_correction2, v)) + _cast_scalar(eps, v)
            numerator = (
                _cast_scalar(grad_coefficient, g) * g + _cast_scalar(momentum_coefficient, m) * m
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

    return _complex_as_real(gradient_transformation(init_fn, update_fn))


# --------------------------------------------------------------------------
# RAdam (torch.optim.RAdam).
# --------------------------------------------------------------------------


def _langevin_series_coefficients(terms: int) -> tuple[float, ...]:
    r"""Taylor coefficients of :math:`\coth x - 1/x = \sum_k c_k x^{2k-1}`.

    :math:`c_k = 2^{2k} B_{2k} / (2k)!` with Bernoulli numbers :math:`B_{2k}`.
    """
    bernoulli: list[fractions.Fraction | float] = [fractions.Fraction(1)]
    for n in range(1, 2 * terms + 1):
        total = sum(math.comb(n + 1, k) * bernoulli[k] for k in range(n))
        bernoulli.append(-total / (n + 1))
    return tuple(
        float(2 ** (2 * k) * bernoulli[2 * k] / math.factorial(2 * k)) for k in range(1, terms + 1)
    )


# Enough terms for float64 below the branch point (the next term is ~1e-18 there).
_LANGEVIN_COEFFICIENTS = _langevin_series_coefficients(12)
_LANGEVIN_SERIES_BELOW = 0.5


def _langevin_branches(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(use_series, series value, safe argument for the closed forms)."""
    use_series = x < _LANGEVIN_SERIES_BELOW
    small = jnp.where(use_series, x, 0.0)
    squared = small * small
    poly = jnp.zeros_like(small)
    for coefficient in reversed(_LANGEVIN_COEFFICIENTS):
        poly = poly * squared + coefficient
    return use_series, small * poly, jnp.where(use_series, 1.0, x)


def _langevin(x: jax.Array) -> jax.Array:
    r""":math:`L(x) = \coth x - 1/x` for :math:`x \ge 0` (``+inf`` allowed)."""
    use_series, series, large = _langevin_branches(x)
    return jnp.where(use_series, series, 1 / jnp.tanh(large) - 1 / large)


def _one_minus_langevin(x: jax.Array) -> jax.Array:
    r""":math:`1 - L(x) = 1/x - 2/(e^{2x}-1)` without cancellation."""
    use_series, series, large = _langevin_branches(x)
    return jnp.where(use_series, 1 - series, 1 / large - 2 / jnp.expm1(2 * large))


def _radam_rho(log_b2: Any, t: jax.Array) -> jax.Array:
    r"""RAdam's :math:`\rho_t` in a cancellation-free form.

    With :math:`\lambda = -\log\beta_2`, :math:`\rho_\infty = \coth(\lambda/2)`
    and :math:`2t\beta_2^t/(1-\beta_2^t) = t(\coth(t\lambda/2) - 1)`, so with
    the Langevin function :math:`L(x) = \coth x - 1/x`,
    :math:`\rho_t = t\,(1 - L(t\lambda/2)) + L(\lambda/2)`: a sum of two
    non-negative terms, each computed without cancellation.
    """
    half_lambda = jnp.asarray(-log_b2 / 2, dtype=t.dtype)
    return t * _one_minus_langevin(t * half_lambda) + _langevin(half_lambda)


def _radam_rho_inf_terms(b2: Any) -> tuple[Any, Any]:
    r"""(:math:`\rho_\infty`, :math:`\rho_\infty / ((\rho_\infty-4)(\rho_\infty-2))`)."""
    if isinstance(b2, float):
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        # Below rho_inf = 5 no step is ever rectified; avoid dividing by zero.
        constant = rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0)) if rho_inf > 5.0 else 0.0
        return rho_inf, constant
    beta2 = _scalar(b2)
    rho_inf = 2 / (1 - beta2) - 1
    safe = jnp.where(rho_inf > 5, rho_inf, 6.0)
    return rho_inf, jnp.where(rho_inf > 5, safe / ((safe - 4) * (safe - 2)), 0.0)


class ScaleByRAdamState(NamedTuple):
    """State of :func:`scale_by_radam`.

    Attributes:
      count: number of updates so far (int32).
      mu: first moment (``exp_avg``), in ``mu_dtype`` or the params' dtype.
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

    .. math::

      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
      \hat m_t = m_t / (1-\beta_1^t), \\
      \rho_\infty = \frac{2}{1-\beta_2} - 1, \qquad
      \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \qquad
      r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
                       {(\rho_\infty-4)(\rho_\infty-2)\rho_t}}, \\
      d_t = \begin{cases}
        \hat m_t\, r_t\, \dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon}
          & \rho_t > 5 \\
        \hat m_t & \text{otherwise}
      \end{cases}

    As PyTorch: the rule is the strict :math:`\rho_t > 5`, and
    :math:`\epsilon` is added to the *uncorrected* :math:`\sqrt{v_t}`.
    ``optax.scale_by_radam`` instead uses :math:`\rho_t \ge 5` and adds
    :math:`\epsilon` to :math:`\sqrt{v_t/(1-\beta_2^t)}`. Ranger 2020.9.4
    (lessw2020) computes the same direction (its ``N_sma > 5``,
    ``step_size = r_t \sqrt{1-\beta_2^t}/(1-\beta_1^t)``, eps on
    :math:`\sqrt{v_t}`). Complex params: the real and imaginary parts have
    their own :math:`v_t`, as PyTorch's ``view_as_real``.

    Float32 accuracy: :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`
    cancels catastrophically for small :math:`t` (both terms are about
    :math:`2/(1-\beta_2)`; the naive float32 :math:`r_6` is 0.18% off for
    :math:`\beta_2 = 0.999`). With :math:`\lambda = -\log\beta_2` and the
    Langevin function :math:`L(x) = \coth x - 1/x`, the identity
    :math:`\rho_t = t\,(1 - L(t\lambda/2)) + L(\lambda/2)` adds two
    non-negative terms; :math:`L` and :math:`1-L` are evaluated by their
    Taylor series below :math:`x = 0.5` and by cancellation-free closed forms
    above. :math:`\rho_t` and :math:`r_t` stay within ~3e-7 (relative) of
    float64 for every :math:`t \le 10^9`.

    Args:
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{v_t}`.
      mu_dtype: precision of :math:`m` (a floating or complex dtype; complex
        for complex params); ``None`` keeps the params' dtype.

    Returns:
      An :class:`optax.GradientTransformation` with :class:`ScaleByRAdamState`.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.scale_by_radam()
      >>> updates, state = tx.update(jnp.array([0.5]), tx.init(jnp.zeros(1)))
      >>> print(updates.round(6))  # un-rectified first steps: the bias-corrected momentum
      [0.5]

    References:
      Liu, Jiang, He, Chen, Liu, Gao, Han, `On the Variance of the Adaptive
      Learning Rate and Beyond <https://arxiv.org/abs/1908.03265>`_, ICLR 2020;
      ``torch.optim.RAdam``.
    """
    _validate_adam_like(b1, b2, eps)
    mu_dtype = check_mu_dtype(mu_dtype)
    b1, b2, eps = _host_float(b1), _host_float(b2), _host_float(eps)

    def init_fn(params: optax.Params) -> ScaleByRAdamState:
        return ScaleByRAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=_zeros_like(params, mu_dtype),
            nu=_zeros_like(params),
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByRAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByRAdamState]:
        del params
        count = safe_increment(state.count)
        t = _step_as_float(count)
        log_b2 = _log_beta(b2)
        inv_bias_correction1 = 1 / _one_minus_power(_log_beta(b1), t)
        sqrt_bias_correction2 = jnp.sqrt(_one_minus_power(log_b2, t))
        rho = _radam_rho(log_b2, t)
        _, rect_constant = _radam_rho_inf_terms(b2)
        rectified = rho > 5
        rect_squared = (rho - 4) * (rho - 2) / rho * rect_constant
        rect = jnp.sqrt(jnp.where(rectified, rect_squared, 1.0))
        rectified_scale = rect * sqrt_bias_correction2 * inv_bias_correction1

        mu, nu = _update_moments(updates, state.mu, state.nu, b1, b2)

        def direction(g: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
            adaptive = _cast_scalar(rectified_scale, v) / (jnp.sqrt(v) + _cast_scalar(eps, v))
            scale = jnp.where(rectified, adaptive, _cast_scalar(inv_bias_correction1, v))
            return (m * scale).astype(g.dtype)

        updates = jax.tree.map(direction, updates, mu, nu)
        new_state = ScaleByRAdamState(
            count=count, mu=_store_like(mu, state.mu), nu=_store_like(nu, state.nu)
        )
        return updates, new_state

    return _complex_as_real(gradient_transformation(init_fn, update_fn))
