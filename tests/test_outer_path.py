"""The outer path's options against a float64 NumPy reference written from their rules.

The overlapped outer step (``sync_delay=1``), the fault rule (``drop_nonfinite``), the
communication dtype and fragments (Streaming DiLoCo), with 1 and 4 replicas under
``jax.vmap(axis_name=...)`` (Lookahead's counters shared). The reference below is the
algorithm as the ``lookax.lookahead`` docstring states it, call by call, with its own
inner optimizers (torch's SGD-momentum and Adam) and torch's Nesterov outer step; it
never calls lookax. The 4-device ``shard_map`` runs, the HLO checks and the two-process
run are in tests/test_sharding.py and tests/test_multiprocess.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from _helpers import compiled_temp_bytes, update_step

import lookax

SHAPES = {"a": (2, 3), "b": (3,), "c": (4,)}  # 13 floats, three leaves
LR, OUTER_LR, OUTER_MOMENTUM = 0.05, 0.7, 0.9


# --- the float64 reference ------------------------------------------------------------


class SgdMomentum:
    """torch.optim.SGD(lr, momentum=0.9): the buffer starts as the first gradient."""

    def init(self):
        return {"b": None}

    def step(self, g, s):
        b = g if s["b"] is None else 0.9 * s["b"] + g
        return -LR * b, {"b": b}


class Adam:
    """torch.optim.Adam(lr): bias-corrected moments, eps outside the sqrt."""

    def init(self):
        return {"t": 0, "m": 0.0, "v": 0.0}

    def step(self, g, s):
        t = s["t"] + 1
        m = 0.9 * s["m"] + 0.1 * g
        v = 0.999 * s["v"] + 0.001 * g * g
        denom = np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8
        return -LR / (1 - 0.9**t) * m / denom, {"t": t, "m": m, "v": v}


@dataclasses.dataclass
class Setting:
    replicas: int
    inner: str  # "sgdm" or "adam"
    sync_period: int
    sync_delay: int = 0
    on_sync: str = "keep"
    fragment_ids: tuple[int, ...] = (0, 0, 0)  # per leaf a, b, c
    drop: bool = True
    bf16: bool = False


def round_bf16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=ml_dtypes.bfloat16).astype(np.float64)


class Reference:
    """M replicas, one flat vector of the three leaves each, in float64."""

    def __init__(self, setting: Setting, start: np.ndarray):
        self.s = setting
        self.inner = {"sgdm": SgdMomentum, "adam": Adam}[setting.inner]()
        self.params = np.stack([start.copy() for _ in range(setting.replicas)])
        self.slow = start.copy()
        self.inner_states = [self.inner.init() for _ in range(setting.replicas)]
        count = max(setting.fragment_ids) + 1
        self.buffers = [None] * count
        self.left_out = np.zeros(setting.replicas, bool)
        self.dropped = np.zeros(setting.replicas, int)
        sizes = [int(np.prod(shape)) for shape in SHAPES.values()]
        leaf_of = np.repeat(np.arange(len(sizes)), sizes)
        self.members = [np.isin(leaf_of, np.flatnonzero(np.array(setting.fragment_ids) == i))
                        for i in range(count)]  # fmt: skip

    def fragments_at(self, c: int) -> list[int]:
        """The fragments whose sync is call c."""
        h, count = self.s.sync_period, len(self.members)
        return [i for i in range(count) if c % h == (i + 1) * h // count % h]

    def outer_step(self, i: int, fast: np.ndarray) -> bool:
        """Fragment i's outer step on the replicas' fast weights (its members only).

        Returns whether it was taken: with no finite replica it is skipped.
        """
        mask = self.members[i]
        delta = self.slow[mask] - fast[:, mask]
        ok = np.all(np.isfinite(delta), axis=1) if self.s.drop else np.ones(len(delta), bool)
        self.left_out, self.dropped = ~ok, self.dropped + ~ok
        if not ok.any():
            return False
        sent = round_bf16(delta) if self.s.bf16 else delta
        mean = sent[ok].sum(axis=0) / ok.sum()
        b = mean if self.buffers[i] is None else OUTER_MOMENTUM * self.buffers[i] + mean
        self.buffers[i] = b
        self.slow[mask] = self.slow[mask] - OUTER_LR * (mean + OUTER_MOMENTUM * b)
        return True

    def reset(self, left_out: np.ndarray, everyone: bool) -> None:
        for r in range(self.s.replicas):
            if everyone or left_out[r]:
                self.inner_states[r] = self.inner.init()

    def call(self, c: int, grads: np.ndarray) -> None:
        """Update call c (1-based) with per-replica gradients.

        A replica left out is reset at the call after the outer step that left it
        out (with sync_delay=1, the call after the pending call); 'reset' resets
        every replica at the call after a sync.
        """
        pending = self.fragments_at(c - 1) if c > 1 else []
        after_outer_step = (
            pending if self.s.sync_delay == 0 else (self.fragments_at(c - 2) if c > 2 else [])
        )
        left_out = self.left_out.copy()  # as the previous call's outer step left it
        if pending and self.s.sync_delay == 1:
            for i in pending:
                self.outer_step(i, self.params)
        self.reset(
            left_out if after_outer_step else np.zeros_like(left_out),
            everyone=bool(pending) and self.s.on_sync == "reset",
        )
        u = np.empty_like(self.params)
        for r in range(self.s.replicas):
            u[r], self.inner_states[r] = self.inner.step(grads[r], self.inner_states[r])
        new = self.params + u
        if self.s.sync_delay == 0:
            for i in self.fragments_at(c):
                if not self.outer_step(i, self.params + u):
                    continue  # no outer step: the params keep the inner update
                mask = self.members[i]
                new[:, mask] = self.params[:, mask] + (self.slow[mask] - self.params[:, mask])
        else:
            for i in pending:
                mask = self.members[i]
                land = u[:, mask] + (self.slow[mask] - self.params[:, mask])
                new[:, mask] = self.params[:, mask] + land
        self.params = new


# --- lookax under jax.vmap(axis_name="replica") ---------------------------------------


def flat(tree) -> np.ndarray:
    """A params-like tree (leading axes kept) as one array of its leaves, a-b-c order."""
    leaves = [np.asarray(tree[k]) for k in SHAPES]
    lead = leaves[0].shape[: leaves[0].ndim - len(SHAPES["a"])]
    return np.concatenate([x.reshape(*lead, -1) for x in leaves], axis=-1)


def unflat(x: np.ndarray) -> dict:
    out, at = {}, 0
    for k, shape in SHAPES.items():
        n = int(np.prod(shape))
        out[k] = x[..., at : at + n].reshape(*x.shape[:-1], *shape)
        at += n
    return out


def make_tx(setting: Setting, fragments=None):
    inner = {"sgdm": lookax.sgd(LR, momentum=0.9), "adam": lookax.adam(LR)}[setting.inner]
    if fragments is None:
        ids = setting.fragment_ids
        fragments = dict(zip(SHAPES, ids, strict=True)) if max(ids) else 1
    return lookax.diloco(
        inner,
        setting.sync_period,
        OUTER_LR,
        OUTER_MOMENTUM,
        replica_axis="replica",
        inner_state_on_sync=setting.on_sync,
        sync_delay=setting.sync_delay,
        drop_nonfinite=setting.drop,
        communication_dtype=jnp.bfloat16 if setting.bf16 else None,
        fragments=fragments,
    )


def run_lookax(tx, start: np.ndarray, grads_of, steps: int, replicas: int):
    """(params, slow_params, dropped) after every call: (steps, replicas, 13) and (steps, R)."""
    params = lookax.stack_replicas(unflat(jnp.asarray(start, jnp.float32)), replicas)
    state = lookax.stack_replicas(tx.init(unflat(jnp.asarray(start, jnp.float32))), replicas)
    axes = lookax.replica_axes(state)

    def step(p, s, target, poison):
        g = jax.tree.map(lambda x, t, n: x - t + n, p, target, poison)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    vstep = jax.vmap(step, in_axes=(0, axes, 0, 0), out_axes=(0, axes), axis_name="replica")

    @jax.jit
    def run(p, s, targets, poisons):
        def body(carry, xs):
            p, s = vstep(*carry, *xs)
            return (p, s), (p, lookax.slow_params(s, p), lookax.replica_health(s).dropped)

        return jax.lax.scan(body, (p, s), (targets, poisons))[1]

    targets, poisons = grads_of
    fast, slow, dropped = run(params, state, unflat(targets), unflat(poisons))
    return flat(fast), flat(slow), np.asarray(dropped)


def problem(setting: Setting, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    start = rng.normal(size=13)
    targets = rng.normal(size=(steps, setting.replicas, 13))
    return start, targets


def run_both(setting: Setting, steps: int, poison: np.ndarray | None = None, tx=None):
    """The lookax run and the reference's params, slow weights and drop counts per call."""
    start, targets = problem(setting, steps)
    poison = np.zeros_like(targets) if poison is None else poison
    fast, slow, dropped = run_lookax(
        tx or make_tx(setting),
        start,
        (jnp.asarray(targets, jnp.float32), jnp.asarray(poison, jnp.float32)),
        steps,
        setting.replicas,
    )
    ref = Reference(setting, start)
    ref_fast, ref_slow, ref_dropped = [], [], []
    for c in range(1, steps + 1):
        ref.call(c, ref.params - targets[c - 1] + poison[c - 1])
        ref_fast.append(ref.params.copy())
        ref_slow.append(ref.slow.copy())
        ref_dropped.append(ref.dropped.copy())
    return (fast, slow, dropped), (np.stack(ref_fast), np.stack(ref_slow), np.stack(ref_dropped))


