"""Resumes a lookax training run from an orbax checkpoint in a fresh process.

Run by tests/test_checkpoint.py as

    python checkpoint_worker.py CHECKPOINT_DIR STEPS_DONE OUT.npz

It builds the abstract training state with ``jax.eval_shape`` (no real arrays), restores the
checkpoint into it, continues with the same jitted step to ``TOTAL_STEPS`` and writes every leaf
of the final state to OUT.npz. The test, which imports this module for ``make_training`` and
``leaves_by_path``, runs the uninterrupted reference and compares bit for bit.
"""

from __future__ import annotations

import os
import sys

import numpy as np

SYNC_PERIOD = 5
TOTAL_STEPS = 13
SAVE_AFTER = 7  # phase 2 of the second k-cycle: mid-cycle, with a sync already behind it


def make_training():
    """The model-free training problem: (init_state(), jitted donated step)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    import lookax

    # The learning rate is injected (a float32 array in the state); b1, b2 and eps stay Python
    # floats. (Injected as float32 arrays, they would promote Adam's bf16 moments to float32
    # on the first update: an optax state whose dtypes change after init, which an eval_shape
    # target of the initial state cannot hold without rounding.)
    inner = optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps", "eps_root"))(
        learning_rate=0.05
    )
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        lookax.lookahead(inner, SYNC_PERIOD, 0.5, inner_state_on_sync="interpolate"),
    )

    def init_state():
        rng = np.random.default_rng(7)
        params = {
            "dense": {
                "kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                "bias": jnp.zeros((3,), jnp.float32),
            },
            "embedding": jnp.asarray(rng.normal(size=(5, 2)), jnp.bfloat16),
            "temperature": jnp.asarray(1.5, jnp.float32),
        }
        return train_state.TrainState.create(apply_fn=None, params=params, tx=tx)

    def loss(params, t):
        shift = jnp.sin(t.astype(jnp.float32))  # the gradient changes from step to step
        kernel = params["dense"]["kernel"]
        embedding = params["embedding"].astype(jnp.float32)
        return (
            jnp.sum((kernel - shift) ** 2)
            + jnp.sum(jnp.cos(params["dense"]["bias"] + kernel[0]))
            + jnp.sum(embedding**2) * params["temperature"] ** 2
        )

    def step(state):
        grads = jax.grad(loss)(state.params, state.step)
        return state.apply_gradients(grads=grads)

    return init_state, jax.jit(step, donate_argnums=0)


def leaves_by_path(tree) -> dict[str, np.ndarray]:
    """Every leaf as its raw bits, keyed by ``path|dtype`` (bitwise comparable, npz-safe)."""
    import jax

    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        value = np.asarray(leaf)
        bits = value.view(f"u{value.dtype.itemsize}") if value.dtype.kind in "fV" else value
        out[f"{jax.tree_util.keystr(path)}|{value.dtype.name}"] = bits
    return out


def restore_and_continue(make_training, lookahead_of, sync_period, total_steps, check=None):
    """The worker's job, shared with outer_checkpoint_worker.py (argv: DIR STEPS_DONE OUT).

    Restores the checkpoint into ``jax.eval_shape`` of the initial state, checks the
    restored Lookahead counters and every leaf's type (and ``check(state)``), continues to
    ``total_steps`` and writes every leaf's bits to OUT.
    """
    checkpoint_dir, steps_done, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import orbax.checkpoint as ocp

    import lookax

    init_state, step = make_training()
    abstract = jax.eval_shape(init_state)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
    checkpointer = ocp.StandardCheckpointer()
    state = checkpointer.restore(checkpoint_dir, abstract)
    checkpointer.close()

    assert jax.tree.structure(state) == jax.tree.structure(abstract)
    lookahead_state = lookahead_of(state)
    assert isinstance(lookahead_state, lookax.LookaheadState), type(lookahead_state)
    assert int(state.step) == steps_done == int(lookahead_state.count)
    assert int(lookahead_state.phase) == steps_done % sync_period
    for leaf, target in zip(jax.tree.leaves(state), jax.tree.leaves(abstract), strict=True):
        assert leaf.dtype == target.dtype and leaf.shape == target.shape
    if check is not None:
        check(state)

    for _ in range(total_steps - steps_done):
        state = step(state)
    np.savez(out_path, **leaves_by_path(state))
    print("restored and continued", flush=True)


def main() -> None:
    restore_and_continue(make_training, lambda state: state.opt_state[1], SYNC_PERIOD, TOTAL_STEPS)


if __name__ == "__main__":
    main()
