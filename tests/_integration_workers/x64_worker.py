"""lookax.lookahead in float64 (jax_enable_x64), run in its own process by
tests/test_transforms_jax.py so x64 never leaks into the pytest process:

    python x64_worker.py OUT.json            # the float64 checks
    python x64_worker.py OUT.json complex    # complex128 checks (tests/test_complex.py)

Records {"ok": bool, "detail": str} per check in OUT.json.
"""

from __future__ import annotations

import os

os.environ["JAX_PLATFORMS"] = "cpu"

import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import lookax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from _helpers import HAND_TRAJECTORY, assert_trees_bitwise_equal  # noqa: E402

CHECKS = []
COMPLEX_CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def complex_check(fn):
    COMPLEX_CHECKS.append(fn)
    return fn


def numpy_lookahead_adam(params, grad_fn, num_steps, k, alpha, lr=0.05, b1=0.9, b2=0.999):
    """Algorithm 1 over optax.adam's arithmetic, in float64 NumPy."""
    eps = 1e-8
    theta = {name: np.array(value, np.float64) for name, value in params.items()}
    slow = {name: value.copy() for name, value in theta.items()}
    mu = {name: np.zeros_like(value) for name, value in theta.items()}
    nu = {name: np.zeros_like(value) for name, value in theta.items()}
    trajectory = []
    for t in range(1, num_steps + 1):
        grads = grad_fn(theta)
        for name in theta:
            mu[name] = b1 * mu[name] + (1 - b1) * grads[name]
            nu[name] = b2 * nu[name] + (1 - b2) * grads[name] ** 2
            mu_hat = mu[name] / (1 - b1**t)
            nu_hat = nu[name] / (1 - b2**t)
            theta[name] = theta[name] - lr * mu_hat / (np.sqrt(nu_hat) + eps)
        if t % k == 0:
            for name in theta:
                slow[name] = slow[name] + alpha * (theta[name] - slow[name])
                theta[name] = slow[name].copy()
        trajectory.append({name: value.copy() for name, value in theta.items()})
    return trajectory, slow


