"""Checkpointing a lookax training state.

- orbax: the whole TrainState (params, step, and an opt_state of chain(clip, lookahead(
  inject_hyperparams(adam)), 'interpolate') with a bf16 leaf) is saved mid k-cycle, restored in a
  fresh process into a jax.eval_shape target, and continued with the same jitted, donated step:
  every leaf is bitwise identical to the uninterrupted run.
- orbax, an outer optimizer: a SlowMo run (lookax.slowmo(optax.adam), k = 4) saved mid-cycle
  with a sync behind it (outer momentum non-zero), restored in a fresh process into a
  jax.eval_shape target and continued through the next sync: bitwise identical, outer state
  included. The same with ``sync_delay=1``, saved between a sync call and the call that takes
  its outer step; and with ``fragments=2``, saved between the two fragments' syncs, each
  fragment's momentum non-zero.
- flax.serialization: to_bytes/from_bytes and to_state_dict/from_state_dict round trips, then
  continuing: bitwise identical as well.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from _helpers import assert_trees_bitwise_equal
from flax import serialization
from flax.training import train_state

import lookax

WORKER = Path(__file__).parent / "_integration_workers" / "checkpoint_worker.py"
OUTER_WORKER = Path(__file__).parent / "_integration_workers" / "outer_checkpoint_worker.py"


def load_worker(path: Path = WORKER, name: str = "lookax_checkpoint_worker"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = load_worker()
outer_worker = load_worker(OUTER_WORKER, "lookax_outer_checkpoint_worker")


def run(step, state, num_steps):
    for _ in range(num_steps):
        state = step(state)
    return state


def save_with_orbax(state, directory: Path) -> Path:
    """``state`` saved by orbax's StandardCheckpointer into ``directory``, finished."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory, state)
    checkpointer.wait_until_finished()
    checkpointer.close()
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("save_after", [worker.SAVE_AFTER, 2 * worker.SYNC_PERIOD])
def test_orbax_restore_in_a_fresh_process_is_bitwise_identical(tmp_path, run_worker, save_after):
    """Mid-cycle (step 7), and between a sync and the call that stores its slow weights (10)."""
    init_state, step = worker.make_training()
    uninterrupted = worker.leaves_by_path(run(step, init_state(), worker.TOTAL_STEPS))

    state = run(step, init_state(), save_after)
    lookahead_state = state.opt_state[1]
    assert int(lookahead_state.count) > worker.SYNC_PERIOD  # a sync is behind it
    stored_kernel = lookahead_state.lagging_slow["dense"]["kernel"]
    current_kernel = lookax.slow_params(state.opt_state, state.params)["dense"]["kernel"]
    if save_after % worker.SYNC_PERIOD:
        assert 0 < int(lookahead_state.phase) < worker.SYNC_PERIOD - 1  # mid-cycle
        np.testing.assert_array_equal(current_kernel, stored_kernel)
    else:  # a sync just ran: its slow weights are the params, still to be stored
        assert int(lookahead_state.phase) == 0
        np.testing.assert_array_equal(current_kernel, state.params["dense"]["kernel"])
    # the slow and the fast weights differ (mid-cycle; or the stored ones, pending)
    assert not np.array_equal(stored_kernel, state.params["dense"]["kernel"])
    checkpoint_dir = save_with_orbax(state, tmp_path / "checkpoint")

    out = tmp_path / "resumed.npz"
    completed = run_worker(WORKER, checkpoint_dir, save_after, out, timeout=240)
    assert "restored and continued" in completed.stdout
    resumed = dict(np.load(out))
    assert_trees_bitwise_equal(resumed, uninterrupted)
    # the run stored slow weights after the restore (steps 11 and later), so they were used
    assert save_after <= 2 * worker.SYNC_PERIOD < worker.TOTAL_STEPS


