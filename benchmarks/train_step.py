#!/usr/bin/env python
"""The whole training step of real Flax models: Lookahead against the plain optimizer.

Usage::

    python benchmarks/train_step.py            # ResNet-18 and a 4-layer LM (7-8 minutes)
    python benchmarks/train_step.py --quick    # tiny models, under a minute
    python benchmarks/train_step.py --models lm --rounds 20 --out benchmarks/results/train_step.txt

``step_time.py`` times the optimizer update alone, where Lookahead's extra
memory traffic (one fused read of the params and a copy every ``k`` steps) is a
large share of the step. A user does not run the update alone: they run a
jitted step that does the forward pass, the backward pass and the update, with
params and optimizer state donated::

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

That step's time is the number a user feels, and the design's goal for it is
Lookahead / plain <= 1.03 (docs/design.md, "Goals and where they stand"). It is
measured here on two Flax (linen) models with random synthetic data (fixed seed,
no downloads): a ResNet-18-shaped CNN
(GroupNorm instead of BatchNorm, so the step is a pure function of params and
batch) on 32x32x3 inputs, batch 32, and a decoder-only transformer LM (4 layers,
d_model 256, 4 heads, sequence 128, vocabulary 1024, batch 8), each with
``inner = optax.adam(1e-3)`` and ``optax.sgd(0.1, momentum=0.9)`` against
``lookax.lookahead(inner, sync_period=5, slow_step_size=0.5)``.

The two compiled steps of a pair are timed side by side with
``_measure.time_set``: interleaved round-robin (forward, then backward), each
sample being ``K = 5`` consecutive steps (one Lookahead sync period, so every
sample holds exactly one sync), warm-up rounds dropped; the ratio is the median
over rounds of the ratio measured in that round, printed with a 95% interval of
that median (distribution-free; it needs 6 rounds or more), and the same for
process CPU time, which other processes on the machine disturb less than wall
time. The intervals say whether the run can tell at all: Lookahead adds
1 + 2/k = 1.4 params-sized memory accesses per step (the MB/step column), a few
per cent of these steps' bytes and less of their time, while on a shared 2-core
machine single rounds scatter by 15% or more; the goal line says for how many
pairs the interval settles the goal either way.

Beside the times, for each candidate: a fresh ``jax.jit``'s trace+lower time
and compile CPU time, the bytes the step moves (``_measure.hlo_stats``, the
sync branch weighted 1/K: a noise-free view of what Lookahead adds),
``memory_analysis()`` (argument, output, alias and temp bytes; the temp
difference is what Lookahead costs in memory beyond its slow weights, which are
in the arguments) and the loss after the timed steps (finite: the steps trained
on numbers, not on NaNs).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# The shared modules beside this file, also when a test or another benchmark loads it by path.
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _measure import (  # noqa: E402
    Candidate,
    CompiledStep,
    Timing,
    compile_step,
    describe_machine,
    extra_temp_in_params,
    fmt,
    paired_ratio,
    print_table,
    time_set,
)
from flax import linen as nn  # noqa: E402
from step_time import ALPHA, SEED, K  # noqa: E402

import lookax  # noqa: E402

GOAL = 1.03  # docs/design.md's goal: whole training step, Lookahead / plain
PLAIN, LOOKAHEAD = "plain", "lookahead"
INNERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "adam(1e-3)": lambda: optax.adam(1e-3),
    "sgd(0.1, momentum=0.9)": lambda: optax.sgd(0.1, momentum=0.9),
}
# --quick compiles 8 steps of real (if tiny) models: XLA:CPU's LLVM passes take
# most of a minute for them on 2 cores, and without them about a third of that.
# Quick checks that the script runs; its numbers are not the benchmark.
QUICK_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def lookahead(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    return lookax.lookahead(inner, sync_period=K, slow_step_size=ALPHA)


# ----------------------------------------------------------------------------
# Models.
# ----------------------------------------------------------------------------


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, channels))


class BasicBlock(nn.Module):
    channels: int
    strides: int

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.channels, (3, 3), self.strides, use_bias=False)(x)
        y = nn.relu(group_norm(self.channels)(y))
        y = nn.Conv(self.channels, (3, 3), use_bias=False)(y)
        y = group_norm(self.channels)(y)
        if x.shape != y.shape:  # the projection shortcut of each stage's first block
            x = nn.Conv(self.channels, (1, 1), self.strides, use_bias=False)(x)
            x = group_norm(self.channels)(x)
        return nn.relu(x + y)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout (7x7/2 stem, max pool, 4 stages of 2 basic blocks)."""

    width: int = 64
    stages: int = 4  # --quick: fewer (XLA:CPU compile time grows with the distinct kernels)
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (7, 7), 2, use_bias=False)(x)
        x = nn.relu(group_norm(self.width)(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        for stage in range(self.stages):
            for block in range(2):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(self.width * 2**stage, strides)(x)
        return nn.Dense(self.classes)(x.mean(axis=(1, 2)))


class DecoderBlock(nn.Module):
    d_model: int
    heads: int

    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, mask=mask)
        h = nn.Dense(4 * self.d_model)(nn.LayerNorm()(x))
        return x + nn.Dense(self.d_model)(nn.gelu(h))


class DecoderLM(nn.Module):
    """Pre-LayerNorm decoder-only transformer with learned positions and causal attention."""

    vocab: int
    d_model: int
    heads: int
    layers: int

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.d_model)(tokens)
        positions = self.param(
            "positions", nn.initializers.normal(0.02), (tokens.shape[1], self.d_model)
        )
        x = x + positions
        mask = nn.make_causal_mask(tokens)
        for _ in range(self.layers):
            x = DecoderBlock(self.d_model, self.heads)(x, mask)
        return nn.Dense(self.vocab)(nn.LayerNorm()(x))


