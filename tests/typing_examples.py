"""Code a user writes with lookax, which a type checker must accept.

``mypy`` checks this file (``[tool.mypy] files`` in pyproject.toml, run by ``.ci/run``):
an annotation in lookax that breaks a user's type checking (a return type that
``optax.chain`` or Flax's ``TrainState`` refuses, a parameter type too narrow for a
schedule or a traced value) fails CI here. ``tests/test_typing_examples.py`` also runs
it, so the examples stay true at run time. ``assert_type`` pins the types users see.
"""

from __future__ import annotations

from typing import assert_type, cast

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

import lookax

Params = dict[str, jax.Array]


def _loss(params: Params) -> jax.Array:
    return jnp.sum(jnp.square(params["w"])) + jnp.sum(jnp.square(params["b"]))


def chain_and_step() -> Params:
    """Lookahead inside an optax chain, a jitted step, the slow weights to evaluate on."""
    params: Params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    inner = lookax.adam(1e-3, b1=0.9, b2=0.999)
    assert_type(inner, optax.GradientTransformationExtraArgs)
    la = lookax.lookahead(inner, sync_period=5, slow_step_size=0.5)
    assert_type(la, optax.GradientTransformationExtraArgs)
    tx = optax.chain(optax.clip_by_global_norm(1.0), la)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params: Params, opt_state: optax.OptState) -> tuple[Params, optax.OptState]:
        grads = jax.grad(_loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        # optax.apply_updates is typed as returning any array tree.
        return cast(Params, optax.apply_updates(params, updates)), opt_state

    for _ in range(5):
        params, opt_state = train_step(params, opt_state)
    eval_params: Params = lookax.slow_params(opt_state, params)
    return eval_params


def train_state_and_slow_params() -> Params:
    """Flax's TrainState takes a lookax transformation as its ``tx``."""
    params: Params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    schedule = optax.linear_schedule(0.5, 0.8, transition_steps=10)
    state = train_state.TrainState.create(
        apply_fn=lambda variables, x: x,
        params=params,
        tx=lookax.lookahead(
            lookax.radam(1e-3),
            sync_period=jnp.asarray(3),
            slow_step_size=schedule,
            inner_state_on_sync="interpolate",
        ),
    )
    state = state.apply_gradients(grads=jax.grad(_loss)(state.params))
    eval_params: Params = lookax.slow_params(state.opt_state, state.params)
    return eval_params


def the_state_and_its_fields() -> jax.Array:
    """``init`` of a bare Lookahead gives a LookaheadState; init_from_inner does too."""
    params: Params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    inner = optax.adam(1e-3)
    tx = lookax.lookahead(inner, sync_period=2)
    fresh = lookax.init_from_inner(tx, params, inner.init(params))
    assert_type(fresh, lookax.LookaheadState)
    count: jax.Array = fresh.count
    choice: lookax.InnerStateOnSync = "reset"
    lookax.lookahead(inner, inner_state_on_sync=choice, slow_dtype=jnp.float32)
    return count


def the_family() -> list[optax.GradientTransformation]:
    """Every optimizer and building block composes as an optax transformation."""
    lr: optax.Schedule = optax.cosine_decay_schedule(1e-3, 100)
    txs: list[optax.GradientTransformation] = [
        lookax.sgd(lr, momentum=0.9, nesterov=True, weight_decay=1e-4),
        lookax.adagrad(1e-2),
        lookax.rmsprop(1e-2, momentum=0.9, centered=True),
        lookax.adadelta(),
        lookax.adam(lr, amsgrad=True),
        lookax.adamw(lr, weight_decay=1e-2),
        lookax.nadam(2e-3, decoupled_weight_decay=True),
        lookax.radam(1e-3),
        lookax.lion(1e-4),
        lookax.ranger(1e-3, sync_period=6),
        lookax.grouped(optax.adam(1e-3)),
        lookax.slowmo(optax.sgd(0.1), sync_period=4),
        lookax.diloco(lookax.adamw(4e-4), sync_period=10, replica_axis="replica"),
        optax.chain(
            lookax.centralize_gradients(output_axis=-1),
            lookax.scale_by_radam(),
            lookax.add_decoupled_weight_decay(1e-3, weight_decay=1e-2),
            optax.scale_by_learning_rate(1e-3),
        ),
        optax.chain(lookax.scale_by_adam(), lookax.scale_by_nadam(), lookax.scale_by_adagrad()),
        optax.chain(lookax.scale_by_momentum(0.9), optax.scale(-1e-2)),
    ]
    return txs


def run_all() -> None:
    """Runs every example (``tests/test_typing_examples.py``)."""
    chain_and_step()
    train_state_and_slow_params()
    the_state_and_its_fields()
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    for tx in the_family()[:-4]:
        tx.init(params)


if __name__ == "__main__":
    run_all()
