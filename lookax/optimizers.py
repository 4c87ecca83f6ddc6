r"""The lookax optimizers: PyTorch's hyperparameters and trajectories, optax's shape.

Each function returns an :class:`optax.GradientTransformationExtraArgs` built by
chaining a learning-rate-free direction (:mod:`lookax.transforms` or optax's own
piece where it computes the same thing), weight decay where the reference puts
it, and ``optax.scale_by_learning_rate``:

- *coupled* weight decay (PyTorch's ``weight_decay`` in SGD, Adagrad, RMSprop,
  Adadelta, Adam, NAdam, RAdam) adds :math:`\lambda\theta` to the gradient
  before the direction;
- *decoupled* weight decay (AdamW, Lion, ``decoupled_weight_decay=True``) adds
  :math:`\lambda\theta` to the direction, so the step is
  :math:`\theta \leftarrow \theta - \eta_t (d_t + \lambda\theta)`, i.e.
  PyTorch's ``p.mul_(1 - lr * wd)`` followed by the step.

Common to every optimizer:

- ``learning_rate`` is a float or an optax schedule, evaluated at the number of
  ``update`` calls so far (0-based), like PyTorch's LR schedulers between steps.
- ``mask`` (where there is weight decay): as ``optax.add_decayed_weights``'s, a
  pytree of bools (or a function of the params returning one) selecting the
  leaves that are decayed. Under ``optax.inject_hyperparams`` a mask function
  must be listed in ``static_args``.
- ``mu_dtype`` (where there is a first moment): its storage dtype, as optax's;
  a floating or complex dtype, taken as a precision, so one ``mu_dtype``
  serves a tree of real and complex params (:ref:`complex-params`).
  Under ``optax.inject_hyperparams`` pass dtypes as ``jnp.dtype(...)`` objects
  or list ``mu_dtype`` in ``static_args`` (scalar types like ``jnp.bfloat16``
  are callables and would be taken for schedules).
- State structure depends only on static choices (``None`` vs a value, bool
  flags), never on numeric values, so every optimizer works under
  ``optax.inject_hyperparams``. A Python/NumPy zero weight decay skips its
  work (as PyTorch's ``if weight_decay != 0``) without changing the state.
- State and updates keep the params' dtype (``mu_dtype`` aside), also when
  hyperparameters arrive as float32 arrays over bf16 params.
- Invalid concrete hyperparameters raise at construction, naming the argument
  (``TypeError`` for a wrong type, ``ValueError`` for a bad value); traced
  values cannot be checked and are used as given.
- Complex params follow PyTorch: a complex number is two real parameters
  (:ref:`complex-params`).

PyTorch flags without meaning here: ``foreach``, ``fused``, ``capturable``,
``differentiable`` (implementation choices; jit compiles one fused step) and
``maximize`` (negate the loss, or chain ``optax.scale(-1.0)`` first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from lookax._checks import (
    check_axis,
    check_flag,
    check_learning_rate,
    check_mu_dtype,
    check_nonnegative,
    check_unit_interval,
)
from lookax._complex import complex_as_real
from lookax._numerics import host_float, is_concrete_zero
from lookax._typing import ArrayTree as ArrayTree  # for get_type_hints: see _typing.py
from lookax._typing import gradient_transformation, gradient_transformation_extra_args
from lookax.lookahead import lookahead
from lookax.transforms import (
    add_decoupled_weight_decay,
    centralize_gradients,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_momentum,
    scale_by_nadam,
    scale_by_radam,
)

__all__ = [
    "OPTIMIZERS",
    "adadelta",
    "adagrad",
    "adam",
    "adamw",
    "lion",
    "nadam",
    "radam",
    "ranger",
    "rmsprop",
    "sgd",
]

ScalarOrSchedule = float | jax.Array | optax.Schedule
Mask = Any | Callable[[optax.Params], Any] | None


# --------------------------------------------------------------------------
# Shared pieces.
# --------------------------------------------------------------------------


def _coupled_weight_decay(weight_decay: Any, mask: Mask) -> optax.GradientTransformation:
    """PyTorch's L2 term ``g + wd * p`` (``optax.add_decayed_weights``).

    A Python/NumPy zero skips the work, keeping the state (so the structure)
    of the real transform and following PyTorch's ``if weight_decay != 0`` (no
    ``0 * inf`` NaNs from non-finite params).
    """
    check_nonnegative("weight_decay", weight_decay)
    decay = optax.add_decayed_weights(host_float(weight_decay), mask)
    if not is_concrete_zero(weight_decay):
        return decay

    def update_fn(
        updates: optax.Updates, state: optax.OptState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.OptState]:
        del params
        return updates, state

    return gradient_transformation(decay.init, update_fn)


def _keep_dtypes(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Casts updates to the incoming updates' dtypes and state to its previous dtypes.

    optax's pieces promote bf16 to float32 when hyperparameters arrive as
    float32 arrays (``optax.inject_hyperparams(..., hyperparam_dtype=...)``);
    the casts keep the state's dtypes fixed (no retracing, scan-compatible) and
    are free where nothing was promoted.
    """
    tx = optax.with_extra_args_support(tx)

    def cast_like(new: Any, old: Any) -> Any:
        if hasattr(new, "dtype") and hasattr(old, "dtype") and new.dtype != old.dtype:
            return new.astype(old.dtype)
        return new

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.OptState]:
        new_updates, new_state = tx.update(updates, state, params, **extra_args)
        new_updates = jax.tree.map(cast_like, new_updates, updates)
        new_state = jax.tree.map(cast_like, new_state, state)
        return new_updates, new_state

    return gradient_transformation_extra_args(tx.init, update_fn)


