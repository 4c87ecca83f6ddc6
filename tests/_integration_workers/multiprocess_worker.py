"""One of two processes training with lookax over JAX's multi-process runtime.

Run by tests/test_multiprocess.py as

    python multiprocess_worker.py PROCESS_ID NUM_PROCESSES COORDINATOR_ADDRESS OUT_DIR [MODE]

with JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=2 in the
environment. Each process holds 2 CPU devices. Process 0 writes what the test compares to
OUT_DIR/result.npz. Two modes:

- ``lookahead`` (the default): lookax.lookahead(optax.adam) with the params sharded over a 2x2
  mesh of all 4 devices, so the matmul in the loss and the gradient need collectives between
  the processes (gloo over loopback); the final params and Lookahead state.
- ``replicas``: DiLoCo (``lookax.diloco(lookax.adamw(...), replica_axis="replica")``) under
  ``jax.shard_map`` over a ("replica",) mesh of the 4 devices: 4 replicas, 2 per process, each
  training on its own data; the pseudo-gradient's pmean at a sync is the only communication.
  The params and slow weights of every replica after every step, and the final state.
- ``replicas-overlapped``: the same with ``sync_delay=1`` (each outer step one call after its
  sync, overlapped with that call's inner step).

The problems themselves (``make_problem``/``make_step``, ``make_replica_problem``/
``make_replica_step``) are imported by the test too, which runs them in one process on one
device as the reference (the replicas under ``jax.vmap(axis_name="replica")``).
"""

from __future__ import annotations

import os
import sys

import numpy as np

SYNC_PERIOD = 3
NUM_STEPS = 8  # syncs after steps 3 and 6, and 2 steps into the third cycle
PARAM_SPECS = {"w": ("data", "model"), "b": ("model",)}


def make_problem() -> tuple[dict, dict]:
    """Host (NumPy) params and data: a linear least-squares fit."""
    rng = np.random.default_rng(42)
    params = {
        "w": rng.normal(size=(8, 12)).astype(np.float32),
        "b": rng.normal(size=(12,)).astype(np.float32),
    }
    data = {
        "x": rng.normal(size=(16, 8)).astype(np.float32),
        "y": rng.normal(size=(16, 12)).astype(np.float32),
    }
    return params, data


def make_step():
    """The optimizer and a jitted step, params and state donated."""
    import jax
    import jax.numpy as jnp
    import optax

    import lookax

    tx = lookax.lookahead(optax.adam(0.05), sync_period=SYNC_PERIOD, slow_step_size=0.5)

    def loss(params, data):
        prediction = data["x"] @ params["w"] + params["b"]
        return jnp.mean((prediction - data["y"]) ** 2)

    def step(params, opt_state, data):
        grads = jax.grad(loss)(params, data)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return tx, jax.jit(step, donate_argnums=(0, 1))


def result_arrays(params, opt_state) -> dict[str, np.ndarray]:
    """The arrays the test compares, as host NumPy arrays (global values)."""
    inner = opt_state.inner_state[0]
    out = {"count": np.asarray(opt_state.count), "phase": np.asarray(opt_state.phase)}
    for name in ("w", "b"):
        out[f"params_{name}"] = np.asarray(params[name])
        out[f"slow_{name}"] = np.asarray(opt_state.lagging_slow[name])
        out[f"mu_{name}"] = np.asarray(inner.mu[name])
        out[f"nu_{name}"] = np.asarray(inner.nu[name])
    return out


def run_checking_the_deferred_write(step, params, opt_state, data):
    """NUM_STEPS steps; the call after each sync must store the sync's params bitwise."""
    from jax.experimental import multihost_utils

    at_sync, checked = None, 0
    for t in range(1, NUM_STEPS + 1):
        params, opt_state = step(params, opt_state, data)
        if at_sync is not None:
            stored = multihost_utils.process_allgather(opt_state.lagging_slow, tiled=True)
            for name, value in at_sync.items():
                np.testing.assert_array_equal(stored[name], value, err_msg=f"step {t} {name}")
            checked += 1
        # The step donates the params: keep the values at a sync on the host.
        at_sync = None if t % SYNC_PERIOD else multihost_utils.process_allgather(params, True)
    return params, opt_state, checked


