"""fastopt._C.step and fastopt._C.optimizers, the C++ side of the op spec, called directly:
the metadata every optimizer exports, the checks on the op name, the scalar vector and the
table, hand-computed SGD and Adam steps with the coupled L1 term and the proximal step, and
every optimizer's step being the same bits for any number of threads and leaving the rows it
does not write alone."""

import math

import numpy as np
import pytest

_C = pytest.importorskip("fastopt._C")

OPS = {d["name"]: d for d in _C.optimizers()}
F32, F64 = 0, 1  # dtype codes (fastopt._arrays.DTYPE_CODES)


def table(rows):
    """(ptrs, numel) for rows of equally long lists of arrays; None for an absent row."""
    n = len(next(r for r in rows if r is not None))
    ptrs = np.zeros((len(rows), n), np.uint64)
    for i, row in enumerate(rows):
        if row is not None:
            ptrs[i] = [a.ctypes.data for a in row]
    first = next(r for r in rows if r is not None)
    return ptrs, np.array([a.size for a in first], np.int64)


HEAD = 6  # one, sign, l1, prox, l2, decay (fastopt.ops.HEAD)


def vector(op, sign=1.0, l1=0.0, prox=0.0, l2=0.0, decay=1.0, **op_scalars):
    """The scalar vector of `op`: the head, then the named op scalars (others 0)."""
    names = OPS[op]["scalars"]
    unknown = set(op_scalars) - set(names)
    assert not unknown, unknown
    return np.array([1.0, sign, l1, prox, l2, decay] +
                    [float(op_scalars.get(k, 0.0)) for k in names])


def test_metadata_lists_every_optimizer_with_its_rows_and_scalars():
    assert list(OPS) == ["sgd", "adam", "adagrad", "rmsprop", "lion", "nadam", "radam",
                         "adamax", "adadelta"]
    for name, d in OPS.items():
        assert set(d) == {"name", "slots", "written", "scalars", "variants", "math"}
        assert d["slots"][:2] == ["param", "grad"] and len(set(d["slots"])) == len(d["slots"])
        # the rule owns the state and the driver the param: everything but the grad is written
        assert d["written"] == [s for s in d["slots"] if s != "grad"]
        assert d["scalars"] and len(set(d["scalars"])) == len(d["scalars"])
        assert set(d["variants"]) <= set(d["scalars"])
        assert d["math"] == ("float64" if name == "lion" else "storage")
    assert OPS["adam"]["slots"][2:] == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    assert OPS["adam"]["scalars"][0] == "beta1" and OPS["adam"]["variants"] == ["amsgrad"]
    assert OPS["rmsprop"]["variants"] == ["centered", "has_momentum"]
    assert OPS["adamax"]["slots"][2:] == ["exp_avg", "exp_inf"]
    assert OPS["adadelta"]["scalars"] == ["lr", "rho", "one_minus_rho", "eps"]


def _isas():
    order = ["baseline", "avx2", "avx512"]
    widest = order.index(_C.widest_isa())
    return [isa for isa in _C.compiled_isas() if order.index(isa) <= widest]


@pytest.fixture(params=_isas())
def isa(request):
    """Runs the test on each ISA this CPU supports (the kernels are compiled per ISA)."""
    before = _C.isa()
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(before)


def _sgd_table(n=3, dtype=np.float64):
    p, g, b = (np.zeros(n, dtype) for _ in range(3))
    return table([[p], [g], [b]])


@pytest.mark.parametrize("op", list(OPS))
def test_scalar_vector_of_the_wrong_length_names_the_op_and_the_count(op):
    rows = [[np.zeros(3)] for _ in OPS[op]["slots"]]
    ptrs, numel = table(rows)
    want = HEAD + len(OPS[op]["scalars"])
    for bad in (np.ones(want - 1), np.ones(want + 1), np.ones((1, want)), np.ones(0)):
        with pytest.raises(ValueError, match=rf"^{op}: scalars must be a 1-D float64 array of "
                                             rf"{want} values \({HEAD} head \+ {want - HEAD} op"):
            _C.step(op, ptrs, numel, F64, bad)


def test_unknown_op_is_a_value_error_listing_the_compiled_ones():
    ptrs, numel = _sgd_table()
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamw' \(compiled: sgd, adam, "
                                         r"adagrad, .*adadelta\)"):
        _C.step("adamw", ptrs, numel, F64, vector("sgd"))


