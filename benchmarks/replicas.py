#!/usr/bin/env python
"""Replicas: DiLoCo against data parallelism on MNIST-1D, and the bytes each all-reduces.

DiLoCo (Douillard et al. 2023, "DiLoCo: Distributed Low-Communication Training of
Language Models") claims that M replicas which train apart for H inner steps and
then take one outer Nesterov step on their averaged pseudo-gradient reach the
quality of synchronous data parallelism while communicating a fraction (1/H) of
what it does. This script puts that claim to a small, fully reproducible test
with ``lookax.diloco``:

- data: MNIST-1D (Greydanus 2020), generated offline by ``mnist1d``'s
  ``make_dataset()`` (``lookax.mnist1d.load_mnist1d``) with 25,000 sequences
  instead of the default 5,000: 20,000 training sequences (the last 1,000 held
  out as a validation set, for the learning-rate choice) and 5,000 test
  sequences (the reported accuracy). With the default 4,000 training sequences
  every method cycles through its data many times, data parallelism overfits
  (training loss 0.002) and one replica alone, with a quarter of the data per
  step, came within a point of it (a 2-seed pilot, 1000 steps: 89.0% against
  89.8% test accuracy): little left to compare. DiLoCo's setting, language-model
  pretraining, hardly repeats data;
- model: the small 1-D CNN of ``lookax.mnist1d`` (``CNN1D``, 8,010 float32 parameters);
- 4 replicas as a leading axis of the params and optimizer state, run by
  ``jax.vmap(..., axis_name="replica")`` on one CPU (Lookahead's counters
  unbatched, as in tests/test_outer_and_replicas.py);
- every method sees the same global batches (B = 128 sequences, one minibatch
  order per seed) for the same number of steps (800), hence the same gradient
  evaluations, except "one replica alone":

  - **DiLoCo**: ``lookax.diloco(lookax.adamw(lr), H, replica_axis="replica")``
    (outer Nesterov SGD, learning rate 0.7, momentum 0.9), H in {5, 20, 50,
    200}; replica m trains on shard m (B/4 = 32 sequences) of every global batch,
    no gradient averaging;
  - **data parallel**: ``lookax.adamw(lr)`` on the 4 replicas with the gradients
    averaged every step (``lax.pmean`` over ``"replica"``), i.e. one model on the
    full batch;
  - **one replica alone**: replica 0 of the 4 without communication: AdamW on
    shard 0 (B/4) of every global batch for the same number of steps, i.e. a
    quarter of the gradient evaluations: what one worker reaches on its own;
  - **SlowMo** (``lookax.slowmo(lookax.adamw(lr), 12)``, outer SGD 1.0,
    momentum 0.5) and **Lookahead** (``lookax.lookahead(lookax.adamw(lr), 5,
    0.5)``) on one replica with the full batch: the outer step without replicas;

- the inner learning rate (AdamW, weight decay 1e-2) is chosen per row (per H for
  DiLoCo) from {1e-3, 3e-3, 1e-2, 3e-2} by the mean validation accuracy over
  seeds: around Adam's best on this model (1e-2 at batch 100 in
  train_quality.py), one step lower because DiLoCo's outer Nesterov step
  amplifies the replicas' progress (in steady state 0.7 / (1 - 0.9) = 7 times
  the pseudo-gradient), one step higher because Lookahead halves its step. The
  whole grid runs vmapped in the same compiled programs;
- 5 seeds; seed s gives every method the same initial weights and minibatch
  order, so differences are paired by seed; DiLoCo, SlowMo and Lookahead are
  evaluated on their slow weights (``lookax.slow_params``).

Beside the headline table, DiLoCo with one outer-path option changed, each at the
inner learning rate chosen for DiLoCo at its H (so the per-seed difference isolates
the option): ``sync_delay=1`` at every H; ``communication_dtype=bfloat16`` at H =
20; Streaming DiLoCo (``fragments=2`` and ``4``) at H = 20 and 200. And a fault
run at H = 20: replica 1's gradients NaN at steps 300-302, with
``drop_nonfinite=False``, with ``drop_nonfinite=True``, with it and the recovery
line (a replica whose ``lookax.replica_health(state).dropped`` went up is put back
on ``lookax.slow_params(state, params)``), and with ``optax.apply_if_finite(inner,
5)`` inside.

Bytes all-reduced per step are read from the compiled HLO, not computed from a
formula: each method's training step (one seed, one global batch) is compiled
under ``jax.shard_map`` on a 4-device CPU mesh (this script sets
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before importing jax),
every ``all-reduce`` instruction is found and its operand bytes (shape x dtype
size) summed; an all-reduce inside a conditional's branch (DiLoCo's sync) runs
once every H steps, so bytes per step = bytes outside any branch + bytes inside
branches / H. It is the payload each replica contributes to the all-reduce, not
the wire traffic of a particular all-reduce algorithm. The same count is made on
the lowered StableHLO (``stablehlo.all_reduce`` ops and their operand types),
which keeps the dtype the program asks for: XLA:CPU's compiler widens a bf16
all-reduce to f32. The peak bytes at one step are every step's all-reduces plus
the heaviest single conditional's: one sync (one fragment's, for Streaming DiLoCo).

Usage::

  python benchmarks/replicas.py           # 5 seeds, 800 steps: 6-10 minutes on 2 shared cores
  python benchmarks/replicas.py --quick   # 2 seeds, 40 steps, H in {2, 4}, one lr: 1-6 minutes
  python benchmarks/replicas.py --seeds 3 --steps 400 --out /tmp/replicas

``--quick`` also uses 2,000 sequences (1,600 training, 400 test), runs the option
and fault rows at H = 4 (faults at steps 15-17) and compiles
with ``--xla_backend_optimization_level=0``: it checks that everything runs, its
numbers mean little.

Outputs: ``benchmarks/results/replicas.md`` (the table, the reading, the command
and run time; also printed) and ``benchmarks/replicas.png`` (test accuracy against
bytes all-reduced per step). ``--quick`` adds ``_quick`` to both names;
``--out DIR`` writes both into DIR instead.
"""

from __future__ import annotations

import os
import sys

# The shared modules beside this file, also when a test or another benchmark loads it by path.
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _xla_flags import set_xla_flags  # noqa: E402

set_xla_flags(sys.argv[1:])  # before jax is imported: 4 host CPU devices for the shard_map

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _measure import (  # noqa: E402
    AllReduces,
    all_reduces,
    argument_parser,
    command_line,
    compile_and_run,
    lower_replica_step,
    mean_and_se,
    mean_pm_std,
    stablehlo_all_reduces,
)

import lookax  # noqa: E402
from lookax.mnist1d import (  # noqa: E402
    Dataset,
    host_batch_indices,
    init_params,
    load_mnist1d,
    loss_and_accuracy,
)

AXIS = "replica"
REPLICAS = 4
GLOBAL_BATCH = 128  # B; each of the 4 replicas gets B/4 = 32
VALIDATION_FRACTION = 20  # the last 1/20 of the training sequences: validation, not trained on
WEIGHT_DECAY = 1e-2  # lookax.adamw's default (PyTorch's)
SLOWMO_PERIOD = 12  # lookax.slowmo's default (fairscale's)
LOOKAHEAD_K, LOOKAHEAD_ALPHA = 5, 0.5  # the Lookahead paper's default

