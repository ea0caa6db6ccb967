"""The classic first example, with fastopt: fit y = w x + b to y = x^2 on [0, 1).

100 uniform samples, mean squared error (fastopt.losses.mse_loss gives the loss and its
gradient with respect to the predictions, no autograd), plain SGD(lr=0.01) for 1000
full-batch epochs. Where torch is installed, the same loop runs with torch.nn.Linear, MSELoss
and torch.optim.SGD from the same initial weights, and the two must agree to 1e-6.

    python examples/linear_regression.py
"""

from __future__ import annotations

import numpy as np

import fastopt

EPOCHS, LR = 1000, 0.01


def train_fastopt(x: np.ndarray, y: np.ndarray, w0: float, b0: float):
    w = np.array([w0], dtype=np.float32)
    b = np.array([b0], dtype=np.float32)
    opt = fastopt.optim.SGD([w, b], lr=LR)
    loss = float("nan")
    for _ in range(EPOCHS):
        pred = w[0] * x + b[0]
        loss, dpred = fastopt.losses.mse_loss(pred, y)
        # chain rule through pred = w x + b, summed in float64 like a BLAS reduction would
        grad_w = np.array([np.dot(dpred.astype(np.float64), x)], dtype=np.float32)
        grad_b = np.array([dpred.sum(dtype=np.float64)], dtype=np.float32)
        opt.step([grad_w, grad_b])
    return loss, float(w[0]), float(b[0])


def train_torch(x: np.ndarray, y: np.ndarray, w0: float, b0: float):
    import torch

    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(w0)
        model.bias.fill_(b0)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    criterion = torch.nn.MSELoss()
    xt, yt = torch.from_numpy(x[:, None]), torch.from_numpy(y[:, None])
    loss = None
    for _ in range(EPOCHS):
        opt.zero_grad()
        loss = criterion(model(xt), yt)
        loss.backward()
        opt.step()
    return loss.item(), model.weight.item(), model.bias.item()


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(100, dtype=np.float32)
    y = x**2
    w0, b0 = float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))
    loss, w, b = train_fastopt(x, y, w0, b0)
    print(f"fastopt: loss {loss:.6f}  w {w:.6f}  b {b:.6f}")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: skipping the comparison")
        return
    tloss, tw, tb = train_torch(x, y, w0, b0)
    print(f"torch:   loss {tloss:.6f}  w {tw:.6f}  b {tb:.6f}")
    diff = max(abs(loss - tloss), abs(w - tw), abs(b - tb))
    print(f"largest difference {diff:.2e}")
    if diff > 1e-6:
        raise SystemExit(f"fastopt and torch disagree by {diff:.2e} > 1e-6")
    print("fastopt and torch agree to 1e-6")


if __name__ == "__main__":
    main()
