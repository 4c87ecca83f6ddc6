"""What the benchmarks share: side-by-side timing, compiled steps, HLO parsing, report pieces.

- timing (step_time.py, train_step.py): candidates run interleaved round-robin,
  and a ratio is the median over rounds of the ratio measured in that round;
- compiled steps (step_time.py, train_step.py): trace+lower and compile times,
  ``memory_analysis()``, and what the HLO says a step moves (:func:`hlo_stats`);
- all-reduces (lm.py, replicas.py): one replica's step compiled under
  ``jax.shard_map`` on host CPU devices, and the bytes its all-reduces carry, read
  from the compiled HLO or the lowered module (:func:`all_reduces`,
  :func:`stablehlo_all_reduces`);
- report pieces: number formats, tables, mean ± std, paired differences, the machine.

The host devices are set by ``_xla_flags`` (before jax is imported, which this
module does).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import gc
import math
import os
import platform
import re
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jaxlib
import numpy as np
import optax
from _xla_flags import DEVICE_COUNT_FLAG, HOST_DEVICES
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import lookax

# ----------------------------------------------------------------------------
# Timing: candidates side by side.
# ----------------------------------------------------------------------------


class Candidate:
    """Something that runs ``n`` training steps on its own params and state."""

    name: str
    compiled: CompiledStep | None = None

    def run(self, n: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclasses.dataclass
class Timing:
    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)
    faults: list[float] = dataclasses.field(default_factory=list)


def time_set(
    candidates: Sequence[Candidate], rounds: int, warmup: int, steps: int
) -> dict[str, Timing]:
    """Per-step wall, cpu and minor page faults of each candidate, each sample ``steps`` steps.

    Absolute times on a shared machine drift, so the candidates take turns within a
    round (forward, then backward), and the first ``warmup`` rounds are dropped.
    """
    timings = {c.name: Timing() for c in candidates}
    for r in range(warmup + rounds):
        order = candidates if r % 2 == 0 else candidates[::-1]
        for c in order:
            gc.collect()
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            wall0, cpu0 = time.perf_counter(), time.process_time()
            c.run(steps)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
            if r >= warmup:
                timings[c.name].wall.append(wall / steps)
                timings[c.name].cpu.append(cpu / steps)
                timings[c.name].faults.append(faults / steps)
    return timings


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b measured in the same round."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------
# Compiled steps: compile times, memory_analysis(), bytes moved.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class CompiledStep:
    executable: Any
    trace_lower_s: float  # wall
    compile_cpu_s: float
    compile_wall_s: float
    argument_bytes: int  # memory_analysis()
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    hlo: HloStats

    @property
    def compile_s(self) -> float:
        """What a fresh ``jax.jit`` costs: trace+lower wall time and compile CPU time."""
        return self.trace_lower_s + self.compile_cpu_s


def compile_step(
    jitted: Any, args: Sequence[Any], sync_period: int | None, compiler_options: dict | None = None
) -> CompiledStep:
    """``jitted`` traced, lowered and compiled on ``args``, each phase timed.

    ``sync_period``: the period of the step's sync conditional, whose branch the
    bytes per step weight by it (see :func:`hlo_stats`).
    """
    wall0 = time.perf_counter()
    lowered = jitted.trace(*args).lower()
    wall1, cpu1 = time.perf_counter(), time.process_time()
    executable = lowered.compile(compiler_options=compiler_options)
    wall2, cpu2 = time.perf_counter(), time.process_time()
    memory = executable.memory_analysis()
    cost = executable.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    cost_bytes = float(cost.get("bytes accessed", math.nan))
    return CompiledStep(
        executable=executable,
        trace_lower_s=wall1 - wall0,
        compile_cpu_s=cpu2 - cpu1,
        compile_wall_s=wall2 - wall1,
        argument_bytes=memory.argument_size_in_bytes,
        output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes,
        temp_bytes=memory.temp_size_in_bytes,
        hlo=hlo_stats(executable.as_text(), cost_bytes, sync_period),
    )


def extra_temp_in_params(step: CompiledStep, reference: CompiledStep, params_bytes: int) -> float:
    """``step``'s compiled temp minus ``reference``'s, in params-sized buffers."""
    return (step.temp_bytes - reference.temp_bytes) / params_bytes


# ----------------------------------------------------------------------------
# HLO text: computations, bytes moved per step, kernels.
# ----------------------------------------------------------------------------

DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_ELEMENTWISE = {
    "add", "subtract", "multiply", "divide", "negate", "sqrt", "rsqrt", "abs", "sign",
    "maximum", "minimum", "select", "convert", "exponential", "log", "power", "compare",
    "and", "or", "not", "clamp", "bitcast", "copy",
}  # fmt: skip
_NOT_KERNELS = {
    "parameter", "constant", "tuple", "get-tuple-element", "bitcast", "conditional",
    "after-all", "partition-id", "replica-id", "opt-barrier",
}  # fmt: skip
Instruction = tuple[str, str, str, str, str]  # name, type, opcode, operands, attributes
Computations = dict[str, list[Instruction]]


def type_bytes(hlo_type: str) -> int:
    """Bytes of an HLO type: ``f32[5,1,32]{2,1,0}`` or a tuple of such."""
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", hlo_type):
        if dtype in DTYPE_BYTES:
            total += DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def hlo_computations(hlo_text: str) -> tuple[str | None, dict[str, list[str]]]:
    """The entry computation's name (None if there is none) and every computation's lines."""
    computations: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            computations[current] = []
            if line.startswith("ENTRY"):
                entry = current
        elif line.startswith("}"):
            current = None
        elif current is not None:
            computations[current].append(line)
    return entry, computations


def _split_instruction(line: str) -> Instruction | None:
    """(name, type, opcode, operands, attributes) of one HLO instruction line."""
    match = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*", line)
    if not match:
        return None
    rest = line[match.end() :]
    if rest.startswith("("):  # tuple type: find its closing parenthesis
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                type_text, rest = rest[: i + 1], rest[i + 1 :].lstrip()
                break
    else:
        type_text, _, rest = rest.partition(" ")
    op = re.match(r"([\w\-]+)\(", rest)
    if not op:
        return None
    depth, start = 0, op.end() - 1
    for i in range(start, len(rest)):
        depth += rest[i] == "("
        depth -= rest[i] == ")"
        if depth == 0:
            return match.group(1), type_text, op.group(1), rest[start + 1 : i], rest[i + 1 :]
    return None


@dataclasses.dataclass
class HloStats:
    bytes_per_step: float  # parsed from the HLO; each sync cond weighted (k-1)/k, 1/k
    cost_analysis_bytes: float
    kernels: int  # compute instructions outside fused computations, branches included
    distinct_kernels: int  # kernels that differ in more than names: what XLA:CPU compiles
    copies: int
    conditionals: int
    kernel_bodies: collections.Counter  # every kernel, names replaced by positions


def hlo_stats(hlo_text: str, cost_bytes: float, sync_period: int | None) -> HloStats:
    """What one step of a compiled module moves and runs.

    ``bytes_per_step``: operands and result of every kernel; a two-branch
    conditional counts as its no-sync branch (k-1)/k of the steps and its sync
    branch 1/k (``k = sync_period``), where ``cost_analysis()`` counts the heavier.
    """
    entry, lines = hlo_computations(hlo_text)
    if entry is None:
        return HloStats(cost_bytes, cost_bytes, 0, 0, 0, 0, collections.Counter())
    computations: Computations = {
        name: [inst for inst in map(_split_instruction, body) if inst]
        for name, body in lines.items()
    }
    bodies: collections.Counter = collections.Counter()
    kernels, copies, conds = _count_kernels(computations, entry, bodies)
    moved = _bytes_moved(computations, entry, sync_period)
    return HloStats(moved, cost_bytes, kernels, len(bodies), copies, conds, bodies)


def _branches(computations: Computations, attrs: str) -> list[str]:
    names = re.findall(r"%([\w.\-]+)", attrs.split("branch_computations=")[-1])
    return [b for b in names if b in computations]


def _sync_weighted(costs: list[float], sync_period: int | None) -> float:
    if sync_period and len(costs) == 2:  # branch 0: no sync (false), branch 1: sync
        return costs[0] * (sync_period - 1) / sync_period + costs[1] / sync_period
    return max(costs, default=0.0)


def _bytes_moved(
    computations: Computations, name: str, sync_period: int | None, nested: bool = False
) -> float:
    """Bytes a computation moves: operands + result of each kernel; conds weighted.

    A cond inside a branch (the outer path's "no finite replica" check within its
    sync branch) counts its heavier branch: it is not the sync cond.
    """
    body = computations.get(name, [])
    sizes = {inst[0]: type_bytes(inst[1]) for inst in body}
    total = 0.0
    for inst_name, _, opcode, operands, attrs in body:
        if opcode == "conditional":
            branches = _branches(computations, attrs)
            costs = [_bytes_moved(computations, b, sync_period, True) for b in branches]
            total += max(costs, default=0.0) if nested else _sync_weighted(costs, sync_period)
        elif opcode not in _NOT_KERNELS:
            total += sizes[inst_name] + _bytes_read(computations, sizes, opcode, operands, attrs)
    return total


def _bytes_read(
    computations: Computations, sizes: dict[str, int], opcode: str, operands: str, attrs: str
) -> int:
    """Bytes one kernel reads: each distinct operand once; of a fusion's, what it slices."""
    fused = re.search(r"calls=%([\w.\-]+)", attrs) if opcode == "fusion" else None
    read, seen = 0, set()
    for index, n in enumerate(re.findall(r"%([\w.\-]+)", operands)):
        if n in seen:
            continue
        seen.add(n)
        size = sizes.get(n, 0)
        read += _operand_bytes(computations, fused.group(1), index, size) if fused else size
    return read


