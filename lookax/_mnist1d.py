"""MNIST-1D, a small 1-D CNN and a jitted training loop.

Shared by ``python -m lookax.demo``, ``benchmarks/train_quality.py`` and the
notebooks. Not part of the library's API: it needs the ``[demo]`` extra
(``mnist1d``, which imports matplotlib, requests and scipy).

The data set is MNIST-1D (Greydanus 2020, https://github.com/greydanus/mnist1d),
generated offline by ``mnist1d.data.make_dataset`` with the package's default
arguments: 4000 training and 1000 test sequences of length 40, ten classes.
(``mnist1d.get_dataset`` downloads a pickle; it is never called here.)

The convolutions are written as strided slices and one matmul
(:class:`SliceConv1D`) rather than ``flax.linen.Conv``: for these tiny shapes
XLA's CPU convolution is several times slower (measured on 2 cores, 100-sample
batches, a training step with Adam: ``nn.Conv`` 3.6 ms, the slice form 0.5 ms;
vmapped over 5 seeds: 22.8 ms against 1.1 ms). The kernel layout is
``nn.Conv``'s, ``[kernel, in, out]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lookax.lookahead import LookaheadState, slow_params

__all__ = [
    "CNN1D",
    "Dataset",
    "SliceConv1D",
    "TrainCarry",
    "batch_indices",
    "has_lookahead",
    "host_batch_indices",
    "init_params",
    "init_run",
    "load_mnist1d",
    "make_segment",
    "make_train_run",
]

NUM_CLASSES = 10


class Dataset(NamedTuple):
    """MNIST-1D as float32 / int32 arrays."""

    x_train: np.ndarray  # [4000, 40]
    y_train: np.ndarray  # [4000]
    x_test: np.ndarray  # [1000, 40]
    y_test: np.ndarray  # [1000]


@functools.lru_cache(maxsize=4)
def load_mnist1d(num_samples: int = 5000, seed: int = 42) -> Dataset:
    """Generates MNIST-1D offline (about 1 s), cached in memory.

    ``make_dataset`` reseeds NumPy's global random state; it is restored
    afterwards so callers' NumPy randomness is unaffected.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise ImportError(
            f"MNIST-1D needs the [demo] extra ({error}): pip install 'lookax[demo]'"
        ) from error

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # mnist1d draws from NumPy's legacy global generator: save and restore it.
    saved = np.random.get_state()  # noqa: NPY002
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(saved)  # noqa: NPY002
    return Dataset(
        x_train=np.asarray(data["x"], np.float32),
        y_train=np.asarray(data["y"], np.int32),
        x_test=np.asarray(data["x_test"], np.float32),
        y_test=np.asarray(data["y_test"], np.int32),
    )


class SliceConv1D(nn.Module):
    """1-D convolution over ``[batch, length, channels]`` as slices and one matmul.

    Zero-pads ``padding`` positions on each side, gathers the ``kernel_size``
    strided windows into ``[batch, out_length, kernel_size * in]`` and multiplies
    by the kernel reshaped to ``[kernel_size * in, out]``. Same result as
    ``nn.Conv(features, (kernel_size,), strides=stride, padding=[(padding,
    padding)])`` with the same parameters.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (self.kernel_size, in_features, self.features),
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        if self.padding:
            x = jnp.pad(x, ((0, 0), (self.padding, self.padding), (0, 0)))
        out_length = (x.shape[1] - self.kernel_size) // self.stride + 1
        span = self.stride * (out_length - 1) + 1
        windows = [x[:, k : k + span : self.stride] for k in range(self.kernel_size)]
        patches = jnp.concatenate(windows, axis=-1)
        return patches @ kernel.reshape(-1, self.features) + bias


class CNN1D(nn.Module):
    """Three strided convolutions (length 40 -> 20 -> 10 -> 5) and a linear head."""

    channels: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x[..., None]
        x = nn.relu(SliceConv1D(self.channels, 5, stride=2, padding=2)(x))
        x = nn.relu(SliceConv1D(self.channels, 3, stride=2, padding=1)(x))
        x = nn.relu(SliceConv1D(self.channels, 3, stride=2, padding=1)(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(NUM_CLASSES)(x)


MODEL = CNN1D()


def init_params(key: jax.Array, model: nn.Module = MODEL, length: int = 40) -> Any:
    """The model's initial variables for sequences of ``length`` (Flax's ``model.init``)."""
    return model.init(key, jnp.zeros((1, length), jnp.float32))


def loss_and_accuracy(
    params: Any, x: jax.Array, y: jax.Array, model: nn.Module = MODEL
) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy and accuracy of ``model`` on the batch ``(x, y)``."""
    logits = cast(jax.Array, model.apply(params, x))  # apply returns Any | (Any, state)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    accuracy = (logits.argmax(-1) == y).mean()
    return loss, accuracy


