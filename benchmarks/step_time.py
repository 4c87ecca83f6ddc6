#!/usr/bin/env python
"""Step time, compile time and compiled memory of lookax, against optax and PyTorch.

Usage::

    python benchmarks/step_time.py            # the full run (about 10-15 minutes on 2 cores)
    python benchmarks/step_time.py --quick    # tiny trees, a few minutes
    python benchmarks/step_time.py --only-outer --no-torch  # the outer-path set alone

Each candidate is a jitted training-step-shaped function whose params and
optimizer state are donated::

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

run on three parameter trees (the goals in docs/design.md): one 32M-float leaf, the
161 leaves / 25.6M floats of ResNet-50, and 2000 small leaves / 2M floats. The
gradients are a fixed input (not donated), so every candidate sees the same
numbers. Absolute times on a shared machine drift, so candidates that are
compared run in one set, interleaved round-robin (forward, then backward), each
sample being ``K = 5`` consecutive steps (one Lookahead sync period); warm-up
rounds are dropped and every ratio is the median over rounds of the ratio
measured side by side in that round. Beside each time: the bytes the step
moves (XLA's ``cost_analysis()``; for a ``lax.cond`` XLA counts the heavier
branch, so the per-step figure below weights the sync branch by 1/K), the
achieved GB/s and its share of this machine's bandwidth, measured in the same
set by a donated jitted axpy; the minor page faults per step (a fresh
temporary buffer costs one per 4 KiB page on every step); process CPU time per
step (less sensitive to other processes than wall time); and, per candidate,
``memory_analysis()``, the trace/lower/compile times and the kernels of the
compiled HLO, all of them and the distinct ones (kernels that differ only in
names are compiled once, so compile time follows the distinct count).

The ``instep`` set times the same Lookahead/Adam pair with the gradients made
inside the step (written to a fresh buffer, as a backward pass writes them):
there they die inside the step and their buffer can take the updates, which a
gradients-as-input step cannot offer.

The ``outer`` set (``--only-outer`` runs it alone, on the two large trees) times
the outer path of ``lookax.lookahead(optax.adam, 16, outer=SGD 0.7 / momentum
0.9)``, Nesterov (DiLoCo's outer step) or heavy-ball, on one replica: the exact
step (``sync_delay=0``), the overlapped one (``sync_delay=1``; with
``drop_nonfinite=False``; with ``communication_dtype=bfloat16``) and, where the
tree has enough leaves, ``fragments=4`` and ``16``, beside optax.adam and
Lookahead(Adam) k=16, with the gradients as input and made in the step. Its sync
period is 16 (divisible by the fragment counts, which K = 5 is not) and each of its
samples is 16 steps, one period.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

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

import lookax  # noqa: E402
from lookax.grouping import grouped  # noqa: E402

K = 5  # Lookahead's sync period, and the number of steps in one timed sample.
ALPHA = 0.5
PARAM_VALUE = 0.01
SEED = 0
BANDWIDTH_FLOATS = 32_000_000


# ----------------------------------------------------------------------------
# Trees.
# ----------------------------------------------------------------------------


def resnet50_shapes(width_div: int = 1, stages: int = 4) -> list[tuple[str, tuple[int, ...]]]:
    """ResNet-50's trainable parameters (Flax layout: HWIO convs, BN scale/bias, fc).

    Stem 7x7 conv + BN; bottleneck stages of [3, 4, 6, 3] blocks with widths
    64/128/256/512 (1x1, 3x3, 1x1 x4 convs, each with BN; a 1x1 projection on
    each stage's first block); a 2048 x 1000 classifier. 161 leaves, 25,557,032
    floats at full width.
    """

    def c(n: int) -> int:
        return max(1, n // width_div)

    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("stem/conv", (7, 7, 3, c(64))),
        ("stem/bn/scale", (c(64),)),
        ("stem/bn/bias", (c(64),)),
    ]
    cin = c(64)
    for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)][:stages]):
        w = c(width)
        for block in range(blocks):
            prefix = f"stage{stage + 1}/block{block + 1}"
            convs = [
                ("conv1", (1, 1, cin, w)),
                ("conv2", (3, 3, w, w)),
                ("conv3", (1, 1, w, 4 * w)),
            ]
            if block == 0:
                convs.append(("downsample", (1, 1, cin, 4 * w)))
            for name, shape in convs:
                shapes.append((f"{prefix}/{name}", shape))
                shapes.append((f"{prefix}/{name}_bn/scale", (shape[-1],)))
                shapes.append((f"{prefix}/{name}_bn/bias", (shape[-1],)))
            cin = 4 * w
    if stages == 4:
        shapes += [("fc/kernel", (cin, 1000)), ("fc/bias", (1000,))]
    return shapes


def small_leaf_shapes(count: int, size: int) -> list[tuple[str, tuple[int, ...]]]:
    """``count`` leaves of ``size`` floats each, in a few different shapes."""
    layouts = [(size,), (10, size // 10), (size // 40, 40), (2, 5, size // 10)]
    return [(f"layer{i:04d}", layouts[i % len(layouts)]) for i in range(count)]


@dataclasses.dataclass
class Tree:
    name: str
    shapes: list[tuple[str, tuple[int, ...]]]
    large: bool  # one of the trees the <= 1.15 bound is about
    extras: bool = True  # time the optimizer pairs on it

    @property
    def floats(self) -> int:
        return sum(int(np.prod(s)) for _, s in self.shapes)

    def describe(self) -> str:
        return f"{self.name}: {len(self.shapes)} leaves, {self.floats:,} float32"


def make_trees(quick: bool) -> list[Tree]:
    if quick:
        return [
            Tree("one leaf (quick)", [("w", (1_000_000,))], True),
            Tree("ResNet-50 stem /8 (quick)", resnet50_shapes(8, stages=1)[:9], True, False),
            Tree("small leaves (quick)", small_leaf_shapes(48, 400), False, False),
        ]
    return [
        Tree("one 32M leaf", [("w", (32_000_000,))], True),
        Tree("ResNet-50", resnet50_shapes(), True),
        Tree("2000 small leaves", small_leaf_shapes(2000, 1000), False),
    ]


def tree_arrays(
    tree: Tree, value: float | None = None, seed: int = SEED, dtype: Any = jnp.float32
) -> dict[str, jax.Array]:
    """Fresh device arrays: a constant, or (value None) seeded normals * 1e-3."""
    if value is not None:
        return {name: jnp.full(shape, value, dtype) for name, shape in tree.shapes}
    rng = np.random.default_rng(seed)
    return {
        name: jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * 1e-3, dtype)
        for name, shape in tree.shapes
    }


# ----------------------------------------------------------------------------
# Candidates.
# ----------------------------------------------------------------------------


def _step_fn(tx: optax.GradientTransformation, grads_in_step: bool = False) -> Callable:
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def step_making_grads(params, state, data):
        # A stand-in for backprop: the gradients are computed inside the step into a
        # fresh buffer, as a backward pass writes them, and die there. A cond on a
        # runtime value keeps XLA from fusing their producer into the optimizer's
        # kernels (a real backward pass ends in dots and convolutions, which do not
        # fuse either); both branches give ``data / 2``, bit for bit.
        first = jax.tree.leaves(data)[0].reshape(-1)[0]
        grads = jax.lax.cond(
            jnp.isfinite(first),
            lambda d: jax.tree.map(lambda x: x * 0.5, d),
            lambda d: jax.tree.map(lambda x: x / 2.0, d),
            data,
        )
        return step(params, state, grads)

    return step_making_grads if grads_in_step else step


class JaxCandidate(Candidate):
    def __init__(
        self,
        name: str,
        tx_fn: Callable[[], optax.GradientTransformation],
        tree: Tree,
        grads: Any,
        *,
        sync_period: int | None = None,
        lookahead_params: bool = False,
        grads_in_step: bool = False,
        cache: dict[str, CompiledStep] | None = None,
    ):
        self.name = name
        self.grads = grads
        tx = tx_fn()
        params = tree_arrays(tree, PARAM_VALUE, dtype=jax.tree.leaves(grads)[0].dtype)
        if lookahead_params:  # optax.lookahead's LookaheadParams(fast, slow), no aliasing
            params = optax.LookaheadParams(fast=params, slow=tree_arrays(tree, PARAM_VALUE))
        self.state = tx.init(params)
        self.params = params
        if cache is not None and name in cache:
            self.compiled = cache[name]
            return
        jitted = jax.jit(_step_fn(tx, grads_in_step), donate_argnums=(0, 1), keep_unused=True)
        self.compiled = compile_step(jitted, (self.params, self.state, grads), sync_period)
        if cache is not None:
            cache[name] = self.compiled

    def run(self, n: int) -> None:
        params, state, step = self.params, self.state, self.compiled.executable
        for _ in range(n):
            params, state = step(params, state, self.grads)
        jax.block_until_ready((params, state))
        self.params, self.state = params, state

    def close(self) -> None:
        for leaf in jax.tree.leaves((self.params, self.state)):
            with contextlib.suppress(Exception):
                leaf.delete()
        self.params = self.state = None


class AxpyCandidate(Candidate):
    """``y <- a x + y`` on a donated float32 vector: this machine's streaming bandwidth."""

    def __init__(self, floats: int):
        self.name = f"axpy ({floats / 1e6:.0f}M floats, bandwidth)"
        self.bytes = 3 * 4 * floats
        self.x = jnp.full((floats,), 1e-3, jnp.float32)
        self.y = jnp.zeros((floats,), jnp.float32)
        self.fn = (
            jax.jit(lambda y, x: 0.5 * x + y, donate_argnums=0).lower(self.y, self.x).compile()
        )

    def run(self, n: int) -> None:
        y = self.y
        for _ in range(n):
            y = self.fn(y, self.x)
        y.block_until_ready()
        self.y = y

    def close(self) -> None:
        self.x.delete()
        self.y.delete()


class TorchAdam(Candidate):
    """``torch.optim.Adam(fused=True)``, optionally inside a plain Lookahead (Algorithm 1)."""

    def __init__(self, tree: Tree, grads: Any, lookahead: bool):
        import torch

        self.torch = torch
        self.name = "torch Lookahead(Adam fused)" if lookahead else "torch Adam(fused=True)"
        self.params = [torch.full(shape, PARAM_VALUE) for _, shape in tree.shapes]
        for p, (name, _) in zip(self.params, tree.shapes, strict=True):
            p.grad = torch.from_numpy(np.array(grads[name]))
        self.opt = torch.optim.Adam(self.params, lr=1e-3, fused=True)
        self.lookahead = lookahead
        self.slow = [p.detach().clone() for p in self.params] if lookahead else []
        self.steps = 0

    def run(self, n: int) -> None:
        torch = self.torch
        for _ in range(n):
            self.opt.step()
            self.steps += 1
            if self.lookahead and self.steps % K == 0:
                with torch.no_grad():  # Algorithm 1: slow += alpha (fast - slow); fast = slow
                    torch._foreach_lerp_(self.slow, self.params, ALPHA)
                    torch._foreach_copy_(self.params, self.slow)


# ----------------------------------------------------------------------------
# Reporting.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class SetResult:
    tree: Tree
    title: str
    candidates: list[Candidate]
    timings: dict[str, Timing]
    reference: str
    bandwidth: float | None  # bytes/s from the set's axpy

    @property
    def compiled(self) -> dict[str, CompiledStep]:
        """The compiled step of each candidate that has one, by name."""
        return {c.name: c.compiled for c in self.candidates if c.compiled is not None}


COMPILED_HEADERS = [
    "candidate", "trace+lower s", "compile s (cpu)", "x ref (cpu)", "compile s (wall)",
    "kernels", "distinct kernels", "copies", "conds", "arg MB", "out MB", "alias MB",
    "temp MB",
    "temp - ref (params)", "cost_analysis MB",
]  # fmt: skip


def report_set(res: SetResult) -> None:
    """The set's timing table and, for its compiled candidates, their compile/memory table."""
    print(f"### {res.tree.name} -- {res.title}")
    if res.bandwidth:
        print(f"axpy bandwidth in this set: {res.bandwidth / 1e9:.1f} GB/s")
    headers = [
        "candidate", "ms/step", f"x {res.reference}", "cpu ms/step", "x (cpu)",
        "MB/step", "GB/s", "% axpy", "faults/step",
    ]  # fmt: skip
    print_table(headers, [timing_row(res, c) for c in res.candidates])
    compiled = [c for c in res.candidates if c.compiled is not None]
    if not compiled:
        return
    ref = res.compiled.get(res.reference)
    print_table(COMPILED_HEADERS, [compiled_row(c, ref, 4 * res.tree.floats) for c in compiled])


def timing_row(res: SetResult, c: Candidate) -> list[str]:
    """Time per step (and its ratio to the reference's), bytes moved, bandwidth, page faults."""
    t, ref = res.timings[c.name], res.timings[res.reference]
    wall, cpu = statistics.median(t.wall), statistics.median(t.cpu)
    if c.compiled is not None:
        step_bytes = c.compiled.hlo.bytes_per_step
        mb, gbs = fmt(step_bytes / 1e6, 1), fmt(step_bytes / wall / 1e9, 1)
        share = fmt(100 * step_bytes / wall / res.bandwidth, 0) if res.bandwidth else "-"
    elif isinstance(c, AxpyCandidate):
        mb, gbs, share = fmt(c.bytes / 1e6, 1), fmt(c.bytes / wall / 1e9, 1), "100"
    else:
        mb = gbs = share = "-"
    return [
        c.name,
        fmt(wall * 1e3),
        fmt(paired_ratio(t.wall, ref.wall)),
        fmt(cpu * 1e3),
        fmt(paired_ratio(t.cpu, ref.cpu)),
        mb,
        gbs,
        share,
        fmt(statistics.median(t.faults), 0),
    ]


def compiled_row(c: Candidate, ref: CompiledStep | None, params_bytes: int) -> list[str]:
    """Compile times, kernels, conditionals and memory_analysis() of one compiled candidate."""
    m = c.compiled
    return [
        c.name,
        fmt(m.trace_lower_s),
        fmt(m.compile_cpu_s),
        fmt(m.compile_cpu_s / ref.compile_cpu_s) if ref else "-",
        fmt(m.compile_wall_s),
        str(m.hlo.kernels),
        str(m.hlo.distinct_kernels),
        str(m.hlo.copies),
        str(m.hlo.conditionals),
        fmt(m.argument_bytes / 1e6, 1),
        fmt(m.output_bytes / 1e6, 1),
        fmt(m.alias_bytes / 1e6, 1),
        fmt(m.temp_bytes / 1e6, 1),
        fmt(extra_temp_in_params(m, ref, params_bytes)) if ref else "-",
        fmt(m.hlo.cost_analysis_bytes / 1e6, 1),
    ]


# The sets.
# ----------------------------------------------------------------------------

ADAM = "optax.adam"
LOOKAX_LA = "lookax.lookahead(optax.adam)"
OPTAX_LA = "optax.lookahead(optax.adam)"
GROUPED_ADAM = "lookax.grouped(optax.adam)"
GROUPED_LA = "lookax.grouped(lookax.lookahead(optax.adam))"
OPTAX_FLAT = "optax.flatten(optax.adam)"
PLAIN_SGD = "optax.sgd (p - lr g: one kernel, 3 arrays per leaf)"
LOOKAX_ADAM = "lookax.adam"
RANGER = "lookax.ranger"
RANGER_INNER = "chain(centralize_gradients, lookax.radam)"
WIDE_LA = "lookax.lookahead(optax.adam, slow_dtype=float32)"
OUTER_LA = "lookax.lookahead(optax.adam, outer=Nesterov 0.7/0.9)"
BF16 = " [bf16 params]"
IN_STEP = " (grads made in the step)"
TORCH_ADAM = "torch Adam(fused=True)"
TORCH_LA = "torch Lookahead(Adam fused)"


def adam() -> optax.GradientTransformation:
    return optax.adam(1e-3)


def lookahead_adam() -> optax.GradientTransformation:
    return lookax.lookahead(adam(), K, ALPHA)


def outer_lookahead() -> optax.GradientTransformation:
    """DiLoCo's outer step (Nesterov 0.7/0.9) on one replica: the outer path's cost."""
    return lookax.lookahead(adam(), K, outer=lookax.sgd(0.7, momentum=0.9, nesterov=True))


# The outer-path set: every outer row at one sync period H, divisible by the fragment
# counts (K = 5 is not); each timed sample is H steps, one period, so every sample of
# every row holds the same syncs.
OUTER_H = 16
OUTER_FRAGMENTS = (4, 16)
LA_H = f"lookax.lookahead(optax.adam) k={OUTER_H}"
EXACT = "lookahead(adam, outer=Nesterov, sync_delay=0)"
DELAYED = "lookahead(adam, outer=Nesterov, sync_delay=1)"
DELAYED_KEEP_NAN = "lookahead(adam, outer=Nesterov, sync_delay=1, drop_nonfinite=False)"
DELAYED_BF16 = "lookahead(adam, outer=Nesterov, sync_delay=1, communication_dtype=bf16)"
HEAVY_EXACT = "lookahead(adam, outer=heavy-ball, sync_delay=0)"
HEAVY_DELAYED = "lookahead(adam, outer=heavy-ball, sync_delay=1)"


def fragments_name(fragments: int) -> str:
    return f"lookahead(adam, outer=Nesterov, sync_delay=1, fragments={fragments})"


def outer_path(heavy_ball: bool = False, **options: Any) -> Callable[[], Any]:
    """``lookax.lookahead(adam, OUTER_H, outer=SGD 0.7 / momentum 0.9)`` with ``options``.

    Nesterov momentum (DiLoCo's outer step) or heavy-ball momentum (SlowMo's kind).
    """

    def make() -> optax.GradientTransformation:
        outer = lookax.sgd(0.7, momentum=0.9, nesterov=not heavy_ball)
        return lookax.lookahead(adam(), OUTER_H, outer=outer, **options)

    return make


def outer_rows(tree: Tree) -> tuple[list[tuple[str, Callable[[], Any]]], list[str]]:
    """The outer-path set's (name, transformation) rows on ``tree``, and notes on skips."""
    rows: list[tuple[str, Callable[[], Any]]] = [
        (LA_H, lambda: lookax.lookahead(adam(), OUTER_H, ALPHA)),
        (EXACT, outer_path()),
        (DELAYED, outer_path(sync_delay=1)),
        (DELAYED_KEEP_NAN, outer_path(sync_delay=1, drop_nonfinite=False)),
        (DELAYED_BF16, outer_path(sync_delay=1, communication_dtype=jnp.bfloat16)),
        (HEAVY_EXACT, outer_path(heavy_ball=True)),
        (HEAVY_DELAYED, outer_path(heavy_ball=True, sync_delay=1)),
    ]
    notes = []
    for fragments in OUTER_FRAGMENTS:
        if fragments <= len(tree.shapes):
            rows.append((fragments_name(fragments), outer_path(sync_delay=1, fragments=fragments)))
        else:
            notes.append(
                f"fragments={fragments}: skipped, the tree has {len(tree.shapes)} leaves "
                "(a fragment needs at least one)"
            )
    return rows, notes


def ranger_inner() -> optax.GradientTransformation:
    """What lookax.ranger runs Lookahead over (its docstring spells it out)."""
    return optax.chain(
        lookax.centralize_gradients(),
        lookax.radam(1e-3, b1=0.95, eps=1e-5, decoupled_weight_decay=True),
    )


def temp_in_params(res: SetResult, name: str, reference: str, itemsize: int = 4) -> float:
    """Compiled temp of ``name`` minus ``reference``'s, in params-sized buffers."""
    compiled = res.compiled
    return extra_temp_in_params(compiled[name], compiled[reference], itemsize * res.tree.floats)


def lookahead_goals(tree: Tree, res: SetResult) -> list[list[str]]:
    """The design's Lookahead goals (docs/design.md), as measured in the set ``res``."""
    t = res.timings
    adam_c, la_c = res.compiled[ADAM], res.compiled[LOOKAX_LA]
    la_ratio = paired_ratio(t[LOOKAX_LA].wall, t[ADAM].wall)
    la_cpu = paired_ratio(t[LOOKAX_LA].cpu, t[ADAM].cpu)
    opt_ratio = paired_ratio(t[OPTAX_LA].wall, t[ADAM].wall)
    bound = 1.15 if tree.large else 1.3
    stretch = (
        " (stretch 1.10: " + ("met)" if la_ratio <= 1.10 else "not met)") if tree.large else ""
    )
    extra = temp_in_params(res, LOOKAX_LA, ADAM)
    compile_ratio = la_c.compile_s / adam_c.compile_s
    goals = [
        [
            tree.name,
            f"lookahead(adam)/adam step time <= {bound}",
            f"{la_ratio:.2f} wall, {la_cpu:.2f} cpu (optax.lookahead {opt_ratio:.2f}); bytes "
            f"{la_c.hlo.bytes_per_step / adam_c.hlo.bytes_per_step:.2f}",
            ("met" if la_ratio <= bound else "NOT met") + stretch,
        ],
        [
            tree.name,
            "lookahead temp == adam temp",
            f"{extra:+.4f} params buffers ({la_c.temp_bytes - adam_c.temp_bytes:+d} bytes)",
            "met" if abs(la_c.temp_bytes - adam_c.temp_bytes) <= 16384 else "NOT met",
        ],
        [
            tree.name,
            "lookahead(adam) compile <= 1.3x adam's",
            f"{compile_ratio:.2f}x (trace+lower+compile cpu: {la_c.compile_s:.2f} s vs "
            f"{adam_c.compile_s:.2f} s; distinct kernels "
            f"{la_c.hlo.distinct_kernels} vs {adam_c.hlo.distinct_kernels})",
            "met" if compile_ratio <= 1.3 else "NOT met",
        ],
    ]
    if OUTER_LA in t:
        goals.append(
            [
                tree.name,
                "(outer path) lookahead(adam, outer=...) / adam, gradients as input",
                f"{paired_ratio(t[OUTER_LA].wall, t[ADAM].wall):.2f} wall; temp "
                f"{temp_in_params(res, OUTER_LA, ADAM):+.3f} params",
                "measured",
            ]
        )
    if RANGER in t:
        ranger_ratio = paired_ratio(t[RANGER].wall, t[RANGER_INNER].wall)
        goals.append(
            [
                tree.name,
                "(Ranger) lookax.ranger / its inner chain(GC, radam)",
                f"{ranger_ratio:.2f} wall; temp "
                f"{temp_in_params(res, RANGER, RANGER_INNER):+.3f} params",
                "measured",
            ]
        )
    return goals


def outer_goals(tree: Tree, res: SetResult, suffix: str) -> list[list[str]]:
    """The outer path's goals in the set ``res`` (row names end in ``suffix``)."""
    t = res.timings
    compiled = res.compiled
    ref = ADAM + suffix
    where = "gradients made in the step" if suffix else "gradients as input"
    slack = 16384  # bytes: scalars and the small all-reduce fingerprint, not a buffer

    def ratio(name: str) -> float:
        """The larger of the wall and cpu ratios: on a loaded machine either can dip."""
        wall = paired_ratio(t[name + suffix].wall, t[ref].wall)
        return max(wall, paired_ratio(t[name + suffix].cpu, t[ref].cpu))

    def ratios(name: str) -> str:
        wall = paired_ratio(t[name + suffix].wall, t[ref].wall)
        return f"{wall:.2f} wall / {paired_ratio(t[name + suffix].cpu, t[ref].cpu):.2f} cpu"

    def extra(name: str) -> int:
        return compiled[name + suffix].temp_bytes - compiled[ref].temp_bytes

    def temp(name: str) -> str:
        return f"{temp_in_params(res, name + suffix, ref):+.3f}"

    params_bytes = 4 * tree.floats
    delayed = [(DELAYED, "default"), (DELAYED_KEEP_NAN, "drop_nonfinite=False")]
    delayed.append((DELAYED_BF16, "communication_dtype=bf16"))
    goals = [
        [
            tree.name,
            f"(outer, H={OUTER_H}, {where}) sync_delay=1 (Nesterov) / adam <= 1.20 (wall and "
            "cpu), temp = adam's + at most one params buffer in the sync branch",
            "; ".join(f"{label} {ratios(n)}, temp {temp(n)} params" for n, label in delayed),
            status(all(ratio(n) <= 1.20 and extra(n) <= params_bytes + slack for n, _ in delayed)),
        ],
        [
            tree.name,
            f"(outer, H={OUTER_H}, {where}) heavy-ball sync_delay=1 temp == adam's",
            f"{temp(HEAVY_DELAYED)} params ({extra(HEAVY_DELAYED):+d} bytes); "
            f"{ratios(HEAVY_DELAYED)}",
            status(abs(extra(HEAVY_DELAYED)) <= slack),
        ],
        [
            tree.name,
            f"(outer, H={OUTER_H}, {where}) exact path (sync_delay=0) temp <= adam's + 1 params "
            "buffer",
            f"Nesterov {temp(EXACT)} params ({ratios(EXACT)}); heavy-ball "
            f"{temp(HEAVY_EXACT)} params ({ratios(HEAVY_EXACT)})",
            status(all(extra(n) <= params_bytes + slack for n in (EXACT, HEAVY_EXACT))),
        ],
    ]
    fragments = [f for f in OUTER_FRAGMENTS if fragments_name(f) + suffix in t]
    if fragments:
        skipped = [f for f in OUTER_FRAGMENTS if f not in fragments]
        goals.append(
            [
                tree.name,
                f"(outer, H={OUTER_H}, {where}) fragments F={','.join(map(str, fragments))} "
                "step time within the F=1 row's goal (<= 1.20 wall and cpu)",
                f"F=1 {ratios(DELAYED)}; "
                + "; ".join(
                    f"F={f} {ratios(fragments_name(f))}, temp {temp(fragments_name(f))} params"
                    for f in fragments
                )
                + (f" (F={skipped}: fewer leaves than fragments)" if skipped else ""),
                status(all(ratio(fragments_name(f)) <= 1.20 for f in fragments)),
            ]
        )
    return goals


def status(met: bool) -> str:
    return "met" if met else "NOT met"


def pairs() -> dict[str, tuple[Callable, Callable]]:
    """Each lookax optimizer and its optax twin, configured to compute the same thing."""
    return {
        "sgd(momentum=0.9)": (
            lambda: optax.sgd(1e-2, momentum=0.9),
            lambda: lookax.sgd(1e-2, momentum=0.9),
        ),
        "adam": (lambda: optax.adam(1e-3), lambda: lookax.adam(1e-3)),
        "adamw(wd=1e-2)": (
            lambda: optax.adamw(1e-3, weight_decay=1e-2),
            lambda: lookax.adamw(1e-3, weight_decay=1e-2),
        ),
        "adadelta": (
            lambda: optax.adadelta(1.0, rho=0.9, eps=1e-6),
            lambda: lookax.adadelta(1.0, rho=0.9, eps=1e-6),
        ),
        "lion(wd=1e-2)": (
            lambda: optax.lion(1e-4, b1=0.9, b2=0.99, weight_decay=1e-2),
            lambda: lookax.lion(1e-4, b1=0.9, b2=0.99, weight_decay=1e-2),
        ),
        "rmsprop": (
            lambda: optax.rmsprop(1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False),
            lambda: lookax.rmsprop(1e-2, decay=0.99, eps=1e-8),
        ),
        "adagrad": (
            lambda: optax.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10),
            lambda: lookax.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10),
        ),
    }