def _optimizer(
    direction: optax.GradientTransformation,
    learning_rate: ScalarOrSchedule,
    weight_decay: Any,
    mask: Mask,
    *,
    decoupled: bool,
) -> optax.GradientTransformationExtraArgs:
    """``direction`` and the learning rate, with coupled or decoupled weight decay.

    Coupled (L2): the decay is added to the gradient before the direction.
    Decoupled: the params shrink by ``1 - lr * wd`` before the step, rounded as
    PyTorch (:func:`lookax.add_decoupled_weight_decay`).
    """
    check_learning_rate(learning_rate)
    if not callable(learning_rate):
        learning_rate = host_float(learning_rate)
    lr = optax.scale_by_learning_rate(learning_rate)
    if decoupled:
        parts = (direction, lr, add_decoupled_weight_decay(learning_rate, weight_decay, mask))
    else:
        parts = (_coupled_weight_decay(weight_decay, mask), direction, lr)
    return _keep_dtypes(optax.chain(*parts))


# --------------------------------------------------------------------------
# The optimizers.
# --------------------------------------------------------------------------


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | jax.Array | None = None,
    dampening: float | jax.Array = 0.0,
    nesterov: bool = False,
    weight_decay: float | jax.Array = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic gradient descent, with momentum, exactly as ``torch.optim.SGD``.

    .. math::

      g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(coupled weight decay)} \\
      b_1 &= g_1, \qquad b_t = \mu b_{t-1} + (1-\tau) g_t \\
      \theta_t &= \theta_{t-1} - \eta_t\, d_t, \qquad
      d_t = g_t \ (\text{no momentum}),\ b_t,\ \text{or}\ g_t + \mu b_t\ (\text{Nesterov})

    The momentum buffer holds gradients (as PyTorch), so learning-rate
    schedules give PyTorch's numbers. ``momentum=None`` keeps no buffer
    (PyTorch's ``momentum=0``); ``momentum=0.0`` keeps one and gives the same
    numbers. With ``dampening=0`` and ``weight_decay=0`` this is ``optax.sgd``
    (with dampening, PyTorch's first buffer is :math:`g_1`, not
    :math:`(1-\tau) g_1`). Complex params: see :ref:`complex-params` (every
    step is linear, so the complex arithmetic already is that rule).

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule.
      momentum: :math:`\mu \ge 0`, or ``None`` for plain SGD.
      dampening: :math:`\tau \in [0, 1]` (ignored without momentum, as PyTorch).
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening=0``).
      weight_decay: :math:`\lambda \ge 0`, coupled (L2 added to the gradient).
      mask: which leaves weight decay applies to (see the module docs).
      mu_dtype: dtype of the momentum buffer; ``None``: the params' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = lookax.sgd(learning_rate=0.1, momentum=0.9, nesterov=True)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
      >>> params = optax.apply_updates(params, updates)

    References:
      Sutskever, Martens, Dahl, Hinton, `On the importance of initialization
      and momentum in deep learning <https://proceedings.mlr.press/v28/sutskever13.html>`_,
      ICML 2013; ``torch.optim.SGD``.
    """
    check_unit_interval("dampening", dampening, include_one=True)
    check_flag("nesterov", nesterov)
    if momentum is None:
        if nesterov:
            raise ValueError("nesterov=True requires a momentum > 0, got momentum=None")
        check_mu_dtype(mu_dtype)
        direction = optax.identity()
    else:
        direction = scale_by_momentum(momentum, dampening, nesterov, mu_dtype)
    return _optimizer(direction, learning_rate, weight_decay, mask, decoupled=False)


def adagrad(
    learning_rate: ScalarOrSchedule = 1e-2,
    lr_decay: float | jax.Array = 0.0,
    weight_decay: float | jax.Array = 0.0,
    initial_accumulator_value: float | jax.Array = 0.0,
    eps: float | jax.Array = 1e-10,
    *,
    mask: Mask = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaGrad exactly as ``torch.optim.Adagrad``.

    .. math::

      g_t &\leftarrow g_t + \lambda\theta_{t-1}, \qquad
      s_t = s_{t-1} + g_t^2, \\
      \theta_t &= \theta_{t-1} - \frac{\eta_t}{1 + (t-1)\,\delta}\,
          \frac{g_t}{\sqrt{s_t} + \epsilon}

    with :math:`\delta` the ``lr_decay``, :math:`t` counting from 1 and
    :math:`\epsilon` outside the square root (:func:`lookax.scale_by_adagrad`).
    ``optax.adagrad`` differs: ``eps`` inside the root
    (:math:`g/\sqrt{s+\epsilon}`), ``initial_accumulator_value=0.1``, no
    ``lr_decay`` or weight decay. Complex params: see :ref:`complex-params`.

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule (the ``lr_decay``
        factor multiplies it at every step).
      lr_decay: :math:`\delta \ge 0`.
      weight_decay: :math:`\lambda \ge 0`, coupled.
      initial_accumulator_value: :math:`s_0 \ge 0`.
      eps: :math:`\epsilon \ge 0`.
      mask: which leaves weight decay applies to.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.adagrad(learning_rate=0.1, lr_decay=1e-3)
      >>> params = jnp.ones(2)
      >>> updates, state = tx.update(jnp.array([1.0, -2.0]), tx.init(params), params)
      >>> print(updates)
      [-0.1  0.1]

    References:
      Duchi, Hazan, Singer, `Adaptive Subgradient Methods for Online Learning
      and Stochastic Optimization <https://jmlr.org/papers/v12/duchi11a.html>`_,
      JMLR 2011; ``torch.optim.Adagrad``.
    """
    check_learning_rate(learning_rate)
    check_nonnegative("lr_decay", lr_decay)
    lr_decay = host_float(lr_decay)
    base_rate = learning_rate if callable(learning_rate) else host_float(learning_rate)

    def decayed_learning_rate(count: jax.typing.ArrayLike) -> jax.typing.ArrayLike:
        rate = base_rate(count) if callable(base_rate) else base_rate
        return rate / (1 + count * lr_decay)

    # Always a schedule, so the state does not depend on lr_decay's value.
    direction = scale_by_adagrad(initial_accumulator_value, eps)
    return _optimizer(direction, decayed_learning_rate, weight_decay, mask, decoupled=False)


def rmsprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    decay: float | jax.Array = 0.99,
    eps: float | jax.Array = 1e-8,
    weight_decay: float | jax.Array = 0.0,
    momentum: float | jax.Array | None = None,
    centered: bool = False,
    *,
    mask: Mask = None,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSprop exactly as ``torch.optim.RMSprop`` (``decay`` is its ``alpha``).

    .. math::

      g_t &\leftarrow g_t + \lambda\theta_{t-1}, \qquad
      v_t = \rho v_{t-1} + (1-\rho) g_t^2, \qquad
      \bar g_t = \rho \bar g_{t-1} + (1-\rho) g_t \ (\text{centered}), \\
      u_t &= \frac{g_t}{\sqrt{v_t - \bar g_t^2} + \epsilon}
          \ \ (\text{or } \sqrt{v_t} + \epsilon \text{ uncentered}), \qquad
      b_t = \mu b_{t-1} + u_t, \\
      \theta_t &= \theta_{t-1} - \eta_t\, b_t \quad(\text{or } \eta_t u_t
          \text{ without momentum})

    Composed of optax's ``scale_by_rms``/``scale_by_stddev`` with
    ``eps_in_sqrt=False`` and ``optax.trace``. The momentum buffer holds
    un-scaled steps :math:`u_t`, as PyTorch, so it matches PyTorch under
    learning-rate schedules. ``optax.rmsprop`` differs: ``decay=0.9`` and
    ``eps_in_sqrt=True`` by default, and its momentum accumulates
    learning-rate-scaled steps (the same numbers at a constant learning rate,
    different ones under a schedule). Complex params: see
    :ref:`complex-params`.

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule.
      decay: :math:`\rho \in [0, 1]` (PyTorch's ``alpha``).
      eps: :math:`\epsilon \ge 0`, outside the square root.
      weight_decay: :math:`\lambda \ge 0`, coupled.
      momentum: :math:`\mu \ge 0`, or ``None`` for no buffer (``0.0`` keeps a
        buffer and gives the same numbers as PyTorch's ``momentum=0``).
      centered: divide by the estimated standard deviation instead of the root
        mean square.
      mask: which leaves weight decay applies to.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.rmsprop(learning_rate=1e-2, momentum=0.9, centered=True)
      >>> params = jnp.ones(3)
      >>> updates, state = tx.update(jnp.ones(3), tx.init(params), params)

    References:
      Tieleman, Hinton, Lecture 6.5 of *Neural Networks for Machine Learning*,
      2012; Graves, `Generating Sequences With Recurrent Neural Networks
      <https://arxiv.org/abs/1308.0850>`_, 2013 (centered);
      ``torch.optim.RMSprop``.
    """
    check_unit_interval("decay", decay, include_one=True)
    check_nonnegative("eps", eps)
    check_flag("centered", centered)
    decay, eps = host_float(decay), host_float(eps)
    scale = optax.scale_by_stddev if centered else optax.scale_by_rms
    direction = scale(decay=decay, eps=eps, initial_scale=0.0, eps_in_sqrt=False)
    if momentum is not None:
        check_nonnegative("momentum", momentum)
        direction = optax.chain(direction, optax.trace(decay=host_float(momentum)))
    direction = complex_as_real(direction)
    return _optimizer(direction, learning_rate, weight_decay, mask, decoupled=False)


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0,
    rho: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-6,
    weight_decay: float | jax.Array = 0.0,
    *,
    mask: Mask = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adadelta exactly as ``torch.optim.Adadelta``.

    .. math::

      g_t &\leftarrow g_t + \lambda\theta_{t-1}, \qquad
      v_t = \rho v_{t-1} + (1-\rho) g_t^2, \\
      \Delta_t &= \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t,
      \qquad a_t = \rho a_{t-1} + (1-\rho) \Delta_t^2, \qquad
      \theta_t = \theta_{t-1} - \eta_t \Delta_t

    with :math:`\epsilon` inside both square roots: ``optax.scale_by_adadelta``
    then the learning rate, as ``optax.adadelta`` (whose ``learning_rate``
    defaults to ``None``, i.e. 1, and whose weight decay is also coupled).
    Complex params: see :ref:`complex-params`.

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule.
      rho: :math:`\rho \in [0, 1]`.
      eps: :math:`\epsilon \ge 0`.
      weight_decay: :math:`\lambda \ge 0`, coupled.
      mask: which leaves weight decay applies to.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.adadelta()
      >>> params = jnp.ones(3)
      >>> updates, state = tx.update(jnp.ones(3), tx.init(params), params)

    References:
      Zeiler, `ADADELTA: An Adaptive Learning Rate Method
      <https://arxiv.org/abs/1212.5701>`_, 2012; ``torch.optim.Adadelta``.
    """
    check_unit_interval("rho", rho, include_one=True)
    check_nonnegative("eps", eps)
    direction = optax.scale_by_adadelta(rho=host_float(rho), eps=host_float(eps))
    direction = complex_as_real(direction)
    return _optimizer(direction, learning_rate, weight_decay, mask, decoupled=False)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    weight_decay: float | jax.Array = 0.0,
    amsgrad: bool = False,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam (and AMSGrad) exactly as ``torch.optim.Adam``.

    .. math::

      g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(coupled, L2)} \\
      m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
      \hat v_t &= v_t \ \text{or, with AMSGrad,}\ \max(\hat v_{t-1}, v_t), \\
      \theta_t &= \theta_{t-1} - \eta_t\,
        \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    AMSGrad takes the maximum of the *raw* :math:`v_t` and bias-corrects
    afterwards, as PyTorch. The bias corrections are computed as
    :math:`1-\beta^t = -\mathrm{expm1}(t \log \beta)` with
    :math:`\log\beta = \mathrm{log1p}(-(1-\beta))`, accurate in float32 at
    every step. Differences from ``optax.adam`` (otherwise the same, at
    ``eps_root=0``): ``weight_decay`` (PyTorch's L2 term), the bias
    corrections (optax's ``1 - b**t`` in float32 is up to ~1e-5 off in early
    steps for ``b2=0.999``), ``amsgrad`` (``optax.amsgrad`` takes the maximum
    of the bias-corrected :math:`v_t`) and complex params
    (:ref:`complex-params`).

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule.
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`.
      weight_decay: :math:`\lambda \ge 0`, coupled (use :func:`adamw` for the
        decoupled kind).
      amsgrad: AMSGrad's running maximum.
      mask: which leaves weight decay applies to.
      mu_dtype: dtype of the first moment.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = lookax.adam(learning_rate=1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
      >>> print(optax.apply_updates(params, updates)["w"])
      [0.999 0.999 0.999]

    References:
      Kingma, Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, ICLR 2015; Reddi, Kale, Kumar, `On
      the Convergence of Adam and Beyond <https://openreview.net/forum?id=ryQu7f-RZ>`_,
      ICLR 2018 (AMSGrad); ``torch.optim.Adam``.
    """
    direction = scale_by_adam(b1, b2, eps, amsgrad=amsgrad, mu_dtype=mu_dtype)
    return _optimizer(direction, learning_rate, weight_decay, mask, decoupled=False)


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    weight_decay: float | jax.Array = 1e-2,
    amsgrad: bool = False,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW exactly as ``torch.optim.AdamW`` (decoupled weight decay).

    .. math::

      \theta_t = \theta_{t-1} - \eta_t \left(
        \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}
        + \lambda\theta_{t-1}\right)

    with :math:`m_t` and :math:`\hat v_t` as in :func:`adam`: PyTorch's
    ``p.mul_(1 - lr * wd)`` followed by the Adam step, with the learning rate
    of the current step (schedules included). The decay is also rounded as
    PyTorch rounds it (:func:`add_decoupled_weight_decay`): the update is
    :math:`(\theta(1-\eta\lambda) + u) - \theta`, exact whenever the old and
    new params are within a factor 2 of each other, so
    ``optax.apply_updates`` lands on PyTorch's value (up to where XLA
    contracts the multiply-add). As ``optax.adamw``, except the defaults
    (``weight_decay=1e-2`` here, as PyTorch; optax's is ``1e-4``), that
    rounding (optax adds :math:`-\eta_t\lambda\theta_{t-1}` to the step,
    the same number before rounding; over hundreds of steps the two drift
    apart by ~1e-5 relative), float32-accurate bias corrections, ``amsgrad``
    and complex params (:ref:`complex-params`).

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule.
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`.
      weight_decay: :math:`\lambda \ge 0`, decoupled.
      amsgrad: AMSGrad's running maximum of the raw :math:`v_t`.
      mask: which leaves weight decay applies to (e.g. not biases and norms).
      mu_dtype: dtype of the first moment.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax, jax.numpy as jnp, lookax
      >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}
      >>> no_bias = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
      >>> tx = lookax.adamw(learning_rate=1e-3, weight_decay=1e-2, mask=no_bias)
      >>> state = tx.init(params)

    References:
      Loshchilov, Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019; ``torch.optim.AdamW``.
    """
    direction = scale_by_adam(b1, b2, eps, amsgrad=amsgrad, mu_dtype=mu_dtype)
    return _optimizer(direction, learning_rate, weight_decay, mask, decoupled=True)


def nadam(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    weight_decay: float | jax.Array = 0.0,
    momentum_decay: float | jax.Array = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""NAdam exactly as ``torch.optim.NAdam``, momentum-decay schedule included.

    .. math::

      g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(coupled, the default)} \\
      m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
      \mu_t &= \beta_1\left(1 - \tfrac12\, 0.96^{t\psi}\right), \qquad
      \Pi_t = \textstyle\prod_{i\le t}\mu_i, \\
      \theta_t &= \theta_{t-1} - \eta_t\, \frac{
          \frac{1-\mu_t}{1-\Pi_t}\, g_t + \frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\, m_t}
          {\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    with :math:`\psi` the ``momentum_decay``. Weight decay is coupled by
    default, or decoupled (:math:`-\eta_t\lambda\theta_{t-1}`, NAdamW) with
    ``decoupled_weight_decay=True``, as PyTorch. The step scalars keep float32
    accuracy: :math:`\log\Pi_t` is carried in the state and
    :math:`1-\Pi_t = -\mathrm{expm1}(\log\Pi_t)` stays within 4e-7 (relative)
    of float64 over 1000 steps for ``b1`` in {0.9, 0.99, 0.999} and
    ``momentum_decay`` from 4e-3 to 1e3, where a float32 running product
    (PyTorch's ``mu_product``) drifts by up to 3e-5. ``optax.nadam`` is a
    different algorithm (Adam with Nesterov momentum at a constant
    :math:`\mu=\beta_1`, no momentum decay). Complex params: see
    :ref:`complex-params`.

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule.
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`.
      weight_decay: :math:`\lambda \ge 0`.
      momentum_decay: :math:`\psi \ge 0`.
      decoupled_weight_decay: decoupled (AdamW-style) instead of L2 weight decay.
      mask: which leaves weight decay applies to.
      mu_dtype: dtype of the first moment.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, lookax
      >>> tx = lookax.nadam(learning_rate=2e-3, weight_decay=1e-2, decoupled_weight_decay=True)
      >>> params = jnp.ones(3)
      >>> updates, state = tx.update(jnp.ones(3), tx.init(params), params)

    References:
      Dozat, `Incorporating Nesterov Momentum into Adam
      <https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ>`_, ICLR 2016
      workshop; ``torch.optim.NAdam``.
    """
    check_flag("decoupled_weight_decay", decoupled_weight_decay)
    direction = scale_by_nadam(b1, b2, eps, momentum_decay, mu_dtype=mu_dtype)
    return _optimizer(
        direction, learning_rate, weight_decay, mask, decoupled=decoupled_weight_decay
    )


def radam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    weight_decay: float | jax.Array = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rectified Adam exactly as ``torch.optim.RAdam``.

    .. math::

      g_t &\leftarrow g_t + \lambda\theta_{t-1} \quad\text{(coupled, the default)} \\
      m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
      \hat m_t = m_t / (1-\beta_1^t), \\
      \rho_\infty &= \frac{2}{1-\beta_2} - 1, \qquad
      \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \qquad
      r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
                       {(\rho_\infty-4)(\rho_\infty-2)\rho_t}}, \\
      \theta_t &= \theta_{t-1} - \eta_t \begin{cases}
        \hat m_t\, r_t\, \dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon}
          & \rho_t > 5 \\
        \hat m_t & \text{otherwise}
      \end{cases}

    As PyTorch: the strict :math:`\rho_t > 5` rule, and :math:`\epsilon` on
    the *uncorrected* :math:`\sqrt{v_t}`. ``optax.radam`` uses
    :math:`\rho_t \ge 5`, puts :math:`\epsilon` on
    :math:`\sqrt{v_t/(1-\beta_2^t)}` and has no weight decay. Weight decay is
    coupled by default, decoupled with ``decoupled_weight_decay=True``, as
    PyTorch. :math:`\rho_t` and :math:`r_t` keep float32 accuracy: the
    textbook :math:`\rho_t` cancels catastrophically for small :math:`t` (a
    naive float32 :math:`r_6` is 0.18% off for :math:`\beta_2 = 0.999`), so
    lookax computes :math:`\rho_t = t\,(1 - L(t\lambda/2)) + L(\lambda/2)`
    with :math:`\lambda = -\log\beta_2` and the Langevin function
    :math:`L(x) = \coth x - 1/x`, within ~3e-7 (relative) of float64 for
    every :math:`t \le 10^9`. Complex params: see :ref:`complex-params`.

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule.
      b1: :math:`\beta_1 \in [0, 1)`.
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0`.
      weight_decay: :math:`\lambda \ge 0`.
      decoupled_weight_decay: decoupled (AdamW-style) instead of L2 weight decay.
      mask: which leaves weight decay applies to.
      mu_dtype: dtype of the first moment.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0), lookax.radam(1e-3))
      >>> params = jnp.ones(3)
      >>> updates, state = tx.update(jnp.ones(3), tx.init(params), params)

    References:
      Liu, Jiang, He, Chen, Liu, Gao, Han, `On the Variance of the Adaptive
      Learning Rate and Beyond <https://arxiv.org/abs/1908.03265>`_, ICLR 2020;
      ``torch.optim.RAdam``.
    """
    check_flag("decoupled_weight_decay", decoupled_weight_decay)
    direction = scale_by_radam(b1, b2, eps, mu_dtype=mu_dtype)
    return _optimizer(
        direction, learning_rate, weight_decay, mask, decoupled=decoupled_weight_decay
    )


def lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.99,
    weight_decay: float | jax.Array = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Lion (EvoLved Sign Momentum), the paper's Algorithm 2 as lion-pytorch.

    .. math::

      \theta_t &= \theta_{t-1} - \eta_t\left(
          \operatorname{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t)
          + \lambda\theta_{t-1}\right), \\
      m_t &= \beta_2 m_{t-1} + (1-\beta_2) g_t

    (``optax.scale_by_lion`` then decoupled weight decay
    :math:`\theta(1-\eta\lambda)`, as the paper and ``lion_pytorch.Lion``).
    The same as ``optax.lion`` except the default ``weight_decay`` (0.0 as
    lion-pytorch; optax's is ``1e-3``) and the decay's rounding, PyTorch's
    (see :func:`adamw`; Lion's steps are all of one size, and the two
    roundings drift apart by ~1e-5 relative over hundreds of steps). Note
    that :math:`\operatorname{sign}` flips where its argument crosses 0, so
    trajectories compared across implementations agree only while the
    interpolated momentum stays away from 0. Betas are checked to lie in
    :math:`[0, 1)` (lion-pytorch also accepts 1, where the momentum or the
    gradient is ignored entirely).
    Complex params (:ref:`complex-params`): the sign is taken of the real and
    of the imaginary part separately, each part stepping by :math:`\eta`;
    ``optax.lion`` and lion-pytorch's ``sgn`` take :math:`z/|z|` instead.

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule (Lion wants 3-10x
        smaller than AdamW's).
      b1: :math:`\beta_1 \in [0, 1)`, interpolation for the sign.
      b2: :math:`\beta_2 \in [0, 1)`, the momentum's decay.
      weight_decay: :math:`\lambda \ge 0`, decoupled.
      mask: which leaves weight decay applies to.
      mu_dtype: dtype of the momentum.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> tx = lookax.lion(learning_rate=1e-4, weight_decay=1.0)
      >>> params = jnp.full(2, 0.5)
      >>> updates, state = tx.update(jnp.array([0.5, -0.5]), tx.init(params), params)
      >>> print(optax.apply_updates(params, updates))  # 0.5 * (1 - 1e-4) - 1e-4 * sign(g)
      [0.49985 0.50005]

    References:
      Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu, Le,
      `Symbolic Discovery of Optimization Algorithms
      <https://arxiv.org/abs/2302.06675>`_, NeurIPS 2023 (Algorithm 2);
      lion-pytorch (lucidrains).
    """
    check_unit_interval("b1", b1, include_one=False)
    check_unit_interval("b2", b2, include_one=False)
    mu_dtype = check_mu_dtype(mu_dtype)
    direction = optax.scale_by_lion(b1=host_float(b1), b2=host_float(b2), mu_dtype=mu_dtype)
    direction = complex_as_real(direction)
    return _optimizer(direction, learning_rate, weight_decay, mask, decoupled=True)


def ranger(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float | jax.Array = 0.95,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-5,
    weight_decay: float | jax.Array = 0.0,
    sync_period: int | jax.Array = 6,
    slow_step_size: float | jax.Array | optax.Schedule = 0.5,
    use_gc: bool = True,
    gc_output_axis: int | jax.Array = -1,
    gc_conv_only: bool = False,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Ranger: RAdam + Lookahead + Gradient Centralization (Ranger 2020.9.4).

    .. code-block:: python

      lookax.lookahead(
          optax.chain(lookax.centralize_gradients(gc_output_axis, conv_only=gc_conv_only),
                      lookax.radam(learning_rate, b1, b2, eps, weight_decay,
                                   decoupled_weight_decay=True)),
          sync_period, slow_step_size)

    With ``weight_decay=0`` this is Ranger 2020.9.4 (lessw2020,
    ``ranger2020.py``) step for step: Gradient Centralization on the raw
    gradient (every leaf with ``ndim > 1``, ``ndim > 3`` with
    ``gc_conv_only``, minus its mean over all axes but the output axis);
    RAdam with the strict :math:`\rho_t > 5` rule, the un-rectified step
    :math:`\eta\,\hat m_t` and :math:`\epsilon` on the uncorrected
    :math:`\sqrt{v_t}`, which is exactly ``torch.optim.RAdam``'s update; the
    slow weights start at the initial params and are updated
    :math:`\phi \leftarrow \phi + \alpha(\theta - \phi)`,
    :math:`\theta \leftarrow \phi` after steps :math:`k, 2k, \ldots`
    (:func:`lookax.lookahead`).

    Weight decay (lookax's meaning): decoupled,
    :math:`\theta \leftarrow \theta - \eta_t \lambda \theta` at every step
    (AdamW-style, not centralized). Ranger 2020.9.4 instead adds
    :math:`\lambda\theta` to the normalized update and scales it by its RAdam
    step size (:math:`r_t\sqrt{1-\beta_2^t}/(1-\beta_1^t)` when rectified,
    :math:`1/(1-\beta_1^t)` otherwise) and the learning rate; in the
    un-rectified first steps its in-place add also leaks
    :math:`\lambda\theta` into the momentum buffer. The two agree as
    :math:`t \to \infty` (the step size tends to 1) but not in early steps,
    so ``weight_decay > 0`` is not trajectory-compatible with Ranger 2020.9.4.

    Complex params: see :ref:`complex-params` (Ranger 2020.9.4 itself has no
    complex support; this is what it computes on the real and imaginary parts
    given as separate parameters).

    Args:
      learning_rate: :math:`\eta \ge 0` or a schedule.
      b1: :math:`\beta_1 \in [0, 1)` (Ranger's default 0.95).
      b2: :math:`\beta_2 \in [0, 1)`.
      eps: :math:`\epsilon \ge 0` (Ranger's default 1e-5).
      weight_decay: :math:`\lambda \ge 0`, decoupled (see above).
      sync_period: Lookahead's :math:`k \ge 1`.
      slow_step_size: Lookahead's :math:`\alpha \in [0, 1]` or a schedule.
      use_gc: apply Gradient Centralization.
      gc_output_axis: the output axis of each kernel: ``-1`` for Flax layouts,
        ``0`` for PyTorch layouts (what Ranger 2020.9.4 assumes).
      gc_conv_only: centralize only leaves with ``ndim > 3``.
      mask: which leaves weight decay applies to.
      mu_dtype: dtype of RAdam's first moment.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`lookax.LookaheadState`; ``update`` needs ``params``. Evaluate on
      ``lookax.slow_params(state, params)``.

    Example:
      >>> import jax.numpy as jnp, optax, lookax
      >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
      >>> tx = lookax.ranger(learning_rate=1e-3)
      >>> state = tx.init(params)
      >>> grads = {"kernel": jnp.arange(6.0).reshape(3, 2), "bias": jnp.ones(2)}
      >>> updates, state = tx.update(grads, state, params)
      >>> params = optax.apply_updates(params, updates)

    References:
      Wright, `Ranger <https://github.com/lessw2020/Ranger-Deep-Learning-Optimizer>`_
      (version 2020.9.4); Liu et al., RAdam, ICLR 2020; Zhang, Lucas, Hinton,
      Ba, Lookahead, NeurIPS 2019; Yong, Huang, Hua, Zhang, `Gradient
      Centralization: A New Optimization Technique for Deep Neural Networks
      <https://arxiv.org/abs/2004.01461>`_, ECCV 2020.
    """
    check_flag("use_gc", use_gc)
    check_flag("gc_conv_only", gc_conv_only)
    check_axis("gc_output_axis", gc_output_axis)
    inner = radam(
        learning_rate,
        b1,
        b2,
        eps,
        weight_decay,
        decoupled_weight_decay=True,
        mask=mask,
        mu_dtype=mu_dtype,
    )
    if use_gc:
        inner = optax.chain(centralize_gradients(gc_output_axis, conv_only=gc_conv_only), inner)
    else:
        # Same state structure either way: chain(stateless, radam).
        inner = optax.chain(optax.identity(), inner)
    return lookahead(inner, sync_period, slow_step_size)


OPTIMIZERS: tuple[tuple[str, Callable[..., optax.GradientTransformationExtraArgs]], ...] = (
    ("sgd", sgd),
    ("adagrad", adagrad),
    ("rmsprop", rmsprop),
    ("adadelta", adadelta),
    ("adam", adam),
    ("adamw", adamw),
    ("nadam", nadam),
    ("radam", radam),
    ("lion", lion),
    ("ranger", ranger),
)
"""Every lookax optimizer, in documentation order, as ``(name, factory)`` pairs."""
