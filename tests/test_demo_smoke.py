"""``python -m lookax.demo`` end to end with tiny settings, its flags, and the shared model.

The demo runs in a subprocess as a user would run it; the table, the progress bars and the
plot file are checked. Flag errors are checked in-process (argparse exits before any work).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lookax import _mnist1d, demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_demo_runs_prints_table_and_saves_plot(tmp_path):
    # No --output: the default path, relative to the working directory, folder created.
    output = tmp_path / "lookax_demo_out" / "mnist1d.png"
    command = [
        sys.executable,
        "-m",
        "lookax.demo",
        "--steps",
        "60",
        "--eval-every",
        "30",
        "--seeds",
        "2",
        "--optimizers",
        "adam,ranger",
    ]
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # One table row per optimizer: name, learning rate, accuracy mean ± std, loss, wall time.
    rows = {}
    for line in result.stdout.splitlines():
        match = re.match(
            r"^(\S+)\s+(\S+)\s+([\d.]+) ± ([\d.]+) %\s+([\d.]+)\s+([\d.]+)s$", line.strip()
        )
        if match:
            rows[match.group(1)] = match.groups()
    assert set(rows) == {"adam", "ranger"}, result.stdout
    assert float(rows["adam"][1]) == demo.default_learning_rate("adam")
    # 60 steps of Adam at lr 1e-2 are far above chance (10 classes) on MNIST-1D.
    assert float(rows["adam"][2]) > 25.0, result.stdout
    for name, row in rows.items():
        assert 0.0 <= float(row[2]) <= 100.0, (name, row)
        assert float(row[5]) > 0.0, (name, row)
    assert f"plot saved to {os.path.join('lookax_demo_out', 'mnist1d.png')}" in result.stdout

    # A progress bar per run (tqdm writes to stderr), each reaching 60/60 steps.
    for name in ("adam", "ranger"):
        assert re.search(rf"{name}: 100%.*60/60", result.stderr), result.stderr[-2000:]

    data = output.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000  # two panels with curves, not an empty canvas


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--optimizers", "adam,adamx"], "unknown optimizer(s): adamx. Choose from: sgd, adam"),
        (["--steps", "0"], "expected a positive integer, got '0'"),
        (["--seeds", "two"], "expected a positive integer, got 'two'"),
        (["--steps", "100", "--eval-every", "30"], "must be a multiple of --eval-every"),
        (["--lr", "adam"], "--lr expects NAME=VALUE"),
        (["--lr", "lion=1e-3", "--optimizers", "adam"], "'lion' is not among --optimizers"),
        (["--lr", "adam=-1"], "must be positive"),
        (["--output", "plot.txt"], "--output must end in .png, .pdf or .svg"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo._parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_every_listed_optimizer_builds_and_defaults_are_listed():
    assert set(demo.DEFAULT_OPTIMIZERS) <= set(demo.OPTIMIZER_CHOICES)
    assert {"adam", "lookahead_adam", "radam", "lion", "ranger"} <= set(demo.DEFAULT_OPTIMIZERS)
    params = {"w": jnp.ones((2, 3))}
    for name in demo.OPTIMIZER_CHOICES:
        tx = demo.make_optimizer(name, demo.default_learning_rate(name))
        state = tx.init(params)
        assert _mnist1d.has_lookahead(state) == (name.startswith("lookahead_") or name == "ranger")


@pytest.mark.parametrize(("kernel_size", "stride", "padding"), [(5, 2, 2), (3, 2, 1), (3, 1, 0)])
def test_slice_conv_equals_flax_conv(kernel_size, stride, padding):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 40, 3)), jnp.float32)
    conv = _mnist1d.SliceConv1D(8, kernel_size, stride=stride, padding=padding)
    params = conv.init(jax.random.key(0), x)
    reference = nn.Conv(8, (kernel_size,), strides=stride, padding=[(padding, padding)])
    np.testing.assert_allclose(
        conv.apply(params, x), reference.apply(params, x), rtol=1e-5, atol=1e-5
    )


def test_batch_indices_are_one_permutation_per_epoch():
    host = _mnist1d.host_batch_indices(np.random.default_rng(0), 400, 100, 10)
    device = np.asarray(_mnist1d.batch_indices(jax.random.key(0), 400, 100, 10))
    for indices in (host, device):
        assert indices.shape == (10, 100)
        epochs = indices[:8].reshape(2, 400)
        for epoch in epochs:
            np.testing.assert_array_equal(np.sort(epoch), np.arange(400))
        assert not np.array_equal(epochs[0], epochs[1])
