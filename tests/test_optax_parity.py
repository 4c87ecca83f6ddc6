"""lookax against optax, wherever the two implement the same algorithm.

Each case runs both optimizers for 200 steps on a small tree (a 4-D kernel, a
matrix, a vector and a scalar) with a gradient that depends on the params, in
one jitted ``lax.scan`` per optimizer, and compares the whole parameter
trajectory leaf by leaf: ``max|lookax - optax| / max|optax|``.

The problem keeps the gradients well away from 0 for all 200 steps (targets
far from the start, alternating in sign so that Gradient Centralization does
not cancel them, a constant offset for Lion), so trajectories are not chaotic
and rounding differences stay at the rounding level.

In float32 the two differ by rounding only (different operation order and
compilation), except where lookax deliberately computes a step scalar more
accurately (bias corrections; see ``FLOAT32_RTOL``). In float64 (scoped
``jax.enable_x64``) they agree to ~1e-13.

Where optax's same-named optimizer is a different algorithm (NAdam's momentum
schedule, AMSGrad's maximum, RAdam's eps placement), the case below pins the
settings where both compute the same thing and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.experimental
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import scan_trajectory

import lookax
from lookax._numerics import log_beta, one_minus_power, radam_rectification

STEPS = 200
SHAPES = {"kernel": (3, 3, 2, 4), "dense": (5, 3), "bias": (6,), "scale": ()}


def _alternating(shape: tuple[int, ...]) -> np.ndarray:
    size = math.prod(shape)
    return ((-1.0) ** np.arange(size)).reshape(shape)


def _problem(dtype) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    init = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    # Far targets with alternating signs: |gradient| stays >= ~1 for 200 steps.
    target = {
        k: init[k] - 5.0 * _alternating(s) * (1.0 + 0.2 * np.abs(rng.normal(size=s)))
        for k, s in SHAPES.items()
    }
    cast = lambda tree: {k: jnp.asarray(v, dtype) for k, v in tree.items()}  # noqa: E731
    return cast(init), cast(target)


def _smooth_gradient(p, target):
    """Gradient of a strongly convex, non-quadratic loss: monotone in p."""
    return 0.5 * (p - target) + 0.1 * jnp.sin(3.0 * p)


def _offset_gradient(p, target):
    """Always positive (for Lion, whose sign() must not see values near 0)."""
    del target
    return 1.0 + 0.3 * jnp.sin(p)


def _trajectories(txs: tuple[optax.GradientTransformation, ...], gradient, dtype) -> list[dict]:
    """Parameter trajectories of each optimizer, all in one compiled function."""
    init, target = _problem(dtype)

    def trajectory(tx, params):
        return scan_trajectory(tx, params, lambda p: jax.tree.map(gradient, p, target), steps=STEPS)

    run = jax.jit(lambda params: [trajectory(tx, params) for tx in txs])
    return jax.tree.map(np.asarray, run(init))


def _relative_error(ours: dict, reference: dict) -> float:
    return max(
        float(np.max(np.abs(ours[k] - reference[k])) / np.max(np.abs(reference[k])))
        for k in reference
    )


class Case(NamedTuple):
    ours: Callable[[], optax.GradientTransformation]
    theirs: Callable[[], optax.GradientTransformation]
    gradient: Callable = _smooth_gradient


def _decaying(rate: float) -> optax.Schedule:
    return optax.exponential_decay(rate, transition_steps=10, decay_rate=0.7)


CASES = {
    "sgd": Case(lambda: lookax.sgd(0.1), lambda: optax.sgd(0.1)),
    "sgd-momentum": Case(
        lambda: lookax.sgd(0.05, momentum=0.9), lambda: optax.sgd(0.05, momentum=0.9)
    ),
    "sgd-nesterov": Case(
        lambda: lookax.sgd(0.05, momentum=0.9, nesterov=True),
        lambda: optax.sgd(0.05, momentum=0.9, nesterov=True),
    ),
    # Both momentum buffers hold gradients, so they agree under a schedule too.
    "sgd-momentum-schedule": Case(
        lambda: lookax.sgd(_decaying(0.1), momentum=0.9),
        lambda: optax.sgd(_decaying(0.1), momentum=0.9),
    ),
    # optax.adagrad puts eps inside the root and starts the sum at 0.1: equal
    # only with eps=0 and a zero initial accumulator.
    "adagrad": Case(
        lambda: lookax.adagrad(0.1, eps=0.0),
        lambda: optax.adagrad(0.1, initial_accumulator_value=0.0, eps=0.0),
    ),
    # optax.rmsprop with decay=0.99 and eps outside the root; its momentum
    # accumulates lr-scaled steps, the same numbers at a constant lr.
    "rmsprop": Case(
        lambda: lookax.rmsprop(1e-2),
        lambda: optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
    ),
    "rmsprop-centered-momentum": Case(
        lambda: lookax.rmsprop(1e-2, momentum=0.9, centered=True),
        lambda: optax.rmsprop(
            1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False, momentum=0.9, centered=True
        ),
    ),
    "adadelta": Case(
        lambda: lookax.adadelta(1.0, weight_decay=0.1),
        lambda: optax.adadelta(1.0, weight_decay=0.1),
    ),
    "adam": Case(lambda: lookax.adam(1e-2), lambda: optax.adam(1e-2)),
    "adam-schedule": Case(
        lambda: lookax.adam(_decaying(1e-2), b1=0.8, b2=0.99),
        lambda: optax.adam(_decaying(1e-2), b1=0.8, b2=0.99),
    ),
    "adamw": Case(
        lambda: lookax.adamw(1e-2, weight_decay=0.1),
        lambda: optax.adamw(1e-2, weight_decay=0.1),
    ),
    # optax.radam adds eps to the bias-corrected root (lookax/torch: to the raw
    # one) and uses rho_t >= 5 (lookax/torch: > 5); with eps=0 the algorithms
    # coincide, and rho_t never equals 5 exactly.
    "radam-eps0": Case(lambda: lookax.radam(1e-2, eps=0.0), lambda: optax.radam(1e-2, eps=0.0)),
    "lion": Case(
        lambda: lookax.lion(1e-3), lambda: optax.lion(1e-3, weight_decay=0.0), _offset_gradient
    ),
    "lion-weight-decay": Case(
        lambda: lookax.lion(1e-3, weight_decay=0.5),
        lambda: optax.lion(1e-3, weight_decay=0.5),
        _offset_gradient,
    ),
}

# float32: rounding-level differences stay below 1e-6 over 200 steps, except
# where lookax deliberately computes differently:
# - Adam family: optax computes 1 - b**t in float32 (b2=0.999 is 0.99900001
#   there, ~1e-5 off relative to 1 - b2, and b**t loses digits); lookax uses
#   -expm1(t * log1p(-(1 - b))) from the float64 value.
# - RAdam: optax's float32 rho_t is computed naively (0.18% off at step 6).
# - Decoupled weight decay: lookax rounds it as PyTorch (shrink, then step);
#   optax adds wd * p to the step. With Lion's equal-sized steps the two
#   roundings drift apart by ~1e-5 over 200 steps.
# Each of these cases also runs in float64, where the algorithms must agree.
FLOAT32_RTOL = {
    "adam": 2e-5,
    "adam-schedule": 2e-5,
    "adamw": 2e-5,
    "radam-eps0": 2e-4,
    "lion-weight-decay": 3e-5,
}
FLOAT64_RTOL = 1e-12


def _error(name: str, dtype) -> float:
    case = CASES[name]
    ours, theirs = _trajectories((case.ours(), case.theirs()), case.gradient, dtype)
    return _relative_error(ours, theirs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_float32(name):
    error = _error(name, jnp.float32)
    assert error <= FLOAT32_RTOL.get(name, 1e-6), f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("name", sorted(FLOAT32_RTOL))
def test_matches_optax_float64(name):
    # jax.enable_x64 is jax >= 0.7's name; older jax (the declared lower bound) has it
    # in jax.experimental.
    enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    with enable_x64(True):
        error = _error(name, jnp.float64)
    assert error <= FLOAT64_RTOL, f"{name}: relative error {error:.2e}"


def test_centralize_gradients_matches_optax_centralize_in_torch_layout():
    init, target = _problem(jnp.float32)
    grads = jax.tree.map(_smooth_gradient, init, target)
    empty = optax.EmptyState()

    @jax.jit
    def both(grads):
        # optax.centralize keeps the leading axis (PyTorch layout: output first).
        torch_layout = lookax.centralize_gradients(output_axis=0).update(grads, empty)[0]
        reference = optax.centralize().update(grads, empty)[0]
        # Flax layout (output axis last) is the same operation on the transpose.
        flax_kernel = jnp.moveaxis(grads["kernel"], 0, -1)
        flax_layout = lookax.centralize_gradients().update({"k": flax_kernel}, empty)[0]["k"]
        return torch_layout, reference, jnp.moveaxis(flax_layout, -1, 0)

    ours, theirs, from_flax = both(grads)
    for key in grads:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_flax, theirs["kernel"], rtol=1e-6, atol=1e-6)


# Hyperparameters exact in float32, so the injected float32 arrays and the
# Python floats describe the same optimizer.
_EXACT = dict(learning_rate=2.0**-7, b1=0.875, b2=1.0 - 2.0**-7)


@pytest.mark.parametrize("factory", [lookax.adam, lookax.adamw], ids=["adam", "adamw"])
def test_inject_hyperparams_weight_decay_can_change(factory):
    injected = optax.inject_hyperparams(factory)(**_EXACT, weight_decay=0.0)

    def init_with_decay(params):
        state = injected.init(params)
        state.hyperparams["weight_decay"] = jnp.asarray(0.125, jnp.float32)
        return state

    changed = optax.GradientTransformation(init_with_decay, injected.update)
    with_decay, without_decay, injected_run = _trajectories(
        (factory(**_EXACT, weight_decay=0.125), factory(**_EXACT, weight_decay=0.0), changed),
        _smooth_gradient,
        jnp.float32,
    )
    assert _relative_error(injected_run, with_decay) <= 1e-6
    assert _relative_error(without_decay, with_decay) > 1e-3  # the decay matters here


# --- Step scalars in float32 against float64 (why lookax.adam/radam differ from
# optax's in float32, see FLOAT32_RTOL).

_STEPS_TO_CHECK = np.unique(
    np.concatenate([np.arange(1, 3000), np.logspace(3.5, 9, 200).astype(np.int64)])
)


def _radam_scalars_float64(b2: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Float64 ground truth; the textbook form is accurate enough in float64
    # (errors ~1e-16 * rho_inf / rho_t <= ~1e-12 for these b2).
    b2t = np.exp(t * np.log(b2))
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho = rho_inf - 2.0 * t * b2t / -np.expm1(t * np.log(b2))
    with np.errstate(invalid="ignore"):
        rect = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    return rho, rect


@pytest.mark.parametrize("b2", [0.9, 0.99, 0.999, 0.9999])
def test_radam_rho_and_rectification_are_float32_accurate(b2):
    steps = jnp.asarray(_STEPS_TO_CHECK, jnp.float32)
    scalars = jax.jit(radam_rectification, static_argnums=0)  # b2 a host float, as in the library
    rho, rectified, rect = map(np.asarray, scalars(b2, steps))
    rho64, rect64 = _radam_scalars_float64(b2, _STEPS_TO_CHECK.astype(np.float64))
    np.testing.assert_array_equal(rectified, rho64 > 5)  # the same steps are rectified
    assert np.max(np.abs(rho - rho64) / rho64) < 1e-6
    on = rho64 > 5
    assert np.max(np.abs(rect[on] - rect64[on]) / rect64[on]) < 1e-6


def test_naive_float32_scalars_are_what_lookax_avoids():
    # optax's float32 1 - b**t, from b2 = 0.999 rounded to float32:
    steps = np.arange(1.0, 11.0)
    naive = 1 - jnp.float32(0.999) ** jnp.asarray(steps, jnp.float32)
    exact = -np.expm1(steps * np.log(0.999))
    assert np.max(np.abs(np.asarray(naive) - exact) / exact) > 5e-6
    # RAdam's rho_inf - 2 t b2^t / (1 - b2^t) in float32 (e.g. optax.radam):
    b2, t = jnp.float32(0.999), jnp.float32(6.0)
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
    naive = jnp.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    _, rect64 = _radam_scalars_float64(0.999, np.array([6.0]))
    assert abs(float(naive) - rect64[0]) / rect64[0] > 1e-3


@pytest.mark.parametrize("beta", [0.9, 0.999, 0.9999])
def test_bias_correction_is_float32_accurate(beta):
    steps = jnp.asarray(_STEPS_TO_CHECK, jnp.float32)
    ours = jax.jit(lambda t: one_minus_power(log_beta(beta), t))(steps)
    exact = -np.expm1(_STEPS_TO_CHECK * np.log(beta))
    assert np.max(np.abs(np.asarray(ours) - exact) / exact) < 1e-6


@pytest.mark.parametrize(("b1", "momentum_decay"), [(0.9, 4e-3), (0.999, 1e3)])
def test_nadam_one_minus_mu_product_is_float32_accurate(b1, momentum_decay):
    # (0.999, 1e3): mu_t = b1 from the first step, so the product stays near 1
    # for hundreds of steps; a float32 running product drifts by ~3e-5 there.
    tx = lookax.scale_by_nadam(b1=b1, momentum_decay=momentum_decay)
    log_b1 = log_beta(b1)

    @jax.jit
    def complements(params):
        def step(state, _):
            _, state = tx.update(jnp.ones_like(params), state)
            log_product = state.count.astype(jnp.float32) * log_b1 + state.log_factor_product
            return state, -jnp.expm1(log_product)

        return jax.lax.scan(step, tx.init(params), None, length=1000)[1]

    ours = np.asarray(complements(jnp.zeros(1)))
    t = np.arange(1, 1001, dtype=np.float64)
    mu = b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
    exact = -np.expm1(np.cumsum(np.log(mu)))
    assert np.max(np.abs(ours - exact) / exact) < 1e-6
