"""fastopt.torch losses against torch.nn.functional: values and gradients through backward(),
every reduction, weights, ignore_index, label smoothing, probability targets, non-leaf and
leaf inputs, no_grad, in-place cross-entropy, the nn.Module forms and the torch fallbacks."""

import inspect
import types

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as TF  # noqa: E402
from tolerances import assert_close  # noqa: E402

import fastopt.torch as fo  # noqa: E402
from fastopt.torch import functional as fof  # noqa: E402

fused = pytest.mark.skipif(not fo.fused_losses_available(),
                           reason="fastopt.losses (the fused loss kernels) is not in this build")

LOSSES = ["cross_entropy", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
          "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div"]


@pytest.fixture
def no_fallback(monkeypatch):
    """Fail if a call falls back to torch.nn.functional: the fused kernel must run."""
    def refuse(*_, **__):
        raise AssertionError("fell back to torch.nn.functional")
    monkeypatch.setattr(fof, "TF", types.SimpleNamespace(**{n: refuse for n in LOSSES}))


def _name(dtype):
    return str(dtype).removeprefix("torch.")


def _check(ours, theirs, dtype, what):
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, what
    assert_close(ours.detach().numpy(), theirs.detach().numpy(), _name(dtype), what)


def _compare(fn_ours, fn_theirs, x, *, grad_out=None, dtype=torch.float32):
    """Loss value and input gradient of both, x a leaf (cloned for each side)."""
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    la, lb = fn_ours(xa), fn_theirs(xb)
    _check(la, lb, dtype, "loss")
    g = torch.ones_like(lb) if grad_out is None else grad_out
    la.backward(g)
    lb.backward(g)
    _check(xa.grad, xb.grad, dtype, "grad")


CE_CASES = [
    dict(), dict(reduction="sum"), dict(reduction="none"), dict(ignore_index=2),
    dict(label_smoothing=0.1), dict(weight=True), dict(weight=True, ignore_index=1),
    dict(weight=True, label_smoothing=0.2, reduction="sum"), dict(weight=True, reduction="none"),
]


@fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 7), (1, 1), (3, 4097), (7,)])
@pytest.mark.parametrize("kw", CE_CASES, ids=[str(i) for i in range(len(CE_CASES))])
def test_cross_entropy_index_targets(kw, shape, dtype, no_fallback):
    g = torch.Generator().manual_seed(0)
    c = shape[-1]
    x = torch.randn(shape, generator=g, dtype=dtype) * 3
    y = torch.randint(0, c, shape[:-1], generator=g)
    kw = dict(kw)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(c, generator=g, dtype=dtype) + 0.5
    grad_out = None
    if kw.get("reduction") == "none":
        grad_out = torch.randn(shape[:-1], generator=g, dtype=dtype)
    _compare(lambda a: fo.cross_entropy(a, y, **kw), lambda b: TF.cross_entropy(b, y, **kw), x,
             grad_out=grad_out, dtype=dtype)


@fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", [dict(), dict(reduction="sum", label_smoothing=0.1),
                                dict(reduction="none", weight=True)])
def test_cross_entropy_probability_targets(kw, dtype, no_fallback):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 9, generator=g, dtype=dtype)
    y = torch.softmax(torch.randn(5, 9, generator=g, dtype=dtype), -1)
    kw = dict(kw)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(9, generator=g, dtype=dtype)
    grad_out = torch.randn(5, generator=g, dtype=dtype) if kw.get("reduction") == "none" else None
    _compare(lambda a: fo.cross_entropy(a, y, **kw), lambda b: TF.cross_entropy(b, y, **kw), x,
             grad_out=grad_out, dtype=dtype)


@fused
def test_cross_entropy_non_leaf_and_scaled_backward(no_fallback):
    g = torch.Generator().manual_seed(2)
    h = torch.randn(6, 5, generator=g, requires_grad=True)
    w = torch.randn(11, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 11, (6,), generator=g)
    grads = []
    for fn in (fo.cross_entropy, TF.cross_entropy):
        h.grad = w.grad = None
        loss = fn(h @ w.t(), y, label_smoothing=0.05)
        (loss * 3.5).backward()
        grads.append((loss.detach(), h.grad.clone(), w.grad.clone()))
    for a, b in zip(*grads, strict=True):
        _check(a, b, torch.float32, "non-leaf")


@fused
def test_backward_twice_with_retain_graph(no_fallback):
    x = torch.randn(4, 6, requires_grad=True)
    y = torch.tensor([0, 5, 2, 1])
    loss = fo.cross_entropy(x * 2, y)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    _check(x.grad, 2 * first, torch.float32, "accumulated")


