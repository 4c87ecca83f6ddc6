"""Train a small 1-D CNN on MNIST-1D with lookax optimizers and compare them.

Run ``python -m lookax.demo`` (needs the ``[demo]`` extra). For each optimizer
it trains one model per seed (the seeds run together, vmapped), shows a
progress bar, prints a table of final test accuracy and wall time, and saves a
plot of the loss and accuracy curves. Lookahead runs (``lookahead_*`` and
``ranger``) are evaluated on their slow weights (``lookax.slow_params``); the
plot shows the loss of both their fast and their slow weights.

MNIST-1D (Greydanus 2020) is generated offline by the ``mnist1d`` package;
nothing is downloaded.

Examples::

  python -m lookax.demo
  python -m lookax.demo --steps 1000 --seeds 2 --optimizers adam,lookahead_adam
  python -m lookax.demo --lr lion=3e-4 --output /tmp/curves.png

The plot goes to ``lookax_demo_out/mnist1d.png`` unless ``--output`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lookax
from lookax import _mnist1d

__all__ = ["DEFAULT_OPTIMIZERS", "OPTIMIZER_CHOICES", "main", "make_optimizer"]

# The plain optimizers the demo knows; ``sgd`` is SGD with momentum 0.9, and each
# has a ``lookahead_`` twin (k=5, alpha=0.5, the paper's defaults).
BASE_OPTIMIZERS: dict[str, Callable[[Any], optax.GradientTransformation]] = {
    "sgd": lambda lr: lookax.sgd(lr, momentum=0.9),
    "adam": lambda lr: lookax.adam(lr),
    "adamw": lambda lr: lookax.adamw(lr),
    "nadam": lambda lr: lookax.nadam(lr),
    "radam": lambda lr: lookax.radam(lr),
    "lion": lambda lr: lookax.lion(lr),
    "rmsprop": lambda lr: lookax.rmsprop(lr),
}
LOOKAHEAD_SYNC_PERIOD = 5
LOOKAHEAD_SLOW_STEP_SIZE = 0.5

OPTIMIZER_CHOICES: tuple[str, ...] = (
    *BASE_OPTIMIZERS,
    *(f"lookahead_{name}" for name in BASE_OPTIMIZERS),
    "ranger",
)
DEFAULT_OPTIMIZERS = ("adam", "lookahead_adam", "radam", "lion", "ranger")

# Default learning rates. For sgd, adam, radam, lion and their lookahead_ twins:
# the best of benchmarks/train_quality.py's grid (steps of about 3x, 2000 steps,
# 5 seeds) for this model; Lookahead's best is often a step larger than its inner
# optimizer's. The others (adamw, nadam, rmsprop, ranger) are untuned starting
# points near their relatives'.
LEARNING_RATES: dict[str, float] = {
    "sgd": 0.1,
    "adam": 1e-2,
    "adamw": 1e-2,
    "nadam": 1e-2,
    "radam": 3e-2,
    "lion": 3e-3,
    "rmsprop": 1e-3,
    "lookahead_sgd": 0.3,
    "lookahead_adam": 3e-2,
    "lookahead_adamw": 3e-2,
    "lookahead_nadam": 3e-2,
    "lookahead_radam": 3e-2,
    "lookahead_lion": 3e-3,
    "lookahead_rmsprop": 3e-3,
    "ranger": 3e-2,
}


def default_learning_rate(name: str) -> float:
    return LEARNING_RATES[name]


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """The optimizer called ``name`` (one of :data:`OPTIMIZER_CHOICES`)."""
    if name == "ranger":
        return lookax.ranger(learning_rate)
    if name.startswith("lookahead_"):
        inner = BASE_OPTIMIZERS[name.removeprefix("lookahead_")](learning_rate)
        return lookax.lookahead(
            inner, sync_period=LOOKAHEAD_SYNC_PERIOD, slow_step_size=LOOKAHEAD_SLOW_STEP_SIZE
        )
    return BASE_OPTIMIZERS[name](learning_rate)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _make_parser()
    args = parser.parse_args(argv)
    args.optimizers = _optimizer_names(parser, args.optimizers)
    args.learning_rates = _learning_rates(parser, args.optimizers, args.lr)
    _check_run_options(parser, args)
    return args


def _make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lookax.demo",
        description=(
            "Train a small 1-D CNN on MNIST-1D with lookax optimizers: progress bars, a "
            "table of test accuracy and wall time, and a plot of the curves."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=_positive_int, default=1800, help="training steps per run")
    parser.add_argument(
        "--seeds", type=_positive_int, default=3, help="seeds per optimizer (trained together)"
    )
    parser.add_argument(
        "--optimizers",
        default=",".join(DEFAULT_OPTIMIZERS),
        help="comma-separated names, from: " + ", ".join(OPTIMIZER_CHOICES),
    )
    parser.add_argument(
        "--lr",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override an optimizer's learning rate, e.g. --lr lion=3e-4 (repeatable)",
    )
    parser.add_argument(
        "--output",
        default=os.path.join("lookax_demo_out", "mnist1d.png"),
        help="where to save the plot (.png, .pdf, .svg); missing folders are created",
    )
    parser.add_argument(
        "--eval-every",
        type=_positive_int,
        default=60,
        help=(
            "steps between evaluations (a divisor of --steps; a multiple of 5 and 6 shows "
            "Lookahead's and Ranger's fast weights just before a sync)"
        ),
    )
    parser.add_argument("--batch-size", type=_positive_int, default=100, help="minibatch size")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def _optimizer_names(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """``--optimizers``' comma-separated names, known and each given once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in OPTIMIZER_CHOICES]
    if unknown:
        parser.error(
            f"unknown optimizer(s): {', '.join(unknown)}. Choose from: "
            + ", ".join(OPTIMIZER_CHOICES)
        )
    if not names:
        parser.error("--optimizers is empty")
    if len(set(names)) != len(names):
        parser.error(f"--optimizers lists a name twice: {text}")
    return names


