"""fastopt.torch never refuses what torch.optim accepts: differentiable=True, sparse grads and
dtypes or devices without a kernel run torch's own step (warned once); complex params step as
their real views; strided params and grads through exact copies; argument errors, older
checkpoints and GradScaler as torch's. And the plain fused path does none of that work."""

import copy
import itertools
import warnings

import pytest
from tolerances import assert_close

torch = pytest.importorskip("torch")

from optim_db import BY_NAME, DB  # noqa: E402

import fastopt.torch as fo  # noqa: E402
from fastopt._arrays import describe  # noqa: E402
from fastopt.torch import optim as fo_optim  # noqa: E402

#: every class over a torch.optim class, and its option set with every state slot (as
#: torch.optim takes it) from tests/optim_db.py
ENTRIES = [e for e in DB if e.torch_name]
NAMES = [e.name for e in ENTRIES]
FULL = {e.name: {k: v for k, v in e.full.items() if e.torch_accepts({k: v}) and
                 not k.startswith("l1")} for e in ENTRIES}
CASES = [(n, FULL[n]) for n in NAMES] + [
    ("SGD", dict(lr=0.1)), ("Adam", dict(lr=0.05, betas=(0.8, 0.9), maximize=True)),
    ("RMSprop", dict(lr=0.01)), ("Adagrad", dict(lr=0.1, maximize=True)),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CASES)]
HALF_CASES = [pytest.param(*c, id=i) for c, i in zip(CASES, IDS, strict=True)]


def _close(a, b, what=""):
    a, b = a.detach(), b.detach()
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    tol = dict(rtol=1e-12, atol=1e-14) if a.dtype == torch.float64 else \
        dict(rtol=1e-5, atol=1e-6 * max(1.0, float(b.abs().max()) if b.numel() else 1.0))
    torch.testing.assert_close(a, b, msg=what, **tol)


def _state_close(a, b, pa, pb):
    sa, sb = a.state[pa], b.state[pb]
    assert sorted(sa) == sorted(sb)
    for k in sb:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        # torch's layout (zeros_like(p)), except SGD's first momentum buffer: torch clones the
        # update there, in whatever layout the grad had
        if k not in ("step", "momentum_buffer") or isinstance(b, torch.optim.RMSprop):
            assert sa[k].stride() == sb[k].stride(), k
        _close(sa[k], sb[k], k)


