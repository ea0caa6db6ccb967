"""Element-wise losses (forward + gradient, 16M float32 elements) against torch forward +
backward, same run.

    python -m pytest benchmarks/bench_elementwise_loss.py --benchmark-columns=median,rounds

Memory model: 12 bytes per element (read input and target, write the gradient).
`test_fastopt_grad_out` writes the gradient into one buffer for every call (`grad_out=`);
`test_fastopt` allocates it per call, as torch does: at this size the new array's page faults
cost about as much as the loss.
"""

import os

import numpy as np
import pytest

from fastopt import losses

N = 1 << 24
QUICK_N = 4096


def _quick(config) -> bool:
    """CI's smoke run (--benchmark-disable), --quick or FASTOPT_BENCH_QUICK: tiny sizes."""
    return bool(config.getoption("benchmark_disable", False)
                or config.getoption("--quick", default=False)
                or os.environ.get("FASTOPT_BENCH_QUICK"))
CASES = {
    "mse": (losses.mse_loss, "mse_loss", {}),
    "bce_with_logits": (losses.binary_cross_entropy_with_logits,
                        "binary_cross_entropy_with_logits", {}),
    "huber": (losses.huber_loss, "huber_loss", {}),
}


def _data(config):
    n = QUICK_N if _quick(config) else N
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32)
    y = rng.random(n, dtype=np.float32)
    return x, y


@pytest.mark.parametrize("name", list(CASES))
def test_fastopt(benchmark, name, pytestconfig):
    fn, _, kw = CASES[name]
    x, y = _data(pytestconfig)
    benchmark.extra_info["bytes"] = 12 * x.size
    benchmark.pedantic(fn, args=(x, y), kwargs=kw, rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("name", list(CASES))
def test_fastopt_grad_out(benchmark, name, pytestconfig):
    fn, _, kw = CASES[name]
    x, y = _data(pytestconfig)
    grad = np.empty_like(x)
    benchmark.extra_info["bytes"] = 12 * x.size
    benchmark.pedantic(fn, args=(x, y), kwargs=dict(kw, grad_out=grad), rounds=10,
                       warmup_rounds=1)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("name", list(CASES))
def test_torch(benchmark, name, pytestconfig):
    torch = pytest.importorskip("torch")
    _, tname, kw = CASES[name]
    fn = getattr(torch.nn.functional, tname)
    x, y = _data(pytestconfig)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.from_numpy(y)

    def step():
        xt.grad = None
        fn(xt, yt, **kw).backward()

    benchmark.pedantic(step, rounds=10, warmup_rounds=1)
