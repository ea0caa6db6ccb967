"""Fused cross-entropy (forward + gradient) against torch forward + backward, same run.

    python -m pytest benchmarks/bench_cross_entropy.py --benchmark-columns=median,rounds

Memory model: 8 bytes per float32 element (read logits, write the gradient).
"""

import os

import numpy as np
import pytest

from fastopt import losses

SHAPES = [(4096, 32000), (8192, 50257)]
QUICK_SHAPE = (64, 1000)


def _quick(config) -> bool:
    """CI's smoke run (--benchmark-disable), --quick or FASTOPT_BENCH_QUICK: tiny sizes."""
    return bool(config.getoption("benchmark_disable", False)
                or config.getoption("--quick", default=False)
                or os.environ.get("FASTOPT_BENCH_QUICK"))


def _data(shape, config):
    shape = QUICK_SHAPE if _quick(config) else shape
    rng = np.random.default_rng(0)
    return rng.standard_normal(shape, dtype=np.float32), rng.integers(0, shape[1], shape[0])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fastopt(benchmark, shape, pytestconfig):
    x, t = _data(shape, pytestconfig)
    benchmark.extra_info["bytes"] = 8 * x.size
    benchmark.pedantic(losses.cross_entropy, args=(x, t), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fastopt_inplace(benchmark, shape, pytestconfig):
    x, t = _data(shape, pytestconfig)
    benchmark.extra_info["bytes"] = 8 * x.size
    benchmark.pedantic(lambda: losses.cross_entropy(x, t, inplace=True), rounds=5,
                       warmup_rounds=1)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_torch(benchmark, shape, pytestconfig):
    torch = pytest.importorskip("torch")
    x, t = _data(shape, pytestconfig)
    xt = torch.from_numpy(x).requires_grad_()
    tt = torch.from_numpy(t)

    def step():
        xt.grad = None
        torch.nn.functional.cross_entropy(xt, tt).backward()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