def test_scalar_vector_must_be_contiguous_float64_and_start_with_one():
    ptrs, numel = _sgd_table()
    s = vector("sgd", lr=0.1)
    strided = np.repeat(s, 2)[::2]
    assert np.array_equal(strided, s) and not strided.flags.c_contiguous
    for bad in (strided, s.astype(np.float32), list(s), s.astype(np.int64)):
        with pytest.raises(TypeError):
            _C.step("sgd", ptrs, numel, F64, bad)
    head = s.copy()
    head[0] = 0.0
    with pytest.raises(ValueError, match=r"sgd: scalars\[0\] must be 1.0"):
        _C.step("sgd", ptrs, numel, F64, head)


def test_tables_are_checked_for_shape_dtype_and_the_rows_the_variant_needs():
    p, g = np.ones(3), np.ones(3)
    s = vector("sgd", lr=0.1, momentum=0.9, has_momentum=1.0)
    ptrs, numel = table([[p], [g], None])
    with pytest.raises(ValueError, match=r"^sgd: momentum_buffer\[0\]: null pointer for 3 "
                                         r"elements"):
        _C.step("sgd", ptrs, numel, F64, s)
    assert np.array_equal(p, np.ones(3))  # refused before anything ran
    # without momentum the buffer row may be absent
    _C.step("sgd", ptrs, numel, F64, vector("sgd", lr=0.5))
    assert np.array_equal(p, np.full(3, 0.5))
    with pytest.raises(ValueError, match=r"pointer table must have shape \(3, n_tensors\)"):
        _C.step("sgd", ptrs[:2], numel, F64, s)
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
        _C.step("sgd", ptrs, numel, 4, s)
    ptrs, _ = table([[p], [g], [np.zeros(3)]])
    with pytest.raises(ValueError, match=r"param\[0\]: negative numel -1"):
        _C.step("sgd", ptrs, np.array([-1], np.int64), F64, s)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_with_coupled_l1_and_with_the_proximal_step_by_hand(dtype, isa):
    tol = dict(rtol=1e-6 if dtype == np.float32 else 1e-15, atol=0)
    code = F32 if dtype == np.float32 else F64
    p0 = np.array([0.5, -0.2, 0.0], dtype)
    g = np.array([0.1, 0.3, -0.4], dtype)
    # coupled: g + l1 sign(p) (sign(0) = 0), then p - lr g
    p = p0.copy()
    _C.step("sgd", *table([[p], [g], None]), code, vector("sgd", l1=0.01, lr=0.1))
    np.testing.assert_allclose(p, [0.5 - 0.1 * 0.11, -0.2 - 0.1 * 0.29, 0.04], **tol)
    # maximize flips the gradient, not the L1 term: g = -g + l1 sign(p)
    p = p0.copy()
    _C.step("sgd", *table([[p], [g], None]), code, vector("sgd", sign=-1.0, l1=0.01, lr=0.1))
    np.testing.assert_allclose(p, [0.5 + 0.1 * 0.09, -0.2 + 0.1 * 0.31, -0.04], **tol)
    # proximal: p - lr g, then shrunk towards 0 by 0.05, to (signed) 0 within it; NaN stays
    p = np.array([0.5, -0.2, 0.02, -0.01, np.nan], dtype)
    g5 = np.array([0.1, 0.3, -0.1, 0.1, 0.0], dtype)
    _C.step("sgd", *table([[p], [g5], None]), code, vector("sgd", prox=0.05, lr=0.1))
    np.testing.assert_allclose(p[:2], [0.49 - 0.05, -0.23 + 0.05], **tol)
    assert p[2] == 0 and not np.signbit(p[2]) and p[3] == 0 and np.signbit(p[3])
    assert np.isnan(p[4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_with_coupled_l1_and_with_the_proximal_step_by_hand(dtype, amsgrad, isa):
    tol = dict(rtol=2e-6 if dtype == np.float32 else 1e-14, atol=0)
    code = F32 if dtype == np.float32 else F64
    lr, b1, b2, eps, step = 1e-2, 0.9, 0.999, 1e-8, 3
    bc1, bc2 = 1 - b1**step, 1 - b2**step
    s_op = dict(beta1=b1, one_minus_beta1=1 - b1, beta2=b2, one_minus_beta2=1 - b2, eps=eps,
                step_size=lr / bc1, bias_correction2=bc2, bias_correction2_sqrt=math.sqrt(bc2),
                amsgrad=float(amsgrad))
    p0 = np.array([0.5, -0.2, 0.0])
    g = np.array([0.1, 0.3, -0.4])
    m0, v0, vmax0 = np.array([0.01, -0.02, 0.03]), np.array([1e-3, 2e-3, 1e-4]), np.full(3, 3e-3)
    # coupled L1 with L2 weight decay, and the proximal step with decoupled weight decay
    for l1, prox, l2, decay in ((0.05, 0.0, 0.1, 1.0), (0.0, 0.004, 0.0, 1 - lr * 0.1)):
        p, m, v, vmax = (x.astype(dtype) for x in (p0, m0, v0, vmax0))
        rows = [[p], [g.astype(dtype)], [m], [v], [vmax] if amsgrad else None]
        _C.step("adam", *table(rows), code,
                vector("adam", l1=l1, prox=prox, l2=l2, decay=decay, **s_op))
        ge = g + l1 * np.sign(p0) + l2 * p0
        me = b1 * m0 + (1 - b1) * ge
        ve = b2 * v0 + (1 - b2) * ge * ge
        vu = np.maximum(vmax0, ve) if amsgrad else ve
        pe = p0 * decay - lr / bc1 * me / (np.sqrt(vu) / math.sqrt(bc2) + eps)
        pe = np.where(pe > prox, pe - prox, np.where(pe < -prox, pe + prox, 0.0 * pe))
        np.testing.assert_allclose(m, me, **tol)
        np.testing.assert_allclose(v, ve, **tol)
        np.testing.assert_allclose(p, pe, **tol)
        if amsgrad:
            np.testing.assert_allclose(vmax, vu, **tol)
        else:
            assert np.array_equal(vmax, vmax0.astype(dtype))  # the row was not given


def _random_case(op, dtype, sizes, variant_bits, l1_mode, seed):
    """Arrays for every row of `op` and a plausible scalar vector (every op scalar in
    [0.1, 0.9], the variant flags from variant_bits)."""
    d = OPS[op]
    rng = np.random.default_rng(seed)
    rows = [[(np.abs(rng.standard_normal(n)) if r >= 2 else rng.standard_normal(n))
             .astype(dtype) for n in sizes] for r in range(len(d["slots"]))]
    op_scalars = dict(zip(d["scalars"], rng.uniform(0.1, 0.9, len(d["scalars"])), strict=True))
    for k, flag in enumerate(d["variants"]):
        op_scalars[flag] = float(variant_bits >> k & 1)
    s = vector(op, sign=-1.0 if seed % 2 else 1.0, l1=0.01 if l1_mode == 1 else 0.0,
               prox=1e-3 if l1_mode == 2 else 0.0, l2=0.01 if seed % 3 == 0 else 0.0,
               decay=0.999 if seed % 3 == 1 else 1.0, **op_scalars)
    return rows, s


SIZES = [1, 7, 4097, 65537, 0, 3]  # > kParallelMin in all: the threaded path


def _same_bits(rows_a, rows_b):
    return all(a.tobytes() == b.tobytes()
               for ra, rb in zip(rows_a, rows_b, strict=True) for a, b in zip(ra, rb, strict=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", list(OPS))
def test_every_op_is_the_same_bits_for_any_thread_count_and_keeps_its_grad(op, dtype):
    """Two steps of every variant (with and without L1, proximal): 1, 2 and 3 threads give
    the same bits (fixed chunks), every non-empty param moves, the grads stay as they were."""
    code = F32 if dtype == np.float32 else F64
    threads = _C.num_threads()
    try:
        for bits in range(1 << len(OPS[op]["variants"])):
            for l1_mode in range(3):
                results = []
                for n_threads in (1, 2, 3):
                    _C.set_num_threads(n_threads)
                    rows, s = _random_case(op, dtype, SIZES, bits, l1_mode, seed=bits + l1_mode)
                    for _ in range(2):
                        _C.step(op, *table(rows), code, s)
                    results.append(rows)
                initial, _ = _random_case(op, dtype, SIZES, bits, l1_mode, seed=bits + l1_mode)
                what = (op, bits, l1_mode)
                assert _same_bits(results[0], results[1]), what
                assert _same_bits(results[0], results[2]), what
                assert _same_bits([results[0][1]], [initial[1]]), what
                moved = [not np.array_equal(a, b)
                         for a, b in zip(results[0][0], initial[0], strict=True)]
                assert moved == [n > 0 for n in SIZES], what
    finally:
        _C.set_num_threads(threads)


def test_rows_a_variant_does_not_use_are_left_alone():
    """SGD without momentum and RMSprop neither centered nor with momentum: the buffers given
    in the table are not touched (the variant's loop never loads nor stores them)."""
    for op, unused in (("sgd", [2]), ("rmsprop", [3, 4]), ("adam", [4])):
        rows, s = _random_case(op, np.float32, [5, 4097], 0, 0, seed=7)
        before = [[x.copy() for x in rows[r]] for r in unused]
        _C.step(op, *table(rows), F32, s)
        for r, b in zip(unused, before, strict=True):
            assert _same_bits([rows[r]], [b]), (op, r)
