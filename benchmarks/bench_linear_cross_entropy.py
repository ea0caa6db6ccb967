"""linear_cross_entropy (chunked projection + fused cross-entropy, forward and backward) beside
its floors and the unfused compositions, in one run:

  numpy_gemms      the three NumPy GEMMs alone (logits, grad_hidden, grad_weight): the floor for
                   NumPy arrays (target: fused within 1.1x)
  fused_numpy      fastopt.losses.linear_cross_entropy on NumPy arrays
  unfused_numpy    full [N, V] logits, the fused kernel in place, two GEMMs
  torch_unfused    torch's cross_entropy(h @ W.T, t) + backward (target: fused_torch >= 1.0x)
  fused_torch      fastopt.torch.linear_cross_entropy + backward (torch's GEMMs)

    python -m pytest benchmarks/bench_linear_cross_entropy.py --benchmark-columns=median,rounds

peak_bytes in extra_info is tracemalloc's peak (NumPy allocations; tests/peak_memory.py
measures the resident set). --benchmark-disable runs tiny sizes as a smoke test.
"""

import os
import tracemalloc

import numpy as np
import pytest

from fastopt import losses

N, H, V = 4096, 1024, 32000
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


def numpy_gemms(hidden, weight, target):
    logits = hidden @ weight.T
    return logits @ weight, logits.T @ hidden


def unfused_numpy(hidden, weight, target):
    logits = hidden @ weight.T
    loss, dlogits = losses.cross_entropy(logits, target, inplace=True)
    return loss, dlogits @ weight, dlogits.T @ hidden


def _peak(fn, *args):
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("fn", [numpy_gemms, losses.linear_cross_entropy, unfused_numpy],
                         ids=["numpy_gemms", "fused_numpy", "unfused_numpy"])
def test_numpy(benchmark, data, fn):
    benchmark.extra_info["peak_bytes"] = _peak(fn, *data)
    benchmark.pedantic(fn, args=data, rounds=2, warmup_rounds=0)


@pytest.mark.parametrize("which", ["torch_unfused", "fused_torch"])
def test_torch(benchmark, data, which):
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    hidden, weight, target = (torch.from_numpy(x) for x in data)
    hidden.requires_grad_()
    weight.requires_grad_()

    def step():
        hidden.grad = weight.grad = None
        if which == "fused_torch":
            loss = fo.linear_cross_entropy(hidden, weight, target)
        else:
            loss = torch.nn.functional.cross_entropy(hidden @ weight.T, target)
        loss.backward()

    benchmark.pedantic(step, rounds=2, warmup_rounds=0)