@fused
def test_cross_entropy_inplace(no_fallback):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(8, 5, generator=g, requires_grad=True)
    w = torch.randn(13, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 13, (8,), generator=g)
    ref = TF.cross_entropy(h @ w.t(), y)
    ref.backward()
    want = (ref.detach(), h.grad.clone(), w.grad.clone())
    h.grad = w.grad = None
    out = (h @ w.t()).reshape(2, 4, 13)  # matmul saves h and w, not its output: in place is
    logits = out.view(8, 13)  # safe, also through a view of it
    ptr = logits.data_ptr()
    loss = fo.cross_entropy(logits, y, inplace=True)
    loss.backward()
    for a, b in zip((loss.detach(), h.grad, w.grad), want, strict=True):
        _check(a, b, torch.float32, "inplace")
    assert logits.data_ptr() == ptr  # the gradient went into the logits' memory


@fused
def test_cross_entropy_inplace_refused_or_detected():
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([0, 1, 3])
    with pytest.raises(ValueError, match="leaf"):
        fo.cross_entropy(x, y, inplace=True)
    with pytest.raises(ValueError, match="view of one"):
        fo.cross_entropy(x.view(3, 4), y, inplace=True)  # would overwrite the parameter
    with pytest.raises(ValueError, match="does not require grad"):
        fo.cross_entropy(torch.randn(3, 4), y, inplace=True)
    # tanh saves its output for backward: autograd notices the overwrite instead of using it
    logits = torch.tanh(x * 1.0)
    loss = fo.cross_entropy(logits, y, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@fused
def test_cross_entropy_z_loss_and_softcap(no_fallback):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 10, generator=g, dtype=torch.float64) * 4
    y = torch.randint(0, 10, (6,), generator=g)

    def theirs(b):
        s = 3.0 * torch.tanh(b / 3.0)
        rows = TF.cross_entropy(s, y, reduction="none") + 1e-2 * torch.logsumexp(s, -1) ** 2
        return rows.mean()

    _compare(lambda a: fo.cross_entropy(a, y, z_loss=1e-2, softcap=3.0), theirs, x,
             dtype=torch.float64)


ELEMENTWISE = [
    ("mse_loss", {}), ("l1_loss", {}), ("huber_loss", dict(delta=0.7)),
    ("smooth_l1_loss", dict(beta=0.5)), ("smooth_l1_loss", dict(beta=0.0)),
    ("binary_cross_entropy", {}), ("binary_cross_entropy", dict(weight=True)),
    ("binary_cross_entropy_with_logits", {}),
    ("binary_cross_entropy_with_logits", dict(weight=True, pos_weight=True)),
    ("kl_div", {}), ("kl_div", dict(log_target=True)), ("kl_div", dict(reduction="batchmean")),
]


def _elementwise_inputs(name, shape, dtype, g):
    x = torch.randn(shape, generator=g, dtype=dtype)
    y = torch.randn(shape, generator=g, dtype=dtype)
    if name == "binary_cross_entropy":
        x = torch.rand(shape, generator=g, dtype=dtype) * 0.98 + 0.01
        y = torch.rand(shape, generator=g, dtype=dtype)
    elif name == "binary_cross_entropy_with_logits":
        y = torch.rand(shape, generator=g, dtype=dtype)
    elif name == "kl_div":
        x = torch.log_softmax(x, -1)
        y = torch.softmax(y, -1)
    return x, y


@fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,kw", ELEMENTWISE, ids=[f"{n}-{i}" for i, (n, _) in
                                                      enumerate(ELEMENTWISE)])
def test_elementwise_losses(name, kw, reduction, dtype, no_fallback):
    g = torch.Generator().manual_seed(5)
    shape = (3, 7)
    x, y = _elementwise_inputs(name, shape, dtype, g)
    kw = dict(kw)
    kw.setdefault("reduction", reduction)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(7, generator=g, dtype=dtype)
    if kw.pop("pos_weight", False):
        kw["pos_weight"] = torch.rand(7, generator=g, dtype=dtype) + 0.5
    if name == "kl_div" and kw["reduction"] == "mean":
        pytest.skip("torch warns that kl_div 'mean' is not the KL divergence")
    grad_out = torch.randn(shape, generator=g, dtype=dtype) if kw["reduction"] == "none" \
        else None
    _compare(lambda a: getattr(fo, name)(a, y, **kw), lambda b: getattr(TF, name)(b, y, **kw),
             x, grad_out=grad_out, dtype=dtype)


@fused
@pytest.mark.parametrize("n", [1, 4097, 65537])
def test_odd_sizes(n, no_fallback):
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(n, generator=g), torch.randn(n, generator=g)
    _compare(lambda a: fo.mse_loss(a, y), lambda b: TF.mse_loss(b, y), x)
    _compare(lambda a: fo.huber_loss(a, y, reduction="sum"),
             lambda b: TF.huber_loss(b, y, reduction="sum"), x)