@dataclasses.dataclass
class Config:
    quick: bool
    torch: bool
    rounds: int
    warmup: int
    sets: list[str]
    trees: list[str] | None
    pairs_on_small: bool
    only_outer: bool = False


# ----------------------------------------------------------------------------
# Running a tree's sets.
# ----------------------------------------------------------------------------


class TreeRun:
    """One tree's sets: its gradients, the goals they measure, the compiled steps they share.

    A candidate's compiled step is cached by name, so that a candidate timed in
    several sets (optax.adam, Lookahead(Adam)) is compiled, and its compile timed, once.
    """

    def __init__(self, tree: Tree, cfg: Config, goals: list[list[str]], torch_status: str):
        self.tree, self.cfg, self.goals, self.torch_status = tree, cfg, goals, torch_status
        self.grads = tree_arrays(tree)
        self.cache: dict[str, CompiledStep] = {}

    def candidate(self, name: str, tx_fn: Callable[[], Any], **kw: Any) -> JaxCandidate:
        """A candidate on the tree's gradients."""
        return JaxCandidate(name, tx_fn, self.tree, self.grads, cache=self.cache, **kw)

    def run_set(
        self,
        title: str,
        make_candidates: Callable[[], list[Candidate]],
        reference: str,
        steps: int = K,
    ) -> SetResult:
        """Times the candidates beside this machine's axpy and reports them; frees them."""
        bw_floats = 4_000_000 if self.cfg.quick else BANDWIDTH_FLOATS
        candidates = [AxpyCandidate(bw_floats), *make_candidates()]
        timings = time_set(candidates, self.cfg.rounds, self.cfg.warmup, steps)
        bandwidth = candidates[0].bytes / statistics.median(timings[candidates[0].name].wall)
        res = SetResult(self.tree, title, candidates, timings, reference, bandwidth)
        report_set(res)
        for c in candidates:
            c.close()
        gc.collect()
        return res

    def timed_pair(
        self, first: str, second: str, first_fn: Callable, second_fn: Callable
    ) -> tuple[dict[str, Timing], dict[str, CompiledStep]]:
        """Two candidates timed side by side (no axpy, no report), compiled in that order."""
        candidates = [self.candidate(first, first_fn), self.candidate(second, second_fn)]
        timings = time_set(candidates, self.cfg.rounds, self.cfg.warmup, K)
        compiled = {c.name: c.compiled for c in candidates}
        for c in candidates:
            c.close()
        gc.collect()
        return timings, compiled

    def close(self) -> None:
        for leaf in jax.tree.leaves(self.grads):
            leaf.delete()
        self.cache.clear()
        gc.collect()


