r"""Complex parameters: PyTorch's rule, a complex number is two real parameters.

PyTorch's optimizers apply ``torch.view_as_real`` to a complex parameter, its
gradient and its state, so the real and imaginary parts each get their own
second moment, AMSGrad maximum and Lion sign; optax's own optimizers instead
share :math:`|g|^2` between the parts and take the complex sign :math:`g/|g|`
in Lion. Every lookax optimizer and ``scale_by_*`` piece follows PyTorch
(:func:`complex_as_real`); the steps that are linear in the gradient (SGD's
momentum, decoupled weight decay, Gradient Centralization, Lookahead's slow
weights) already act on each part when they act on the complex number.

- State leaves keep the params' shapes and dtypes: a per-part moment is
  stored as the complex number :math:`v_{re} + i\,v_{im}`, so optax wrappers
  and ``optax.tree.map_params`` work unchanged, and a tree may mix real and
  complex leaves.
- A dtype argument (``mu_dtype``) is a precision: a complex param gets a
  complex state leaf of that precision (``bfloat16`` and ``float32`` give
  ``complex64``), a real param a real one.
- Gradients are what optax expects, the conjugate of ``jax.grad``'s output,
  which is the same number as PyTorch's ``.grad``.
- ``optax.inject_hyperparams`` over complex params casts the hyperparameters
  to a complex dtype; their real part is used (``numerics.host_float``).
- The complex path is chosen statically by dtype: a tree without complex
  leaves runs the real code alone.

The user-facing statement of the rule is the ``complex-params`` section of
docs/optimizers.md.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from lookax._checks import state_dtype_for
from lookax._typing import gradient_transformation


def is_complex(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.complexfloating)


def has_complex(tree: Any) -> bool:
    return any(is_complex(x) for x in jax.tree.leaves(tree))


def as_real(x: Any) -> Any:
    """``torch.view_as_real``: a complex leaf as real numbers on a trailing (re, im) axis."""
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1) if is_complex(x) else x


def from_real(y: jax.Array, dtype: Any) -> jax.Array:
    """The inverse of :func:`as_real`, as the complex ``dtype``."""
    part = jnp.finfo(dtype).dtype  # complex64 -> float32
    return jax.lax.complex(y[..., 0].astype(part), y[..., 1].astype(part))


def back_like(new: Any, old: Any) -> Any:
    """``new`` (computed on the real view) complex again where ``old`` was complex."""
    return from_real(new, jnp.result_type(old)) if is_complex(old) else new


def complex_as_real(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` with PyTorch's rule for complex leaves: two real numbers each.

    ``tx`` must be element-wise and keep its per-parameter state in
    params-shaped trees (``optax.tree.map_params`` finds them); its
    ``mu_dtype``, if any, must be real (it is the precision).

    A tree without complex leaves goes straight to ``tx``, so real params
    compile to exactly what ``tx`` compiles to. Otherwise ``tx`` runs on the
    real view, where complex leaves carry a trailing axis of size 2 and real
    leaves are left as they are, and its results are turned back into complex
    numbers.
    """

    def init_fn(params: optax.Params) -> optax.OptState:
        if not has_complex(params):
            return tx.init(params)
        state = tx.init(jax.tree.map(as_real, params))

        def back(leaf: jax.Array, param: Any) -> jax.Array:
            if not is_complex(param):
                return leaf
            return from_real(leaf, state_dtype_for(leaf.dtype, jnp.result_type(param)))

        return optax.tree.map_params(tx, back, state, params)

    def update_fn(
        updates: optax.Updates, state: optax.OptState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.OptState]:
        if not has_complex(updates):
            return tx.update(updates, state, params)
        # The state of a complex leaf is complex (init_fn), and only then.
        real_view = jax.tree.map(as_real, (updates, state, params))
        new_updates, new_state = tx.update(*real_view)
        return (
            jax.tree.map(back_like, new_updates, updates),
            jax.tree.map(back_like, new_state, state),
        )

    return gradient_transformation(init_fn, update_fn)
