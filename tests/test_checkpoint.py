"""Checkpointing a lookax training state (issue 4 bullet 6).

- orbax: the whole TrainState (params, step, and an opt_state of chain(clip, lookahead(
  inject_hyperparams(adam)), 'interpolate') with a bf16 leaf) is saved mid k-cycle, restored in a
  fresh process into a jax.eval_shape target, and continued with the same jitted, donated step:
  every leaf is bitwise identical to the uninterrupted run.
- orbax, an outer optimizer: a SlowMo run (lookax.slowmo(optax.adam), k = 4) saved mid-cycle
  with a sync behind it (outer momentum non-zero), restored in a fresh process into a
  jax.eval_shape target and continued through the next sync: bitwise identical, outer state
  included.
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


def assert_bitwise_equal(actual: dict, expected: dict):
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("save_after", [worker.SAVE_AFTER, 2 * worker.SYNC_PERIOD])
def test_orbax_restore_in_a_fresh_process_is_bitwise_identical(tmp_path, run_worker, save_after):
    """Mid-cycle (step 7), and between a sync and the call that stores its slow weights (10)."""
    import orbax.checkpoint as ocp

    init_state, step = worker.make_training()
    uninterrupted = worker.leaves_by_path(run(step, init_state(), worker.TOTAL_STEPS))

    state = run(step, init_state(), save_after)
    lookahead_state = state.opt_state[1]
    assert int(lookahead_state.count) > worker.SYNC_PERIOD  # a sync is behind it
    stored_kernel = lookahead_state.slow["dense"]["kernel"]
    current_kernel = lookax.slow_params(state.opt_state, state.params)["dense"]["kernel"]
    if save_after % worker.SYNC_PERIOD:
        assert 0 < int(lookahead_state.phase) < worker.SYNC_PERIOD - 1  # mid-cycle
        np.testing.assert_array_equal(current_kernel, stored_kernel)
    else:  # a sync just ran: its slow weights are the params, still to be stored
        assert int(lookahead_state.phase) == 0
        np.testing.assert_array_equal(current_kernel, state.params["dense"]["kernel"])
    # the slow and the fast weights differ (mid-cycle; or the stored ones, pending)
    assert not np.array_equal(stored_kernel, state.params["dense"]["kernel"])
    checkpoint_dir = tmp_path / "checkpoint"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(checkpoint_dir, state)
    checkpointer.wait_until_finished()
    checkpointer.close()

    out = tmp_path / "resumed.npz"
    completed = run_worker(WORKER, checkpoint_dir, save_after, out, timeout=240)
    assert "restored and continued" in completed.stdout
    resumed = dict(np.load(out))
    assert_bitwise_equal(resumed, uninterrupted)
    # the run stored slow weights after the restore (steps 11 and later), so they were used
    assert save_after <= 2 * worker.SYNC_PERIOD < worker.TOTAL_STEPS


@pytest.mark.slow
def test_orbax_restore_of_an_outer_optimizer_state_is_bitwise_identical(tmp_path, run_worker):
    """SlowMo saved at step 6 (k = 4): mid-cycle, the outer momentum of the step-4 sync in it."""
    import orbax.checkpoint as ocp

    init_state, step = outer_worker.make_training()
    uninterrupted_state = run(step, init_state(), outer_worker.TOTAL_STEPS)
    uninterrupted = worker.leaves_by_path(uninterrupted_state)
    assert any(".outer_state" in key for key in uninterrupted)

    state = run(step, init_state(), outer_worker.SAVE_AFTER)
    lookahead_state = state.opt_state
    assert isinstance(lookahead_state, lookax.LookaheadState)
    assert int(lookahead_state.count) == outer_worker.SAVE_AFTER > outer_worker.SYNC_PERIOD
    assert 0 < int(lookahead_state.phase) < outer_worker.SYNC_PERIOD - 1  # mid-cycle
    momentum = jax.tree.map(np.asarray, outer_worker.outer_momentum(state))
    assert all(np.all(leaf != 0) for leaf in jax.tree.leaves(momentum))  # a sync is behind
    # mid-cycle: the fast weights have left the slow ones
    assert not np.array_equal(lookahead_state.slow["w"], state.params["w"])
    # the sync after the restore (step 8) changes the momentum: the restored one is used
    final_momentum = outer_worker.outer_momentum(uninterrupted_state)
    assert not np.array_equal(final_momentum["w"], momentum["w"])

    checkpoint_dir = tmp_path / "checkpoint"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(checkpoint_dir, state)
    checkpointer.wait_until_finished()
    checkpointer.close()

    out = tmp_path / "resumed.npz"
    completed = run_worker(OUTER_WORKER, checkpoint_dir, outer_worker.SAVE_AFTER, out, timeout=240)
    assert "restored and continued" in completed.stdout
    assert_bitwise_equal(dict(np.load(out)), uninterrupted)


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
        assert_bitwise_equal(worker.leaves_by_path(restored), worker.leaves_by_path(state))
        resumed = worker.leaves_by_path(run(step, restored, 5))
        assert_bitwise_equal(resumed, uninterrupted)