def run_tree(tree: Tree, cfg: Config, goals: list[list[str]], torch_status: str) -> None:
    """Every set of ``cfg.sets`` that runs on ``tree``, in order; their goals into ``goals``."""
    print(f"## {tree.describe()}\n")
    run = TreeRun(tree, cfg, goals, torch_status)
    if "lookahead" in cfg.sets:
        lookahead_set(run)
    if "wide" in cfg.sets and tree.large:
        wide_set(run)
    if "instep" in cfg.sets and tree.large:
        instep_set(run)
    if "outer" in cfg.sets and tree.large:
        outer_sets(run)
    if "grouping" in cfg.sets:
        grouping_set(run)
    if "torch" in cfg.sets:
        torch_set(run)
    if "pairs" in cfg.sets and tree.extras:
        pairs_set(run)
    run.close()


def lookahead_set(run: TreeRun) -> None:
    """Lookahead(Adam) beside Adam and optax.lookahead; on a large tree, the outer path, Ranger."""
    jc = run.candidate

    def candidates() -> list[Candidate]:
        cands = [
            jc(ADAM, adam),
            jc(LOOKAX_LA, lookahead_adam, sync_period=K),
            jc(OPTAX_LA, lambda: optax.lookahead(adam(), K, ALPHA), lookahead_params=True),
        ]
        if run.tree.large:
            cands += [
                jc(OUTER_LA, outer_lookahead, sync_period=K),
                jc(RANGER_INNER, ranger_inner),
                jc(RANGER, lambda: lookax.ranger(1e-3, sync_period=K), sync_period=K),
            ]
        return cands

    res = run.run_set("Lookahead(Adam), k=5, alpha=0.5", candidates, ADAM)
    run.goals.extend(lookahead_goals(run.tree, res))


