"""lookax against PyTorch: golden trajectories from torch.optim, lion-pytorch and Ranger 2020.9.4.

The fixtures (tests/fixtures/torch_trajectories_{float32,float64}.npz) are written by
tests/torch_reference/generate_fixtures.py (read its docstring for the problem and the data
checks); this file never imports torch. Each setting names a lookax optimizer and its kwargs;
the test runs it for 200 steps on the stored problem (gradient ``c * (p - target) + n_t * d``
per leaf, computed from the stored arrays) in one jitted ``lax.scan`` and compares, per leaf and
at every stored step, ``max|lookax - torch| / max|torch|``:

- float32, in this process: below ``FLOAT32_TOLERANCE`` (1e-5, as docs/porting.md states);
- float64, in one subprocess with ``jax_enable_x64`` (never enabled in the pytest process):
  below ``FLOAT64_TOLERANCE``;
- complex64 and complex128 (tests/fixtures/torch_trajectories_{complex64,complex128}.npz: a
  subset of the settings on a tree of complex leaves and one real leaf), with the same
  tolerances: PyTorch treats a complex number as two real parameters (``torch.view_as_real``),
  and the error is ``max|lookax - torch| / max|torch|`` with complex magnitudes. The gradient
  stream is torch's ``.grad``, the conjugate of ``jax.grad``'s output, which is what JAX users
  pass to optax (the generator checks the convention).

Run as a script to print the worst error per setting and per optimizer for both dtypes::

    python tests/test_torch_parity.py            # report table
    python tests/test_torch_parity.py --json     # the same, as JSON
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lookax

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"
FLOAT32_TOLERANCE = 1e-5
FLOAT64_TOLERANCE = 1e-13  # measured worst 3e-15 (nadam); rounding-level, with margin
TOLERANCES = {
    "float32": FLOAT32_TOLERANCE,
    "float64": FLOAT64_TOLERANCE,
    "complex64": FLOAT32_TOLERANCE,
    "complex128": FLOAT64_TOLERANCE,
}
X64_FIXTURES = ("float64", "complex128")
# optax evaluates the schedules in float32 here (0.99**200 alone is 2e-6 off); a wrong mapping
# (off-by-one step, wrong factor) is off by 1e-3 or more.
SCHEDULE_TOLERANCE = 1e-5

# Torch layout puts the output axis first; Flax puts it last.
TO_FLAX = {"kernel": (2, 3, 1, 0), "matrix": (1, 0)}  # (out, in, kh, kw) -> (kh, kw, in, out)


def load_fixture(dtype_name):
    with np.load(FIXTURE_DIR / f"torch_trajectories_{dtype_name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    manifest = json.loads(str(arrays.pop("manifest")))
    return manifest, arrays


def to_schedule(desc):
    """The optax schedule a fixture describes.

    Under ``jax_enable_x64`` it is evaluated at a float64 count: optax schedules compute in
    float32 when given the int32 step counts that optimizer states hold, even in x64 mode
    (``optax.exponential_decay(0.03, ...)(jnp.int32(5)).dtype == float32``), which alone would
    put float64 runs 1e-8 off torch's float64 schedulers.
    """
    schedule = getattr(optax, desc["schedule"])(**desc["kwargs"])
    if not jax.config.jax_enable_x64:
        return schedule
    return lambda count: schedule(jnp.asarray(count, jnp.float64))


def lookax_kwargs(spec):
    """The setting's lookax kwargs, with schedule descriptions turned into optax schedules."""
    return {
        k: to_schedule(v) if isinstance(v, dict) else v for k, v in spec["lookax_kwargs"].items()
    }


def problem_tree(manifest, arrays, field, layout):
    """One field (p0, c, target, d) of the problem as a params-shaped dict, in ``layout``."""
    tree = {}
    for leaf in manifest["leaves"]:
        x = arrays[f"problem/{leaf}/{field}"]
        if layout == "flax" and leaf in TO_FLAX:
            x = np.transpose(x, TO_FLAX[leaf])
        tree[leaf] = x
    return tree