def run_lookahead(process_id: int, out_dir: str) -> None:
    """The ``lookahead`` mode: params sharded over a 2x2 mesh of both processes' devices."""
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    host_params, host_data = make_problem()

    def global_array(value: np.ndarray, spec: tuple) -> jax.Array:
        sharding = NamedSharding(mesh, P(*spec))
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    params = {name: global_array(host_params[name], PARAM_SPECS[name]) for name in host_params}
    data = {name: global_array(value, ()) for name, value in host_data.items()}
    # Every device holds a shard of the params: both processes own part of each leaf.
    for name, leaf in params.items():
        assert not leaf.is_fully_addressable, name
        assert len(leaf.addressable_shards) == 2, name

    tx, step = make_step()
    opt_state = tx.init(params)
    for name, leaf in opt_state.lagging_slow.items():
        assert leaf.sharding.is_equivalent_to(params[name].sharding, leaf.ndim), name
    checked = run_checking_the_deferred_write(step, params, opt_state, data)
    params, opt_state, deferred_writes_checked = checked
    for name, leaf in opt_state.lagging_slow.items():
        assert leaf.sharding.is_equivalent_to(params[name].sharding, leaf.ndim), name

    gathered = multihost_utils.process_allgather((params, opt_state), tiled=True)
    arrays = result_arrays(*gathered)
    arrays["deferred_writes_checked"] = np.int64(deferred_writes_checked)
    if process_id == 0:
        np.savez(f"{out_dir}/result.npz", **arrays)


# --- The ``replicas`` mode: DiLoCo with 4 replicas, 2 per process. -------------------------

NUM_REPLICAS = 4
REPLICA_STEPS = 7  # syncs after steps 3 and 6, then one step into the third cycle


def make_replica_problem() -> tuple[dict, dict, list[dict]]:
    """One replica's params, the 4 replicas' (identical) stacked params, per-step targets.

    Replica r's target at every step is drawn around r: the replicas' data differ.
    """
    rng = np.random.default_rng(5)
    one = {
        "w": rng.normal(size=(8, 6)).astype(np.float32),
        "b": rng.normal(size=(6,)).astype(np.float32),
    }
    stacked = {k: np.broadcast_to(v, (NUM_REPLICAS, *v.shape)).copy() for k, v in one.items()}
    shift = np.arange(NUM_REPLICAS, dtype=np.float32)
    targets = []
    for _ in range(REPLICA_STEPS):
        targets.append(
            {
                k: (rng.normal(size=v.shape) + shift.reshape(-1, *[1] * (v.ndim - 1))).astype(
                    np.float32
                )
                for k, v in stacked.items()
            }
        )
    return one, stacked, targets


def make_replica_step(sync_delay: int = 0):
    """(tx, one replica's step, host state of the 4 replicas, its layout).

    Every state leaf gets a leading replica axis ("replica" in the layout), except
    Lookahead's counters, "shared" by the replicas.
    """
    import jax
    import optax

    import lookax

    tx = lookax.diloco(
        lookax.adamw(0.05, weight_decay=0.1),
        sync_period=SYNC_PERIOD,
        replica_axis="replica",
        sync_delay=sync_delay,
    )

    def local_step(params, state, target):
        # Each replica's own gradient, never averaged over "replica".
        grads = jax.tree.map(lambda p, t: (p - t) + 0.1 * p**3, params, target)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    one, _, _ = make_replica_problem()
    one_state = jax.tree.map(np.asarray, tx.init(jax.tree.map(jax.numpy.asarray, one)))
    # the workers' directory: on sys.path as a script, not when the tests import this module
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _replica_state import stack_over_replicas

    host_state, stacked = stack_over_replicas(one_state, NUM_REPLICAS)
    layout = jax.tree.map(lambda s: "replica" if s else "shared", stacked)
    assert layout.count == layout.phase == "shared"
    assert layout.lagging_slow == {"b": "replica", "w": "replica"}
    return tx, local_step, host_state, layout


