"""Complex parameters: PyTorch's rule, a complex number is two real parameters.

The torch fixtures (tests/test_torch_parity.py) and the contract rows
(tests/test_optimizer_contract.py) hold every optimizer to it; this file checks what they do not
reach: options outside the fixtures (complex ``mu_dtype`` with AMSGrad, Lookahead interpolating a
complex inner state) against the same transformation on the split tree (each complex leaf given
as its real and imaginary parts), the difference from optax's shared ``|g|^2``, ``mu_dtype`` per
leaf kind, Lookahead's complex slow weights against a NumPy reference, optax wrappers over a
complex state (``inject_hyperparams``, whose hyperparameters become complex over complex params,
``masked``, ``tree.map_params``), and complex128 under ``jax_enable_x64`` (the x64 worker's
``complex`` checks).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import assert_worker_checks_passed, scan_trajectory

import lookax

X64_WORKER = Path(__file__).parent / "_integration_workers" / "x64_worker.py"
RNG = np.random.default_rng(7)
# A mixed tree: a complex matrix, a real vector, a complex scalar.
PARAMS = {
    "kernel": (RNG.normal(size=(3, 4)) + 1j * RNG.normal(size=(3, 4))).astype(np.complex64),
    "bias": RNG.normal(size=(4,)).astype(np.float32),
    "scale": np.complex64(0.5 - 1.5j),
}
TARGET = {"kernel": 0.3 + 0.2j, "bias": 0.3, "scale": -1.0 + 0.5j}
CURVATURE = {"kernel": 1.0 + 0.25j, "bias": 0.5, "scale": 2.0 - 0.5j}
NUM_STEPS = 7  # Lookahead (k=3) syncs at steps 3 and 6


def gradients(params):
    """A gradient stream that couples the real and imaginary parts (complex curvature)."""
    return {k: CURVATURE[k] * (p - TARGET[k]) for k, p in params.items()}


def split(tree):
    """Each complex leaf as two real leaves, ``name.re`` and ``name.im``."""
    out = {}
    for name, x in tree.items():
        if jnp.iscomplexobj(x):
            out[name + ".re"], out[name + ".im"] = jnp.real(x), jnp.imag(x)
        else:
            out[name] = x
    return out


def merge(tree):
    """The inverse of :func:`split`."""
    out = {}
    for name, x in tree.items():
        base, _, part = name.partition(".")
        if part == "re":
            out[base] = jax.lax.complex(x, tree[base + ".im"])
        elif not part:
            out[name] = x
    return out


EQUIVALENT = {  # options the torch fixtures do not reach
    "adam_amsgrad_complex_mu_dtype": lambda: lookax.adam(
        0.05, amsgrad=True, weight_decay=0.1, mu_dtype=jnp.complex64
    ),
    "lookahead_rmsprop_interpolate": lambda: lookax.lookahead(
        lookax.rmsprop(0.01, momentum=0.5, centered=True), 3, 0.5, inner_state_on_sync="interpolate"
    ),
}


@jax.jit
def run_equivalence_cases():
    """Each case on the complex tree and on the split tree, ``NUM_STEPS`` steps."""

    def trajectory(tx, params, to_complex, to_tree):
        grads = lambda p: to_tree(gradients(to_complex(p)))
        record = lambda p, _: to_complex(p)
        return scan_trajectory(tx, params, grads, steps=NUM_STEPS, record=record)

    identity = lambda tree: tree  # noqa: E731
    results = {}
    for name, make in EQUIVALENT.items():
        tx = make()
        results[name] = (
            trajectory(tx, PARAMS, identity, identity),
            trajectory(tx, split(PARAMS), merge, split),
        )
    return results


def test_complex_leaves_are_two_real_parameters():
    """Each case on complex params equals itself on the real and imaginary parts as leaves."""
    for name, (got, want) in run_equivalence_cases().items():
        for leaf in PARAMS:
            assert got[leaf].dtype == jnp.result_type(PARAMS[leaf]), (name, leaf)
            np.testing.assert_allclose(got[leaf], want[leaf], rtol=1e-6, atol=1e-7, err_msg=name)
        assert not np.allclose(got["kernel"][-1], PARAMS["kernel"]), name


@jax.jit
def first_adam_steps(grads):
    """The first direction of lookax's and of optax's Adam."""
    return tuple(
        tx.update(grads, tx.init(grads))[0]
        for tx in (lookax.scale_by_adam(), optax.scale_by_adam())
    )


def test_complex_differs_from_optax_shared_magnitude():
    """The first Adam step moves each part by the learning rate; optax's |g|^2 rule does not."""
    g = 3.0 + 0.1j
    lookax_step, optax_step = first_adam_steps({"z": jnp.array([g], jnp.complex64)})
    np.testing.assert_allclose(lookax_step["z"], [1.0 + 1.0j], rtol=1e-6)
    # (optax bias-corrects in float32: 7e-6 off at step 1)
    np.testing.assert_allclose(optax_step["z"], [g / abs(g)], rtol=1e-4)


