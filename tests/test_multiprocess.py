"""lookax.lookahead over JAX's multi-process runtime: two processes on this machine.

Two worker processes (tests/_integration_workers/multiprocess_worker.py) join over loopback
(`jax.distributed.initialize(coordinator_address="127.0.0.1:<free port>", ...)`, CPU collectives
via gloo), each with 2 host devices; the params are sharded across all 4 devices and
lookahead(adam) runs through two syncs. The result must equal the same problem run here, in one
process on one device, within DESIGN.md's rtol 1e-6 for differently compiled runs.
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


def run_workers(out_dir: Path) -> list[str]:
    """Starts both processes, waits (bounded), and kills whatever is left on any failure."""
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