def wide_set(run: TreeRun) -> None:
    """bf16 params: Lookahead with slow weights in bf16, and in float32 (``slow_dtype``)."""
    tree = run.tree

    def candidates() -> list[Candidate]:
        bf16 = jax.tree.map(lambda g: g.astype(jnp.bfloat16), run.grads)
        wide = lambda: lookax.lookahead(adam(), K, ALPHA, slow_dtype=jnp.float32)  # noqa: E731
        return [
            JaxCandidate(ADAM + BF16, adam, tree, bf16),
            JaxCandidate(LOOKAX_LA + BF16, lookahead_adam, tree, bf16, sync_period=K),
            JaxCandidate(WIDE_LA + BF16, wide, tree, bf16, sync_period=K),
        ]

    res = run.run_set("bf16 params, float32 slow weights", candidates, ADAM + BF16)
    t = res.timings
    wide = paired_ratio(t[WIDE_LA + BF16].wall, t[ADAM + BF16].wall)
    same = paired_ratio(t[LOOKAX_LA + BF16].wall, t[ADAM + BF16].wall)
    run.goals.append(
        [
            tree.name,
            "(cost of slow_dtype=float32 over bf16 params) / adam",
            f"{wide:.2f} wall (same-dtype slow weights {same:.2f}); "
            f"temp +{temp_in_params(res, WIDE_LA + BF16, ADAM + BF16, 2):.2f} bf16 params",
            "measured",
        ]
    )


