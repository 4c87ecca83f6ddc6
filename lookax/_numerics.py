r"""Hyperparameters on the host and step scalars that keep float32 accuracy.

Concrete Python/NumPy hyperparameters are used in float64 on the host for the
derived constants (``1 - b``, ``log(b)``), as PyTorch does; JAX-array
hyperparameters (what ``optax.inject_hyperparams`` passes) are used at their
own precision, so ``b2=0.999`` held as a float32 array means
``b2=0.99900001``.

Step-dependent scalars (bias corrections, NAdam's :math:`\mu`-product, RAdam's
:math:`\rho_t` and rectification) are computed so that they keep float32
accuracy at every step: PyTorch computes them in float64 on the host, and the
textbook formulas lose up to several digits in float32 (a naive float32 RAdam
rectification term is 0.18% off at step 6 with ``b2=0.999``). docs/design.md
("Float32-accurate numerics") has the measurements.
"""

from __future__ import annotations

import fractions
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lookax._complex import is_complex

# --------------------------------------------------------------------------
# Hyperparameters.
# --------------------------------------------------------------------------


def host_float(value: Any) -> Any:
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
    if isinstance(value, jax.Array) and is_complex(value):
        return jnp.real(value)
    return value


def is_concrete_zero(value: Any) -> bool:
    """True only for a Python or NumPy zero (never for a JAX array)."""
    return (
        isinstance(value, int | float | np.number | np.ndarray)
        and not isinstance(value, bool | np.bool_)
        and np.ndim(value) == 0
        and float(value) == 0.0
    )


def scalar_dtype() -> Any:
    """dtype of step scalars: float64 under ``jax_enable_x64``, else float32."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def scalar(value: Any) -> Any:
    """A hyperparameter ready for scalar arithmetic in the step-scalar dtype."""
    if isinstance(value, float):
        return value
    return jnp.asarray(value, dtype=scalar_dtype())


def cast_scalar(value: Any, like: jax.Array) -> float | jax.Array:
    """A scalar for element-wise math with ``like``, in ``like``'s dtype."""
    if isinstance(value, float):
        return value
    return jnp.asarray(value).astype(jnp.result_type(like))


# --------------------------------------------------------------------------
# Bias corrections.
# --------------------------------------------------------------------------


def log_beta(beta: Any) -> Any:
    """``log(beta)`` accurate for ``beta`` near 1: ``log1p(-(1 - beta))``."""
    if isinstance(beta, float):
        with np.errstate(divide="ignore"):
            return float(np.log1p(-(1.0 - beta)))
    beta = scalar(beta)
    return jnp.log1p(-(1 - beta))


def one_minus_power(log_of_beta: Any, t: jax.Array) -> jax.Array:
    """``1 - beta**t`` as ``-expm1(t * log(beta))``: no cancellation for small t."""
    return -jnp.expm1(t * log_of_beta)


def step_as_float(count: jax.Array) -> jax.Array:
    return count.astype(scalar_dtype())


# --------------------------------------------------------------------------
# NAdam's momentum schedule.
# --------------------------------------------------------------------------

LOG_096 = math.log(0.96)


