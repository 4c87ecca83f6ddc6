"""A Lookahead state stacked over replicas, shared by the sharding and multiprocess workers.

Every leaf of the state (slow weights, moments, outer momentum, the per-replica fault counters
of the outer path) gets a leading replica axis, except Lookahead's counters (``count``,
``phase``), which the replicas share: ``lookax.stack_replicas`` and ``lookax.replica_axes``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def stack_over_replicas(one_state: Any, replicas: int) -> tuple[Any, Any]:
    """(the host state stacked over ``replicas``, a tree of bools: True where stacked).

    The bool tree has the state's structure (``optax.MaskedNode`` subtrees kept), so
    ``jax.tree_util.tree_map_with_path(fn, one_state, stacked)`` visits both together.
    """
    import jax

    import lookax

    host_state = jax.tree.map(np.asarray, lookax.stack_replicas(one_state, replicas))
    stacked = lookax.replica_axes(one_state, stacked=True, shared=False)
    return host_state, stacked