def reference_to_layout(x, leaf, layout):
    """A stored (steps, *torch_shape) trajectory rearranged to ``layout``."""
    if layout == "flax" and leaf in TO_FLAX:
        return np.transpose(x, (0, *(a + 1 for a in TO_FLAX[leaf])))
    return x


def make_trajectories_fn(txs):
    """One jitted function running every optimizer in ``txs`` side by side over the noise stream.

    Batching the settings of one optimizer into a single ``lax.scan`` costs one compilation
    instead of one per setting. ``inputs`` holds one (p0, c, target, d) tuple per optimizer;
    returns one params-per-step trajectory per optimizer.
    """

    def run(inputs, noise):
        def step(carry, n_t):
            new_carry = []
            for tx, (params, state), (_, c, target, d) in zip(txs, carry, inputs, strict=True):
                grads = jax.tree.map(lambda p, c, t, d: c * (p - t) + n_t * d, params, c, target, d)
                updates, state = tx.update(grads, state, params)
                new_carry.append((optax.apply_updates(params, updates), state))
            return new_carry, [params for params, _ in new_carry]

        init = [(p0, tx.init(p0)) for tx, (p0, *_) in zip(txs, inputs, strict=True)]
        _, trajectories = jax.lax.scan(step, init, noise)
        return trajectories

    return jax.jit(run)


def worst_relative_error(spec, trajectory, manifest, arrays):
    """Worst per-leaf ``max|lookax - torch| / max|torch|`` over the stored steps.

    Returns {"error", "leaf", "step"} of the worst case.
    """
    layout = spec["lookax_layout"]
    steps = arrays["steps"]
    worst = {"error": 0.0, "leaf": None, "step": None}
    for leaf in manifest["leaves"]:
        got = np.asarray(trajectory[leaf])[steps - 1]
        ref = reference_to_layout(arrays[f"traj/{spec['name']}/{leaf}"], leaf, layout)
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise AssertionError(f"leaf {leaf}: got {got.dtype}{got.shape}, want {ref.dtype}")
        for i, step in enumerate(steps):
            scale = np.max(np.abs(ref[i]))
            wide = got[i].astype(np.promote_types(got.dtype, np.float64))  # complex: complex128
            err = float(np.max(np.abs(wide - ref[i])) / scale)
            if not err <= worst["error"]:  # NaN counts as worst
                worst = {"error": err, "leaf": leaf, "step": int(step)}
    return worst


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


def setting_errors(specs, manifest, arrays):
    """{setting: {"optimizer", "error", "leaf", "step"} or {"optimizer", "exception"}}.

    Runs ``specs`` in one compiled scan; a setting that fails to build or run is reported
    (the others still run) rather than raised.
    """
    results = {s["name"]: {"optimizer": s["optimizer"]} for s in specs}
    runnable = []
    for spec in specs:
        try:
            tx = getattr(lookax, spec["optimizer"])(**lookax_kwargs(spec))
            fields = ("p0", "c", "target", "d")
            inputs = tuple(problem_tree(manifest, arrays, f, spec["lookax_layout"]) for f in fields)
            runnable.append((spec, tx, inputs))
        except Exception as e:
            results[spec["name"]]["exception"] = _describe(e)
    noise = arrays["problem/noise"]

    def run(group):
        txs = [tx for _, tx, _ in group]
        return make_trajectories_fn(txs)([inputs for *_, inputs in group], noise)

    try:
        trajectories = run(runnable) if runnable else []
    except Exception:  # attribute the failure: run the settings one by one
        trajectories = []
        for item in runnable:
            try:
                trajectories.append(run([item])[0])
            except Exception as e:
                trajectories.append(e)
    for (spec, _, _), trajectory in zip(runnable, trajectories, strict=True):
        entry = results[spec["name"]]
        if isinstance(trajectory, Exception):
            entry["exception"] = _describe(trajectory)
            continue
        try:
            entry.update(worst_relative_error(spec, trajectory, manifest, arrays))
        except AssertionError as e:
            entry["exception"] = _describe(e)
    return results


