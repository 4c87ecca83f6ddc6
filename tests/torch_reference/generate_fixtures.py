"""Regenerate the PyTorch golden trajectories that tests/test_torch_parity.py checks lookax against.

Set-up (once; torch is needed only here, never by the test suite)::

    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    pip install --no-deps lion-pytorch

Run from the repository root::

    python tests/torch_reference/generate_fixtures.py

It writes ``tests/fixtures/torch_trajectories_float32.npz`` and ``..._float64.npz``, and the
complex fixtures ``..._complex64.npz`` and ``..._complex128.npz``.

The problem. A parameter tree with a 4-D kernel in torch layout (out, in, kh, kw), a matrix in
torch layout (out, in), a vector and a scalar. The gradient at step t (0-based) is, per leaf,

    g_t = c * (p_t - target) + n_t * d

with fixed arrays ``c`` (positive), ``target``, ``d`` and a bounded scalar stream ``n_t``. The
params start 1 to 2 away from the target in every coordinate, so gradients stay large for most
of the run. Before writing anything the generator checks, for every setting:

- conditioning: a 1e-7 relative perturbation of the initial params grows by at most
  ``MAX_AMPLIFICATION`` over the run (float64), and torch float32 stays within
  ``MAX_F32_VS_F64`` of torch float64 on the same (float32-representable) inputs, so float32
  rounding alone cannot reach the parity tolerance;
- the params move (at least ``MIN_MOVE`` of their scale);
- Lion: every coordinate of the interpolated momentum ``b1 * m + (1 - b1) * g`` stays above
  ``MIN_LION_MOMENTUM`` in magnitude (its sign() would otherwise flip on rounding);
- Ranger: the Ranger2020 reference equals ``torch.optim.RAdam`` on centralized gradients inside
  Lookahead (what lookax.ranger composes) to 1e-13 in float64.

It prints these numbers per setting and stores them in the manifest. Float64 runs use torch's
default dtype float64 (see ``run_torch``). Fixture bytes are deterministic: regenerating with the
same versions changes nothing.

Complex parameters. The complex fixtures run a subset of the settings (``COMPLEX_SETTINGS``, every
optimizer) on a mixed tree: ``kernel``, ``matrix`` and ``scalar`` complex, ``vector`` real, with a
complex ``c`` (its imaginary part couples the real and imaginary parts of the gradient). PyTorch's
rule is ``torch.view_as_real``: each complex number is two real parameters with their own state.
torch.optim applies it itself and gets complex tensors; lion-pytorch (whose ``sgn_()`` of a complex
number is ``z / |z|``) and Ranger 2020.9.4 have no complex support, so their reference gets each
complex leaf as two real parameters, its real and imaginary parts (``SPLIT_CLASSES``); the
generator checks, on each complex torch.optim setting, that the two give the same trajectory (1e-13,
complex128). Gradient convention, checked before anything is written: for a real loss, torch's
``.grad`` of a complex parameter is ``dL/dRe + i dL/dIm``, the conjugate of ``jax.grad``'s output;
JAX users pass that conjugate to optax, so the stored stream ``g`` is fed to lookax as it is.

Every array a run needs is stored in each file, in that file's dtype; the lookax side computes
the same expression from the same arrays. Each setting records the lookax function, its kwargs
(a learning-rate schedule is a JSON description ``{"schedule": optax_name, "kwargs": {...}}``),
the torch class, kwargs and LR scheduler, and, for scheduled runs, the learning rate torch used
at each step (``lr/<setting>``). Params are stored after the steps in ``STORE_STEPS``.
"""

import copy
import json
import math
import sys
import zipfile
from pathlib import Path

import lion_pytorch
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ranger2020 import Ranger2020  # noqa: E402

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures"
NUM_STEPS = 200
STORE_STEPS = (1, 2, 3, 5, 6, 7, 10, 20, 50, 100, 150, 200)
SEED = 20240615
LEAF_SHAPES = {  # torch layout: output axis first
    "kernel": (6, 4, 3, 2),  # (out, in, kh, kw)
    "matrix": (6, 5),
    "vector": (5,),
    "scalar": (),
}
# Gates on the data, checked for every setting before anything is written:
# float32 rounding alone (torch float32 vs torch float64 on the same float32-representable
# inputs) must stay below the parity tolerance, else the test would measure rounding order;
MAX_F32_VS_F64 = 1e-5
# a relative perturbation of the initial params must not grow by more than this factor over
# the run (float64), else the dynamics are too sensitive for a trajectory comparison;
PERTURBATION = 1e-7
MAX_AMPLIFICATION = 10.0
MIN_LION_MOMENTUM = 1e-2
MIN_MOVE = 5e-3
# torch.optim on complex tensors vs the same optimizer on real and imaginary parts (float64).
MAX_NATIVE_VS_SPLIT = 1e-13


