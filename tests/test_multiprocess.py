"""lookax over JAX's multi-process runtime: two processes on this machine.

Two worker processes (tests/_integration_workers/multiprocess_worker.py) join over loopback
(`jax.distributed.initialize(coordinator_address="127.0.0.1:<free port>", ...)`, CPU collectives
via gloo), each with 2 host devices. The result must equal the same problem run here, in one
process on one device, within rtol 1e-6, the tolerance for differently compiled runs.

- lookahead(adam) with the params sharded across all 4 devices, through two syncs.
- DiLoCo with 4 replicas (2 per process) under ``jax.shard_map`` over a ("replica",) mesh,
  through two syncs, against the 4 replicas simulated here with ``jax.vmap(axis_name=...)``;
  the slow weights are bitwise equal on the 4 replicas after every step and move exactly at the
  outer steps (after the syncs at steps 3 and 6), the params on them right after each.
- The same with ``sync_delay=1`` (``[replicas-overlapped-1]``): the outer steps at calls 4
  and 7, each overlapped with that call's inner step.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

WORKER = Path(__file__).parent / "_integration_workers" / "multiprocess_worker.py"
NUM_PROCESSES = 2
TIMEOUT_S = 120


def load_worker():
    spec = importlib.util.spec_from_file_location("lookax_multiprocess_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_workers(out_dir: Path, *worker_args: str) -> list[str]:
    """Starts both processes, waits (bounded), and kills whatever is left on any failure.

    ``worker_args`` follow the worker's four positional arguments (e.g. the mode).
    """
    coordinator = f"127.0.0.1:{free_loopback_port()}"
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env.pop("JAX_ENABLE_X64", None)
    children: list[subprocess.Popen] = []
    logs: list[str] = []
    try:
        for process_id in range(NUM_PROCESSES):
            log = open(out_dir / f"worker{process_id}.log", "w+")  # noqa: SIM115
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(WORKER),
                        str(process_id),
                        str(NUM_PROCESSES),
                        coordinator,
                        str(out_dir),
                        *worker_args,
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + TIMEOUT_S
        for child in children:
            child.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        for process_id in range(len(children)):
            logs.append((out_dir / f"worker{process_id}.log").read_text())
    for process_id, (child, log) in enumerate(zip(children, logs, strict=True)):
        assert child.returncode == 0, f"worker {process_id} exited {child.returncode}:\n{log}"
    return logs


def single_process_reference(worker) -> dict[str, np.ndarray]:
    host_params, host_data = worker.make_problem()
    tx, step = worker.make_step()
    params = jax.tree.map(jnp.asarray, host_params)
    data = jax.tree.map(jnp.asarray, host_data)
    opt_state = tx.init(params)
    for _ in range(worker.NUM_STEPS):
        params, opt_state = step(params, opt_state, data)
    return worker.result_arrays(params, opt_state)


@pytest.mark.slow
def test_two_processes_over_loopback_match_one_process(tmp_path):
    worker = load_worker()
    logs = run_workers(tmp_path)
    assert all("done" in log for log in logs), logs

    sharded = dict(np.load(tmp_path / "result.npz"))
    # After both syncs, the next call stored the params the sync produced, bit for bit.
    assert int(sharded.pop("deferred_writes_checked")) == 2
    reference = single_process_reference(worker)
    assert sorted(sharded) == sorted(reference)

    # Two syncs happened (after steps 3 and 6) and the run is 2 steps into the next cycle.
    assert int(sharded["count"]) == worker.NUM_STEPS
    assert int(sharded["phase"]) == worker.NUM_STEPS % worker.SYNC_PERIOD
    assert int(sharded["count"]) == int(reference["count"])
    assert int(sharded["phase"]) == int(reference["phase"])
    for name, value in reference.items():
        assert sharded[name].dtype == value.dtype, name
        assert sharded[name].shape == value.shape, name
        np.testing.assert_allclose(sharded[name], value, rtol=1e-6, atol=1e-7, err_msg=name)

    # The run really moved: the slow weights left their initial values and differ from the
    # fast weights mid-cycle.
    initial, _ = worker.make_problem()
    assert not np.allclose(sharded["slow_w"], initial["w"])
    assert not np.allclose(sharded["slow_w"], sharded["params_w"])


def vmap_replicas_reference(worker, sync_delay: int) -> dict[str, np.ndarray]:
    """The 4 replicas of a ``replicas`` mode in this process, on one device, under vmap."""
    _, params, targets = worker.make_replica_problem()
    _, local_step, state, layout = worker.make_replica_step(sync_delay)
    axes = worker.vmap_axes(layout)
    step = jax.jit(
        jax.vmap(local_step, in_axes=(0, axes, 0), out_axes=(0, axes), axis_name="replica")
    )
    path_params, path_slow = [], []
    for target in targets:
        params, state = step(params, state, target)
        path_params.append(jax.tree.map(np.asarray, params))
        path_slow.append(jax.tree.map(np.asarray, state.lagging_slow))
    arrays = worker.replica_leaves(state)
    for name in params:
        arrays[f"path_params_{name}"] = np.stack([p[name] for p in path_params])
        arrays[f"path_slow_{name}"] = np.stack([s[name] for s in path_slow])
    return arrays


def assert_replica_paths(worker, sharded: dict, sync_delay: int) -> None:
    """The slow weights: bitwise equal on the 4 replicas, moved exactly at the outer steps.

    The outer steps come ``sync_delay`` calls after the syncs (3 and 6). Right after an
    exact one (``sync_delay=0``) every replica's params are on the slow weights; otherwise
    the replicas differ (trained apart; after an overlapped outer step each replica's params
    are the new slow weights plus its own inner update).
    """
    initial, _, _ = worker.make_replica_problem()
    for name in ("w", "b"):
        slow, fast = sharded[f"path_slow_{name}"], sharded[f"path_params_{name}"]
        assert slow.shape[:2] == (worker.REPLICA_STEPS, worker.NUM_REPLICAS), slow.shape
        for r in range(1, worker.NUM_REPLICAS):
            np.testing.assert_array_equal(slow[:, r], slow[:, 0], err_msg=f"{name} replica {r}")
        before = np.broadcast_to(initial[name], slow.shape[1:])
        outer_steps = []
        for t in range(worker.REPLICA_STEPS):
            call = t + 1
            due = call > sync_delay and (call - sync_delay) % worker.SYNC_PERIOD == 0
            assert np.array_equal(slow[t], before) != due, (name, call)
            outer_steps += [call] * due
            if due and sync_delay == 0:
                np.testing.assert_allclose(fast[t], slow[t], rtol=1e-6, atol=1e-7)
            else:
                assert not np.allclose(fast[t, 1], fast[t, 0]), (name, call)
            before = slow[t]
        assert outer_steps == [3 + sync_delay, 6 + sync_delay], outer_steps


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "sync_delay"), [("replicas", 0), ("replicas-overlapped", 1)])
def test_replicas_across_two_processes_match_vmap_in_one_process(tmp_path, mode, sync_delay):
    worker = load_worker()
    logs = run_workers(tmp_path, mode)
    assert all("done" in log for log in logs), logs

    sharded = dict(np.load(tmp_path / "result.npz"))
    reference = vmap_replicas_reference(worker, sync_delay)
    assert sorted(sharded) == sorted(reference)
    # DiLoCo's outer momentum and the per-replica fault counters are compared
    assert "state.outer_state.per_fragment[0][1].trace['w']" in sharded
    assert sharded["state.outer_state.dropped"].shape == (worker.NUM_REPLICAS,)
    assert int(sharded["state.count"]) == worker.REPLICA_STEPS
    assert int(sharded["state.phase"]) == worker.REPLICA_STEPS % worker.SYNC_PERIOD
    for name, value in reference.items():
        assert sharded[name].dtype == value.dtype, name
        assert sharded[name].shape == value.shape, name
        np.testing.assert_allclose(sharded[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    assert_replica_paths(worker, sharded, sync_delay)
