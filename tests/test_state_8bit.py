"""8-bit blockwise-quantized optimizer state (state_dtype="8bit", Adam8bit, AdamW8bit): the
encoding of fastopt.reference.quant8, the C++ kernels against it, and what users rely on.

- the reference encoding: relative precision 2^-4 above the subnormal range, the packed
  layout, exact re-encoding of decoded values, NaN and zero blocks;
- every optimizer class with 8-bit state on float32 and bfloat16 params (mixed shapes, some
  under 4096 elements, which keep float32 state): the C++ kernels' codes and absmaxes equal the
  reference backend's but for rare rounding ties, params close;
- a fitted problem: AdamW8bit's loss within a few percent of float32 AdamW's; Adam's state
  <= 2.1 bytes per parameter;
- checkpoints bitwise (fastopt.optim and fastopt.torch), the torch classes, refusals.
"""

from __future__ import annotations

import numpy as np
import pytest
from optim_db import DB
from tolerances import assert_close
from trajectories import initial_params, optim_run

import fastopt
from fastopt import backends
from fastopt.reference import quant8

ml_dtypes = pytest.importorskip("ml_dtypes")

#: two tensors above quant8.MIN_SIZE (one not a multiple of the block), smaller ones
SHAPES = [(7,), (4097,), (3, 5), (130, 67)]


@pytest.fixture(autouse=True)
def _cpu_kernels():
    ok, why = backends.get("cpu").available()
    if not ok:
        pytest.skip(f"the C++ CPU kernels are not built: {why}")


@pytest.mark.parametrize("signed", [True, False])
def test_reference_encoding_precision_and_layout(signed):
    rng = np.random.default_rng(0)
    n = 1000
    x = rng.standard_normal(n) * np.exp(rng.uniform(-6, 2, n))
    x = x if signed else x * x
    packed = np.zeros(quant8.packed_size(n), np.uint8)
    quant8.quantize(x, packed, signed)
    assert packed.size == 1000 + 4 * 4  # 1000 codes (a multiple of 4), 4 block absmaxes
    codes, absmax = quant8.split(packed, n)
    np.testing.assert_array_equal(absmax, [np.abs(x[b:b + 256]).max().astype(np.float32)
                                           for b in range(0, n, 256)])
    y = quant8.dequantize(packed, n, signed)
    scale = np.repeat(absmax.astype(np.float64), 256)[:n]
    tiny = 2.0 ** (1 - quant8.BIAS[signed])  # below: the subnormal grid
    big = np.abs(x) >= scale * tiny
    assert np.all(np.abs(y - x)[big] <= np.abs(x)[big] * 2.0**-4)
    assert np.all(np.abs(y - x)[~big] <= scale[~big] * tiny * 2.0**-4)
    assert np.all(np.sign(y[y != 0]) == np.sign(x[y != 0]))
    again = np.zeros_like(packed)
    quant8.quantize(y, again, signed)
    np.testing.assert_array_equal(np.abs(quant8.dequantize(again, n, signed)), np.abs(y))


def test_reference_zero_and_nan_blocks():
    x = np.zeros(600)
    x[300] = np.nan
    packed = np.zeros(quant8.packed_size(600), np.uint8)
    quant8.quantize(x, packed, True)
    y = quant8.dequantize(packed, 600, True)
    assert np.all(y[:256] == 0) and np.all(np.isnan(y[256:512])) and np.all(y[512:] == 0)


def _close_codes(got: np.ndarray, want: np.ndarray, n: int, what: str) -> None:
    """Two packed rows that hold the same trajectory but where a few rounding ties went the
    other way (the float32 kernel and the float64 reference land on either side of a
    midpoint, and the step after carries it on): absmaxes within one code's precision, codes
    equal but for under one in a hundred. A wrong block, sign or map differs everywhere."""
    gc, ga = quant8.split(got, n)
    wc, wa = quant8.split(want, n)
    np.testing.assert_allclose(ga, wa, rtol=2.0**-4, err_msg=f"{what}: absmax")
    assert (gc != wc).mean() <= 1e-2, (what, int((gc != wc).sum()))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("entry", DB, ids=lambda e: e.name)
def test_optim_classes_with_8bit_state_match_reference(entry, dtype):
    options = {**entry.full, "state_dtype": "8bit"}
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    got = optim_run(entry.optim_class, options, "cpu", dt, SHAPES, steps=10)
    want = optim_run(entry.optim_class, options, "reference", dt, SHAPES, steps=10)
    for k, shape in enumerate(SHAPES):
        n = int(np.prod(shape))
        for key, value in want.state[k].items():
            if not isinstance(value, np.ndarray) or key == "step":
                continue
            mine = got.state[k][key]
            if n < quant8.MIN_SIZE:  # small tensors keep float32 state
                assert mine.dtype == np.float32
                assert_close(mine, value, dtype, f"{entry.name} {key} {k}")
                continue
            assert mine.dtype == np.uint8 and mine.shape == (quant8.packed_size(n),)
            _close_codes(mine, value, n, f"{entry.name} {key} {k}")
        # a tie flipped changes one state element by a code: its param moves by a fraction
        # of one update, under the 8-bit precision itself
        ref = want.params[k].astype(np.float64)
        step = np.abs(got.params[k].astype(np.float64) - ref)
        assert np.mean(step > 1e-3 * np.maximum(np.abs(ref), 1.0)) <= 1e-2, entry.name