def _operand_bytes(computations: Computations, fused: str, index: int, full: int) -> int:
    """Bytes a fusion reads of operand ``index``: only the slices, if only sliced.

    Follows the operand through elementwise ops of its own shape (a slice of
    ``x * c`` reads a slice of ``x``); anything else reads it whole.
    """
    body = computations.get(fused, [])
    users: dict[str, list[Instruction]] = {}
    for inst in body:
        for n in set(re.findall(r"%([\w.\-]+)", inst[3])):
            users.setdefault(n, []).append(inst)
    param = next((i[0] for i in body if i[2] == "parameter" and i[3].strip() == str(index)), None)
    read = _sliced_bytes(users, param, full) if param is not None else None
    return full if read is None else min(full, read)


def _sliced_bytes(
    users: dict[str, list[Instruction]], name: str, full: int, depth: int = 0
) -> int | None:
    """The bytes of ``name`` its users slice, or None where one reads it whole."""
    total = 0
    for user in users.get(name, []):
        if user[2] in ("slice", "dynamic-slice"):
            total += type_bytes(user[1])
        elif depth < 8 and type_bytes(user[1]) >= full and user[2] in _ELEMENTWISE:
            inner = _sliced_bytes(users, user[0], full, depth + 1)
            if inner is None:
                return None
            total += inner
        else:
            return None
    return total if users.get(name) else None