@fused
def test_no_grad_and_inputs_without_grad(no_fallback):
    x = torch.randn(4, 5)
    y = torch.tensor([1, 0, 4, 2])
    want = TF.cross_entropy(x, y)
    got = fo.cross_entropy(x, y)
    assert got.grad_fn is None and not got.requires_grad
    _check(got, want, torch.float32, "no grad")
    xr = x.clone().requires_grad_()
    with torch.no_grad():
        got = fo.cross_entropy(xr, y)
    assert got.grad_fn is None
    _check(got, want, torch.float32, "no_grad()")


def test_fallbacks_match_torch():
    """Inputs the kernels do not take are computed by torch, gradients included."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 4, generator=g)
    y = torch.randn(3, 4, generator=g, requires_grad=True)  # target needs grad
    for fn in ("mse_loss", "l1_loss", "smooth_l1_loss"):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = y.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
        getattr(fo, fn)(xa, ya).backward()
        getattr(TF, fn)(xb, yb).backward()
        _check(xa.grad, xb.grad, torch.float32, fn)
        _check(ya.grad, yb.grad, torch.float32, fn)
    # K-dimensional cross-entropy, half precision, non-contiguous logits, mse with weight
    xk = torch.randn(2, 5, 3, generator=g)
    yk = torch.randint(0, 5, (2, 3), generator=g)
    _compare(lambda a: fo.cross_entropy(a, yk), lambda b: TF.cross_entropy(b, yk), xk)
    xh = torch.randn(3, 5, generator=g).to(torch.bfloat16)
    assert torch.equal(fo.cross_entropy(xh, yk[0]), TF.cross_entropy(xh, yk[0]))
    xt = torch.randn(5, 3, generator=g).t()
    assert torch.equal(fo.cross_entropy(xt, yk[0]), TF.cross_entropy(xt, yk[0]))
    w = torch.rand(3, 4, generator=g)
    assert torch.equal(fo.mse_loss(x, y.detach(), weight=w), TF.mse_loss(x, y.detach(), weight=w))
    # legacy size_average / reduce arguments
    with pytest.warns(UserWarning):
        got = fo.l1_loss(x, y.detach(), size_average=False)
    _check(got, TF.l1_loss(x, y.detach(), reduction="sum"), torch.float32, "legacy")


def test_invalid_input_raises_torch_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError):
        fo.cross_entropy(x, torch.tensor([0, 1, 2]), reduction="bogus")
    with pytest.raises((RuntimeError, ValueError, IndexError)):
        fo.cross_entropy(x, torch.tensor([0, 1]))
    with pytest.raises(RuntimeError):
        fo.binary_cross_entropy(torch.full((3,), 1.5), torch.zeros(3))
    if not fo.fused_losses_available():
        with pytest.raises(ValueError, match="fused kernel"):
            fo.cross_entropy(x, torch.tensor([0, 1, 2]), z_loss=1e-4)


def test_signatures_match_torch():
    for name in LOSSES:
        ours = inspect.signature(getattr(fo, name)).parameters
        theirs = inspect.signature(getattr(TF, name)).parameters
        assert list(ours)[:len(theirs)] == list(theirs), name
        for k, prm in theirs.items():
            assert ours[k].default == prm.default, (name, k)
        for k in list(ours)[len(theirs):]:
            assert ours[k].kind == inspect.Parameter.KEYWORD_ONLY, (name, k)


MODULES = [("CrossEntropyLoss", dict(weight=torch.rand(6) + 0.1, label_smoothing=0.1)),
           ("CrossEntropyLoss", dict(reduction="sum", ignore_index=3)),
           ("MSELoss", {}), ("L1Loss", dict(reduction="sum")), ("HuberLoss", dict(delta=0.5)),
           ("SmoothL1Loss", dict(beta=0.3)), ("BCELoss", dict(weight=torch.rand(6))),
           ("BCEWithLogitsLoss", dict(pos_weight=torch.rand(6) + 0.5)),
           ("KLDivLoss", dict(reduction="batchmean", log_target=True))]


@pytest.mark.parametrize("name,kw", MODULES, ids=[f"{n}-{i}" for i, (n, _) in
                                                  enumerate(MODULES)])
def test_nn_modules(name, kw):
    ours, theirs = getattr(fo.nn, name)(**kw), getattr(torch.nn, name)(**kw)
    assert isinstance(ours, type(theirs))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert repr(ours) == repr(theirs)
    g = torch.Generator().manual_seed(8)
    if name == "CrossEntropyLoss":
        x, y = torch.randn(5, 6, generator=g), torch.randint(0, 6, (5,), generator=g)
    else:
        lossname = {"MSELoss": "mse_loss", "L1Loss": "l1_loss", "HuberLoss": "huber_loss",
                    "SmoothL1Loss": "smooth_l1_loss", "BCELoss": "binary_cross_entropy",
                    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
                    "KLDivLoss": "kl_div"}[name]
        x, y = _elementwise_inputs(lossname, (5, 6), torch.float32, g)
    _compare(lambda a: ours(a, y), lambda b: theirs(b, y), x)