def _learning_rates(
    parser: argparse.ArgumentParser, names: list[str], overrides: list[str]
) -> dict[str, float]:
    """Each optimizer's learning rate: its default, or a ``--lr NAME=VALUE`` override."""
    learning_rates = {name: default_learning_rate(name) for name in names}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--lr expects NAME=VALUE, got {item!r}")
        if name not in names:
            parser.error(f"--lr {item!r}: {name!r} is not among --optimizers ({', '.join(names)})")
        try:
            learning_rates[name] = float(value)
        except ValueError:
            parser.error(f"--lr {item!r}: {value!r} is not a number")
        if not learning_rates[name] > 0:
            parser.error(f"--lr {item!r}: the learning rate must be positive")
    return learning_rates


def _check_run_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Clips ``--eval-every`` to ``--steps``, then refuses steps, batch or output it cannot use."""
    if args.eval_every > args.steps:
        args.eval_every = args.steps
    if args.steps % args.eval_every:
        parser.error(
            f"--steps ({args.steps}) must be a multiple of --eval-every ({args.eval_every})"
        )
    if args.batch_size > 4000:
        parser.error(f"--batch-size ({args.batch_size}) exceeds the 4000 training sequences")
    if not args.output.lower().endswith((".png", ".pdf", ".svg")):
        parser.error(f"--output must end in .png, .pdf or .svg, got {args.output!r}")


def train(
    name: str,
    learning_rate: float,
    data: _mnist1d.Dataset,
    initial_params: Any,
    indices: jax.Array | np.ndarray,
    *,
    eval_every: int,
    progress: bool,
) -> dict[str, Any]:
    """Trains one model per seed with one optimizer.

    ``initial_params`` and ``indices`` (``[seeds, steps, batch]``) are shared by
    every optimizer, so the runs on a seed are paired. Returns metrics
    ``[evals, seeds]``.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    tx = make_optimizer(name, learning_rate)
    steps = indices.shape[1]
    params = jax.tree.map(jnp.copy, initial_params)  # the segment donates its carry
    carry = _mnist1d.TrainCarry(params, jax.jit(jax.vmap(tx.init))(params))
    segment = jax.jit(jax.vmap(_mnist1d.make_segment(tx, data)), donate_argnums=0)

    history: list[dict[str, np.ndarray]] = []
    with tqdm(total=steps, desc=f"{name:>16s}", unit="step", disable=not progress) as bar:
        for first in range(0, steps, eval_every):
            carry, metrics = segment(carry, indices[:, first : first + eval_every])
            metrics = jax.device_get(metrics)
            history.append(metrics)
            bar.update(eval_every)
            bar.set_postfix(
                loss=f"{np.mean(metrics['batch_loss']):.3f}",
                test_acc=f"{np.mean(metrics['test_acc']):.3f}",
            )
    stacked: dict[str, Any] = {key: np.stack([h[key] for h in history]) for key in history[0]}
    stacked["steps"] = np.arange(1, len(history) + 1) * eval_every
    stacked["wall_time"] = time.perf_counter() - start
    stacked["lookahead"] = _mnist1d.has_lookahead(carry.opt_state)
    return stacked