def instep_set(run: TreeRun) -> None:
    """Lookahead(Adam) and the outer path with the gradients made inside the step."""
    jc = run.candidate

    def candidates() -> list[Candidate]:
        return [
            jc(ADAM + IN_STEP, adam, grads_in_step=True),
            jc(LOOKAX_LA + IN_STEP, lookahead_adam, sync_period=K, grads_in_step=True),
            jc(
                OPTAX_LA + IN_STEP,
                lambda: optax.lookahead(adam(), K, ALPHA),
                lookahead_params=True,
                grads_in_step=True,
            ),
            jc(OUTER_LA + IN_STEP, outer_lookahead, sync_period=K, grads_in_step=True),
        ]

    title = "Lookahead(Adam) with the gradients made inside the step"
    res = run.run_set(title, candidates, ADAM + IN_STEP)
    run.goals.extend(instep_goals(run.tree, res))


def instep_goals(tree: Tree, res: SetResult) -> list[list[str]]:
    t = res.timings
    adam_c, la_c = res.compiled[ADAM + IN_STEP], res.compiled[LOOKAX_LA + IN_STEP]
    in_ratio = paired_ratio(t[LOOKAX_LA + IN_STEP].wall, t[ADAM + IN_STEP].wall)
    in_cpu = paired_ratio(t[LOOKAX_LA + IN_STEP].cpu, t[ADAM + IN_STEP].cpu)
    outer_ratio = paired_ratio(t[OUTER_LA + IN_STEP].wall, t[ADAM + IN_STEP].wall)
    return [
        [
            tree.name,
            "(shape check) the same, gradients made inside the step",
            f"{in_ratio:.2f} wall, {in_cpu:.2f} cpu; bytes "
            f"{la_c.hlo.bytes_per_step / adam_c.hlo.bytes_per_step:.2f}; temp "
            f"+{extra_temp_in_params(la_c, adam_c, 4 * tree.floats):.3f} params",
            "within 1.15" if in_ratio <= 1.15 else "above 1.15",
        ],
        [
            tree.name,
            "(outer path) lookahead(adam, outer=...) / adam, gradients made in the step",
            f"{outer_ratio:.2f} wall; temp "
            f"{temp_in_params(res, OUTER_LA + IN_STEP, ADAM + IN_STEP):+.3f} params",
            "measured",
        ],
    ]