# --- learning-rate schedules: an optax schedule description and the same values in Python ---


def step_decay(init_value, every, factor):
    """optax.exponential_decay(staircase=True) <-> torch StepLR(step_size=every, gamma=factor)."""
    desc = {
        "schedule": "exponential_decay",
        "kwargs": {
            "init_value": init_value,
            "transition_steps": every,
            "decay_rate": factor,
            "staircase": True,
        },
    }
    torch_sched = {"class": "StepLR", "kwargs": {"step_size": every, "gamma": factor}}
    return desc, torch_sched


def exponential(init_value, gamma):
    """optax.exponential_decay(transition_steps=1) <-> torch ExponentialLR(gamma)."""
    desc = {
        "schedule": "exponential_decay",
        "kwargs": {"init_value": init_value, "transition_steps": 1, "decay_rate": gamma},
    }
    torch_sched = {"class": "ExponentialLR", "kwargs": {"gamma": gamma}}
    return desc, torch_sched


def warmup_cosine(init_value, peak_value, warmup_steps, decay_steps, end_value):
    """optax.warmup_cosine_decay_schedule <-> torch LambdaLR with the same formula."""
    desc = {
        "schedule": "warmup_cosine_decay_schedule",
        "kwargs": {
            "init_value": init_value,
            "peak_value": peak_value,
            "warmup_steps": warmup_steps,
            "decay_steps": decay_steps,
            "end_value": end_value,
        },
    }
    torch_sched = {"class": "LambdaLR", "kwargs": {"warmup_cosine": desc["kwargs"]}}
    return desc, torch_sched


def warmup_cosine_value(step, init_value, peak_value, warmup_steps, decay_steps, end_value):
    """The value optax.warmup_cosine_decay_schedule gives at a 0-based step, in float64."""
    if step < warmup_steps:
        return init_value + (peak_value - init_value) * step / warmup_steps
    count = min(step - warmup_steps, decay_steps - warmup_steps)
    alpha = end_value / peak_value
    cosine = 0.5 * (1.0 + math.cos(math.pi * count / (decay_steps - warmup_steps)))
    return peak_value * ((1.0 - alpha) * cosine + alpha)


def make_torch_scheduler(optimizer, spec, base_lr):
    if spec is None:
        return None
    cls, kwargs = spec["class"], spec["kwargs"]
    if cls == "LambdaLR":
        wc = kwargs["warmup_cosine"]
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine_value(step, **wc) / base_lr
        )
    return getattr(torch.optim.lr_scheduler, cls)(optimizer, **kwargs)


# --- the settings ---


# lookax's argument names where torch's differ: RMSprop's decay is torch's alpha, Ranger2020
# names Lookahead's sync_period and slow_step_size k and alpha; b1 and b2 are torch's betas.
TORCH_NAMES = {
    "learning_rate": "lr",
    "decay": "alpha",
    "sync_period": "k",
    "slow_step_size": "alpha",
}
# Ranger2020 always centralizes over torch layout's output axis: lookax's gc_output_axis has
# no torch argument.
LOOKAX_ONLY = ("gc_output_axis",)


def torch_names(lookax_kwargs):
    """The same arguments as torch spells them (b1 and b2 both given, or neither)."""
    if ("b1" in lookax_kwargs) != ("b2" in lookax_kwargs):
        raise ValueError(f"b1 without b2 or b2 without b1: give the torch kwargs, {lookax_kwargs}")
    torch_kwargs = {}
    for key, value in lookax_kwargs.items():
        if key == "b1":
            torch_kwargs["betas"] = (value, lookax_kwargs["b2"])
        elif key not in ("b2", *LOOKAX_ONLY):
            torch_kwargs[TORCH_NAMES.get(key, key)] = value
    return torch_kwargs


def setting(
    name,
    optimizer,
    lookax_kwargs,
    torch_class,
    torch_kwargs=None,
    schedule=None,
    layout="torch",
):
    """One case. ``torch_kwargs`` defaults to ``lookax_kwargs`` in torch's names (see
    ``torch_names``); ``schedule`` is (optax description, torch scheduler spec) or None."""
    if torch_kwargs is None:
        torch_kwargs = torch_names(lookax_kwargs)
    lookax_kwargs = dict(lookax_kwargs)
    torch_scheduler = None
    if schedule is not None:
        desc, torch_scheduler = schedule
        lookax_kwargs["learning_rate"] = desc
        torch_kwargs = dict(torch_kwargs, lr=desc["kwargs"].get("init_value"))
        if desc["schedule"] == "warmup_cosine_decay_schedule":
            torch_kwargs["lr"] = desc["kwargs"]["peak_value"]
    return {
        "name": name,
        "optimizer": optimizer,
        "lookax_kwargs": lookax_kwargs,
        "lookax_layout": layout,
        "torch_class": torch_class,
        "torch_kwargs": torch_kwargs,
        "torch_scheduler": torch_scheduler,
    }


