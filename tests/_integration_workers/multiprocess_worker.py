"""One of two processes training with lookax.lookahead(optax.adam) over JAX's multi-process runtime.

Run by tests/test_multiprocess.py as

    python multiprocess_worker.py PROCESS_ID NUM_PROCESSES COORDINATOR_ADDRESS OUT_DIR

with JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=2 in the
environment. Each process holds 2 CPU devices; the params are sharded over a 2x2 mesh of all 4,
so the matmul in the loss and the gradient need collectives between the processes (gloo over
loopback). Process 0 gathers the final params and Lookahead state and writes them to
OUT_DIR/result.npz.

The problem itself (``make_problem``, ``make_step``) is imported by the test too, which runs it
in one process on one device as the reference.
"""

from __future__ import annotations

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
        out[f"slow_{name}"] = np.asarray(opt_state.slow[name])
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
            stored = multihost_utils.process_allgather(opt_state.slow, tiled=True)
            for name, value in at_sync.items():
                np.testing.assert_array_equal(stored[name], value, err_msg=f"step {t} {name}")
            checked += 1
        # The step donates the params: keep the values at a sync on the host.
        at_sync = None if t % SYNC_PERIOD else multihost_utils.process_allgather(params, True)
    return params, opt_state, checked


def main() -> None:
    process_id, num_processes = int(sys.argv[1]), int(sys.argv[2])
    coordinator_address, out_dir = sys.argv[3], sys.argv[4]

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
        from jax.sharding import AxisType, NamedSharding
        from jax.sharding import PartitionSpec as P

        assert jax.process_count() == num_processes, jax.process_count()
        assert jax.local_device_count() == 2, jax.local_devices()
        assert jax.device_count() == 2 * num_processes, jax.devices()

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
        for name, leaf in opt_state.slow.items():
            assert leaf.sharding.is_equivalent_to(params[name].sharding, leaf.ndim), name
        checked = run_checking_the_deferred_write(step, params, opt_state, data)
        params, opt_state, deferred_writes_checked = checked
        for name, leaf in opt_state.slow.items():
            assert leaf.sharding.is_equivalent_to(params[name].sharding, leaf.ndim), name

        gathered = multihost_utils.process_allgather((params, opt_state), tiled=True)
        arrays = result_arrays(*gathered)
        arrays["deferred_writes_checked"] = np.int64(deferred_writes_checked)
        if process_id == 0:
            np.savez(f"{out_dir}/result.npz", **arrays)
        multihost_utils.sync_global_devices("lookax multiprocess test done")
    finally:
        jax.distributed.shutdown()
    print(f"process {process_id}: done", flush=True)


if __name__ == "__main__":
    main()
