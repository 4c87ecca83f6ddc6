#!/usr/bin/env python
"""Language model: lookax's optimizers on a byte-level transformer trained on real text.

What it measures: the validation and test bits per byte of a small decoder-only
transformer, trained on bytes of real text by every optimizer row below, each
evaluated on what it would ship (the Lookahead/DiLoCo family on
``lookax.slow_params(state, params)``, Schedule-Free on
``optax.contrib.schedule_free_eval_params(state, params)``, the others on their
params); and, for the rows with four replicas, the bytes each replica
all-reduces per step (total and peak), read from the compiled HLO.

The claims it tests, at this small scale:

- Lookahead improves language-model perplexity over its inner optimizer
  (Zhang, Lucas, Hinton, Ba 2019);
- Lion matches or beats AdamW (Chen et al. 2023, "Symbolic Discovery of
  Optimization Algorithms");
- RAdam removes the need for learning-rate warmup (Liu et al. 2019);
- DiLoCo and Streaming DiLoCo reach the quality of data parallelism while
  communicating a fraction of its bytes (Douillard et al. 2023, 2025);
- a single-replica Nesterov outer step on Lookahead's pseudo-gradient (SNOO,
  Kallusky et al. 2025, arXiv 2510.15830) beats its inner AdamW for the same
  compute.

Data: the source files of the Python standard library of the interpreter that
runs this script (``sysconfig.get_paths()["stdlib"]``, read as bytes): text on
every machine, written by nobody in this project. The file list is fixed: the
sorted relative paths of every ``*.py`` directly under it and under the
subpackages in ``SUBPACKAGES`` (recursively), leaving out any path with a
``test``, ``tests``, ``idle_test`` or ``site-packages`` component. A file goes
to validation when ``zlib.crc32(relative path) % 20 == 0``, to test when it is
1, to training otherwise, so the split never changes (the files themselves
change with the Python version, which the output records). Each split is its
files concatenated in that order; training is capped at ``TRAIN_BYTES``.
Training batches are random windows of ``context + 1`` bytes (NumPy's
generator seeded by the seed: the same batches for every row of a seed);
validation and test bits per byte are the mean cross-entropy (in bits) of
predicting the last ``context`` bytes of evenly spaced, non-overlapping windows.

Model: a pre-LayerNorm decoder-only transformer (Flax linen: learned positions,
causal multi-head attention, GELU MLP, untied output layer) over the 256 byte
values.

Rows (AdamW weight decay 0.1 on the matrices only; warmup + cosine decay to 10%
of the peak learning rate unless said otherwise):

- one machine: AdamW; ``lookax.lookahead(AdamW)`` at (k, alpha) = (5, 0.5), the
  paper's, and (10, 0.8); Schedule-Free AdamW (its own warmup, no decay);
  ``lookax.lion`` (weight decay 1.0: ten times AdamW's for a tenth of its
  learning rate, as the Lion paper advises); ``lookax.radam`` with cosine decay
  and no warmup; ``lookax.ranger`` (RAdam inside Lookahead, no warmup); and a
  single-replica Nesterov outer step, ``lookax.lookahead(AdamW, k,
  outer=lookax.sgd(0.7, momentum=0.9, nesterov=True))`` (SNOO-like; DiLoCo's
  outer hyperparameters, not tuned);
- four replicas (a ``jax.vmap(..., axis_name="replica")`` axis on one CPU, each
  replica its own quarter of every global batch, Lookahead's counters
  unbatched): data-parallel AdamW (gradients ``lax.pmean``-ed every step);
  ``lookax.diloco(AdamW, H, replica_axis="replica")`` at two H; DiLoCo with
  ``sync_delay=1`` (the outer step overlapped with the next inner step);
  Streaming DiLoCo (``fragments=4``); DiLoCo with
  ``communication_dtype=jnp.bfloat16``. A row whose keyword the installed lookax
  lacks is left out, with a line saying so.

The peak learning rate of every row is chosen from its grid (three rates half a
decade apart: {1e-3, 3e-3, 1e-2}; one step up for the rows whose step is pulled
back, Lookahead, Ranger and Schedule-Free; {1e-4, 3e-4, 1e-3} for Lion) by the
final validation bits per byte of seed 0 (never the test split); the chosen rate
is then run on the other seeds. Seed s gives every row the same initial weights
and batches, so differences between rows are paired by seed.

Bytes all-reduced: each replica row's training step is compiled under
``jax.shard_map`` on a 4-device CPU mesh (this script sets
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before importing jax) and
the operand bytes of every ``all-reduce`` in its HLO are summed. An all-reduce
inside a conditional branch (a sync) runs once every H steps: total per step =
bytes outside any branch + bytes inside branches / H; peak = the most bytes
all-reduced at any one step = bytes outside + the largest branch. The bf16 row's
bytes come from the lowered HLO (``jax.jit(...).lower(...).as_text("hlo")``,
before XLA's passes), since XLA:CPU's compiler widens bf16 all-reduces to f32;
both are recorded for every row. Bytes are measured, never communication time.

Usage::

  python benchmarks/lm.py            # full run: 51 minutes measured on 2 shared CPU cores
  python benchmarks/lm.py --quick    # under a minute: tiny model, few steps, 1 seed
  python benchmarks/lm.py --rows adamw,diloco --out /tmp/lm
  python benchmarks/lm.py --rows lion --lr-scale 3   # its grid x3: a check of the edge

The full run's 51 minutes were measured under ``nice -n 5`` while other jobs kept
both cores busy (load average 5-15); alone on the cores it should take about half.

Outputs (``--out DIR``, default benchmarks/results/): ``lm.md`` (the table,
the curves, the command and its wall time, the caveats), ``lm_curves.png`` and
``lm.json`` (every number); ``--quick`` adds ``_quick`` to the names, ``--lr-scale``
``_lr_x<scale>``.
"""

from __future__ import annotations

import os
import pathlib
import sys

