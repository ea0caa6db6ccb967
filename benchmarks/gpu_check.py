"""The GPU check: everything that needs an NVIDIA GPU, in one run of 3-4 minutes on an H200.

    benchmarks/gpu_check.sh [--quick] [--out DIR]    # builds the CUDA kernels, then runs this
    python3 benchmarks/gpu_check.py [--quick] [--out DIR] [--only PART,...]
    python3 benchmarks/gpu_check.py --dry-run        # the same script on the CPU (CI runs it)

Parts, in order of what a first run must not miss:
  environment   device, versions, fastopt.show_config(), kernel-parameter space per device
  resolution    the time of 1,000 backend resolutions (a cached availability check)
  sanitizer     compute-sanitizer memcheck and racecheck over a tiny run of every kernel
                (in the background, collected before the benchmarks)
  equality      the `cuda` and `numba_cuda` backends against fastopt.reference: every
                optimizer option, float32/float64 100-step trajectories over sizes 1, 7,
                4097, 65537, float16/bfloat16 short ones, clipping
  robustness    split launches (clip over 2,000 tensors, a 20,000-tensor Adam step checked
                for equality) with 32 KiB and with 4 KiB kernel parameters; one step and the
                norm of a 2^31+5-element float32 tensor; views starting at buf[1:] (the
                misaligned scalar path) in every dtype
  capture       CUDA-graph capture of GradNormClipper followed by an SGD step (host
                scalars, fixed in the graph), a non-default stream, the mixed-device error
  torch         fastopt.optim on CUDA tensors against torch.optim
  cross_entropy the `cuda` backend against the reference and torch's F.cross_entropy
  losses        every element-wise loss on every GPU backend (cuda, numba_cuda), weights
                broadcast, against the reference; numba_cuda's cross-entropy likewise
  benchmarks    CUDA-event timings: copy bandwidth, Adam over 2 GB of state, 20,000 x 256
                tensors (32 KiB vs 4 KiB launches, torch fused), cross-entropy

Each case runs in its own try; a failure is printed when it happens, and the summary table is
printed (and written to --out) at the end even when the run is interrupted (SIGINT, as
gpu_check.sh's time limit sends). --quick: fewer steps and smaller sizes, numba_cuda in float32
only, no benchmarks beyond the 20,000-tensor step. --dry-run: the CPU backends on CPU tensors
with tiny sizes, the sanitizer workload without the sanitizer, GPU-only steps reported as
skipped; tests/test_gpu_check.py runs it so the script is tested before a GPU sees it.
Exit status: 0 all passed, 1 failures, 2 no GPU, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# this checkout's fastopt (built in place by gpu_check.sh) and its tests' helpers
# the tests' helpers first; the checkout's fastopt only where none is installed (an installed
# package, e.g. CI's wheel, must not be shadowed by a source tree without its extension)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.append(ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastopt  # noqa: E402
from fastopt import backends, functional  # noqa: E402

PARTS = ("environment", "resolution", "sanitizer", "equality", "robustness", "capture", "torch",
         "cross_entropy", "losses", "benchmarks")
QUICK = DRY = False
DEV = torch.device("cpu")
BACKENDS: tuple[str, ...] = ("cpu",)
MAIN = "cpu"  # the backend of the robustness and capture checks
failures: list[str] = []
summary: list[tuple[str, str]] = []
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


def fail(what: str) -> None:
    failures.append(what)
    print(f"FAIL {what}", flush=True)


@contextlib.contextmanager
def case(name: str):
    """One case: an exception is a failure of this case, and the run goes on."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        fail(f"{name}: {type(exc).__name__}: {exc}")
        traceback.print_exc()


def skipped(name: str, why: str) -> None:
    summary.append((name, f"skipped ({why})"))


# --- arrays ------------------------------------------------------------------------------------
def to_torch(a: np.ndarray) -> torch.Tensor:
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16).to(DEV)
    return torch.from_numpy(a.copy()).to(DEV)


def to_numpy(t) -> np.ndarray:
    if not isinstance(t, torch.Tensor):
        return np.asarray(t)
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def misaligned(a: np.ndarray) -> torch.Tensor:
    """A copy of `a` on the device whose data starts one element into its buffer (buf[1:]):
    no 16-byte alignment, so the kernels take their scalar path."""
    t = to_torch(np.concatenate([a[:1], a]))
    view = t[1:]
    assert view.data_ptr() % 16 != 0
    return view


def to_numba(a: np.ndarray):
    from numba import cuda

    return cuda.to_device(a)


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def check(results, dtype, what: str) -> int:
    """Compares trajectories.Compared results within the tolerance table; failures printed
    with the worst mismatch."""
    from trajectories import Compared

    bad = 0
    for r in results:
        r = Compared(*r)  # (name, actual, expected) triples as well
        try:
            r.check(dtype, what)
        except AssertionError as exc:
            bad += 1
            lines = [x for x in str(exc).splitlines() if x.strip()]
            keep = [x for x in lines if x.lstrip().startswith(("Mismatch", "Max", "["))]
            fail(f"{what} {r.name}: {' | '.join(keep[:6] or lines[-3:])}")
    return bad


@contextlib.contextmanager
def launch_params(large: bool):
    """32 KiB kernel parameters where the device takes them (large) or 4 KiB everywhere."""
    cu = backends.get("cuda")
    toggle = not DRY and cu.available()[0]
    if toggle:
        cu.set_large_params_allowed(large)
    try:
        yield
    finally:
        if toggle:
            cu.set_large_params_allowed(True)