SEQUENCE_LENGTH = 40  # MNIST-1D's

# Method kinds: (label, replicas, per-replica batch, gradients averaged every step).
KINDS: dict[str, tuple[str, int, int, bool]] = {
    "diloco": ("DiLoCo", REPLICAS, GLOBAL_BATCH // REPLICAS, False),
    "data_parallel": ("data parallel", REPLICAS, GLOBAL_BATCH // REPLICAS, True),
    "alone": ("one replica alone", 1, GLOBAL_BATCH // REPLICAS, False),
    "slowmo": ("SlowMo", 1, GLOBAL_BATCH, False),
    "lookahead": ("Lookahead", 1, GLOBAL_BATCH, False),
}


@dataclass(frozen=True)
class Settings:
    steps: int
    seeds: int
    num_samples: int  # MNIST-1D sequences generated: 80% training, 20% test
    periods: tuple[int, ...]  # DiLoCo's H values
    learning_rates: tuple[float, ...]
    quick: bool
    option_period: int  # the H of the bf16 all-reduce and of the fault runs
    streaming_periods: tuple[int, ...]  # the H values of Streaming DiLoCo (divisible by F)

    @property
    def fault_steps(self) -> tuple[int, int]:
        """[start, stop): the steps at which replica 1's gradients are NaN (300-302 of 800)."""
        start = 3 * self.steps // 8
        return start, start + 3


@dataclass(frozen=True)
class Method:
    kind: str
    period: int | None  # H (sync period) where there is one
    # DiLoCo's outer-path options and the fault runs' settings, as (name, value) pairs:
    # sync_delay, communication_dtype (a dtype name), fragments, drop_nonfinite (lookax.diloco's
    # keywords); nan_fault (replica 1's gradients NaN at Settings.fault_steps), recover (its
    # params put back on the slow weights after a drop), apply_if_finite (wraps the inner step).
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        opts = dict(self.options)
        if "fragments" in opts:
            return f"Streaming DiLoCo F={opts['fragments']}"
        if "nan_fault" in opts:
            return "DiLoCo, NaN fault: " + fault_variant(opts)
        words = [KINDS[self.kind][0]]
        if "sync_delay" in opts:
            words.append(f"sync_delay={opts['sync_delay']}")
        if "communication_dtype" in opts:
            words.append(f"{opts['communication_dtype']} all-reduce")
        return ", ".join(words)

    @property
    def replicas(self) -> int:
        return KINDS[self.kind][1]

    @property
    def batch(self) -> int:
        return KINDS[self.kind][2]

    @property
    def average_grads(self) -> bool:
        return KINDS[self.kind][3]

    @property
    def on_slow_weights(self) -> bool:
        """Evaluated on its slow weights: the methods with an outer step."""
        return self.kind in ("diloco", "slowmo", "lookahead")


def methods(settings: Settings) -> list[Method]:
    return [
        *(Method("diloco", h) for h in settings.periods),
        Method("data_parallel", None),
        Method("alone", None),
        Method("slowmo", SLOWMO_PERIOD),
        Method("lookahead", LOOKAHEAD_K),
    ]


STREAMING_FRAGMENTS = (2, 4)
FAULT_VARIANTS: tuple[tuple[tuple[str, Any], ...], ...] = (
    (("drop_nonfinite", False),),
    (("drop_nonfinite", True),),
    (("drop_nonfinite", True), ("recover", True)),
    (("apply_if_finite", 5),),
)


def option_methods(settings: Settings) -> list[Method]:
    """DiLoCo with one outer-path option changed, each run at DiLoCo's chosen lr at that H."""
    out = [Method("diloco", h, (("sync_delay", 1),)) for h in settings.periods]
    out.append(Method("diloco", settings.option_period, (("communication_dtype", "bfloat16"),)))
    for fragments in STREAMING_FRAGMENTS:
        out += [
            Method("diloco", h, (("fragments", fragments),)) for h in settings.streaming_periods
        ]
    return out


def fault_methods(settings: Settings) -> list[Method]:
    """DiLoCo at ``option_period`` with replica 1's gradients NaN for three steps."""
    return [
        Method("diloco", settings.option_period, (("nan_fault", True), *variant))
        for variant in FAULT_VARIANTS
    ]


def fault_variant(opts: dict[str, Any]) -> str:
    if "apply_if_finite" in opts:
        return f"optax.apply_if_finite(inner, {opts['apply_if_finite']}) inside"
    words = f"drop_nonfinite={opts.get('drop_nonfinite', True)}"
    return words + (" + recovery onto the slow weights" if opts.get("recover") else "")


def make_tx(
    kind: str, learning_rate: Any, period: Any, options: tuple[tuple[str, Any], ...] = ()
) -> optax.GradientTransformation:
    opts = dict(options)
    inner = lookax.adamw(learning_rate, weight_decay=WEIGHT_DECAY)
    if "apply_if_finite" in opts:  # skips non-finite updates, up to that many in a row
        inner = optax.apply_if_finite(inner, opts["apply_if_finite"])
    if kind == "diloco":  # outer Nesterov SGD 0.7 / 0.9: the paper's (and lookax's) defaults
        keywords = {k: opts[k] for k in ("sync_delay", "fragments", "drop_nonfinite") if k in opts}
        if "communication_dtype" in opts:
            keywords["communication_dtype"] = jnp.dtype(opts["communication_dtype"])
        return lookax.diloco(inner, sync_period=period, replica_axis=AXIS, **keywords)
    if kind == "slowmo":  # outer SGD 1.0, momentum 0.5 (fairscale's defaults)
        return lookax.slowmo(inner, sync_period=period)
    if kind == "lookahead":
        return lookax.lookahead(inner, period, LOOKAHEAD_ALPHA)
    return inner  # data parallel, one replica alone


# ----------------------------------------------------------------------------
# The model and the minibatch order. lookax.mnist1d exports the CNN and the data; the
# helpers around them here are what a training loop of one's own needs.
# ----------------------------------------------------------------------------


def batch_indices(rng: np.random.Generator, num_train: int, steps: int) -> np.ndarray:
    """``[steps, GLOBAL_BATCH]`` training-sequence indices: a fresh permutation each epoch."""
    return host_batch_indices(rng, num_train, GLOBAL_BATCH, steps)


# ----------------------------------------------------------------------------
# The per-replica training step, shared by the training runs (jax.vmap over the
# replica axis) and the bytes measurement (jax.shard_map over a 4-device mesh).
# ----------------------------------------------------------------------------


def make_step(
    tx: optax.GradientTransformation,
    average_grads: bool,
    nan_fault: tuple[int, int] | None = None,
) -> Callable:
    """One replica's step on its own batch; ``lax.pmean`` of the gradients for data parallel.

    ``nan_fault``: ``[start, stop)``, the steps ``t`` at which replica 1's gradients are NaN.
    """

    def batch_loss(params, x, y):
        return loss_and_accuracy(params, x, y)[0]

    def step(params, opt_state, x, y, t=None):
        loss, grads = jax.value_and_grad(batch_loss)(params, x, y)
        if average_grads:
            grads = jax.lax.pmean(grads, AXIS)
        if nan_fault is not None and t is not None:
            start, stop = nan_fault
            bad = (jax.lax.axis_index(AXIS) == 1) & (t >= start) & (t < stop)
            grads = jax.tree.map(lambda g: jnp.where(bad, jnp.nan, g), grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def eval_params(method: Method, opt_state: Any, params: Any) -> Any:
    """Replica 0's evaluation weights: the slow weights where there are some."""
    if method.on_slow_weights:
        params = lookax.slow_params(opt_state, params)
    return jax.tree.map(lambda x: x[0], params)


def trained_on(data: Dataset) -> int:
    """How many training sequences are trained on; the rest (the last 1/20) validate."""
    return len(data.x_train) - len(data.x_train) // VALIDATION_FRACTION


class Seeds(NamedTuple):
    """What a seed fixes for every method: initial weights and the global batches."""

    params: Any  # the initial weights, each leaf [seeds, ...]
    indices: np.ndarray  # [seeds, steps, B] training-sequence indices of the global batches


def make_seeds(settings: Settings, num_train: int) -> Seeds:
    """Seed s: weights from ``jax.random.key(s)``, minibatch order from NumPy's generator s.

    Made once, outside the compiled training runs (random number generation inside them
    doubled their compile time), and shared by every method: runs are paired by seed.
    """
    keys = jnp.stack([jax.random.key(seed) for seed in range(settings.seeds)])
    params = jax.jit(jax.vmap(init_params))(keys)
    indices = np.stack(
        [
            batch_indices(np.random.default_rng(seed), num_train, settings.steps)
            for seed in range(settings.seeds)
        ]
    )
    return Seeds(params, indices)


def make_run(method: Method, data: Dataset, settings: Settings) -> Callable:
    """``run(hparams, params, indices) -> metrics``: one training run (vmap it, jit it).

    ``hparams``: ``{"lr": ..., "period": ...}`` (the period may be traced: DiLoCo's H
    values run vmapped in one compiled program); ``params``: the initial weights;
    ``indices``: ``[steps, B]``, the global batches. ``method.period`` is not used.
    """
    _, replicas, batch, average_grads = KINDS[method.kind]
    opts = dict(method.options)
    nan_fault = settings.fault_steps if opts.get("nan_fault") else None
    num_train = trained_on(data)
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_val, y_val = x_train[num_train:], y_train[num_train:]
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    def run(hparams: dict[str, jax.Array], params: Any, indices: jax.Array) -> dict[str, Any]:
        tx = make_tx(method.kind, hparams["lr"], hparams.get("period"), method.options)
        one_state = tx.init(params)
        axes = lookax.replica_axes(one_state)
        carry = (
            lookax.stack_replicas(params, replicas),
            lookax.stack_replicas(one_state, replicas),
        )
        # Replica m takes shard m of each global batch; one replica alone takes shard 0,
        # what replica 0 of the four sees.
        steps = indices.shape[0]
        indices = indices[:, : replicas * batch].reshape(steps, replicas, batch)
        step = jax.vmap(
            make_step(tx, average_grads, nan_fault),
            in_axes=(0, axes, 0, 0, None),
            out_axes=(0, axes, 0),
            axis_name=AXIS,
        )

        def body(carry, inputs):
            idx, t = inputs
            params, opt_state, loss = step(*carry, x_train[idx], y_train[idx], t)
            if opts.get("recover"):
                params = recover_dropped(params, carry[1], opt_state)
            return (params, opt_state), loss.mean()

        xs = (indices, jnp.arange(steps))
        (params, opt_state), losses = jax.lax.scan(body, carry, xs)
        final = eval_params(method, opt_state, params)
        _, val_acc = loss_and_accuracy(final, x_val, y_val)
        test_loss, test_acc = loss_and_accuracy(final, x_test, y_test)
        metrics = {
            "val_acc": val_acc,
            "test_acc": test_acc,
            "test_loss": test_loss,
            "last_batch_loss": losses[-max(1, steps // 10) :].mean(),
        }
        if method.kind == "diloco":  # per replica: the outer steps it was left out of
            metrics["dropped"] = lookax.replica_health(opt_state).dropped
        return metrics

    return run


def recover_dropped(params: Any, before: Any, after: Any) -> Any:
    """The recovery line: replicas whose drop counter went up restart from the slow weights."""
    bad = lookax.replica_health(after).dropped > lookax.replica_health(before).dropped
    slow = lookax.slow_params(after, params)
    return jax.tree.map(
        lambda p, s: jnp.where(bad.reshape((-1,) + (1,) * (p.ndim - 1)), s, p), params, slow
    )


Results = dict[tuple[int | None, float], dict[str, np.ndarray]]


def train_group(
    method: Method,
    rows: list[tuple[int | None, float]],
    settings: Settings,
    data: Dataset,
    seeds: Seeds,
) -> Results:
    """Every (period, learning rate) of ``rows`` and every seed, in one compiled program.

    ``method`` gives the kind and options (its period is not used). Returns, per
    ``(period, lr)``, metrics ``[seeds]``.
    """
    kind = method.kind
    hparams = {"lr": jnp.asarray([lr for _, lr in rows], jnp.float32)}
    if kind == "diloco":  # H traced and vmapped: one program for every H
        hparams["period"] = jnp.asarray([p for p, _ in rows], jnp.int32)
    run = make_run(method, data, settings)
    if kind != "diloco" and rows[0][0] is not None:
        period = rows[0][0]
        inner_run = run
        run = lambda h, p, i: inner_run({**h, "period": period}, p, i)  # noqa: E731
    batched = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0, 0)), in_axes=(0, None, None)))
    args = (hparams, seeds.params, jnp.asarray(seeds.indices))
    metrics, compile_s, run_s = compile_and_run(batched, *args)
    periods = len(dict.fromkeys(p for p, _ in rows))
    print(
        f"  {method.label:>17s}: {periods} H, {len(rows)} (H, lr) x {settings.seeds} seeds, "
        f"compile {compile_s:5.1f}s, run {run_s:6.1f}s "
        f"({1e3 * run_s / settings.steps:.1f} ms per step of all {len(rows) * settings.seeds} "
        "runs)",
        flush=True,
    )
    return {
        (p, float(lr)): {key: np.asarray(value[i]) for key, value in metrics.items()}
        for i, (p, lr) in enumerate(rows)
    }


# ----------------------------------------------------------------------------
# Bytes all-reduced per step, from the compiled HLO.
# ----------------------------------------------------------------------------


def step_hlo(method: Method, learning_rate: float) -> tuple[str, str]:
    """The lowered StableHLO and compiled HLO of one step of ``method`` under ``jax.shard_map``.

    One device per replica (4 for DiLoCo and data parallel, 1 otherwise).
    """
    tx = make_tx(method.kind, learning_rate, method.period, method.options)
    params = jax.eval_shape(init_params, jax.random.key(0))
    batch = (
        jax.ShapeDtypeStruct((method.batch, SEQUENCE_LENGTH), jnp.float32),
        jax.ShapeDtypeStruct((method.batch,), jnp.int32),
    )
    step = make_step(tx, method.average_grads)
    opt_state = jax.eval_shape(tx.init, params)
    lowered = lower_replica_step(step, params, opt_state, batch, method.replicas, AXIS)
    return lowered.as_text(), lowered.compile().as_text()


class StepBytes(NamedTuple):
    compiled: dict[Method, AllReduces]  # from the compiled HLO
    lowered: dict[Method, AllReduces]  # from the lowered StableHLO
    lines: list[str]


def measure_bytes(settings: Settings) -> StepBytes:
    """The all-reduces of every method's step, lowered and compiled, and a line about each.

    DiLoCo's programs differ across H only in a constant: one compile per option set.
    """
    start = time.perf_counter()
    compiled: dict[Method, AllReduces] = {}
    lowered: dict[Method, AllReduces] = {}
    cache: dict[Any, tuple[AllReduces, AllReduces]] = {}
    lines = []
    for method in methods(settings) + option_methods(settings):
        key = (method.kind, method.options) if method.kind == "diloco" else method
        if key not in cache:
            mlir, hlo = step_hlo(method, settings.learning_rates[0])
            cache[key] = (all_reduces(hlo), stablehlo_all_reduces(mlir))
        found, low = cache[key]
        compiled[method], lowered[method] = found, low
        lines.append(
            f"  {method.label:>17s} H={method.period or '-':<4}: {found.count_outside} "
            f"all-reduce(s) of {found.outside} B every step, {found.count_inside} of "
            f"{found.inside} B in a sync branch (at most {found.peak_inside} B at one sync; "
            f"lowered: {low.inside} B, at most {low.peak_inside} B) -> "
            f"{found.per_step(method.period):.1f} B/step"
        )
    lines.insert(
        0,
        "bytes all-reduced per step, from the compiled HLO and the lowered StableHLO (shard_map, "
        f"4 CPU devices; {len(cache)} compiles, {time.perf_counter() - start:.0f}s beside the "
        "training):",
    )
    return StepBytes(compiled, lowered, lines)


# ----------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------


@dataclass
class Row:
    method: Method
    lr: float
    test_acc: np.ndarray  # [seeds], in [0, 1]
    val_acc: np.ndarray
    diverged: int  # runs whose final test loss is not finite (NaN weights)
    bytes_per_step: float
    reduces: AllReduces
    lowered: AllReduces | None = None  # the lowered StableHLO's all-reduces
    dropped: np.ndarray | None = None  # [seeds, replicas]: outer steps each replica missed

    @property
    def h(self) -> str:
        return "—" if self.method.period is None else str(self.method.period)


Trained = dict[tuple[str, tuple[tuple[str, Any], ...]], Results]


def make_row(method: Method, lr: float, metrics: dict[str, np.ndarray], hlo: StepBytes) -> Row:
    """One table row: ``metrics`` of the runs at ``lr`` (each ``[seeds]``), bytes if measured."""
    compiled = hlo.compiled.get(method, AllReduces())
    return Row(
        method=method,
        lr=lr,
        test_acc=metrics["test_acc"].astype(np.float64),
        val_acc=metrics["val_acc"].astype(np.float64),
        diverged=int((~np.isfinite(metrics["test_loss"])).sum()),
        bytes_per_step=compiled.per_step(method.period),
        reduces=compiled,
        lowered=hlo.lowered.get(method),
        dropped=metrics.get("dropped"),
    )


def pick_rows(results: Trained, hlo: StepBytes, settings: Settings) -> list[Row]:
    """The headline rows: each method at the learning rate of best mean validation accuracy."""
    rows = []
    for method in methods(settings):
        group = results[(method.kind, ())]
        runs = [group[(method.period, float(lr))] for lr in settings.learning_rates]
        val = [np.where(np.isfinite(m["test_loss"]), m["val_acc"], -np.inf) for m in runs]
        best = int(np.argmax([v.mean() for v in val]))  # by validation accuracy
        rows.append(make_row(method, float(settings.learning_rates[best]), runs[best], hlo))
    return rows


def chosen_lrs(headline: list[Row]) -> dict[int | None, float]:
    """DiLoCo's chosen inner learning rate at each H: what its option rows run at."""
    return {r.method.period: r.lr for r in headline if r.method.kind == "diloco"}


def variant_rows(
    results: Trained, hlo: StepBytes, headline: list[Row], variants: list[Method]
) -> list[Row]:
    """The option (or fault) rows, at DiLoCo's chosen learning rate at their H."""
    lrs = chosen_lrs(headline)
    return [
        make_row(m, lrs[m.period], results[(m.kind, m.options)][(m.period, lrs[m.period])], hlo)
        for m in variants
    ]


def _pm(values: np.ndarray) -> str:
    return mean_pm_std(values, 3)


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the per-seed difference a - b, in percentage points."""
    return mean_and_se(100 * (a - b))


TABLE_HEADER = (
    "| method | H | replicas × batch | inner lr | test accuracy | Δ vs data parallel (pp) "
    "| all-reduces / step (in sync branch) | bytes all-reduced / step |"
)


def table(rows: list[Row]) -> list[str]:
    dp = next(r for r in rows if r.method.kind == "data_parallel")
    out = [TABLE_HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r is dp:
            delta = "—"
        else:
            mean, se = _paired(r.test_acc, dp.test_acc)
            delta = f"{mean:+.1f} ± {se:.1f}"
        reduces = f"{r.reduces.count_outside} ({r.reduces.count_inside})"
        diverged = f" ({r.diverged} diverged)" if r.diverged else ""
        out.append(
            f"| {r.method.label} | {r.h} | {r.method.replicas} × {r.method.batch} | {r.lr:g} | "
            f"{_pm(r.test_acc)}{diverged} | {delta} | {reduces} | {r.bytes_per_step:.1f} |"
        )
    return out


OPTIONS_HEADER = (
    "| method | H | inner lr | test accuracy | Δ vs DiLoCo at equal H (pp) "
    "| all-reduces / step (in sync branches) | bytes / step, lowered | bytes / step, compiled "
    "| peak bytes at one step, lowered | peak bytes at one step, compiled |"
)


def _delta(row: Row, reference: Row) -> str:
    if row is reference:
        return "—"
    mean, se = _paired(row.test_acc, reference.test_acc)
    return f"{mean:+.1f} ± {se:.1f}"


def options_table(headline: list[Row], options: list[Row]) -> list[str]:
    """DiLoCo at each H beside its option rows at that H: accuracy and bytes, both forms."""
    base = {r.method.period: r for r in headline if r.method.kind == "diloco"}
    out = [OPTIONS_HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for h in sorted({r.method.period for r in options}):
        for r in [base[h], *(o for o in options if o.method.period == h)]:
            low = r.lowered or AllReduces()
            diverged = f" ({r.diverged} diverged)" if r.diverged else ""
            out.append(
                f"| {r.method.label} | {r.h} | {r.lr:g} | {_pm(r.test_acc)}{diverged} | "
                f"{_delta(r, base[h])} | {r.reduces.count_outside} ({r.reduces.count_inside}) | "
                f"{low.per_step(r.method.period):.1f} | {r.bytes_per_step:.1f} | {low.peak} | "
                f"{r.reduces.peak} |"
            )
    return out


def fault_header(settings: Settings) -> str:
    start, stop = settings.fault_steps
    return (
        f"| DiLoCo H = {settings.option_period}, replica 1's gradients NaN at steps {start}-"
        f"{stop - 1} | inner lr | test accuracy | Δ vs clean run (pp) | runs with NaN weights "
        "| outer steps dropped per replica (mean over seeds) |"
    )


def fault_table(headline: list[Row], faults: list[Row], settings: Settings) -> list[str]:
    clean = next(
        r
        for r in headline
        if r.method.kind == "diloco" and r.method.period == settings.option_period
    )
    out = [fault_header(settings), "|---|---:|---:|---:|---:|---:|"]
    for r in [clean, *faults]:
        label = fault_variant(dict(r.method.options)) if r is not clean else "clean run (no fault)"
        dropped = "—" if r.dropped is None else " / ".join(f"{x:g}" for x in r.dropped.mean(0))
        nan = " (NaN weights: argmax of NaN logits)" if r.diverged == len(r.test_acc) else ""
        out.append(
            f"| {label} | {r.lr:g} | {_pm(r.test_acc)}{nan} | {_delta(r, clean)} | "
            f"{r.diverged} of {len(r.test_acc)} | {dropped} |"
        )
    return out


def options_reading(headline: list[Row], options: list[Row], settings: Settings) -> list[str]:
    """What the option rows show, computed from them (the 2-standard-error rule)."""
    base = {r.method.period: r for r in headline if r.method.kind == "diloco"}

    def versus(r: Row) -> str:
        mean, se = _paired(r.test_acc, base[r.method.period].test_acc)
        verdict = "within 2 SE" if abs(mean) <= 2 * se else ("above" if mean > 0 else "below")
        return f"H = {r.h}: {mean:+.1f} ± {se:.1f} pp ({verdict})"

    delayed = [r for r in options if dict(r.method.options).get("sync_delay") == 1]
    sentences = [
        "**sync_delay=1** (the outer step taken one step late, overlapped with the next inner "
        "step) against sync_delay=0 at the same inner lr, per seed: "
        + "; ".join(versus(r) for r in delayed)
        + ". It all-reduces the same bytes, one step later."
    ]
    for r in options:
        if "communication_dtype" not in dict(r.method.options):
            continue
        f32 = base[r.method.period]
        low, low32 = r.lowered or AllReduces(), f32.lowered or AllReduces()
        sentences.append(
            f"**bf16 all-reduce** (H = {r.h}): in the lowered StableHLO the heaviest "
            f"conditional all-reduces {low.peak_inside} B at a sync against "
            f"{low32.peak_inside} B in float32 (x{low.peak_inside / max(low32.peak_inside, 1):.2f}"
            f"; a whole sync {low.inside} B against {low32.inside} B, the scalars unchanged); "
            f"in the compiled HLO {r.reduces.peak_inside} B against {f32.reduces.peak_inside} B, "
            f"XLA:CPU having widened the bf16 all-reduce to f32; accuracy {versus(r)}."
        )
    streaming = [r for r in options if "fragments" in dict(r.method.options)]
    if streaming:
        parts = [
            f"F = {dict(r.method.options)['fragments']}, {versus(r)}, "
            + _peak_against(r, base[r.method.period])
            for r in streaming
        ]
        sentences.append(
            "**Streaming DiLoCo** (fragments sync at staggered steps, each with its own outer "
            "state): "
            + "; ".join(parts)
            + ". The peak is not 1/F of the model: the fragments are whole leaves, and the "
            f"CNN's leaves ({_leaf_sizes()} floats, in order) split unevenly."
        )
    return [" ".join(sentences)]


def _slowmo_note(headline: list[Row]) -> str:
    """SlowMo has no replica axis, yet its measured step may all-reduce a scalar."""
    slowmo = next((r for r in headline if r.method.kind == "slowmo"), None)
    if slowmo is None or not slowmo.reduces.inside:
        return ""
    return (
        f" SlowMo's {slowmo.reduces.inside} B in its sync branch: without a replica axis, the "
        "finite check all-reduces its flag (a pmin) over the mesh axis the params vary over "
        "inside `shard_map` (a 1-device axis in this measurement), as for params sharded "
        "within one model; no training run here communicates it."
    )


def _scalars_note(headline: list[Row]) -> str:
    """Where a sync's scalar all-reduces are: with the pseudo-gradient's or apart."""
    diloco = next(r for r in headline if r.method.kind == "diloco")
    apart = diloco.reduces.inside - diloco.reduces.peak_inside
    note = (
        "Besides the pseudo-gradient a sync all-reduces two scalars: the count of finite "
        "replicas (4 B) and the slow weights' fingerprint (16 B, a pmax)"
    )
    if apart > 0:
        return (
            note + f"; here {apart} B of them in a separate small conditional with the same "
            "predicate, which the peak column leaves out."
        )
    return note + ", in the same conditional."


def _peak_against(row: Row, diloco: Row) -> str:
    peak, full = row.reduces.peak, diloco.reduces.peak
    return (
        f"peak {peak} B at one step (x{peak / max(full, 1):.2f} of DiLoCo's {full} B), "
        f"{row.bytes_per_step:.1f} B/step in total (DiLoCo {diloco.bytes_per_step:.1f})"
    )


def _leaf_sizes() -> str:
    params = jax.eval_shape(init_params, jax.random.key(0))
    return ", ".join(f"{math.prod(x.shape):,}" for x in jax.tree.leaves(params))


def fault_reading(headline: list[Row], faults: list[Row], settings: Settings) -> list[str]:
    clean = next(
        r
        for r in headline
        if r.method.kind == "diloco" and r.method.period == settings.option_period
    )
    start, stop = settings.fault_steps
    parts = []
    for r in faults:
        mean, se = _paired(r.test_acc, clean.test_acc)
        dropped = "none" if r.dropped is None else "/".join(f"{x:g}" for x in r.dropped.mean(0))
        nan = f", NaN weights in {r.diverged} of {len(r.test_acc)} runs" if r.diverged else ""
        parts.append(
            f"{fault_variant(dict(r.method.options))}: {100 * r.test_acc.mean():.1f}% "
            f"({mean:+.1f} ± {se:.1f} pp against the clean run{nan}; outer steps dropped per "
            f"replica {dropped})"
        )
    return [
        f"**Faults**: replica 1's gradients are NaN at steps {start}-{stop - 1} of "
        f"{settings.steps}; the clean run (DiLoCo H = {settings.option_period}, same lr and "
        f"seeds) reaches {100 * clean.test_acc.mean():.1f}%. " + "; ".join(parts) + "."
    ]


def reading(rows: list[Row], settings: Settings) -> list[str]:
    """What reproduced of the paper's claim, computed from the rows (a 2-standard-error rule).

    The reading's paragraph, a blank line and the caveats.
    """
    dp = next(r for r in rows if r.method.kind == "data_parallel")
    alone = next(r for r in rows if r.method.kind == "alone")
    diloco = [r for r in rows if r.method.kind == "diloco"]
    verdicts = _against_baselines(diloco, dp, alone)
    sentences = [
        f"Data parallelism (AdamW, gradients all-reduced every step: {dp.bytes_per_step:.0f} "
        f"bytes per step per replica, the 8,010 float32 gradients) reaches {_pct(dp)}; one "
        f"replica alone, with a quarter of the gradient evaluations and no communication, "
        f"{_pct(alone)}.",
        *_claim_sentences(verdicts, dp),
        *_period_sentences(diloco),
        _alone_sentence(verdicts, diloco),
        _single_replica_sentence(rows, dp),
    ]
    return [" ".join(sentences), "", _caveats(rows, settings)]


class _Verdicts(NamedTuple):
    """DiLoCo at each H against data parallel and one replica alone (2 standard errors)."""

    close: list[Row]  # not below data parallel
    below: list[Row]  # below data parallel
    above_alone: list[Row]
    below_alone: list[Row]
    details: list[str]  # per H: its accuracy, both differences and its share of the bytes


def _against_baselines(diloco: list[Row], dp: Row, alone: Row) -> _Verdicts:
    verdicts = _Verdicts([], [], [], [], [])
    for r in diloco:
        mean, se = _paired(r.test_acc, dp.test_acc)
        mean_alone, se_alone = _paired(r.test_acc, alone.test_acc)
        (verdicts.close if _not_below(mean, se) else verdicts.below).append(r)
        if not _not_below(-mean_alone, se_alone):  # above alone by more than 2 SE
            verdicts.above_alone.append(r)
        elif not _not_below(mean_alone, se_alone):
            verdicts.below_alone.append(r)
        verdicts.details.append(
            f"H = {r.method.period}: {100 * r.test_acc.mean():.1f}% at lr {r.lr:g} "
            f"({mean:+.1f} ± {se:.1f} pp against data parallel, {mean_alone:+.1f} ± "
            f"{se_alone:.1f} pp against one replica alone) for "
            f"{r.bytes_per_step / dp.bytes_per_step:.3g} of its bytes"
        )
    return verdicts


def _hs(rows: list[Row]) -> str:
    return ", ".join(str(r.method.period) for r in rows) or "none"


def _pct(row: Row) -> str:
    return f"{100 * row.test_acc.mean():.1f}%"


def _claim_sentences(verdicts: _Verdicts, dp: Row) -> list[str]:
    """Where DiLoCo matches data parallelism (the claim reproduced) and where not; per H."""
    sentences = []
    if verdicts.close:
        sentences.append(
            f"**Reproduced** at H = {_hs(verdicts.close)}: DiLoCo is not below data parallelism "
            "by more than two standard errors of the per-seed difference, while it all-reduces "
            "1/H of its bytes (the 8,010-float pseudo-gradient and two scalars, all-reduced "
            "inside the sync conditionals of the compiled step)."
        )
    if verdicts.below:
        gaps = ", ".join(f"{-_paired(r.test_acc, dp.test_acc)[0]:.1f}" for r in verdicts.below)
        sentences.append(
            f"**Not reproduced** at H = {_hs(verdicts.below)}: there DiLoCo is below data "
            f"parallelism by more than two standard errors ({gaps} pp)."
        )
    sentences.append("Per H: " + "; ".join(verdicts.details) + ".")
    return sentences


def _period_sentences(diloco: list[Row]) -> list[str]:
    """How DiLoCo's accuracy moves with H: monotone or not, and from the best H to the last."""
    if len(diloco) < 2:
        return []
    means = [r.test_acc.mean() for r in diloco]
    best, first, last = diloco[int(np.argmax(means))], diloco[0], diloco[-1]
    if all(a >= b for a, b in zip(means, means[1:], strict=False)):
        sentences = [
            "Accuracy falls as H grows: less communication, lower quality, as in the "
            "paper's ablation over H."
        ]
    else:
        sentences = [
            f"Accuracy is not monotone in H: the best H is {best.method.period}, not the smallest."
        ]
        if first is not best and first.lr < min(r.lr for r in diloco[1:]):
            sentences.append(
                f"At H = {first.method.period} the chosen inner learning rate is the lowest "
                f"({first.lr:g}), consistent with the outer Nesterov step (0.7, momentum "
                "0.9: the paper's values, for H = 500) multiplying the replicas' progress "
                "(by 0.7 / (1 - 0.9) = 7 in steady state) and overshooting when syncs are "
                "frequent; not tested here, the outer hyperparameters are not tuned."
            )
    if last is not best:
        sentences.append(
            f"From H = {best.method.period} to H = {last.method.period} "
            f"({best.bytes_per_step / last.bytes_per_step:.0f}x fewer bytes) the accuracy "
            f"drops by {100 * (best.test_acc.mean() - last.test_acc.mean()):.1f} pp."
        )
    return sentences


def _alone_sentence(verdicts: _Verdicts, diloco: list[Row]) -> str:
    """Whether four replicas beat one of them alone at every H."""
    if len(verdicts.above_alone) == len(diloco):
        return (
            "At every H DiLoCo is above one replica alone by more than two standard errors: "
            "the other three replicas' work is not wasted even at the rarest syncs tried."
        )
    return (
        f"DiLoCo is above one replica alone by more than two standard errors at H = "
        f"{_hs(verdicts.above_alone)} only"
        + (
            f", and below it at H = {_hs(verdicts.below_alone)}: there the four replicas "
            "together do worse than one of them alone."
            if verdicts.below_alone
            else "."
        )
    )


def _single_replica_sentence(rows: list[Row], dp: Row) -> str:
    """SlowMo and Lookahead: the outer step without replicas, against data parallel."""
    singles = []
    for r in rows:
        if r.method.kind in ("slowmo", "lookahead"):
            mean, se = _paired(r.test_acc, dp.test_acc)
            singles.append(
                f"{r.method.label} (H = {r.method.period}, lr {r.lr:g}) {_pct(r)}, "
                f"{mean:+.1f} ± {se:.1f} pp"
            )
    return (
        "Without replicas (one model on the full batch, nothing to communicate; data parallel "
        "is AdamW on the same batches): " + "; ".join(singles) + "."
    )


def _caveats(rows: list[Row], settings: Settings) -> str:
    lrs = settings.learning_rates
    edge = [r for r in rows if len(lrs) > 1 and r.lr in (min(lrs), max(lrs))]
    return (
        f"Caveats: a tiny CNN trained from scratch for {settings.steps} steps "
        f"({settings.steps // max(settings.periods)} to {settings.steps // min(settings.periods)} "
        "outer steps for DiLoCo), against the paper's language models (tens of thousands of "
        "inner steps from a pretrained checkpoint, H = 500, 8 replicas); constant learning "
        "rates, chosen per row on a validation split"
        + (
            " (at the edge of the grid for "
            + ", ".join(f"{r.method.label} H = {r.h}" for r in edge)
            + ": a better one may lie outside it)"
            if edge
            else ""
        )
        + "; the outer hyperparameters are the papers' defaults, not tuned here; "
        f"{settings.seeds} seeds; one CPU, so bytes are measured, never communication time."
    )


def _not_below(mean: float, se: float) -> bool:
    """Not below zero by more than two standard errors (one seed: by more than 1 pp)."""
    return mean >= -2 * se if np.isfinite(se) else mean >= -1.0


def markdown(
    rows: list[Row],
    settings: Settings,
    data: Dataset,
    command: str,
    wall_s: float,
    cpu_s: float,
    figure: str,
    options: list[Row] | None = None,
    faults: list[Row] | None = None,
) -> str:
    num_train, num_val = trained_on(data), len(data.x_train) - trained_on(data)
    out = ["## Replicas: DiLoCo against data parallelism (MNIST-1D)", ""]
    out.append(
        "Does `lookax.diloco` do what DiLoCo's paper (Douillard et al. 2023) claims: quality "
        "close to synchronous data parallelism at a fraction of the communication? MNIST-1D "
        f"generated offline by `mnist1d`'s `make_dataset` with {settings.num_samples:,} "
        f"sequences: {num_train:,} training, {num_val:,} held out for validation, "
        f"{len(data.x_test):,} test"
        + (
            " (more than the default 5,000, so that no method cycles through its data many "
            "times: DiLoCo's setting, language-model pretraining, hardly repeats data)"
            if settings.num_samples > 5000
            else ""
        )
        + ". The 8,010-parameter CNN of `lookax.mnist1d`; "
        f'{REPLICAS} replicas as a leading axis run by `jax.vmap(..., axis_name="replica")` on '
        f"one CPU; global batch {GLOBAL_BATCH}, {settings.steps} steps, {settings.seeds} seeds "
        "(paired: seed s gives every method the same initial weights and global batches). "
        '**DiLoCo**: `lookax.diloco(lookax.adamw(lr), H, replica_axis="replica")`, outer '
        f"Nesterov SGD 0.7 / 0.9, replica m on shard m ({GLOBAL_BATCH // REPLICAS} sequences) "
        "of every global batch, no gradient averaging. **Data parallel**: AdamW with the "
        "gradients `lax.pmean`-ed over the replicas every step (one model on the full batch). "
        "**One replica alone**: replica 0 on shard 0 of every global batch for the same "
        f"{settings.steps} steps, no communication: a quarter of the gradient evaluations, "
        "what one worker of the four reaches by itself. **SlowMo** "
        f"(`lookax.slowmo(lookax.adamw(lr), {SLOWMO_PERIOD})`, outer SGD 1.0, momentum 0.5) and "
        f"**Lookahead** (`lookax.lookahead(lookax.adamw(lr), {LOOKAHEAD_K}, {LOOKAHEAD_ALPHA})`)"
        " on one replica with the full batch. AdamW weight decay 1e-2. The inner learning rate "
        "is chosen per row from {"
        + ", ".join(f"{lr:g}" for lr in settings.learning_rates)
        + "} by the mean validation accuracy over seeds"
        + (
            " (one value only: no choice)"
            if len(settings.learning_rates) == 1
            else ": around Adam's best on this model (1e-2 at batch 100 in `train_quality.py`), "
            "one step lower because DiLoCo's outer Nesterov step amplifies the replicas' "
            "progress, one step higher because Lookahead halves its step"
        )
        + ". DiLoCo, SlowMo and Lookahead are evaluated on their slow weights."
    )
    out.append("")
    out.append(
        f"*Test accuracy*: fraction correct on the {len(data.x_test):,} test sequences after "
        "the last step, mean ± std over seeds. *Δ vs data parallel*: the per-seed difference "
        "in percentage points, mean ± standard error. *Bytes all-reduced / step*: read from "
        "the compiled HLO of each method's training step under `jax.shard_map` on a 4-device "
        "CPU mesh: the operand bytes of every `all-reduce`, those inside a conditional branch "
        "(DiLoCo's sync) divided by H; the payload each replica contributes, not the wire "
        "traffic of a particular all-reduce algorithm. *All-reduces / step*: all-reduce "
        "instructions in the step outside (inside) a conditional branch."
    )
    out.append("")
    out += table(rows)
    out.append("")
    out.append(f"![test accuracy against bytes all-reduced per step]({figure})")
    out.append("")
    lines = reading(rows, settings)
    out += lines[:-1]  # the reading; its caveats come after the outer-path sections
    out += outer_sections(rows, options or [], faults or [], settings)
    out.append(lines[-1] + OUTER_CAVEAT + _slowmo_note(rows))
    out.append("")
    out.append(
        f"Command: `{command}` ({wall_s:.0f} s wall, {cpu_s:.0f} s of CPU time, on "
        f"{os.cpu_count()} shared CPU cores)."
    )
    out.append("")
    return "\n".join(out)


OUTER_CAVEAT = (
    " The option and fault rows run at the inner lr chosen for DiLoCo at their H, not "
    "re-tuned, so their Δ isolates the option; the lowered and compiled bytes are the payload "
    "of one replica, and with one CPU a bf16 all-reduce or a smaller peak saves no measured time."
)


def outer_sections(
    headline: list[Row], options: list[Row], faults: list[Row], settings: Settings
) -> list[str]:
    """The outer-path options' and the faults' tables, with what they show."""
    out: list[str] = []
    if options:
        out += [
            "### Outer-path options: sync_delay, a bf16 all-reduce, Streaming DiLoCo",
            "",
            'Each option row is `lookax.diloco(lookax.adamw(lr), H, replica_axis="replica", '
            "...)` with one option changed, at the inner lr chosen for DiLoCo at that H, on the "
            "same seeds: *Δ* is the per-seed difference against DiLoCo at equal H (the first row "
            "of each H). *Bytes, lowered*: the operand bytes of the `stablehlo.all_reduce` ops "
            "of the lowered module (`jax.jit(step).lower(...).as_text()`), in the dtype the "
            "program asks for; *compiled*: those of the compiled HLO's all-reduces, where "
            "XLA:CPU has widened a bf16 all-reduce to f32. Both count an all-reduce inside a "
            "conditional once per H. *Peak bytes at one step*: every step's all-reduces plus "
            "the heaviest single conditional's (one sync; each Streaming DiLoCo fragment syncs "
            "in its own conditional, at its own step). " + _scalars_note(headline),
            "",
            *options_table(headline, options),
            "",
            *options_reading(headline, options, settings),
            "",
        ]
    if faults:
        out += [
            "### Faults: one replica's gradients turned NaN",
            "",
            "`drop_nonfinite=False` averages every replica's pseudo-gradient, NaN included; "
            "`drop_nonfinite=True` (the outer path's default) leaves a non-finite one out of "
            "the average and re-initializes that replica's inner state, its params staying "
            "NaN; *+ recovery*: after each step the training loop puts a replica whose "
            "`lookax.replica_health(state).dropped` went up back on "
            "`lookax.slow_params(state, params)`; `optax.apply_if_finite(inner, 5)` skips "
            "the non-finite inner updates. Evaluated on the slow weights, as above.",
            "",
            *fault_table(headline, faults, settings),
            "",
            *fault_reading(headline, faults, settings),
            "",
        ]
    return out


def plot(rows: list[Row], settings: Settings, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    diloco = [r for r in rows if r.method.kind == "diloco"]
    dp = next(r for r in rows if r.method.kind == "data_parallel")
    std = lambda r: r.test_acc.std(ddof=1) if len(r.test_acc) > 1 else 0.0  # noqa: E731
    x = [r.bytes_per_step for r in diloco]
    ax.errorbar(
        x,
        [r.test_acc.mean() for r in diloco],
        yerr=[std(r) for r in diloco],
        marker="o",
        capsize=3,
        color="C0",
        label="DiLoCo (4 replicas)",
    )
    for r in diloco:
        ax.annotate(
            f"H={r.method.period}",
            (r.bytes_per_step, r.test_acc.mean()),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize=8,
        )
    ax.errorbar(
        [dp.bytes_per_step],
        [dp.test_acc.mean()],
        yerr=[std(dp)],
        marker="s",
        capsize=3,
        color="C3",
        label="data parallel (4 replicas, grads all-reduced)",
    )
    left, right = min(x) / 3, dp.bytes_per_step * 3
    zero = [r for r in rows if r.bytes_per_step == 0]
    for i, r in enumerate(zero):
        mean, color = r.test_acc.mean(), f"C{i + 4}"
        ax.axhline(mean, color=color, linestyle="--", linewidth=1)
        ax.axhspan(mean - std(r), mean + std(r), color=color, alpha=0.12)
        period = f", H={r.method.period}" if r.method.period else ""
        ax.plot([], [], color=color, linestyle="--", label=f"{r.method.label}{period}: 0 bytes")
    ax.set_xscale("log")
    ticks = sorted({*x, dp.bytes_per_step})
    ax.set_xticks(ticks, [f"{t:,.0f}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(left, right)
    ax.set_xlabel("bytes all-reduced per step per replica (compiled HLO)")
    ax.set_ylabel("test accuracy (fraction)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        f"MNIST-1D, {settings.steps} steps, global batch {GLOBAL_BATCH}: "
        f"mean ± std over {settings.seeds} seeds\n"
        "dashed lines and bands: methods that all-reduce nothing",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argument_parser("replicas.py", __doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny run: 2 seeds, 40 steps, H in {2, 4}, one learning rate (1e-2)",
    )
    parser.add_argument("--seeds", type=int, help="seeds per configuration (full: 5)")
    parser.add_argument("--steps", type=int, help="training steps per run (full: 1000)")
    parser.add_argument(
        "--out",
        help=(
            "directory for replicas.md and replicas.png (default: benchmarks/results/ and "
            "benchmarks/)"
        ),
    )
    args = parser.parse_args(argv)
    steps = args.steps or (40 if args.quick else 800)
    seeds = args.seeds or (2 if args.quick else 5)
    if steps < 1 or seeds < 1:
        parser.error("--steps and --seeds must be positive")
    settings = Settings(
        steps=steps,
        seeds=seeds,
        periods=(2, 4) if args.quick else (5, 20, 50, 200),
        num_samples=2000 if args.quick else 25000,
        learning_rates=(1e-2,) if args.quick else (1e-3, 3e-3, 1e-2, 3e-2),
        quick=args.quick,
        option_period=4 if args.quick else 20,
        streaming_periods=(4,) if args.quick else (20, 200),
    )
    return args, settings


def train_everything(settings: Settings, data: Dataset, seeds: Seeds) -> Trained:
    """The headline methods over the learning-rate grid, then the option and fault rows.

    One compiled program per method kind (DiLoCo's H values vmapped in it) and per option
    set; the option and fault rows run at the lr chosen for DiLoCo at their H.
    """
    results: Trained = {}
    lrs = [float(lr) for lr in settings.learning_rates]
    for kind in KINDS:
        periods = list(dict.fromkeys(m.period for m in methods(settings) if m.kind == kind))
        rows = [(p, lr) for p in periods for lr in lrs]
        results[(kind, ())] = train_group(Method(kind, None), rows, settings, data, seeds)
    chosen = chosen_lrs(pick_rows(results, StepBytes({}, {}, []), settings))
    variants = option_methods(settings) + fault_methods(settings)
    for options in dict.fromkeys(m.options for m in variants):
        group = [m for m in variants if m.options == options]
        rows = [(m.period, chosen[m.period]) for m in group]
        results[("diloco", options)] = train_group(group[0], rows, settings, data, seeds)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args, settings = _parse_args(argv)
    command = command_line("replicas.py", argv)
    suffix = "_quick" if settings.quick else ""
    if args.out:
        md_path = os.path.join(args.out, f"replicas{suffix}.md")
        png_path = os.path.join(args.out, f"replicas{suffix}.png")
    else:
        md_path = os.path.join(HERE, "results", f"replicas{suffix}.md")
        png_path = os.path.join(HERE, f"replicas{suffix}.png")
    os.makedirs(os.path.dirname(md_path), exist_ok=True)
    os.makedirs(os.path.dirname(png_path), exist_ok=True)

    start, cpu_start = time.perf_counter(), time.process_time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        # The HLO compiles need no data: they run beside the data generation and training.
        measured = pool.submit(measure_bytes, settings)
        data = load_mnist1d(settings.num_samples)
        print(
            f"MNIST-1D: {settings.num_samples} sequences generated in "
            f"{time.perf_counter() - start:.0f}s; {settings.steps} steps, global batch "
            f"{GLOBAL_BATCH}, {settings.seeds} seeds, DiLoCo H in {list(settings.periods)}, "
            f"inner lr in {list(settings.learning_rates)}",
            flush=True,
        )
        print("training (each line: one compiled program):", flush=True)
        seeds = make_seeds(settings, trained_on(data))
        results = train_everything(settings, data, seeds)
        hlo = measured.result()
    print("\n".join(hlo.lines), flush=True)
    rows = pick_rows(results, hlo, settings)
    options = variant_rows(results, hlo, rows, option_methods(settings))
    faults = variant_rows(results, hlo, rows, fault_methods(settings))
    wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start

    figure = os.path.relpath(png_path, os.path.dirname(md_path))
    plot(rows, settings, png_path)
    text = markdown(rows, settings, data, command, wall_s, cpu_s, figure, options, faults)
    with open(md_path, "w") as f:
        f.write(text)
    print()
    print(text)
    print(f"wrote {md_path} and {png_path}")
    print(
        f"total run time: {time.perf_counter() - start:.0f}s "
        f"({time.process_time() - cpu_start:.0f}s of CPU time in this process)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