def outer_sets(run: TreeRun) -> None:
    """The outer-path set, with the gradients as input and made in the step, and its goals."""
    rows, notes = outer_rows(run.tree)
    for suffix in ("", IN_STEP):

        def candidates(suffix: str = suffix) -> list[Candidate]:
            in_step = bool(suffix)
            cands = [run.candidate(ADAM + suffix, adam, grads_in_step=in_step)]
            for name, tx_fn in rows:
                cands.append(
                    run.candidate(name + suffix, tx_fn, sync_period=OUTER_H, grads_in_step=in_step)
                )
            return cands

        where = "gradients made in the step" if suffix else "gradients as input"
        print(
            f"outer path, {where}: sync period H={OUTER_H} for every row (K={K} is not "
            f"divisible by the fragment counts {OUTER_FRAGMENTS}), Lookahead(Adam) k={OUTER_H}"
            f" alpha={ALPHA}; outer SGD 0.7, momentum 0.9 (Nesterov or heavy-ball); each "
            f"sample = {OUTER_H} steps (one period); " + "; ".join(notes or ["no skips"])
        )
        title = f"outer path, H={OUTER_H} ({where})"
        res = run.run_set(title, candidates, ADAM + suffix, steps=OUTER_H)
        run.goals.extend(outer_goals(run.tree, res, suffix))