def param_modes() -> list[tuple[str, bool]]:
    if DRY or not backends.get("cuda").available()[0]:
        return [("", True)]
    from fastopt import _C

    modes = [(" [4 KiB launches]", False)]
    if _C.cuda.large_params(DEV.index or 0):
        modes.insert(0, (" [32 KiB launches]", True))
    return modes


# --- environment, resolution -------------------------------------------------------------------
def part_environment() -> None:
    if not DRY:
        log(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__} "
            f"(CUDA {torch.version.cuda})")
    fastopt.show_config()
    with case("kernel parameter space"):
        if DRY or not backends.get("cuda").available()[0]:
            skipped("32 KiB kernel parameters", "no cuda backend")
            return
        from fastopt import _C

        rt, drv = _C.cuda.runtime_version(), _C.cuda.driver_version()
        large = _C.cuda.large_params(0)
        summary.append(("CUDA runtime / driver", f"{rt} / {drv}"))
        summary.append(("32 KiB kernel parameters on device 0", "yes" if large else "no"))


def part_resolution() -> None:
    """1,000 resolutions of the backend for this device, as every kernel call makes one."""
    device = "cpu" if DRY else "cuda"
    for label, name in (("automatic", None), ("explicit", MAIN)):
        with case(f"backend resolution ({label})"):
            backends.resolve(name, device)  # the first one may load the driver
            t0 = time.perf_counter()
            for _ in range(1000):
                backends.resolve(name, device)
            dt = time.perf_counter() - t0
            summary.append((f"1,000 backend resolutions ({label})",
                            f"{dt * 1e3:.2f} ms ({dt * 1e3:.2f} us each)"))
            if dt > 0.05:  # an uncached device query costs 1-10 ms per call
                fail(f"backend resolution ({label}): {dt * 1e3:.1f} us each (> 50 us)")


# --- sanitizer ---------------------------------------------------------------------------------
def sanitizer_workload() -> int:
    """A tiny run of every CUDA kernel (aligned and misaligned, every dtype, split launches, the
    capturable clip, cross-entropy): what compute-sanitizer watches. Exit status 0 when it ran
    and its results are finite."""
    from trajectories import FEW_CASES

    from fastopt import clip, losses

    backend = MAIN
    dtypes = [torch.float32, torch.float64]
    if DEV.type == "cuda":
        dtypes += [torch.float16, torch.bfloat16]
    sizes = (1, 7, 4097, 65536 + 9)
    g = torch.Generator().manual_seed(0)

    def make(n, dtype, shift):
        t = torch.randn(n + shift, generator=g).to(dtype).to(DEV)
        return t[shift:]

    for dtype in dtypes:
        for shift in (0, 1):
            ps = [make(n, dtype, shift) for n in sizes]
            gs = [make(n, dtype, shift) * 0.1 for n in sizes]

            def zeros(ps=ps):
                return [torch.zeros_like(p) for p in ps]

            for op, hyper in FEW_CASES:  # every optimizer, its fullest options, L1 modes
                fn = getattr(functional, f"{op}_")
                step = {"step": 1} if fn.spec.uses_step else {}
                fn(ps, gs, *(zeros() for _ in fn.spec.slots), **hyper, **step, backend=backend)
            for norm_type in (2.0, math.inf, 3.0):
                clip.clip_grad_norm_(gs, 1.0, norm_type, backend=backend)
                clip.GradNormClipper(1.0, norm_type, backend=backend)(gs)
            clip.clip_grad_value_(gs, 0.05, backend=backend)
            if not all(bool(torch.isfinite(p).all()) for p in ps):
                print(f"sanitizer workload: non-finite params ({dtype}, shift {shift})")
                return 1
    with launch_params(False):  # 300 tensors: several launches even in 4 KiB
        many = [torch.randn(5 + k % 7, device=DEV) for k in range(300)]
        clip.clip_grad_norm_(many, 0.5, backend=backend)
        clip.GradNormClipper(0.5, backend=backend)(many)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(5, 4097, dtype=dtype, device=DEV)
        t = torch.tensor([1, -100, 4096, 0, 7], device=DEV)
        w = torch.rand(4097, dtype=dtype, device=DEV) + 0.5
        losses.cross_entropy(x, t, w, label_smoothing=0.1, backend=backend)
        q = torch.softmax(torch.randn(5, 4097, dtype=dtype, device=DEV), 1)
        losses.cross_entropy(x.clone(), q, inplace=True, softcap=3.0, backend=backend)
    sync()
    print("sanitizer workload ok", flush=True)
    return 0


def start_sanitizers(out: str) -> list:
    """compute-sanitizer memcheck and racecheck over the workload, in parallel processes."""
    script = os.path.abspath(__file__)
    runs = []
    tool = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    for name in ("memcheck", "racecheck"):
        logfile = os.path.join(out, f"sanitizer-{name}.log")
        if DRY:  # the workload alone, on the CPU
            cmd = [sys.executable, script, "--sanitizer-workload", "--dry-run"]
        elif not os.path.exists(tool):
            skipped(f"compute-sanitizer {name}", "compute-sanitizer not found")
            continue
        else:
            cmd = [tool, "--tool", name, "--error-exitcode", "97", sys.executable, script,
                   "--sanitizer-workload"]
        f = open(logfile, "w")  # noqa: SIM115 (closed when collected)
        # no caching allocator: every tensor its own allocation, so memcheck sees any access
        # past a tensor's end
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTORCH_NO_CUDA_MEMORY_CACHING="1")
        runs.append((name, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env),
                     f, logfile, time.perf_counter()))
        if DRY:
            break  # one plain run tests the workload
    return runs