# The shared modules beside this file, also when a test loads it by path.
HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _xla_flags import set_xla_flags  # noqa: E402

if __name__ == "__main__":  # before jax is imported; importing this file changes nothing
    set_xla_flags(sys.argv[1:])

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sysconfig  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _measure import (  # noqa: E402
    AllReduces,
    all_reduces,
    argument_parser,
    command_line,
    lower_replica_step,
    mean_and_se,
    mean_pm_std,
)
from tqdm import tqdm  # noqa: E402

import lookax  # noqa: E402

AXIS = "replica"
REPLICAS = 4
WEIGHT_DECAY = 0.1  # AdamW's, on the matrices only
LION_WEIGHT_DECAY = 1.0  # 10x AdamW's, for a learning rate 10x smaller (the Lion paper's advice)
OUTER_LR, OUTER_MOMENTUM = 0.7, 0.9  # DiLoCo's outer Nesterov SGD, also used for SNOO
SUBPACKAGES = (
    "asyncio", "collections", "concurrent", "email", "html", "http", "importlib", "json",
    "logging", "multiprocessing", "re", "sqlite3", "tomllib", "unittest", "urllib", "wsgiref",
    "xml", "xmlrpc", "zoneinfo",
)  # fmt: skip
EXCLUDED_PARTS = frozenset({"test", "tests", "idle_test", "site-packages"})
# Peak learning-rate grids, three points half a decade apart. Rows whose effective step is
# shrunk (Lookahead's alpha pulls back; Schedule-Free averages) take the grid one step up;
# Lion's sign update takes rates ten times smaller than AdamW's (the Lion paper's advice).
ADAM_GRID = (1e-3, 3e-3, 1e-2)
HIGHER_GRID = (3e-3, 1e-2, 3e-2)
LION_GRID = (1e-4, 3e-4, 1e-3)


@dataclass(frozen=True)
class Settings:
    quick: bool
    d_model: int
    layers: int
    heads: int
    context: int
    batch: int  # global batch, sequences; each of the 4 replicas takes a quarter
    steps: int
    eval_every: int  # steps between points of the validation curve
    curve_windows: int  # validation windows of each curve point
    final_windows: int  # validation (and test) windows of the final numbers
    seeds: int
    warmup: int
    periods: tuple[int, int]  # DiLoCo's two H; the variants use the first
    fragments: int  # Streaming DiLoCo's F
    snoo_period: int
    train_bytes: int  # cap on the training stream


FULL = Settings(
    quick=False, d_model=96, layers=2, heads=4, context=64, batch=16, steps=800,
    eval_every=50, curve_windows=128, final_windows=1024, seeds=3, warmup=50,
    periods=(20, 100), fragments=4, snoo_period=20, train_bytes=4 << 20,
)  # fmt: skip
QUICK = Settings(
    quick=True, d_model=32, layers=1, heads=2, context=32, batch=8, steps=24,
    eval_every=8, curve_windows=16, final_windows=64, seeds=1, warmup=2,
    periods=(4, 8), fragments=4, snoo_period=4, train_bytes=1 << 18,
)  # fmt: skip


# ----------------------------------------------------------------------------
# Data: the standard library's own source files, as bytes.
# ----------------------------------------------------------------------------


def stdlib_root() -> pathlib.Path:
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: pathlib.Path | None = None) -> list[str]:
    """The fixed file list: sorted relative paths (see the module docstring)."""
    root = stdlib_root() if root is None else root
    found = [p for p in root.glob("*.py") if p.is_file()]
    for package in SUBPACKAGES:
        if (root / package).is_dir():
            found += [p for p in (root / package).rglob("*.py") if p.is_file()]
    paths = {p.relative_to(root).as_posix() for p in found}
    return sorted(p for p in paths if not EXCLUDED_PARTS & set(p.split("/")))


def split_of(relative_path: str) -> str:
    """``crc32(path) % 20``: 0 -> validation, 1 -> test, else training."""
    bucket = zlib.crc32(relative_path.encode()) % 20
    return {0: "validation", 1: "test"}.get(bucket, "train")


def split_files(root: pathlib.Path | None = None) -> dict[str, list[str]]:
    """The file lists of the three splits, each in sorted order."""
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for path in stdlib_files(root):
        splits[split_of(path)].append(path)
    return splits


def load_streams(settings: Settings) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each split's files concatenated (uint8), training capped; and what was read."""
    root = stdlib_root()
    splits = split_files(root)
    streams = {}
    for name, files in splits.items():
        data = b"".join((root / f).read_bytes() for f in files)
        if name == "train":
            data = data[: settings.train_bytes]
        streams[name] = np.frombuffer(data, np.uint8)
    info = {
        "stdlib": str(root),
        "python": platform.python_version(),
        "files": {k: len(v) for k, v in splits.items()},
        "bytes": {k: int(v.size) for k, v in streams.items()},
        "crc32": {k: zlib.crc32(v.tobytes()) for k, v in streams.items()},
        "validation_files": splits["validation"],
        "test_files": splits["test"],
    }
    return streams, info


def batch_starts(seed: int, stream_size: int, settings: Settings) -> np.ndarray:
    """``[steps, batch]`` window starts of seed ``seed``: every row of a seed sees these."""
    rng = np.random.default_rng(seed)
    high = stream_size - settings.context - 1
    return rng.integers(0, high, size=(settings.steps, settings.batch))


def gather(stream: np.ndarray, starts: np.ndarray, context: int) -> np.ndarray:
    """Windows of ``context + 1`` bytes at ``starts`` (any shape), as int32."""
    return stream[starts[..., None] + np.arange(context + 1)].astype(np.int32)