def grouping_set(run: TreeRun) -> None:
    """Leaf grouping (``lookax.grouped``, ``optax.flatten``) against the bytes floor."""
    jc = run.candidate

    def candidates() -> list[Candidate]:
        return [
            jc(ADAM, adam),
            jc(PLAIN_SGD, lambda: optax.sgd(1e-3)),
            jc(GROUPED_ADAM, lambda: grouped(adam())),
            jc(OPTAX_FLAT, lambda: optax.flatten(adam())),
            jc(LOOKAX_LA, lookahead_adam, sync_period=K),
            jc(GROUPED_LA, lambda: grouped(lookahead_adam()), sync_period=K),
        ]

    res = run.run_set("leaf grouping", candidates, ADAM)
    for name, floor_of in [
        (ADAM, ADAM),
        (GROUPED_ADAM, ADAM),
        (PLAIN_SGD, ADAM),
        (GROUPED_LA, LOOKAX_LA),
    ]:
        floor = res.compiled[floor_of].hlo.bytes_per_step / res.bandwidth
        print(
            f"{name}: {statistics.median(res.timings[name].wall) / floor:.1f}x the bytes floor "
            f"({floor_of}'s bytes at axpy bandwidth: {floor * 1e3:.2f} ms)"
        )
    print()
    if not run.tree.large:
        run.goals.extend(grouping_goals(run.tree, res))


def grouping_goals(tree: Tree, res: SetResult) -> list[list[str]]:
    """On the many-small-leaves tree: grouped(adam) near the bytes floor, and its compile."""
    t = res.timings
    floor_s = res.compiled[ADAM].hlo.bytes_per_step / res.bandwidth
    g_ratio = statistics.median(t[GROUPED_ADAM].wall) / floor_s
    ga, a = res.compiled[GROUPED_ADAM], res.compiled[ADAM]
    return [
        [
            tree.name,
            "grouped(adam) within 3x of the bytes floor",
            f"{g_ratio:.1f}x (optax.adam {statistics.median(t[ADAM].wall) / floor_s:.1f}x)",
            "met" if g_ratio <= 3.0 else "NOT met",
        ],
        [
            tree.name,
            "grouped(adam) compile <= optax.adam's",
            f"{ga.compile_s:.2f} s vs {a.compile_s:.2f} s",
            "met" if ga.compile_s <= a.compile_s else "NOT met",
        ],
    ]


def torch_set(run: TreeRun) -> None:
    """lookax against ``torch.optim.Adam(fused=True)`` and a plain Lookahead over it."""
    tree, jc = run.tree, run.candidate
    if not run.cfg.torch:
        print(f"### {tree.name} -- PyTorch: skipped ({run.torch_status})\n")
        return

    def candidates() -> list[Candidate]:
        return [
            jc(ADAM, adam),
            jc(LOOKAX_ADAM, lambda: lookax.adam(1e-3)),
            jc(LOOKAX_LA, lookahead_adam, sync_period=K),
            TorchAdam(tree, run.grads, lookahead=False),
            TorchAdam(tree, run.grads, lookahead=True),
        ]

    t = run.run_set("against PyTorch (same CPU)", candidates, ADAM).timings
    for a, b in [
        (LOOKAX_ADAM, TORCH_ADAM),
        (LOOKAX_LA, TORCH_LA),
        (TORCH_LA, TORCH_ADAM),
        (LOOKAX_LA, ADAM),
    ]:
        print(
            f"{a} / {b}: {paired_ratio(t[a].wall, t[b].wall):.2f} wall, "
            f"{paired_ratio(t[a].cpu, t[b].cpu):.2f} cpu"
        )
    print()


PAIR_HEADERS = [
    "optimizer", "optax ms/step", "lookax ms/step", "lookax/optax", "(cpu)",
    "optax first / lookax first", "optax MB/step", "lookax MB/step", "kernels o/l",
    "kernels only in o/l", "compile s o/l (cpu)",
]  # fmt: skip


def pairs_set(run: TreeRun) -> None:
    """Each lookax optimizer against its optax twin, beside an A/A control."""
    tree = run.tree
    if not (tree.large or run.cfg.pairs_on_small):
        print(
            f"### {tree.name} -- each lookax optimizer / its optax twin: skipped here (each "
            "2000-leaf step takes ~20 s to compile, which would double the run; "
            "--pairs-on-small runs them)\n"
        )
        return
    control_row, control = aa_control(run)
    both_orders = abs(control - 1.0) > 0.05
    rows = [control_row]
    for label, (optax_fn, lookax_fn) in pairs().items():
        twins = time_twins(run, label, optax_fn, lookax_fn, both_orders)
        rows.append(twins.row(label))
        run.goals.append(twins.goal(tree, label, control))
    print(f"### {tree.name} -- each lookax optimizer / its optax twin")
    print_table(PAIR_HEADERS, rows)


def aa_control(run: TreeRun) -> tuple[list[str], float]:
    """optax.adam compiled twice, each executable with its own arrays: its table row and ratio.

    On this CPU the executable compiled later can run 15-30% slower on the
    many-small-leaves tree, whatever it computes (an identical one included), so
    the control measures that creation-order bias. Where it exceeds 5%, each pair
    is also timed with lookax compiled first, and the pair's ratio is the geometric
    mean of the two orders, in which the bias cancels.
    """
    first, second = f"{ADAM} (compiled first)", f"{ADAM} (compiled second)"
    timings, _ = run.timed_pair(first, second, adam, adam)
    control = paired_ratio(timings[second].wall, timings[first].wall)
    control_cpu = paired_ratio(timings[second].cpu, timings[first].cpu)
    row = [
        "A/A control: optax.adam compiled twice",
        fmt(statistics.median(timings[first].wall) * 1e3),
        fmt(statistics.median(timings[second].wall) * 1e3),
        fmt(control),
        fmt(control_cpu),
        "-", "-", "-", "-", "-", "-",
    ]  # fmt: skip
    return row, control