def finish_sanitizers(runs: list, timeout: float) -> None:
    for name, proc, f, logfile, started in runs:
        what = f"compute-sanitizer {name}" if not DRY else "sanitizer workload (no sanitizer)"
        try:
            rc = proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        f.close()
        with open(logfile, errors="replace") as fh:
            text = fh.read()
        tail = " | ".join(line.strip() for line in text.splitlines()[-4:])
        if rc is None:
            fail(f"{what}: timed out after {timeout:.0f} s ({tail})")
            summary.append((what, "TIMEOUT"))
        elif "Device not supported" in text or "not supported on this platform" in text:
            summary.append((what, "unavailable on this machine (device not supported)"))
        elif rc != 0 or "sanitizer workload ok" not in text:
            fail(f"{what}: exit {rc}: {tail}")
            summary.append((what, f"FAILED (exit {rc}; log {os.path.basename(logfile)})"))
        else:
            summary.append((what, f"clean ({time.perf_counter() - started:.0f} s)"))
        log(f"{what}: exit {rc}")


# --- equality ----------------------------------------------------------------------------------
def part_equality() -> None:
    import ml_dtypes
    from trajectories import CASES, FEW_CASES, SIZES, case_id, run, run_clip

    sizes = (1, 7, 33) if DRY else SIZES
    for backend in BACKENDS:
        ok, why = backends.get(backend).available()
        if not ok:
            fail(f"{backend}: unavailable: {why}")
            continue
        n_fail = n = 0
        if DRY:
            plans = [("float32", 3, FEW_CASES[::3]), ("float64", 2, FEW_CASES[1::5])]
        elif QUICK:
            plans = [("float32", 20, FEW_CASES), ("float64", 10, FEW_CASES),
                     ("float16", 3, FEW_CASES)]
            if backend == "numba_cuda":  # its compile time: one dtype in the quick run
                plans = plans[:1]
        else:
            plans = [("float32", 100, CASES), ("float64", 100, CASES), ("float16", 5, FEW_CASES)]
        if backend == "cuda":
            plans.append((ml_dtypes.bfloat16, 3, CASES))
        for dtype, steps, cases in plans:
            name = np.dtype(dtype).name
            for c in cases:
                what = f"{backend} {case_id(c)} {name}"
                with case(what):
                    res = run(*c, dtype, backend=backend, sizes=sizes, steps=steps,
                              to_device=to_torch, to_host=to_numpy)
                    n += len(res)
                    n_fail += check(res, name, what)
        for dtype in ("float32", "float64"):
            with case(f"{backend} clip {dtype}"):
                res = run_clip(dtype, backend=backend, sizes=sizes, to_device=to_torch,
                               to_host=to_numpy)
                n += len(res)
                n_fail += check(res, dtype, f"{backend} clip {dtype}")
        if not DRY:  # Numba device arrays work as well (in place, __cuda_array_interface__)
            with case(f"{backend} numba-device-arrays adam"):
                res = run("adam", dict(lr=1e-2), "float32", backend=backend, sizes=(7, 4097),
                          steps=5, to_device=to_numba, to_host=lambda d: d.copy_to_host())
                n += len(res)
                n_fail += check(res, "float32", f"{backend} numba-device-arrays adam")
        summary.append((f"equality {backend} vs reference", f"{n - n_fail}/{n} arrays match"))
        log(f"{backend}: {n - n_fail}/{n} arrays match the reference")


# --- robustness --------------------------------------------------------------------------------
def _adam_many(n_tensors: int, label: str) -> None:
    """One list of n_tensors x 256 through 3 Adam steps (split into many launches), against
    the reference stepped on the concatenation (the rule is elementwise)."""
    from tolerances import assert_close

    from fastopt import reference

    rng = np.random.default_rng(1)
    n = 256
    p0 = rng.standard_normal(n_tensors * n).astype(np.float32)
    flat = [to_torch(p0)] + [torch.zeros(n_tensors * n, device=DEV) for _ in range(2)]
    ps, ms, vs = (list(x.split(n)) for x in flat)  # views: distinct, contiguous tensors
    P, M, V = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    hyper = dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
    for step in range(1, 4):
        g0 = (rng.standard_normal(n_tensors * n) * 0.1).astype(np.float32)
        gs = list(to_torch(g0).split(n))
        functional.adam_(ps, gs, ms, vs, step=step, backend=MAIN, **hyper)
        reference.adam(P, g0, M, V, step=step, **hyper)
    sync()
    for name, dev, ref in (("param", flat[0], P), ("exp_avg", flat[1], M),
                           ("exp_avg_sq", flat[2], V)):
        assert_close(to_numpy(dev), ref, "float32", f"{label} {name}")


def _clip_many(n_tensors: int, label: str) -> None:
    """clip_grad_norm_ and GradNormClipper over n_tensors of mixed sizes, against the
    reference."""
    from tolerances import assert_close

    from fastopt import clip, reference

    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 3000, n_tensors)
    for norm_type in (2.0, math.inf):
        grads = [rng.standard_normal(int(s)).astype(np.float32) for s in sizes]
        ref = [g.copy() for g in grads]
        expected = reference.clip_grad_norm(ref, 0.5, norm_type)
        for how in ("clip_grad_norm_", "GradNormClipper"):
            dev = [to_torch(g) for g in grads]
            if how == "clip_grad_norm_":
                total = clip.clip_grad_norm_(dev, 0.5, norm_type, backend=MAIN)
            else:
                total = float(to_numpy(clip.GradNormClipper(0.5, norm_type,
                                                            backend=MAIN)(dev))[0])
            what = f"{label} {how} p={norm_type}"
            assert_close(np.float64(total), np.float64(expected), "float32", what + " norm")
            got = np.concatenate([to_numpy(d) for d in dev])
            assert_close(got, np.concatenate(ref), "float32", what + " grads")