def eval_windows(stream: np.ndarray, count: int, context: int) -> np.ndarray:
    """``count`` evenly spaced, non-overlapping windows (fewer if the stream is short)."""
    count = min(count, stream.size // (context + 1))
    starts = np.linspace(0, stream.size - context - 1, count).astype(np.int64)
    return gather(stream, starts, context)


# ----------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------

_INIT = nn.initializers.normal(0.02)


class Block(nn.Module):
    d_model: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        length, head_dim = x.shape[-2], self.d_model // self.heads
        q, k, v = jnp.split(nn.Dense(3 * self.d_model)(nn.LayerNorm()(x)), 3, axis=-1)
        heads = lambda t: t.reshape(*t.shape[:-1], self.heads, head_dim)  # noqa: E731
        scores = jnp.einsum("...qhd,...khd->...hqk", heads(q), heads(k)) / math.sqrt(head_dim)
        causal = jnp.tril(jnp.ones((length, length), bool))
        weights = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
        attended = jnp.einsum("...hqk,...khd->...qhd", weights, heads(v)).reshape(x.shape)
        x = x + nn.Dense(self.d_model)(attended)
        hidden = nn.gelu(nn.Dense(4 * self.d_model)(nn.LayerNorm()(x)))
        return x + nn.Dense(self.d_model)(hidden)


class ByteLM(nn.Module):
    d_model: int
    layers: int
    heads: int
    context: int

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        positions = self.param("positions", _INIT, (self.context, self.d_model))
        x = nn.Embed(256, self.d_model, embedding_init=_INIT)(tokens)
        x = x + positions[: tokens.shape[-1]]
        for _ in range(self.layers):
            x = Block(self.d_model, self.heads)(x)
        return nn.Dense(256)(nn.LayerNorm()(x))


def make_model(settings: Settings) -> ByteLM:
    return ByteLM(settings.d_model, settings.layers, settings.heads, settings.context)


def init_params(model: ByteLM, key: jax.Array) -> Any:
    return model.init(key, jnp.zeros((1, model.context), jnp.int32))["params"]


def loss_fn(model: ByteLM, params: Any, tokens: jax.Array) -> jax.Array:
    """Mean next-byte cross-entropy in nats over ``tokens [..., context + 1]``."""
    logits = model.apply({"params": params}, tokens[..., :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[..., 1:]).mean()


def bits_per_byte(model: ByteLM, params: Any, windows: jax.Array) -> jax.Array:
    """Mean cross-entropy in bits over the windows, 64 windows at a time."""
    chunk = min(64, windows.shape[0])
    usable = windows[: windows.shape[0] // chunk * chunk]
    losses = jax.lax.map(
        lambda w: loss_fn(model, params, w), usable.reshape(-1, chunk, windows.shape[-1])
    )
    return losses.mean() / math.log(2.0)


# ----------------------------------------------------------------------------
# Rows: which optimizer, on how many replicas, evaluated on what.
# ----------------------------------------------------------------------------


def _decay_mask(params: Any) -> Any:
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def _schedule(lr: Any, settings: Settings, warmup: bool = True) -> optax.Schedule:
    """``lr`` times a unit warmup + cosine schedule (or cosine alone), ending at 10%."""
    if warmup:
        unit = optax.warmup_cosine_decay_schedule(
            0.0, 1.0, settings.warmup, settings.steps, end_value=0.1
        )
    else:
        unit = optax.cosine_decay_schedule(1.0, settings.steps, alpha=0.1)
    return lambda count: lr * unit(count)


def _adamw(lr: Any, settings: Settings) -> optax.GradientTransformation:
    return lookax.adamw(_schedule(lr, settings), weight_decay=WEIGHT_DECAY, mask=_decay_mask)


def _diloco(lr: Any, settings: Settings, period: int, **features: Any) -> Any:
    return lookax.diloco(_adamw(lr, settings), period, replica_axis=AXIS, **features)


def feature_available(keyword: str | None) -> bool:
    """Whether the installed ``lookax.lookahead`` and ``lookax.diloco`` take ``keyword``."""
    if keyword is None:
        return True
    return all(
        keyword in inspect.signature(fn).parameters for fn in (lookax.lookahead, lookax.diloco)
    )


@dataclass(frozen=True)
class RowSpec:
    key: str  # the name --rows takes
    label: str
    replicas: int  # 1, or REPLICAS for the rows on a replica axis
    grid: tuple[float, ...]  # peak learning rates tried on seed 0
    build: Callable[[Any], Any]  # traced peak learning rate -> GradientTransformation
    evaluate: str = "params"  # "params", "slow" (slow_params) or "schedule_free"
    period: int | None = None  # H: how often a sync branch runs (replica rows)
    feature: str | None = None  # the keyword of lookax.diloco this row needs
    average_grads: bool = False  # data parallel: pmean the gradients every step


def _single_rows(s: Settings) -> list[RowSpec]:
    sf = optax.contrib.schedule_free_adamw
    snoo_outer = lookax.sgd(OUTER_LR, momentum=OUTER_MOMENTUM, nesterov=True)
    return [
        RowSpec("adamw", "AdamW (warmup + cosine)", 1, ADAM_GRID, lambda lr: _adamw(lr, s)),
        RowSpec("lookahead_k5", "Lookahead(AdamW) k=5, α=0.5", 1, HIGHER_GRID,
                lambda lr: lookax.lookahead(_adamw(lr, s), 5, 0.5), "slow"),
        RowSpec("lookahead_k10", "Lookahead(AdamW) k=10, α=0.8", 1, HIGHER_GRID,
                lambda lr: lookax.lookahead(_adamw(lr, s), 10, 0.8), "slow"),
        RowSpec("schedule_free", "Schedule-Free AdamW", 1, HIGHER_GRID,
                lambda lr: sf(lr, warmup_steps=s.warmup, weight_decay=WEIGHT_DECAY),
                "schedule_free"),
        RowSpec("lion", "Lion (warmup + cosine)", 1, LION_GRID,
                lambda lr: lookax.lion(_schedule(lr, s), weight_decay=LION_WEIGHT_DECAY,
                                       mask=_decay_mask)),
        RowSpec("radam", "RAdam (cosine, no warmup)", 1, ADAM_GRID,
                lambda lr: lookax.radam(_schedule(lr, s, warmup=False),
                                        weight_decay=WEIGHT_DECAY, decoupled_weight_decay=True,
                                        mask=_decay_mask)),
        RowSpec("ranger", "Ranger (cosine, no warmup)", 1, HIGHER_GRID,
                lambda lr: lookax.ranger(_schedule(lr, s, warmup=False),
                                         weight_decay=WEIGHT_DECAY, mask=_decay_mask), "slow"),
        RowSpec("snoo", f"Nesterov outer step (SNOO-like) k={s.snoo_period}", 1, ADAM_GRID,
                lambda lr: lookax.lookahead(_adamw(lr, s), s.snoo_period, outer=snoo_outer),
                "slow"),
    ]  # fmt: skip


def _replica_rows(s: Settings) -> list[RowSpec]:
    h, h_long, f = s.periods[0], s.periods[1], s.fragments
    bf16 = jnp.bfloat16
    return [
        RowSpec("data_parallel", "data parallel AdamW", REPLICAS, ADAM_GRID,
                lambda lr: _adamw(lr, s), average_grads=True),
        RowSpec("diloco", f"DiLoCo H={h}", REPLICAS, ADAM_GRID,
                lambda lr: _diloco(lr, s, h), "slow", h),
        RowSpec("diloco_long", f"DiLoCo H={h_long}", REPLICAS, ADAM_GRID,
                lambda lr: _diloco(lr, s, h_long), "slow", h_long),
        RowSpec("diloco_delay", f"DiLoCo H={h}, sync_delay=1", REPLICAS, ADAM_GRID,
                lambda lr: _diloco(lr, s, h, sync_delay=1), "slow", h, "sync_delay"),
        RowSpec("streaming_diloco", f"Streaming DiLoCo H={h}, fragments={f}", REPLICAS,
                ADAM_GRID, lambda lr: _diloco(lr, s, h, fragments=f), "slow", h, "fragments"),
        RowSpec("diloco_bf16", f"DiLoCo H={h}, bf16 all-reduce", REPLICAS, ADAM_GRID,
                lambda lr: _diloco(lr, s, h, communication_dtype=bf16), "slow", h,
                "communication_dtype"),
    ]  # fmt: skip


def all_rows(settings: Settings) -> list[RowSpec]:
    return _single_rows(settings) + _replica_rows(settings)


def row_keys() -> list[str]:
    return [row.key for row in all_rows(QUICK)]


def expected_rows(quick: bool = False, keys: Sequence[str] | None = None) -> list[RowSpec]:
    """The rows a run trains: those asked for whose lookax feature is installed."""
    rows = all_rows(QUICK if quick else FULL)
    return [r for r in rows if (keys is None or r.key in keys) and feature_available(r.feature)]


# ----------------------------------------------------------------------------
# Training: every run of a row vmapped in one compiled program.
# ----------------------------------------------------------------------------


def make_step(tx: Any, model: ByteLM, average_grads: bool) -> Callable:
    """One replica's step on its own batch; ``lax.pmean`` of the gradients for data parallel."""

    def step(params: Any, opt_state: Any, tokens: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(functools.partial(loss_fn, model))(params, tokens)
        if average_grads:
            grads = jax.lax.pmean(grads, AXIS)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def eval_params(row: RowSpec, opt_state: Any, params: Any) -> Any:
    """What the row ships: slow weights, Schedule-Free's evaluation point, or the params."""
    if row.evaluate == "slow":
        params = lookax.slow_params(opt_state, params)
    elif row.evaluate == "schedule_free":
        params = optax.contrib.schedule_free_eval_params(opt_state, params)
    if row.replicas > 1:  # replica 0 (the slow weights are the same on every replica)
        params = jax.tree.map(lambda x: x[0], params)
    return params


def abstract_state_axes(row: RowSpec, model: ByteLM) -> Any:
    """The in_axes tree of one run's (replica-stacked) optimizer state."""
    params = jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))
    state = jax.eval_shape(row.build(1e-3).init, params)
    return lookax.replica_axes(state)


@dataclass
class Programs:
    """A row's compiled pieces: init and a chunk of ``eval_every`` steps, vmapped over runs."""

    init: Callable  # (lrs [n], params [n, ...]) -> (params, state), replica-stacked
    chunk: Callable  # (lrs, params, state, tokens) -> (params, state, loss [n], eval params)
    chunk_per_seed: Callable  # the same with tokens [n, steps, batch, context + 1]


def make_programs(row: RowSpec, model: ByteLM) -> Programs:
    axes = abstract_state_axes(row, model)
    replicas = row.replicas

    def init_run(lr: jax.Array, params: Any) -> tuple[Any, Any]:
        state = row.build(lr).init(params)
        if replicas > 1:
            return lookax.stack_replicas(params, replicas), lookax.stack_replicas(state, replicas)
        return params, state

    def chunk_run(lr: jax.Array, params: Any, state: Any, tokens: jax.Array) -> tuple:
        step = make_step(row.build(lr), model, row.average_grads)
        if replicas > 1:  # replica m takes quarter m of every global batch
            step = jax.vmap(step, in_axes=(0, axes, 0), out_axes=(0, axes, 0), axis_name=AXIS)
            tokens = tokens.reshape(tokens.shape[0], replicas, -1, tokens.shape[-1])

        def body(carry: tuple, batch: jax.Array) -> tuple:
            params, state, loss = step(*carry, batch)
            return (params, state), jnp.mean(loss)

        (params, state), losses = jax.lax.scan(body, (params, state), tokens)
        return params, state, losses.mean(), eval_params(row, state, params)

    out_axes = (0, axes, 0, 0)
    return Programs(
        init=jax.jit(jax.vmap(init_run, out_axes=(0, axes))),
        chunk=jax.jit(jax.vmap(chunk_run, in_axes=(0, 0, axes, None), out_axes=out_axes)),
        chunk_per_seed=jax.jit(jax.vmap(chunk_run, in_axes=(0, 0, axes, 0), out_axes=out_axes)),
    )


@dataclass
class Evaluator:
    """Bits per byte of a batch of runs' params on fixed windows (one compile per shape).

    Also holds the initial weights' program (``init(keys)``), shared by every row.
    """

    model: ByteLM
    windows: dict[str, jax.Array]  # "curve", "validation", "test"

    def __post_init__(self) -> None:
        fn = lambda params, w: bits_per_byte(self.model, params, w)  # noqa: E731
        self._bpb = jax.jit(jax.vmap(fn, in_axes=(0, None)))
        self.init = jax.jit(jax.vmap(functools.partial(init_params, self.model)))

    def __call__(self, params: Any, split: str) -> np.ndarray:
        return np.asarray(self._bpb(params, self.windows[split]), np.float64)


@dataclass
class GroupResult:
    """One compiled group of runs (a learning-rate grid on one seed, or seeds at one rate)."""

    steps: list[int]
    loss: np.ndarray  # [runs, points]: mean training loss (nats) over each chunk
    curve: np.ndarray  # [runs, points]: validation bits per byte (curve windows)
    val: np.ndarray  # [runs]: final validation bits per byte
    test: np.ndarray  # [runs]
    compile_s: float
    run_s: float


def _fmt(values: np.ndarray) -> str:
    return "/".join(f"{v:.3f}" for v in np.asarray(values))


def train_group(
    programs: Programs,
    lrs: Sequence[float],
    seeds: Sequence[int],
    streams: dict[str, np.ndarray],
    evaluate: Evaluator,
    settings: Settings,
    desc: str,
) -> GroupResult:
    """Trains ``len(lrs)`` runs together; one seed for all (a grid) or one seed per run."""
    per_seed = len(set(seeds)) > 1
    lr_arr = jnp.asarray(lrs, jnp.float32)
    keys = jnp.stack([jax.random.key(seed) for seed in seeds])
    starts = np.stack([batch_starts(s, streams["train"].size, settings) for s in seeds])
    start = time.perf_counter()
    params, state = programs.init(lr_arr, evaluate.init(keys))
    chunk = programs.chunk_per_seed if per_seed else programs.chunk
    steps, losses, curve = [], [], []
    compile_s, e = 0.0, settings.eval_every
    bar = tqdm(total=settings.steps, desc=desc, unit="step", leave=True, dynamic_ncols=True)
    for i in range(settings.steps // e):
        window = starts[:, i * e : (i + 1) * e] if per_seed else starts[0, i * e : (i + 1) * e]
        tokens = gather(streams["train"], window, settings.context)
        params, state, loss, shipped = chunk(lr_arr, params, state, tokens)
        losses.append(np.asarray(loss, np.float64))
        curve.append(evaluate(shipped, "curve"))
        steps.append((i + 1) * e)
        if i == 0:
            compile_s = time.perf_counter() - start
        bar.set_postfix_str(f"loss {_fmt(losses[-1])}, val bpb {_fmt(curve[-1])}")
        bar.update(e)
    bar.close()
    val, test = evaluate(shipped, "validation"), evaluate(shipped, "test")
    return GroupResult(
        steps=steps,
        loss=np.stack(losses, 1),
        curve=np.stack(curve, 1),
        val=val,
        test=test,
        compile_s=compile_s,
        run_s=time.perf_counter() - start - compile_s,
    )


@dataclass
class RowResult:
    row: RowSpec
    grid_val: dict[float, float]  # peak learning rate -> seed 0's final validation bpb
    lr: float  # the chosen one
    val: np.ndarray  # [seeds]
    test: np.ndarray  # [seeds]
    steps: list[int]
    curve: np.ndarray  # [seeds, points] validation bpb at the chosen learning rate
    loss: np.ndarray  # [seeds, points]
    seconds: float
    bytes: AllReduces | None = None  # replica rows: from the compiled step
    bytes_lowered: AllReduces | None = None  # the same from the lowered (unoptimized) HLO


def run_row(
    row: RowSpec,
    model: ByteLM,
    streams: dict[str, np.ndarray],
    evaluate: Evaluator,
    settings: Settings,
) -> RowResult:
    """The grid on seed 0 (chosen by validation bpb), then the chosen rate on the other seeds."""
    start = time.perf_counter()
    programs = make_programs(row, model)
    grid = row.grid if not settings.quick else row.grid[1:]
    first = train_group(
        programs, grid, [0] * len(grid), streams, evaluate, settings, f"{row.key} lr grid"
    )
    score = np.where(np.isfinite(first.val), first.val, np.inf)
    best = int(np.argmin(score))
    lr = float(grid[best])
    val, test = first.val[best : best + 1], first.test[best : best + 1]
    curve, loss = first.curve[best : best + 1], first.loss[best : best + 1]
    if settings.seeds > 1:
        seeds = list(range(1, settings.seeds))
        rest = train_group(
            programs, [lr] * len(seeds), seeds, streams, evaluate, settings,
            f"{row.key} lr {lr:g} seeds {seeds[0]}-{seeds[-1]}",
        )  # fmt: skip
        val, test = np.concatenate([val, rest.val]), np.concatenate([test, rest.test])
        curve, loss = np.concatenate([curve, rest.curve]), np.concatenate([loss, rest.loss])
    return RowResult(
        row=row,
        grid_val={float(g): float(v) for g, v in zip(grid, first.val, strict=True)},
        lr=lr,
        val=val,
        test=test,
        steps=first.steps,
        curve=curve,
        loss=loss,
        seconds=time.perf_counter() - start,
    )


# ----------------------------------------------------------------------------
# Bytes all-reduced per step, from the HLO of one replica's step under shard_map.
# ----------------------------------------------------------------------------


def step_hlo(row: RowSpec, model: ByteLM, settings: Settings) -> tuple[str, str]:
    """The lowered and the compiled HLO of one step of ``row`` on a 4-device CPU mesh."""
    tx = row.build(row.grid[1])
    params = jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))
    opt_state = jax.eval_shape(tx.init, params)
    tokens = (settings.batch // row.replicas, settings.context + 1)
    batch = (jax.ShapeDtypeStruct(tokens, jnp.int32),)
    step = make_step(tx, model, row.average_grads)
    lowered = lower_replica_step(step, params, opt_state, batch, row.replicas, AXIS)
    return lowered.as_text(dialect="hlo"), lowered.compile().as_text()


def measure_bytes(
    rows: Sequence[RowSpec], model: ByteLM, settings: Settings
) -> dict[str, tuple[AllReduces, AllReduces]]:
    """(compiled, lowered) all-reduces of every replica row's step."""
    out = {}
    for row in rows:
        if row.replicas > 1:
            lowered, compiled = step_hlo(row, model, settings)
            out[row.key] = (all_reduces(compiled), all_reduces(lowered))
    return out


def reported_bytes(result: RowResult) -> AllReduces | None:
    """The table's source: the lowered HLO for the bf16 row (XLA:CPU widens it), else compiled."""
    if result.row.key == "diloco_bf16":
        return result.bytes_lowered
    return result.bytes


# ----------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------


def _pm(values: np.ndarray) -> str:
    return mean_pm_std(values, 4)


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the per-seed difference a - b (nan se with one seed)."""
    return mean_and_se(a - b)


def reference(result: RowResult, results: Sequence[RowResult]) -> RowResult | None:
    """AdamW for the single-machine rows, data parallel for the replica rows."""
    key = "adamw" if result.row.replicas == 1 else "data_parallel"
    return next((r for r in results if r.row.key == key), None)


def _delta(result: RowResult, results: Sequence[RowResult]) -> str:
    ref = reference(result, results)
    if ref is None or ref is result:
        return "—"
    mean, se = paired(result.test, ref.test)
    return f"{mean:+.4f}" + ("" if math.isnan(se) else f" ± {se:.4f}")


TABLE_HEADER = (
    "| row | replicas × batch | peak lr (chosen) | validation bpb | test bpb "
    "| Δ test bpb vs AdamW / data parallel | bytes all-reduced / step | peak bytes / step |"
)


def table(results: Sequence[RowResult], settings: Settings) -> list[str]:
    out = [TABLE_HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        found = reported_bytes(r)
        total = "—" if found is None else f"{found.per_step(r.row.period):,.0f}"
        peak = "—" if found is None else f"{found.peak:,}"
        if r.row.key == "diloco_bf16" and found is not None:
            total, peak = total + " (lowered)", peak + " (lowered)"
        diverged = int((~np.isfinite(r.test)).sum())
        flag = f" ({diverged} diverged)" if diverged else ""
        grid = sorted(r.grid_val)
        edge = " (edge)" if len(grid) > 1 and r.lr in (grid[0], grid[-1]) else ""
        out.append(
            f"| {r.row.label} | {r.row.replicas} × {settings.batch // r.row.replicas} | "
            f"{r.lr:g}{edge} | {_pm(r.val)}{flag} | {_pm(r.test)} | {_delta(r, results)} | "
            f"{total} | {peak} |"
        )
    return out


def bytes_table(results: Sequence[RowResult]) -> list[str]:
    out = [
        "| row | H | all-reduces every step (in sync branches) | compiled: bytes / step, peak "
        "| lowered: bytes / step, peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.bytes is None or r.bytes_lowered is None:
            continue
        c, lo, h = r.bytes, r.bytes_lowered, r.row.period
        out.append(
            f"| {r.row.label} | {h or '—'} | {c.count_outside} ({c.count_inside}) | "
            f"{c.per_step(h):,.0f}, {c.peak:,} | {lo.per_step(h):,.0f}, {lo.peak:,} |"
        )
    return out


def _verdict(mean: float, se: float, lower_is_better: str, higher: str) -> str:
    if math.isnan(se):
        return "one seed: no verdict"
    if mean < -2 * se:
        return lower_is_better
    if mean > 2 * se:
        return higher
    return "no difference beyond two standard errors"


def reading(results: Sequence[RowResult]) -> list[str]:
    """Each claim's comparison, paired by seed on test bits per byte."""
    by_key = {r.row.key: r for r in results}
    pairs = [
        ("lookahead_k5", "adamw", "Lookahead (5, 0.5) vs AdamW"),
        ("lookahead_k10", "adamw", "Lookahead (10, 0.8) vs AdamW"),
        ("lion", "adamw", "Lion vs AdamW"),
        ("radam", "adamw", "RAdam without warmup vs AdamW with warmup"),
        ("ranger", "adamw", "Ranger vs AdamW"),
        ("schedule_free", "adamw", "Schedule-Free AdamW vs AdamW"),
        ("snoo", "adamw", "Nesterov outer step (SNOO-like) vs AdamW"),
        *((k, "data_parallel", f"{by_key[k].row.label} vs data parallel")
          for k in ("diloco", "diloco_long", "diloco_delay", "streaming_diloco", "diloco_bf16")
          if k in by_key),
    ]  # fmt: skip
    lines = []
    for key, ref, text in pairs:
        if key not in by_key or ref not in by_key:
            continue
        mean, se = paired(by_key[key].test, by_key[ref].test)
        verdict = _verdict(mean, se, "better (lower)", "worse (higher)")
        extra = ""
        a, b = reported_bytes(by_key[key]), reported_bytes(by_key[ref])
        if a is not None and b is not None and b.per_step(None):
            ratio = a.per_step(by_key[key].row.period) / b.per_step(None)
            extra = f"; {ratio:.3g} of its bytes per step, peak {a.peak / max(b.peak, 1):.3g}"
        se_text = "" if math.isnan(se) else f" ± {se:.4f}"
        lines.append(f"- {text}: Δ test bpb {mean:+.4f}{se_text}: {verdict}{extra}.")
    return lines


def plot(results: Sequence[RowResult], settings: Settings, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("one machine", [r for r in results if r.row.replicas == 1]),
        (f"{REPLICAS} replicas", [r for r in results if r.row.replicas > 1]),
    ]
    groups = [(title, rs) for title, rs in groups if rs]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.8), squeeze=False)
    for ax, (title, rows) in zip(axes[0], groups, strict=True):
        late = []
        for i, r in enumerate(rows):
            mean = r.curve.mean(0)
            ax.plot(r.steps, mean, label=f"{r.row.label} (lr {r.lr:g})", color=f"C{i % 10}")
            late.append(mean[len(mean) // 5 :])
        values = np.concatenate(late)
        values = values[np.isfinite(values)]
        if values.size:
            ax.set_ylim(values.min() - 0.05, values.max() + 0.05)
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation bits per byte ({settings.curve_windows} windows)")
        ax.set_title(f"{title}: mean over {settings.seeds} seed(s), shipped weights", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_json(results: Sequence[RowResult], meta: dict[str, Any]) -> dict[str, Any]:
    def reduces(found: AllReduces | None, period: int | None) -> dict[str, Any] | None:
        if found is None:
            return None
        return {
            "outside": found.outside,
            "branches": found.branches,
            "count_outside": found.count_outside,
            "count_inside": found.count_inside,
            "per_step": found.per_step(period),
            "peak": found.peak,
        }

    rows = []
    for r in results:
        rows.append(
            {
                "key": r.row.key,
                "label": r.row.label,
                "replicas": r.row.replicas,
                "period": r.row.period,
                "grid_validation_bpb_seed0": {f"{k:g}": v for k, v in r.grid_val.items()},
                "lr": r.lr,
                "validation_bpb": r.val.tolist(),
                "test_bpb": r.test.tolist(),
                "steps": r.steps,
                "validation_curve_bpb": r.curve.tolist(),
                "train_loss_nats": r.loss.tolist(),
                "seconds": r.seconds,
                "bytes_compiled": reduces(r.bytes, r.row.period),
                "bytes_lowered": reduces(r.bytes_lowered, r.row.period),
            }
        )
    return {**meta, "rows": rows}


def _setup_text(settings: Settings, meta: dict[str, Any]) -> str:
    data = meta["data"]
    return (
        f"A {meta['params']:,}-parameter byte-level decoder-only transformer (Flax linen, "
        f"{settings.layers} layers, d = {settings.d_model}, {settings.heads} heads, context "
        f"{settings.context} bytes) trained for {settings.steps} steps of {settings.batch} "
        f"windows ({settings.batch * settings.context:,} predicted bytes a step) on the source "
        f"of the Python {data['python']} standard library ({data['files']['train']} training "
        f"files, {data['bytes']['train']:,} bytes; {data['files']['validation']} validation "
        f"and {data['files']['test']} test files, chosen by crc32 of the path); {settings.seeds} "
        "seed(s), paired (seed s: the same initial weights and batches for every row). The "
        "peak learning rate is chosen from each row's grid by seed 0's final validation bits "
        "per byte; the other seeds run at it. Bits per byte: mean cross-entropy in bits "
        f"over {meta['final_windows']['validation']} (validation) and "
        f"{meta['final_windows']['test']} (test) evenly spaced windows, mean ± std over seeds, "
        "on the weights each row ships (slow weights for the Lookahead/DiLoCo family, "
        "Schedule-Free's evaluation point)."
    )


def _caveats(settings: Settings, meta: dict[str, Any]) -> str:
    return (
        f"Caveats: a {meta['params']:,}-parameter model trained for {settings.steps} steps "
        f"({settings.steps * settings.batch * settings.context:,} predicted bytes), far from "
        "the papers' scales (DiLoCo: 150M-400M parameters, H = 500, tens of thousands of "
        "steps; SNOO: up to 1e23 FLOPs); one shared 2-core CPU, so the four replicas are a "
        "vmapped axis: bytes all-reduced are measured from the HLO, never communication "
        "time; the learning-rate grids have three points, chosen on one seed; weight decay, "
        "betas, warmup, Lookahead's (k, α) and every outer optimizer's hyperparameters are "
        f"fixed, not tuned; {settings.seeds} seed(s), so only large differences are "
        "resolved. The data is the standard library of the Python that ran it: another "
        "version gives other files (their count, size and crc32 are in the JSON)."
    )


def markdown(
    results: Sequence[RowResult],
    settings: Settings,
    meta: dict[str, Any],
    figure: str,
) -> str:
    out = ["## Language model: byte-level transformer on the Python standard library", ""]
    out += table(results, settings)
    out += ["", _setup_text(settings, meta), ""]
    out.append(
        "*Peak lr*: chosen from the row's grid (below); *(edge)*: at an end of the grid, so "
        "a better rate may lie outside it. *Δ test bpb*: the per-seed difference of test bits "
        "per byte from AdamW (one-machine rows) or data parallel (replica rows), mean ± "
        "standard error; negative is better. "
        "*Bytes all-reduced / step*: the operand bytes of the all-reduces of one replica's "
        "compiled step under `jax.shard_map` on a 4-device CPU mesh, those inside a sync "
        "branch divided by H; *peak*: the most in one step (outside + the largest branch). "
        "The bf16 row's bytes are read from the lowered HLO (before XLA's passes): XLA:CPU's "
        "compiler widens bf16 all-reduces to f32, which a GPU or TPU backend would not."
    )
    for line in meta["left_out"]:
        out += ["", f"Left out: {line}"]
    if any(r.bytes is not None for r in results):
        out += ["", "### Bytes all-reduced per replica, compiled and lowered HLO", ""]
        out += bytes_table(results)
    out += ["", "### Validation curves", "", f"![validation bits per byte]({figure})"]
    out += ["", "### Reading (paired by seed, test bits per byte)", ""] + reading(results)
    out += ["", "### Learning-rate grids (seed 0, final validation bits per byte)", ""]
    for r in results:
        grid = ", ".join(f"{lr:g}: {v:.4f}" for lr, v in r.grid_val.items())
        out.append(f"- {r.row.label}: {grid}")
    out += ["", "### Command", ""]
    out.append(
        f"`{meta['command']}`: {meta['wall_s']:.0f} s wall ({meta['wall_s'] / 60:.1f} min), "
        f"{meta['cpu_s']:.0f} s of CPU time, on {os.cpu_count()} shared CPU cores; JAX "
        f"{jax.__version__}, optax {optax.__version__}, lookax {lookax.__version__}."
    )
    out += ["", _caveats(settings, meta), ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argument_parser("lm.py", __doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="under a minute: tiny model, 24 steps, one seed, two learning rates a row",
    )
    parser.add_argument(
        "--rows", help=f"comma-separated subset of rows: {','.join(row_keys())} (default: all)"
    )
    parser.add_argument("--out", help="output directory (default: benchmarks/results)")
    parser.add_argument("--steps", type=int, help="training steps (full: 1000, quick: 24)")
    parser.add_argument("--seeds", type=int, help="seeds (full: 3, quick: 1)")
    parser.add_argument(
        "--lr-scale",
        type=float,
        default=1.0,
        help="multiply every row's learning-rate grid (a check of a grid's edge); other than 1, "
        "the output names get _lr_x<scale>",
    )
    args = parser.parse_args(argv)
    if not args.lr_scale > 0:
        parser.error("--lr-scale must be positive")
    if args.rows:
        unknown = set(args.rows.split(",")) - set(row_keys())
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}; choose from {row_keys()}")
    settings = QUICK if args.quick else FULL
    if args.steps is not None:
        multiple = math.lcm(settings.eval_every, *settings.periods, settings.snoo_period)
        if args.steps < multiple or args.steps % multiple:
            parser.error(f"--steps must be a positive multiple of {multiple}")
        warmup = max(1, settings.warmup * args.steps // settings.steps)
        settings = dataclasses.replace(settings, steps=args.steps, warmup=warmup)
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error("--seeds must be positive")
        settings = dataclasses.replace(settings, seeds=args.seeds)
    return args, settings


def select_rows(args: argparse.Namespace, settings: Settings) -> tuple[list[RowSpec], list[str]]:
    """The rows to run, and a line for each left out for a missing lookax feature."""
    keys = args.rows.split(",") if args.rows else None
    rows, left_out = [], []
    for row in all_rows(settings):
        if keys is not None and row.key not in keys:
            continue
        if feature_available(row.feature):
            rows.append(dataclasses.replace(row, grid=tuple(g * args.lr_scale for g in row.grid)))
        else:
            left_out.append(
                f"{row.label} ({row.key}): the installed lookax.lookahead/diloco has no "
                f"`{row.feature}` keyword yet."
            )
    return rows, left_out


def _command(argv: Sequence[str] | None) -> str:
    command = command_line("lm.py", argv)
    niceness = os.nice(0)
    return f"nice -n {niceness} {command}" if niceness else command


def _outputs(args: argparse.Namespace, settings: Settings) -> dict[str, pathlib.Path]:
    out = pathlib.Path(args.out) if args.out else HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if settings.quick else ""
    if args.lr_scale != 1:
        suffix += f"_lr_x{args.lr_scale:g}"
    return {
        "md": out / f"lm{suffix}.md",
        "png": out / f"lm{suffix}_curves.png",
        "json": out / f"lm{suffix}.json",
    }


def _setup(settings: Settings) -> tuple[ByteLM, dict[str, np.ndarray], Evaluator, dict]:
    model = make_model(settings)
    streams, info = load_streams(settings)
    windows = {
        "curve": eval_windows(streams["validation"], settings.curve_windows, settings.context),
        "validation": eval_windows(streams["validation"], settings.final_windows, settings.context),
        "test": eval_windows(streams["test"], settings.final_windows, settings.context),
    }
    evaluate = Evaluator(model, {k: jnp.asarray(v) for k, v in windows.items()})
    params = jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))
    meta = {
        "params": int(sum(math.prod(x.shape) for x in jax.tree.leaves(params))),
        "data": info,
        "final_windows": {k: int(v.shape[0]) for k, v in windows.items()},
        "settings": settings.__dict__,
    }
    return model, streams, evaluate, meta


def main(argv: Sequence[str] | None = None) -> int:
    args, settings = _parse_args(argv)
    paths = _outputs(args, settings)
    start, cpu_start = time.perf_counter(), time.process_time()
    rows, left_out = select_rows(args, settings)
    for line in left_out:
        print(f"left out: {line}", flush=True)
    model, streams, evaluate, meta = _setup(settings)
    data = meta["data"]
    print(
        f"model: {meta['params']:,} parameters; data: Python {data['python']} stdlib, "
        f"{data['bytes']} bytes, {data['files']} files; {len(rows)} rows, {settings.steps} "
        f"steps, {settings.seeds} seed(s)",
        flush=True,
    )
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        # The HLO compiles need no data: they run beside the training.
        measured = pool.submit(measure_bytes, rows, model, settings)
        for row in rows:
            result = run_row(row, model, streams, evaluate, settings)
            results.append(result)
            print(
                f"done: {row.label}: lr {result.lr:g}, validation bpb {_pm(result.val)}, "
                f"test bpb {_pm(result.test)} ({result.seconds:.0f}s)",
                flush=True,
            )
        hlo = measured.result()
    for result in results:
        result.bytes, result.bytes_lowered = hlo.get(result.row.key, (None, None))
    meta.update(
        command=_command(argv),
        wall_s=time.perf_counter() - start,
        cpu_s=time.process_time() - cpu_start,
        left_out=left_out,
    )
    plot(results, settings, paths["png"])
    text = markdown(results, settings, meta, paths["png"].name)
    paths["md"].write_text(text)
    paths["json"].write_text(json.dumps(to_json(results, meta), indent=1, default=str))
    print()
    print(text)
    print(f"wrote {paths['md']}, {paths['png']} and {paths['json']}")
    print(f"total run time: {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
