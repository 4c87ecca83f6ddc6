"""Alternative Lookahead formulations, measured by ``benchmarks/step_time.py``.

Each module is a small copy of Lookahead's update logic (``'keep'`` inner state,
slow weights in the params' dtype, static ``sync_period`` and ``slow_step_size``)
written a different way, so the benchmark can show what each way costs. None of
them is part of the library; ``lookax.lookahead`` is the one users get, and
``benchmarks/RESULTS.md`` records why it is written the way it is.

``FORMULATIONS`` maps a short name to ``(factory, one-line description, keeps
every property of DESIGN.md section 2)``; a factory has the signature
``factory(inner, sync_period, slow_step_size) -> GradientTransformation``.
"""

from __future__ import annotations

from formulations import inner_in_branches, per_leaf_cond, plain_cond, scratch_in_state

FORMULATIONS = {
    "plain_cond": (
        plain_cond.lookahead,
        "straightforward lax.cond; sync updates = new_slow - params",
        False,
    ),
    "per_leaf_cond": (
        per_leaf_cond.lookahead,
        "one lax.cond per leaf instead of one for the tree",
        True,
    ),
    "inner_in_branches": (
        inner_in_branches.lookahead,
        "the inner update runs inside both branches of the cond",
        True,
    ),
    "scratch_in_state": (
        scratch_in_state.lookahead,
        "lookax's cond, the inner updates written into a scratch buffer kept in the state",
        False,
    ),
}