def nadam_coefficients(
    b1: Any, momentum_decay: Any, log_factor_product: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""NAdam's step scalars at step ``t``.

    With :math:`\mu_i = \beta_1 (1 - \tfrac12\,0.96^{i\psi})` and
    :math:`\Pi_t = \prod_{i \le t} \mu_i`, returns the gradient's coefficient
    :math:`(1-\mu_t)/(1-\Pi_t)`, the momentum's
    :math:`\mu_{t+1}/(1-\Pi_t\mu_{t+1})`, and the new
    ``log_factor_product`` :math:`\log\Pi_t - t\log\beta_1`.

    :math:`1-\mu_t = (1-\beta_1) + \tfrac12\beta_1 0.96^{t\psi}` is a sum of
    positive terms, and :math:`\log\Pi_t` is :math:`t\log\beta_1` in closed
    form (a long sum of equal terms would drift) plus the accumulated
    :math:`\sum_{i \le t}\mathrm{log1p}(-\tfrac12\,0.96^{i\psi})`, so
    :math:`1-\Pi_t = -\mathrm{expm1}(\log\Pi_t)` keeps float32 accuracy
    whether :math:`\Pi_t` is near 0 (the usual case) or near 1 (a huge
    ``momentum_decay``); a float32 running product (PyTorch's ``mu_product``)
    drifts by up to 3e-5.
    """
    beta1 = scalar(b1)
    log_b1 = log_beta(b1)
    decay_exponent = scalar(momentum_decay) * LOG_096  # log(0.96 ** psi)

    def momentum_schedule(step: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(mu, 1 - mu, log(mu / b1)) at ``step``; 1 - mu as a sum of positive terms."""
        half_decayed = 0.5 * jnp.exp(step * decay_exponent)
        mu = beta1 * (1 - half_decayed)
        return mu, (1 - beta1) + beta1 * half_decayed, jnp.log1p(-half_decayed)

    _, one_minus_mu_now, log_factor_now = momentum_schedule(t)
    mu_next, _, log_factor_next = momentum_schedule(t + 1)
    log_factors = log_factor_product.astype(t.dtype) + log_factor_now
    log_product = t * log_b1 + log_factors
    one_minus_product = -jnp.expm1(log_product)
    one_minus_product_next = -jnp.expm1(log_product + log_b1 + log_factor_next)
    grad_coefficient = one_minus_mu_now / one_minus_product
    momentum_coefficient = mu_next / one_minus_product_next
    return grad_coefficient, momentum_coefficient, log_factors


# --------------------------------------------------------------------------
# RAdam's rectification.
# --------------------------------------------------------------------------


def langevin_series_coefficients(terms: int) -> tuple[float, ...]:
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
LANGEVIN_COEFFICIENTS = langevin_series_coefficients(12)
LANGEVIN_SERIES_BELOW = 0.5


def langevin_branches(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(use_series, series value, safe argument for the closed forms)."""
    use_series = x < LANGEVIN_SERIES_BELOW
    small = jnp.where(use_series, x, 0.0)
    squared = small * small
    poly = jnp.zeros_like(small)
    for coefficient in reversed(LANGEVIN_COEFFICIENTS):
        poly = poly * squared + coefficient
    return use_series, small * poly, jnp.where(use_series, 1.0, x)


def langevin(x: jax.Array) -> jax.Array:
    r""":math:`L(x) = \coth x - 1/x` for :math:`x \ge 0` (``+inf`` allowed)."""
    use_series, series, large = langevin_branches(x)
    return jnp.where(use_series, series, 1 / jnp.tanh(large) - 1 / large)


def one_minus_langevin(x: jax.Array) -> jax.Array:
    r""":math:`1 - L(x) = 1/x - 2/(e^{2x}-1)` without cancellation."""
    use_series, series, large = langevin_branches(x)
    return jnp.where(use_series, 1 - series, 1 / large - 2 / jnp.expm1(2 * large))


def radam_rho(log_b2: Any, t: jax.Array) -> jax.Array:
    r"""RAdam's :math:`\rho_t` in a cancellation-free form.

    The textbook :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`
    cancels catastrophically for small :math:`t` (both terms are about
    :math:`2/(1-\beta_2)`). With :math:`\lambda = -\log\beta_2`,
    :math:`\rho_\infty = \coth(\lambda/2)` and
    :math:`2t\beta_2^t/(1-\beta_2^t) = t(\coth(t\lambda/2) - 1)`, so with the
    Langevin function :math:`L(x) = \coth x - 1/x`,
    :math:`\rho_t = t\,(1 - L(t\lambda/2)) + L(\lambda/2)`: a sum of two
    non-negative terms, each computed without cancellation (a Taylor series
    below :math:`x = 0.5`, closed forms above). :math:`\rho_t` and
    :math:`r_t` stay within ~3e-7 (relative) of float64 for every
    :math:`t \le 10^9`.
    """
    half_lambda = jnp.asarray(-log_b2 / 2, dtype=t.dtype)
    return t * one_minus_langevin(t * half_lambda) + langevin(half_lambda)


def radam_rectification_constant(b2: Any) -> Any:
    r""":math:`\rho_\infty / ((\rho_\infty-4)(\rho_\infty-2))`, 0 where no step is rectified."""
    if isinstance(b2, float):
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        # Below rho_inf = 5 no step is ever rectified; avoid dividing by zero.
        return rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0)) if rho_inf > 5.0 else 0.0
    beta2 = scalar(b2)
    rho_inf = 2 / (1 - beta2) - 1
    safe = jnp.where(rho_inf > 5, rho_inf, 6.0)
    return jnp.where(rho_inf > 5, safe / ((safe - 4) * (safe - 2)), 0.0)


def radam_rectification(b2: Any, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""RAdam at step ``t``: (:math:`\rho_t`, whether :math:`\rho_t > 5`, :math:`r_t`).

    :math:`r_t = \sqrt{(\rho_t-4)(\rho_t-2)\rho_\infty /
    ((\rho_\infty-4)(\rho_\infty-2)\rho_t)}` where the step is rectified, 1
    elsewhere.
    """
    rho = radam_rho(log_beta(b2), t)
    rectified = rho > 5
    rect_squared = (rho - 4) * (rho - 2) / rho * radam_rectification_constant(b2)
    return rho, rectified, jnp.sqrt(jnp.where(rectified, rect_squared, 1.0))