def _count_kernels(
    computations: Computations, name: str, bodies: collections.Counter
) -> tuple[int, int, int]:
    """Kernels, copies and conditionals of ``name``, branches included; kernels into ``bodies``."""
    kernels = copies = conds = 0
    for inst in computations.get(name, []):
        opcode, attrs = inst[2], inst[4]
        if opcode == "conditional":
            conds += 1
            for b in _branches(computations, attrs):
                k, c, n = _count_kernels(computations, b, bodies)
                kernels, copies, conds = kernels + k, copies + c, conds + n
        elif opcode not in _NOT_KERNELS:
            kernels += 1
            copies += opcode == "copy"
            bodies[_kernel_key(computations, inst)] += 1
    return kernels, copies, conds


def _kernel_key(computations: Computations, inst: Instruction) -> tuple:
    """What XLA:CPU compiles for a kernel: names aside, its opcode, types and fused body."""
    _, type_text, opcode, operands, attrs = inst
    called = re.search(r"calls=%([\w.\-]+)", attrs)
    if called:
        return (opcode, type_text, _body_key(computations, called.group(1)))
    operand_types = tuple(re.findall(r"(\w+\[[\d,]*\])", operands))
    return (opcode, type_text, operand_types)


def _body_key(computations: Computations, name: str) -> tuple:
    """A computation's instructions with their names replaced by positions."""
    body = computations.get(name, [])
    position = {inst[0]: str(i) for i, inst in enumerate(body)}

    def rename(text: str) -> str:
        text = re.sub(r",?\s*metadata=\{[^}]*\}", "", text)
        return re.sub(r"%([\w.\-]+)", lambda m: "%" + position.get(m.group(1), "?"), text)

    return tuple((t, op, rename(operands), rename(attrs)) for _, t, op, operands, attrs in body)