SGD, ADAGRAD, RMSPROP = "torch.optim.SGD", "torch.optim.Adagrad", "torch.optim.RMSprop"
ADADELTA, ADAM, ADAMW = "torch.optim.Adadelta", "torch.optim.Adam", "torch.optim.AdamW"
NADAM, RADAM = "torch.optim.NAdam", "torch.optim.RAdam"
LION, RANGER = "lion_pytorch.Lion", "ranger2020.Ranger2020"

# Settings named *_large_eps use an eps comparable to sqrt(v) so that its placement (inside
# or outside the root, on the bias-corrected or the raw second moment) shows in the trajectory;
# at the default eps it is invisible with gradients of this size.
SETTINGS = [
    # SGD
    setting("sgd_plain", "sgd", {"learning_rate": 0.05}, SGD),
    setting("sgd_momentum_zero", "sgd", {"learning_rate": 0.05, "momentum": 0.0}, SGD),
    setting("sgd_momentum", "sgd", {"learning_rate": 0.02, "momentum": 0.9}, SGD),
    setting(
        "sgd_momentum_dampening",
        "sgd",
        {"learning_rate": 0.02, "momentum": 0.9, "dampening": 0.5},
        SGD,
    ),
    setting("sgd_nesterov", "sgd", {"learning_rate": 0.02, "momentum": 0.9, "nesterov": True}, SGD),
    setting("sgd_weight_decay", "sgd", {"learning_rate": 0.05, "weight_decay": 0.1}, SGD),
    setting(
        "sgd_nesterov_weight_decay",
        "sgd",
        {"learning_rate": 0.02, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05},
        SGD,
    ),
    setting(
        "sgd_momentum_steplr", "sgd", {"momentum": 0.9}, SGD, schedule=step_decay(0.03, 50, 0.5)
    ),
    # Adagrad
    setting("adagrad_default", "adagrad", {}, ADAGRAD),
    setting("adagrad_lr_decay", "adagrad", {"learning_rate": 0.1, "lr_decay": 0.01}, ADAGRAD),
    setting(
        "adagrad_weight_decay", "adagrad", {"learning_rate": 0.1, "weight_decay": 0.1}, ADAGRAD
    ),
    setting(
        "adagrad_initial_accumulator",
        "adagrad",
        {"learning_rate": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-6},
        ADAGRAD,
    ),
    setting("adagrad_large_eps", "adagrad", {"learning_rate": 0.1, "eps": 0.1}, ADAGRAD),
    # RMSprop
    setting("rmsprop_default", "rmsprop", {}, RMSPROP),
    setting(
        "rmsprop_momentum",
        "rmsprop",
        {"learning_rate": 2e-3, "momentum": 0.9, "decay": 0.95},
        RMSPROP,
    ),
    setting(
        "rmsprop_centered",
        "rmsprop",
        {"learning_rate": 5e-3, "centered": True, "eps": 1e-6},
        RMSPROP,
    ),
    setting(
        "rmsprop_centered_large_eps",
        "rmsprop",
        {"learning_rate": 5e-3, "centered": True, "eps": 0.05},
        RMSPROP,
    ),
    setting(
        "rmsprop_centered_momentum_weight_decay",
        "rmsprop",
        {"learning_rate": 2e-3, "momentum": 0.9, "centered": True, "weight_decay": 0.1},
        RMSPROP,
    ),
    setting(
        "rmsprop_momentum_exponentiallr",
        "rmsprop",
        {"momentum": 0.9},
        RMSPROP,
        schedule=exponential(3e-3, 0.99),
    ),
    # Adadelta
    setting("adadelta_default", "adadelta", {}, ADADELTA),
    setting(
        "adadelta_lr_weight_decay",
        "adadelta",
        {"learning_rate": 2.0, "rho": 0.95, "eps": 1e-5, "weight_decay": 0.1},
        ADADELTA,
    ),
    setting("adadelta_large_eps", "adadelta", {"eps": 1e-3}, ADADELTA),
    # Adam
    setting("adam_default", "adam", {}, ADAM),
    setting(
        "adam_tuned", "adam", {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6}, ADAM
    ),
    setting("adam_weight_decay", "adam", {"learning_rate": 1e-2, "weight_decay": 0.1}, ADAM),
    setting("adam_amsgrad", "adam", {"learning_rate": 1e-2, "amsgrad": True}, ADAM),
    setting("adam_large_eps", "adam", {"learning_rate": 1e-2, "eps": 0.05}, ADAM),
    setting(
        "adam_warmup_cosine", "adam", {}, ADAM, schedule=warmup_cosine(1e-3, 2e-2, 20, 200, 1e-3)
    ),
    # AdamW
    setting("adamw_default", "adamw", {}, ADAMW),
    setting("adamw_weight_decay", "adamw", {"learning_rate": 1e-2, "weight_decay": 0.1}, ADAMW),
    setting(
        "adamw_amsgrad",
        "adamw",
        {"learning_rate": 1e-2, "weight_decay": 0.1, "amsgrad": True},
        ADAMW,
    ),
    setting(
        "adamw_steplr", "adamw", {"weight_decay": 0.2}, ADAMW, schedule=step_decay(1e-2, 40, 0.6)
    ),
    # NAdam
    setting("nadam_default", "nadam", {}, NADAM),
    setting("nadam_weight_decay", "nadam", {"learning_rate": 1e-2, "weight_decay": 0.1}, NADAM),
    setting(
        "nadam_decoupled_weight_decay",
        "nadam",
        {"learning_rate": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True},
        NADAM,
    ),
    setting(
        "nadam_momentum_decay",
        "nadam",
        {"learning_rate": 5e-3, "b1": 0.95, "momentum_decay": 1e-2},
        NADAM,
        {"lr": 5e-3, "betas": (0.95, 0.999), "momentum_decay": 1e-2},
    ),
    setting("nadam_large_eps", "nadam", {"learning_rate": 1e-2, "eps": 0.05}, NADAM),
    # RAdam
    setting("radam_default", "radam", {}, RADAM),
    setting("radam_tuned", "radam", {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99}, RADAM),
    setting("radam_weight_decay", "radam", {"learning_rate": 1e-2, "weight_decay": 0.1}, RADAM),
    setting(
        "radam_decoupled_weight_decay",
        "radam",
        {"learning_rate": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True},
        RADAM,
    ),
    setting(
        "radam_large_eps",
        "radam",
        {"learning_rate": 1e-2, "b2": 0.99, "eps": 0.05},
        RADAM,
        {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 0.05},
    ),
    setting("radam_exponentiallr", "radam", {}, RADAM, schedule=exponential(1e-2, 0.995)),
    # Lion
    setting("lion_default", "lion", {}, LION),
    setting("lion_tuned", "lion", {"learning_rate": 2e-3, "b1": 0.95, "b2": 0.98}, LION),
    setting("lion_weight_decay", "lion", {"learning_rate": 2e-3, "weight_decay": 1.0}, LION),
    setting("lion_steplr", "lion", {}, LION, schedule=step_decay(2e-3, 60, 0.5)),
    # Ranger 2020.9.4 at weight_decay=0; torch layout, hence gc_output_axis=0.
    setting("ranger_default", "ranger", {"gc_output_axis": 0}, RANGER),
    setting("ranger_tuned", "ranger", {"learning_rate": 3e-2, "gc_output_axis": 0}, RANGER),
    setting("ranger_no_gc", "ranger", {"learning_rate": 3e-2, "use_gc": False}, RANGER),
    setting(
        "ranger_gc_conv_only",
        "ranger",
        {"learning_rate": 3e-2, "gc_output_axis": 0, "gc_conv_only": True},
        RANGER,
    ),
    setting(
        "ranger_lookahead_options",
        "ranger",
        {
            "learning_rate": 1e-2,
            "b1": 0.9,
            "b2": 0.99,
            "eps": 1e-6,
            "sync_period": 5,
            "slow_step_size": 0.8,
            "gc_output_axis": 0,
        },
        RANGER,
    ),
    setting(
        "ranger_large_eps",
        "ranger",
        {"learning_rate": 3e-2, "eps": 0.05, "gc_output_axis": 0},
        RANGER,
    ),
    # The same torch run, but lookax gets the tree in Flax layout (output axis last) with the
    # default gc_output_axis=-1; the test transposes kernel and matrix both ways.
    setting("ranger_flax_layout", "ranger", {"learning_rate": 3e-2}, RANGER, layout="flax"),
    setting(
        "ranger_warmup_cosine",
        "ranger",
        {"gc_output_axis": 0},
        RANGER,
        schedule=warmup_cosine(1e-3, 1e-2, 20, 200, 1e-4),
    ),
]


