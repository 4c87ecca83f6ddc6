"""lookax: Lookahead and PyTorch-exact optimizers as pure optax GradientTransformations.

Where things live:

- ``lookax/lookahead.py``: :func:`lookahead`, :class:`LookaheadState`,
  :func:`slow_params`, :func:`init_from_inner`.
- ``lookax/transforms.py``: the composable ``scale_by_*`` building blocks and
  :func:`centralize_gradients`.
- ``lookax/optimizers.py``: the optimizer aliases (``sgd`` ... ``ranger``).
- ``lookax/replicas.py``: :func:`diloco` and :func:`slowmo`, Lookahead with an
  outer optimizer and replicas (``lookahead(..., outer=, replica_axis=)``).
- ``lookax/grouping.py``: :func:`grouped`, running a transformation on a few
  contiguous buffers instead of many small leaves.
"""

from lookax.grouping import GroupedState, GroupingPlan, grouped, ungroup
from lookax.lookahead import (
    InnerStateOnSync,
    LookaheadState,
    init_from_inner,
    lookahead,
    slow_params,
)
from lookax.optimizers import (
    adadelta,
    adagrad,
    adam,
    adamw,
    lion,
    nadam,
    radam,
    ranger,
    rmsprop,
    sgd,
)
from lookax.outer import OuterState, ReplicaHealth, replica_health
from lookax.replicas import diloco, replica_axes, slowmo, stack_replicas
from lookax.transforms import (
    AddDecoupledWeightDecayState,
    ScaleByAdagradState,
    ScaleByAdamState,
    ScaleByMomentumState,
    ScaleByNadamState,
    ScaleByRAdamState,
    add_decoupled_weight_decay,
    centralize_gradients,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_momentum,
    scale_by_nadam,
    scale_by_radam,
)

__version__ = "0.1.0"

__all__ = [
    "GroupedState",
    "GroupingPlan",
    "grouped",
    "ungroup",
    "AddDecoupledWeightDecayState",
    "InnerStateOnSync",
    "LookaheadState",
    "OuterState",
    "ReplicaHealth",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByMomentumState",
    "ScaleByNadamState",
    "ScaleByRAdamState",
    "__version__",
    "adadelta",
    "adagrad",
    "adam",
    "adamw",
    "add_decoupled_weight_decay",
    "centralize_gradients",
    "diloco",
    "init_from_inner",
    "lion",
    "lookahead",
    "nadam",
    "radam",
    "replica_axes",
    "replica_health",
    "ranger",
    "rmsprop",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_momentum",
    "scale_by_nadam",
    "scale_by_radam",
    "sgd",
    "slow_params",
    "slowmo",
    "stack_replicas",
]