def _huge_tensor() -> None:
    """2^31 + 5 float32 elements (8.6 GB per array): one SGD step (p = -lr g exactly, so every
    element is checked, on the device) and the norms, past every 32-bit index."""
    from fastopt import clip

    n = (1 << 16) + 5 if DRY else (1 << 31) + 5
    g = torch.randn(n, device=DEV)
    p = torch.zeros_like(g)
    functional.sgd_([p], [g], lr=0.5, backend=MAIN)
    sync()
    wrong = p != g * -0.5
    n_wrong = int(wrong.sum())
    if n_wrong:
        idx = torch.nonzero(wrong)[:3].flatten().tolist()
        raise AssertionError(f"{n_wrong} of {n} elements wrong after one SGD step, e.g. {idx}")
    del wrong, p
    # max_norm = inf: coefficient 1, the grads stay as they are
    l2 = clip.clip_grad_norm_([g], math.inf, 2.0, backend=MAIN)
    linf = clip.clip_grad_norm_([g], math.inf, math.inf, backend=MAIN)
    want_l2 = float(torch.linalg.vector_norm(g, dtype=torch.float64))
    want_linf = float(g.abs().max())
    if not (math.isclose(l2, want_l2, rel_tol=1e-9) and linf == want_linf):
        raise AssertionError(f"norms {l2!r}, {linf!r} vs torch {want_l2!r}, {want_linf!r}")
    summary.append((f"one SGD step + norms of a {n:,}-element float32 tensor", "exact"))


def part_robustness() -> None:
    from trajectories import CASES, run

    if not backends.get(MAIN).available()[0]:
        fail(f"robustness: backend {MAIN} unavailable")
        return
    many = 200 if DRY else (2000 if QUICK else 20000)
    n_clip = 300 if DRY else 2000
    for mode, large in param_modes():
        with launch_params(large):
            with case(f"clip over {n_clip} tensors{mode}"):
                _clip_many(n_clip, f"clip {n_clip} tensors{mode}")
                summary.append((f"clip over {n_clip} tensors{mode}", "match"))
            with case(f"Adam over {many} x 256 tensors{mode}"):
                _adam_many(many, f"adam {many} tensors{mode}")
                summary.append((f"Adam over {many} x 256 tensors, 3 steps{mode}", "match"))
    with case("2^31+5-element tensor"):
        _huge_tensor()
    if DEV.type == "cuda":
        torch.cuda.empty_cache()
    dtypes = ["float32", "float64"]
    if not DRY:
        import ml_dtypes

        dtypes += ["float16", ml_dtypes.bfloat16]
    n = n_fail = 0
    adam = next(c for c in CASES if c[0] == "adam" and c[1].get("amsgrad"))
    for dtype in dtypes:
        name = np.dtype(dtype).name
        for c in (adam, CASES[1]):
            what = f"misaligned buf[1:] {c[0]} {name}"
            with case(what):
                res = run(*c, dtype, backend=MAIN, sizes=(7, 4097, 65537), steps=3,
                          to_device=misaligned, to_host=to_numpy)
                n += len(res)
                n_fail += check(res, name, what)
    summary.append(("misaligned views buf[1:] (scalar path)", f"{n - n_fail}/{n} match"))


# --- capture -----------------------------------------------------------------------------------
def part_capture() -> None:
    if DRY:
        skipped("CUDA graph capture, streams", "dry run")
        return
    if not backends.get("cuda").available()[0]:
        fail("capture: the cuda backend is unavailable")
        return
    from tolerances import assert_close

    from fastopt import clip, reference

    rng = np.random.default_rng(0)
    n = 10007

    with case("CUDA graph capture (GradNormClipper + SGD)"):
        # the optimizers take host scalars: a captured step replays with the lr of the capture,
        # which SGD without momentum needs nothing else than; the clip's norm and coefficient
        # never leave the device
        lr = 0.05
        p0 = rng.standard_normal(n).astype(np.float32)
        p, g = to_torch(p0), torch.zeros(n, device=DEV)
        clipper = clip.GradNormClipper(1.0)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(s):
            # warm-up outside capture (module loading, the clipper's workspace)
            w = [torch.zeros(8, device=DEV) for _ in range(2)]
            functional.sgd_([w[0]], [w[1]], lr=lr, backend="cuda")
            clipper([g])
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, stream=s):
                norm = clipper([g])
                functional.sgd_([p], [g], lr=lr, backend="cuda")
        P = p0.copy()
        for step in range(1, 6):
            g_host = (rng.standard_normal(n) * (0.05 * step)).astype(np.float32)
            g.copy_(to_torch(g_host))
            graph.replay()
            G = g_host.copy()
            want_norm = reference.clip_grad_norm([G], 1.0)
            reference.sgd(P, G, lr=lr)
            torch.cuda.synchronize()
            assert_close(float(norm[0]), want_norm, "float32", f"captured norm, step {step}")
            assert_close(to_numpy(g), G, "float32", f"captured clipped grad, step {step}")
        assert_close(to_numpy(p), P, "float32", "captured SGD param")
        summary.append(("CUDA graph capture (GradNormClipper + SGD)", "ok, 5 replays"))

    with case("non-default stream ordering"):
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            x = torch.ones(1 << 22, device=DEV)
            gx = torch.full_like(x, 2.0)
            functional.sgd_([x], [gx], lr=0.25, backend="cuda")
            x.mul_(2)
        side.synchronize()
        if not bool((x == 1.0).all()):
            raise AssertionError("a side-stream step was not ordered with torch's work")
        summary.append(("non-default stream ordering", "ok"))
    with case("mixed-device error"):
        try:
            functional.sgd_([torch.zeros(3, device=DEV)], [torch.zeros(3)], lr=0.1)
            fail("mixing devices did not raise")
        except ValueError as exc:
            if "mixing devices" not in str(exc):
                fail(f"unclear mixed-device error: {exc}")


