"""Your own fused optimizer from a scalar rule: Signum, trained on a least-squares problem.

Signum (Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems", ICML
2018) steps by the sign of a momentum, with decoupled weight decay:

    m = beta * m + (1 - beta) * g
    p = p - lr * (sign(m) + weight_decay * p)

`fastopt.optim.from_rule` compiles the rule below with Numba into the same fused multi-tensor
kernel as the built-in optimizers (one parallel launch for every tensor); a second run loads it
from the disk cache. The example first checks the kernel against the reference backend (the
same rule run in Python, in float64), then fits y = x w + b with a cosine schedule.

    python examples/rule_signum.py
"""

import time

import numpy as np

import fastopt


def signum(p, g, m, *, lr, beta=0.9, weight_decay=0.0):
    """Signum: the sign of the momentum, with decoupled weight decay."""
    m = beta * m + (1.0 - beta) * g
    if m > 0:
        s = 1.0
    elif m < 0:
        s = -1.0
    else:
        s = 0.0
    return p - lr * (s + weight_decay * p), m


t0 = time.perf_counter()
Signum = fastopt.optim.from_rule(signum, state=("momentum_buffer",), defaults=dict(lr=1e-3),
                                 name="Signum")
DEFINED = time.perf_counter() - t0


def check_against_reference(rng: np.random.Generator) -> float:
    """The largest difference between the kernel and the reference over 5 steps (float64)."""
    params = [rng.standard_normal(n) for n in (1, 7, 4097)]
    copies = [p.copy() for p in params]
    kernel, ref = Signum(params, lr=0.01), Signum(copies, lr=0.01, backend="reference")
    for _ in range(5):
        grads = [rng.standard_normal(p.shape) for p in params]
        kernel.step(grads)
        ref.step([g.copy() for g in grads])
    return max(float(np.max(np.abs(a - b))) for a, b in zip(params, copies, strict=True))


def main() -> None:
    print(f"Signum defined in {DEFINED:.2f} s (compiled, or loaded from the disk cache)")
    rng = np.random.default_rng(0)
    print(f"kernel vs reference (float64, 5 steps): max |difference| = "
          f"{check_against_reference(rng):.1e}")

    x = rng.standard_normal((2048, 64)).astype(np.float32)
    w_true = rng.standard_normal((64, 1)).astype(np.float32)
    y = x @ w_true + 0.01 * rng.standard_normal((2048, 1)).astype(np.float32)
    w = np.zeros((64, 1), np.float32)
    b = np.zeros(1, np.float32)
    steps = 400
    opt = Signum([w, b], lr=0.05, beta=0.9)
    sched = fastopt.schedules.LRScheduler(opt, fastopt.schedules.Cosine(T_max=steps))
    for step in range(steps):
        err = x @ w + b - y
        loss = float(np.mean(err**2))
        opt.step([(2 / len(x)) * (x.T @ err), (2 / len(x)) * err.sum(axis=0)])
        sched.step()
        if step % 100 == 0:
            print(f"step {step:4d}  loss {loss:.6f}  lr {opt.param_groups[0]['lr']:.4f}")
    loss = float(np.mean((x @ w + b - y) ** 2))
    print(f"final loss {loss:.6f}; max |w - w_true| = {np.abs(w - w_true).max():.4f}")


if __name__ == "__main__":
    main()