def batch_indices(key: jax.Array, num_train: int, batch_size: int, num_steps: int) -> jax.Array:
    """Minibatch indices ``[num_steps, batch_size]``: a fresh permutation each epoch."""
    per_epoch = num_train // batch_size
    epochs = -(-num_steps // per_epoch)
    keys = jax.random.split(key, epochs)
    perms = jax.vmap(lambda k: jax.random.permutation(k, num_train))(keys)
    perms = perms[:, : per_epoch * batch_size].reshape(epochs * per_epoch, batch_size)
    return perms[:num_steps]


def host_batch_indices(
    rng: np.random.Generator, num_train: int, batch_size: int, num_steps: int
) -> np.ndarray:
    """Minibatch indices ``[num_steps, batch_size]``, a fresh permutation each epoch, on the host.

    Drawn with NumPy, so nothing is compiled; ``rng`` makes them reproducible.
    """
    per_epoch = num_train // batch_size
    epochs = -(-num_steps // per_epoch)
    perms = np.stack([rng.permutation(num_train)[: per_epoch * batch_size] for _ in range(epochs)])
    return perms.reshape(epochs * per_epoch, batch_size)[:num_steps].astype(np.int32)


def has_lookahead(opt_state: Any) -> bool:
    leaves = jax.tree.leaves(opt_state, is_leaf=lambda n: isinstance(n, LookaheadState))
    return any(isinstance(leaf, LookaheadState) for leaf in leaves)


class TrainCarry(NamedTuple):
    params: Any
    opt_state: Any


def init_run(
    tx: optax.GradientTransformation,
    seed_key: jax.Array,
    num_train: int,
    batch_size: int,
    num_steps: int,
) -> tuple[TrainCarry, jax.Array]:
    """Initial weights and optimizer state, and the minibatch order, from one seed key.

    The same key gives the same weights and data order whatever ``tx`` is, so
    runs of different optimizers on one seed are paired.
    """
    init_key, data_key = jax.random.split(seed_key)
    params = init_params(init_key)
    carry = TrainCarry(params, tx.init(params))
    return carry, batch_indices(data_key, num_train, batch_size, num_steps)


def make_segment(
    tx: optax.GradientTransformation,
    data: Dataset,
    *,
    train_eval_size: int = 1000,
    model: nn.Module = MODEL,
) -> Callable[[TrainCarry, jax.Array], tuple[TrainCarry, dict[str, jax.Array]]]:
    """A training segment: one step per row of ``indices``, then an evaluation.

    Returns ``segment(carry, indices) -> (carry, metrics)`` (not jitted, so it
    can be vmapped, scanned or jitted by the caller). ``metrics``:

    - ``batch_loss``: mean minibatch loss over the segment's steps;
    - ``train_loss`` / ``test_loss`` / ``test_acc``: on the evaluation weights,
      the slow weights where Lookahead runs (``lookax.slow_params``), else the
      params; the training loss on the first ``train_eval_size`` training
      sequences;
    - ``fast_train_loss`` / ``fast_test_acc``: the same on the fast weights
      (the params the optimizer steps) one step before the segment's end: when
      the sync period divides the segment length, after the last inner step
      before a sync, where the fast weights are furthest from the slow ones
      (at the end itself, right after a sync, they equal the slow weights).
      Without Lookahead, equal to the above.
    """
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    x_sub, y_sub = x_train[:train_eval_size], y_train[:train_eval_size]

    def batch_loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return loss_and_accuracy(params, x, y, model)[0]

    def step(carry: TrainCarry, idx: jax.Array) -> tuple[TrainCarry, jax.Array]:
        params, opt_state = carry
        loss, grads = jax.value_and_grad(batch_loss)(params, x_train[idx], y_train[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return TrainCarry(optax.apply_updates(params, updates), opt_state), loss

    def evaluate(params: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        train_loss, _ = loss_and_accuracy(params, x_sub, y_sub, model)
        test_loss, test_acc = loss_and_accuracy(params, x_test, y_test, model)
        return train_loss, test_loss, test_acc

    def segment(carry: TrainCarry, indices: jax.Array) -> tuple[TrainCarry, dict[str, jax.Array]]:
        lookahead = has_lookahead(carry.opt_state)
        if lookahead:
            carry, losses = jax.lax.scan(step, carry, indices[:-1])
            fast = evaluate(carry.params)
            carry, last_loss = step(carry, indices[-1])
            losses = jnp.append(losses, last_loss)
            end = evaluate(slow_params(carry.opt_state, carry.params))
        else:
            carry, losses = jax.lax.scan(step, carry, indices)
            end = fast = evaluate(carry.params)
        metrics = {
            "batch_loss": losses.mean(),
            "train_loss": end[0],
            "test_loss": end[1],
            "test_acc": end[2],
            "fast_train_loss": fast[0],
            "fast_test_acc": fast[2],
        }
        return carry, metrics

    return segment


def make_train_run(
    make_tx: Callable[[Any], optax.GradientTransformation],
    data: Dataset,
    *,
    num_steps: int,
    eval_every: int,
    batch_size: int = 100,
) -> Callable[[Any, jax.Array], dict[str, jax.Array]]:
    """A whole training run as one function of ``(hparams, seed_key)``.

    ``make_tx(hparams)`` builds the optimizer (``hparams``: anything, e.g. a
    learning rate or a dict of arrays); the run initialises the model from the
    seed key, draws the minibatch order from it, and scans
    ``num_steps // eval_every`` segments. The same seed key gives the same
    initial weights and data order whatever the optimizer (paired runs). Returns
    the stacked metrics of :func:`make_segment`, each ``[num_evals]``. Pure:
    vmap it over seeds and hyperparameters, then jit.
    """
    if num_steps % eval_every:
        raise ValueError(f"num_steps ({num_steps}) must be a multiple of eval_every ({eval_every})")
    num_evals = num_steps // eval_every
    num_train = data.x_train.shape[0]

    def run(hparams: Any, seed_key: jax.Array) -> dict[str, jax.Array]:
        tx = make_tx(hparams)
        carry, indices = init_run(tx, seed_key, num_train, batch_size, num_steps)
        indices = indices.reshape(num_evals, eval_every, batch_size)
        _, metrics = jax.lax.scan(make_segment(tx, data), carry, indices)
        return metrics

    return run