def _run(ours, theirs, a, b, steps, make_grad, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p, q in zip(ours, theirs, strict=True):
            g = make_grad(p, gen)
            p.grad, q.grad = g, (g.clone() if g.is_sparse
                                 else g.clone(memory_format=torch.preserve_format))
        a.step()
        b.step()


def _randn_like(p, gen):
    return torch.randn(p.shape, generator=gen, dtype=p.dtype)


@pytest.fixture
def no_fallback():
    """The kernels step everything: any hand-over to torch's step would warn."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="fastopt.torch")
        yield


# --- differentiable=True ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_step_is_torchs_and_differentiable(name):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    results = []
    for steps in (3, 1):
        ours, theirs = [w.clone()], [w.clone()]  # non-leaf params: the step joins the graph
        a = getattr(fo, name)(ours, differentiable=True, **FULL[name])
        b = getattr(torch.optim, name)(theirs, differentiable=True, **FULL[name])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _run(ours, theirs, a, b, steps, _randn_like)
        warned = [str(w.message) for w in caught if "fastopt.torch" in str(w.message)]
        assert len(warned) == 1 and "differentiable=True" in warned[0]
        assert torch.equal(ours[0], theirs[0]) and ours[0].grad_fn is not None
        results.append((ours[0], theirs[0]))
    # the (one-step) update is part of the graph: d(sum p^2)/dw flows through it as torch's
    ours, theirs = results[1]
    (d_ours,) = torch.autograd.grad(ours.square().sum(), w)
    (d_theirs,) = torch.autograd.grad(theirs.square().sum(), w)
    assert torch.equal(d_ours, d_theirs) and not torch.equal(d_ours, 2 * w)


# --- sparse gradients ---------------------------------------------------------------------


def _sparse_grad(p, gen):
    torch.sparse.check_sparse_tensor_invariants.disable()  # (silences torch's notice)
    rows = torch.randint(0, p.shape[0], (3,), generator=gen)  # repeated rows: uncoalesced
    return torch.sparse_coo_tensor(rows[None], torch.randn(3, *p.shape[1:], generator=gen),
                                   p.shape)


@pytest.mark.parametrize("name,kw,dense_too", [
    ("SGD", dict(lr=0.1), True),
    ("SGD", dict(lr=0.1, maximize=True), True),
    ("SGD", dict(lr=0.1, momentum=0.9), False),  # torch's sparse momentum buffer stays sparse
    ("Adagrad", dict(lr=0.1), True),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.2), True),
])
def test_sparse_grads_stepped_as_torch(name, kw, dense_too):
    gen = torch.Generator().manual_seed(1)
    ours = [torch.randn(10, 3, generator=gen, requires_grad=True),
            torch.randn(7, generator=gen, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = getattr(fo, name)(ours, **kw), getattr(torch.optim, name)(theirs, **kw)
    with pytest.warns(UserWarning, match="sparse gradients"):
        for i in range(6):  # first step sparse: SGD's momentum buffer starts as torch's
            sparse = not dense_too or i % 3 != 1
            _run(ours, theirs, a, b, 1, _sparse_grad if sparse else _randn_like, seed=i)
            for p, q in zip(ours, theirs, strict=True):
                _close(p, q, f"step {i}")
    for p, q in zip(ours, theirs, strict=True):
        assert sorted(a.state[p]) == sorted(b.state[q])
        for k in b.state[q]:
            _close(a.state[p][k].to_dense(), b.state[q][k].to_dense(), k)


def test_sparse_params_run_torchs_step():
    torch.sparse.check_sparse_tensor_invariants.disable()
    ours = [torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,)).requires_grad_()]
    theirs = [ours[0].detach().clone().requires_grad_()]
    a, b = fo.SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)
    with pytest.warns(UserWarning, match="torch.sparse_coo params"):
        _run(ours, theirs, a, b, 3, lambda p, g: torch.sparse_coo_tensor(
            [[1, 2]], torch.randn(2, generator=g), (4,)))
    assert torch.equal(ours[0].to_dense(), theirs[0].to_dense())


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("SGD", "Adagrad")])
def test_sparse_grads_refused_with_torchs_error(name):
    errors = []
    for cls in (getattr(fo, name), getattr(torch.optim, name)):
        p = torch.zeros(4, 2, requires_grad=True)
        opt = cls([p])
        p.grad = torch.ones(4, 2)
        opt.step()  # the kernel's cached tables, then a sparse grad
        p.grad = torch.sparse_coo_tensor([[1]], [[1.0, 1.0]], (4, 2))
        with pytest.raises(RuntimeError) as err:
            opt.step()
        errors.append(str(err.value))
    assert errors[0] == errors[1]


# --- complex params -----------------------------------------------------------------------


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_complex_params_stepped_as_real_views(name, kw, no_fallback):
    gen = torch.Generator().manual_seed(2)
    ours = [torch.randn(3, 4, generator=gen, dtype=torch.complex64, requires_grad=True),
            torch.randn(7, generator=gen, dtype=torch.complex128, requires_grad=True),
            torch.randn(1, generator=gen, dtype=torch.complex64, requires_grad=True),
            torch.randn(5, generator=gen, requires_grad=True)]  # a real one in the same group
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = getattr(fo, name)(ours, **kw), getattr(torch.optim, name)(theirs, **kw)
    ptrs = [p.data_ptr() for p in ours]
    _run(ours, theirs, a, b, 6, _randn_like)
    assert [p.data_ptr() for p in ours] == ptrs
    for p, q in zip(ours, theirs, strict=True):
        _close(p, q)
        _state_close(a, b, p, q)
    assert all(v.is_complex() for v in a.state[ours[0]].values() if v.dim())


# --- strided params and grads -------------------------------------------------------------


def _strided_params(gen):
    """A column slice (not dense), a transpose and a channels_last tensor (dense, permuted),
    and their bases (the slice's other columns must stay untouched)."""
    base = torch.randn(6, 10, generator=gen)
    return base, [torch.nn.Parameter(base[:, ::2]),
                  torch.nn.Parameter(torch.randn(5, 3, generator=gen).t()),
                  torch.nn.Parameter(torch.randn(2, 3, 4, 5, generator=gen)
                                     .to(memory_format=torch.channels_last))]


def _grad_in_other_layouts(p, gen):
    g = torch.randn(p.shape, generator=gen)
    if p.dim() == 2 and p.shape[0] == 3:
        return torch.randn(1, 5, generator=gen).expand(3, 5)  # stride 0
    return g  # C order, unlike a slice's, a transpose's or channels_last strides


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
@pytest.mark.parametrize("grads", ["own_layout", "other_layout"])
def test_strided_params_and_grads_stepped_in_the_users_tensors(name, kw, grads, no_fallback):
    gen = torch.Generator().manual_seed(3)
    base, ours = _strided_params(gen)
    base_t = base.clone()
    theirs = [torch.nn.Parameter(base_t[:, ::2])] + [
        torch.nn.Parameter(p.detach().clone(memory_format=torch.preserve_format))
        for p in ours[1:]]
    a, b = getattr(fo, name)(ours, **kw), getattr(torch.optim, name)(theirs, **kw)
    ptrs = [p.data_ptr() for p in ours]
    make = _grad_in_other_layouts if grads == "other_layout" else \
        (lambda p, g: torch.randn(p.shape, generator=g).as_strided(p.shape, p.stride())
         if describe(p).dense else torch.randn(p.shape, generator=g))
    _run(ours, theirs, a, b, 5, make)
    assert [p.data_ptr() for p in ours] == ptrs  # the update landed in the user's tensors
    assert torch.equal(base[:, 1::2], base_t[:, 1::2])
    _close(base, base_t)
    for p, q in zip(ours, theirs, strict=True):
        assert p.stride() == q.stride()
        _close(p, q)
        _state_close(a, b, p, q)


def test_param_swapped_for_a_strided_view_is_followed():
    """p.data replaced by a column slice after the tables were cached: the stale table is
    not used, the new memory is stepped through a copy."""
    ours = [torch.nn.Parameter(torch.randn(6, 5))]
    theirs = [torch.nn.Parameter(ours[0].detach().clone())]
    a, b = fo.Adam(ours, lr=0.1), torch.optim.Adam(theirs, lr=0.1)
    _run(ours, theirs, a, b, 2, _randn_like)
    wide = torch.randn(6, 10)
    wide_t = wide.clone()
    ours[0].data, theirs[0].data = wide[:, ::2], wide_t[:, ::2]
    _run(ours, theirs, a, b, 3, _randn_like, seed=5)
    _close(wide, wide_t)


def test_lion_steps_strided_and_complex_params_and_refuses_the_rest_clearly(no_fallback):
    """torch.optim has no Lion: nothing to hand over to, but layouts and complex params are the
    kernels' own business."""
    gen = torch.Generator().manual_seed(10)
    base, ours = _strided_params(gen)
    ours.append(torch.randn(4, generator=gen, dtype=torch.complex64, requires_grad=True))
    twins = [torch.nn.Parameter(_real(p.detach()).clone(memory_format=torch.contiguous_format))
             for p in ours]
    a, b = fo.Lion(ours, lr=0.01, weight_decay=0.1), fo.Lion(twins, lr=0.01, weight_decay=0.1)
    for _ in range(4):
        for p, q in zip(ours, twins, strict=True):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = _real(p.grad).contiguous()
        a.step()
        b.step()
    for p, q in zip(ours, twins, strict=True):
        assert torch.equal(_real(p.detach()), q.detach())
    half = torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))
    half.grad = torch.ones(3, dtype=torch.float16)
    fo.Lion([half], lr=0.5).step()  # 16-bit storage: the kernels' too
    assert half.tolist() == [-0.5, -0.5, -0.5]
    q = torch.nn.Parameter(torch.zeros(4, 2))
    q.grad = torch.sparse_coo_tensor([[1]], [[1.0, 1.0]], (4, 2))
    with pytest.raises(TypeError, match="sparse"):
        fo.Lion([q]).step()


