#!/usr/bin/env python
"""Where the compile time of a ``lax.cond`` Lookahead goes on XLA:CPU.

Usage::

    python benchmarks/compile_floor.py            # ResNet-50 tree, 3 rounds (about 1-2 minutes)
    python benchmarks/compile_floor.py --quick    # a small tree, 1 round

Section 6 of DESIGN.md asks for a Lookahead(Adam) step that compiles in at
most 1.3x the time of an Adam step. This script measures what stands in the
way, on the ResNet-50 tree of ``step_time.py``:

1. XLA:CPU compiles a kernel once per distinct body: N elementwise kernels of
   one shape compile in about the time of one, N of N shapes in N times that.
   So compile time follows the *distinct* kernels (per leaf shape, not per leaf).
2. Adam is 3 distinct kernels per leaf shape (``m``, ``v``, and the update
   fused into ``optax.apply_updates``). A cond-based Lookahead materializes the
   updates (they are an operand of the cond: +1 per shape) and its sync branch
   writes two arrays per leaf, the updates and the slow weights (+1 per shape;
   the second kernel, ``p + update``, is the same as ``apply_updates``'s and is
   shared). Without multi-output fusion, which XLA:CPU does not do, that is
   5 against 3.
3. Two probes that are not Lookaheads bound what any cond design can reach:
   the updates crossing a cond whose other branch runs one kernel per leaf
   (``-u``), and the same cond with no kernel at all in either branch (the
   branch swaps two operands of the same types; XLA inserts copies for it).

Each candidate is compiled ``rounds`` times, interleaved; the medians of the
compile CPU time are printed with the kernel counts of ``step_time.hlo_stats``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import step_time  # noqa: E402
from formulations import _common  # noqa: E402

import lookax  # noqa: E402


def cond_probe(inner: optax.GradientTransformation, branch: str) -> optax.GradientTransformation:
    """The inner updates cross a ``lax.cond`` whose sync branch does no Lookahead work.

    ``branch='negate'``: the sync branch returns ``-u`` (one kernel per leaf);
    ``branch='swap'``: it returns the operands swapped (no kernel; copies).
    Not an optimizer: a measuring probe for the compile cost of the cond itself.
    """

    def update_fn(updates, state, params=None):
        u, inner_state = inner.update(updates, state.inner_state, params)
        is_sync = state.phase + 1 >= step_time.K
        if branch == "negate":
            sync = lambda ops: (jax.tree.map(jnp.negative, ops[0]), ops[1])  # noqa: E731
        else:
            sync = lambda ops: (ops[1], ops[0])  # noqa: E731
        new_u, slow = jax.lax.cond(is_sync, sync, lambda ops: ops, (u, state.slow))
        count, phase = _common.next_counters(state, is_sync)
        return new_u, _common.State(count, phase, slow, inner_state)

    return optax.GradientTransformation(lambda p: _common.init(inner, p), update_fn)


def compile_cpu_seconds(fn, *args) -> float:
    lowered = jax.jit(fn).trace(*args).lower()
    start = time.process_time()
    lowered.compile()
    return time.process_time() - start


def kernel_dedup(count: int) -> tuple[float, float]:
    """Compile CPU time of ``count`` elementwise kernels: one shape, then all distinct."""

    def body(xs):
        return [x * 2.0 + 1.0 for x in xs]

    same = [jnp.ones((1000,)) for _ in range(count)]
    distinct = [jnp.ones((1000 + i,)) for i in range(count)]
    return compile_cpu_seconds(body, same), compile_cpu_seconds(body, distinct)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small tree, one round")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    tree = step_time.make_trees(args.quick)[1]
    print("# Compile time of a lax.cond Lookahead on XLA:CPU\n")
    print(f"command: python benchmarks/compile_floor.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print(f"jax {jax.__version__}, backend {jax.default_backend()}; tree: {tree.describe()}\n")

    count = 50 if args.quick else 200
    same, distinct = kernel_dedup(count)
    print(
        f"{count} elementwise kernels: one shape {same:.2f} s, {count} shapes {distinct:.2f} s "
        f"of compile CPU time\n"
    )

    shapes = len({shape for _, shape in tree.shapes})
    adam = step_time.adam
    candidates = {
        "optax.adam": adam,
        "lookax.lookahead(optax.adam)": lambda: lookax.lookahead(adam(), step_time.K),
        "probe: u crosses a cond, branch -u": lambda: cond_probe(adam(), "negate"),
        "probe: u crosses a cond, branch swaps": lambda: cond_probe(adam(), "swap"),
    }
    params = step_time.tree_arrays(tree, step_time.PARAM_VALUE)
    grads = step_time.tree_arrays(tree)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    stats = {}
    for _ in range(rounds):
        for name, make in candidates.items():
            tx = make()
            state = tx.init(params)
            step = step_time._step_fn(tx)
            lowered = jax.jit(step, donate_argnums=(0, 1)).trace(params, state, grads).lower()
            start = time.process_time()
            compiled = lowered.compile()
            times[name].append(time.process_time() - start)
            stats[name] = step_time.hlo_stats(compiled.as_text(), float("nan"), step_time.K)
    base = statistics.median(times["optax.adam"])
    rows = []
    for name in candidates:
        median = statistics.median(times[name])
        hlo = stats[name]
        rows.append(
            [
                name,
                str(hlo.kernels),
                str(hlo.distinct_kernels),
                str(hlo.copies),
                f"{median:.2f}",
                f"{median / base:.2f}",
            ]
        )
    print(f"{shapes} distinct leaf shapes; compile CPU time, median of {rounds} round(s):\n")
    step_time.print_table(
        [
            "candidate", "kernels", "distinct kernels", "copies",
            "compile s (cpu)", "x optax.adam",
        ],
        rows,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
