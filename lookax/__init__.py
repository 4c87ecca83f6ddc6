"""lookax: Lookahead and PyTorch-exact optimizers as pure optax GradientTransformations.

Where things live:

- ``lookax/lookahead.py``: :func:`lookahead`, :class:`LookaheadState`,
  :func:`slow_params`, :func:`init_from_inner`.
- ``lookax/transforms.py``: the composable ``scale_by_*`` building blocks and
  :func:`centralize_gradients`.
- ``lookax/optimizers.py``: the optimizer aliases (``sgd`` ... ``ranger``).
"""

from lookax.lookahead import (
    InnerStateOnSync,
    LookaheadState,
    init_from_inner,
    lookahead,
    slow_params,
)

__version__ = "0.1.0"

__all__ = [
    "InnerStateOnSync",
    "LookaheadState",
    "__version__",
    "init_from_inner",
    "lookahead",
    "slow_params",
]