# ----------------------------------------------------------------------------
# All-reduces: one replica's step under shard_map, and the bytes it all-reduces.
# ----------------------------------------------------------------------------

_INSTRUCTION = re.compile(r"\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+([a-z][\w\-]*)\(")
_MLIR_BYTES = {
    "i1": 1, "i8": 1, "ui8": 1, "i16": 2, "ui16": 2, "f16": 2, "bf16": 2, "i32": 4, "ui32": 4,
    "f32": 4, "i64": 8, "ui64": 8, "f64": 8, "f8E4M3FN": 1, "f8E5M2": 1,
}  # fmt: skip


class AllReduces(NamedTuple):
    """The all-reduces of one step: their operand bytes, the payload of one replica.

    It is not the wire traffic of a particular all-reduce algorithm. An all-reduce
    inside a conditional's branch (a sync) runs only when that branch does.
    """

    outside: int = 0  # bytes all-reduced outside any conditional: every step
    inside: int = 0  # bytes all-reduced inside conditional branches, all of them
    count_outside: int = 0
    count_inside: int = 0
    # The bytes of each branch of the outermost conditionals, nested conditionals'
    # branches all included: they sum to ``inside``.
    branches: tuple[int, ...] = ()
    # The most one outermost conditional all-reduces when it runs (its heaviest branch,
    # nested conditionals at their heaviest): one sync; Streaming DiLoCo's fragments
    # each have their own conditional, which run at different steps.
    peak_inside: int = 0

    def per_step(self, period: int | None) -> float:
        """Bytes per step: a sync branch runs once every ``period`` steps."""
        if self.inside and not period:
            raise ValueError("all-reduces inside a conditional, but no sync period")
        return self.outside + (self.inside / period if self.inside else 0.0)

    @property
    def peak(self) -> int:
        """The most bytes all-reduced at any one step: every step's, plus one sync's."""
        return self.outside + self.peak_inside


def all_reduces(hlo_text: str) -> AllReduces:
    """Every ``all-reduce`` reachable from the entry computation, in or out of a branch."""
    entry, computations = hlo_computations(hlo_text)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    tally = _AllReduceTally(computations)
    tally.computation(entry, in_branch=False)
    return tally.found()


class _AllReduceTally:
    """Walks the call graph from the entry, counting each all-reduce in or out of a branch."""

    def __init__(self, computations: dict[str, list[str]]):
        self.computations = computations
        self.outside = self.inside = self.count_outside = self.count_inside = 0
        self.branches: list[int] = []
        self.peak_inside = 0

    def found(self) -> AllReduces:
        return AllReduces(
            self.outside,
            self.inside,
            self.count_outside,
            self.count_inside,
            tuple(self.branches),
            self.peak_inside,
        )

    def computation(self, name: str, in_branch: bool, depth: int = 0) -> tuple[int, int]:
        """Bytes one run of ``name`` all-reduces: (every branch counted, heaviest branches).

        The first counts every branch of its conditionals, the second each conditional
        at its heaviest branch; the counts and the outermost branches go to the tally.
        """
        if depth > 64:
            raise ValueError(f"HLO call graph too deep at {name}")
        total = heaviest = 0
        for line in self.computations.get(name, []):
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            hlo_type, opcode = match.groups()
            if opcode in ("all-reduce", "all-reduce-start"):
                size = type_bytes(re.sub(r"/\*.*?\*/", "", hlo_type))
                self.count(size, in_branch)
                total, heaviest = total + size, heaviest + size
            if opcode == "conditional":
                every, most = self._conditional(line, in_branch, depth)
            else:
                callees = re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
                runs = [self.computation(callee, in_branch, depth + 1) for callee in callees]
                every, most = sum(t for t, _ in runs), sum(h for _, h in runs)
            total, heaviest = total + every, heaviest + most
        return total, heaviest

    def count(self, size: int, in_branch: bool) -> None:
        if in_branch:
            self.inside += size
            self.count_inside += 1
        else:
            self.outside += size
            self.count_outside += 1

    def _conditional(self, line: str, in_branch: bool, depth: int) -> tuple[int, int]:
        branches = re.search(r"branch_computations=\{([^}]*)\}", line)
        names = re.findall(r"%?([\w.\-]+)", branches.group(1)) if branches else []
        names += re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", line)
        runs = [self.computation(branch, True, depth + 1) for branch in names]
        heaviest = max((most for _, most in runs), default=0)
        if not in_branch:
            self.branches += [every for every, _ in runs]
            self.peak_inside = max(self.peak_inside, heaviest)
        return sum(every for every, _ in runs), heaviest


