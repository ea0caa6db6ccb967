"""fastopt.torch.cross_entropy against torch.nn.functional.cross_entropy, forward + backward,
side by side in one run on 2 threads: `pytest benchmarks/bench_torch_losses.py
--benchmark-only`.

Case: logits [4096, 32000] fp32 (a language-model batch), class-index targets, mean reduction,
logits a leaf whose .grad is reset (untimed) before each round. GB/s in extra_info counts the
fused pass's 8 bytes per element (read logits, write grad). --benchmark-disable or
FASTOPT_BENCH_QUICK=1 shrinks the case to a smoke run.
"""

from __future__ import annotations

import gc
import os

import pytest

torch = pytest.importorskip("torch")

import fastopt  # noqa: E402
import fastopt.torch as fo  # noqa: E402

THREADS = 2


def _quick(config) -> bool:
    return bool(config.getoption("benchmark_disable", False)
                or os.environ.get("FASTOPT_BENCH_QUICK"))


@pytest.mark.parametrize("impl", ["fastopt", "torch"])
def test_cross_entropy_fwd_bwd(benchmark, request, impl):
    if impl == "fastopt" and not fo.fused_losses_available():
        pytest.skip("fastopt.losses (the fused loss kernels) is not in this build")
    gc.collect()
    torch.set_num_threads(THREADS)
    fastopt.set_num_threads(THREADS)
    n, c = (64, 1000) if _quick(request.config) else (4096, 32000)
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(n, c, generator=gen)
    target = torch.randint(0, c, (n,), generator=gen)
    x = data.clone().requires_grad_()
    fn = torch.nn.functional.cross_entropy if impl == "torch" else fo.cross_entropy

    def reset():
        x.grad = None
        return (), {}

    def run():
        fn(x, target).backward()

    for _ in range(2):
        reset()
        run()
    benchmark.group = f"cross_entropy fwd+bwd {n}x{c}"
    benchmark.extra_info.update(shape=[n, c], threads=THREADS)
    benchmark.pedantic(run, setup=reset, rounds=7, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["GB/s"] = 8 * n * c / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("impl", ["fastopt", "torch"])
def test_segmentation_cross_entropy_fwd_bwd(benchmark, request, impl):
    """[N, C, H, W] logits (class stride H W): the strided rows of the fused kernel."""
    if impl == "fastopt" and not fo.fused_losses_available():
        pytest.skip("fastopt.losses (the fused loss kernels) is not in this build")
    gc.collect()
    torch.set_num_threads(THREADS)
    fastopt.set_num_threads(THREADS)
    shape = (2, 5, 16, 16) if _quick(request.config) else (8, 21, 256, 256)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_()
    target = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=gen)
    fn = torch.nn.functional.cross_entropy if impl == "torch" else fo.cross_entropy

    def reset():
        x.grad = None
        return (), {}

    def run():
        fn(x, target).backward()

    benchmark.group = f"cross_entropy fwd+bwd {list(shape)}"
    benchmark.extra_info.update(shape=list(shape), threads=THREADS)
    benchmark.pedantic(run, setup=reset, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:
        benchmark.extra_info["GB/s"] = 8 * x.numel() / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("impl", ["fastopt", "torch"])
def test_linear_cross_entropy_fwd_bwd(benchmark, request, impl):
    """The LM head's loss: fastopt.torch.linear_cross_entropy (chunked, no [N, V] logits)
    against torch's F.cross_entropy(hidden @ weight.T, target)."""
    if impl == "fastopt" and not fo.fused_losses_available():
        pytest.skip("fastopt.losses (the fused loss kernels) is not in this build")
    gc.collect()
    torch.set_num_threads(THREADS)
    fastopt.set_num_threads(THREADS)
    n, h, v = (64, 16, 500) if _quick(request.config) else (4096, 1024, 32000)
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=gen).requires_grad_()
    weight = (torch.randn(v, h, generator=gen) / h ** 0.5).requires_grad_()
    target = torch.randint(0, v, (n,), generator=gen)

    def reset():
        hidden.grad = weight.grad = None
        return (), {}

    def run():
        if impl == "torch":
            torch.nn.functional.cross_entropy(hidden @ weight.T, target).backward()
        else:
            fo.linear_cross_entropy(hidden, weight, target).backward()

    benchmark.group = f"linear_cross_entropy fwd+bwd {n}x{h}x{v}"
    benchmark.extra_info.update(shape=[n, h, v], threads=THREADS)
    benchmark.pedantic(run, setup=reset, rounds=3, iterations=1, warmup_rounds=1)
