"""Fit a least-squares model with fastopt's fused AdamW on NumPy arrays and show the loss fall.

    python examples/quickstart.py
"""

import time

import numpy as np

import fastopt


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 256)).astype(np.float32)
    w_true = rng.standard_normal((256, 1)).astype(np.float32)
    y = x @ w_true + 0.01 * rng.standard_normal((4096, 1)).astype(np.float32)

    w = np.zeros((256, 1), np.float32)
    b = np.zeros(1, np.float32)
    opt = fastopt.optim.AdamW([w, b], lr=0.05, weight_decay=0.0)
    sched = fastopt.schedules.LRScheduler(opt, fastopt.schedules.Cosine(T_max=300))
    start = time.perf_counter()
    for step in range(300):
        err = x @ w + b - y
        loss = float(np.mean(err**2))
        grad_w = (2 / len(x)) * (x.T @ err)
        grad_b = (2 / len(x)) * err.sum(axis=0)
        fastopt.clip.clip_grad_norm_([grad_w, grad_b], max_norm=10.0)
        opt.step([grad_w, grad_b])
        sched.step()
        if step % 50 == 0 or step == 299:
            print(f"step {step:4d}  loss {loss:.6f}  lr {opt.param_groups[0]['lr']:.4f}")
    print(f"300 steps in {time.perf_counter() - start:.2f} s; "
          f"max |w - w_true| = {np.abs(w - w_true).max():.4f}")


if __name__ == "__main__":
    main()
