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


def _threads(impl: str) -> None:
    """Skips fastopt where the build has no loss kernels; both sides on THREADS threads."""
    if impl == "fastopt" and not fo.fused_losses_available():
        pytest.skip("fastopt.losses (the fused loss kernels) is not in this build")
    gc.collect()
    torch.set_num_threads(THREADS)
    fastopt.set_num_threads(THREADS)


def _time_backward(benchmark, loss, leaves, group: str, shape: list, rounds: int, warmup: int,
                   nbytes: int | None = None) -> None:
    """Times loss().backward(), the leaves' .grad reset (untimed) before each call, after
    `warmup` untimed calls; GB/s of nbytes moved per call in extra_info."""

    def reset():
        for t in leaves:
            t.grad = None
        return (), {}

    def run():
        loss().backward()

    for _ in range(warmup):
        reset()
        run()
    benchmark.group = group
    benchmark.extra_info.update(shape=shape, threads=THREADS)
    benchmark.pedantic(run, setup=reset, rounds=rounds, iterations=1)
    if nbytes is not None and benchmark.stats is not None:
        benchmark.extra_info["GB/s"] = nbytes / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("impl", ["fastopt", "torch"])
def test_cross_entropy_fwd_bwd(benchmark, request, impl):
    _threads(impl)
    n, c = (64, 1000) if _quick(request.config) else (4096, 32000)
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(n, c, generator=gen)
    target = torch.randint(0, c, (n,), generator=gen)
    x = data.clone().requires_grad_()
    fn = torch.nn.functional.cross_entropy if impl == "torch" else fo.cross_entropy
    _time_backward(benchmark, lambda: fn(x, target), [x], f"cross_entropy fwd+bwd {n}x{c}",
                   [n, c], rounds=7, warmup=2, nbytes=8 * n * c)


@pytest.mark.parametrize("impl", ["fastopt", "torch"])
def test_segmentation_cross_entropy_fwd_bwd(benchmark, request, impl):
    """[N, C, H, W] logits (class stride H W): the strided rows of the fused kernel."""
    _threads(impl)
    shape = (2, 5, 16, 16) if _quick(request.config) else (8, 21, 256, 256)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_()
    target = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=gen)
    fn = torch.nn.functional.cross_entropy if impl == "torch" else fo.cross_entropy
    _time_backward(benchmark, lambda: fn(x, target), [x],
                   f"cross_entropy fwd+bwd {list(shape)}", list(shape), rounds=5, warmup=1,
                   nbytes=8 * x.numel())


@pytest.mark.parametrize("impl", ["fastopt", "torch"])
def test_linear_cross_entropy_fwd_bwd(benchmark, request, impl):
    """The LM head's loss: fastopt.torch.linear_cross_entropy (chunked, no [N, V] logits)
    against torch's F.cross_entropy(hidden @ weight.T, target)."""
    _threads(impl)
    n, h, v = (64, 16, 500) if _quick(request.config) else (4096, 1024, 32000)
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=gen).requires_grad_()
    weight = (torch.randn(v, h, generator=gen) / h ** 0.5).requires_grad_()
    target = torch.randint(0, v, (n,), generator=gen)

    def loss():
        if impl == "torch":
            return torch.nn.functional.cross_entropy(hidden @ weight.T, target)
        return fo.linear_cross_entropy(hidden, weight, target)

    _time_backward(benchmark, loss, [hidden, weight],
                   f"linear_cross_entropy fwd+bwd {n}x{h}x{v}", [n, h, v], rounds=3, warmup=1)