def assert_outer_checkpoint_point(variant: str, state) -> None:
    """Where the variant's checkpoint lies in the run (see outer_checkpoint_worker.VARIANTS)."""
    lookahead_state = state.opt_state
    slow_now = lookax.slow_params(lookahead_state, state.params)
    phase = int(lookahead_state.phase)
    if variant == "slowmo":
        assert 0 < phase < outer_worker.SYNC_PERIOD - 1  # mid-cycle
    elif variant == "overlapped":
        assert phase == 0  # the sync call just ran; its outer step is the next call's
    else:
        assert phase == 3  # "b" synced at step 6 (phase 2), "w" syncs at the next call
    # the fast weights have left the slow ones (with sync_delay=1 too: the sync call only
    # trained, the slow weights are still those of the last completed outer step)
    for name in ("w", "b"):
        np.testing.assert_array_equal(slow_now[name], lookahead_state.lagging_slow[name])
        assert not np.array_equal(lookahead_state.lagging_slow[name], state.params[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(outer_worker.VARIANTS))
def test_orbax_restore_of_an_outer_optimizer_state_is_bitwise_identical(
    tmp_path, run_worker, variant
):
    """SlowMo (k = 4) saved with outer steps behind it: see outer_checkpoint_worker.VARIANTS."""
    _, save_after = outer_worker.VARIANTS[variant]
    init_state, step = outer_worker.make_training(variant)
    uninterrupted_state = run(step, init_state(), outer_worker.TOTAL_STEPS)
    uninterrupted = worker.leaves_by_path(uninterrupted_state)
    assert any(".outer_state" in key for key in uninterrupted)

    state = run(step, init_state(), save_after)
    assert isinstance(state.opt_state, lookax.LookaheadState)
    assert int(state.opt_state.count) == save_after > outer_worker.SYNC_PERIOD
    assert_outer_checkpoint_point(variant, state)
    momenta = [jax.tree.map(np.asarray, m) for m in outer_worker.outer_momenta(state)]
    assert len(momenta) == (2 if variant == "streaming" else 1)
    for momentum in momenta:  # an outer step of every fragment is behind the checkpoint
        assert all(np.all(leaf != 0) for leaf in jax.tree.leaves(momentum))
    # the outer steps after the restore change every fragment's momentum: the restored one
    # is used
    final = outer_worker.outer_momenta(uninterrupted_state)
    for before, after in zip(momenta, final, strict=True):
        for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
            assert not np.array_equal(a, b)

    checkpoint_dir = save_with_orbax(state, tmp_path / "checkpoint")

    out = tmp_path / "resumed.npz"
    completed = run_worker(OUTER_WORKER, checkpoint_dir, save_after, out, variant, timeout=240)
    assert "restored and continued" in completed.stdout
    assert_trees_bitwise_equal(dict(np.load(out)), uninterrupted)


@pytest.mark.parametrize("on_sync", ["keep", "interpolate"])
def test_flax_serialization_round_trip_is_bitwise_identical(on_sync):
    params = {
        "w": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        "b": np.ones(3, np.float32),
    }
    tx = lookax.lookahead(optax.adam(0.05), 4, 0.5, inner_state_on_sync=on_sync)

    def fresh():
        return train_state.TrainState.create(apply_fn=None, params=params, tx=tx)

    @jax.jit
    def step(state):
        grads = jax.tree.map(lambda p: p**3 - 0.5, state.params)
        return state.apply_gradients(grads=grads)

    uninterrupted = worker.leaves_by_path(run(step, fresh(), 11))

    state = run(step, fresh(), 6)  # phase 2 of the second cycle
    assert int(state.opt_state.phase) == 2
    restored_bytes = serialization.from_bytes(fresh(), serialization.to_bytes(state))
    restored_dict = serialization.from_state_dict(fresh(), serialization.to_state_dict(state))
    for restored in (restored_bytes, restored_dict):
        assert jax.tree.structure(restored) == jax.tree.structure(state)
        assert isinstance(restored.opt_state, lookax.LookaheadState)
        assert_trees_bitwise_equal(worker.leaves_by_path(restored), worker.leaves_by_path(state))
        resumed = worker.leaves_by_path(run(step, restored, 5))
        assert_trees_bitwise_equal(resumed, uninterrupted)
