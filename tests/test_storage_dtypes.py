"""float16 and bfloat16 storage on the CPU (csrc/cpu/half.h): params, grads and state in the
param's dtype, math in float32 (float64 for float64-math ops), every result rounded to the
storage dtype to nearest even, as the reference rounds.

- every optimizer case of the functional layer against the reference, 30 steps, sizes 1, 7,
  4097 and 65537, in both dtypes;
- fastopt.optim classes on ml_dtypes.bfloat16 and float16 NumPy arrays (mixed shapes);
- fastopt.torch against torch's fused CPU optimizers on bf16/fp16 tensors;
- the conversions themselves, on all 65,536 bit patterns, against NumPy / ml_dtypes;
- a backend without 16-bit kernels (numba) is refused by name and skipped automatically.
"""

from __future__ import annotations

import numpy as np
import pytest
from optim_db import DB
from tolerances import assert_close
from trajectories import CASES, SIZES, against_reference, case_id, run

import fastopt
from fastopt import backends, clip

ml_dtypes = pytest.importorskip("ml_dtypes")

DTYPES16 = ["float16", "bfloat16"]
MIXED = [(1,), (7,), (4097,), (16385,), (3, 5), (33, 17)]


def _cpu_kernels():
    ok, why = backends.get("cpu").available()
    if not ok:
        pytest.skip(f"the C++ CPU kernels are not built: {why}")


@pytest.mark.parametrize("dtype", DTYPES16)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_functional_16bit_matches_reference(case, dtype):
    _cpu_kernels()
    for r in run(*case, dtype, backend="cpu", sizes=SIZES, steps=30):
        r.check(dtype, f"{case_id(case)} cpu")


@pytest.mark.parametrize("dtype", DTYPES16)
@pytest.mark.parametrize("entry", DB, ids=lambda e: e.name)
def test_optim_classes_on_16bit_arrays_match_reference(entry, dtype):
    _cpu_kernels()
    against_reference(entry.optim_class, entry.full, "cpu", dtype, MIXED, steps=10)


#: torch.optim classes with a fused CPU kernel, and options that exercise their state. SGD's
#: is not among them: torch's fused CPU SGD in 16 bits strays ~10x further from the float64
#: trajectory than float32 math does (test_16bit_sgd_is_nearer_float64_than_torch_fused).
FUSED = {"Adam": dict(lr=1e-2, weight_decay=0.1), "AdamW": dict(lr=1e-2, amsgrad=True),
         "Adagrad": dict(lr=1e-1)}


@pytest.mark.parametrize("dtype", DTYPES16)
@pytest.mark.parametrize("name", sorted(FUSED))
def test_fastopt_torch_16bit_matches_torch_fused(name, dtype):
    """The drop-in takes bf16/fp16 models as torch's fused CPU optimizers do (state in the
    param dtype, math in float32) and follows them step by step."""
    torch = pytest.importorskip("torch")
    _cpu_kernels()
    import fastopt.torch as fo

    tdt = getattr(torch, dtype)
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(np.float32) for s in MIXED]
    grads = [[(rng.standard_normal(s) * 0.1).astype(np.float32) for s in MIXED]
             for _ in range(10)]
    runs = {}
    for which in ("fastopt", "torch"):
        params = [torch.tensor(p).to(tdt).requires_grad_(True) for p in init]
        opt = (getattr(fo, name)(params, **FUSED[name]) if which == "fastopt" else
               getattr(torch.optim, name)(params, fused=True, **FUSED[name]))
        for g in grads:
            for p, x in zip(params, g, strict=True):
                p.grad = torch.tensor(x).to(tdt)
            opt.step()
        runs[which] = (params, opt)
    (ours, o_opt), (theirs, t_opt) = runs["fastopt"], runs["torch"]
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.dtype == tdt
        assert_close(a.detach().float().numpy(), b.detach().float().numpy(), dtype,
                     f"{name} {dtype} param {k}")
        sa, sb = o_opt.state[a], t_opt.state[b]
        for key, value in sb.items():
            if key == "step":
                assert float(sa[key]) == float(value)
                continue
            assert sa[key].dtype == value.dtype == tdt, (name, key)  # state in the param dtype
            assert_close(sa[key].float().numpy(), value.float().numpy(), dtype,
                         f"{name} {dtype} {key} {k}")


@pytest.mark.parametrize("dtype", DTYPES16)
@pytest.mark.parametrize("options", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True)])
def test_16bit_sgd_is_nearer_float64_than_torch_fused(options, dtype):
    torch = pytest.importorskip("torch")
    _cpu_kernels()
    import fastopt.torch as fo

    rng = np.random.default_rng(0)
    init = rng.standard_normal(4097).astype(np.float32)
    grads = [(rng.standard_normal(4097) * 0.1).astype(np.float32) for _ in range(10)]

    def final(tdt, make):
        p = torch.tensor(init).to(tdt).requires_grad_(True)
        opt = make([p], lr=1e-2, **options)
        for g in grads:
            p.grad = torch.tensor(g).to(tdt)
            opt.step()
        return p.detach().double().numpy()

    exact = final(torch.float64, torch.optim.SGD)
    tdt = getattr(torch, dtype)
    ours = np.abs(final(tdt, fo.SGD) - exact).max()
    fused = np.abs(final(tdt, lambda *a, **k: torch.optim.SGD(*a, fused=True, **k))
                   - exact).max()
    assert ours <= fused, (ours, fused)