# --- torch -------------------------------------------------------------------------------------
def part_torch() -> None:
    """fastopt.optim on device tensors against torch.optim on copies of the same tensors."""
    from tolerances import assert_close

    cases = [
        ("AdamW", dict(lr=1e-2, weight_decay=0.1), dict(fused=True)),
        ("Adam", dict(lr=1e-2, amsgrad=True), dict(fused=True)),
        ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True), dict(foreach=True)),
        ("Adagrad", dict(lr=1e-2), dict(foreach=True)),
        ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True), dict(foreach=True)),
    ]
    steps = 3 if DRY else (10 if QUICK else 20)
    for backend in BACKENDS:
        if not backends.get(backend).available()[0]:
            continue
        n = bad = 0
        for name, hyper, impl in cases:
            for dtype in (torch.float32, torch.float64):
                what = f"{backend} vs torch.optim.{name} {dtype}"
                with case(what):
                    gen = torch.Generator(device="cpu").manual_seed(0)
                    shapes = [(1,), (7,), (33,)] if DRY else [(1,), (7,), (4097,), (65, 1009)]
                    ps = [torch.randn(s, generator=gen, dtype=dtype).to(DEV) for s in shapes]
                    tp = [p.clone().requires_grad_(True) for p in ps]
                    topt = getattr(torch.optim, name)(tp, **hyper, **impl)
                    fopt = getattr(fastopt.optim, name)(ps, **hyper, backend=backend)
                    for _ in range(steps):
                        gs = [torch.randn(s, generator=gen, dtype=dtype).to(DEV) * 0.1
                              for s in shapes]
                        for p, g in zip(tp, gs, strict=True):
                            p.grad = g.clone()
                        topt.step()
                        fopt.step(gs)
                    for k, (a, b) in enumerate(zip(ps, tp, strict=True)):
                        n += 1
                        try:
                            assert_close(to_numpy(a), to_numpy(b), str(dtype)[6:],
                                         f"{what} param[{k}]")
                        except AssertionError as exc:
                            bad += 1
                            fail(str(exc).strip().splitlines()[0])
        summary.append((f"equality {backend} vs torch.optim", f"{n - bad}/{n} match"))
        log(f"{backend} vs torch.optim: {n - bad}/{n} match")
        n, bad = _grad_scale_against_torch(backend, steps)
        summary.append((f"grad_scale {backend} vs torch fused", f"{n - bad}/{n} match"))
        log(f"{backend} grad_scale vs torch fused AdamW: {n - bad}/{n} match")


def _grad_scale_against_torch(backend: str, steps: int) -> tuple[int, int]:
    """AdamW stepping grads scaled by GradScaler's 2^10 with grad_scale (unscaled in the
    step's pass, left unscaled) against torch's fused AdamW taking the same scale."""
    from tolerances import assert_close

    n = bad = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        what = f"{backend} grad_scale AdamW {dtype}"
        with case(what):
            gen = torch.Generator(device="cpu").manual_seed(1)
            shapes = [(1,), (7,), (33,)] if DRY else [(1,), (7,), (4097,), (65, 1009)]
            ps = [torch.randn(s, generator=gen).to(DEV, dtype) for s in shapes]
            tp = [p.clone().requires_grad_(True) for p in ps]
            topt = torch.optim.AdamW(tp, lr=1e-2, fused=True)
            topt.grad_scale = torch.tensor(2.0**10, device=DEV)
            topt.found_inf = torch.tensor(0.0, device=DEV)
            fopt = fastopt.optim.AdamW(ps, lr=1e-2, backend=backend)
            for _ in range(steps):
                gs = [(torch.randn(s, generator=gen) * 0.1 * 2**10).to(DEV, dtype)
                      for s in shapes]
                for p, g in zip(tp, gs, strict=True):
                    p.grad = g.clone()
                topt.step()
                fopt.step(gs, grad_scale=2.0**10, found_inf=0.0)
            name = str(dtype)[6:]
            for k, (a, b) in enumerate(zip(ps + gs, tp + [p.grad for p in tp], strict=True)):
                n += 1
                try:
                    assert_close(to_numpy(a.float()), to_numpy(b.float()), name,
                                 f"{what} {'param' if k < len(ps) else 'grad'}[{k}]")
                except AssertionError as exc:
                    bad += 1
                    fail(str(exc).strip().splitlines()[0])
    return n, bad


# --- cross-entropy -----------------------------------------------------------------------------
def usable(what: str, backend: str) -> bool:
    """Whether `backend` can run here; where not, a failure saying why."""
    ok, why = backends.get(backend).available()
    if not ok:
        fail(f"{what} {backend}: unavailable: {why}")
    return ok