def vmap_axes(layout):
    """The state's ``in_axes``/``out_axes`` under vmap: 0 for per-replica leaves, else None."""
    import jax

    return jax.tree.map(lambda kind: 0 if kind == "replica" else None, layout)


def replica_leaves(state) -> dict[str, np.ndarray]:
    """Every leaf of a (gathered) replica state as a host array, keyed by its path."""
    import jax

    return {
        f"state{jax.tree_util.keystr(path)}": np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    }


def run_replicas(process_id: int, out_dir: str, sync_delay: int = 0) -> None:
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((NUM_REPLICAS,), ("replica",))
    _, host_params, targets = make_replica_problem()
    _, local_step, host_state, layout = make_replica_step(sync_delay)
    specs = jax.tree.map(lambda kind: P("replica") if kind == "replica" else P(), layout)
    axes = vmap_axes(layout)
    params_specs = dict.fromkeys(host_params, P("replica"))

    def global_array(value: np.ndarray, spec: P) -> jax.Array:
        value = np.asarray(value)
        sharding = NamedSharding(mesh, spec)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    def put(tree, tree_specs):
        return jax.tree.map(global_array, tree, tree_specs)

    params = put(host_params, params_specs)
    state = put(host_state, specs)
    # Two replicas per process: each process owns half of every replicated-per-replica leaf.
    for name, leaf in params.items():
        assert not leaf.is_fully_addressable, name
        assert len(leaf.addressable_shards) == 2, name

    step = jax.jit(
        jax.shard_map(
            # each device's replica: a leading axis of 1 on its blocks
            jax.vmap(local_step, in_axes=(0, axes, 0), out_axes=(0, axes)),
            mesh=mesh,
            in_specs=(params_specs, specs, params_specs),
            out_specs=(params_specs, specs),
        )
    )
    path_params, path_slow = [], []
    for t in range(REPLICA_STEPS):
        params, state = step(params, state, put(targets[t], params_specs))
        gathered = multihost_utils.process_allgather((params, state.lagging_slow), tiled=True)
        path_params.append(gathered[0])
        path_slow.append(gathered[1])
    arrays = replica_leaves(multihost_utils.process_allgather(state, tiled=True))
    for name in host_params:
        arrays[f"path_params_{name}"] = np.stack([p[name] for p in path_params])
        arrays[f"path_slow_{name}"] = np.stack([s[name] for s in path_slow])
    if process_id == 0:
        np.savez(f"{out_dir}/result.npz", **arrays)


MODES = {
    "lookahead": run_lookahead,
    "replicas": run_replicas,
    "replicas-overlapped": lambda process_id, out_dir: run_replicas(process_id, out_dir, 1),
}


def main() -> None:
    process_id, num_processes = int(sys.argv[1]), int(sys.argv[2])
    coordinator_address, out_dir = sys.argv[3], sys.argv[4]
    mode = MODES[sys.argv[5] if len(sys.argv) > 5 else "lookahead"]

    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=60,
    )
    try:
        from jax.experimental import multihost_utils

        assert jax.process_count() == num_processes, jax.process_count()
        assert jax.local_device_count() == 2, jax.local_devices()
        assert jax.device_count() == 2 * num_processes, jax.devices()
        mode(process_id, out_dir)
        multihost_utils.sync_global_devices("lookax multiprocess test done")
    finally:
        jax.distributed.shutdown()
    print(f"process {process_id}: done", flush=True)
    # Both processes are done and synced; the interpreter's own teardown (gloo's threads)
    # has been seen to hang past the test's deadline on a loaded machine, so leave now.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
