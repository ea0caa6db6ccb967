"""Gradient clipping fused into the step (max_grad_norm=, grad_norm_type= on every optimizer):
one norm pass over the grads, then the step takes each grad scaled on the fly by
min(max_grad_norm / (norm + 1e-6), 1), as torch.nn.utils.clip_grad_norm_ then the step would,
without writing clipped grads.

- every optimizer class, multi-step, odd sizes in one list: equal bit for bit to
  fastopt.clip.clip_grad_norm_ then the step (float32, float64), the grads left as they were,
  the norm recorded in `grad_norm`; with GradScaler's scale too;
- every CPU backend (the kernels take the factor in the head's sign, the reference on a copy);
- one global norm over the param groups that clip, each with its own max_grad_norm;
- fastopt.torch against clip_grad_norm_ + torch's fused step, GradScaler included;
- bad options, an inf or NaN gradient (refused before anything changes).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import CPU_BACKENDS
from optim_db import DB
from tolerances import assert_close
from trajectories import FEW_CASES, case_id

import fastopt
from fastopt import clip, functional, ops

SHAPES = [(1,), (7,), (4097,), (65537,), (3, 5), (33, 17)]


def _stream(dtype, steps=4, seed=1):
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(s) * rng.uniform(0.1, 3.0)).astype(dtype) for s in SHAPES]
            for _ in range(steps)]


def _start(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clipping", "below"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("full", [False, True], ids=["defaults", "most-state"])
@pytest.mark.parametrize("entry", DB, ids=lambda e: e.name)
def test_fused_clip_equals_clip_then_step(entry, full, dtype, max_norm):
    """Bit for bit at the defaults. With the options of most state, an L2 or L1 term added to
    the scaled grad may be fused with its product (a multiply-add: one rounding, where
    clipping first stored the clipped grad rounded), and an op whose math is float64 (Lion)
    scales a float32 grad in float64: within one rounding then."""
    stream = _stream(dtype)
    fused_p, plain_p = _start(dtype), _start(dtype)
    options = entry.full if full else {}
    fused = entry.optim_class(fused_p, **options, max_grad_norm=max_norm)
    plain = entry.optim_class(plain_p, **options)
    for grads in stream:
        mine = [g.copy() for g in grads]
        theirs = [g.copy() for g in grads]
        fused.step(mine)
        norm = clip.clip_grad_norm_(theirs, max_norm)
        plain.step(theirs)
        assert fused.grad_norm == norm
        for a, b in zip(mine, grads, strict=True):  # not written: scaled on the fly
            np.testing.assert_array_equal(a, b)
    exact = not full and (entry.spec.math != "float64" or dtype == "float64")
    same = np.testing.assert_array_equal if exact \
        else (lambda a, b, err_msg: assert_close(a, b, dtype, err_msg))
    for k, (a, b) in enumerate(zip(fused_p, plain_p, strict=True)):
        same(a, b, err_msg=f"param {k}")
    sa, sb = fused.state_dict()["state"], plain.state_dict()["state"]
    for k in sb:
        for key, value in sb[k].items():
            same(np.asarray(sa[k][key]), np.asarray(value), err_msg=f"{key} of param {k}")
    assert fused.state_dict()["param_groups"][0]["max_grad_norm"] == max_norm


def test_fused_clip_takes_gradscalers_scale():
    """Scaled grads with grad_scale and max_grad_norm: the unscaled grads are left behind and
    the step equals unscale, clip, step."""
    scale = 2.0**11
    stream = _stream("float32")
    a_p, b_p = _start("float32"), _start("float32")
    a = fastopt.optim.AdamW(a_p, lr=1e-2, max_grad_norm=0.3)
    b = fastopt.optim.AdamW(b_p, lr=1e-2)
    for grads in stream:
        scaled = [g * np.float32(scale) for g in grads]
        a.step(scaled, grad_scale=scale, found_inf=0.0)
        theirs = [g.copy() for g in grads]
        norm = clip.clip_grad_norm_(theirs, 0.3)
        b.step(theirs)
        assert a.grad_norm == pytest.approx(norm, rel=1e-12)
        for x, g in zip(scaled, grads, strict=True):
            np.testing.assert_array_equal(x, g)
    for x, y in zip(a_p, b_p, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("backend", [*CPU_BACKENDS, "reference"])
@pytest.mark.parametrize("case", FEW_CASES, ids=case_id)
def test_every_backend_clips_in_the_step(case, backend):
    """functional.<op>_(max_grad_norm=) against the same step on pre-clipped grads."""
    op, hyper = case
    spec = ops.get(op)
    fn = getattr(functional, op + "_")
    group = {**spec.defaults, **hyper}
    for dtype in ("float32", "float64"):
        runs = []
        for fused in (True, False):
            params = _start(dtype)
            state = [[np.full(s, spec.init_value(sl.name, group), dtype) for s in SHAPES]
                     if sl.name in spec.state_slots(group) else None for sl in spec.slots]
            for step, grads in enumerate(_stream(dtype, steps=3), start=1):
                grads = [g.copy() for g in grads]
                kw = dict(hyper, step=step)
                if spec.fresh_flag:
                    kw["first_step"] = step == 1
                if fused:
                    kw["max_grad_norm"] = 0.5
                else:
                    clip.clip_grad_norm_(grads, 0.5, backend=backend)
                kw = {k: v for k, v in kw.items() if k in fn.__signature__.parameters}
                fn(params, grads, *state, backend=backend, **kw)
            runs.append(params)
        for k, (a, b) in enumerate(zip(*runs, strict=True)):
            assert_close(a, b, dtype, f"{case_id(case)} {backend} {dtype} param {k}")


def test_one_global_norm_over_the_groups_that_clip():
    rng = np.random.default_rng(3)
    ps = [rng.standard_normal(100).astype(np.float32) for _ in range(3)]
    gs = [rng.standard_normal(100).astype(np.float32) * 4 for _ in range(3)]
    opt = fastopt.optim.SGD([{"params": [ps[0]], "max_grad_norm": 1.0},
                             {"params": [ps[1]], "max_grad_norm": 2.0},
                             {"params": [ps[2]]}], lr=0.1)
    before = [p.copy() for p in ps]
    opt.step(gs)
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in gs[:2]))
    assert opt.grad_norm == pytest.approx(norm, rel=1e-12)
    for p, b, g, m in zip(ps, before, gs, (1.0, 2.0, None), strict=True):
        coef = 1.0 if m is None else min(m / (norm + 1e-6), 1.0)
        np.testing.assert_allclose(p, b - np.float32(0.1) * (g * np.float32(coef)),
                                   rtol=1e-6, atol=1e-7)


def test_groups_must_share_the_norm_type():
    ps = [np.zeros(3, np.float32), np.zeros(3, np.float32)]
    opt = fastopt.optim.SGD([{"params": [ps[0]], "max_grad_norm": 1.0},
                             {"params": [ps[1]], "max_grad_norm": 1.0,
                              "grad_norm_type": math.inf}], lr=0.1)
    with pytest.raises(ValueError, match="grad_norm_type"):
        opt.step([np.ones(3, np.float32), np.ones(3, np.float32)])
    np.testing.assert_array_equal(ps[0], np.zeros(3, np.float32))


@pytest.mark.parametrize("norm_type", [1.0, math.inf, 3.0])
def test_other_norm_types_match_clip_grad_norm(norm_type):
    stream = _stream("float64", steps=2)
    a_p, b_p = _start("float64"), _start("float64")
    a = fastopt.optim.Adam(a_p, max_grad_norm=0.7, grad_norm_type=norm_type)
    b = fastopt.optim.Adam(b_p)
    for grads in stream:
        a.step([g.copy() for g in grads])
        theirs = [g.copy() for g in grads]
        assert clip.clip_grad_norm_(theirs, 0.7, norm_type) == a.grad_norm
        b.step(theirs)
    for x, y in zip(a_p, b_p, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("layer", ["optim", "functional"])
def test_an_inf_or_nan_gradient_is_refused_before_anything_changes(layer, bad):
    params = _start("float32")
    grads = _stream("float32", steps=1)[0]
    grads[3][100] = bad
    before = [p.copy() for p in params]
    with pytest.raises(ValueError, match="norm is (inf|nan)"):
        if layer == "optim":
            fastopt.optim.SGD(params, lr=0.1, max_grad_norm=1.0).step(grads)
        else:
            functional.sgd_(params, grads, [None] * len(params), lr=0.1, max_grad_norm=1.0)
    for a, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [dict(max_grad_norm=-1.0), dict(max_grad_norm=math.nan),
                                 dict(max_grad_norm=math.inf), dict(max_grad_norm="1"),
                                 dict(max_grad_norm=True), dict(grad_norm_type=0.0),
                                 dict(grad_norm_type=-2.0), dict(grad_norm_type="2")])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError, match="max_grad_norm|grad_norm_type"):
        fastopt.optim.AdamW([np.ones(3, np.float32)], **bad)


# --- fastopt.torch ---------------------------------------------------------------------------
def _model(torch):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(9, 33), torch.nn.Tanh(), torch.nn.Linear(33, 4))


@pytest.mark.parametrize("amp", [False, True], ids=["plain", "gradscaler"])
@pytest.mark.parametrize("name", ["AdamW", "SGD", "RMSprop"])
def test_fastopt_torch_matches_clip_then_torch_step(name, amp):
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    kw = {"lr": 1e-2, **({"momentum": 0.9} if name == "SGD" else {})}
    runs = []
    for ours in (True, False):
        model = _model(torch)
        opt = getattr(fo, name)(model.parameters(), max_grad_norm=0.25, **kw) if ours else \
            getattr(torch.optim, name)(model.parameters(), **kw)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, enabled=amp)
        gen = torch.Generator().manual_seed(1)
        norms = []
        for _ in range(5):
            x, y = torch.randn(16, 9, generator=gen), torch.randn(16, 4, generator=gen)
            opt.zero_grad()
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            if ours:
                scaler.step(opt)
                norms.append(opt.grad_norm)
            else:
                scaler.unscale_(opt)
                norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)))
                scaler.step(opt)
            scaler.update()
        runs.append(([p.detach().clone() for p in model.parameters()], norms))
    (mine, my_norms), (theirs, their_norms) = runs
    assert my_norms == pytest.approx(their_norms, rel=1e-5)
    for a, b in zip(mine, theirs, strict=True):
        assert_close(a.numpy(), b.numpy(), "float32", name)
