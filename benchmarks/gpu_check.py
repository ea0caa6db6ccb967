"""The GPU check: everything that needs an NVIDIA GPU, in one run of a few minutes.

    benchmarks/gpu_check.sh            # builds the CUDA kernels if needed, then runs this
    python benchmarks/gpu_check.py     # assumes fastopt with CUDA is importable

1. Equality: the `cuda` and `numba_cuda` backends against fastopt.reference (every optimizer
   option, float32/float64 100-step trajectories over sizes 1, 7, 4097, 65537; float16/bfloat16
   short ones; clipping), against torch's CUDA optimizers, CUDA-graph capture of a capturable
   step, a non-default stream, and the mixed-device error.
2. Timings with CUDA events (interleaved, repeated, medians): device-to-device copy bandwidth;
   Adam fp32 over >= 2 GB of state (cuda, numba_cuda, torch fused AdamW); 20,000 tensors x 256
   params (cuda vs torch fused, host overhead included); cross_entropy if fastopt has it.
3. A short table, last. Exit status 1 if any equality check failed.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastopt  # noqa: E402
from fastopt import backends, functional  # noqa: E402

QUICK = os.environ.get("GPU_CHECK_QUICK") == "1"  # smaller sizes
# GPU_CHECK_SMOKE=1 runs the equality parts on CPU backends, to test this script without a GPU
SMOKE = os.environ.get("GPU_CHECK_SMOKE") == "1"
DEV = torch.device("cpu") if SMOKE else torch.device("cuda", 0)
BACKENDS = ("cpu", "numba") if SMOKE else ("cuda", "numba_cuda")
failures: list[str] = []
summary: list[tuple[str, str]] = []


def log(msg: str) -> None:
    print(msg, flush=True)


# --- array conversion ------------------------------------------------------------------------
def to_torch(a: np.ndarray) -> torch.Tensor:
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).to(DEV)
    return torch.from_numpy(a).to(DEV)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def to_numba(a: np.ndarray):
    from numba import cuda

    return cuda.to_device(a)


# --- 1. equality -------------------------------------------------------------------------------
def check(results, dtype, what: str) -> int:
    from tolerances import assert_close

    bad = 0
    for name, actual, expected in results:
        try:
            assert_close(actual, expected, dtype, f"{what} {name}")
        except AssertionError as exc:
            bad += 1
            failures.append(f"{what} {name}: {str(exc).splitlines()[-1] if str(exc) else exc}")
    return bad


def equality_suite() -> None:
    import ml_dtypes
    from trajectories import CASES, SIZES, case_id, run, run_clip

    t0 = time.perf_counter()
    sizes = (1, 7, 4097) if QUICK else SIZES
    for backend in BACKENDS:
        ok, why = backends.get(backend).available()
        if not ok:
            failures.append(f"{backend}: unavailable: {why}")
            continue
        n_fail = n = 0
        plans = [("float32", 100, CASES), ("float64", 100, CASES), ("float16", 5, CASES)]
        if backend == "cuda":
            plans.append((ml_dtypes.bfloat16, 3, CASES))
        if SMOKE:
            plans = [("float32", 3, CASES), ("float64", 3, CASES[:2])]
        for dtype, steps, cases in plans:
            name = np.dtype(dtype).name
            for case in cases:
                res = run(*case, dtype, backend=backend, sizes=sizes, steps=steps,
                          to_device=to_torch, to_host=to_numpy)
                n += len(res)
                n_fail += check(res, name, f"{backend} {case_id(case)} {name}")
        for dtype in ("float32", "float64"):
            res = run_clip(dtype, backend=backend, sizes=sizes, to_device=to_torch,
                           to_host=to_numpy)
            n += len(res)
            n_fail += check(res, dtype, f"{backend} clip {dtype}")
        # Numba device arrays work as well (in place, __cuda_array_interface__)
        res = [] if SMOKE else run("adam", dict(lr=1e-2), "float32", backend=backend,
                                   sizes=(7, 4097), steps=5, to_device=to_numba,
                                   to_host=lambda d: d.copy_to_host())
        n += len(res)
        n_fail += check(res, "float32", f"{backend} numba-device-arrays adam")
        summary.append((f"equality {backend} vs reference", f"{n - n_fail}/{n} arrays match"))
        log(f"{backend}: {n - n_fail}/{n} arrays match the reference")
    log(f"reference suite: {time.perf_counter() - t0:.1f} s")


def torch_suite() -> None:
    """fastopt.optim on CUDA tensors against torch.optim on copies of the same tensors."""
    from tolerances import assert_close

    cases = [
        ("AdamW", dict(lr=1e-2, weight_decay=0.1), dict(fused=True)),
        ("Adam", dict(lr=1e-2, amsgrad=True), dict(fused=True)),
        ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True), dict(foreach=True)),
        ("Adagrad", dict(lr=1e-2), dict(foreach=True)),
        ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True), dict(foreach=True)),
    ]
    for backend in BACKENDS:
        if not backends.get(backend).available()[0]:
            continue
        n = bad = 0
        for name, hyper, impl in cases:
            for dtype in (torch.float32, torch.float64):
                gen = torch.Generator(device="cpu").manual_seed(0)
                shapes = [(1,), (7,), (4097,), (65, 1009)]
                ps = [torch.randn(s, generator=gen, dtype=dtype).to(DEV) for s in shapes]
                tp = [p.clone().requires_grad_(True) for p in ps]
                topt = getattr(torch.optim, name)(tp, **hyper, **impl)
                fopt = getattr(fastopt.optim, name)(ps, **hyper, backend=backend)
                for _ in range(20):
                    gs = [torch.randn(s, generator=gen, dtype=dtype).to(DEV) * 0.1
                          for s in shapes]
                    for p, g in zip(tp, gs, strict=True):
                        p.grad = g.clone()
                    topt.step()
                    fopt.step(gs)
                for k, (a, b) in enumerate(zip(ps, tp, strict=True)):
                    n += 1
                    try:
                        assert_close(to_numpy(a), to_numpy(b.detach()), str(dtype)[6:],
                                     f"{backend} vs torch.optim.{name} {dtype} param[{k}]")
                    except AssertionError as exc:
                        bad += 1
                        failures.append(str(exc).splitlines()[1] if "\n" in str(exc) else str(exc))
        summary.append((f"equality {backend} vs torch.optim (CUDA)", f"{n - bad}/{n} match"))
        log(f"{backend} vs torch.optim: {n - bad}/{n} match")


def capture_and_stream_suite() -> None:
    from tolerances import assert_close

    from fastopt import reference
    from fastopt.backends.cuda import DeviceScalars

    if not backends.get("cuda").available()[0]:
        return
    cu = backends.get("cuda")
    rng = np.random.default_rng(0)
    n = 10007
    p0, g0 = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    p, g = to_torch(p0), to_torch(g0)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    tables = functional.tables_for("adam", {"param": [p], "grad": [g], "exp_avg": [m],
                                            "exp_avg_sq": [v], "max_exp_avg_sq": None})
    scalars = DeviceScalars(p, lr=1e-2, step=0)
    hyper = dict(step=1, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                 decoupled=True, amsgrad=False, maximize=False, bias_correction=True,
                 eps_inside_sqrt=False)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(s):
            # warm-up outside capture on scratch tensors (module loading, first launches)
            w = [torch.zeros(8, device=DEV) for _ in range(4)]
            wt = functional.tables_for("adam", {"param": [w[0]], "grad": [w[1]],
                                                "exp_avg": [w[2]], "exp_avg_sq": [w[3]],
                                                "max_exp_avg_sq": None})
            ws = DeviceScalars(w[0], lr=1e-2, step=0)
            ws.advance()
            cu.adam(wt[0], **hyper, lr_ptr=ws.lr_ptr, step_ptr=ws.step_ptr)
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, stream=s):
                scalars.advance()
                cu.adam(tables[0], **hyper, lr_ptr=scalars.lr_ptr, step_ptr=scalars.step_ptr)
        P, M, V = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        for step in range(1, 6):
            lr = 1e-2 / step
            scalars.set_lr(lr)
            graph.replay()
            reference.adam(P, g0, M, V, **{**hyper, "step": step, "lr": lr})
        torch.cuda.synchronize()
        assert_close(to_numpy(p), P, "float32", "captured AdamW param")
        assert_close(to_numpy(m), M, "float32", "captured AdamW exp_avg")
        summary.append(("CUDA graph capture (capturable AdamW)", "ok, 5 replays"))
    except Exception as exc:
        failures.append(f"CUDA graph capture: {type(exc).__name__}: {exc}")
        summary.append(("CUDA graph capture (capturable AdamW)", "FAILED"))
        traceback.print_exc()
    # work on a side stream stays ordered with torch's work on that stream
    try:
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            x = torch.ones(1 << 22, device=DEV)
            gx = torch.full_like(x, 2.0)
            functional.sgd_([x], [gx], lr=0.25, backend="cuda")
            x.mul_(2)
        side.synchronize()
        assert bool((x == 1.0).all()), "side-stream ordering"
        summary.append(("non-default stream ordering", "ok"))
    except Exception as exc:
        failures.append(f"stream ordering: {exc}")
    try:
        functional.sgd_([torch.zeros(3, device=DEV)], [torch.zeros(3)], lr=0.1)
        failures.append("mixing devices did not raise")
    except ValueError as exc:
        if "mixing devices" not in str(exc):
            failures.append(f"unclear mixed-device error: {exc}")


# --- 2. timings --------------------------------------------------------------------------------
def time_events(fn, reps: int, inner: int = 1) -> float:
    """Median seconds per call of fn over `reps` timed batches of `inner` calls."""
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / inner)
    return statistics.median(times)


def interleaved(fns: dict, rounds: int, reps: int, inner: int = 1) -> dict[str, float]:
    for fn in fns.values():  # warm-up (compilation, allocator)
        fn()
    torch.cuda.synchronize()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k].append(time_events(fn, reps, inner))
    return {k: statistics.median(v) for k, v in samples.items()}


GB = 1e9


def bench_copy() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second)."""
    gb = GB
    n_copy = (1 << 26) if QUICK else (1 << 28)  # 1 GiB float32
    src = torch.empty(n_copy, device=DEV)
    dst = torch.empty_like(src)
    t = interleaved({"copy": lambda: dst.copy_(src)}, 3, 5)["copy"]
    copy_bw = 2 * src.numel() * 4 / t
    summary.append(("device-to-device copy", f"{copy_bw / gb:.0f} GB/s"))
    log(f"copy: {copy_bw / gb:.0f} GB/s")
    return copy_bw


