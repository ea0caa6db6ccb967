"""fastopt.optim steps arrays of any layout: strided params (views such as ``big[:, ::2]``) and
grads laid out unlike their params go through exact copies that are copied back, so the update
lands in the user's arrays as a contiguous twin steps; dense layouts stay in place.

Equal within the tolerance table, not bitwise: a layout moves an element to another position
in its tensor, and the CPU kernels' vectorized loop body and scalar remainder may contract a
multiply-add into an FMA differently (the last bit; the thread count never changes results).
"""

import numpy as np
import pytest
from optim_db import DB
from tolerances import assert_close

from fastopt.optim import SGD, Adam

#: each optimizer with its fullest state, and with proximal L1
CASES = [pytest.param(e.optim_class, o, id=e.option_id(i)) for e in DB
         for i, o in enumerate(e.options) if o is e.full or o.get("l1_mode") == "proximal"]


def _strided(rng, dtype):
    """Params of several layouts over buffers whose other elements must stay untouched."""
    wide = rng.standard_normal((7, 10)).astype(dtype)
    long = rng.standard_normal(3 * 4097).astype(dtype)
    params = [wide[:, ::2], long[::3], np.asfortranarray(rng.standard_normal((5, 3))
                                                         .astype(dtype)),
              rng.standard_normal(1).astype(dtype)]
    return (wide, long), params


def _grads(rng, params, step):
    """Grads in C order, Fortran order, strided and broadcast (stride 0, read-only)."""
    out = []
    for k, p in enumerate(params):
        g = rng.standard_normal(p.shape).astype(p.dtype)
        kind = (k + step) % 4
        if kind == 1 and g.ndim == 2:
            g = np.asfortranarray(g)
        elif kind == 2:
            g = np.repeat(g[..., None], 2, axis=-1)[..., 0]
        elif kind == 3:
            g = np.broadcast_to(g.reshape(-1)[:1].reshape((1,) * g.ndim), g.shape)
        out.append(g)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", CASES)
def test_any_layout_steps_as_its_contiguous_twin(cls, kw, dtype):
    rng = np.random.default_rng(0)
    (wide, long), ours = _strided(rng, dtype)
    wide0, long0 = wide.copy(), long.copy()
    theirs = [np.array(p, order="C") for p in ours]  # copies, C order
    a, b = cls(ours, **kw), cls(theirs, **kw)
    for step in range(6):
        grads = _grads(rng, ours, step)
        a.step(grads)
        b.step([np.ascontiguousarray(g) for g in grads])
    for k, (p, q) in enumerate(zip(ours, theirs, strict=True)):
        assert_close(p, q, dtype, f"param[{k}]")
    # the updates landed in the user's buffers, and nowhere else
    np.testing.assert_array_equal(wide[:, 1::2], wide0[:, 1::2])
    np.testing.assert_array_equal(long[1::3], long0[1::3])
    np.testing.assert_array_equal(long[2::3], long0[2::3])
    assert ours[2].flags.f_contiguous
    for sa, sb in zip(a.state[0], b.state[0], strict=True):
        assert sorted(sa) == sorted(sb)
        for key in sb:
            np.testing.assert_array_equal(sa[key], sb[key])
    # state follows a dense param's layout (the Fortran-order one is stepped in place)
    for key, value in a.state[0][2].items():
        if isinstance(value, np.ndarray):  # not NAdam's scalar mu_product
            assert value.strides == ours[2].strides, key


def test_bad_grad_in_a_later_group_leaves_a_strided_group_unstepped():
    rng = np.random.default_rng(1)
    buf = rng.standard_normal(20).astype(np.float32)
    before = buf.copy()
    opt = Adam([{"params": [buf[::2]]}, {"params": [np.ones(4, np.float32)]}], lr=0.1)
    with pytest.raises(ValueError, match=r"grad\[0\]: shape \(5,\) does not match param\[0\]"):
        opt.step([np.ones(10, np.float32), np.ones(5, np.float32)])
    np.testing.assert_array_equal(buf, before)
    assert opt.state_dict()["state"][0]["step"] == 0


def test_grad_sharing_its_params_memory_in_another_layout_is_read_before_the_write():
    p = np.arange(9, dtype=np.float64).reshape(3, 3)
    want = p - 0.5 * p.T
    SGD([p], lr=0.5).step([p.T])  # p.T is copied before p is written
    np.testing.assert_array_equal(p, want)
