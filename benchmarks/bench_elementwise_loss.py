"""Element-wise losses (forward + gradient, 16M float32 elements) against torch forward +
backward, same run.

    python -m pytest benchmarks/bench_elementwise_loss.py --benchmark-columns=median,rounds

Memory model: 12 bytes per element (read input and target, write the gradient).
"""

import numpy as np
import pytest

from fastopt import losses

N = 1 << 24
CASES = {
    "mse": (losses.mse_loss, "mse_loss", {}),
    "bce_with_logits": (losses.binary_cross_entropy_with_logits,
                        "binary_cross_entropy_with_logits", {}),
    "huber": (losses.huber_loss, "huber_loss", {}),
}


def _data(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N, dtype=np.float32)
    y = rng.random(N, dtype=np.float32)
    return x, y


@pytest.mark.parametrize("name", list(CASES))
def test_fastopt(benchmark, name):
    fn, _, kw = CASES[name]
    x, y = _data(name)
    benchmark.extra_info["bytes"] = 12 * N
    benchmark.pedantic(fn, args=(x, y), kwargs=kw, rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("name", list(CASES))
def test_torch(benchmark, name):
    torch = pytest.importorskip("torch")
    _, tname, kw = CASES[name]
    fn = getattr(torch.nn.functional, tname)
    x, y = _data(name)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.from_numpy(y)

    def step():
        xt.grad = None
        fn(xt, yt, **kw).backward()

    benchmark.pedantic(step, rounds=10, warmup_rounds=1)