def bench_adam_large(copy_bw: float) -> None:
    """Adam fp32 over >= 2 GB of state (param, grad, exp_avg, exp_avg_sq: 16 B/element)."""
    gb = GB
    total = (1 << 24) if QUICK else (1 << 27)  # 2 GiB of state
    n_t = 64
    sizes = [total // n_t] * n_t
    ps = [torch.randn(s, device=DEV) for s in sizes]
    gs = [torch.randn(s, device=DEV) * 0.01 for s in sizes]
    fns = {}
    opts = {}
    for backend in ("cuda", "numba_cuda"):
        if backends.get(backend).available()[0]:
            opts[backend] = fastopt.optim.AdamW(ps, lr=1e-3, backend=backend)
            fns[f"fastopt {backend}"] = lambda o=opts[backend]: o.step(gs)
    tp = [p.clone().requires_grad_(True) for p in ps]
    for p, g in zip(tp, gs, strict=True):
        p.grad = g
    topt = torch.optim.AdamW(tp, lr=1e-3, fused=True)
    fns["torch fused AdamW"] = topt.step
    res = interleaved(fns, 3, 5)
    moved = 28 * total
    for k, t in res.items():
        summary.append((f"AdamW fp32 {total * 16 / gb:.1f} GB state: {k}",
                        f"{t * 1e3:.2f} ms, {moved / t / gb:.0f} GB/s "
                        f"({moved / t / copy_bw:.0%} of copy)"))


def bench_adam_small() -> None:
    """20,000 tensors x 256 params: host overhead included (events span the whole step)."""
    n_small = 2000 if QUICK else 20000
    ps = [torch.randn(256, device=DEV) for _ in range(n_small)]
    gs = [torch.randn(256, device=DEV) * 0.01 for _ in range(n_small)]
    fns = {}
    if backends.get("cuda").available()[0]:
        o = fastopt.optim.AdamW(ps, lr=1e-3, backend="cuda")
        fns["fastopt cuda"] = lambda: o.step(gs)
    tp = [p.clone().requires_grad_(True) for p in ps]
    for p, g in zip(tp, gs, strict=True):
        p.grad = g
    topt2 = torch.optim.AdamW(tp, lr=1e-3, fused=True)
    fns["torch fused AdamW"] = topt2.step
    res = interleaved(fns, 3, 3, inner=5)
    for k, t in res.items():
        summary.append((f"AdamW {n_small} x 256 params: {k}", f"{t * 1e3:.2f} ms/step"))
    if len(res) == 2:
        summary.append((f"AdamW {n_small} x 256: speed-up vs torch fused",
                        f"{res['torch fused AdamW'] / res['fastopt cuda']:.1f}x"))


def bench_cross_entropy(copy_bw: float) -> None:
    """Cross-entropy forward + gradient on [8192, 50257] fp32 (8 B/element)."""
    gb = GB
    losses = getattr(fastopt, "losses", None)
    if losses is None or not hasattr(losses, "cross_entropy"):
        summary.append(("cross_entropy [8192, 50257]", "skipped: fastopt.losses not available"))
        return
    rows, cols = (1024, 50257) if QUICK else (8192, 50257)
    logits = torch.randn(rows, cols, device=DEV)
    target = torch.randint(0, cols, (rows,), device=DEV)
    fns = {"fastopt": lambda: losses.cross_entropy(logits, target)}
    tl = logits.clone().requires_grad_(True)

    def torch_ce():
        loss = torch.nn.functional.cross_entropy(tl, target)
        loss.backward()

    fns["torch fwd+bwd"] = torch_ce
    try:
        res = interleaved(fns, 3, 5)
        moved = 8 * rows * cols
        for k, t in res.items():
            summary.append((f"cross_entropy [{rows}, {cols}]: {k}",
                            f"{t * 1e3:.2f} ms, {moved / t / gb:.0f} GB/s "
                            f"({moved / t / copy_bw:.0%} of copy)"))
    except Exception as exc:
        summary.append(("cross_entropy", f"FAILED: {exc}"))
        failures.append(f"cross_entropy benchmark: {exc}")


def benchmarks() -> None:
    from fastopt.backends import numba_cuda

    ct = numba_cuda.compile_times()  # first launches happened in the equality suite
    if ct:
        summary.append(("numba_cuda first-call (compile/cache) time",
                        f"{sum(ct.values()):.1f} s over {len(ct)} kernels"))
    copy_bw = bench_copy()
    bench_adam_large(copy_bw)
    torch.cuda.empty_cache()
    bench_adam_small()
    torch.cuda.empty_cache()
    bench_cross_entropy(copy_bw)


def main() -> int:
    t0 = time.perf_counter()
    if not SMOKE and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device", file=sys.stderr)
        return 2
    if not SMOKE:
        log(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    fastopt.show_config()
    parts = (equality_suite, torch_suite) if SMOKE else (
        equality_suite, torch_suite, capture_and_stream_suite, benchmarks)
    for part in parts:
        try:
            part()
        except Exception as exc:
            failures.append(f"{part.__name__}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        log(f"[{part.__name__} done at {time.perf_counter() - t0:.0f} s]")
    for f in failures[:40]:
        print("FAIL", f)
    if len(failures) > 40:
        print(f"... and {len(failures) - 40} more failures")
    width = max(len(k) for k, _ in summary) if summary else 10
    print("\n" + "=" * (width + 40))
    print(f"{'check':<{width}}  result")
    for k, v in summary:
        print(f"{k:<{width}}  {v}")
    print(f"{'total time':<{width}}  {time.perf_counter() - t0:.0f} s; "
          f"{'ALL EQUALITY CHECKS PASSED' if not failures else f'{len(failures)} FAILURES'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
