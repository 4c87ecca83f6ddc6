"""Training quality: the Lookahead paper's questions on MNIST-1D.

Zhang, Lucas, Hinton, Ba (2019), "Lookahead Optimizer: k steps forward, 1 step
back", claim that Lookahead (i) improves on its inner optimizer, (ii) makes it
less sensitive to its learning rate, (iii) is itself insensitive to k and
alpha, and (iv) settles where the inner optimizer keeps wobbling (lower
variance). This script puts those claims to a small, fully reproducible test:

- data: MNIST-1D (Greydanus 2020), generated offline by ``mnist1d``'s
  ``make_dataset()`` (4000 train / 1000 test sequences of length 40);
- model: a small 1-D CNN (``lookax.mnist1d.CNN1D``, 8,010 parameters);
- inner optimizers: SGD with momentum 0.9, Adam, RAdam, Lion (lookax's), each
  alone and inside ``lookax.lookahead`` with (k, alpha) = (5, 0.5), (5, 0.8),
  (10, 0.5); a learning-rate grid spanning 100x per optimizer;
- a fixed budget of steps at a constant learning rate, batch 100, several
  seeds; seed s gives the same initial weights and minibatch order to every
  configuration, so comparisons are paired;
- evaluation every ``eval_every`` steps; Lookahead runs are evaluated on their
  slow weights (``lookax.slow_params``).

Every (optimizer, variant) is one compiled function: ``jax.vmap`` over seeds
and over the (learning rate, k, alpha) grid, the whole run in ``lax.scan``.

Usage::

  python benchmarks/train_quality.py            # full run: tables, plots, RESULTS_train_quality.md
  python benchmarks/train_quality.py --quick    # a smaller run, in under 2 minutes

Outputs (in ``--output-dir``, default this directory; ``--quick`` adds
``_quick`` to every name): ``RESULTS_train_quality.md`` (tables, the command,
the reading; its text is ``benchmarks/results/train_quality.md``, summarized in ``RESULTS.md``,
pasted there after a full run), ``train_quality_acc_vs_lr.png``,
``train_quality_curves.png`` and ``train_quality.json`` (every run's final numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# The shared modules beside this file, also when a test loads it by path.
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _measure import (  # noqa: E402
    argument_parser,
    command_line,
    compile_and_run,
    mean_and_se,
    mean_pm_std,
)

import lookax  # noqa: E402
from lookax.mnist1d import Dataset, load_mnist1d, make_train_run  # noqa: E402

BASES: dict[str, tuple[str, Callable[[Any], optax.GradientTransformation], list[float]]] = {
    "sgd_momentum": (
        "SGD, momentum 0.9",
        lambda lr: lookax.sgd(lr, momentum=0.9),
        [1e-2, 3e-2, 1e-1, 3e-1, 1.0],
    ),
    "adam": ("Adam", lambda lr: lookax.adam(lr), [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
    "radam": ("RAdam", lambda lr: lookax.radam(lr), [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
    "lion": ("Lion", lambda lr: lookax.lion(lr), [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]),
}
# (name, k, alpha); k = None is the inner optimizer alone.
VARIANTS: list[tuple[str, int | None, float | None]] = [
    ("alone", None, None),
    ("LA k=5 α=0.5", 5, 0.5),
    ("LA k=5 α=0.8", 5, 0.8),
    ("LA k=10 α=0.5", 10, 0.5),
]


@dataclass
class Settings:
    steps: int
    seeds: int
    eval_every: int
    batch_size: int
    window: int  # evaluations in the within-run stability window
    early_eval: int  # evaluation index used for "early progress"
    bases: list[str]
    lr_slice: slice


def _parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argument_parser("train_quality.py", __doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small run (Adam, 3 learning rates, 3 seeds, 400 steps)",
    )
    parser.add_argument("--steps", type=int, help="training steps per run (full: 2000)")
    parser.add_argument("--seeds", type=int, help="seeds per configuration (full: 5)")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations (full: 50)")
    parser.add_argument(
        "--optimizers",
        help="comma-separated subset of: " + ", ".join(BASES) + " (full: all)",
    )
    parser.add_argument(
        "--cache",
        help=(
            "an .npz file for the raw metrics: written after training, and read instead of "
            "training when it exists and matches the settings (to redo tables and plots)"
        ),
    )
    parser.add_argument(
        "--output-dir",
        default=HERE,
        help="where the markdown, plots and JSON go",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    steps = args.steps or (400 if quick else 2000)
    seeds = args.seeds or (3 if quick else 5)
    eval_every = args.eval_every or 50
    if steps < 1 or seeds < 1 or eval_every < 1:
        parser.error("--steps, --seeds and --eval-every must be positive")
    if steps % eval_every:
        parser.error(f"--steps ({steps}) must be a multiple of --eval-every ({eval_every})")
    if steps // eval_every < 2:
        parser.error("need at least 2 evaluations: lower --eval-every or raise --steps")
    if args.optimizers:
        bases = [b.strip() for b in args.optimizers.split(",") if b.strip()]
        unknown = [b for b in bases if b not in BASES]
        if unknown or not bases:
            parser.error(
                f"unknown optimizer(s): {', '.join(unknown) or '(none given)'}. "
                f"Choose from: {', '.join(BASES)}"
            )
    else:
        bases = ["adam"] if quick else list(BASES)
    num_evals = steps // eval_every
    settings = Settings(
        steps=steps,
        seeds=seeds,
        eval_every=eval_every,
        batch_size=100,
        window=max(2, min(10, num_evals // 4)),
        early_eval=max(0, num_evals // 4 - 1),
        bases=bases,
        lr_slice=slice(1, 4) if quick else slice(None),
    )
    return args, settings


def _make_tx(base: Callable[[Any], optax.GradientTransformation], lookahead: bool):
    if not lookahead:
        return lambda h: base(h["lr"])
    return lambda h: lookax.lookahead(base(h["lr"]), sync_period=h["k"], slow_step_size=h["alpha"])


def run_group(
    base: Callable[[Any], optax.GradientTransformation],
    lookahead: bool,
    hparams: dict[str, np.ndarray],
    data: Dataset,
    settings: Settings,
) -> tuple[dict[str, np.ndarray], float, float]:
    """Runs every (hparams row, seed) of one optimizer family in one compiled call.

    Returns metrics ``[rows, seeds, evals]``, the compile time and the run time.
    """
    run = make_train_run(
        _make_tx(base, lookahead),
        data,
        num_steps=settings.steps,
        eval_every=settings.eval_every,
        batch_size=settings.batch_size,
    )
    seed_keys = jnp.stack([jax.random.key(seed) for seed in range(settings.seeds)])
    batched = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None)))
    hparams = {key: jnp.asarray(value) for key, value in hparams.items()}
    return compile_and_run(batched, hparams, seed_keys)


def run_all(settings: Settings) -> dict[str, Any]:
    data = load_mnist1d()
    results: dict[str, Any] = {}
    for base_name in settings.bases:
        label, base, grid = BASES[base_name]
        lrs = np.asarray(grid[settings.lr_slice], np.float32)
        per_variant: dict[str, dict[str, np.ndarray]] = {}

        metrics, t_compile, t_run = run_group(base, False, {"lr": lrs}, data, settings)
        per_variant[VARIANTS[0][0]] = metrics
        print(
            f"{label:>18s} alone: {len(lrs)} lr x {settings.seeds} seeds, "
            f"compile {t_compile:5.1f}s, run {t_run:6.1f}s",
            flush=True,
        )

        la = VARIANTS[1:]
        hparams = {
            "lr": np.tile(lrs, len(la)),
            "k": np.repeat(np.asarray([k for _, k, _ in la], np.int32), len(lrs)),
            "alpha": np.repeat(np.asarray([a for _, _, a in la], np.float32), len(lrs)),
        }
        metrics, t_compile, t_run = run_group(base, True, hparams, data, settings)
        for i, (variant, _, _) in enumerate(la):
            rows = slice(i * len(lrs), (i + 1) * len(lrs))
            per_variant[variant] = {key: value[rows] for key, value in metrics.items()}
        print(
            f"{label:>18s} lookahead: {len(la)} (k, alpha) x {len(lrs)} lr x "
            f"{settings.seeds} seeds, compile {t_compile:5.1f}s, run {t_run:6.1f}s",
            flush=True,
        )
        results[base_name] = {"label": label, "lrs": lrs, "metrics": per_variant}
    return results


# ----------------------------------------------------------------------------
# Statistics.
# ----------------------------------------------------------------------------


def summarize(results: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Per (optimizer, variant, lr) numbers, each as an array over seeds."""
    summary: dict[str, Any] = {}
    for base_name, result in results.items():
        summary[base_name] = {}
        for variant, m in result["metrics"].items():
            acc = 100 * m["test_acc"]  # [lr, seed, eval]
            final_loss = m["train_loss"][..., -1]
            diverged = ~np.isfinite(final_loss) | ~np.isfinite(m["train_loss"]).all(-1)
            stability = acc[..., -settings.window :].std(-1)
            stability = np.where(diverged, np.nan, stability)
            summary[base_name][variant] = {
                "final_acc": acc[..., -1],  # [lr, seed]
                "stability": stability,  # [lr, seed]; NaN where diverged
                "early_loss": m["train_loss"][..., settings.early_eval],
                "final_loss": final_loss,
                "diverged": diverged,
                "acc_curve": acc,
                "loss_curve": m["train_loss"],
                "fast_loss_curve": m["fast_train_loss"],
            }
    return summary