def _tensor_bytes(types: str) -> int:
    """Bytes of MLIR tensor types: ``tensor<3x32x32xbf16>``, ``tensor<i32>``, ..."""
    total = 0
    for dims, dtype in re.findall(r"tensor<((?:\d+x)*)(\w+)>", types):
        total += _MLIR_BYTES[dtype] * math.prod(int(d) for d in dims.split("x") if d)
    return total


@dataclasses.dataclass
class _OpenOp:
    """An op with regions, open in the lowered text: its bytes per region so far."""

    name: str
    heaviest: list[int]  # nested cases at their heaviest region
    every: list[int]  # nested cases' regions all included

    def next_region(self) -> None:
        self.heaviest.append(0)
        self.every.append(0)


def stablehlo_all_reduces(mlir_text: str) -> AllReduces:
    """Every ``stablehlo.all_reduce`` of a lowered module, in or out of a ``stablehlo.case``.

    The lowered form keeps the all-reduce dtype the program asks for (XLA:CPU's
    compiler widens a bf16 all-reduce to f32). Ops with regions open with ``({``,
    separate regions with ``}, {`` and close with ``}) : (operand types) -> ...``.
    """
    tally = _AllReduceTally({})
    stack: list[_OpenOp] = []
    function = None
    for line in mlir_text.splitlines():
        text = line.strip()
        header = re.match(r"func\.func \w+ @([\w.\-]+)\(", text)
        if header:
            function = header.group(1)
        if "stablehlo.all_reduce" in text and function != "main":
            raise ValueError(f"an all_reduce outside @main (in @{function}): not counted")
        if text.endswith("({"):
            op = re.search(r'"?(stablehlo\.\w+)"?\(', text)
            stack.append(_OpenOp(op.group(1) if op else "?", [0], [0]))
        elif text.startswith("}, {") and stack:
            stack[-1].next_region()
        elif text.startswith("})") and stack:
            _close_op(stack.pop(), stack, text, tally)
    if stack:
        raise ValueError(f"unbalanced regions in the lowered module: {stack[-1].name} left open")
    return tally.found()


def _close_op(op: _OpenOp, stack: list[_OpenOp], text: str, tally: _AllReduceTally) -> None:
    """Counts a closed all_reduce, or a closed case's heaviest region, where it stands."""
    cases = [entry for entry in stack if entry.name == "stablehlo.case"]
    if op.name == "stablehlo.all_reduce":
        size = _tensor_bytes(text.split(":", 1)[1].split("->", 1)[0])
        tally.count(size, in_branch=bool(cases))
        if cases:
            cases[-1].heaviest[-1] += size
            cases[0].every[-1] += size
    elif op.name == "stablehlo.case":
        if cases:  # nested: the enclosing branch counts this one at its heaviest
            cases[-1].heaviest[-1] += max(op.heaviest)
        else:
            tally.branches += op.every
            tally.peak_inside = max(tally.peak_inside, max(op.heaviest))


def map_axes(fn: Callable, axes: Any, *trees: Any) -> Any:
    """``fn(axis, leaf, ...)`` over ``axes`` (0 or None) and the trees it is a prefix of."""
    return jax.tree.map(fn, axes, *trees, is_leaf=lambda x: x is None)