# The complex fixtures: one setting per optimizer, chosen for what the complex rule touches
# (per-part second moments with an eps large enough for its placement to show, AMSGrad maxima,
# Lion signs, coupled and decoupled weight decay, centered RMSprop with momentum), on a tree
# whose vector leaf stays real (a mixed tree). Few settings: each costs test compile time.
COMPLEX_SETTINGS = (
    "sgd_nesterov_weight_decay",
    "adagrad_large_eps",
    "rmsprop_centered_momentum_weight_decay",
    "adadelta_large_eps",
    "adam_large_eps",
    "adamw_amsgrad",
    "nadam_large_eps",
    "radam_large_eps",
    "lion_tuned",
    "ranger_tuned",
)
COMPLEX_LEAVES = ("kernel", "matrix", "scalar")
COMPLEX_SEED = SEED + 2


# --- the problem and the runs ---


def make_problem():
    """The problem's arrays, float32-representable so both files hold the same values.

    Targets are 0.5 to 1.5 away from 0 and the scalar leaf starts on the far side of its
    target, so no leaf's max|p| comes near 0 (the relative error divides by it).
    """
    rng = np.random.default_rng(SEED)
    problem = {name: draw_leaf(rng, shape) for name, shape in LEAF_SHAPES.items()}
    noise = rng.uniform(-1.0, 1.0, NUM_STEPS)
    problem = {n: {k: as_f32(v) for k, v in leaf.items()} for n, leaf in problem.items()}
    return problem, as_f32(noise)


