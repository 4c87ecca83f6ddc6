"""One contract every optimizer lookax exports must keep (one parametrized table).

In the spirit of optax's contrib common tests: converges on a parabola and on Rosenbrock under
jit; compiles once; accepts extra args; wraps in inject_hyperparams and MultiSteps; bf16 params
stay bf16; state shapes, dtypes and shardings stable across steps; invalid hyperparameters
raise a ValueError naming the argument. Complex64 rows: converges on a complex parabola (a
mixed real/complex tree) and a complex Rosenbrock (gradients passed as JAX users pass them to
optax, the conjugate of ``jax.grad``'s output), compiles once, keeps state types.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lookax
from lookax.optimizers import OPTIMIZERS


@dataclasses.dataclass(frozen=True)
class Entry:
    factory: Callable[..., optax.GradientTransformation]
    kwargs: dict[str, Any]  # numeric hyperparameters: all injectable
    bad: tuple[tuple[dict[str, Any], str], ...]  # (kwargs, argument the error must name)
    static: dict[str, Any] = dataclasses.field(default_factory=dict)  # non-numeric arguments
    steps: int = 1000
    rosenbrock_steps: int = 3000
    rosenbrock_kwargs: dict[str, Any] | None = None

    def make(self, **overrides) -> optax.GradientTransformation:
        return self.factory(**{**self.kwargs, **self.static, **overrides})


def _lookahead_adam(learning_rate=0.05, sync_period=5, slow_step_size=0.5):
    return lookax.lookahead(lookax.adam(learning_rate), sync_period, slow_step_size)


NEG_LR = ({"learning_rate": -0.1}, "learning_rate")

TABLE: dict[str, Entry] = {
    "sgd": Entry(
        lookax.sgd,
        {"learning_rate": 0.02, "momentum": 0.9, "weight_decay": 0.0},
        (
            NEG_LR,
            ({"momentum": -0.5}, "momentum"),
            ({"weight_decay": -1.0}, "weight_decay"),
            ({"momentum": None, "nesterov": True}, "nesterov"),
        ),
        static={"nesterov": True},
        rosenbrock_kwargs={"learning_rate": 1e-3},
    ),
    "adagrad": Entry(
        lookax.adagrad,
        {"learning_rate": 0.5, "lr_decay": 0.0, "weight_decay": 0.0},
        (
            NEG_LR,
            ({"lr_decay": -1.0}, "lr_decay"),
            ({"eps": -1e-3}, "eps"),
            ({"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
        ),
        rosenbrock_kwargs={"learning_rate": 0.1},
    ),
    "rmsprop": Entry(
        lookax.rmsprop,
        {"learning_rate": 0.01, "decay": 0.99, "momentum": 0.5},
        (
            NEG_LR,
            ({"decay": 1.5}, "decay"),
            ({"eps": -1.0}, "eps"),
            ({"momentum": -1.0}, "momentum"),
        ),
        static={"centered": True},
        rosenbrock_kwargs={"learning_rate": 2e-3},
    ),
    "adadelta": Entry(
        lookax.adadelta,
        {"learning_rate": 50.0, "rho": 0.9},
        (
            NEG_LR,
            ({"rho": 1.5}, "rho"),
            ({"eps": -1e-6}, "eps"),
            ({"weight_decay": -1.0}, "weight_decay"),
        ),
        rosenbrock_kwargs={"learning_rate": 0.1},
        rosenbrock_steps=5000,
    ),
    "adam": Entry(
        lookax.adam,
        {"learning_rate": 0.05, "b1": 0.9, "b2": 0.999},
        (NEG_LR, ({"b1": 1.0}, "b1"), ({"b2": -0.1}, "b2"), ({"eps": -1e-8}, "eps")),
        static={"amsgrad": True},
        rosenbrock_kwargs={"learning_rate": 0.01},
    ),
    "adamw": Entry(
        lookax.adamw,
        {"learning_rate": 0.05, "weight_decay": 1e-4},
        (NEG_LR, ({"weight_decay": -0.1}, "weight_decay"), ({"b1": 1.2}, "b1")),
        rosenbrock_kwargs={"learning_rate": 0.01},
    ),
    "nadam": Entry(
        lookax.nadam,
        {"learning_rate": 0.05, "momentum_decay": 4e-3},
        (NEG_LR, ({"momentum_decay": -1.0}, "momentum_decay"), ({"b2": 1.0}, "b2")),
        rosenbrock_kwargs={"learning_rate": 0.003},
    ),
    "radam": Entry(
        lookax.radam,
        {"learning_rate": 0.05, "weight_decay": 0.0},
        (
            NEG_LR,
            ({"b1": -0.1}, "b1"),
            ({"eps": -1.0}, "eps"),
            ({"weight_decay": -1.0}, "weight_decay"),
        ),
        static={"decoupled_weight_decay": True},
        rosenbrock_kwargs={"learning_rate": 0.01},
    ),
    "lion": Entry(
        lookax.lion,
        {"learning_rate": 0.01, "b1": 0.9, "b2": 0.99},
        (
            NEG_LR,
            ({"b1": 1.5}, "b1"),
            ({"b2": -0.5}, "b2"),
            ({"weight_decay": -1.0}, "weight_decay"),
        ),
        rosenbrock_kwargs={"learning_rate": 1e-3},
    ),
    "ranger": Entry(
        lookax.ranger,
        {"learning_rate": 0.05, "slow_step_size": 0.5},
        (NEG_LR, ({"sync_period": 0}, "sync_period"), ({"slow_step_size": 2.0}, "slow_step_size")),
        rosenbrock_kwargs={"learning_rate": 0.01},
    ),
    "lookahead": Entry(
        _lookahead_adam,
        {"learning_rate": 0.05, "slow_step_size": 0.5},
        (({"sync_period": 0}, "sync_period"), ({"slow_step_size": -0.5}, "slow_step_size")),
        rosenbrock_kwargs={"learning_rate": 0.01},
    ),
}

NAMES = sorted(TABLE)


def test_every_exported_optimizer_is_in_the_table():
    exported = set(dict(OPTIMIZERS)) | {"lookahead"}
    assert exported <= set(lookax.__all__)
    assert set(TABLE) == exported, f"missing from the contract table: {exported - set(TABLE)}"


# --- Problems. ------------------------------------------------------------------------------

# Vectors and scalars only: gradient centralization (Ranger) keeps matrices on a hyperplane.
PARABOLA_TARGET = {"vector": np.full(6, 0.5, np.float32), "scalar": np.float32(-1.0)}
PARABOLA_START = {"vector": np.zeros(6, np.float32), "scalar": np.float32(2.0)}
CURVATURE = {"vector": np.linspace(0.2, 2.0, 6, dtype=np.float32), "scalar": 1.0}
ROSENBROCK_START = {"xy": np.zeros(2, np.float32)}


def parabola(params):
    return sum(0.5 * jnp.sum(CURVATURE[k] * (params[k] - PARABOLA_TARGET[k]) ** 2) for k in params)


def rosenbrock(params):
    x, y = params["xy"][0], params["xy"][1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def minimize(tx, loss, params, steps):
    def step(carry, _):
        params, state = carry
        # JAX's convention for complex params: optax takes the conjugate of jax.grad's output
        # (PyTorch's .grad). A no-op for real params.
        grads = jax.tree.map(jnp.conj, jax.grad(loss)(params))
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    params, state = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)[0]
    return params, state


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_parabola_and_rosenbrock_under_jit(name):
    entry = TABLE[name]
    tx = entry.make()
    rosenbrock_tx = entry.make(**(entry.rosenbrock_kwargs or {}))

    @jax.jit
    def run():
        near_parabola, parabola_state = minimize(tx, parabola, PARABOLA_START, entry.steps)
        near_rosenbrock, rosen_state = minimize(
            rosenbrock_tx, rosenbrock, ROSENBROCK_START, entry.rosenbrock_steps
        )
        return near_parabola, parabola_state, near_rosenbrock, rosen_state

    near_parabola, parabola_state, near_rosenbrock, rosen_state = run()
    if name in ("lookahead", "ranger"):  # evaluate Lookahead on its slow weights
        near_parabola = lookax.slow_params(parabola_state, near_parabola)
        near_rosenbrock = lookax.slow_params(rosen_state, near_rosenbrock)
    assert float(parabola(near_parabola)) < 1e-3 * float(parabola(PARABOLA_START))
    np.testing.assert_allclose(near_rosenbrock["xy"], [1.0, 1.0], atol=0.05)


SMALL_PARAMS = {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.zeros(4), "scale": jnp.ones(())}


def _signature(tree):
    return jax.tree.map(
        lambda x: (x.shape, jnp.result_type(x), getattr(x, "weak_type", False), x.sharding), tree
    )


@pytest.mark.parametrize("name", NAMES)
def test_compiles_once_accepts_extra_args_and_keeps_state_types(name):
    tx = TABLE[name].make()
    traces = []

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params, loss=jnp.float32(1.0), batch_index=3)
        return optax.apply_updates(params, updates), state

    params = jax.tree.map(jnp.array, SMALL_PARAMS)
    state = jax.jit(tx.init)(params)
    before = _signature(state)
    # Not constant along any axis: gradient centralization would zero that out.
    grads = jax.tree.map(lambda p: 0.1 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), params)
    for _ in range(7):
        params, state = train_step(params, state, grads)
    assert len(traces) == 1
    assert _signature(state) == before
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))
    assert not np.allclose(params["kernel"], SMALL_PARAMS["kernel"])


@pytest.mark.parametrize("name", NAMES)
def test_bf16_params_stay_bf16(name):
    tx = TABLE[name].make()
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), SMALL_PARAMS)

    @jax.jit
    def steps(params):
        state = tx.init(params)
        for _ in range(3):
            grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params, updates

    params, updates = steps(params)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(updates))


# Complex problems. The parabola is a mixed tree (a real leaf among complex ones) whose real and
# imaginary parts have different targets; the Rosenbrock function takes x = Re z, y = Im z, so
# PyTorch's rule (two real parameters) makes it the real problem, same hyperparameters and steps.
COMPLEX_PARABOLA_TARGET = {
    "vector": np.full(6, 0.5 - 0.25j, np.complex64),
    "scalar": np.complex64(-1.0 + 0.5j),
    "real": np.float32(0.75),
}
COMPLEX_PARABOLA_START = {
    "vector": np.zeros(6, np.complex64),
    "scalar": np.complex64(2.0 - 1.0j),
    "real": np.float32(-0.5),
}
COMPLEX_ROSENBROCK_START = {"z": np.complex64(0.0)}


def complex_parabola(params):
    return sum(
        0.5 * jnp.sum(CURVATURE.get(k, 1.0) * jnp.abs(params[k] - COMPLEX_PARABOLA_TARGET[k]) ** 2)
        for k in params
    )


def complex_rosenbrock(params):
    z = params["z"]
    return rosenbrock({"xy": jnp.stack([z.real, z.imag])})


@pytest.mark.parametrize("name", NAMES)
def test_complex_params_converge_compile_once_and_keep_state_types(name):
    """One compiled run per optimizer: the scan fixes the state's types across steps, a second
    call must not retrace, and the state after the run has the initial state's signature."""
    entry = TABLE[name]
    tx = entry.make()
    rosenbrock_tx = entry.make(**(entry.rosenbrock_kwargs or {}))
    traces = []

    @jax.jit
    def run(parabola_start, rosenbrock_start):
        traces.append(1)
        return (
            tx.init(parabola_start),
            minimize(tx, complex_parabola, parabola_start, entry.steps),
            minimize(rosenbrock_tx, complex_rosenbrock, rosenbrock_start, entry.rosenbrock_steps),
        )

    init_state, (near_parabola, parabola_state), (near_rosenbrock, rosen_state) = run(
        COMPLEX_PARABOLA_START, COMPLEX_ROSENBROCK_START
    )
    run(near_parabola, near_rosenbrock)
    assert len(traces) == 1
    assert _signature(parabola_state) == _signature(init_state)
    dtypes = lambda tree: jax.tree.map(jnp.result_type, tree)  # noqa: E731
    assert dtypes(near_parabola) == dtypes(COMPLEX_PARABOLA_START)
    if name in ("lookahead", "ranger"):  # evaluate Lookahead on its slow weights
        near_parabola = lookax.slow_params(parabola_state, near_parabola)
        near_rosenbrock = lookax.slow_params(rosen_state, near_rosenbrock)
    assert near_rosenbrock["z"].dtype == jnp.complex64
    assert float(complex_parabola(near_parabola)) < 1e-3 * float(
        complex_parabola(COMPLEX_PARABOLA_START)
    )
    np.testing.assert_allclose(near_rosenbrock["z"], 1.0 + 1.0j, atol=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_and_multisteps(name):
    entry = TABLE[name]
    injected = optax.inject_hyperparams(entry.factory, static_args=tuple(entry.static))(
        **entry.kwargs, **entry.static
    )
    plain = entry.make()
    multi = optax.MultiSteps(plain, every_k_schedule=2)
    grads_a = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), SMALL_PARAMS)
    grads_b = jax.tree.map(lambda p: -0.1 * jnp.ones_like(p), SMALL_PARAMS)
    mean_grads = jax.tree.map(lambda a, b: (a + b) / 2, grads_a, grads_b)

    @jax.jit
    def run(params, learning_rate_scale):
        inj_state, plain_state = injected.init(params), plain.init(params)
        inj_params, plain_params = params, params
        for _ in range(3):
            u, inj_state = injected.update(grads_a, inj_state, inj_params)
            inj_params = optax.apply_updates(inj_params, u)
            u, plain_state = plain.update(grads_a, plain_state, plain_params)
            plain_params = optax.apply_updates(plain_params, u)
        hyper = dict(inj_state.hyperparams)
        hyper["learning_rate"] = hyper["learning_rate"] * learning_rate_scale
        scaled_state = inj_state._replace(hyperparams=hyper)
        u_scaled, _ = injected.update(grads_a, scaled_state, inj_params)

        multi_state = multi.init(params)
        u1, multi_state = multi.update(grads_a, multi_state, params)
        multi_params = optax.apply_updates(params, u1)
        u2, multi_state = multi.update(grads_b, multi_state, multi_params)
        multi_params = optax.apply_updates(multi_params, u2)
        reference, _ = plain.update(mean_grads, plain.init(params), params)
        return (
            inj_params,
            plain_params,
            u1,
            multi_params,
            optax.apply_updates(params, reference),
            u_scaled,
        )

    inj_params, plain_params, u1, multi_params, reference, u_scaled = run(SMALL_PARAMS, 1.0)
    np.testing.assert_allclose(inj_params["kernel"], plain_params["kernel"], rtol=1e-6)
    # MultiSteps: nothing on the first mini-step, the averaged step on the second.
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(u1))
    for key in SMALL_PARAMS:
        np.testing.assert_allclose(multi_params[key], reference[key], rtol=1e-5, atol=1e-7)
    # A changed learning rate changes the step, without a recompile.
    _, _, _, _, _, u_zero_lr = run(SMALL_PARAMS, 0.0)
    assert run._cache_size() == 1
    # (step 4 is no Lookahead sync: k is 5 and 6 in the table)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(u_zero_lr))
    assert any(np.any(np.asarray(u) != 0) for u in jax.tree.leaves(u_scaled))


@pytest.mark.parametrize(
    ("name", "bad", "argument"),
    [(name, bad, argument) for name in NAMES for bad, argument in TABLE[name].bad],
)
def test_invalid_hyperparameters_raise_naming_the_argument(name, bad, argument):
    with pytest.raises(ValueError, match=argument):
        TABLE[name].make(**bad)