def all_errors(dtype_name, *, one_compilation=False):
    """setting_errors for every setting of a fixture.

    One compilation per optimizer, or one for all settings (about 25% less compile time; a
    failure then reruns the settings one by one to say which).
    """
    manifest, arrays = load_fixture(dtype_name)
    if one_compilation:
        return setting_errors(manifest["settings"], manifest, arrays)
    results = {}
    for optimizer in dict.fromkeys(s["optimizer"] for s in manifest["settings"]):
        specs = [s for s in manifest["settings"] if s["optimizer"] == optimizer]
        results.update(setting_errors(specs, manifest, arrays))
    return results


def failures(results, tolerance):
    """Lines describing every setting that raised or exceeded ``tolerance``."""
    lines = []
    for name, r in results.items():
        if "exception" in r:
            lines.append(f"{name}: {r['exception']}")
        elif not r["error"] < tolerance:
            lines.append(f"{name}: {r['error']:.3e} at leaf {r['leaf']}, step {r['step']}")
    return lines


# --- the tests ---

FLOAT32_MANIFEST, FLOAT32_ARRAYS = load_fixture("float32")
FLOAT32_SETTINGS = {s["name"]: s for s in FLOAT32_MANIFEST["settings"]}
FLOAT32_OPTIMIZERS = [s["optimizer"] for s in FLOAT32_MANIFEST["settings"]]
COMPLEX64_MANIFEST, COMPLEX64_ARRAYS = load_fixture("complex64")


def test_fixtures_cover_every_optimizer():
    covered = {s["optimizer"] for s in FLOAT32_MANIFEST["settings"]}
    expected = {
        "sgd",
        "adagrad",
        "rmsprop",
        "adadelta",
        "adam",
        "adamw",
        "nadam",
        "radam",
        "lion",
        "ranger",
    }
    assert covered == expected
    float64_manifest, _ = load_fixture("float64")
    assert [s["name"] for s in float64_manifest["settings"]] == list(FLOAT32_SETTINGS)
    assert float64_manifest["num_steps"] == FLOAT32_MANIFEST["num_steps"] == 200
    assert {s["optimizer"] for s in COMPLEX64_MANIFEST["settings"]} == expected


def test_complex_fixtures_hold_a_mixed_tree():
    """Complex leaves in the complex dtype, the others in its real counterpart, both files."""
    complex128_manifest, complex128_arrays = load_fixture("complex128")
    names = [s["name"] for s in COMPLEX64_MANIFEST["settings"]]
    assert [s["name"] for s in complex128_manifest["settings"]] == names
    assert set(names) <= set(FLOAT32_SETTINGS)
    for manifest, arrays, dtype, real in (
        (COMPLEX64_MANIFEST, COMPLEX64_ARRAYS, np.complex64, np.float32),
        (complex128_manifest, complex128_arrays, np.complex128, np.float64),
    ):
        complex_leaves = manifest["complex_leaves"]
        assert 0 < len(complex_leaves) < len(manifest["leaves"])
        for leaf in manifest["leaves"]:
            want = dtype if leaf in complex_leaves else real
            for key in (f"problem/{leaf}/p0", f"problem/{leaf}/c", f"traj/{names[0]}/{leaf}"):
                assert arrays[key].dtype == want, (key, arrays[key].dtype)


def test_schedules_mirror_the_torch_schedulers():
    """The optax schedule a setting names gives the learning rates torch's scheduler used."""
    _, float64_arrays = load_fixture("float64")
    scheduled = [s for s in FLOAT32_MANIFEST["settings"] if s["torch_scheduler"] is not None]
    assert len({s["optimizer"] for s in scheduled}) >= 3
    counts = np.arange(FLOAT32_MANIFEST["num_steps"])
    for spec in scheduled:
        expected = FLOAT32_ARRAYS[f"lr/{spec['name']}"]
        np.testing.assert_array_equal(float64_arrays[f"lr/{spec['name']}"], expected)
        got = np.asarray(to_schedule(spec["lookax_kwargs"]["learning_rate"])(counts))
        err = np.max(np.abs(got - expected) / np.abs(expected))
        assert err < SCHEDULE_TOLERANCE, (spec["name"], err)


