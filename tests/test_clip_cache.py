"""Clipping keeps the validated tables of recent grad lists (fastopt.clip._KeptTables) and
re-validates every grad on every call; fastopt.torch.clip_grad_norm_ against torch's."""

import gc
import math
import weakref

import numpy as np
import pytest
from tolerances import assert_close

from fastopt import clip, reference
from fastopt.clip import clip_grad_norm_, clip_grad_value_

SIZES = (1, 7, 4097, 65537, 256, 3)


def _grads(dtype="float32", sizes=SIZES, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * scale).astype(dtype) for n in sizes]


def _builds(n):
    return clip._kept._caches[n].builds


def _check_norm(grads, max_norm=0.5, norm_type=2.0, backend=None):
    expected = [g.copy() for g in grads]
    want = reference.clip_grad_norm(expected, max_norm, norm_type)
    got = clip_grad_norm_(grads, max_norm, norm_type, backend=backend)
    assert got == pytest.approx(want, rel=1e-6)
    for k, (a, b) in enumerate(zip(grads, expected, strict=True)):
        assert_close(a, b, a.dtype, f"grad {k}")


@pytest.fixture(autouse=True)
def _fresh():
    clip._kept.clear()
    yield
    clip._kept.clear()


@pytest.mark.parametrize("backend", ["cpu", "numba", "reference"])
def test_repeated_calls_reuse_the_tables_and_stay_exact(backend):
    pytest.importorskip("numba") if backend == "numba" else None
    grads = _grads(scale=3.0)
    for step in range(4):
        for g in grads:
            g *= 2.0  # new values in the same memory
        _check_norm(grads, norm_type=(2.0, 1.0, math.inf, 3.0)[step], backend=backend)
    assert _builds(len(grads)) == 1
    values = _grads(seed=1)
    clip_grad_value_(values, 0.3, backend=backend)
    clip_grad_value_(values, 0.1, backend=backend)
    for a, b in zip(values, _grads(seed=1), strict=True):
        np.testing.assert_array_equal(a, np.clip(b, -0.1, 0.1))
    assert _builds(len(values)) == 1


def test_mixed_float32_float64_lists_are_cached_per_dtype_and_clipped_jointly():
    for step in range(3):
        grads = _grads("float64", scale=1.0 + step)
        grads = [g.astype(np.float32) if k % 2 else g * 10 for k, g in enumerate(grads)]
        _check_norm(grads, norm_type=(2.0, math.inf, 1.0)[step])
    assert _builds(len(SIZES)) == 1  # new arrays of the same dtypes and shapes: re-validated


def test_a_grad_whose_storage_changed_is_clipped_where_it_is_now():
    torch = pytest.importorskip("torch")
    grads = [torch.from_numpy(g) for g in _grads(scale=4.0)]
    clip_grad_norm_(grads, 0.5)
    old = grads[3].clone()
    grads[3].data = torch.from_numpy(_grads(seed=5, sizes=(SIZES[3],))[0])  # moved storage
    before = [g.clone() for g in grads]
    moved_away = old.clone()
    norm = clip_grad_norm_(grads, 0.5)
    assert norm == pytest.approx(reference.clip_grad_norm([g.numpy().copy() for g in before],
                                                          0.5), rel=1e-6)
    want = [g.numpy().copy() for g in before]
    reference.clip_grad_norm(want, 0.5)
    for k, (a, b) in enumerate(zip(grads, want, strict=True)):
        assert_close(a.numpy(), b, np.float32, f"grad {k}")
    assert torch.equal(old, moved_away)  # the old storage was not written


def test_a_grad_list_that_changes_between_calls():
    grads = _grads()
    _check_norm(grads)
    # same length, other shapes and another dtype at one index: rebuilt, still exact
    other = _grads(sizes=SIZES[::-1], seed=2)
    other[2] = other[2].astype(np.float64)
    _check_norm(other)
    assert _builds(len(SIZES)) == 1  # a fresh cache replaced the one that no longer fit
    # another length: its own cache, the first one kept
    _check_norm(grads[:4])
    _check_norm(grads)
    assert set(clip._kept._caches) == {len(SIZES), 4}
    # a grad made an alias of another between calls is refused, nothing is written
    aliased = list(grads)
    aliased[1] = grads[0][: SIZES[1]] if SIZES[0] >= SIZES[1] else grads[2][: SIZES[1]]
    snapshot = [g.copy() for g in aliased]
    with pytest.raises(ValueError, match=r"share memory"):
        clip_grad_norm_(aliased, 0.5)
    for a, b in zip(aliased, snapshot, strict=True):
        np.testing.assert_array_equal(a, b)
    # bad entries get the full validation's errors, naming the index
    with pytest.raises((TypeError, ValueError), match=r"\[2\]"):
        clip_grad_norm_([*grads[:2], None, *grads[3:]], 0.5)
    with pytest.raises(TypeError, match=r"\[1\]"):
        clip_grad_norm_([grads[0], grads[1].astype(np.int32), *grads[2:]], 0.5)
    ro = [g.copy() for g in grads]
    ro[4].flags.writeable = False
    with pytest.raises(ValueError, match=r"\[4\]"):
        clip_grad_value_(ro, 0.1)
    _check_norm(grads)  # and the good list still works afterwards


