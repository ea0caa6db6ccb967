"""Stochastic rounding of float16 and bfloat16 params (stochastic_rounding=True, seed=):

- the kernels round exactly as fastopt.reference.rounding specifies, bit for bit, on updates
  whose float32 result is exact (so that both round the same value): normal, subnormal,
  overflowing, infinite and NaN results, in every ISA build and thread count, across chunks;
- unbiased: updates far below half an ulp, lost entirely by round to nearest, accumulate on
  average (mean drift far below an ulp), in both formats and in float16's subnormal range;
- reproducible: the same seed and step give the same bits; another seed or step other bits;
- every layer takes it (functional, fastopt.optim, fastopt.torch, where SGD and Lion then keep
  a step count), float32 params ignore it, and bad options or a backend without it are refused
  before anything changes.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import backends, functional, reference

ml_dtypes = pytest.importorskip("ml_dtypes")

DTYPES16 = ["float16", "bfloat16"]
N = 65537  # four chunks of the CPU driver and a tail, each of 64 tiles


def _np(dtype):
    return fastopt._arrays.numpy_dtype(dtype)


def _cpu():
    ok, why = backends.get("cpu").available()
    if not ok:
        pytest.skip(f"the C++ CPU kernels are not built: {why}")
    return fastopt._C


def _exact_update_inputs(dtype, seed=0):
    """p, g and a power-of-two lr with p - lr * g exact in float32 (and float64): the kernels'
    float32 math and the reference's float64 then round the same value."""
    rng = np.random.default_rng(seed)
    dt = _np(dtype)
    scale = 2.0 ** rng.integers(-30 if dtype == "float16" else -60, 12, N)
    if dtype == "float16":
        scale = np.clip(scale, 2.0**-24, 2.0**12)
    p = (rng.standard_normal(N) * scale).astype(dt)
    g = (rng.standard_normal(N) * scale * 3).astype(dt)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, -65504.0, 2.0**-24,
                        -(2.0**-24), 6.0e-8, 1.0], dtype=np.float64)
    p[:special.size] = special.astype(dt)
    g[:special.size] = np.array([1e-3, -1e-3, 1.0, 1.0, 1.0, -65504.0, 65504.0, 0.75, -0.25,
                                 0.5, -2.0**-9]).astype(dt)
    return p, g


def _sgd(p, g, backend, *, lr=2.0**-3, step=1, seed=0, sr=True):
    functional.sgd_([p], [g], [None], lr=lr, step=step, seed=seed, stochastic_rounding=sr,
                    backend=backend)


def _supported_isas():
    C = fastopt._C if backends.get("cpu").available()[0] else None
    if C is None:
        return ["none"]
    order = ["baseline", "avx2", "avx512"]
    return [i for i in C.compiled_isas() if order.index(i) <= order.index(C.widest_isa())]


@pytest.mark.parametrize("isa", _supported_isas())
@pytest.mark.parametrize("dtype", DTYPES16)
def test_kernels_round_as_the_reference_bit_for_bit(dtype, isa):
    C = _cpu()
    before, threads = C.isa(), fastopt.get_num_threads()
    p0, g = _exact_update_inputs(dtype)
    ref = p0.copy()
    _sgd(ref, g, "reference", step=7, seed=123)
    try:
        C.set_isa(isa)
        for n in sorted({1, threads}):
            fastopt.set_num_threads(n)
            p = p0.copy()
            _sgd(p, g, "cpu", step=7, seed=123)
            np.testing.assert_array_equal(p.view(np.uint16), ref.view(np.uint16),
                                          err_msg=f"{isa}, {n} threads")
    finally:
        C.set_isa(before)
        fastopt.set_num_threads(threads)
    # the rounding did round: not all results are round to nearest's
    nearest = p0.copy()
    _sgd(nearest, g, "cpu", sr=False)
    assert (nearest.view(np.uint16) != ref.view(np.uint16)).mean() > 0.1


#: (dtype, start, ulp): a param of 1 and of -3 in both formats, and a float16 subnormal
#: (bfloat16 has float32's range: its subnormals are float32's)
UNBIASED = [pytest.param(d, s, None, id=f"{d}-{s}") for d in DTYPES16 for s in (1.0, -3.0)] \
    + [pytest.param("float16", 3 * 2.0**-24, 2.0**-24, id="float16-subnormal")]


@pytest.mark.parametrize(("dtype", "start", "ulp"), UNBIASED)
def test_updates_below_half_an_ulp_accumulate_unbiased(dtype, start, ulp):
    """SGD with a constant gradient moving each param by 1/32 ulp a step: round to nearest
    never moves it; stochastic rounding moves it by the right amount on average."""
    _cpu()
    dt = _np(dtype)
    if ulp is None:
        ulp = float(np.spacing(np.abs(np.array(start, dt))))
    steps, lr = 64, ulp / 32
    for sr in (False, True):
        p = np.full(N, start, dt)
        g = np.full(N, -1.0, dt)  # p grows by lr a step
        for step in range(1, steps + 1):
            _sgd(p, g, "cpu", lr=lr, step=step, seed=5, sr=sr)
        drift = (p.astype(np.float64) - start).mean() / ulp
        if not sr:
            assert drift == 0.0  # the update is lost every step
        else:
            # expected steps / 32 = 2 ulps; the mean of N elements is within 0.05 ulp of it
            assert abs(drift - steps / 32) < 0.05, drift