def draw_leaf(rng, shape):
    """One leaf's arrays (p0, c, target, d)."""
    target = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 1.5, shape)
    sign = np.sign(target) if shape == () else rng.choice([-1.0, 1.0], shape)
    return {
        "p0": target + sign * rng.uniform(1.0, 2.0, shape),
        "c": rng.uniform(0.5, 1.5, shape),
        "target": target,
        "d": rng.uniform(-0.2, 0.2, shape),
    }


def as_f32(x):
    """``x`` rounded to float32 (each part of a complex array), held in float64/complex128."""
    x = np.asarray(x)
    if np.iscomplexobj(x):
        return as_f32(x.real) + 1j * as_f32(x.imag)
    return np.asarray(x, np.float32).astype(np.float64)


def make_complex_problem():
    """The complex fixtures' problem: ``COMPLEX_LEAVES`` complex, the other leaves real.

    Each part of a complex leaf is drawn as a real leaf is (so neither part of a scalar comes
    near 0), and ``c`` gets an imaginary part of up to 30% of its real part: it couples the real
    and imaginary parts of the gradient, which a real ``c`` would leave as two separate problems.
    """
    rng = np.random.default_rng(COMPLEX_SEED)
    problem = {}
    for name, shape in LEAF_SHAPES.items():
        leaf = draw_leaf(rng, shape)
        if name in COMPLEX_LEAVES:
            imag = draw_leaf(rng, shape)
            coupling = 1.0 + 1j * rng.uniform(-0.3, 0.3, shape)
            leaf = {k: v * coupling if k == "c" else v + 1j * imag[k] for k, v in leaf.items()}
        problem[name] = {k: as_f32(v) for k, v in leaf.items()}
    return problem, as_f32(rng.uniform(-1.0, 1.0, NUM_STEPS))


class RAdamInLookaheadWithGC(torch.optim.RAdam):
    """torch.optim.RAdam on centralized gradients, inside Lookahead (keeping RAdam's state).

    This is what lookax.ranger composes; at weight decay 0 it must equal Ranger 2020.9.4,
    which the generator checks against Ranger2020 before writing anything.
    """

    def __init__(self, params, lr=1e-3, alpha=0.5, k=6, betas=(0.95, 0.999), eps=1e-5, **gc):
        super().__init__(params, lr=lr, betas=betas, eps=eps, foreach=False)
        self.sync_period, self.slow_step_size = k, alpha
        self.use_gc = gc.get("use_gc", True)
        self.min_gc_ndim = 4 if gc.get("gc_conv_only", False) else 2
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.slow = [p.detach().clone() for p in self.params]
        self.count = 0

    @torch.no_grad()
    def step(self, closure=None):
        for p in self.params:
            if self.use_gc and p.grad.dim() >= self.min_gc_ndim:
                rows = p.grad.reshape(p.grad.shape[0], -1)
                p.grad = (rows - rows.mean(dim=1, keepdim=True)).reshape(p.grad.shape)
        super().step()
        self.count += 1
        if self.count % self.sync_period == 0:
            for p, slow in zip(self.params, self.slow, strict=True):
                slow.add_(p - slow, alpha=self.slow_step_size)
                p.copy_(slow)


COMPOSITION = "RAdamInLookaheadWithGC"
# References without complex support: they get a complex leaf as two real parameters.
SPLIT_CLASSES = (LION, RANGER, COMPOSITION)


def make_optimizer(spec, params):
    cls, kwargs = spec["torch_class"], dict(spec["torch_kwargs"])
    if cls == COMPOSITION:
        return RAdamInLookaheadWithGC(params, **kwargs)
    if cls == LION:
        return lion_pytorch.Lion(params, **kwargs)
    if cls == RANGER:
        return Ranger2020(params, **kwargs)
    kwargs["foreach"] = False
    return getattr(torch.optim, cls.rsplit(".", 1)[1])(params, **kwargs)