class Twins(NamedTuple):
    """A lookax optimizer timed beside its optax twin."""

    optax_ms: float
    lookax_ms: float
    wall: float  # lookax / optax; where both orders were timed, their geometric mean
    cpu: float
    orders: str  # the wall ratio in each order timed
    optax: CompiledStep
    lookax: CompiledStep

    @property
    def kernels_apart(self) -> str:
        """Kernels only one of the two has (optax/lookax), or "none"."""
        optax_only = sum((self.optax.hlo.kernel_bodies - self.lookax.hlo.kernel_bodies).values())
        lookax_only = sum((self.lookax.hlo.kernel_bodies - self.optax.hlo.kernel_bodies).values())
        # Identical kernels run the same machine code: any time difference is noise.
        return "none" if optax_only == lookax_only == 0 else f"{optax_only}/{lookax_only}"

    def row(self, label: str) -> list[str]:
        oc, lc = self.optax, self.lookax
        return [
            label,
            fmt(self.optax_ms),
            fmt(self.lookax_ms),
            fmt(self.wall),
            fmt(self.cpu),
            self.orders,
            fmt(oc.hlo.bytes_per_step / 1e6, 1),
            fmt(lc.hlo.bytes_per_step / 1e6, 1),
            f"{oc.hlo.kernels}/{lc.hlo.kernels}",
            self.kernels_apart,
            f"{oc.compile_s:.2f}/{lc.compile_s:.2f}",
        ]

    def goal(self, tree: Tree, label: str, control: float) -> list[str]:
        bytes_ratio = self.lookax.hlo.bytes_per_step / self.optax.hlo.bytes_per_step
        same_bytes = abs(bytes_ratio - 1.0) <= 1e-3  # scalar kernels aside
        return [
            tree.name,
            f"lookax.{label}: same bytes as optax's, time <= 1.05x",
            f"bytes x{bytes_ratio:.4f}, time {self.wall:.2f} wall, {self.cpu:.2f} cpu "
            f"(orders {self.orders}; A/A control {control:.2f}); kernels not in the "
            f"other (o/l): {self.kernels_apart}",
            "met" if same_bytes and self.wall <= 1.05 else "NOT met",
        ]


def time_twins(
    run: TreeRun, label: str, optax_fn: Callable, lookax_fn: Callable, both_orders: bool
) -> Twins:
    """optax's then lookax's ``label`` timed side by side; with ``both_orders``, also reversed."""
    o_name, l_name = f"optax.{label}", f"lookax.{label}"
    timings, compiled = run.timed_pair(o_name, l_name, optax_fn, lookax_fn)
    wall = paired_ratio(timings[l_name].wall, timings[o_name].wall)
    cpu = paired_ratio(timings[l_name].cpu, timings[o_name].cpu)
    orders = f"{wall:.2f}"
    if both_orders:
        o2, l2 = f"{o_name} (compiled second)", f"{l_name} (compiled first)"
        timings2, _ = run.timed_pair(l2, o2, lookax_fn, optax_fn)
        wall2 = paired_ratio(timings2[l2].wall, timings2[o2].wall)
        cpu2 = paired_ratio(timings2[l2].cpu, timings2[o2].cpu)
        orders = f"{wall:.2f} / {wall2:.2f}"
        wall, cpu = math.sqrt(wall * wall2), math.sqrt(cpu * cpu2)
    o_ms = statistics.median(timings[o_name].wall) * 1e3
    l_ms = statistics.median(timings[l_name].wall) * 1e3
    return Twins(o_ms, l_ms, wall, cpu, orders, compiled[o_name], compiled[l_name])


def parse_config(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny trees, under a minute")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per set")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up rounds per set")
    parser.add_argument(
        "--sets",
        default="lookahead,instep,outer,wide,grouping,torch,pairs",
        help="comma-separated subset of: lookahead, instep, outer, wide, grouping, torch, pairs",
    )
    parser.add_argument("--trees", default=None, help="comma-separated tree indices (0, 1, 2)")
    parser.add_argument(
        "--only-outer",
        action="store_true",
        help="only the outer-path set (optax.adam, Lookahead(Adam) and the outer-path rows, "
        "gradients as input and made in the step) on the large trees",
    )
    parser.add_argument(
        "--pairs-on-small",
        action="store_true",
        help="also time each lookax optimizer against optax's on the many-small-leaves tree",
    )
    args = parser.parse_args(argv)
    return Config(
        quick=args.quick,
        torch=not args.no_torch,
        rounds=args.rounds or (2 if args.quick else 8),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        sets=["outer"] if args.only_outer else args.sets.split(","),
        trees=args.trees.split(",") if args.trees else None,
        pairs_on_small=args.pairs_on_small,
        only_outer=args.only_outer,
    )


def set_up_torch(cfg: Config) -> str:
    """PyTorch on every usable core, where it is installed and wanted; what the report says."""
    if not cfg.torch:
        return "not used (--no-torch)"
    try:
        import torch
    except ImportError:
        cfg.torch = False
        return "not installed: PyTorch comparison skipped (pip install torch)"
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    torch.set_num_threads(threads)
    return f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}"


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    torch_status = set_up_torch(cfg)
    print("# lookax step-time benchmark\n")
    print(f"command: python benchmarks/step_time.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print(
        f"settings: sync period k={K}, alpha={ALPHA}; {cfg.rounds} timed rounds after "
        f"{cfg.warmup} warm-up round(s) per set; each sample = {K} steps (outer-path set: "
        f"{OUTER_H})\n"
    )
    describe_machine(torch_status)
    # The first XLA compilation in a process pays one-off set-up costs: pay them
    # here, so that no candidate's compile time includes them.
    warm = {"w": jnp.zeros((8, 8)), "b": jnp.zeros((8,))}
    jax.jit(_step_fn(optax.adam(1e-3)), donate_argnums=(0, 1)).lower(
        warm, optax.adam(1e-3).init(warm), warm
    ).compile()
    start = time.perf_counter()
    goals: list[list[str]] = []
    trees = make_trees(cfg.quick)
    for index, tree in enumerate(trees):
        if cfg.trees is not None and str(index) not in cfg.trees:
            continue
        if cfg.only_outer and not tree.large:  # the outer-path set runs on the large trees
            continue
        run_tree(tree, cfg, goals, torch_status)
    print("## Goals (docs/design.md)\n")
    if goals:
        print_table(["tree", "goal", "measured", "status"], goals)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"total run time: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
