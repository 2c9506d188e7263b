"""AdamW as torch.optim.AdamW computes it (torch 2.13, `_single_tensor_adam` with decoupled weight decay).

For each parameter p with gradient g, at its own step count t (1 at its first update):

    p  <- p (1 - lr wd)                                    decoupled weight decay, before the moments
    m  <- m + (1 - beta1) (g - m)                          torch's lerp_(g, 1 - beta1)
    v  <- v beta2 + (1 - beta2) g g                        mul_(beta2).addcmul_(g, g, value=1 - beta2)
    p  <- p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

eps is added after the bias correction of sqrt(v) (not inside the square root, not before the correction):
a gradient far below eps moves p by about lr g / eps, not by lr. The scalars (1 - lr wd, the bias corrections,
the step size) are Python floats, as torch computes them. m and v start at zero. A parameter without a
gradient in a step (a missing key or None) is skipped: no decay, no step count, as torch skips p.grad None.

Not covered here (yet): the learning-rate schedule, gradient clipping and a frozen embedding table (issue 15);
amsgrad, maximize, capturable/differentiable/fused/foreach paths (the foreach and fused kernels
compute the same formula with other roundings).
"""

from __future__ import annotations

import numpy as np


class AdamW:
    """AdamW over a dict of NumPy arrays, updated in place.

    params: name -> array (the arrays the model reads; step() writes into them). lr may be changed between
    steps (a schedule sets `opt.lr`, as torch's schedulers set param_group["lr"]).
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid beta parameters: {betas}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.state: dict[str, dict] = {}  # name -> {"step": int, "exp_avg": m, "exp_avg_sq": v}, made at first use

    def step(self, grads: dict[str, np.ndarray | None]) -> None:
        """One update of every parameter that has a gradient in `grads` (same shape as the parameter)."""
        lr, (beta1, beta2), eps, wd = self.lr, self.betas, self.eps, self.weight_decay
        for name, p in self.params.items():
            g = grads.get(name)
            if g is None:
                continue
            if g.shape != p.shape:
                raise ValueError(f"{name}: gradient {g.shape} for a parameter {p.shape}")
            st = self.state.get(name)
            if st is None:
                st = self.state[name] = {"step": 0, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
            m, v = st["exp_avg"], st["exp_avg_sq"]
            st["step"] += 1
            t = st["step"]

            if wd != 0:
                p *= 1 - lr * wd
            # torch's lerp: start + w (end - start) for |w| < 0.5, else end - (end - start) (1 - w)
            w = 1 - beta1
            if abs(w) < 0.5:
                m += w * (g - m)
            else:
                m[...] = g - (g - m) * (1 - w)
            v *= beta2
            v += (1 - beta2) * g * g

            bias_correction1 = 1 - beta1 ** t
            bias_correction2 = 1 - beta2 ** t
            step_size = lr / bias_correction1
            denom = np.sqrt(v) / bias_correction2 ** 0.5 + eps
            p += -step_size * m / denom
