"""Resumes a SlowMo training run (Lookahead with an outer optimizer) from an orbax checkpoint.

Run by tests/test_checkpoint.py as

    python outer_checkpoint_worker.py CHECKPOINT_DIR STEPS_DONE OUT.npz

in a fresh process: it builds the abstract training state with ``jax.eval_shape`` (no real
arrays), restores the checkpoint into it, checks that the outer optimizer's momentum came back
(non-zero: a sync is behind the checkpoint), continues with the same jitted, donated step to
``TOTAL_STEPS`` (through the next sync, which uses that momentum) and writes every leaf of the
final state to OUT.npz as raw bits (``checkpoint_worker.leaves_by_path``). The test, which
imports this module for ``make_training``, runs the uninterrupted reference and compares bit for
bit.
"""

from __future__ import annotations

import numpy as np

SYNC_PERIOD = 4
TOTAL_STEPS = 11  # syncs after steps 4 and 8
SAVE_AFTER = 6  # phase 2 of the second k-cycle: mid-cycle, one sync (and its momentum) behind


def make_training():
    """The model-free training problem: (init_state(), jitted donated step)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    import lookax

    tx = lookax.slowmo(optax.adam(0.05), sync_period=SYNC_PERIOD)

    def init_state():
        rng = np.random.default_rng(3)
        params = {
            "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        }
        return train_state.TrainState.create(apply_fn=None, params=params, tx=tx)

    def loss(params, t):
        shift = jnp.sin(t.astype(jnp.float32))  # the gradient changes from step to step
        return jnp.sum((params["w"] - shift) ** 2) + jnp.sum(jnp.cos(params["b"] + params["w"][0]))

    def step(state):
        grads = jax.grad(loss)(state.params, state.step)
        return state.apply_gradients(grads=grads)

    return init_state, jax.jit(step, donate_argnums=0)


def outer_momentum(state) -> dict:
    """The outer SGD's momentum buffer inside the SlowMo state."""
    (trace,) = [
        node.trace
        for node in state.opt_state.outer_state
        if hasattr(node, "trace")  # optax's ScaleByMomentumState / TraceState
    ]
    return trace


def main() -> None:
    from checkpoint_worker import restore_and_continue  # this script's directory is on sys.path

    def outer_momentum_came_back(state) -> None:
        import jax

        # The restored outer momentum is the one the sync before the checkpoint left.
        assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(outer_momentum(state)))

    restore_and_continue(
        make_training,
        lambda state: state.opt_state,
        SYNC_PERIOD,
        TOTAL_STEPS,
        check=outer_momentum_came_back,
    )


if __name__ == "__main__":
    main()