def test_a_non_dense_tensor_with_the_strides_and_size_of_a_cached_one_is_refused():
    torch = pytest.importorskip("torch")
    g = torch.rand(2, 3).t()  # shape (3, 2), strides (1, 3): dense, not C-contiguous
    clip_grad_norm_([g], 0.5)
    base = torch.rand(8)
    gappy = base.as_strided((2, 3), (1, 3))  # same strides and byte size, holes at 2 and 5
    before = base.clone()
    with pytest.raises(ValueError):
        clip_grad_norm_([gappy], 1e-3)
    assert torch.equal(base, before)


def test_kept_tables_hold_no_reference_to_the_grads():
    torch = pytest.importorskip("torch")
    grads = [torch.rand(n) for n in SIZES]
    clip_grad_norm_(grads, 0.5)
    clip_grad_norm_(grads, 0.5)
    refs = [weakref.ref(g) for g in grads]
    del grads
    gc.collect()
    assert all(r() is None for r in refs)
    for n in range(1, 20):  # the cache stays small
        clip_grad_value_([np.ones(3)] * 0 + [np.ones(3) for _ in range(n)], 1.0)
    assert len(clip._kept._caches) <= clip._kept.size


# --- fastopt.torch.clip_grad_norm_ ---------------------------------------------------------
def _torch_pair(torch, dtypes, seed=0):
    rng = np.random.default_rng(seed)
    a, b = [], []
    for k, n in enumerate(SIZES):
        dt = dtypes[k % len(dtypes)]
        g = rng.standard_normal(n) * (k + 1)
        for out in (a, b):
            p = torch.nn.Parameter(torch.zeros(n, dtype=dt))
            p.grad = torch.tensor(g, dtype=dt)
            out.append(p)
    b.append(torch.nn.Parameter(torch.zeros(3)))  # no grad: skipped by both
    a.append(torch.nn.Parameter(torch.zeros(3)))
    return a, b


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("dtypes", ["float32", "float64", "mixed"])
def test_torch_drop_in_matches_torch(norm_type, dtypes):
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    dts = {"float32": [torch.float32], "float64": [torch.float64],
           "mixed": [torch.float32, torch.float64]}[dtypes]
    ours, theirs = _torch_pair(torch, dts)
    for step in range(3):
        if step == 2:  # set_to_none: new grad tensors, as every backward after zero_grad()
            for p, q in zip(ours, theirs, strict=True):
                if p.grad is not None:
                    p.grad = p.grad * 3
                    q.grad = q.grad * 3
        versions = [p.grad._version for p in ours if p.grad is not None]
        got = fo.clip_grad_norm_(ours, 0.5, norm_type)
        want = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type)
        assert got.dtype == want.dtype and got.device == want.device and got.dim() == 0
        rel = 1e-5 if torch.float32 in dts else 1e-12
        assert float(got) == pytest.approx(float(want), rel=rel)
        assert all(p.grad._version > v
                   for p, v in zip([p for p in ours if p.grad is not None], versions, strict=True))
        for p, q in zip(ours, theirs, strict=True):
            if q.grad is None:
                assert p.grad is None
                continue
            # torch takes a float32 grad's norm in float32 even when the total is float64
            assert_close(p.grad.numpy(), q.grad.numpy(),
                         np.float32 if torch.float32 in dts else np.float64)


def test_torch_drop_in_edge_cases():
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    assert fo.clip_grad_norm_([torch.nn.Parameter(torch.ones(2))], 1.0).equal(
        torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.ones(2))], 1.0))
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.ones(4)
    q = torch.nn.Parameter(torch.ones(4))
    q.grad = torch.ones(4)
    got = fo.clip_grad_norm_(p, 1.0, foreach=True)  # a single tensor, foreach accepted
    want = torch.nn.utils.clip_grad_norm_(q, 1.0)
    assert torch.allclose(got, want) and torch.allclose(p.grad, q.grad)
    p.grad[0] = float("nan")
    before = p.grad.clone()
    with pytest.raises(RuntimeError, match="non-finite"):
        fo.clip_grad_norm_(iter([p]), 1.0, error_if_nonfinite=True)
    assert torch.equal(p.grad.isnan(), before.isnan())
    assert torch.equal(p.grad.nan_to_num(), before.nan_to_num())