def part_cross_entropy() -> None:
    """fastopt.losses.cross_entropy (the `cuda` backend) against the reference and torch's
    F.cross_entropy + backward: float32/float64, odd shapes, every option, int32/int64
    targets, in place, forward only, a non-default stream."""
    from loss_cases import ce_inputs

    from fastopt import losses
    from fastopt import reference as ref

    backend = MAIN
    if not usable("cross_entropy", backend):
        return
    options = {
        "plain": {}, "weight_ignore_smooth": dict(weight=True, ignore=True, label_smoothing=0.2),
        "z_softcap": dict(z_loss=1e-3, softcap=5.0), "probs": dict(probs=True),
        "probs_weight_smooth": dict(probs=True, weight=True, label_smoothing=0.1),
        "everything": dict(weight=True, ignore=True, label_smoothing=0.3, z_loss=1e-3,
                           softcap=4.0)}
    if DRY:
        shapes = ((1, 1), (3, 33))
    elif QUICK:
        shapes = ((1, 1), (7, 4097), (3, 50257))
    else:
        shapes = ((1, 1), (7, 4097), (65, 1031), (3, 50257))
    n = n_fail = 0
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        for shape in shapes:
            for k, (name, opts) in enumerate(options.items()):
                reduction = ("mean", "sum", "none")[k % 3]
                what = f"cross_entropy {backend} {name} {dtype} {list(shape)} {reduction}"
                with case(what):
                    x, t, w, kw = ce_inputs(rng, shape, dtype, opts,
                                            np.int32 if k % 2 else np.int64)
                    rloss, rgrad = ref.cross_entropy(x, t, w, reduction=reduction, **kw)
                    xd, td = to_torch(x), to_torch(t)
                    wd = None if w is None else to_torch(w)
                    loss, grad = losses.cross_entropy(xd, td, wd, reduction=reduction,
                                                      backend=backend, **kw)
                    lv = to_numpy(loss)
                    res = [("loss", lv, rloss), ("grad", to_numpy(grad), rgrad)]
                    if isinstance(loss, torch.Tensor) and loss.device != xd.device:
                        fail(f"{what}: row losses on {loss.device}")
                    xi = to_torch(x)
                    _, gi = losses.cross_entropy(xi, td, wd, reduction=reduction, inplace=True,
                                                 backend=backend, **kw)
                    res.append(("inplace grad", to_numpy(gi), rgrad))
                    fwd = losses.cross_entropy(xd, td, wd, reduction=reduction,
                                               return_grad=False, backend=backend, **kw)
                    res.append(("forward-only loss", to_numpy(fwd), rloss))
                    if not opts.get("probs") and "z_loss" not in kw and "softcap" not in kw:
                        xt = to_torch(x).requires_grad_(True)
                        out = torch.nn.functional.cross_entropy(
                            xt, td.long(), wd, reduction=reduction, **kw)
                        out.sum().backward()
                        res += [("loss vs torch", lv, to_numpy(out)),
                                ("grad vs torch", to_numpy(grad), to_numpy(xt.grad))]
                    n += len(res)
                    n_fail += check(res, dtype, what)
    if not DRY:
        with case("cross_entropy on a side stream"):
            x = rng.standard_normal((33, 4097)).astype("float32")
            t = rng.integers(0, 4097, 33)
            rloss, rgrad = ref.cross_entropy(x, t)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                xd, td = to_torch(x), to_torch(t)
                loss, grad = losses.cross_entropy(xd, td)
            torch.cuda.synchronize()
            res = [("side-stream loss", loss, rloss), ("side-stream grad", to_numpy(grad), rgrad)]
            n += len(res)
            n_fail += check(res, "float32", "cross_entropy stream")
    summary.append((f"cross_entropy {backend} vs reference/torch", f"{n - n_fail}/{n} match"))
    log(f"cross_entropy {backend}: {n - n_fail}/{n} match")


def part_losses() -> None:
    """Every element-wise loss (value, gradient, element losses) on every backend under test,
    odd sizes and broadcast weights, and numba_cuda's cross-entropy, against the reference."""
    from loss_cases import ELEMENTWISE, ce_inputs, elementwise_inputs

    from fastopt import losses
    from fastopt import reference as ref

    sizes = (7, 33) if DRY else ((7, 4097, 65537) if QUICK else (7, 4097, 65537, 1 << 24))
    rng = np.random.default_rng(1)
    for backend in BACKENDS:
        if not usable("losses", backend):
            continue
        n = n_fail = 0
        for dtype in ("float32", "float64"):
            for size in sizes:
                for k, (kind, (name, kw)) in enumerate(ELEMENTWISE.items()):
                    reduction = ("mean", "sum", "none")[(k + size) % 3]
                    what = f"{name}{kw or ''} {backend} {dtype} [{size}] {reduction}"
                    with case(what):
                        shape = (size // 7, 7) if size % 7 == 0 else (size,)
                        x, y, weights = elementwise_inputs(rng, kind, shape, dtype)
                        rloss, rgrad = getattr(ref, name)(x, y, reduction=reduction, **kw,
                                                          **weights)
                        loss, grad = getattr(losses, name)(
                            to_torch(x), to_torch(y), reduction=reduction, backend=backend,
                            **kw, **{a: to_torch(v) for a, v in weights.items()})
                        res = [("loss", to_numpy(loss) if isinstance(loss, torch.Tensor)
                                else loss, rloss), ("grad", to_numpy(grad), rgrad)]
                        n += len(res)
                        n_fail += check(res, dtype, what)
        if backend == "numba_cuda":
            for dtype in ("float32", "float64"):
                for shape, opts in (((1, 1), {}), ((7, 4097), dict(label_smoothing=0.2)),
                                    ((3, 50257), dict(z_loss=1e-3, softcap=5.0))):
                    what = f"cross_entropy numba_cuda {dtype} {list(shape)} {opts}"
                    with case(what):
                        x, t, w, kw = ce_inputs(rng, shape, dtype,
                                                dict(opts, ignore=True, weight=True))
                        rloss, rgrad = ref.cross_entropy(x, t, w, **kw)
                        xd = to_torch(x)
                        loss, grad = losses.cross_entropy(xd, to_torch(t), to_torch(w),
                                                          backend="numba_cuda", **kw)
                        _, gi = losses.cross_entropy(xd, to_torch(t), to_torch(w),
                                                     inplace=True, backend="numba_cuda", **kw)
                        res = [("loss", loss, rloss), ("grad", to_numpy(grad), rgrad),
                               ("inplace grad", to_numpy(gi), rgrad)]
                        n += len(res)
                        n_fail += check(res, dtype, what)
        summary.append((f"losses {backend} vs reference", f"{n - n_fail}/{n} match"))
        log(f"losses {backend}: {n - n_fail}/{n} match")


# --- benchmarks --------------------------------------------------------------------------------
def time_events(fn, reps: int, inner: int = 1) -> float:
    """Median seconds per call of fn over `reps` timed batches of `inner` calls (CUDA events on
    the GPU, the wall clock on the CPU)."""
    times = []
    for _ in range(reps):
        if DEV.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(inner):
                fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3 / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def interleaved(fns: dict, rounds: int, reps: int, inner: int = 1) -> dict[str, float]:
    if DRY:  # the code path, not the numbers
        rounds = reps = inner = 1
    for fn in fns.values():  # warm-up (compilation, allocator)
        fn()
    sync()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k].append(time_events(fn, reps, inner))
    return {k: statistics.median(v) for k, v in samples.items()}


