"""Resumes a SlowMo training run (Lookahead with an outer optimizer) from an orbax checkpoint.

Run by tests/test_checkpoint.py as

    python outer_checkpoint_worker.py CHECKPOINT_DIR STEPS_DONE OUT.npz VARIANT

in a fresh process: it builds the abstract training state with ``jax.eval_shape`` (no real
arrays), restores the checkpoint into it, checks that the outer optimizer's momentum came back
(non-zero in every fragment: an outer step of each is behind the checkpoint), continues with the
same jitted, donated step to ``TOTAL_STEPS`` (through the next outer steps, which use that
momentum) and writes every leaf of the final state to OUT.npz as raw bits
(``checkpoint_worker.leaves_by_path``). The test, which imports this module for
``make_training``, runs the uninterrupted reference and compares bit for bit.

The variants (``VARIANTS``: SlowMo's options, and the step the checkpoint is taken after):

- ``slowmo``: saved at step 6, mid-cycle, the momentum of the step-4 sync in it;
- ``overlapped``: ``sync_delay=1``, saved at step 8, between the sync call (8) and the call
  that takes its outer step (9), the momentum of the outer step at call 5 in it;
- ``streaming``: ``fragments=2`` ("b" syncs at steps 2, 6, 10; "w" at 4, 8), saved at step 7,
  between the fragments' syncs, each fragment's own momentum in it.
"""

from __future__ import annotations

import sys

import numpy as np

SYNC_PERIOD = 4
TOTAL_STEPS = 11  # syncs after steps 4 and 8
VARIANTS = {
    "slowmo": ({}, 6),  # phase 2 of the second k-cycle: mid-cycle, one sync behind
    "overlapped": ({"sync_delay": 1}, 8),  # the sync call done, its outer step pending
    "streaming": ({"fragments": 2}, 7),  # "b" synced at 6, "w" syncs at 8
}


def make_training(variant: str = "slowmo"):
    """The model-free training problem: (init_state(), jitted donated step)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    import lookax

    options, _ = VARIANTS[variant]
    tx = lookax.slowmo(optax.adam(0.05), sync_period=SYNC_PERIOD, **options)

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


def outer_momenta(state) -> list[dict]:
    """The outer SGD's momentum buffer of each fragment inside the SlowMo state.

    With fragments, a fragment's buffer holds ``optax.MaskedNode()`` at the other
    fragments' leaves (``jax.tree.leaves`` skips them).
    """
    return [
        node.trace
        for fragment in state.opt_state.outer_state.per_fragment
        for node in fragment
        if hasattr(node, "trace")  # optax's ScaleByMomentumState / TraceState
    ]


def main() -> None:
    from checkpoint_worker import restore_and_continue  # this script's directory is on sys.path

    variant = sys.argv[4]

    def outer_momentum_came_back(state) -> None:
        import jax

        # The restored outer momentum is the one the outer steps before the checkpoint left.
        momenta = outer_momenta(state)
        assert len(momenta) == len(state.opt_state.outer_state.per_fragment)
        for momentum in momenta:
            assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(momentum))

    restore_and_continue(
        lambda: make_training(variant),
        lambda state: state.opt_state,
        SYNC_PERIOD,
        TOTAL_STEPS,
        check=outer_momentum_came_back,
    )


if __name__ == "__main__":
    main()