def assert_close(actual, expected, rtol):
    """Relative to the largest magnitude; NaN exactly where the reference has NaN."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = ~np.isnan(expected)
    scale = np.max(np.abs(expected[finite]))
    error = np.max(np.abs(actual[finite] - expected[finite])) / scale
    assert error < rtol, f"relative error {error:.2e}"


def assert_matches(setting: Setting, steps: int, poison=None, rtol=1e-5, tx=None):
    (fast, slow, dropped), (ref_fast, ref_slow, ref_dropped) = run_both(setting, steps, poison, tx)
    assert_close(fast, ref_fast, rtol)
    for r in range(setting.replicas):
        assert_close(slow[:, r], ref_slow, rtol)
    np.testing.assert_array_equal(dropped, ref_dropped)
    assert not np.allclose(ref_slow[-1], ref_slow[0])  # the outer steps happened
    return fast, slow, dropped


# --- the overlapped outer step ----------------------------------------------------------


OVERLAPPED = [
    (4, inner, on_sync, sync_period)
    for inner in ("sgdm", "adam")
    for on_sync in ("keep", "reset")
    for sync_period in (1, 3)
] + [(1, "adam", "keep", 3), (1, "sgdm", "reset", 1)]


@pytest.mark.parametrize(("replicas", "inner", "on_sync", "sync_period"), OVERLAPPED)
def test_overlapped_step_matches_the_reference(replicas, inner, on_sync, sync_period):
    setting = Setting(replicas, inner, sync_period, sync_delay=1, on_sync=on_sync)
    fast, slow, _ = assert_matches(setting, steps=10)
    # The sync call returns the inner updates: the params are the fast weights, off slow.
    if sync_period == 3:
        assert not np.allclose(fast[2], slow[2])


@pytest.mark.parametrize("inner", ["sgdm", "adam"])
def test_exact_step_matches_the_reference(inner):
    fast, slow, _ = assert_matches(Setting(4, inner, 3), steps=10)
    np.testing.assert_allclose(fast[2], np.broadcast_to(slow[2], fast[2].shape), rtol=1e-6)


# --- fragments ----------------------------------------------------------------------------

FRAGMENTS = {  # name: (ids of leaves a, b, c; the fragments argument; the inner optimizer)
    "tree-2": ((0, 1, 1), lambda: {"a": 0, "b": 1, "c": 1}, "sgdm"),
    "callable-3": ((2, 0, 1), lambda: lambda params: {"a": 2, "b": 0, "c": 1}, "adam"),
    "int-2": ((0, 1, 1), lambda: 2, "adam"),  # midpoints 3, 7.5, 11 of 13: fragments 0, 1, 1
    "int-3": ((0, 1, 2), lambda: 3, "sgdm"),  # 0.69, 1.73, 2.54 of 3: 0, 1, 2
}


@pytest.mark.parametrize("sync_delay", [0, 1])
@pytest.mark.parametrize("name", sorted(FRAGMENTS))
def test_fragments_match_the_reference(name, sync_delay):
    ids, spec, inner = FRAGMENTS[name]
    setting = Setting(4, inner, 6, sync_delay=sync_delay, fragment_ids=ids)
    assert_matches(setting, steps=14, tx=make_tx(setting, fragments=spec()))


def test_fragment_outer_states_change_only_at_their_syncs():
    tx = lookax.diloco(lookax.sgd(LR, momentum=0.9), 6, fragments={"a": 0, "b": 1, "c": 1})
    params = unflat(jnp.ones(13))
    state = tx.init(params)
    traces = []
    for _ in range(7):
        updates, state = tx.update(params, state, params)
        params = optax.apply_updates(params, updates)
        traces.append([flat_trace(f) for f in state.outer_state.per_fragment])
    moved = [
        [not np.array_equal(a[i], b[i]) for i in range(2)]
        for a, b in zip(traces, traces[1:], strict=False)
    ]
    # fragment 0 syncs at call 3 (and 9), fragment 1 at call 6: transitions 2->3 and 5->6
    assert [m[0] for m in moved] == [False, True, False, False, False, False]
    assert [m[1] for m in moved] == [False, False, False, False, True, False]
    # each fragment's outer state holds its own leaves only
    assert [len(flat_trace(f)) for f in state.outer_state.per_fragment] == [6, 7]


def flat_trace(fragment_state):
    leaves = jax.tree.leaves(fragment_state)
    return np.concatenate([np.ravel(x) for x in leaves if np.ndim(x) > 0])


# --- faults ---------------------------------------------------------------------------------


def nan_poison(setting: Setting, steps: int, replicas, step: int, leaves=("a", "b", "c")):
    poison = np.zeros((steps, setting.replicas, 13))
    mask = flat({k: np.full(SHAPES[k], k in leaves, bool) for k in SHAPES})
    for r in replicas:
        poison[step, r, mask] = np.nan
    return poison


@pytest.mark.parametrize("sync_delay", [0, 1])
def test_a_nan_replica_is_left_out_and_counted(sync_delay):
    setting = Setting(4, "adam", 3, sync_delay=sync_delay)
    poison = nan_poison(setting, 10, replicas=[2], step=4)
    fast, slow, dropped = assert_matches(setting, 10, poison)
    assert np.all(np.isnan(fast[-1, 2])) and np.all(np.isfinite(fast[-1, [0, 1, 3]]))
    assert np.all(np.isfinite(slow))
    assert dropped[-1].tolist() == [0, 0, 2, 0]  # left out of the syncs at 6 and 9


def test_a_nan_in_one_fragment_drops_the_replica_from_that_fragment_only():
    setting = Setting(4, "sgdm", 6, sync_delay=1, fragment_ids=(0, 1, 1))
    poison = nan_poison(setting, 14, replicas=[1], step=3, leaves=("c",))
    fast, _, dropped = assert_matches(setting, 14, poison)
    # fragment 0 (leaf a) keeps replica 1 while its delta is finite; fragment 1 drops it
    assert np.all(np.isfinite(fast[-1, 1, :6])) and np.all(np.isnan(fast[-1, 1, 9:]))
    assert dropped[-1].tolist() == [0, 2, 0, 0]


@pytest.mark.parametrize("sync_delay", [0, 1])
def test_no_finite_replica_means_no_outer_step(sync_delay):
    setting = Setting(4, "sgdm", 3, sync_delay=sync_delay)
    poison = nan_poison(setting, 8, replicas=range(4), step=1)
    (fast, slow, dropped), (ref_fast, _, ref_dropped) = run_both(setting, 8, poison)
    np.testing.assert_array_equal(slow[-1], slow[0])  # the start: no outer step ever
    assert dropped[-1].tolist() == ref_dropped[-1].tolist() == [2, 2, 2, 2]
    assert np.all(np.isnan(fast[-1])) and np.all(np.isnan(ref_fast[-1]))


def test_one_replica_alone_skips_a_nonfinite_outer_step():
    tx = lookax.diloco(lookax.sgd(LR, momentum=0.9), 2, sync_delay=1)
    params = jnp.zeros(3)
    state = tx.init(params)
    for g in (jnp.ones(3), jnp.ones(3), jnp.ones(3), jnp.full(3, jnp.nan), jnp.ones(3)):
        before = np.asarray(lookax.slow_params(state, params))
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    # the outer step of the pending call 5 saw a NaN pseudo-gradient: skipped
    np.testing.assert_array_equal(np.asarray(state.lagging_slow), before)
    assert int(lookax.replica_health(state).dropped) == 1
    assert bool(lookax.replica_health(state).left_out)


def python_loop(tx, replicas: int, steps: int, poison_at: int, recover: bool):
    """A vmapped training loop, optionally with the documented recovery line."""
    setting = Setting(replicas, "adam", 3)
    start, targets = problem(setting, steps)
    params = lookax.stack_replicas(unflat(jnp.asarray(start, jnp.float32)), replicas)
    state = lookax.stack_replicas(tx.init(unflat(jnp.asarray(start, jnp.float32))), replicas)
    axes = lookax.replica_axes(state)

    def step(p, s, target, nan):
        g = jax.tree.map(lambda x, t: x - t + nan, p, target)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    vstep = jax.jit(jax.vmap(step, (0, axes, 0, 0), (0, axes), axis_name="replica"))
    seen = np.zeros(replicas, int)
    for t in range(steps):
        nan = np.where(np.arange(replicas) == 1, np.nan, 0.0) if t == poison_at else np.zeros(4)
        params, state = vstep(params, state, unflat(jnp.asarray(targets[t])), jnp.asarray(nan))
        if recover:
            health = lookax.replica_health(state)
            bad = health.dropped > seen
            seen = np.asarray(health.dropped)
            params = jax.tree.map(
                lambda p, s, bad=bad: jnp.where(bad.reshape((-1,) + (1,) * (p.ndim - 1)), s, p),
                params,
                lookax.slow_params(state, params),
            )
    return flat(params), state


@pytest.mark.parametrize("sync_delay", [0, 1])
def test_the_recovery_line_puts_a_dropped_replica_back(sync_delay):
    tx = make_tx(Setting(4, "adam", 3, sync_delay=sync_delay))
    fast, state = python_loop(tx, 4, 12 + sync_delay, poison_at=4, recover=True)
    assert np.all(np.isfinite(fast))
    assert lookax.replica_health(state).dropped.tolist() == [0, 1, 0, 0]
    # it trains again, never left out again; after the exact step's last sync every
    # replica sits on the slow weights (the overlapped step's are one inner step past them)
    if sync_delay == 0:
        np.testing.assert_allclose(fast[1], fast[0], rtol=1e-6)
    without = python_loop(tx, 4, 12 + sync_delay, poison_at=4, recover=False)[0]
    assert np.all(np.isnan(without[1]))


def test_apply_if_finite_inside_keeps_every_replica_finite():
    inner = optax.apply_if_finite(lookax.adam(LR), max_consecutive_errors=5)
    tx = lookax.diloco(inner, 3, OUTER_LR, OUTER_MOMENTUM, replica_axis="replica", sync_delay=1)
    fast, state = python_loop(tx, 4, 12, poison_at=4, recover=False)
    assert np.all(np.isfinite(fast))
    assert lookax.replica_health(state).dropped.tolist() == [0, 0, 0, 0]


def test_drop_nonfinite_off_spreads_a_nan_to_every_replica():
    setting = Setting(4, "sgdm", 3, drop=False)
    poison = nan_poison(setting, 7, replicas=[0], step=1)
    fast, slow, dropped = run_both(setting, 7, poison)[0]
    assert np.all(np.isnan(fast[-1])) and np.all(np.isnan(slow[-1]))
    assert dropped[-1].tolist() == [0, 0, 0, 0]


# --- fewer bits; replicas that disagree ------------------------------------------------------


@pytest.mark.parametrize("sync_delay", [0, 1])
def test_bf16_communication_within_bf16_rounding_of_the_reference(sync_delay):
    setting = Setting(4, "adam", 3, sync_delay=sync_delay, bf16=True)
    assert_matches(setting, 10, rtol=1e-2)
    # and it differs from the float32 run by about bf16's rounding, not more, not less
    f32 = run_both(dataclasses.replace(setting, bf16=False), 10)[0][0]
    bf16 = run_both(setting, 10)[0][0]
    difference = np.max(np.abs(bf16 - f32)) / np.max(np.abs(f32))
    assert 1e-5 < difference < 1e-2


def test_bf16_communication_with_fragments():
    setting = Setting(4, "sgdm", 6, sync_delay=1, fragment_ids=(0, 1, 1), bf16=True)
    assert_matches(setting, 14, rtol=1e-2)


def test_float8_communication_runs_and_rounds_to_float8():
    """An 8-bit all-reduce (XLA:CPU accepts float8_e4m3fn; it sums in float16)."""
    setting = Setting(4, "adam", 3)
    tx = lookax.diloco(
        lookax.adam(LR), 3, OUTER_LR, OUTER_MOMENTUM, replica_axis="replica",
        communication_dtype=jnp.float8_e4m3fn,
    )  # fmt: skip
    f8 = run_both(setting, 10, tx=tx)[0][0]
    f32 = run_both(setting, 10)[0][0]
    difference = np.max(np.abs(f8 - f32)) / np.max(np.abs(f32))
    assert np.all(np.isfinite(f8)) and 1e-4 < difference < 0.2


def test_replicas_started_apart_are_reported():
    tx = make_tx(Setting(4, "sgdm", 2))
    params = unflat(jnp.zeros(13))
    state = lookax.stack_replicas(tx.init(params), 4)
    axes = lookax.replica_axes(state)
    step = jax.jit(
        jax.vmap(lambda p, s: tx.update(p, s, p), (0, axes), (0, axes), axis_name="replica")
    )

    def diverged_after(replica_params):
        s = state
        for _ in range(4):
            _, s = step(replica_params, s)
        return lookax.replica_health(s).diverged.tolist()

    same = lookax.stack_replicas(params, 4)
    apart = jax.tree.map(lambda x: x + jnp.arange(4.0).reshape((4,) + (1,) * (x.ndim - 1)), same)
    assert diverged_after(same) == [0, 0, 0, 0]
    state = state._replace(
        lagging_slow=apart
    )  # the slow weights, as a per-replica init leaves them
    assert diverged_after(apart) == [2, 2, 2, 2]


# --- the state helpers -------------------------------------------------------------------------


def test_replica_axes_finds_lookaheads_counters_at_any_depth():
    inner = lookax.lookahead(optax.adam(1e-3), 2, 0.5)  # nested Lookahead
    tx = optax.chain(optax.clip(1.0), lookax.diloco(inner, 4, replica_axis="r"))
    state = tx.init({"w": jnp.zeros(3)})
    axes = lookax.replica_axes(state)
    outer, nested = axes[1], axes[1].inner_state
    assert (outer.count, outer.phase, nested.count, nested.phase) == (None,) * 4
    assert outer.lagging_slow == {"w": 0} and nested.inner_state[0].count == 0
    stacked = lookax.stack_replicas(state, 3)
    assert stacked[1].count.shape == () and stacked[1].inner_state.phase.shape == ()
    assert stacked[1].lagging_slow["w"].shape == (3, 3)
    assert stacked[1].outer_state.dropped.shape == (3,)
    with pytest.raises(ValueError, match="replica_health: no outer-path Lookahead"):
        lookax.replica_health(inner.init({"w": jnp.zeros(3)}))


# --- bad input --------------------------------------------------------------------------------


def test_bad_outer_path_arguments():
    sgd = optax.sgd(0.1)
    outer = optax.sgd(0.5)
    with pytest.raises(ValueError, match="sync_delay must be 0 or 1, got 2"):
        lookax.lookahead(sgd, 4, outer=outer, sync_delay=2)
    with pytest.raises(ValueError, match="sync_delay=1 applies to the outer path only"):
        lookax.lookahead(sgd, 4, sync_delay=1)
    with pytest.raises(ValueError, match="drop_nonfinite=True applies to the outer path only"):
        lookax.lookahead(sgd, 4, drop_nonfinite=True)
    with pytest.raises(ValueError, match="drop_nonfinite=False applies to the outer path only"):
        lookax.lookahead(sgd, 4, drop_nonfinite=False)
    with pytest.raises(ValueError, match="communication_dtype must be a floating dtype"):
        lookax.lookahead(sgd, 4, outer=outer, communication_dtype=jnp.int8)
    with pytest.raises(ValueError, match="communication_dtype must be a floating dtype"):
        lookax.diloco(sgd, 4, communication_dtype="not a dtype")
    with pytest.raises(ValueError, match="fragments=2 applies to the outer path only"):
        lookax.lookahead(sgd, 4, fragments=2)
    with pytest.raises(ValueError, match="sync_period=6 must be divisible by the number of frag"):
        lookax.diloco(sgd, 6, fragments=4)
    with pytest.raises(ValueError, match="fragments must be an int >= 1"):
        lookax.diloco(sgd, 6, fragments=0)
    with pytest.raises(ValueError, match="'reset' with fragments=2"):
        lookax.diloco(sgd, 6, fragments=2, inner_state_on_sync="reset")


def test_bad_fragment_trees_are_refused_at_init():
    params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    cases = {
        "needs at least 3 params leaves": 3,
        "must be an int >= 0": {"a": 0, "b": -1},
        "uses ids up to 2 but not \\[1\\]": {"a": 0, "b": 2},
        "tree of fragment ids with the params' structure": {"a": 0, "x": 1},
    }
    for message, fragments in cases.items():
        tx = lookax.diloco(optax.sgd(0.1), 6, fragments=fragments)
        with pytest.raises(ValueError, match=message):
            tx.init(params)
    tx = lookax.diloco(optax.sgd(0.1), 6, fragments={"a": 0, "b": 1})
    with pytest.raises(ValueError, match="sync_period=5 must be divisible"):
        lookax.diloco(optax.sgd(0.1), 5, fragments={"a": 0, "b": 1}).init(params)
    assert tx.init(params).outer_state.per_fragment[1] is not None


# --- what the overlapped step compiles to -------------------------------------------------

STRUCTURE_SHAPE = (256, 256)


def params_sized_cond_operands(tx) -> list[str]:
    """The params-sized operands of the step's top-level conds, named by the step's inputs."""
    params = {"w": jnp.zeros(STRUCTURE_SHAPE), "b": jnp.zeros(STRUCTURE_SHAPE[1])}
    args = (params, tx.init(params), params)
    closed = jax.make_jaxpr(update_step(tx))(*args)
    names = {
        var: jax.tree_util.keystr(path)
        for var, (path, _) in zip(
            closed.jaxpr.invars, jax.tree_util.tree_leaves_with_path(args), strict=True
        )
    }
    conds = [eqn for eqn in closed.jaxpr.eqns if eqn.primitive.name == "cond"]
    return [
        names.get(var, "an intermediate")
        for eqn in conds
        for var in eqn.invars[1:]
        if getattr(var.aval, "shape", ()) == STRUCTURE_SHAPE
    ]


@pytest.mark.compiler("names the params-sized operands of the jaxpr's top-level conds")
def test_overlapped_conds_take_only_params_slow_weights_and_outer_state():
    operands = params_sized_cond_operands(lookax.diloco(lookax.adam(1e-3), 4, sync_delay=1))
    assert "[0]['w']" in operands, "the sync branch takes the params-shaped leaf"
    for name in operands:
        assert name.startswith(("[0]", "[1].lagging_slow", "[1].outer_state")), name
    # the control: the exact step's cond takes the inner updates, made in the step
    exact = params_sized_cond_operands(lookax.diloco(lookax.adam(1e-3), 4))
    assert "an intermediate" in exact


def temp_bytes(tx, floats: int = 1 << 18) -> int:
    return compiled_temp_bytes(tx, {"w": jnp.zeros(floats)})


@pytest.mark.compiler("bounds XLA:CPU's temporary buffer bytes (memory_analysis) of the step")
def test_compiled_temp_of_the_overlapped_and_the_exact_step():
    """XLA:CPU's buffer assignment, measured against Adam's (a params buffer is 1 MiB here).

    The overlapped step with a heavy-ball outer step needs no buffer beyond Adam's; with
    DiLoCo's Nesterov step and the finite check on, none either (with it off, XLA keeps the
    pseudo-gradient in one buffer inside the sync branch: allowed, at most one). The exact
    path holds the inner updates for the sync branch: one buffer (with the finite check on;
    off, Nesterov's pseudo-gradient adds the second, inside the sync branch).
    """
    params_bytes, slack = 4 << 18, 16 << 10
    adam = temp_bytes(lookax.adam(1e-3))
    heavy = lookax.sgd(OUTER_LR, momentum=OUTER_MOMENTUM)
    nesterov = lookax.sgd(OUTER_LR, momentum=OUTER_MOMENTUM, nesterov=True)
    overlapped = [
        lookax.lookahead(lookax.adam(1e-3), 5, outer=heavy, sync_delay=1),
        lookax.lookahead(lookax.adam(1e-3), 5, outer=heavy, sync_delay=1, drop_nonfinite=False),
        lookax.lookahead(lookax.adam(1e-3), 5, outer=nesterov, sync_delay=1),
    ]
    for tx in overlapped:
        assert temp_bytes(tx) - adam <= slack
    nesterov_no_check = lookax.lookahead(
        lookax.adam(1e-3), 5, outer=nesterov, sync_delay=1, drop_nonfinite=False
    )
    assert temp_bytes(nesterov_no_check) - adam <= params_bytes + slack
    for outer in (heavy, nesterov):
        exact = temp_bytes(lookax.lookahead(lookax.adam(1e-3), 5, outer=outer)) - adam
        assert params_bytes - slack <= exact <= params_bytes + slack  # u is materialized