@dataclasses.dataclass
class ModelSpec:
    name: str
    description: str
    module: nn.Module
    batch: tuple[jax.Array, jax.Array]  # (inputs, targets); a fixed input, not donated

    @functools.cached_property
    def host_params(self) -> Any:
        """Seeded initial params, in numpy: each candidate puts its own copy on the device.

        Flax's shapes, but not its initializers: on XLA:CPU those take longer to
        compile than the training step. Norm scales are ones, biases zeros, other
        weights normal with variance 1 / fan-in (fan-in: all but the last axis).
        """
        shapes = jax.eval_shape(self.module.init, jax.random.key(SEED), self.batch[0])["params"]
        rng = np.random.default_rng(SEED)

        def value(path, leaf):
            name = path[-1].key
            if name in ("scale", "bias"):
                return np.full(leaf.shape, name == "scale", np.float32)
            fan_in = math.prod(leaf.shape[:-1]) or 1
            return rng.standard_normal(leaf.shape, dtype=np.float32) / np.float32(fan_in**0.5)

        return jax.tree_util.tree_map_with_path(value, shapes)

    def loss(self, params: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        inputs, targets = batch
        logits = self.module.apply({"params": params}, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def make_cnn(quick: bool) -> ModelSpec:
    width, stages, size, batch = (8, 2, 16, 8) if quick else (64, 4, 32, 32)
    rng = np.random.default_rng(SEED)
    images = rng.standard_normal((batch, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, 10, batch)
    widths = "-".join(str(width * 2**i) for i in range(stages))
    description = (
        f"ResNet-18-shaped CNN ({stages} stages of 2 basic blocks, widths {widths}, GroupNorm), "
        f"{size}x{size}x3 inputs, 10 classes, batch {batch}"
    )
    batch_arrays = (jnp.asarray(images), jnp.asarray(labels))
    return ModelSpec("cnn", description, ResNet18(width, stages), batch_arrays)


def make_lm(quick: bool) -> ModelSpec:
    layers, d_model, heads, seq, vocab, batch = (
        (1, 32, 2, 16, 128, 4) if quick else (4, 256, 4, 128, 1024, 8)
    )
    rng = np.random.default_rng(SEED)
    tokens = rng.integers(0, vocab, (batch, seq + 1))
    description = (
        f"decoder-only transformer LM ({layers} layers, d_model {d_model}, {heads} heads, "
        f"causal), sequence {seq}, vocabulary {vocab}, batch {batch}"
    )
    # next-token prediction: the targets are the inputs shifted by one
    batch_arrays = (jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:]))
    return ModelSpec("lm", description, DecoderLM(vocab, d_model, heads, layers), batch_arrays)


MODELS: dict[str, Callable[[bool], ModelSpec]] = {"cnn": make_cnn, "lm": make_lm}
# Timed rounds in full mode, sized to each step's cost to keep the run near 7 minutes on
# 2 shared cores; 6 is the fewest that give the median a 95% interval.
MODEL_ROUNDS = {"cnn": 6, "lm": 10}


def tree_bytes(tree: Any) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------
# The compiled training step.
# ----------------------------------------------------------------------------


def train_step_fn(spec: ModelSpec, tx: optax.GradientTransformation) -> Callable:
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(spec.loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


class TrainStep(Candidate):
    """One model's training step with one optimizer, on its own params and state."""

    def __init__(
        self, name: str, spec: ModelSpec, tx: optax.GradientTransformation, options: dict | None
    ):
        self.name = name
        self.batch = spec.batch
        self.params = jax.device_put(spec.host_params)  # a fresh buffer per leaf (donated)
        self.opt_state = tx.init(self.params)
        # A fresh jax.jit per candidate: nothing is shared with another candidate's compile.
        jitted = jax.jit(train_step_fn(spec, tx), donate_argnums=(0, 1))
        args = (self.params, self.opt_state, self.batch)
        self.compiled = compile_step(jitted, args, K, compiler_options=options)
        self.loss = math.nan

    def run(self, n: int) -> None:
        params, opt_state, step = self.params, self.opt_state, self.compiled.executable
        for _ in range(n):
            params, opt_state, loss = step(params, opt_state, self.batch)
        jax.block_until_ready((params, opt_state))
        self.params, self.opt_state, self.loss = params, opt_state, float(loss)

    def close(self) -> None:
        for leaf in jax.tree.leaves((self.params, self.opt_state)):
            with contextlib.suppress(Exception):
                leaf.delete()
        self.params = self.opt_state = None


# ----------------------------------------------------------------------------
# Measuring a (model, inner optimizer) pair.
# ----------------------------------------------------------------------------


def median_interval(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """A >= 95% interval of the median of a/b per round, or None under 6 rounds.

    Distribution-free (the rounds' noise is anything but normal): the k-th
    smallest and k-th largest ratio, for the largest k with
    2 P(Binomial(n, 1/2) < k) <= 0.05.
    """
    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    n, k = len(ratios), 0
    while 2 * sum(math.comb(n, i) for i in range(k + 1)) <= 0.05 * 2**n:
        k += 1
    return (ratios[k - 1], ratios[n - k]) if k else None


def settles(interval: tuple[float, float] | None) -> bool:
    """Whether the interval lies on one side of the goal (a verdict, not noise)."""
    return interval is not None and not interval[0] <= GOAL < interval[1]


def interval_text(interval: tuple[float, float] | None) -> str:
    return "{:.3f}-{:.3f}".format(*interval) if interval else "-"


@dataclasses.dataclass
class PairResult:
    model: ModelSpec
    inner: str
    params_bytes: int
    timings: dict[str, Timing]
    steps: dict[str, CompiledStep]
    losses: dict[str, float]  # after the timed steps: finite if the step did real work

    def ms(self, name: str) -> float:
        return statistics.median(self.timings[name].wall) * 1e3

    @property
    def ratio(self) -> float:
        return paired_ratio(self.timings[LOOKAHEAD].wall, self.timings[PLAIN].wall)

    @property
    def cpu_ratio(self) -> float:
        return paired_ratio(self.timings[LOOKAHEAD].cpu, self.timings[PLAIN].cpu)

    @property
    def interval(self) -> tuple[float, float] | None:
        return median_interval(self.timings[LOOKAHEAD].wall, self.timings[PLAIN].wall)

    @property
    def cpu_interval(self) -> tuple[float, float] | None:
        return median_interval(self.timings[LOOKAHEAD].cpu, self.timings[PLAIN].cpu)

    @property
    def compile_ratio(self) -> float:
        return self.steps[LOOKAHEAD].compile_s / self.steps[PLAIN].compile_s

    @property
    def bytes_ratio(self) -> float:
        return self.steps[LOOKAHEAD].hlo.bytes_per_step / self.steps[PLAIN].hlo.bytes_per_step

    @property
    def temp_diff(self) -> int:
        return self.steps[LOOKAHEAD].temp_bytes - self.steps[PLAIN].temp_bytes


def progress(message: str) -> None:
    # stderr: a long run shows where it is, and --out keeps only the report
    print(message, file=sys.stderr, flush=True)


def measure_pair(
    spec: ModelSpec, inner_name: str, rounds: int, warmup: int, options: dict | None
) -> PairResult:
    inner = INNERS[inner_name]
    label = f"{spec.name} / {inner_name}"
    progress(f"{label}: compiling the two steps")
    candidates = [
        TrainStep(PLAIN, spec, inner(), options),
        TrainStep(LOOKAHEAD, spec, lookahead(inner()), options),
    ]
    progress(f"{label}: timing {warmup} warm-up + {rounds} rounds of {K} steps each")
    timings = time_set(candidates, rounds, warmup, K)
    result = PairResult(
        model=spec,
        inner=inner_name,
        params_bytes=tree_bytes(candidates[0].params),
        timings=timings,
        steps={c.name: c.compiled for c in candidates},
        losses={c.name: c.loss for c in candidates},
    )
    for c in candidates:
        c.close()
    gc.collect()
    return result


# ----------------------------------------------------------------------------
# Reporting.
# ----------------------------------------------------------------------------


def mb(n: float) -> str:
    return fmt(n / 1e6, 1)


def print_step_table(results: list[PairResult]) -> None:
    print(f"## Step time: Lookahead / plain, whole training step (goal <= {GOAL})\n")
    headers = [
        "model", "inner", "plain ms/step", "lookahead ms/step", "lookahead/plain",
        "95% interval", "cpu l/p", "cpu 95% interval", "MB/step l/p", "compile l/p",
        "temp l - p MB",
    ]  # fmt: skip
    rows = [
        [
            r.model.name,
            r.inner,
            fmt(r.ms(PLAIN)),
            fmt(r.ms(LOOKAHEAD)),
            fmt(r.ratio, 3),
            interval_text(r.interval),
            fmt(r.cpu_ratio, 3),
            interval_text(r.cpu_interval),
            fmt(r.bytes_ratio, 3),
            fmt(r.compile_ratio),
            mb(r.temp_diff),
        ]
        for r in results
    ]
    print_table(headers, rows)


def print_compile_table(results: list[PairResult]) -> None:
    print("## Compile time (a fresh jax.jit each: trace+lower wall s + compile CPU s)\n")
    headers = [
        "model", "inner", "plain s", "lookahead s", "lookahead/plain",
        "plain trace+lower", "plain compile", "lookahead trace+lower", "lookahead compile",
    ]  # fmt: skip
    rows = []
    for r in results:
        p, la = r.steps[PLAIN], r.steps[LOOKAHEAD]
        rows.append(
            [
                r.model.name,
                r.inner,
                fmt(p.compile_s),
                fmt(la.compile_s),
                fmt(r.compile_ratio),
                fmt(p.trace_lower_s),
                fmt(p.compile_cpu_s),
                fmt(la.trace_lower_s),
                fmt(la.compile_cpu_s),
            ]
        )
    print_table(headers, rows)


def print_memory_table(results: list[PairResult]) -> None:
    print("## Compiled memory (memory_analysis(), MB) and bytes moved per step\n")
    headers = [
        "model", "inner", "step", "params MB", "argument", "output", "alias", "temp",
        "temp - plain", "(params)", "MB/step (HLO)", "loss at end",
    ]  # fmt: skip
    rows = []
    for r in results:
        plain = r.steps[PLAIN]
        for name in (PLAIN, LOOKAHEAD):
            s = r.steps[name]
            rows.append(
                [
                    r.model.name,
                    r.inner,
                    name,
                    mb(r.params_bytes),
                    mb(s.argument_bytes),
                    mb(s.output_bytes),
                    mb(s.alias_bytes),
                    mb(s.temp_bytes),
                    mb(s.temp_bytes - plain.temp_bytes),
                    fmt(extra_temp_in_params(s, plain, r.params_bytes)),
                    mb(s.hlo.bytes_per_step),
                    fmt(r.losses[name], 3),
                ]
            )
    print_table(headers, rows)


def print_goal(results: list[PairResult]) -> None:
    worst = max(results, key=lambda r: r.ratio)
    status = "met" if worst.ratio <= GOAL else "NOT met"
    # A median on the wrong side of the goal whose interval spans it is noise, not a verdict.
    settled = sum(settles(r.interval) for r in results)
    cpu_met = sum(settles(r.cpu_interval) and r.cpu_interval[1] <= GOAL for r in results)
    print(
        f"goal (docs/design.md): whole training step Lookahead / plain <= {GOAL}: "
        f"{status} (worst median {worst.ratio:.3f}: {worst.model.name} / {worst.inner}); "
        f"the 95% interval settles it for {settled} of {len(results)} pairs; in process CPU "
        f"time (less disturbed by other processes) it is met with 95% confidence for "
        f"{cpu_met} of {len(results)}\n"
    )


def print_report(results: list[PairResult], specs: list[ModelSpec]) -> None:
    print("## Models\n")
    for spec in specs:
        r = next(r for r in results if r.model is spec)
        floats = r.params_bytes // 4
        leaves = len(jax.tree.leaves(spec.host_params))
        print(f"- {spec.name}: {spec.description}; {floats:,} float32 params in {leaves} leaves")
    print()
    print_step_table(results)
    print_compile_table(results)
    print_memory_table(results)
    print_goal(results)


# ----------------------------------------------------------------------------
# Main.
# ----------------------------------------------------------------------------


class Tee:
    """A stdout that also writes to a file (--out)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def warm_up_xla() -> None:
    # The first XLA compilation in a process pays one-off set-up costs: pay them
    # here, so that no candidate's compile time includes them.
    x = jnp.zeros((8, 8))
    jax.jit(lambda a: jnp.tanh(a @ a).sum()).lower(x).compile()


def warm_up_tracing(spec: ModelSpec) -> None:
    # The first trace of a model in a process pays one-off Python costs (Flax's
    # module set-up, JAX's lowering rules): pay them here, not in the compile
    # time of whichever candidate comes first.
    tx = optax.sgd(0.1)
    params = spec.host_params
    jax.jit(train_step_fn(spec, tx)).trace(params, tx.init(params), spec.batch).lower()


def run(args: argparse.Namespace, argv: list[str]) -> None:
    start = time.perf_counter()
    print("# lookax whole-training-step benchmark\n")
    print(f"command: python benchmarks/train_step.py {' '.join(argv)}".rstrip())
    options = QUICK_COMPILER_OPTIONS if args.quick else None
    names = args.models.split(",")
    rounds = {name: args.rounds or (2 if args.quick else MODEL_ROUNDS[name]) for name in names}
    print(
        f"settings: lookax.lookahead(inner, sync_period={K}, slow_step_size={ALPHA}); "
        f"timed rounds {', '.join(f'{n} {r}' for n, r in rounds.items())}, after "
        f"{args.warmup} warm-up round(s); each sample = {K} steps; "
        f"compiler options {options or 'default'}\n"
    )
    describe_machine("not used by this benchmark")
    warm_up_xla()
    specs = [MODELS[name](args.quick) for name in names]
    results = []
    for spec in specs:
        warm_up_tracing(spec)
        for inner_name in INNERS:
            results.append(measure_pair(spec, inner_name, rounds[spec.name], args.warmup, options))
    print_report(results, specs)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"total run time: {time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, under a minute")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"timed rounds per pair (default: 2 quick, {MODEL_ROUNDS} full; 6 or more "
        "give the median a 95%% interval)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="warm-up rounds per pair")
    parser.add_argument("--models", default="cnn,lm", help="comma-separated: cnn, lm")
    parser.add_argument("--out", default=None, help="also write the output to this file")
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    if args.out is None:
        run(args, argv)
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as out, contextlib.redirect_stdout(Tee(sys.stdout, out)):
        run(args, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