class TorchLeaf:
    """One leaf of the problem as torch parameters: one tensor, or with ``split`` a complex leaf
    as two real tensors, its real and imaginary parts (for references without complex support).
    """

    def __init__(self, value, split):
        parts = (value.real, value.imag) if split and value.is_complex() else (value,)
        self.params = [torch.nn.Parameter(part.clone()) for part in parts]

    def value(self):
        return torch.complex(*self.params) if len(self.params) == 2 else self.params[0]

    def set_grad(self, grad):
        if len(self.params) == 2:
            self.params[0].grad, self.params[1].grad = grad.real.clone(), grad.imag.clone()
        else:
            self.params[0].grad = grad


def run_torch(spec, problem, noise, dtype, split=None):
    """Run one setting for NUM_STEPS; returns (stored params, lrs, min |Lion momentum|).

    ``dtype`` is the dtype of the complex leaves of a complex problem, of every leaf of a real
    one. ``split`` (default: for ``SPLIT_CLASSES``) gives the optimizer each complex leaf as two
    real parameters. Float64 (complex128) runs set torch's default dtype to float64 for their
    duration: torch.optim keeps its scalar state (``step``, NAdam's ``mu_product``) in float32
    unless the default dtype is float64, which would make a float64 NAdam reference only
    float32-accurate (1e-11 off).
    """
    if split is None:
        split = spec["torch_class"] in SPLIT_CLASSES
    previous_default = torch.get_default_dtype()
    torch.set_default_dtype(dtype.to_real())
    try:
        return _run_torch(spec, problem, noise, dtype, split)
    finally:
        torch.set_default_dtype(previous_default)


def _run_torch(spec, problem, noise, dtype, split):
    names = list(LEAF_SHAPES)

    def tensor(x):
        return torch.tensor(x, dtype=dtype if np.iscomplexobj(x) else dtype.to_real())

    leaves = [TorchLeaf(tensor(problem[n]["p0"]), split) for n in names]
    params = [p for leaf in leaves for p in leaf.params]
    consts = {k: [tensor(problem[n][k]) for n in names] for k in ("c", "target", "d")}
    noise_t = torch.tensor(noise, dtype=dtype.to_real())
    optimizer = make_optimizer(spec, params)
    base_lr = optimizer.param_groups[0]["lr"]
    scheduler = make_torch_scheduler(optimizer, spec["torch_scheduler"], base_lr)
    stored = {n: [] for n in names}
    lrs = []
    min_lion_momentum = math.inf
    for t in range(NUM_STEPS):
        with torch.no_grad():
            for i, leaf in enumerate(leaves):
                p = leaf.value()
                leaf.set_grad(
                    consts["c"][i] * (p - consts["target"][i]) + noise_t[t] * consts["d"][i]
                )
        if spec["torch_class"] == LION:
            b1 = optimizer.param_groups[0]["betas"][0]
            for p in params:
                m = optimizer.state[p].get("exp_avg", torch.zeros_like(p))
                c_t = m * b1 + p.grad * (1.0 - b1)
                min_lion_momentum = min(min_lion_momentum, c_t.abs().min().item())
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if t + 1 in STORE_STEPS:
            for n, leaf in zip(names, leaves, strict=True):
                stored[n].append(leaf.value().detach().numpy().copy())
    return {n: np.stack(v) for n, v in stored.items()}, np.array(lrs), min_lion_momentum


def relative_errors(a, b):
    """Per leaf, the worst over stored steps of max|a - b| / max|b|."""
    errors = {}
    for n in a:
        worst = 0.0
        for x, y in zip(a[n], b[n], strict=True):
            wide = np.promote_types(np.asarray(x).dtype, np.float64)  # complex: complex128
            x64, y64 = np.asarray(x, wide), np.asarray(y, wide)
            worst = max(worst, float(np.max(np.abs(x64 - y64)) / np.max(np.abs(y64))))
        errors[n] = worst
    return errors


def check_ranger_reference(problem, noise):
    """Ranger2020 at weight decay 0 == torch RAdam on centralized gradients inside Lookahead."""
    for spec in SETTINGS:
        if spec["torch_class"] != RANGER:
            continue
        assert spec["torch_kwargs"].get("weight_decay", 0.0) == 0.0
        ranger = run_torch(spec, problem, noise, torch.float64)[0]
        composed = run_torch(dict(spec, torch_class=COMPOSITION), problem, noise, torch.float64)[0]
        err = max(relative_errors(ranger, composed).values())
        print(f"Ranger2020 vs RAdam+GC+Lookahead, {spec['name']}: {err:.1e}")
        assert err < 1e-13, (spec["name"], err)


