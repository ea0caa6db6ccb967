"""fastopt.torch.AdamW against torch.optim.AdamW(fused=True), side by side in one run, on
2 threads: `pytest benchmarks/bench_torch_optim.py --benchmark-only`.

Cases: a GPT-2-small-shaped parameter list (124M params in 148 tensors) and 20,000 tensors of
256 params. Every step gets new .grad tensors (as zero_grad(set_to_none=True) + backward
would), outside the timed region, so per-step pointer gathering is part of what is timed.
GB/s in extra_info counts AdamW's 28 bytes per fp32 element. --benchmark-disable or
FASTOPT_BENCH_QUICK=1 shrinks the cases to a smoke run.
"""

from __future__ import annotations

import gc
import os

import pytest

torch = pytest.importorskip("torch")

import fastopt  # noqa: E402
import fastopt.torch as fo  # noqa: E402

THREADS = 2
BYTES_PER_ELEMENT = 28  # read p, g, m, v; write p, m, v


def gpt2_small_shapes(n_layer: int = 12, d: int = 768, vocab: int = 50257,
                      ctx: int = 1024) -> list[tuple[int, ...]]:
    """GPT-2 small's parameter shapes (Radford et al. 2019), as in HF's GPT2LMHeadModel
    (Conv1D weights stored in x out); the LM head is tied to wte."""
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(n_layer):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,),  # ln_1, attn
                   (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]  # ln_2, mlp
    return shapes + [(d,), (d,)]  # ln_f


def _quick(config) -> bool:
    return bool(config.getoption("benchmark_disable", False)
                or os.environ.get("FASTOPT_BENCH_QUICK"))


def _shapes(case: str, quick: bool) -> list[tuple[int, ...]]:
    if case == "gpt2_small":
        return gpt2_small_shapes(2, 64, 1000, 128) if quick else gpt2_small_shapes()
    return [(256,)] * (64 if quick else 20_000)


def _make(impl: str, params: list):
    if impl == "fastopt":
        return fo.AdamW(params, lr=1e-4, weight_decay=0.1)
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=True)


@pytest.mark.parametrize("impl", ["fastopt", "torch_fused"])
@pytest.mark.parametrize("case", ["gpt2_small", "20000x256"])
def test_adamw_step(benchmark, request, case, impl):
    gc.collect()  # the previous case's GBs of params and state
    torch.set_num_threads(THREADS)
    fastopt.set_num_threads(THREADS)
    shapes = _shapes(case, _quick(request.config))
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    # two pools of gradients: each step gets new tensor objects at alternating addresses
    pools = [[torch.randn(s, generator=gen) * 1e-3 for s in shapes] for _ in range(2)]
    opt = _make(impl, params)
    turn = [0]

    def new_grads():
        pool = pools[turn[0] % 2]
        turn[0] += 1
        for p, g in zip(params, pool, strict=True):
            p.grad = g.detach()
        return (), {}

    for _ in range(2):  # state allocation and table building are not per-step costs
        new_grads()
        opt.step()
    benchmark.group = f"AdamW step {case}"
    numel = sum(p.numel() for p in params)
    benchmark.extra_info.update(tensors=len(params), numel=numel, threads=THREADS)
    benchmark.pedantic(opt.step, setup=new_grads, rounds=5 if case == "gpt2_small" else 10,
                       iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["GB/s"] = BYTES_PER_ELEMENT * numel / benchmark.stats.stats.min / 1e9