def _real(t):
    return torch.view_as_real(t) if t.is_complex() else t


# --- dtypes and devices the kernels do not take -------------------------------------------


def _against_reference(ours, a, twins, b, steps, monkeypatch, seed=0):
    """Steps a (the kernels) and its twin b on the reference backend with the same grads, and
    compares params and state in each param's own dtype within the tolerance table."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p, q in zip(ours, twins, strict=True):
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
            q.grad = p.grad.clone()
        a.step()
        with monkeypatch.context() as m:
            m.setenv("FASTOPT_BACKEND", "reference")
            b.step()
    for p, q in zip(ours, twins, strict=True):
        dtype = str(p.dtype).removeprefix("torch.")
        assert p.dtype == q.dtype
        assert_close(p.detach().double().numpy(), q.detach().double().numpy(), dtype)
        sa, sb = a.state[p], b.state[q]
        assert sorted(sa) == sorted(sb)
        for k, v in sb.items():
            assert sa[k].dtype == v.dtype, k  # state in the param's dtype, as torch keeps it
            assert_close(sa[k].double().numpy(), v.double().numpy(), dtype, k)


@pytest.mark.parametrize("name,kw", HALF_CASES)
def test_half_precision_on_cpu_is_stepped_by_the_kernels(name, kw, monkeypatch, no_fallback):
    """float16 and bfloat16 params beside a float32 one in one group: every param on the
    kernels (a table per dtype, math in float32), following the reference in its own dtype."""
    pytest.importorskip("ml_dtypes")  # the reference backend's NumPy views of bfloat16
    gen = torch.Generator().manual_seed(4)
    ours = [torch.randn(5, 3, generator=gen, requires_grad=True),
            torch.randn(7, generator=gen, dtype=torch.float16, requires_grad=True),
            torch.randn(4, generator=gen, dtype=torch.bfloat16, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in ours]
    a, b = getattr(fo, name)(ours, **kw), getattr(fo, name)(twins, **kw)
    _against_reference(ours, a, twins, b, 4, monkeypatch)
    entry = a._fo_cache[0]
    assert entry.fast is None and not entry.torch_params  # None: all of them
    assert entry.plain and entry.cache.builds == 1


@pytest.mark.parametrize("name", NAMES)
def test_group_of_half_params_is_stepped_by_the_kernels(name, monkeypatch, no_fallback):
    ours = [torch.nn.Parameter(torch.randn(6, dtype=torch.float16))]
    twins = [torch.nn.Parameter(ours[0].detach().clone())]
    a, b = getattr(fo, name)(ours, **FULL[name]), getattr(fo, name)(twins, **FULL[name])
    _against_reference(ours, a, twins, b, 3, monkeypatch)


def test_param_turned_half_is_stepped_in_half(monkeypatch, no_fallback):
    """p.data = p.data.half() between steps: the tables are rebuilt for float16 (the state
    keeps torch's dtype rules: SGD's momentum buffer is made anew from the half grad)."""
    ours = [torch.nn.Parameter(torch.randn(6)), torch.nn.Parameter(torch.randn(3))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a, b = fo.SGD(ours, lr=0.1), fo.SGD(twins, lr=0.1)
    _against_reference(ours, a, twins, b, 2, monkeypatch)
    for p in ours + twins:
        p.data = p.data.half()
    _against_reference(ours, a, twins, b, 2, monkeypatch, seed=6)
    assert all(p.dtype == torch.float16 for p in ours)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_meta_params_get_torchs_fused_error(name):
    with torch.device("meta"):
        model = torch.nn.Linear(2, 3)
    opt = getattr(fo, name)(model.parameters(), fused=True)
    for p in model.parameters():
        p.grad = torch.rand_like(p)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params"), \
            pytest.warns(UserWarning, match="params on meta"):
        opt.step()


# --- argument errors, older checkpoints, GradScaler ---------------------------------------


def _outcome(cls, kw):
    try:
        cls([torch.zeros(2, requires_grad=True)], **kw)
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        return type(exc), str(exc)
    return None


FLAG_SPACE = {
    "lr": [0.01, torch.tensor(0.01), torch.tensor([0.1, 0.2]), -1.0],
    "foreach": [None, False, True],
    "fused": [None, False, True],
    "differentiable": [False, True],
    "capturable": [False, True],
    "betas": [(0.9, 0.99), (torch.tensor(0.9), torch.tensor(0.99)), (0.9, torch.tensor(0.99)),
              (torch.tensor(1.5), torch.tensor(0.9))],
}


@pytest.mark.parametrize("name", NAMES)
def test_every_flag_combination_accepted_or_refused_as_torch(name):
    import inspect

    known = inspect.signature(getattr(torch.optim, name).__init__).parameters
    keys = [k for k in FLAG_SPACE if k in known]
    for values in itertools.product(*(FLAG_SPACE[k] for k in keys)):
        kw = dict(zip(keys, values, strict=True))
        ours, theirs = _outcome(getattr(fo, name), kw), _outcome(getattr(torch.optim, name), kw)
        assert ours == theirs, kw


def _older(sd, flag):
    """`sd` as saved before param-group key `flag` existed and steps were tensors."""
    sd = copy.deepcopy(sd)
    for group in sd["param_groups"]:
        group.pop(flag, None)
    for st in sd["state"].values():
        if "step" in st:
            st["step"] = float(st["step"])
    return sd


@pytest.mark.parametrize("name", NAMES)
def test_older_state_dicts_load_and_step_as_torch(name):
    """Checkpoints saved before a param-group key existed (each key that torch's
    __setstate__ fills in, found by dropping every key in turn) and before steps were
    tensors: both load them alike and step on as one."""
    gen = torch.Generator().manual_seed(7)
    ours = [torch.randn(4, 3, generator=gen, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = getattr(fo, name)(ours, **FULL[name]), getattr(torch.optim, name)(theirs, **FULL[name])
    _run(ours, theirs, a, b, 2, _randn_like)
    extras = a.defaults.keys() - b.defaults.keys()  # fastopt's own: l1, l1_mode, ...
    assert extras == BY_NAME[name].defaults.keys() - b.defaults.keys()
    filled = []
    for flag in [k for k in b.param_groups[0] if k != "params"]:
        full = copy.deepcopy(b.state_dict())
        b.load_state_dict(_older(full, flag))
        if flag not in b.param_groups[0]:
            b.load_state_dict(full)  # torch's checkpoints always had it
            continue
        filled.append(flag)
        a.load_state_dict(_older(a.state_dict(), flag))
        assert a.param_groups[0].keys() - extras == b.param_groups[0].keys(), flag
        _run(ours, theirs, a, b, 1, _randn_like, seed=len(flag))
    assert {"maximize", "foreach", "differentiable"} <= set(filled)
    _close(ours[0], theirs[0])
    _state_close(a, b, ours[0], theirs[0])


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_grad_scaler_hands_its_scale_to_every_step(name):
    """GradScaler passes its scale and inf flag to the step (tests/test_grad_scaling.py has
    the rest): the result is that of torch's unfused step, which GradScaler unscales for."""
    gen = torch.Generator().manual_seed(8)
    ours = [torch.randn(5, generator=gen, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a = getattr(fo, name)(ours, lr=0.1, fused=False)
    b = getattr(torch.optim, name)(theirs, lr=0.1)
    assert a._step_supports_amp_scaling
    assert not getattr(b, "_step_supports_amp_scaling", False)
    assert isinstance(a, getattr(torch.optim, name))
    scalers = [torch.amp.GradScaler("cpu", init_scale=1024.0) for _ in range(2)]
    for i in range(4):
        for p, opt, sc in ((ours[0], a, scalers[0]), (theirs[0], b, scalers[1])):
            opt.zero_grad()
            loss = (p * torch.arange(5.0)).sum() * (float("inf") if i == 2 else 1.0)
            sc.scale(loss).backward()
            sc.step(opt)
            sc.update()
    _close(ours[0], theirs[0])


def test_sgd_without_momentum_keeps_no_state():
    p = torch.nn.Parameter(torch.randn(3))
    opt = fo.SGD([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    assert len(opt.state) == 0


# --- the plain fused path -----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_plain_path_does_no_routing_or_copying_after_the_first_step(name, monkeypatch):
    gen = torch.Generator().manual_seed(9)
    ours = [torch.randn(s, generator=gen, requires_grad=True) for s in [(1,), (7,), (4097,)]]
    ours.append(torch.nn.Parameter(torch.randn(3, 5, generator=gen).t()))  # dense, permuted
    theirs = [torch.nn.Parameter(p.detach().clone(memory_format=torch.preserve_format))
              for p in ours]
    a, b = getattr(fo, name)(ours, **FULL[name]), getattr(torch.optim, name)(theirs, **FULL[name])
    _run(ours, theirs, a, b, 1, _randn_like)

    def forbidden(*args, **kwargs):
        raise AssertionError("per-tensor work on the plain fused path")

    monkeypatch.setattr(fo_optim, "_kernel_arrays", forbidden)
    monkeypatch.setattr(fo_optim.FusedOptimizer, "_route", forbidden)
    monkeypatch.setattr(fo_optim.FusedOptimizer, "_torch_step", forbidden)
    _run(ours, theirs, a, b, 5, lambda p, g: torch.randn(p.shape, generator=g)
         .as_strided(p.shape, p.stride()))
    assert a._fo_cache[0].cache.builds == 1
    for p, q in zip(ours, theirs, strict=True):
        _close(p, q)
