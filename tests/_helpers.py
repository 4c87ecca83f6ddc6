"""Helpers shared by the test modules and by the worker scripts in tests/_integration_workers/.

Test modules import it as ``from _helpers import ...``: pytest puts tests/ on ``sys.path``
(rootdir-relative "prepend" import mode, tests/ has no ``__init__.py``). A worker runs as a
script with its own directory first on ``sys.path``, so it inserts tests/ itself before the
import. Nothing here imports more than lookax, jax, optax and NumPy: the wheel's smoke run in
.ci/run copies this file next to a few test modules into an environment with the wheel and
pytest alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

import lookax

# Lookahead by hand (docs/lookahead.md): theta0 = 1, gradient 1 at every step, inner
# optax.sgd(0.1), k = 3, alpha = 0.5; the params after steps 1..7. Every inner step takes 0.1
# off: .9, .8, then .7 at step 3, where the sync moves the slow weights halfway from 1 to .7
# and the params onto them: .85. Steps 4 and 5 give .75 and .65; step 6 reaches .55 and syncs
# halfway from .85: .70. Step 7: .60.
HAND_TRAJECTORY = (0.9, 0.8, 0.85, 0.75, 0.65, 0.70, 0.60)


def _bits(x: np.ndarray) -> np.ndarray:
    """The raw bits of ``x`` as unsigned integers (complex128: two 64-bit words a number)."""
    return np.ascontiguousarray(x).reshape(-1).view(f"u{np.gcd(x.dtype.itemsize, 8)}")


def assert_trees_bitwise_equal(actual: Any, expected: Any, err_msg: str = "") -> None:
    """The same tree structure, and every leaf the same dtype, shape and bits.

    Bits, not values: -0.0 and 0.0 differ, and NaNs are equal only with the same payload.
    """
    assert jax.tree.structure(actual) == jax.tree.structure(expected), (
        f"{err_msg}\n{jax.tree.structure(actual)}\n!= {jax.tree.structure(expected)}"
    )
    with_paths = jax.tree_util.tree_leaves_with_path(actual)
    for (path, a), e in zip(with_paths, jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a), np.asarray(e)
        where = f"{err_msg} {jax.tree_util.keystr(path)}".strip()
        assert (a.dtype, a.shape) == (e.dtype, e.shape), (where, a.dtype, a.shape, e.dtype, e.shape)
        if not np.array_equal(_bits(a), _bits(e)):
            np.testing.assert_array_equal(a, e, err_msg=where)  # NumPy names the values
            raise AssertionError(f"{where}: equal values in different bits (signed zeros, NaNs)")


def assert_trees_close(actual: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-7) -> None:
    """The same tree structure, and ``np.testing.assert_allclose`` leaf by leaf."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    with_paths = jax.tree_util.tree_leaves_with_path(actual)
    for (path, a), e in zip(with_paths, jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(e), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path)
        )


def update_step(tx: optax.GradientTransformation) -> Callable:
    """``step(params, state, grads) -> (params, state)``: ``tx.update``, then apply_updates."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def jit_update_step(tx: optax.GradientTransformation, *, donate: bool = False) -> Callable:
    """:func:`update_step` under ``jax.jit``, params and state donated on request.

    ``step.traces`` grows by one at every trace: a test that must not recompile checks it.
    """
    traces: list[None] = []
    plain = update_step(tx)

    def step(params, state, grads):
        traces.append(None)
        return plain(params, state, grads)

    jitted = jax.jit(step, donate_argnums=(0, 1) if donate else ())
    jitted.traces = traces
    return jitted


def scan_trajectory(
    tx: optax.GradientTransformation,
    params: Any,
    grads: Any,
    *,
    steps: int | None = None,
    record: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """Steps of ``tx`` from ``params`` in one ``lax.scan``: ``record(params, state)`` after each.

    ``grads`` is either the gradients stacked along a leading step axis (step t gets
    ``grads[t]``) or a function of the params, called at every step (then ``steps`` says how
    many). ``record`` defaults to the params. Not jitted here: the caller jits (or vmaps) the
    function that calls it, and decides what is traced (hyperparameters, the tx itself).
    """
    if callable(grads):
        gradient, xs = (lambda params, _: grads(params)), None
    else:
        gradient, xs = (lambda _, g: g), grads
    record = record or (lambda params, state: params)

    def step(carry, x):
        params, state = carry
        updates, state = tx.update(gradient(params, x), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), record(params, state)

    return jax.lax.scan(step, (params, tx.init(params)), xs, length=steps)[1]


def params_and_slow_params(params: Any, state: Any) -> tuple[Any, Any]:
    """A ``record`` for :func:`scan_trajectory`: the params and the slow weights now."""
    return params, lookax.slow_params(state, params)


def compiled_temp_bytes(tx: optax.GradientTransformation, params: Any) -> int:
    """XLA's temporary bytes for the donated, jitted :func:`update_step` (grads like params)."""
    lowered = jit_update_step(tx, donate=True).lower(params, tx.init(params), params)
    return lowered.compile().memory_analysis().temp_size_in_bytes


def assert_worker_checks_passed(report: dict[str, dict], expected: list[str]) -> None:
    """A worker's report ({check: {"ok", "detail"}}) holds exactly ``expected``, each passed."""
    assert sorted(report) == sorted(expected)
    failed = {name: result["detail"] for name, result in report.items() if not result["ok"]}
    assert not failed, "\n".join(f"{name}:\n{detail}" for name, detail in failed.items())
