"""MNIST-1D, a small 1-D CNN and a jitted training loop: what the example notebooks train on.

A small, fast classification task for trying optimizers on a CPU in seconds:

- :func:`load_mnist1d`: MNIST-1D (Greydanus 2020), generated offline by the
  ``mnist1d`` package (4000 training and 1000 test sequences of length 40, ten
  classes), as a :class:`Dataset` of NumPy arrays;
- :class:`CNN1D`: a Flax (linen) 1-D CNN for it, 8,010 parameters;
- :func:`make_train_run`: a whole training run as a pure function of
  ``(hparams, seed_key)``, to ``jax.vmap`` over seeds and hyperparameters and
  ``jax.jit``; Lookahead runs are evaluated on their slow weights
  (:func:`lookax.slow_params`); :func:`make_segment` is its piece between two
  evaluations, and says what it measures;
- :func:`init_params`, :func:`loss_and_accuracy` and :func:`host_batch_indices`:
  the pieces for a loop of one's own (the replicas benchmark builds its own).

It needs the ``[demo]`` extra (``pip install 'lookax[demo]'``: Flax and
``mnist1d``), and is not imported by ``import lookax``::

  from lookax.mnist1d import CNN1D, load_mnist1d, make_train_run

``python -m lookax.demo`` trains on the same data and model.
"""

from __future__ import annotations

from lookax._mnist1d import (
    CNN1D,
    Dataset,
    host_batch_indices,
    init_params,
    load_mnist1d,
    loss_and_accuracy,
    make_segment,
    make_train_run,
)

__all__ = [
    "CNN1D",
    "Dataset",
    "host_batch_indices",
    "init_params",
    "load_mnist1d",
    "loss_and_accuracy",
    "make_segment",
    "make_train_run",
]
