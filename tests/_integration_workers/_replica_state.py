"""A Lookahead state stacked over replicas, shared by the sharding and multiprocess workers.

Params-shaped subtrees of the state (slow weights, moments, outer momentum) get a leading
replica axis; every other leaf (the counters) is shared by the replicas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def stack_over_replicas(one_state: Any, params_def: Any, replicas: int) -> tuple[Any, Callable]:
    """(the host state with a replica axis on params-shaped subtrees, that subtree predicate)."""
    import jax

    def is_like(node: Any) -> bool:
        return isinstance(node, dict) and jax.tree.structure(node) == params_def

    def stacked(node: Any) -> Any:
        if not is_like(node):
            return node
        return {k: np.broadcast_to(v, (replicas, *v.shape)).copy() for k, v in node.items()}

    return jax.tree.map(stacked, one_state, is_leaf=is_like), is_like