def write_npz(path, arrays):
    """np.savez_compressed with fixed timestamps, so regenerating changes no bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


REAL_DTYPES = (("float32", torch.float32), ("float64", torch.float64))
COMPLEX_DTYPES = (("complex64", torch.complex64), ("complex128", torch.complex128))
GRADIENT_CONVENTION = (
    "torch's .grad of a complex param (dL/dRe + i dL/dIm for a real loss L) = the conjugate of "
    "jax.grad's output, which JAX users pass to optax: lookax is fed the stored stream as it is"
)


def check_gradient_convention():
    """For a real loss, torch's ``.grad`` of a complex param is the conjugate of ``jax.grad``'s.

    Both are compared with ``dL/dRe + i dL/dIm`` computed by hand, on a loss that is not a
    function of ``|z|`` alone.
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    z0 = rng.normal(size=3) + 1j * rng.normal(size=3)
    a = rng.normal(size=3) + 1j * rng.normal(size=3)

    def loss(z, a, xp):
        return xp.sum(xp.abs(a * z) ** 2 + z.real**3 + z.real * z.imag)

    z = torch.tensor(z0, requires_grad=True)
    loss(z, torch.tensor(a), torch).backward()
    jax_grad = jax.grad(lambda z: loss(z, jnp.asarray(a), jnp))(jnp.asarray(z0, jnp.complex64))
    x, y = z0.real, z0.imag
    by_hand = (2 * np.abs(a) ** 2 * x + 3 * x**2 + y) + 1j * (2 * np.abs(a) ** 2 * y + x)
    np.testing.assert_allclose(z.grad.numpy(), by_hand, rtol=1e-12)
    np.testing.assert_allclose(np.conj(np.asarray(jax_grad)), by_hand, rtol=1e-5)
    print("gradient convention: torch .grad == conj(jax.grad) == dL/dRe + i dL/dIm")


def complex_settings():
    """Copies of the ``COMPLEX_SETTINGS`` specs, each naming how its reference sees complex."""
    by_name = {spec["name"]: spec for spec in SETTINGS}
    specs = []
    for name in COMPLEX_SETTINGS:
        spec = copy.deepcopy(by_name[name])
        split = spec["torch_class"] in SPLIT_CLASSES
        spec["complex_reference"] = (
            "real and imaginary parts as two real parameters"
            if split
            else "complex tensors (torch.optim applies view_as_real)"
        )
        specs.append(spec)
    return specs


def check_complex_rule(settings, problem, noise):
    """torch.optim on complex tensors == the same optimizer on real and imaginary parts."""
    for spec in settings:
        if spec["torch_class"] in SPLIT_CLASSES:
            continue
        native = run_torch(spec, problem, noise, torch.complex128, split=False)[0]
        split = run_torch(spec, problem, noise, torch.complex128, split=True)[0]
        err = max(relative_errors(native, split).values())
        print(f"complex tensors vs real and imaginary parts, {spec['name']}: {err:.1e}")
        assert err < MAX_NATIVE_VS_SPLIT, (spec["name"], err)


def perturb(problem, seed):
    """The problem with each real number of p0 scaled by 1 +- PERTURBATION."""
    rng = np.random.default_rng(seed)

    def scaled(x, shape):
        return x * (1.0 + PERTURBATION * rng.choice([-1.0, 1.0], shape))

    perturbed = {}
    for (name, leaf), shape in zip(problem.items(), LEAF_SHAPES.values(), strict=True):
        p0 = leaf["p0"]
        if np.iscomplexobj(p0):
            p0 = scaled(p0.real, shape) + 1j * scaled(p0.imag, shape)
        else:
            p0 = scaled(p0, shape)
        perturbed[name] = dict(leaf, p0=p0)
    return perturbed