def test_8bit_classes_and_their_state_size():
    params = [np.zeros((256, 64), np.float32), np.zeros(10, np.float32)]
    opt = fastopt.optim.AdamW8bit(params, lr=1e-3)
    assert opt.defaults["state_dtype"] == "8bit" and opt.defaults["weight_decay"] == 1e-2
    opt.step([np.ones((256, 64), np.float32), np.ones(10, np.float32)])
    big = opt.state[0][0]
    state_bytes = big["exp_avg"].nbytes + big["exp_avg_sq"].nbytes
    assert state_bytes / params[0].size <= 2.1
    assert opt.state[0][1]["exp_avg"].dtype == np.float32  # under 4096 elements
    adam = fastopt.optim.Adam8bit([np.zeros(5000, np.float64)])
    adam.step([np.ones(5000)])
    assert adam.state[0][0]["exp_avg"].dtype == np.float64  # float64 keeps float64
    assert "8-bit" in fastopt.optim.AdamW8bit.__doc__


def test_adamw8bit_fits_as_well_as_float32():
    """Least squares with a 64 x 128 weight: AdamW8bit's final loss within 5 % of float32
    AdamW's, from the same start and data."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 64)).astype(np.float32)
    w_true = rng.standard_normal((64, 128)).astype(np.float32)
    b = a @ w_true + 0.01 * rng.standard_normal((512, 128)).astype(np.float32)
    losses = {}
    for name in ("AdamW", "AdamW8bit"):
        w = np.zeros((64, 128), np.float32)
        opt = getattr(fastopt.optim, name)([w], lr=3e-2, weight_decay=0.0)
        for _ in range(300):
            r = a @ w - b
            opt.step([(a.T @ r / len(a)).astype(np.float32)])
        losses[name] = float(np.mean((a @ w - b) ** 2))
    assert losses["AdamW"] < 0.05, losses
    assert losses["AdamW8bit"] <= losses["AdamW"] * 1.05 + 1e-4, losses


def test_8bit_checkpoint_round_trip_is_bitwise():
    params = initial_params(SHAPES, np.float32)
    rng = np.random.default_rng(1)
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(4)]
    opt = fastopt.optim.Adam8bit([p.copy() for p in params])
    for g in grads[:2]:
        opt.step(g)
    resumed = fastopt.optim.Adam8bit([p.copy() for p in opt.param_groups[0]["params"]])
    resumed.load_state_dict(opt.state_dict())
    for g in grads[2:]:
        for o in (opt, resumed):
            o.step(g)
    for o in (resumed,):
        for a, b in zip(o.param_groups[0]["params"], opt.param_groups[0]["params"],
                        strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(o.state[0][3]["exp_avg"], opt.state[0][3]["exp_avg"])


def test_bad_8bit_rows_are_refused():
    import fastopt.functional as F

    n = 5000
    p, g = [np.ones(n, np.float32)], [np.ones(n, np.float32)]
    good = np.zeros(quant8.packed_size(n), np.uint8)
    with pytest.raises(ValueError, match=r"exp_avg\[0\]: an 8-bit state row .* 5080 bytes"):
        F.adam_(p, g, [np.zeros(n, np.uint8)], [good], step=1)
    with pytest.raises(ValueError, match="4-byte aligned"):
        F.adam_(p, g, [np.zeros(quant8.packed_size(n) + 1, np.uint8)[1:]], [good], step=1)
    with pytest.raises(TypeError, match=r"exp_avg\[0\]: 8-bit state \(uint8\) is for"):
        F.adam_([np.ones(n)], [np.ones(n)], [np.zeros(quant8.packed_size(n), np.uint8)],
                [np.zeros(n)], step=1)
    assert np.all(p[0] == 1)
    pytest.importorskip("numba")
    opt = fastopt.optim.Adam8bit([np.ones(n, np.float32)], backend="numba")
    with pytest.raises(backends.BackendUnavailable, match="numba"):
        opt.step([np.ones(n, np.float32)])


def test_fastopt_torch_adamw8bit_matches_fastopt_optim_and_checkpoints():
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    init = initial_params(SHAPES, np.float32)
    params = [torch.tensor(p, requires_grad=True) for p in init]
    opt = fo.AdamW8bit(params, lr=1e-2)
    twin = fastopt.optim.AdamW8bit([p.copy() for p in init], lr=1e-2)
    rng = np.random.default_rng(2)
    for _ in range(4):
        grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g)
        opt.step()
        twin.step(grads)
    for k, p in enumerate(params):
        np.testing.assert_array_equal(p.detach().numpy(), twin.param_groups[0]["params"][k])
        np.testing.assert_array_equal(opt.state[p]["exp_avg"].numpy(),
                                      twin.state[0][k]["exp_avg"])
    assert opt.state[params[3]]["exp_avg"].dtype == torch.uint8
    copy = fo.AdamW8bit([torch.tensor(p, requires_grad=True) for p in init], lr=1e-2)
    copy.load_state_dict(opt.state_dict())
    for p, q in zip(copy.param_groups[0]["params"], params, strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(copy.state[p][key], opt.state[q][key])
