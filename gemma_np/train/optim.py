"""AdamW as torch.optim.AdamW computes it (torch 2.13, `_single_tensor_adam` with decoupled weight decay), the
linear schedule with warm-up of transformers, and clipping by global norm as the transformers Trainer does it.

For each parameter p with gradient g, at its own step count t (1 at its first update):

    p  <- p (1 - lr wd)                                    decoupled weight decay, before the moments
    m  <- m + (1 - beta1) (g - m)                          torch's lerp_(g, 1 - beta1)
    v  <- v beta2 + (1 - beta2) g g                        mul_(beta2).addcmul_(g, g, value=1 - beta2)
    p  <- p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

eps is added after the bias correction of sqrt(v) (not inside the square root, not before the correction):
a gradient far below eps moves p by about lr g / eps, not by lr. The scalars (1 - lr wd, the bias corrections,
the step size) are Python floats, as torch computes them. m and v start at zero. A parameter without a
gradient in a step (a missing key or None) is skipped: no decay, no step count, as torch skips p.grad None.

A frozen embedding table is a parameter left out of `params` (gemma_np.train.step.parameters says what that
changes). Row-sparse updates of the table are not offered: torch's AdamW on the table's dense gradient moves
every row at every step (weight decay, and the moments of rows seen before), so updating only the rows a batch
uses gives other parameters from the second step on; it would match torch.optim.SparseAdam, which has no
weight decay, not AdamW.

Not covered: amsgrad, maximize, capturable/differentiable/fused/foreach paths (the foreach and fused kernels
compute the same formula with other roundings).

One training step, in the Trainer's order:

    loss, grads = mnrl_gradients(...)            # gemma_np.train.step
    clip_grad_norm(grads, 1.0)                   # max_grad_norm 1.0, the Trainer's default
    opt.step(grads)
    opt.lr = linear_schedule_lr(step + 1, base_lr, warmup_steps, total_steps)   # scheduler.step()
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from ..nn.threads import worker_pool

# The transformers Trainer gives no weight decay to these (Trainer.get_decay_parameter_names, transformers 5.24):
# biases and every norm's weight, matched on the lower-cased parameter name. In EmbeddingGemma that is the
# four layernorms of each layer, q_norm and k_norm, and the final norm.
_TRAINER_NO_DECAY = [re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)",
                                               r"_norm(?:$|\.)")]


def trainer_no_decay(names: Iterable[str]) -> list[str]:
    """The names among `names` that the transformers Trainer exempts from weight decay."""
    return [n for n in names if any(p.search(n.lower()) for p in _TRAINER_NO_DECAY)]


class AdamW:
    """AdamW over a dict of NumPy arrays, updated in place.

    params: name -> array (the arrays the model reads; step() writes into them). lr may be changed between
    steps (a schedule sets `opt.lr`, as torch's schedulers set param_group["lr"]).
    no_decay: names that get weight decay 0 (a second torch param group); trainer_no_decay() gives the ones
    the transformers Trainer exempts.
    workers: threads that update the parameters side by side (a speed path: each parameter's update is its own,
    so the result is the same bits; NumPy runs each one on a single thread).
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, no_decay: Iterable[str] = (), workers: int = 1):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid beta parameters: {betas}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number of threads, 1 or more; got {workers!r}")
        self.params = params
        self.no_decay = set(no_decay)
        unknown = sorted(self.no_decay - set(params))
        if unknown:
            raise ValueError(f"no_decay names parameters that are not in params: {unknown[:5]}")
        self.lr, self.betas, self.eps, self.weight_decay, self.workers = lr, betas, eps, weight_decay, workers
        self.state: dict[str, dict] = {}  # name -> {"step": int, "exp_avg": m, "exp_avg_sq": v}, made at first use

    def step(self, grads: dict[str, np.ndarray | None]) -> None:
        """One update of every parameter that has a gradient in `grads` (same shape as the parameter)."""
        names = [name for name in self.params if grads.get(name) is not None]
        for name in names:
            if grads[name].shape != self.params[name].shape:
                raise ValueError(f"{name}: gradient {grads[name].shape} for a parameter {self.params[name].shape}")
            if name not in self.state:
                p = self.params[name]
                self.state[name] = {"step": 0, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
        with worker_pool(self.workers) as pool:  # speed path: the parameters side by side (nn/threads.py)
            pool.map(lambda name: self._update(name, grads[name]), names)

    def _update(self, name: str, g: np.ndarray) -> None:
        """The formula of the module docstring, for one parameter, in place."""
        lr, (beta1, beta2), eps = self.lr, self.betas, self.eps
        p, st = self.params[name], self.state[name]
        wd = 0.0 if name in self.no_decay else self.weight_decay
        m, v = st["exp_avg"], st["exp_avg_sq"]
        st["step"] += 1
        t = st["step"]

        if wd != 0:
            p *= 1 - lr * wd
        # The formula's steps in place on two scratch buffers, each product in the order written: the same bits
        # as the expressions in the comments, without a fresh temporary (new pages) for every step.
        tmp = np.subtract(g, m)  # g - m
        # torch's lerp: start + w (end - start) for |w| < 0.5, else end - (end - start) (1 - w)
        w = 1 - beta1
        if abs(w) < 0.5:
            tmp *= w
            m += tmp  # m += w * (g - m)
        else:
            tmp *= 1 - w
            np.subtract(g, tmp, out=m)  # m = g - (g - m) * (1 - w)
        np.multiply(g, 1 - beta2, out=tmp)
        tmp *= g
        v *= beta2
        v += tmp  # v += (1 - beta2) * g * g

        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        step_size = lr / bias_correction1
        np.sqrt(v, out=tmp)
        tmp /= bias_correction2 ** 0.5
        tmp += eps  # denom = sqrt(v) / sqrt(bias_correction2) + eps
        update = np.multiply(m, -step_size)
        update /= tmp
        p += update  # p += -step_size * m / denom


def linear_schedule_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate after `step` scheduler steps, as transformers' get_linear_schedule_with_warmup.

    Up from 0 to base_lr over warmup_steps, then down to 0 at total_steps:
        step < warmup:  base_lr * step / max(1, warmup)
        else:           base_lr * max(0, (total - step) / max(1, total - warmup))
    torch's LambdaLR sets the rate for step 0 when it is built, so the first optimizer step runs at
    linear_schedule_lr(0, ...), which is 0 whenever warmup_steps > 0 (as it is with the Trainer). The
    factor is a Python float multiplied by base_lr, in that order, as LambdaLR computes it.
    """
    for name, v in (("step", step), ("warmup_steps", warmup_steps), ("total_steps", total_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if step < warmup_steps:
        factor = float(step) / float(max(1, warmup_steps))
    else:
        factor = max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))
    return base_lr * factor


def _sum_of_squares(g: np.ndarray, chunk: int = 1 << 22) -> float:
    """sum(g**2) accumulated in float64, 4M elements at a time (no float64 copy of a [V, D] table at once)."""
    flat = g.reshape(-1)
    total = 0.0
    for i in range(0, flat.size, chunk):
        c = flat[i:i + chunk].astype(np.float64)
        total += float(np.dot(c, c))
    return total


def clip_grad_norm(grads: dict[str, np.ndarray | None], max_norm: float = 1.0) -> float:
    """Scale every gradient in place so that their global L2 norm is at most max_norm; returns the norm before.

    As torch.nn.utils.clip_grad_norm_ (what the transformers Trainer calls with max_grad_norm, 1.0 by default):
    the norm of the vector of per-tensor norms; every gradient multiplied by min(max_norm / (norm + 1e-6), 1),
    also when that factor is 1. Each tensor's norm is accumulated in float64 and rounded to its dtype, the
    total likewise (torch sums in its own order: the same number within a few units of the last place).
    A non-finite norm raises (torch would scale every gradient to NaN).
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm!r}")
    gs = [g for g in grads.values() if g is not None]
    if not gs:
        return 0.0
    dtype = gs[0].dtype
    norms = np.array([np.sqrt(_sum_of_squares(g)) for g in gs]).astype(dtype)  # one per tensor
    total = dtype.type(np.sqrt(np.sum(np.square(norms.astype(np.float64)))))
    if not np.isfinite(total):
        bad = [n for n, g in grads.items() if g is not None and not np.all(np.isfinite(g))]
        raise ValueError(f"the gradient norm is {total}: non-finite gradients in {bad[:5]}")
    coef = min(float(dtype.type(max_norm) / (total + dtype.type(1e-6))), 1.0)
    for g in gs:
        g *= dtype.type(coef)
    return float(total)