def lower_replica_step(
    step: Callable,
    params: Any,
    opt_state: Any,
    batch: Sequence[jax.ShapeDtypeStruct],
    replicas: int,
    axis: str,
) -> jax.stages.Lowered:
    """One replica's ``step`` under ``jax.shard_map``, one host CPU device per replica, lowered.

    ``step(params, opt_state, *batch) -> (params, opt_state, loss)`` on one replica's
    params, optimizer state (abstract is enough) and ``batch``; the replica axis is
    the mesh axis ``axis``: Lookahead's counters replicated, everything else split
    over the replicas.
    """
    cpus = jax.devices("cpu")
    if len(cpus) < replicas:
        raise RuntimeError(
            f"need {replicas} CPU devices for the shard_map compile, have {len(cpus)}: run the "
            f"benchmark as a program, in a fresh process (it sets "
            f"XLA_FLAGS={DEVICE_COUNT_FLAG}={HOST_DEVICES} before importing jax)"
        )
    mesh = Mesh(np.asarray(cpus[:replicas]), (axis,))
    axes = lookax.replica_axes(opt_state)
    param_axes = jax.tree.map(lambda _: 0, params)
    specs = map_axes(  # None stays None where the state itself holds None
        lambda ax, leaf: None if leaf is None else P() if ax is None else P(axis), axes, opt_state
    )
    squeeze = lambda t, ax: map_axes(lambda a, x: x if a is None else x[0], ax, t)  # noqa: E731
    expand = lambda t, ax: map_axes(lambda a, x: x if a is None else x[None], ax, t)  # noqa: E731

    def local(params: Any, opt_state: Any, *batch: jax.Array) -> tuple:
        params, opt_state, loss = step(
            squeeze(params, param_axes), squeeze(opt_state, axes), *(b[0] for b in batch)
        )
        return expand(params, param_axes), expand(opt_state, axes), loss[None]

    def abstract(leaf: Any, spec: P) -> jax.ShapeDtypeStruct:
        shape = leaf.shape if spec == P() else (replicas, *leaf.shape)
        return jax.ShapeDtypeStruct(shape, leaf.dtype, sharding=NamedSharding(mesh, spec))

    args = (
        jax.tree.map(lambda leaf: abstract(leaf, P(axis)), params),
        jax.tree.map(abstract, opt_state, specs),
        *(abstract(b, P(axis)) for b in batch),
    )
    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis), specs, *(P(axis) for _ in batch)),
        out_specs=(P(axis), specs, P(axis)),
    )
    return jax.jit(sharded).lower(*args)


# ----------------------------------------------------------------------------
# Runs and reports.
# ----------------------------------------------------------------------------


def compile_and_run(jitted: Any, *args: Any) -> tuple[Any, float, float]:
    """``jitted(*args)`` fetched to the host, with its compile and run times apart."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    outputs = jax.device_get(jax.block_until_ready(compiled(*args)))
    return outputs, compile_s, time.perf_counter() - start


def fmt(x: float, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A markdown table with its columns padded, and a blank line."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    print()


def mean_pm_std(values: Any, digits: int) -> str:
    """``mean ± std`` over seeds (std with ddof 1; 0 for one seed)."""
    values = np.asarray(values, np.float64)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {std:.{digits}f}"


def mean_and_se(diff: Any) -> tuple[float, float]:
    """Mean and standard error of per-seed differences (NaN error with one seed)."""
    diff = np.asarray(diff, np.float64)
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return float(diff.mean()), float(se)


def argument_parser(script: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``benchmarks/<script>``, described by its docstring's first paragraph."""
    return argparse.ArgumentParser(
        prog=f"python benchmarks/{script}",
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that ran ``benchmarks/<script>`` (``argv``: its arguments, or sys.argv's)."""
    shown = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{script}", *shown])


def describe_machine(torch_status: str) -> None:
    """Prints the ``## Machine`` section: CPU, memory, load, software versions, flags."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    mem = "?"
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    thp = "?"
    with contextlib.suppress(OSError):
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().strip()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("## Machine\n")
    print(f"- CPU: {model}; {os.cpu_count()} logical CPUs, {usable} usable; RAM {mem}")
    print(f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"- OS: {platform.platform()}; glibc {platform.libc_ver()[1]}; THP {thp}")
    print(
        f"- Python {platform.python_version()}; jax {jax.__version__}; "
        f"jaxlib {jaxlib.__version__}; optax {optax.__version__}; numpy {np.__version__}; "
        f"lookax {lookax.__version__}"
    )
    print(f"- JAX backend: {jax.default_backend()}, devices {jax.devices()}")
    print(f"- XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    for name in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES"):
        if os.environ.get(name):  # an allocator swap changes what a fresh buffer costs
            print(f"- {name}={os.environ[name]!r}")
    print(f"- PyTorch: {torch_status}")
    print()
