"""lookax with Flax: linen TrainState, nnx.Optimizer, evaluating on the slow weights in one
line each, and an end-to-end run training a small Flax model.

The two documented one-liners (docs/lookahead.md, "Evaluating on the slow weights"):

    # linen / TrainState
    logits = state.apply_fn({"params": lookax.slow_params(state.opt_state, state.params)}, x)

    # nnx: a model holding the slow weights (the trained model itself is left as it is)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    slow_model = nnx.merge(graphdef, lookax.slow_params(optimizer.opt_state, params), rest)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _helpers import assert_trees_bitwise_equal, assert_trees_close
from flax import linen, nnx
from flax.training import train_state

import lookax

SYNC_PERIOD = 3


def make_data(seed: int = 0, n: int = 256, dim: int = 8, classes: int = 4):
    """Inputs and labels from a random teacher network: learnable, not trivially separable."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    w1 = rng.normal(size=(dim, 16)).astype(np.float32)
    w2 = rng.normal(size=(16, classes)).astype(np.float32)
    labels = np.argmax(np.tanh(x @ w1) @ w2, axis=-1)
    return jnp.asarray(x), jnp.asarray(labels)


class LinenMLP(linen.Module):
    hidden: int = 32
    classes: int = 4

    @linen.compact
    def __call__(self, x):
        x = linen.relu(linen.Dense(self.hidden)(x))
        return linen.Dense(self.classes)(x)


class NnxMLP(nnx.Module):
    """Has BatchNorm, so the model holds non-Param state the optimizer must not touch."""

    def __init__(self, dim: int, classes: int, rngs: nnx.Rngs):
        self.dense1 = nnx.Linear(dim, 32, rngs=rngs)
        self.norm = nnx.BatchNorm(32, rngs=rngs)
        self.dense2 = nnx.Linear(32, classes, rngs=rngs)

    def __call__(self, x):
        return self.dense2(nnx.relu(self.norm(self.dense1(x))))


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def trees_equal(a, b) -> bool:
    """Equal values leaf by leaf, for ``assert not``: the weights moved (by value, not bits)."""
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# --- linen TrainState ----------------------------------------------------------------------


def test_train_state_apply_gradients_and_evaluating_on_slow_weights():
    x, labels = make_data()
    model = LinenMLP()
    params = model.init(jax.random.key(0), x)["params"]
    tx = lookax.lookahead(optax.adam(1e-2), SYNC_PERIOD, 0.5)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    def loss_fn(params):
        return cross_entropy(model.apply({"params": params}, x), labels)

    @jax.jit
    def train_step(state):
        return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))

    @jax.jit
    def manual_step(params, opt_state):
        updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    manual_params, manual_opt_state = params, tx.init(params)
    for t in range(1, 2 * SYNC_PERIOD + 2):
        state = train_step(state)
        if t == 2:
            # TrainState.create's step is a Python int and comes back an int32 array, so the
            # step may compile twice (plain optax too); it must not compile again after that.
            compiled_after_two_steps = train_step._cache_size()
        manual_params, manual_opt_state = manual_step(manual_params, manual_opt_state)
        assert_trees_close(state.params, manual_params)
        assert int(state.step) == t

        # The one documented line: evaluate the model on the slow weights.
        logits = state.apply_fn({"params": lookax.slow_params(state.opt_state, state.params)}, x)

        slow = lookax.slow_params(state.opt_state, state.params)
        assert jax.tree.structure(slow) == jax.tree.structure(state.params)
        if t % SYNC_PERIOD == 0:  # a sync just ran: its slow weights are the params
            assert_trees_bitwise_equal(state.params, slow)
            np.testing.assert_array_equal(logits, state.apply_fn({"params": state.params}, x))
        else:  # the stored ones, written at the start of the call after the sync
            np.testing.assert_array_equal(
                logits, model.apply({"params": state.opt_state.lagging_slow}, x)
            )
            assert not trees_equal(state.params, slow)
    assert train_step._cache_size() == compiled_after_two_steps <= 2

    # Finishing on the slow weights (the loop ended mid-cycle, so they differ from the params).
    final = state.replace(params=lookax.slow_params(state.opt_state, state.params))
    assert_trees_bitwise_equal(final.params, state.opt_state.lagging_slow)
    np.testing.assert_array_equal(final.apply_fn({"params": final.params}, x), logits)


# --- nnx.Optimizer ---------------------------------------------------------------------------