def _table(results: dict[str, dict[str, Any]], learning_rates: dict[str, float]) -> str:
    header = (
        f"{'optimizer':<18s} {'lr':>8s} {'test acc (mean ± std)':>22s} "
        f"{'train loss':>10s} {'wall time':>9s}"
    )
    lines = [header, "-" * len(header)]
    for name, result in results.items():
        acc = result["test_acc"][-1]
        loss = result["train_loss"][-1]
        lines.append(
            f"{name:<18s} {learning_rates[name]:>8.0e} "
            f"{100 * acc.mean():>13.2f} ± {100 * acc.std():4.2f} % "
            f"{loss.mean():>10.4f} {result['wall_time']:>8.1f}s"
        )
    return "\n".join(lines)


def _plot(results: dict[str, dict[str, Any]], path: str, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, result) in enumerate(results.items()):
        color = f"C{i}"
        steps = result["steps"]
        if result["lookahead"]:
            ax_loss.plot(
                steps,
                result["fast_train_loss"].mean(1),
                color=color,
                linestyle=":",
                label=f"{name} (fast weights)",
            )
            label = f"{name} (slow weights)"
        else:
            label = name
        loss = result["train_loss"]
        ax_loss.plot(steps, loss.mean(1), color=color, label=label)
        acc = 100 * result["test_acc"]
        ax_acc.plot(steps, acc.mean(1), color=color, label=name)
        if seeds > 1:
            ax_acc.fill_between(steps, acc.min(1), acc.max(1), color=color, alpha=0.15)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (1000 fixed sequences)")
    ax_loss.set_title("Training loss, mean over seeds")
    ax_loss.legend(fontsize=8)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("test accuracy (%), Lookahead: slow weights")
    ax_acc.set_title("Test accuracy" + (", band: min-max over seeds" if seeds > 1 else ""))
    top = max(100 * r["test_acc"].mean(1).max() for r in results.values())
    ax_acc.set_ylim(max(0.0, top - 30), min(100.0, top + 3))
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.suptitle("lookax on MNIST-1D: small 1-D CNN")
    fig.tight_layout()
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    start = time.perf_counter()
    data = _mnist1d.load_mnist1d()
    print(
        f"MNIST-1D: {len(data.y_train)} training / {len(data.y_test)} test sequences "
        f"of length {data.x_train.shape[1]}; {args.steps} steps of batch {args.batch_size}, "
        f"{args.seeds} seed(s), JAX on {jax.default_backend()}",
        flush=True,
    )
    # Seed s: initial weights from jax.random.key(s), minibatch order from
    # NumPy's default_rng(s); the same for every optimizer.
    init_keys = jnp.stack([jax.random.key(seed) for seed in range(args.seeds)])
    initial_params = jax.jit(jax.vmap(_mnist1d.init_params))(init_keys)
    num_train = len(data.y_train)
    indices = np.stack(
        [
            _mnist1d.host_batch_indices(
                np.random.default_rng(seed), num_train, args.batch_size, args.steps
            )
            for seed in range(args.seeds)
        ]
    )
    results = {}
    for name in args.optimizers:
        results[name] = train(
            name,
            args.learning_rates[name],
            data,
            initial_params,
            indices,
            eval_every=args.eval_every,
            progress=not args.no_progress,
        )
    print()
    print(_table(results, args.learning_rates))
    print(
        "\ntest accuracy after the last step over seeds; Lookahead runs (lookahead_*, ranger) "
        "on their slow weights. Wall time includes compilation."
    )
    _plot(results, args.output, args.seeds)
    print(f"plot saved to {args.output}")
    print(f"total time {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