def test_mu_dtype_is_a_precision_per_leaf_kind():
    def moment_kinds(tx, params, moment):
        state = jax.eval_shape(tx.init, params)  # dtypes without compiling anything
        return jax.tree.map(lambda x: jnp.result_type(x).name, moment(state))

    mixed = {"kernel": "complex64", "bias": "float32", "scale": "complex64"}
    assert moment_kinds(lookax.adam(mu_dtype=jnp.complex64), PARAMS, lambda s: s[1].mu) == mixed
    assert moment_kinds(lookax.adam(), PARAMS, lambda s: s[1].nu) == mixed
    lion_kinds = moment_kinds(lookax.lion(mu_dtype=jnp.bfloat16), PARAMS, lambda s: s[0].mu)
    assert lion_kinds == dict(mixed, bias="bfloat16")  # no complex bfloat16: complex64
    sgd = lookax.sgd(0.1, momentum=0.9, mu_dtype=jnp.complex64)
    assert moment_kinds(sgd, {"w": jnp.ones(3)}, lambda s: s[1].trace) == {"w": "float32"}
    for bad in (jnp.int32, "not a dtype"):
        with pytest.raises(ValueError, match="mu_dtype"):
            lookax.radam(mu_dtype=bad)


def numpy_lookahead_sgd(params, lr, k, alpha, num_steps):
    """Algorithm 1 over plain SGD on :func:`gradients`, in complex128 NumPy."""
    fast = {n: np.asarray(p, np.complex128) for n, p in params.items()}
    slow = {n: p.copy() for n, p in fast.items()}
    trajectory = []
    for t in range(1, num_steps + 1):
        grads = gradients(fast)
        fast = {n: fast[n] - lr * grads[n] for n in fast}
        if t % k == 0:
            slow = {n: slow[n] + alpha * (fast[n] - slow[n]) for n in fast}
            fast = {n: s.copy() for n, s in slow.items()}
        trajectory.append((fast, slow))
    return trajectory


def test_lookahead_slow_weights_interpolate_as_complex_numbers():
    lr, k, alpha = 0.1, 3, 0.5
    tx = lookax.lookahead(lookax.sgd(lr), k, alpha)
    params = jax.tree.map(jnp.asarray, PARAMS)
    state = tx.init(params)
    step = jax.jit(
        lambda p, s: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(gradients(p), s, p))
    )
    for fast, slow in numpy_lookahead_sgd(PARAMS, lr, k, alpha, NUM_STEPS):
        params, state = step(params, state)
        slow_now = lookax.slow_params(state, params)
        for name in PARAMS:
            assert slow_now[name].dtype == params[name].dtype == jnp.result_type(PARAMS[name])
            np.testing.assert_allclose(params[name], fast[name], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(slow_now[name], slow[name], rtol=1e-5, atol=1e-6)


def test_optax_wrappers_over_a_complex_state():
    tx = lookax.adam(0.05, amsgrad=True)
    state = tx.init(PARAMS)
    assert jax.tree.map(jnp.shape, jax.eval_shape(tx.init, PARAMS)) == jax.tree.map(
        jnp.shape, state
    )
    # map_params finds the params-like (complex) moments, e.g. to build shardings.
    kinds = optax.tree.map_params(
        tx, lambda v: jnp.result_type(v).name, state, transform_non_params=lambda _: None
    )
    assert kinds[1].nu_max == {"kernel": "complex64", "bias": "float32", "scale": "complex64"}
    injected = optax.inject_hyperparams(lookax.adam)(learning_rate=0.05, amsgrad=True)
    masked = optax.masked(tx, {"kernel": True, "bias": False, "scale": True})

    @jax.jit
    def first_updates(params):
        grads = gradients(params)
        return grads, [t.update(grads, t.init(params), params)[0] for t in (tx, injected, masked)]

    grads, (plain, injected_updates, masked_updates) = first_updates(PARAMS)
    for name in PARAMS:
        np.testing.assert_allclose(injected_updates[name], plain[name], rtol=1e-6)
    np.testing.assert_allclose(masked_updates["kernel"], plain["kernel"], rtol=1e-6)
    np.testing.assert_array_equal(masked_updates["bias"], grads["bias"])


@pytest.mark.slow
def test_complex128_under_x64(run_worker, tmp_path):
    out = tmp_path / "complex.json"
    run_worker(X64_WORKER, out, "complex", timeout=240)
    expected = [
        "complex128_state_types_are_stable",
        "lookahead_complex128_slow_weights_over_complex64_params",
        "mu_dtype_float64_gives_complex128_moments",
    ]
    assert_worker_checks_passed(json.loads(out.read_text()), expected)
