"""The type-checked examples (tests/typing_examples.py, checked by mypy in .ci/run) also run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))

import typing_examples  # noqa: E402


def test_typing_examples_run_and_give_what_they_say() -> None:
    typing_examples.run_all()
    # The slow weights come back as a params-shaped tree that training moved.
    for eval_params in (
        typing_examples.chain_and_step(),
        typing_examples.train_state_and_slow_params(),
    ):
        assert sorted(eval_params) == ["b", "w"]
        assert eval_params["w"].shape == (3, 2) and eval_params["b"].shape == (2,)
        assert np.all(np.isfinite(np.asarray(eval_params["w"])))
    assert int(typing_examples.the_state_and_its_fields()) == 0  # init_from_inner: nothing done
    family = typing_examples.the_family()
    assert len(family) == 16
    assert all(isinstance(tx, optax.GradientTransformation) for tx in family)
    assert all(callable(tx.init) and callable(tx.update) for tx in family)
