"""Optimizer state stored in another dtype than the params (`state_dtype=`): float32 params
with bfloat16 or float16 state (half the state's bytes), 16-bit params with float32 state.
Math stays float32; each state row is rounded to its own dtype on store, as the reference
rounds it (fastopt.reference stores every array in its own dtype).

- every optimizer class, every (param, state) dtype pair, mixed shapes, 10 steps: the C++
  kernels against the reference backend, params and state;
- the functional steps take state arrays of another dtype as given (per row), sizes 1, 7,
  4097, 65537;
- fastopt.torch: the same kernel, state_dtype kept through state_dict / load_state_dict
  (torch.optim casts loaded state to the param's dtype);
- bad dtypes and backends without mixed storage are refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest
from optim_db import DB
from trajectories import SIZES, compare, initial_params, optim_run, snapshot

import fastopt
import fastopt.functional as F
from fastopt import backends, reference

ml_dtypes = pytest.importorskip("ml_dtypes")

MIXED = [(1,), (7,), (4097,), (16385,), (3, 5), (33, 17)]
#: (param dtype, state dtype): state narrower than float32 params, and float32 state for
#: 16-bit params, and a 16-bit pair of two kinds
PAIRS = [("float32", "bfloat16"), ("float32", "float16"), ("bfloat16", "float32"),
         ("float16", "float32"), ("bfloat16", "float16")]
#: coarsest first: the tolerance a trajectory is held to is that of its coarsest storage
COARSE = ("bfloat16", "float16", "float32", "float64")


def _dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def _coarsest(*names: str) -> str:
    return min(names, key=COARSE.index)


@pytest.fixture(autouse=True)
def _cpu_kernels():
    ok, why = backends.get("cpu").available()
    if not ok:
        pytest.skip(f"the C++ CPU kernels are not built: {why}")


@pytest.mark.parametrize("pair", PAIRS, ids="-".join)
@pytest.mark.parametrize("entry", DB, ids=lambda e: e.name)
def test_optim_classes_with_state_dtype_match_reference(entry, pair):
    pdt, sdt = pair
    options = {**entry.full, "state_dtype": sdt}
    got = optim_run(entry.optim_class, options, "cpu", _dtype(pdt), MIXED, steps=10)
    want = optim_run(entry.optim_class, options, "reference", _dtype(pdt), MIXED, steps=10)
    for st in got.state.values():
        for key, value in st.items():
            if isinstance(value, np.ndarray) and key != "step":
                assert value.dtype == _dtype(sdt), (key, value.dtype)
    compare(got, want, _coarsest(pdt, sdt), f"{entry.name} {pdt} params, {sdt} state")


def test_state_dtype_halves_the_state_and_keeps_float64_and_the_default():
    params = [np.ones(1000, np.float32), np.ones(10, np.float64)]
    opt = fastopt.optim.AdamW(params, state_dtype="bfloat16")
    opt.step([np.ones(1000, np.float32), np.ones(10, np.float64)])
    assert opt.state[0][0]["exp_avg"].dtype == ml_dtypes.bfloat16
    assert opt.state[0][0]["exp_avg_sq"].nbytes == 2000
    assert opt.state[0][1]["exp_avg"].dtype == np.float64  # float64 params keep float64
    plain = fastopt.optim.AdamW([np.ones(3, np.float32)])
    plain.step([np.ones(3, np.float32)])
    assert plain.state[0][0]["exp_avg"].dtype == np.float32


@pytest.mark.parametrize("given", ["bfloat16", ml_dtypes.bfloat16, np.dtype(ml_dtypes.bfloat16)])
def test_state_dtype_takes_names_and_numpy_dtypes(given):
    opt = fastopt.optim.Adam([np.ones(5, np.float32)], state_dtype=given)
    opt.step([np.ones(5, np.float32)])
    assert opt.state[0][0]["exp_avg"].dtype == ml_dtypes.bfloat16


@pytest.mark.parametrize("bad", ["float64", "int8", "4bit", np.int32, 3])
def test_bad_state_dtype_is_refused(bad):
    with pytest.raises(ValueError, match="state_dtype"):
        fastopt.optim.Adam([np.ones(5, np.float32)], state_dtype=bad)


def test_functional_takes_state_rows_in_their_own_dtypes():
    """exp_avg in bfloat16 beside exp_avg_sq in float32, for float32 params: each row rounded
    to its own dtype, as the reference rounds them."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    m = [np.zeros(n, ml_dtypes.bfloat16) for n in SIZES]
    v = [np.zeros(n, np.float32) for n in SIZES]
    ref = [[x.copy() for x in row] for row in (params, m, v)]
    for step in range(1, 11):
        grads = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
        F.adamw_(params, grads, m, v, step=step, lr=1e-2, backend="cpu")
        for k in range(len(SIZES)):
            reference.adam(ref[0][k], grads[k].copy(), ref[1][k], ref[2][k], step=step, lr=1e-2,
                           weight_decay=1e-2, decoupled_weight_decay=True)
    from tolerances import assert_close

    for got, want, dt in ((params, ref[0], "bfloat16"), (m, ref[1], "bfloat16"),
                          (v, ref[2], "float32")):
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype
            assert_close(a, b, dt)