@pytest.mark.parametrize("dtype", DTYPES16)
def test_same_key_same_bits_other_key_other_bits(dtype):
    _cpu()
    p0, g = _exact_update_inputs(dtype, seed=1)
    runs = {}
    for key in [(1, 0), (1, 0), (2, 0), (1, 1)]:
        p = p0.copy()
        _sgd(p, g, "cpu", step=key[0], seed=key[1])
        runs.setdefault(key, []).append(p.view(np.uint16).copy())
    np.testing.assert_array_equal(*runs[(1, 0)])
    assert (runs[(2, 0)][0] != runs[(1, 0)][0]).mean() > 0.05
    assert (runs[(1, 1)][0] != runs[(1, 0)][0]).mean() > 0.05


def test_float32_params_round_to_nearest_whatever_the_flag():
    _cpu()
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(N).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    a, b = p0.copy(), p0.copy()
    _sgd(a, g, "cpu", lr=0.1, sr=True)
    _sgd(b, g, "cpu", lr=0.1, sr=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["Adam", "SGD", "Lion"])
def test_optim_classes_round_stochastically_and_save_the_options(name):
    _cpu()
    p = np.ones(4097, ml_dtypes.bfloat16)
    opt = getattr(fastopt.optim, name)([p], lr=2.0**-13, stochastic_rounding=True, seed=9)
    for _ in range(32):
        opt.step([np.full(4097, -1.0, ml_dtypes.bfloat16)])
    assert (p != 1).any()  # round to nearest would have kept every element at 1
    sd = opt.state_dict()
    assert sd["param_groups"][0]["stochastic_rounding"] is True
    assert sd["param_groups"][0]["seed"] == 9
    # a copy from the checkpoint takes the same bits
    q1, q2 = p.copy(), p.copy()
    o1 = getattr(fastopt.optim, name)([q1], lr=2.0**-13)
    o1.load_state_dict(sd)
    opt2 = getattr(fastopt.optim, name)([q2], lr=2.0**-13)
    opt2.load_state_dict(sd)
    for o in (o1, opt2):
        o.step([np.full(4097, -1.0, ml_dtypes.bfloat16)])
    np.testing.assert_array_equal(q1.view(np.uint16), q2.view(np.uint16))


@pytest.mark.parametrize("name", ["SGD", "Lion", "AdamW"])
def test_fastopt_torch_rounds_stochastically_and_counts_steps(name):
    torch = pytest.importorskip("torch")
    _cpu()
    import fastopt.torch as fo

    w = torch.nn.Parameter(torch.ones(4097, dtype=torch.bfloat16))
    opt = getattr(fo, name)([w], lr=2.0**-13, stochastic_rounding=True, weight_decay=0.0)
    for _ in range(32):
        w.grad = torch.full_like(w, -1.0)
        opt.step()
    assert (w.detach() != 1).any()
    # the random bits are keyed by the step count, which SGD and Lion keep for it
    assert float(opt.state[w]["step"]) == 32
    mean = float(w.detach().double().mean() - 1)
    expected = 32 * 2.0**-13  # SGD's lr * g, AdamW's lr * m / sqrt(v) and Lion's lr * sign
    assert abs(mean - expected) < 0.1 * expected
    # the option survives a checkpoint, and turning it off drops nothing
    sd = opt.state_dict()
    assert sd["param_groups"][0]["stochastic_rounding"] is True
    opt.param_groups[0]["stochastic_rounding"] = False
    w.grad = torch.full_like(w, -1.0)
    opt.step()


@pytest.mark.parametrize("bad", [dict(stochastic_rounding="yes"), dict(seed=-1),
                                 dict(seed=2**32), dict(seed=1.5), dict(seed=True)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError, match="stochastic_rounding|seed"):
        fastopt.optim.Adam([np.ones(3, np.float32)], **bad)
    p = np.ones(3, np.float16)
    with pytest.raises(ValueError, match="stochastic_rounding|seed"):
        functional.adam_([p], [p.copy()], [p * 0], [p * 0], step=1, **bad)


def test_functional_sgd_needs_a_step_to_key_the_bits():
    p = np.ones(3, np.float16)
    with pytest.raises(ValueError, match="needs step="):
        functional.sgd_([p], [p.copy()], [None], lr=0.1, stochastic_rounding=True)
    np.testing.assert_array_equal(p, np.ones(3, np.float16))


def test_a_backend_without_stochastic_rounding_is_refused(monkeypatch):
    _cpu()
    monkeypatch.setattr(backends.get("cpu"), "stochastic_rounding", False)
    p = np.ones(7, ml_dtypes.bfloat16)
    with pytest.raises(backends.BackendUnavailable, match="no stochastic rounding"):
        _sgd(p, np.ones(7, ml_dtypes.bfloat16), "cpu")
    np.testing.assert_array_equal(p.astype(np.float32), np.ones(7, np.float32))


def test_reference_random_bits_are_lowbias32():
    """The generator's published constants: fixed outputs of lowbias32, and the per-element
    bits are the hash of the hashed key with the index."""
    assert int(reference.mix32(0)) == 0
    x = np.uint32(0x12345678)
    y = x ^ (x >> np.uint32(16))
    y = np.uint32((int(y) * 0x7FEB352D) & 0xFFFFFFFF)
    y ^= y >> np.uint32(15)
    y = np.uint32((int(y) * 0x846CA68B) & 0xFFFFFFFF)
    y ^= y >> np.uint32(16)
    assert int(reference.mix32(x)) == int(y)
    bits = reference.rounding.random_bits(77, 3, first=2**32 - 1)
    expect = [reference.mix32(reference.mix32(np.uint32(77) ^ np.uint32(i >> 32))
                              ^ np.uint32(i & 0xFFFFFFFF)) for i in range(2**32 - 1, 2**32 + 2)]
    np.testing.assert_array_equal(bits, np.array(expect, np.uint32))