def test_complex64_trajectories_match_torch():
    """Every complex64 setting (one compilation), all reported at once."""
    results = setting_errors(COMPLEX64_MANIFEST["settings"], COMPLEX64_MANIFEST, COMPLEX64_ARRAYS)
    for name, r in results.items():
        print(f"{name}: {r.get('error', r.get('exception'))}")
    bad = failures(results, TOLERANCES["complex64"])
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("optimizer", list(dict.fromkeys(FLOAT32_OPTIMIZERS)))
def test_float32_trajectories_match_torch(optimizer):
    """Every float32 setting of one optimizer (one compilation), all reported at once."""
    specs = [s for s in FLOAT32_MANIFEST["settings"] if s["optimizer"] == optimizer]
    results = setting_errors(specs, FLOAT32_MANIFEST, FLOAT32_ARRAYS)
    for name, r in results.items():
        print(f"{name}: {r.get('error', r.get('exception'))}")
    bad = failures(results, FLOAT32_TOLERANCE)
    assert not bad, "\n".join(bad)


def run_x64_subprocess(dtype_name):
    """``all_errors(dtype_name)`` in a subprocess under ``jax_enable_x64``."""
    env = dict(os.environ, JAX_ENABLE_X64="1")
    out = subprocess.run(
        [sys.executable, __file__, "--x64-json", dtype_name],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_float64_trajectories_match_torch():
    """Every setting in float64 (one subprocess under jax_enable_x64), all reported at once."""
    results = run_x64_subprocess("float64")
    assert list(results) == list(FLOAT32_SETTINGS)
    for name, r in results.items():
        print(f"{name}: {r.get('error', r.get('exception'))}")
    bad = failures(results, FLOAT64_TOLERANCE)
    assert not bad, "\n".join(bad)


@pytest.mark.slow
def test_complex128_trajectories_match_torch():
    """Every complex128 setting (one subprocess under jax_enable_x64), all reported at once."""
    results = run_x64_subprocess("complex128")
    assert list(results) == [s["name"] for s in COMPLEX64_MANIFEST["settings"]]
    for name, r in results.items():
        print(f"{name}: {r.get('error', r.get('exception'))}")
    bad = failures(results, TOLERANCES["complex128"])
    assert not bad, "\n".join(bad)


# --- script mode: the float64 worker and the report ---


def _print_report(results_by_dtype):
    """One table per family (real, complex): worst error per setting and per optimizer."""
    for family in (("float32", "float64"), ("complex64", "complex128")):
        _print_table({d: results_by_dtype[d] for d in family})
        print()


def _print_table(results_by_dtype):
    names = list(next(iter(results_by_dtype.values())))
    dtypes = list(results_by_dtype)
    print(f"{'setting':42s}" + "".join(f" {d:>12s}" for d in dtypes))
    for name in names:
        row = f"{name:42s}"
        for d in dtypes:
            r = results_by_dtype[d][name]
            row += f" {'EXCEPTION':>12s}" if "exception" in r else f" {r['error']:12.3e}"
        print(row)
    print()
    print(f"{'worst per optimizer':42s}" + "".join(f" {d:>12s}" for d in dtypes))
    optimizers = dict.fromkeys(r["optimizer"] for r in results_by_dtype[dtypes[0]].values())
    for opt in optimizers:
        row = f"{opt:42s}"
        for d in dtypes:
            errs = [
                r.get("error", math.inf)
                for r in results_by_dtype[d].values()
                if r["optimizer"] == opt
            ]
            row += f" {max(errs):12.3e}"
        print(row)
    for d in dtypes:
        for name, r in results_by_dtype[d].items():
            if "exception" in r:
                print(f"[{d}] {name}: {r['exception']}")


if __name__ == "__main__":
    if "--x64-json" in sys.argv:
        jax.config.update("jax_enable_x64", True)
        dtype_name = sys.argv[sys.argv.index("--x64-json") + 1]
        print(json.dumps(all_errors(dtype_name, one_compilation=True)))
    else:
        by_dtype = {
            "float32": all_errors("float32"),
            "complex64": all_errors("complex64", one_compilation=True),
        }
        by_dtype.update({name: run_x64_subprocess(name) for name in X64_FIXTURES})
        if "--json" in sys.argv:
            print(json.dumps(by_dtype, indent=1))
        else:
            _print_report(by_dtype)