def test_functional_refuses_state_dtypes_it_cannot_store():
    p, g = [np.ones(4, np.float32)], [np.ones(4, np.float32)]
    with pytest.raises(TypeError, match=r"exp_avg\[0\]: dtype float64 is not a state dtype"):
        F.adam_(p, g, [np.zeros(4, np.float64)], [np.zeros(4, np.float32)], step=1)
    p64 = [np.ones(4, np.float64)]
    with pytest.raises(TypeError, match=r"exp_avg_sq\[0\]: dtype float32 does not match"):
        F.adam_(p64, [np.ones(4)], [np.zeros(4)], [np.zeros(4, np.float32)], step=1)
    # grads stay in the params' dtype
    with pytest.raises(TypeError, match=r"grad\[0\]: dtype bfloat16 does not match"):
        F.adam_(p, [np.ones(4, ml_dtypes.bfloat16)], [np.zeros(4, np.float32)],
                [np.zeros(4, np.float32)], step=1)
    assert np.all(p[0] == 1)


def test_a_backend_without_mixed_storage_is_refused_by_name():
    pytest.importorskip("numba")
    p = [np.ones(4, np.float32)]
    opt = fastopt.optim.Adam(p, state_dtype="bfloat16", backend="numba")
    with pytest.raises(backends.BackendUnavailable, match="numba.*exp_avg bfloat16"):
        opt.step([np.ones(4, np.float32)])
    assert np.all(p[0] == 1)


def test_replaced_state_of_another_dtype_rebuilds_the_table():
    """A state array swapped between steps for one of another dtype (here the checkpoint's
    float32 for bfloat16) is validated and stepped as it is now, never through the old
    table's pointers."""
    params = initial_params(MIXED, np.float32)
    opt = fastopt.optim.Adam(params, lr=1e-2, state_dtype="bfloat16")
    twin = fastopt.optim.Adam([p.copy() for p in params], lr=1e-2, backend="reference",
                              state_dtype="bfloat16")
    grads = [np.full(s, 0.5, np.float32) for s in MIXED]
    for o in (opt, twin):
        o.step([g.copy() for g in grads])
        o.state[0][2]["exp_avg"] = o.state[0][2]["exp_avg"].astype(np.float32)
        o.step([g.copy() for g in grads])
    assert opt.state[0][2]["exp_avg"].dtype == np.float32
    compare(snapshot(opt), snapshot(twin), "bfloat16", "after the swap")


def test_load_state_dict_restores_state_dtype_and_its_arrays():
    """The checkpoint's state_dtype is a hyperparameter like any other: restored with the
    group, and the state arrays the load creates are stored in it."""
    params = initial_params(MIXED, np.float32)
    src = fastopt.optim.AdamW([p.copy() for p in params], state_dtype="float16")
    src.step([np.ones(s, np.float32) for s in MIXED])
    dst = fastopt.optim.AdamW([p.copy() for p in src.param_groups[0]["params"]])
    dst.load_state_dict(src.state_dict())
    assert dst.param_groups[0]["state_dtype"] == "float16"
    exp_avg = dst.state[0][3]["exp_avg"]
    assert exp_avg.dtype == np.float16
    np.testing.assert_array_equal(exp_avg, src.state[0][3]["exp_avg"])
    dst.step([np.ones(s, np.float32) for s in MIXED])
    src.step([np.ones(s, np.float32) for s in MIXED])
    compare(snapshot(dst), snapshot(src), "float32", "resumed")


def test_native_step_checks_state_dtypes():
    from fastopt import _C

    p = np.ones(4, np.float32)
    g = np.ones(4, np.float32)
    m = np.zeros(4, np.float64)
    ptrs = np.array([[a.ctypes.data] for a in (p, g, m)], np.uint64)
    numel = np.array([4], np.int64)
    spec = fastopt.ops.get("sgd")
    scalars = spec.prepare({**spec.defaults, "momentum": 0.9}, 1.0).vector
    with pytest.raises(TypeError, match="float64 state needs float64 params"):
        _C.step("sgd", ptrs, numel, 0, scalars, 1.0, None, 0, [1])
    with pytest.raises(ValueError, match="one dtype code per state row"):
        _C.step("sgd", ptrs, numel, 0, scalars, 1.0, None, 0, [0, 0])
    assert np.all(p == 1)


def test_fastopt_torch_state_dtype_matches_fastopt_optim_and_survives_a_checkpoint():
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    init = initial_params(MIXED, np.float32)
    params = [torch.tensor(p, requires_grad=True) for p in init]
    opt = fo.AdamW(params, lr=1e-2, state_dtype=torch.bfloat16)
    twin = fastopt.optim.AdamW([p.copy() for p in init], lr=1e-2, state_dtype="bfloat16")
    rng = np.random.default_rng(1)
    for _ in range(5):
        grads = [rng.standard_normal(s).astype(np.float32) for s in MIXED]
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g)
        opt.step()
        twin.step(grads)
    for k, p in enumerate(params):  # the same kernel: bit for bit
        np.testing.assert_array_equal(p.detach().numpy(), twin.param_groups[0]["params"][k])
        st = opt.state[p]
        assert st["exp_avg"].dtype == torch.bfloat16
        np.testing.assert_array_equal(st["exp_avg_sq"].float().numpy(),
                                      twin.state[0][k]["exp_avg_sq"].astype(np.float32))
    copy = fo.AdamW([torch.tensor(p, requires_grad=True) for p in init], lr=1e-2,
                    state_dtype=torch.bfloat16)
    copy.load_state_dict(opt.state_dict())
    for p in copy.param_groups[0]["params"]:
        assert copy.state[p]["exp_avg"].dtype == torch.bfloat16