GB = 1e9


def bench_copy() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second)."""
    n_copy = (1 << 16) if DRY else ((1 << 26) if QUICK else (1 << 28))
    src = torch.empty(n_copy, device=DEV)
    dst = torch.empty_like(src)
    t = interleaved({"copy": lambda: dst.copy_(src)}, 3, 5)["copy"]
    copy_bw = 2 * src.numel() * 4 / t
    summary.append(("device-to-device copy", f"{copy_bw / GB:.0f} GB/s"))
    return copy_bw


def bench_adam_large(copy_bw: float) -> None:
    """Adam fp32 over >= 2 GB of state (param, grad, exp_avg, exp_avg_sq: 16 B/element)."""
    total = (1 << 16) if DRY else ((1 << 24) if QUICK else (1 << 27))
    n_t = 64
    sizes = [total // n_t] * n_t
    ps = [torch.randn(s, device=DEV) for s in sizes]
    gs = [torch.randn(s, device=DEV) * 0.01 for s in sizes]
    fns = {}
    for backend in BACKENDS:
        if backends.get(backend).available()[0]:
            opt = fastopt.optim.AdamW(ps, lr=1e-3, backend=backend)
            fns[f"fastopt {backend}"] = lambda o=opt: o.step(gs)
    tp = [p.clone().requires_grad_(True) for p in ps]
    for p, g in zip(tp, gs, strict=True):
        p.grad = g
    topt = torch.optim.AdamW(tp, lr=1e-3, fused=True)
    fns["torch fused AdamW"] = topt.step
    res = interleaved(fns, 3, 5)
    moved = 28 * total
    for k, t in res.items():
        summary.append((f"AdamW fp32 {total * 16 / GB:.2f} GB state: {k}",
                        f"{t * 1e3:.2f} ms, {moved / t / GB:.0f} GB/s "
                        f"({moved / t / copy_bw:.0%} of copy)"))


def bench_adam_small() -> None:
    """20,000 tensors x 256 params, host overhead included (events span the whole step): 32
    KiB launches against 4 KiB ones, and torch fused."""
    n_small = 200 if DRY else (2000 if QUICK else 20000)
    ps = [torch.randn(256, device=DEV) for _ in range(n_small)]
    gs = [torch.randn(256, device=DEV) * 0.01 for _ in range(n_small)]
    fns = {}
    if backends.get(MAIN).available()[0]:
        o = fastopt.optim.AdamW(ps, lr=1e-3, backend=MAIN)
        for mode, large in param_modes():
            def step(large=large):
                with launch_params(large):
                    o.step(gs)
            fns[f"fastopt {MAIN}{mode}"] = step
    tp = [p.clone().requires_grad_(True) for p in ps]
    for p, g in zip(tp, gs, strict=True):
        p.grad = g
    topt = torch.optim.AdamW(tp, lr=1e-3, fused=True)
    fns["torch fused AdamW"] = topt.step
    res = interleaved(fns, 3, 3, inner=5)
    for k, t in res.items():
        summary.append((f"AdamW {n_small} x 256 params: {k}", f"{t * 1e3:.2f} ms/step"))
    best = min((t for k, t in res.items() if k.startswith("fastopt")), default=None)
    if best:
        summary.append((f"AdamW {n_small} x 256: speed-up vs torch fused",
                        f"{res['torch fused AdamW'] / best:.1f}x"))


def bench_cross_entropy(copy_bw: float) -> None:
    """Cross-entropy forward + gradient on [8192, 50257] fp32 (8 B/element)."""
    from fastopt import losses

    rows, cols = (4, 1031) if DRY else ((1024, 50257) if QUICK else (8192, 50257))
    logits = torch.randn(rows, cols, device=DEV)
    target = torch.randint(0, cols, (rows,), device=DEV)
    li = logits.clone()  # overwritten by its gradient every call: values stay finite
    fns = {"fastopt": lambda: losses.cross_entropy(logits, target, backend=MAIN),
           "fastopt inplace": lambda: losses.cross_entropy(li, target, inplace=True,
                                                           backend=MAIN)}
    tl = logits.clone().requires_grad_(True)

    def torch_ce():
        tl.grad = None  # a fresh gradient each call, as fastopt's (no accumulation pass)
        loss = torch.nn.functional.cross_entropy(tl, target)
        loss.backward()

    fns["torch fwd+bwd"] = torch_ce
    res = interleaved(fns, 3, 5)
    moved = 8 * rows * cols
    for k, t in res.items():
        summary.append((f"cross_entropy [{rows}, {cols}]: {k}",
                        f"{t * 1e3:.2f} ms, {moved / t / GB:.0f} GB/s "
                        f"({moved / t / copy_bw:.0%} of copy)"))
    summary.append(("cross_entropy: speed-up vs torch fwd+bwd",
                    f"{res['torch fwd+bwd'] / res['fastopt']:.1f}x"))


def part_benchmarks() -> None:
    from fastopt.backends import numba_cuda

    ct = numba_cuda.compile_times()  # first launches happened in the equality part
    if ct:
        summary.append(("numba_cuda first-call (compile/cache) time",
                        f"{sum(ct.values()):.1f} s over {len(ct)} kernels"))
    copy_bw = 1.0
    with case("benchmark: copy"):
        copy_bw = bench_copy()
    if QUICK:  # the many-tensor step is the one quick timing: launch count and host overhead
        with case("benchmark: AdamW many tensors"):
            bench_adam_small()
        return
    for name, fn in (("AdamW large", lambda: bench_adam_large(copy_bw)),
                     ("AdamW many tensors", bench_adam_small),
                     ("cross_entropy", lambda: bench_cross_entropy(copy_bw))):
        with case(f"benchmark: {name}"):
            fn()
        if DEV.type == "cuda":
            torch.cuda.empty_cache()


# --- main --------------------------------------------------------------------------------------
def report(out: str | None, interrupted: bool) -> None:
    lines = []
    if failures:
        lines.append(f"{len(failures)} FAILURES:")
        lines += [f"  FAIL {f}" for f in failures[:60]]
        if len(failures) > 60:
            lines.append(f"  ... and {len(failures) - 60} more")
    width = max([len(k) for k, _ in summary] + [10])
    lines += ["", "=" * (width + 40), f"{'check':<{width}}  result"]
    lines += [f"{k:<{width}}  {v}" for k, v in summary]
    verdict = ("INTERRUPTED; " if interrupted else "") + (
        "ALL CHECKS PASSED" if not failures else f"{len(failures)} FAILURES")
    lines.append(f"{'total time':<{width}}  {time.perf_counter() - T0:.0f} s; {verdict}")
    text = "\n".join(lines)
    print(text, flush=True)
    if out:
        with open(os.path.join(out, "summary.txt"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump({"summary": summary, "failures": failures, "interrupted": interrupted,
                       "quick": QUICK, "dry_run": DRY,
                       "seconds": time.perf_counter() - T0}, f, indent=1)


def configure(args) -> None:
    global QUICK, DRY, DEV, BACKENDS, MAIN
    QUICK = args.quick or os.environ.get("GPU_CHECK_QUICK") == "1"
    DRY = args.dry_run
    DEV = torch.device("cpu") if DRY else torch.device("cuda", 0)
    BACKENDS = ("cpu",) if DRY else ("cuda", "numba_cuda")
    MAIN = "cpu" if DRY else "cuda"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and sizes (a first run)")
    ap.add_argument("--dry-run", action="store_true", help="on the CPU, to test the script")
    ap.add_argument("--out", help="folder for summary.txt, summary.json and sanitizer logs")
    ap.add_argument("--only", help=f"comma-separated parts of: {', '.join(PARTS)}")
    ap.add_argument("--sanitizer-timeout", type=float, default=150.0,
                    help="seconds each compute-sanitizer run may take from its start")
    ap.add_argument("--sanitizer-workload", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure(args)
    # KeyboardInterrupt on SIGINT (gpu_check.sh's time limit) and SIGTERM, even where the
    # parent started this process with SIGINT ignored (a background job of a shell)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.sanitizer_workload:
        return sanitizer_workload()
    if not DRY and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device", file=sys.stderr)
        return 2
    parts = PARTS if not args.only else tuple(p.strip() for p in args.only.split(","))
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)} (known: {', '.join(PARTS)})")
    out = args.out
    if out:
        os.makedirs(out, exist_ok=True)
    log(f"gpu_check: {'dry run (CPU)' if DRY else 'GPU'}{', quick' if QUICK else ''}; "
        f"parts: {', '.join(parts)}")
    sanitizers: list = []
    interrupted = False
    try:
        for part in parts:
            if part == "sanitizer":
                # in parallel with the checks; collected before the benchmarks time anything
                with case("sanitizer start"):
                    sanitizers = start_sanitizers(out or os.getcwd())
                continue
            if part == "benchmarks" and sanitizers:
                finish_sanitizers(sanitizers, args.sanitizer_timeout)
                sanitizers = []
            with case(part):
                globals()[f"part_{part}"]()
            log(f"[{part} done]")
        if sanitizers:
            finish_sanitizers(sanitizers, args.sanitizer_timeout)
            sanitizers = []
    except KeyboardInterrupt:
        interrupted = True
        print("gpu_check: interrupted (time limit?); the summary so far follows", flush=True)
    finally:
        for _, proc, f, _, _ in sanitizers:
            proc.kill()
            f.close()
        report(out, interrupted)
    if interrupted:
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