def run_family(settings, problem, noise, dtypes, perturbation_seed):
    """Every setting in both dtypes, and perturbed; returns (runs, problems with the data).

    Adds the gate numbers to each spec (they are printed and stored in the manifest).
    """
    (low, _), (high, high_dtype) = dtypes
    runs = {}
    for dtype_name, dtype in dtypes:
        for spec in settings:
            runs[dtype_name, spec["name"]] = run_torch(spec, problem, noise, dtype)
    perturbed_problem = perturb(problem, perturbation_seed)
    perturbed = {
        spec["name"]: run_torch(spec, perturbed_problem, noise, high_dtype)[0] for spec in settings
    }
    summary, problems = [], []
    for spec in settings:
        name = spec["name"]
        traj_low, _, lion_low = runs[low, name]
        traj_high, _, lion_high = runs[high, name]
        per_leaf = relative_errors(traj_low, traj_high)
        conditioning = max(per_leaf.values())
        worst_leaf = max(per_leaf, key=per_leaf.get)
        amplification = max(relative_errors(perturbed[name], traj_high).values()) / PERTURBATION
        moved = max(
            float(np.max(np.abs(traj_high[n][-1] - p0)) / np.max(np.abs(p0)))
            for n, p0 in ((n, problem[n]["p0"]) for n in LEAF_SHAPES)
        )
        spec[f"{low}_vs_{high}_max_rel"] = conditioning
        spec["perturbation_amplification"] = amplification
        spec["max_relative_move"] = moved
        if spec["torch_class"] == LION:
            spec["min_abs_lion_momentum"] = min(lion_low, lion_high)
            if spec["min_abs_lion_momentum"] < MIN_LION_MOMENTUM:
                problems.append(f"{name}: Lion momentum comes near 0 ({lion_low}, {lion_high})")
        if conditioning > MAX_F32_VS_F64:
            problems.append(f"{name}: {low} vs {high} differ by {conditioning:.2e}")
        if amplification > MAX_AMPLIFICATION:
            problems.append(f"{name}: perturbations grow {amplification:.1f}x")
        if moved < MIN_MOVE:
            problems.append(f"{name}: params barely move ({moved:.2e})")
        lion = spec.get("min_abs_lion_momentum")
        summary.append((name, worst_leaf, conditioning, amplification, moved, lion))
    print_summary(summary, f"{low} vs {high}")
    return runs, problems


def print_summary(summary, conditioning_label):
    print(
        f"{'setting':40s} {conditioning_label:>21s} {'(leaf)':>8s} {'amplif.':>8s}"
        f" {'moved':>7s} {'min|c_t|':>9s}"
    )
    for name, leaf, conditioning, amplification, moved, lion in summary:
        lion_str = "" if lion is None else f"{lion:9.3g}"
        print(
            f"{name:40s} {conditioning:21.2e} {leaf:>8s} {amplification:8.2f} {moved:7.3f}"
            f" {lion_str}"
        )


def write_family(settings, problem, noise, dtypes, runs, extra_manifest):
    """One fixture file per dtype; complex leaves in it, real ones in its real counterpart."""
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    for dtype_name, _ in dtypes:
        np_dtype = np.dtype(dtype_name)
        real_dtype = np.finfo(np_dtype).dtype  # complex64 -> float32; float32 stays
        arrays = {
            "steps": np.array(STORE_STEPS, np.int32),
            "problem/noise": noise.astype(real_dtype),
        }
        for n in LEAF_SHAPES:
            for k, v in problem[n].items():
                leaf_dtype = np_dtype if np.iscomplexobj(v) else real_dtype
                arrays[f"problem/{n}/{k}"] = v.astype(leaf_dtype)
        manifest = {
            "num_steps": NUM_STEPS,
            "dtype": dtype_name,
            "leaves": {n: list(s) for n, s in LEAF_SHAPES.items()},
            "layout": "torch (output axis first)",
            "generator": "tests/torch_reference/generate_fixtures.py",
            "torch_version": torch.__version__,
            **extra_manifest,
            "settings": [],
        }
        for spec in settings:
            traj, lrs, _ = runs[dtype_name, spec["name"]]
            for n in LEAF_SHAPES:
                arrays[f"traj/{spec['name']}/{n}"] = traj[n]
            if spec["torch_scheduler"] is not None:
                arrays[f"lr/{spec['name']}"] = lrs
            manifest["settings"].append(dict(spec, dtype=dtype_name))
        arrays["manifest"] = np.array(json.dumps(manifest, indent=1))
        path = FIXTURE_DIR / f"torch_trajectories_{dtype_name}.npz"
        write_npz(path, arrays)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


def main():
    torch.set_num_threads(1)
    check_gradient_convention()
    problem, noise = make_problem()
    names = [s["name"] for s in SETTINGS]
    assert len(set(names)) == len(names), "duplicate setting names"
    check_ranger_reference(problem, noise)
    complex_specs = complex_settings()  # copies, before the real runs add their gate numbers
    complex_problem, complex_noise = make_complex_problem()
    check_complex_rule(complex_specs, complex_problem, complex_noise)

    real_runs, problems = run_family(SETTINGS, problem, noise, REAL_DTYPES, SEED + 1)
    complex_runs, complex_problems = run_family(
        complex_specs, complex_problem, complex_noise, COMPLEX_DTYPES, COMPLEX_SEED + 1
    )
    if problems or complex_problems:
        raise SystemExit("refusing to write fixtures:\n" + "\n".join(problems + complex_problems))

    write_family(SETTINGS, problem, noise, REAL_DTYPES, real_runs, {})
    complex_manifest = {
        "complex_leaves": list(COMPLEX_LEAVES),
        "gradient_convention": GRADIENT_CONVENTION,
    }
    complex_family = (complex_specs, complex_problem, complex_noise, COMPLEX_DTYPES)
    write_family(*complex_family, complex_runs, complex_manifest)


if __name__ == "__main__":
    main()