def _all_patterns(dtype: str) -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint16).view(np.dtype(getattr(ml_dtypes, dtype, dtype)))


@pytest.mark.parametrize("dtype", DTYPES16)
def test_conversions_round_trip_every_bit_pattern(dtype):
    """float(x) then back is the identity on every finite and infinite value, NaN stays NaN
    (clip_grad_value_ with an infinite bound computes T(float(x)) per element)."""
    _cpu_kernels()
    x = _all_patterns(dtype)
    y = x.copy()
    clip.clip_grad_value_([y], float("inf"), backend="cpu")
    nan = np.isnan(x.astype(np.float32))
    np.testing.assert_array_equal(y.view(np.uint16)[~nan], x.view(np.uint16)[~nan])
    assert np.isnan(y.astype(np.float32)[nan]).all()


@pytest.mark.parametrize("coef", [0.3, 0.999, 1e-3])
@pytest.mark.parametrize("dtype", DTYPES16)
def test_float_to_16bit_rounds_to_nearest_even(dtype, coef):
    """T(float(x) * c) for every finite pattern (subnormals included) against NumPy's float32
    product cast by NumPy / ml_dtypes: the clip scale kernel's one rounding."""
    _cpu_kernels()
    x = _all_patterns(dtype)
    x = x[np.isfinite(x.astype(np.float32))]
    total = float(np.sqrt(np.sum(x.astype(np.float64) ** 2)))
    max_norm = coef * (total + 1e-6)
    y = x.copy()
    clip.clip_grad_norm_([y], max_norm, backend="cpu")
    c = np.float32(min(max_norm / (total + 1e-6), 1.0))
    want = (x.astype(np.float32) * c).astype(x.dtype)
    np.testing.assert_array_equal(y.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("dtype", DTYPES16)
def test_optimizer_tiles_convert_every_bit_pattern(dtype):
    """The optimizer drivers convert 16-bit rows in tiles (csrc/cpu/step.cpp: step_tiles, with
    AVX2 / F16C sequences): SGD with lr 0 gives every pattern back, NaN as NaN; with p = 0 it
    writes 0 - c * g rounded once, as NumPy / ml_dtypes round the float32 product."""
    _cpu_kernels()
    x = _all_patterns(dtype)
    p = x.copy()
    fastopt.functional.sgd_([p], [np.ones_like(x)], lr=0.0, backend="cpu")
    nan = np.isnan(x.astype(np.float32))
    np.testing.assert_array_equal(p.view(np.uint16)[~nan], x.view(np.uint16)[~nan])
    assert np.isnan(p.astype(np.float32)[nan]).all()
    g = x[~nan]
    for c in (0.3, 1e-3, 7.0):
        p = np.zeros_like(g)
        fastopt.functional.sgd_([p], [g], lr=c, backend="cpu")
        want = (np.float32(0) - np.float32(c) * g.astype(np.float32)).astype(g.dtype)
        np.testing.assert_array_equal(p.view(np.uint16), want.view(np.uint16))


def test_a_backend_without_16bit_kernels_is_refused_or_skipped(monkeypatch):
    _cpu_kernels()
    p = [np.ones(5, ml_dtypes.bfloat16)]
    g = [np.ones(5, ml_dtypes.bfloat16)]
    with pytest.raises(backends.BackendUnavailable, match="numba.*does not take bfloat16"):
        fastopt.functional.sgd_(p, g, lr=0.5, backend="numba")
    assert float(p[0][0]) == 1.0  # nothing written
    for name in ("cpu", "reference"):  # left: numba, which has no 16-bit kernels
        monkeypatch.setattr(backends.get(name), "available", lambda: (False, "test double"))
    with pytest.raises(backends.BackendUnavailable, match="numba: does not take bfloat16"):
        fastopt.functional.sgd_(p, g, lr=0.5)
    monkeypatch.undo()
    fastopt.functional.sgd_(p, g, lr=0.5)  # automatic: the C++ kernels
    assert float(p[0][0]) == 0.5


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fastopt_torch_steps_a_mixed_dtype_group_as_torch_fused(name):
    """One param group holding bfloat16, float16 and float32 params (a bf16 model with fp32
    norms, say): one kernel call per dtype, each in its own storage, as torch's fused step."""
    torch = pytest.importorskip("torch")
    _cpu_kernels()
    import fastopt.torch as fo

    torch.manual_seed(0)
    dtypes = [torch.bfloat16, torch.float32, torch.float16, torch.bfloat16, torch.float32]
    init = [torch.randn(n) for n in (4097, 7, 1000, 1, 65537)]
    runs = []
    for ours in (True, False):
        params = [x.to(dt).requires_grad_() for x, dt in zip(init, dtypes, strict=True)]
        opt = (getattr(fo, name)(params, **FUSED[name]) if ours else
               getattr(torch.optim, name)(params, fused=True, **FUSED[name]))
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in params:
                p.grad = (torch.randn(p.shape, generator=gen) * 0.1).to(p.dtype)
            opt.step()
        runs.append((params, opt))
    (mine, o_mine), (theirs, o_theirs) = runs
    for k, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        what = str(a.dtype).removeprefix("torch.")
        assert a.dtype == b.dtype and o_mine.state[a]["exp_avg"].dtype == a.dtype
        assert_close(a.detach().float().numpy(), b.detach().float().numpy(), what,
                     f"{name} param {k} ({what})")