def test_nnx_optimizer_update_and_evaluating_on_slow_weights():
    x, labels = make_data(seed=1)
    model = NnxMLP(x.shape[1], 4, nnx.Rngs(0))
    tx = lookax.lookahead(optax.adam(1e-2), SYNC_PERIOD, 0.5)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    model.eval()  # BatchNorm on running averages: the loss is a function of Params only

    # The functional twin: the same tx on the same Param state, no nnx in the loop.
    func_graphdef, func_params, func_rest = nnx.split(model, nnx.Param, ...)
    func_params = jax.tree.map(jnp.copy, func_params)
    func_opt_state = tx.init(func_params)

    def loss_fn(model):
        return cross_entropy(model(x), labels)

    @nnx.jit
    def train_step(model, optimizer):
        grads = nnx.grad(loss_fn)(model)
        optimizer.update(model, grads)

    @jax.jit
    def func_step(params, opt_state, rest):
        def loss_of(params):
            return cross_entropy(nnx.merge(func_graphdef, params, rest)(x), labels)

        grads = jax.grad(loss_of)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for t in range(1, 2 * SYNC_PERIOD + 2):
        train_step(model, optimizer)
        func_params, func_opt_state = func_step(func_params, func_opt_state, func_rest)
        current = nnx.state(model, nnx.Param)
        assert_trees_close(current, func_params)

        # The documented lines: a model that holds the slow weights.
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        slow_model = nnx.merge(graphdef, lookax.slow_params(optimizer.opt_state, params), rest)

        slow_state = nnx.state(slow_model, nnx.Param)
        assert jax.tree.structure(slow_state) == jax.tree.structure(current)
        assert_trees_close(slow_state, lookax.slow_params(func_opt_state, func_params))
        # Non-Param state (BatchNorm statistics) comes from the model; the model is untouched.
        assert_trees_bitwise_equal(
            nnx.state(slow_model, nnx.BatchStat), nnx.state(model, nnx.BatchStat)
        )
        assert_trees_bitwise_equal(nnx.state(model, nnx.Param), current)
        if t % SYNC_PERIOD == 0:
            assert_trees_bitwise_equal(slow_state, current)
            np.testing.assert_array_equal(slow_model(x), model(x))
        else:
            assert not trees_equal(slow_state, current)
            assert not np.array_equal(slow_model(x), model(x))

    # Finishing on the slow weights: write them into the model itself.
    model_output_on_slow = slow_model(x)
    nnx.update(model, lookax.slow_params(optimizer.opt_state, nnx.state(model, nnx.Param)))
    np.testing.assert_array_equal(model(x), model_output_on_slow)
    assert_trees_bitwise_equal(nnx.state(model, nnx.Param), nnx.state(slow_model, nnx.Param))


# --- End to end ------------------------------------------------------------------------------


def test_end_to_end_training_a_flax_model_lowers_the_loss():
    x, labels = make_data(seed=2, n=512)
    model = LinenMLP(hidden=64)
    params = model.init(jax.random.key(1), x)["params"]
    tx = optax.chain(optax.clip_by_global_norm(1.0), lookax.ranger(1e-2, sync_period=6))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    def loss_fn(params, batch_x, batch_labels):
        return cross_entropy(model.apply({"params": params}, batch_x), batch_labels)

    @jax.jit
    def train_epoch(state, key):
        """One pass over the data in shuffled mini-batches of 64 (8 steps)."""
        order = jax.random.permutation(key, x.shape[0]).reshape(-1, 64)

        def step(state, batch):
            loss, grads = jax.value_and_grad(loss_fn)(state.params, x[batch], labels[batch])
            return state.apply_gradients(grads=grads), loss

        return jax.lax.scan(step, state, order)

    @jax.jit
    def evaluate(params):
        logits = model.apply({"params": params}, x)
        return cross_entropy(logits, labels), jnp.mean(jnp.argmax(logits, -1) == labels)

    initial_loss, initial_accuracy = evaluate(state.params)
    key = jax.random.key(2)
    epoch_losses = []
    for _ in range(40):  # 320 steps
        key, subkey = jax.random.split(key)
        state, losses = train_epoch(state, subkey)
        epoch_losses.append(float(losses.mean()))
    assert int(state.step) == 320

    slow = lookax.slow_params(state.opt_state, state.params)
    final_loss, final_accuracy = evaluate(state.params)
    slow_loss, slow_accuracy = evaluate(slow)
    assert np.all(np.isfinite(epoch_losses))
    # measured: loss 1.62 -> 0.36 (slow weights 0.36), accuracy 0.27 -> 0.87
    assert final_loss < 0.3 * initial_loss, (initial_loss, final_loss)
    assert slow_loss < 0.3 * initial_loss, (initial_loss, slow_loss)
    assert final_accuracy > 0.8 and slow_accuracy > 0.8, (final_accuracy, slow_accuracy)
    assert initial_accuracy < 0.5
    # falling, not just lower at the end: each quarter of training beats the one before
    quarters = np.array(epoch_losses).reshape(4, -1).mean(1)
    assert np.all(np.diff(quarters) < 0), quarters
    # 320 = 53 * 6 + 2: two steps past the last sync, the fast weights have moved on
    assert not trees_equal(slow, state.params)