@check
def float64_matches_numpy_algorithm_1():
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,)), "s": np.float64(0.3)}
    k, alpha, num_steps = 4, 0.6, 14

    def grad_fn(theta):  # the gradient of sum(theta^4 / 4 + sin(theta))
        return {name: value**3 + np.cos(value) for name, value in theta.items()}

    expected, expected_slow = numpy_lookahead_adam(params, grad_fn, num_steps, k, alpha)
    tx = lookax.lookahead(optax.adam(0.05), k, alpha)
    jparams = jax.tree.map(jnp.asarray, params)
    state = tx.init(jparams)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(state.lagging_slow))

    @jax.jit
    def step(params, state):
        grads = jax.tree.map(lambda p: p**3 + jnp.cos(p), params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    worst, params_at_sync = 0.0, None
    for t in range(num_steps):
        jparams, state = step(jparams, state)
        for name in params:
            actual = np.asarray(jparams[name])
            assert actual.dtype == np.float64, (name, actual.dtype)
            np.testing.assert_allclose(actual, expected[t][name], rtol=1e-12, atol=1e-14)
            worst = max(worst, float(np.max(np.abs(actual - expected[t][name]))))
        if t % k == 0 and t > 0:  # the call after a sync stores the params it produced
            assert_trees_bitwise_equal(params_at_sync, state.lagging_slow)
        params_at_sync = jparams
    slow = lookax.slow_params(state, jparams)
    for name in params:
        np.testing.assert_allclose(slow[name], expected_slow[name], rtol=1e-12, atol=1e-14)
    for leaf in jax.tree.leaves(state):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float64, leaf.dtype
    assert state.count.dtype == jnp.int32 and state.phase.dtype == jnp.int32
    return f"max abs diff vs float64 NumPy {worst:.3g}"


@check
def float64_hand_example():
    tx = lookax.lookahead(optax.sgd(0.1), sync_period=3, slow_step_size=0.5)
    params = jnp.asarray(1.0, jnp.float64)
    state = tx.init(params)
    trajectory = []
    for _ in range(7):
        updates, state = tx.update(jnp.asarray(1.0, jnp.float64), state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(float(params))
    assert params.dtype == jnp.float64
    np.testing.assert_allclose(trajectory, HAND_TRAJECTORY, rtol=1e-14)
    return " ".join(map(str, HAND_TRAJECTORY))


@check
def mixed_float64_float32_tree_and_ranger():
    params = {
        "f64": jnp.ones((3, 2), jnp.float64),
        "f32": jnp.ones((3, 2), jnp.float32),
        "bf16": jnp.ones((2,), jnp.bfloat16),
    }
    for tx in (
        lookax.lookahead(optax.adam(0.01), 2, inner_state_on_sync="interpolate"),
        lookax.ranger(0.01, sync_period=2),
    ):
        state = tx.init(params)
        step = jax.jit(
            lambda p, s, tx=tx: (lambda u, s: (optax.apply_updates(p, u), s))(
                *tx.update(jax.tree.map(lambda x: jnp.sin(x + 1), p), s, p)
            )
        )
        p = params
        for _ in range(5):
            p, state = step(p, state)
        for name, leaf in p.items():
            assert leaf.dtype == params[name].dtype, (name, leaf.dtype)
            assert lookax.slow_params(state, p)[name].dtype == params[name].dtype, name
            assert bool(jnp.all(jnp.isfinite(leaf))), name
        assert step._cache_size() == 1
    return "dtypes kept per leaf"


def _kinds(tree):
    return jax.tree.map(lambda x: jnp.result_type(x).name, tree)


@complex_check
def complex128_state_types_are_stable():
    """Every optimizer on a mixed complex128 / float64 / complex64 tree: an update keeps the
    params' and the state's dtypes (traced with jax.eval_shape: nothing is compiled; the
    complex128 torch-parity run compiles 200 steps of every optimizer)."""
    from lookax.optimizers import OPTIMIZERS

    params = {
        "kernel": jax.ShapeDtypeStruct((3, 4), jnp.complex128),
        "bias": jax.ShapeDtypeStruct((4,), jnp.float64),
        "scale": jax.ShapeDtypeStruct((), jnp.complex64),
    }
    for name, make in OPTIMIZERS:
        tx = lookax.sgd(0.01, momentum=0.9) if name == "sgd" else make()
        state = jax.eval_shape(tx.init, params)
        updates, new_state = jax.eval_shape(tx.update, params, state, params)
        assert _kinds(updates) == _kinds(params), (name, _kinds(updates))
        assert _kinds(new_state) == _kinds(state), (name, _kinds(new_state))
        assert "complex128" in jax.tree.leaves(_kinds(state)), name  # the kernel's state
    return f"{len(OPTIMIZERS)} optimizers"


@complex_check
def mu_dtype_float64_gives_complex128_moments():
    params = {"z": jnp.ones(2, jnp.complex64), "w": jnp.ones(2, jnp.float32)}
    for tx, moment in (
        (lookax.adam(mu_dtype=jnp.float64), lambda s: s[1].mu),
        (lookax.lion(mu_dtype=jnp.complex128), lambda s: s[0].mu),
    ):
        state = jax.eval_shape(tx.init, params)
        assert _kinds(moment(state)) == {"z": "complex128", "w": "float64"}, _kinds(moment(state))
        updates, new_state = jax.eval_shape(tx.update, params, state, params)
        assert _kinds(updates) == _kinds(params)
        assert _kinds(new_state) == _kinds(state)
    return "complex64 params: complex128 first moments; float32 params: float64"


@complex_check
def lookahead_complex128_slow_weights_over_complex64_params():
    params = {"z": jnp.array([1.0 + 2.0j, -0.5j], jnp.complex64)}
    tx = lookax.lookahead(lookax.sgd(0.1), 2, 0.5, slow_dtype=jnp.complex128)
    state = tx.init(params)
    assert _kinds(state.lagging_slow) == {"z": "complex128"}, _kinds(state.lagging_slow)
    step = jax.jit(lambda p, s: tx.update(jax.tree.map(lambda x: (1 - 1j) * x, p), s, p))
    expected = np.asarray(params["z"], np.complex128)
    slow = expected.copy()
    for t in range(1, 5):  # Algorithm 1 in complex128 NumPy alongside
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
        expected = expected - 0.1 * (1 - 1j) * expected
        if t % 2 == 0:
            slow = slow + 0.5 * (expected - slow)
            expected = slow.copy()
        assert params["z"].dtype == jnp.complex64
        assert lookax.slow_params(state, params)["z"].dtype == jnp.complex64
        np.testing.assert_allclose(params["z"], expected, rtol=1e-6)
    return "slow weights complex128, params complex64"


if __name__ == "__main__":
    assert jnp.zeros(()).dtype == jnp.float64  # x64 is on here
    results = {}
    for fn in COMPLEX_CHECKS if sys.argv[2:] == ["complex"] else CHECKS:
        try:
            results[fn.__name__] = {"ok": True, "detail": fn()}
        except Exception:  # noqa: BLE001 - recorded for the test to report
            results[fn.__name__] = {"ok": False, "detail": traceback.format_exc()[-4000:]}
    with open(sys.argv[1], "w") as out:
        json.dump(results, out, indent=1)
