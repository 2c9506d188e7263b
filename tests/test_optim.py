"""gemma_np.train.optim.AdamW against torch.optim.AdamW (foreach=False: the single-tensor implementation), step
by step, in float64, on random parameters and gradients.

Tolerance. One step applies at most K = 16 rounded float64 operations to each element (the decay, the lerp,
the second moment's three, the square root, the bias corrections, the division, the update), each off by at
most u = 2**-53 relative to its result; torch may fuse some of them (an fma in lerp), which only rounds less.
A result's error is then at most K u times the scale of what it was computed from, and errors carried from
earlier steps add (each later step multiplies them by at most 1: decay <= 1, the moments' betas < 1), so
after t steps, with both sides erring:

    |p_numpy - p_torch| <= 2 K t u (max|p| + sum over steps of lr max|m_hat / (sqrt(v_hat) + eps)|)

the parameter's scale plus the largest distance the updates can have moved it (the update ratios read from
torch's own moments). The moments likewise: m within 2 K t u max|g| so far, v within 2 K t u max g^2 so far.
After 5 steps, 2 K t u = 1.8e-14 of the scale.
"""

from __future__ import annotations

import numpy as np
import pytest

from gemma_np.train.optim import AdamW

from support_bounds import assert_below

torch = pytest.importorskip("torch")

U64 = 2.0 ** -53
K = 16
STEPS = 5

SHAPES = {"matrix": (6, 5), "vector": (7,), "tiny_grads": (4, 3), "sometimes_no_grad": (5,)}


def grads_for(rng: np.random.Generator, step: int) -> dict[str, np.ndarray | None]:
    g = {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
    g["matrix"] *= 3.0
    g["tiny_grads"] *= 1e-9  # below eps = 1e-8: the step shows where eps sits
    if step in (1, 3):
        g["sometimes_no_grad"] = None  # torch skips a parameter whose grad is None: no decay, no step count
    return g


@pytest.mark.parametrize("lr, weight_decay, betas, eps", [
    (1e-3, 1e-2, (0.9, 0.999), 1e-8),     # torch's defaults
    (1e-1, 0.1, (0.9, 0.999), 1e-8),      # large steps, visible decay
    ([1e-4, 3e-4, 1e-3, 5e-4, 0.0], 1e-2, (0.9, 0.999), 1e-8),  # a schedule: lr set between steps, 0 at the end
    (1e-2, 0.0, (0.5, 0.9), 1e-6),        # no decay; beta1 0.5: torch's lerp takes its other branch (w >= 0.5)
    (1e-2, 1e-2, (0.2, 0.99), 1e-8),      # beta1 0.2: w = 0.8
])
def test_five_steps_equal_torchs_adamw(lr, weight_decay, betas, eps):
    rng = np.random.default_rng(15)
    init = {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
    params = {name: p.copy() for name, p in init.items()}
    tparams = {name: torch.tensor(p, requires_grad=True) for name, p in init.items()}
    lrs = lr if isinstance(lr, list) else [lr] * STEPS
    opt = AdamW(params, lr=lrs[0], betas=betas, eps=eps, weight_decay=weight_decay)
    topt = torch.optim.AdamW(list(tparams.values()), lr=lrs[0], betas=betas, eps=eps, weight_decay=weight_decay,
                             foreach=False)
    moved = dict.fromkeys(SHAPES, 0.0)  # sum over steps of lr * the largest update ratio, per parameter
    gmax = dict.fromkeys(SHAPES, 0.0)
    for step in range(STEPS):
        grads = grads_for(rng, step)
        opt.lr = lrs[step]
        topt.param_groups[0]["lr"] = lrs[step]
        for name, tp in tparams.items():
            tp.grad = None if grads[name] is None else torch.tensor(grads[name])
        opt.step(grads)
        topt.step()
        bound = 2 * K * (step + 1) * U64
        for name, tp in tparams.items():
            want = tp.detach().numpy()
            tstate = topt.state[tp]
            if not tstate:
                assert name not in opt.state and np.array_equal(params[name], want)
                continue
            t = int(tstate["step"].item())
            assert opt.state[name]["step"] == t
            m, v = tstate["exp_avg"].numpy(), tstate["exp_avg_sq"].numpy()
            if grads[name] is not None:
                gmax[name] = max(gmax[name], float(np.max(np.abs(grads[name]))))
                ratio = (m / (1 - betas[0] ** t)) / (np.sqrt(v) / (1 - betas[1] ** t) ** 0.5 + eps)
                moved[name] += lrs[step] * float(np.max(np.abs(ratio)))
            scale = float(np.max(np.abs(want))) + moved[name]
            assert_below(f"adamw: {name} after step {step + 1} relative to its scale",
                         np.max(np.abs(params[name] - want)) / scale, bound)
            assert_below(f"adamw: {name} exp_avg relative to max|g|",
                         np.max(np.abs(opt.state[name]["exp_avg"] - m)) / gmax[name], bound)
            assert_below(f"adamw: {name} exp_avg_sq relative to max g^2",
                         np.max(np.abs(opt.state[name]["exp_avg_sq"] - v)) / gmax[name] ** 2, bound)
    # the parameters did move, by more than the bound: the comparison checks the update, not only p
    for name in SHAPES:
        assert np.max(np.abs(params[name] - init[name])) > 1e3 * 2 * K * STEPS * U64 * np.max(np.abs(init[name]))


def test_eps_sits_after_the_bias_correction():
    """A gradient far below eps: the first step moves p by lr g / (|g| + eps), not by lr."""
    p = {"w": np.zeros(3)}
    g = np.array([1e-10, -1e-10, 0.0])
    AdamW(p, lr=1.0, weight_decay=0.0).step({"w": g})
    np.testing.assert_allclose(p["w"], -g / (np.abs(g) + 1e-8), rtol=1e-15)


def test_params_are_updated_in_place_and_shapes_checked():
    w = np.ones(4)
    opt = AdamW({"w": w})
    opt.step({"w": np.ones(4)})
    assert np.all(w < 1)
    with pytest.raises(ValueError):
        opt.step({"w": np.ones(5)})


def test_parameters_in_threads_are_the_same_bits():
    """AdamW(workers=3): the parameters updated side by side give the same bits as one after the other."""
    rng = np.random.default_rng(7)
    shapes = {"a": (300, 200), "b.norm.weight": (64,), "c": (5, 7, 9), "d": (1000,)}
    start = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    runs = []
    for workers in (1, 3):
        params = {n: v.copy() for n, v in start.items()}
        opt = AdamW(params, lr=1e-3, weight_decay=0.01, no_decay=["b.norm.weight"], workers=workers)
        for k in range(3):
            grads = {n: np.random.default_rng(k).normal(size=s).astype(np.float32) for n, s in shapes.items()}
            grads["c"] = None if k == 1 else grads["c"]  # skipped in one step, as torch skips p.grad None
            opt.step(grads)
        runs.append((params, opt.state))
    for n in shapes:
        np.testing.assert_array_equal(runs[0][0][n], runs[1][0][n], err_msg=n)
        assert runs[0][1][n]["step"] == runs[1][1][n]["step"] == (2 if n == "c" else 3)


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2", True])
def test_bad_worker_counts_are_named(workers):
    with pytest.raises(ValueError, match="workers must be a whole number"):
        AdamW({"a": np.zeros(3, np.float32)}, workers=workers)
