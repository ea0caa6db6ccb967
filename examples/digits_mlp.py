"""A two-layer MLP trained in NumPy on scikit-learn's bundled 8x8 digits (no download), with
fastopt.losses.cross_entropy (loss and logits gradient in one fused call) and fastopt's AdamW
under a cosine learning-rate schedule. Mini-batches of 64; reaches >= 95% test accuracy.

    python examples/digits_mlp.py
    python examples/digits_mlp.py --precision bf16 --stochastic-rounding
    python examples/digits_mlp.py --precision bf16 --state 8bit

--precision bf16 keeps the params, their grads and AdamW's state in bfloat16 (ml_dtypes, pip
install ml_dtypes; the matrix products run in float32), and --stochastic-rounding rounds the
params stochastically, so that updates below half a bfloat16 ulp (the end of the cosine
schedule) are not lost: here it brings the final loss from 0.132 back to fp32's 0.097.
--state 8bit stores AdamW's moments quantized blockwise in 8 bits (state_dtype="8bit": the
64 x 128 first layer's; tensors under 4096 elements keep float32 state), --state fp32 in float32
whatever the params' dtype.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastopt
from fastopt.schedules import Cosine, LRScheduler

EPOCHS, BATCH, HIDDEN, LR = 20, 64, 128, 3e-3


def main(argv: list[str] | None = None) -> float:
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--stochastic-rounding", action="store_true")
    parser.add_argument("--state", choices=("param", "fp32", "bf16", "8bit"), default="param",
                        help="AdamW's state dtype (default: the params')")
    args = parser.parse_args(argv)
    # the matrices are tiny (64 x 128): BLAS threads would only add synchronisation
    with threadpool_limits(1, user_api="blas"):
        return train(args.precision, args.stochastic_rounding, args.state)


def train(precision: str = "fp32", stochastic_rounding: bool = False,
          state: str = "param") -> float:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((64, HIDDEN)) * np.sqrt(2 / 64)).astype(np.float32)
    b1 = np.zeros(HIDDEN, dtype=np.float32)
    w2 = (rng.standard_normal((HIDDEN, 10)) * np.sqrt(1 / HIDDEN)).astype(np.float32)
    b2 = np.zeros(10, dtype=np.float32)
    store = np.float32
    if precision == "bf16":
        import ml_dtypes

        store = ml_dtypes.bfloat16
    params = [a.astype(store) for a in (w1, b1, w2, b2)]
    state_dtype = {"param": None, "fp32": "float32", "bf16": "bfloat16", "8bit": "8bit"}[state]
    opt = fastopt.optim.AdamW(params, lr=LR, weight_decay=1e-4,
                              stochastic_rounding=stochastic_rounding, state_dtype=state_dtype)
    print(f"params and grads in {np.dtype(store).name}, state in "
          f"{state_dtype or np.dtype(store).name}"
          f"{', rounded stochastically' if stochastic_rounding else ''}")
    steps_per_epoch = -(-len(x_train) // BATCH)
    sched = LRScheduler(opt, Cosine(T_max=EPOCHS * steps_per_epoch))

    def forward(xb):
        w1, b1, w2, b2 = (p.astype(np.float32, copy=False) for p in params)
        h = np.maximum(xb @ w1 + b1, 0)
        return h, h @ w2 + b2, w2

    accuracy = 0.0
    for epoch in range(1, EPOCHS + 1):
        t0 = time.perf_counter()
        order = rng.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            xb, yb = x_train[idx], y_train[idx]
            h, logits, w2 = forward(xb)
            # the gradient replaces the logits buffer: no extra [batch, classes] array
            loss, dlogits = fastopt.losses.cross_entropy(logits, yb, inplace=True)
            total += loss * len(idx)
            dh = (dlogits @ w2.T) * (h > 0)
            grads = [xb.T @ dh, dh.sum(0), h.T @ dlogits, dlogits.sum(0)]
            opt.step([g.astype(store) for g in grads])  # grads in the params' dtype
            sched.step()
        _, test_logits, _ = forward(x_test)
        accuracy = float(np.mean(test_logits.argmax(1) == y_test))
        print(f"epoch {epoch:2d}  loss {total / len(x_train):.4f}  test accuracy "
              f"{accuracy:.2%}  lr {sched.get_last_lr()[0]:.2e}  "
              f"({(time.perf_counter() - t0) * 1e3:.0f} ms)")
    if accuracy < 0.95:
        raise SystemExit(f"test accuracy {accuracy:.2%} < 95%")
    return accuracy


if __name__ == "__main__":
    main()
