r"""A PyTorch reference for Ranger 2020.9.4 (lessw2020), used only to generate fixtures.

Ranger 2020.9.4 (https://github.com/lessw2020/Ranger-Deep-Learning-Optimizer,
``ranger/ranger2020.py``) is RAdam + Lookahead + Gradient Centralization in one
``torch.optim.Optimizer``. This module re-implements its published algorithm (it is not a
copy of that file) so that the fixture generator has a reference with no extra dependency.
Per parameter ``p`` with gradient ``g`` at step ``t`` (1-based):

.. math::

  g &\leftarrow g - \operatorname{mean}_{\text{axes} \ne 0}(g)
      \quad\text{(GC on the raw gradient: torch layout, output axis first)} \\
  v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g^2, \qquad
  m_t = \beta_1 m_{t-1} + (1 - \beta_1) g \\
  \rho_\infty &= 2 / (1 - \beta_2) - 1, \qquad
  \rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t) \\
  \text{if } \rho_t > 5:\ p &\leftarrow p - \eta\,
      \frac{\sqrt{(1 - \beta_2^t)\, r_t}}{1 - \beta_1^t}\,
      \Big(\frac{m_t}{\sqrt{v_t} + \epsilon} + \lambda p\Big), \\
  r_t &= \frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
      {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t} \\
  \text{else}:\ p &\leftarrow p - \frac{\eta}{1 - \beta_1^t} (m_t + \lambda p)
      \quad\text{(and } m_t \leftarrow m_t + \lambda p \text{, see below)} \\
  \text{if } t \bmod k = 0:\ s &\leftarrow s + \alpha (p - s), \quad p \leftarrow s

with ``s`` the slow weights, initialised to the parameters at the first step.

GC applies to tensors with more than one dimension (more than three with
``gc_conv_only=True``), subtracting the mean over every dimension except dimension 0. With
``gc_loc=False`` it is applied to the normalised update instead of the raw gradient (the
fixtures use the default ``gc_loc=True``).

Faithful details kept on purpose:

- the step-dependent scalars are Python (float64) numbers, computed from the closed forms;
- ``eps`` is added to the uncorrected ``sqrt(v_t)``;
- weight decay is added to the normalised update and scaled by the step size and the learning
  rate; in an un-rectified step the original adds it *in place* to the momentum buffer (its
  update aliases ``exp_avg``), so the decay leaks into ``m`` (and so does GC with
  ``gc_loc=False``). This reference does the same.

Two deliberate differences: the original caches the step scalars in a table keyed by
``step % 10`` shared by all parameter groups (stale if groups have different betas); this
reference recomputes them. And the original computes in float32 whatever the parameter dtype
(``p.data.float()``); this reference computes in the parameter's dtype, which is identical for
float32 parameters and gives a genuine float64 reference for float64 ones.
"""

import math

import torch
from torch.optim import Optimizer


def centralize_(tensor: torch.Tensor, use_gc: bool, gc_conv_only: bool) -> torch.Tensor:
    """Gradient Centralization, in place, for torch-layout tensors (output dimension first)."""
    min_ndim = 4 if gc_conv_only else 2
    if use_gc and tensor.dim() >= min_ndim:
        reduce_dims = tuple(range(1, tensor.dim()))
        tensor.sub_(tensor.mean(dim=reduce_dims, keepdim=True))
    return tensor


def rectification(step: int, beta1: float, beta2: float, threshold: float):
    """Return (rectified, step_size) of Ranger/RAdam at a 1-based step, in float64."""
    beta2_t = beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2_t / (1.0 - beta2_t)
    bias_correction1 = 1.0 - beta1**step
    if rho_t > threshold:
        r_t = (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
        return True, math.sqrt((1.0 - beta2_t) * r_t) / bias_correction1
    return False, 1.0 / bias_correction1


class Ranger2020(Optimizer):
    """Ranger 2020.9.4: RAdam + Lookahead + Gradient Centralization (see the module doc).

    Args mirror the original constructor: ``lr=1e-3, alpha=0.5, k=6, N_sma_threshhold=5,
    betas=(0.95, 0.999), eps=1e-5, weight_decay=0, use_gc=True, gc_conv_only=False,
    gc_loc=True`` (the threshold's name is spelled as in the original).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        alpha: float = 0.5,
        k: int = 6,
        N_sma_threshhold: float = 5,  # noqa: N803 -- the original's spelling
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
        use_gc: bool = True,
        gc_conv_only: bool = False,
        gc_loc: bool = True,
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Invalid slow update rate: {alpha}")
        if k < 1:
            raise ValueError(f"Invalid lookahead steps: {k}")
        if lr <= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps <= 0:
            raise ValueError(f"Invalid eps: {eps}")
        defaults = dict(lr=lr, alpha=alpha, k=k, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.threshold = N_sma_threshhold
        self.use_gc = use_gc
        self.gc_conv_only = gc_conv_only
        self.gc_loc = gc_loc

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Ranger does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["slow_buffer"] = p.detach().clone()
                grad = p.grad
                if self.gc_loc:
                    grad = centralize_(grad.clone(), self.use_gc, self.gc_conv_only)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)

                rectified, step_size = rectification(t, beta1, beta2, self.threshold)
                if rectified:
                    direction = exp_avg / exp_avg_sq.sqrt().add_(eps)
                    if wd != 0:
                        direction.add_(p, alpha=wd)
                else:
                    # The original's un-rectified update *is* the momentum buffer, so its
                    # in-place weight decay lands in m as well.
                    if wd != 0:
                        exp_avg.add_(p, alpha=wd)
                    direction = exp_avg
                if not self.gc_loc:
                    # In place as the original: in an un-rectified step this also centres m.
                    centralize_(direction, self.use_gc, self.gc_conv_only)
                p.add_(direction, alpha=-step_size * lr)

                if t % group["k"] == 0:
                    slow = state["slow_buffer"]
                    slow.add_(p - slow, alpha=group["alpha"])
                    p.copy_(slow)
        return loss