def best_lr_index(entry: dict[str, np.ndarray]) -> int:
    return int(np.argmax(entry["final_acc"].mean(-1)))


def paired(diff: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of per-seed paired differences."""
    diff = np.asarray(diff, np.float64)
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        return float("nan"), float("nan")
    return mean_and_se(diff)


def verdict(mean: float, se: float, *, higher_is_better: bool = True) -> str:
    """Lookahead better / worse / no clear difference, by a 2-standard-error rule."""
    if not np.isfinite(mean) or not np.isfinite(se):
        return "n/a"
    if se == 0:
        se = 1e-12
    sign = 1.0 if higher_is_better else -1.0
    if sign * mean > 2 * se:
        return "Lookahead better"
    if sign * mean < -2 * se:
        return "Lookahead worse"
    return "no clear difference"


def claims(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The paired comparisons that decide the paper's claims, per optimizer and variant."""
    rows = []
    for base_name, variants in summary.items():
        alone = variants[VARIANTS[0][0]]
        a_best = best_lr_index(alone)
        for variant, _, _ in VARIANTS[1:]:
            la = variants[variant]
            l_best = best_lr_index(la)
            rows.append(
                {
                    "optimizer": base_name,
                    "variant": variant,
                    # (i) final accuracy, each at its own best learning rate
                    "best_acc": paired(la["final_acc"][l_best] - alone["final_acc"][a_best]),
                    # (ii) accuracy averaged over the whole learning-rate grid
                    "grid_acc": paired(la["final_acc"].mean(0) - alone["final_acc"].mean(0)),
                    # (iv) within-run wobble at the best lr and over the grid
                    "best_stab": paired(la["stability"][l_best] - alone["stability"][a_best]),
                    "grid_stab": paired(
                        np.nanmean(la["stability"], 0) - np.nanmean(alone["stability"], 0)
                    ),
                    # early progress (training loss on the evaluation weights)
                    "early_loss": paired(
                        np.log10(la["early_loss"][l_best]) - np.log10(alone["early_loss"][a_best])
                    ),
                }
            )
    return rows


# ----------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------


def _pm(values: np.ndarray, digits: int = 1) -> str:
    return mean_pm_std(values, digits)


def _signed(mean_se: tuple[float, float], digits: int = 2) -> str:
    mean, se = mean_se
    return f"{mean:+.{digits}f} ± {se:.{digits}f}"


def _per_lr_table(
    results: dict[str, Any],
    summary: dict[str, Any],
    variant_names: list[str],
    cell: Callable[[dict[str, np.ndarray], int], str],
) -> list[str]:
    """A markdown table: a row per (optimizer, learning rate), a column per variant."""
    rows = [
        "| optimizer | lr | " + " | ".join(variant_names) + " |",
        "|---|---:|" + "---:|" * len(variant_names),
    ]
    for base_name, result in results.items():
        for i, lr in enumerate(result["lrs"]):
            cells = [cell(summary[base_name][v], i) for v in variant_names]
            rows.append(f"| {result['label']} | {lr:g} | " + " | ".join(cells) + " |")
    return rows


def markdown(
    results: dict[str, Any],
    summary: dict[str, Any],
    claim_rows: list[dict[str, Any]],
    settings: Settings,
    command: str,
    wall_time: float,
    figures: tuple[str, str],
) -> str:
    out = ["## Training quality (MNIST-1D)", ""]
    out += _setup_lines(settings, command, wall_time, figures)
    out += _per_lr_tables(results, summary)
    out += _best_lr_table(results, summary, settings)
    out += _paired_table(results, claim_rows)
    out += ["", "### Reading", ""]
    out += reading(results, summary, claim_rows, settings)
    return "\n".join(out) + "\n"


def _setup_lines(
    settings: Settings, command: str, wall_time: float, figures: tuple[str, str]
) -> list[str]:
    """What was run (data, model, optimizers, seeds, measures), the command and the figures."""
    return [
        "Does Lookahead do on a small, fully reproducible benchmark what its paper (Zhang, Lucas, "
        "Hinton, Ba 2019) says it does? MNIST-1D (Greydanus 2020; 4000 training / 1000 test "
        "sequences, generated offline by `mnist1d.make_dataset()`), a 1-D CNN of 8,010 "
        f"parameters, {settings.steps} steps of batch {settings.batch_size} at a constant "
        f"learning rate, {settings.seeds} seeds. Each inner optimizer (lookax's) runs alone and "
        "inside `lookax.lookahead` with (k, α) = (5, 0.5), (5, 0.8), (10, 0.5), over a "
        "learning-rate grid spanning 100x. Seed s gives every configuration the same initial "
        "weights and minibatch order, so differences are paired by seed. Lookahead runs are "
        "evaluated on their slow weights. Test accuracy is measured every "
        f"{settings.eval_every} steps; *final* is the last evaluation; *wobble* is the standard "
        f"deviation of a run's test accuracy over its last {settings.window} evaluations (steps "
        f"{settings.steps - (settings.window - 1) * settings.eval_every}-{settings.steps}), "
        "averaged over seeds.",
        "",
        f"Command: `{command}` ({wall_time / 60:.1f} min wall time on "
        f"{os.cpu_count()} CPU cores shared with other jobs; JAX {jax.__version__}, "
        f"{platform.machine()}).",
        "",
        f"![accuracy vs learning rate]({figures[0]})",
        "",
        f"![curves at the best learning rate]({figures[1]})",
        "",
    ]


def _per_lr_tables(results: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """Final test accuracy and wobble at every learning rate, a column per variant."""
    variant_names = [v for v, _, _ in VARIANTS]

    def accuracy_cell(entry: dict[str, np.ndarray], i: int) -> str:
        cell = _pm(entry["final_acc"][i])
        if entry["diverged"][i].any():
            cell += f" ({int(entry['diverged'][i].sum())} diverged)"
        return f"**{cell}**" if i == best_lr_index(entry) else cell

    def wobble_cell(entry: dict[str, np.ndarray], i: int) -> str:
        stab = entry["stability"][i]
        return "diverged" if np.isnan(stab).all() else f"{np.nanmean(stab):.2f}"

    out = ["### Test accuracy (%), mean ± std over seeds", ""]
    out += _per_lr_table(results, summary, variant_names, accuracy_cell)
    out += ["", "Bold: the best learning rate of each column.", ""]
    out += [
        "### Wobble: std of test accuracy over the last evaluations (pp), mean over seeds",
        "",
    ]
    out += _per_lr_table(results, summary, variant_names, wobble_cell)
    out.append("")
    return out


def _best_lr_table(
    results: dict[str, Any], summary: dict[str, Any], settings: Settings
) -> list[str]:
    """Each (optimizer, variant) at its best learning rate: accuracy, spread, wobble, loss."""
    out = [
        "### Best learning rate per optimizer",
        "",
        "| optimizer | variant | best lr | test acc (%) | across-seed std | wobble (pp) "
        "| train loss, early | train loss, final |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for base_name, result in results.items():
        for v, _, _ in VARIANTS:
            entry = summary[base_name][v]
            i = best_lr_index(entry)
            out.append(
                f"| {result['label']} | {v} | {result['lrs'][i]:g} | {_pm(entry['final_acc'][i])} "
                f"| {entry['final_acc'][i].std(ddof=1) if settings.seeds > 1 else 0:.2f} "
                f"| {np.nanmean(entry['stability'][i]):.2f} "
                f"| {np.exp(np.log(entry['early_loss'][i]).mean()):.3g} "
                f"| {np.exp(np.log(entry['final_loss'][i]).mean()):.3g} |"
            )
    return out + [
        "",
        f"Training loss: on 1000 fixed training sequences, geometric mean over seeds, *early* "
        f"at step {(settings.early_eval + 1) * settings.eval_every}.",
        "",
    ]


def _paired_table(results: dict[str, Any], claim_rows: list[dict[str, Any]]) -> list[str]:
    """The per-seed differences behind the claims, Lookahead minus its inner optimizer."""
    out = [
        "### Paired differences, Lookahead minus the inner optimizer alone",
        "",
        "Mean ± standard error over seeds of per-seed differences; a difference counts when it "
        "exceeds two standard errors. *best lr*: each configuration at its own best learning "
        "rate (chosen on the same test accuracy, for both sides alike); *grid*: averaged over "
        "the whole learning-rate grid (diverged runs count at their accuracy); *early loss*: "
        "log10 of the training loss at the early evaluation, each at its best lr.",
        "",
        "| optimizer | variant | Δ acc, best lr (pp) | Δ acc, grid (pp) | Δ wobble, best lr "
        "| Δ wobble, grid | Δ log10 early loss |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in claim_rows:
        label = results[row["optimizer"]]["label"]
        out.append(
            f"| {label} | {row['variant']} | {_signed(row['best_acc'])} "
            f"| {_signed(row['grid_acc'])} | {_signed(row['best_stab'])} "
            f"| {_signed(row['grid_stab'])} | {_signed(row['early_loss'])} |"
        )
    return out


def _tally(claim_rows: list[dict[str, Any]], key: str, higher_is_better: bool) -> dict[str, int]:
    counts = {"Lookahead better": 0, "Lookahead worse": 0, "no clear difference": 0, "n/a": 0}
    for row in claim_rows:
        counts[verdict(*row[key], higher_is_better=higher_is_better)] += 1
    return counts


def _which(claim_rows, key, outcome, results, higher_is_better=True) -> str:
    names = [
        f"{results[r['optimizer']]['label']} {r['variant']} ({_signed(r[key])})"
        for r in claim_rows
        if verdict(*r[key], higher_is_better=higher_is_better) == outcome
    ]
    return "; ".join(names) if names else "none"


def _claim_verdict(counts: dict[str, int], n: int) -> str:
    """reproduced: Lookahead better in at least half the pairs and worse in none."""
    better, worse = counts["Lookahead better"], counts["Lookahead worse"]
    if better == 0 or better <= worse:
        return "not reproduced"
    if worse == 0 and 2 * better >= n:
        return "reproduced"
    return "partly reproduced"


def reading(
    results: dict[str, Any],
    summary: dict[str, Any],
    claim_rows: list[dict[str, Any]],
    settings: Settings,
) -> list[str]:
    """The reading, generated from the statistics so that it always matches them.

    A line of verdicts, then each claim's bullet (its verdict, counts and where it
    holds), the across-seed spread and the caveats.
    """
    claimed = {  # claim: (verdict, its bullet)
        "better final accuracy": _accuracy_claim(claim_rows, results),
        "robustness to the learning rate": _robustness_claim(results, summary, claim_rows),
        "settling instead of wobbling": _settling_claim(claim_rows, results),
        "faster early progress": _early_progress_claim(claim_rows, settings),
        "insensitivity to k and α": _insensitivity_claim(results, summary, settings),
    }
    summary_line = "; ".join(f"{claim}: **{v}**" for claim, (v, _) in claimed.items())
    return [
        f"In short: {summary_line}.",
        "",
        f"Each claim is checked on {len(claim_rows)} (inner optimizer, Lookahead setting) pairs "
        f"with {settings.seeds} paired seeds; a pair counts only beyond two standard errors. A "
        "claim is *reproduced* when Lookahead is better in at least half of the pairs and worse "
        "in none, *partly reproduced* when better in more pairs than worse, else *not "
        "reproduced*.",
        "",
        *(bullet for _, bullet in claimed.values()),
        *_spread_lines(results, summary, settings),
        "",
        "Caveats: one small data set and model, a constant learning rate (no schedule), "
        f"{settings.steps} steps; the best learning rate is picked on the test accuracy it is "
        "reported with (the same for every configuration); the paper's experiments are CIFAR, "
        "ImageNet and language models with tuned schedules.",
    ]


def _counted(
    claim_rows: list[dict[str, Any]], key: str, higher_is_better: bool
) -> tuple[dict[str, int], str]:
    """The pairs' verdicts on ``key``, counted, and the claim's verdict from the counts."""
    counts = _tally(claim_rows, key, higher_is_better)
    return counts, _claim_verdict(counts, len(claim_rows))


def _counts_text(
    counts: dict[str, int], n: int, better: str = "better", worse: str = "worse"
) -> str:
    return (
        f"Lookahead {better} in {counts['Lookahead better']}/{n}, {worse} in "
        f"{counts['Lookahead worse']}/{n}, no clear difference in "
        f"{counts['no clear difference']}/{n}"
    )


def _alone_and_first_lookahead(variants: dict[str, Any]) -> tuple[dict, dict]:
    """The inner optimizer alone, and inside the first Lookahead setting (k=5, α=0.5)."""
    return variants[VARIANTS[0][0]], variants[VARIANTS[1][0]]


def _accuracy_claim(claim_rows: list[dict[str, Any]], results: dict[str, Any]) -> tuple[str, str]:
    best, verdict = _counted(claim_rows, "best_acc", True)
    return verdict, (
        f"- **Better final accuracy at a tuned learning rate**: {verdict}. "
        f"{_counts_text(best, len(claim_rows))}. Better: "
        f"{_which(claim_rows, 'best_acc', 'Lookahead better', results)}. Worse: "
        f"{_which(claim_rows, 'best_acc', 'Lookahead worse', results)}."
    )


def _robustness_claim(
    results: dict[str, Any], summary: dict[str, Any], claim_rows: list[dict[str, Any]]
) -> tuple[str, str]:
    grid, verdict = _counted(claim_rows, "grid_acc", True)
    edges, shifts, pattern, rescues = _learning_rate_pattern(results, summary)
    per_setting = []
    for v, _, _ in VARIANTS[1:]:
        deltas = [r["grid_acc"][0] for r in claim_rows if r["variant"] == v]
        per_setting.append(f"{v} {np.mean(deltas):+.1f} pp")
    return verdict, (
        f"- **Robustness to the inner learning rate**: {verdict}. Accuracy averaged over the "
        f"grid: {_counts_text(grid, len(claim_rows))}; mean gain per setting over the inner "
        "optimizers: "
        + ", ".join(per_setting)
        + ". Where it comes from (the three Lookahead settings averaged, minus alone; the "
        "learning rates of largest gain and largest loss): "
        + "; ".join(edges)
        + ". "
        + (
            "For every inner optimizer the gain is at a larger learning rate than the loss: "
            "Lookahead's smaller effective step costs accuracy at small learning rates within "
            "the fixed budget"
            + (
                ", and it rescues large ones at which the inner optimizer alone breaks down "
                "(more than 10 pp below its best). "
                if rescues
                else ". "
            )
            if pattern
            else ""
        )
        + "Best learning rate, alone -> LA k=5 α=0.5: "
        + "; ".join(shifts)
        + "."
    )


def _learning_rate_pattern(
    results: dict[str, Any], summary: dict[str, Any]
) -> tuple[list[str], list[str], bool, bool]:
    """Where over the grid Lookahead gains and loses, per inner optimizer.

    Returns the learning rates of largest gain and largest loss (the three Lookahead
    settings averaged, minus alone), the best learning rate alone -> with Lookahead,
    whether every gain lies at a larger learning rate than the loss, and whether
    every gain is where the inner optimizer alone breaks down.
    """
    edges, shifts, pattern, rescues = [], [], True, True
    for base_name, variants in summary.items():
        alone, la = _alone_and_first_lookahead(variants)
        # Per learning rate: the Lookahead settings' mean accuracy minus alone's.
        delta = np.mean(
            [variants[v]["final_acc"].mean(-1) for v, _, _ in VARIANTS[1:]], axis=0
        ) - alone["final_acc"].mean(-1)
        lrs = results[base_name]["lrs"]
        label = results[base_name]["label"]
        gain, loss = int(np.argmax(delta)), int(np.argmin(delta))
        pattern &= bool(delta[gain] > 0 > delta[loss] and gain > loss)
        alone_mean = alone["final_acc"].mean(-1)
        rescues &= bool(alone_mean[gain] < alone_mean.max() - 10)
        edges.append(
            f"{label} {delta[gain]:+.1f} pp at lr {lrs[gain]:g}, {delta[loss]:+.1f} pp at lr "
            f"{lrs[loss]:g}"
        )
        shifts.append(f"{label} {lrs[best_lr_index(alone)]:g} -> {lrs[best_lr_index(la)]:g}")
    return edges, shifts, pattern, rescues


def _settling_claim(claim_rows: list[dict[str, Any]], results: dict[str, Any]) -> tuple[str, str]:
    n = len(claim_rows)
    stab, verdict = _counted(claim_rows, "best_stab", False)
    stab_grid = _tally(claim_rows, "grid_stab", False)
    return verdict, (
        f"- **Settling instead of wobbling** (lower variance late in training): {verdict}. "
        f"Wobble at the best lr: {_counts_text(stab, n, 'lower', 'higher')}; averaged over "
        "the grid: lower in "
        f"{stab_grid['Lookahead better']}/{n}, higher in {stab_grid['Lookahead worse']}/{n}. "
        "Lower at the best lr: "
        f"{_which(claim_rows, 'best_stab', 'Lookahead better', results, False)}. Higher: "
        f"{_which(claim_rows, 'best_stab', 'Lookahead worse', results, False)}."
    )


def _early_progress_claim(claim_rows: list[dict[str, Any]], settings: Settings) -> tuple[str, str]:
    early, verdict = _counted(claim_rows, "early_loss", False)
    return verdict, (
        f"- **Faster early progress** (lower training loss early on): {verdict}. Training loss "
        f"at step {(settings.early_eval + 1) * settings.eval_every}, each at its best lr: "
        f"{_counts_text(early, len(claim_rows), 'lower', 'higher')}."
    )


def _insensitivity_claim(
    results: dict[str, Any], summary: dict[str, Any], settings: Settings
) -> tuple[str, str]:
    spreads, insensitive = [], True
    for base_name, variants in summary.items():
        accs = [
            variants[v]["final_acc"][best_lr_index(variants[v])].mean() for v, _, _ in VARIANTS[1:]
        ]
        seed_std = np.mean(
            [
                variants[v]["final_acc"][best_lr_index(variants[v])].std(ddof=1)
                if settings.seeds > 1
                else 0.0
                for v, _, _ in VARIANTS
            ]
        )
        insensitive &= bool(max(accs) - min(accs) <= 2 * seed_std)
        spreads.append(
            f"{results[base_name]['label']} {max(accs) - min(accs):.2f} pp "
            f"(across-seed std {seed_std:.2f} pp)"
        )
    verdict = "reproduced at the best learning rate" if insensitive else "not reproduced"
    return verdict, (
        f"- **Insensitivity to k and α**: {verdict}. Criterion: for every inner optimizer, the "
        "range of best-lr accuracy over the three (k, α) settings is within twice the "
        "across-seed standard deviation. Ranges: "
        + "; ".join(spreads)
        + ". Over the whole grid the settings differ: see the mean gains per setting above."
    )


def _spread_lines(
    results: dict[str, Any], summary: dict[str, Any], settings: Settings
) -> list[str]:
    """The across-seed standard deviation at the best lr, alone and with Lookahead."""
    if settings.seeds < 2:
        return []
    ratio = []
    for base_name, variants in summary.items():
        alone, la = _alone_and_first_lookahead(variants)
        ratio.append(
            f"{results[base_name]['label']} "
            f"{alone['final_acc'][best_lr_index(alone)].std(ddof=1):.2f} -> "
            f"{la['final_acc'][best_lr_index(la)].std(ddof=1):.2f} pp"
        )
    return [
        "- **Across-seed spread** at the best lr, alone -> LA k=5 α=0.5: "
        + "; ".join(ratio)
        + f". Indicative only: with {settings.seeds} seeds a standard deviation is itself "
        f"uncertain by about ±{100 / np.sqrt(2 * (settings.seeds - 1)):.0f}%."
    ]


def plots(results, summary, settings, paths: tuple[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = list(results)
    fig, axes = plt.subplots(
        1, len(bases), figsize=(max(4.2 * len(bases), 9.0), 3.8), squeeze=False
    )
    for ax, base_name in zip(axes[0], bases, strict=True):
        lrs = results[base_name]["lrs"]
        for j, (v, _, _) in enumerate(VARIANTS):
            acc = summary[base_name][v]["final_acc"]
            shift = 1.0 + 0.04 * (j - 1.5)  # keep error bars apart
            ax.errorbar(
                lrs * shift,
                acc.mean(1),
                yerr=acc.std(1),
                marker="o",
                markersize=3,
                capsize=2,
                label=v,
            )
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
        ax.minorticks_off()
        ax.set_xlabel("learning rate")
        ax.set_title(results[base_name]["label"])
        means = [summary[base_name][v]["final_acc"].mean(1) for v, _, _ in VARIANTS]
        top, bottom = max(m.max() for m in means), min(m.min() for m in means)
        ax.set_ylim(max(0, bottom - 5), min(100, top + 3))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final test accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(VARIANTS), fontsize=9)
    fig.suptitle(
        f"MNIST-1D, {settings.steps} steps: final test accuracy vs learning rate\n"
        f"mean ± std over {settings.seeds} seeds; Lookahead evaluated on its slow weights"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(2, len(bases), figsize=(4.2 * len(bases), 7), squeeze=False)
    steps = np.arange(1, settings.steps // settings.eval_every + 1) * settings.eval_every
    for col, base_name in enumerate(bases):
        ax_loss, ax_acc = axes[0][col], axes[1][col]
        lrs = results[base_name]["lrs"]
        for j, (v, k, _) in enumerate(VARIANTS):
            entry = summary[base_name][v]
            i = best_lr_index(entry)
            label = f"{v} (lr {lrs[i]:g})"
            color = f"C{j}"
            loss = np.exp(np.log(entry["loss_curve"][i]).mean(0))
            ax_loss.plot(steps, loss, color=color, label=label)
            if k is not None and j == 1:
                fast = np.exp(np.log(entry["fast_loss_curve"][i]).mean(0))
                ax_loss.plot(steps, fast, color=color, linestyle=":", label=f"{v}, fast weights")
            acc = entry["acc_curve"][i]
            ax_acc.plot(steps, acc.mean(0), color=color, label=label)
            ax_acc.fill_between(steps, acc.min(0), acc.max(0), color=color, alpha=0.12)
        ax_loss.set_yscale("log")
        ax_loss.set_title(results[base_name]["label"] + ": training loss, best lr")
        ax_loss.legend(fontsize=7)
        ax_acc.set_title("test accuracy (band: min-max over seeds)")
        ax_acc.set_xlabel("step")
        top = max(summary[base_name][v]["final_acc"].mean(1).max() for v, _, _ in VARIANTS)
        ax_acc.set_ylim(max(0, top - 15), min(100, top + 4))
        ax_acc.grid(alpha=0.3)
        ax_loss.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss (geometric mean over seeds)")
    axes[1][0].set_ylabel("test accuracy (%)")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)


def to_json(results, summary, settings, command, wall_time) -> dict[str, Any]:
    out: dict[str, Any] = {
        "command": command,
        "wall_time_s": wall_time,
        "settings": {
            "steps": settings.steps,
            "seeds": settings.seeds,
            "eval_every": settings.eval_every,
            "batch_size": settings.batch_size,
            "stability_window_evals": settings.window,
        },
        "runs": [],
    }
    for base_name, result in results.items():
        for v, k, alpha in VARIANTS:
            entry = summary[base_name][v]
            for i, lr in enumerate(result["lrs"]):
                out["runs"].append(
                    {
                        "optimizer": base_name,
                        "variant": v,
                        "k": k,
                        "alpha": alpha,
                        "lr": float(lr),
                        "final_test_acc": [float(a) for a in entry["final_acc"][i]],
                        "wobble": [float(s) for s in entry["stability"][i]],
                        "final_train_loss": [float(x) for x in entry["final_loss"][i]],
                        "diverged": [bool(d) for d in entry["diverged"][i]],
                    }
                )
    return out


def _settings_key(settings: Settings) -> str:
    return json.dumps(
        [
            settings.steps,
            settings.seeds,
            settings.eval_every,
            settings.bases,
            str(settings.lr_slice),
        ]
    )


def _save_cache(path: str, settings: Settings, results: dict[str, Any], wall_time: float) -> None:
    arrays = {"settings": np.asarray(_settings_key(settings)), "wall_time": np.asarray(wall_time)}
    for base_name, result in results.items():
        arrays[f"{base_name}/lrs"] = result["lrs"]
        for variant, metrics in result["metrics"].items():
            for key, value in metrics.items():
                arrays[f"{base_name}/{variant}/{key}"] = value
    np.savez_compressed(path, **arrays)


def _load_cache(path: str, settings: Settings) -> tuple[dict[str, Any] | None, float | None]:
    if not os.path.exists(path):
        return None, None
    with np.load(path) as cache:
        if str(cache["settings"]) != _settings_key(settings):
            print(f"{path} holds other settings; training again", flush=True)
            return None, None
        results: dict[str, Any] = {}
        for base_name in settings.bases:
            metrics: dict[str, dict[str, np.ndarray]] = {}
            for variant, _, _ in VARIANTS:
                prefix = f"{base_name}/{variant}/"
                metrics[variant] = {
                    key[len(prefix) :]: cache[key] for key in cache.files if key.startswith(prefix)
                }
            results[base_name] = {
                "label": BASES[base_name][0],
                "lrs": cache[f"{base_name}/lrs"],
                "metrics": metrics,
            }
        return results, float(cache["wall_time"])


def main(argv: Sequence[str] | None = None) -> int:
    args, settings = _parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    shown = []  # the command that reproduces the numbers: --cache only saves a rerun
    skip = False
    for arg in argv:
        if skip or arg.startswith("--cache="):
            skip = False
            continue
        if arg == "--cache":
            skip = True
            continue
        shown.append(arg)
    command = command_line("train_quality.py", shown)
    results, wall_time = _load_cache(args.cache, settings) if args.cache else (None, None)
    if results is None:
        start = time.perf_counter()
        results = run_all(settings)
        wall_time = time.perf_counter() - start
        if args.cache:
            _save_cache(args.cache, settings, results, wall_time)
    else:
        print(f"metrics from {args.cache} (training took {wall_time:.0f}s)")
    summary = summarize(results, settings)
    claim_rows = claims(summary)

    suffix = "_quick" if args.quick else ""
    os.makedirs(args.output_dir, exist_ok=True)
    figures = (f"train_quality{suffix}_acc_vs_lr.png", f"train_quality{suffix}_curves.png")
    plots(results, summary, settings, tuple(os.path.join(args.output_dir, f) for f in figures))
    text = markdown(results, summary, claim_rows, settings, command, wall_time, figures)
    md_path = os.path.join(args.output_dir, f"RESULTS_train_quality{suffix}.md")
    with open(md_path, "w") as f:
        f.write(text)
    json_path = os.path.join(args.output_dir, f"train_quality{suffix}.json")
    with open(json_path, "w") as f:
        json.dump(to_json(results, summary, settings, command, wall_time), f, indent=1)
    print()
    print(text)
    print(f"wrote {md_path}, {json_path} and {', '.join(figures)} ({wall_time:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
