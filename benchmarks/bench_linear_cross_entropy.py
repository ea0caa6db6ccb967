"""linear_cross_entropy (chunked projection + fused cross-entropy) against the unfused
composition (full [N, V] logits, then the fused kernel), time and peak traced memory.

    python -m pytest benchmarks/bench_linear_cross_entropy.py --benchmark-columns=median,rounds
"""

import os
import tracemalloc

import numpy as np
import pytest

from fastopt import losses

N, H, V = 8192, 1024, 32000
QUICK = (64, 16, 500)


def _quick(config) -> bool:
    """CI's smoke run (--benchmark-disable), --quick or FASTOPT_BENCH_QUICK: tiny sizes."""
    return bool(config.getoption("benchmark_disable", False)
                or config.getoption("--quick", default=False)
                or os.environ.get("FASTOPT_BENCH_QUICK"))


@pytest.fixture(scope="module")
def data(pytestconfig):
    n, h, v = QUICK if _quick(pytestconfig) else (N, H, V)
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((n, h), dtype=np.float32)
    weight = rng.standard_normal((v, h), dtype=np.float32) / np.float32(np.sqrt(h))
    target = rng.integers(0, v, n)
    return hidden, weight, target


def unfused(hidden, weight, target):
    logits = hidden @ weight.T
    loss, dlogits = losses.cross_entropy(logits, target, inplace=True)
    return loss, dlogits @ weight, dlogits.T @ hidden


def _peak(fn, *args):
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_fused(benchmark, data):
    benchmark.extra_info["peak_bytes"] = _peak(losses.linear_cross_entropy, *data)
    benchmark.pedantic(losses.linear_cross_entropy, args=data, rounds=2, warmup_rounds=0)


def test_unfused(benchmark, data):
    benchmark.extra_info["peak_bytes"] = _peak(unfused, *data)
    benchmark.pedantic(unfused, args=data, rounds=2, warmup_rounds=0)
