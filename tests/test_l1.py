"""L1 regularization, the frame every driver runs around every optimizer's rule (fastopt.ops):
checked against the optimizer's own step without L1, so for every class of tests/optim_db.py
at once.

    coupled    = the step without L1, its gradient g + l1 * sign(p) (minus with maximize)
    proximal   = the step without L1, then p = sign(p) * max(|p| - lr * l1, 0)
    l1 = 0     = no L1 at all, bitwise, in either mode

(Trajectories with L1 against the reference and torch.optim, and the exact zeros of the
proximal mode: tests/test_optim_db.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import backend_params
from optim_db import DB
from tolerances import assert_close
from trajectories import grad_stream, initial_params, snapshot

SHAPES = [(1,), (7,), (4097,), (3, 5)]
STEPS = 10
BACKENDS = [*backend_params(), "reference"]
ENTRIES = [pytest.param(e, id=e.name) for e in DB]


def _plain(entry):
    """The entry's fullest option set, without L1."""
    return {k: v for k, v in entry.full.items() if not k.startswith("l1")}


def _run(entry, options, backend, dtype, before=None, after=None):
    """Steps the class on the shared start and gradients; before(params, grads) may change the
    gradients of a step, after(params) the params after it."""
    params = initial_params(SHAPES, dtype)
    opt = entry.optim_class(params, backend=backend, **options)
    for grads in grad_stream(SHAPES, dtype, STEPS):
        if before is not None:
            grads = before(params, grads)
        opt.step(grads)
        if after is not None:
            after(params)
    return snapshot(opt)


def _same(a, b, dtype, what):
    for k, (x, y) in enumerate(zip(a.params, b.params, strict=True)):
        assert_close(x, y, dtype, f"{what}: param {k}")
    for k in b.state:
        for key, value in b.state[k].items():
            if key != "step":
                assert_close(a.state[k][key], value, dtype, f"{what}: {key} {k}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry", ENTRIES)
def test_coupled_l1_is_its_subgradient_added_to_the_gradient(entry, backend, dtype):
    options, l1 = _plain(entry), 0.05
    sign = -1.0 if entry.group(options).get("maximize") else 1.0

    def before(params, grads):
        return [(g + sign * l1 * np.sign(p)).astype(dtype) for p, g in zip(params, grads,
                                                                            strict=True)]

    _same(_run(entry, {**options, "l1": l1}, backend, dtype),
          _run(entry, options, backend, dtype, before=before), dtype,
          f"{entry.name}{options} {backend} coupled l1={l1}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry", ENTRIES)
def test_proximal_l1_is_the_soft_threshold_after_the_step(entry, backend, dtype):
    options = _plain(entry)
    threshold = 0.02  # per step: some params reach 0 within the steps, whatever lr is
    l1 = threshold / entry.group(options)["lr"]

    def after(params):
        for p in params:
            p[...] = np.sign(p) * np.maximum(np.abs(p.astype(np.float64)) - threshold, 0)

    ours = _run(entry, {**options, "l1": l1, "l1_mode": "proximal"}, backend, dtype)
    _same(ours, _run(entry, options, backend, dtype, after=after), dtype,
          f"{entry.name}{options} {backend} proximal l1={l1}")
    assert any((p == 0).any() for p in ours.params)


@pytest.mark.parametrize("mode", ["coupled", "proximal"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry", ENTRIES)
def test_zero_l1_is_no_l1(entry, backend, mode):
    options = _plain(entry)
    a = _run(entry, {**options, "l1": 0.0, "l1_mode": mode}, backend, "float32")
    b = _run(entry, options, backend, "float32")
    for x, y in zip(a.params, b.params, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("mode", ["coupled", "proximal"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry", ENTRIES)
def test_nan_params_stay_nan_and_zeros_get_no_push(entry, backend, mode):
    """sign(NaN) = NaN: a NaN param stays NaN (never zeroed by the threshold); sign(0) = 0: a
    zero param with a zero gradient gets no L1 push in either mode."""
    options = {**_plain(entry), "l1": 0.5, "l1_mode": mode}
    p = np.array([np.nan, 0.0, 1.0], np.float32)
    opt = entry.optim_class([p], backend=backend, **options)
    opt.step([np.array([0.5, 0.0, 0.5], np.float32)])
    assert np.isnan(p[0])
    plain = np.array([np.nan, 0.0, 1.0], np.float32)
    entry.optim_class([plain], backend=backend, **_plain(entry)).step(
        [np.array([0.5, 0.0, 0.5], np.float32)])
    assert p[1] == plain[1]


@pytest.mark.parametrize("hyper", [dict(lr=0.05),
                                   dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.1),
                                   dict(lr=0.02, momentum=0.8, dampening=0.2, maximize=True)],
                         ids=str)
def test_coupled_sgd_is_torch_sgd_on_the_penalized_loss(hyper):
    """The reference's coupled L1 is torch.optim.SGD on 0.5 sum w (p - t)^2 + l1 sum |p|
    through autograd (whose abs has gradient 0 at 0); maximizing, the penalty still shrinks p
    (the objective is f - l1 |p|). Independent of fastopt's own frame and specs."""
    torch = pytest.importorskip("torch")
    from trajectories import ReferenceOptimizer

    l1, sizes = 0.3, (1, 7, 4097)
    rng = np.random.default_rng(5)
    t = [rng.standard_normal(n) for n in sizes]
    w = [rng.uniform(0.5, 2.0, n) for n in sizes]
    start = initial_params([(n,) for n in sizes], np.float64, seed=5)
    for p, tk in zip(start, t, strict=True):
        p[::3] = 0.0
        tk[::6] = 0.0  # p = t = 0 there: a zero gradient, and a zero subgradient, every step
    ref = ReferenceOptimizer("sgd", [p.copy() for p in start], **hyper, l1=l1)
    tparams = [torch.tensor(p, requires_grad=True) for p in start]
    topt = torch.optim.SGD(tparams, **hyper)
    penalty = -l1 if hyper.get("maximize") else l1
    for _ in range(20):
        ref.step([wk * (p - tk) for p, wk, tk in zip(ref.params, w, t, strict=True)])
        topt.zero_grad()
        loss = sum(0.5 * (torch.from_numpy(wk) * (x - torch.from_numpy(tk)) ** 2).sum()
                   + penalty * x.abs().sum() for x, wk, tk in zip(tparams, w, t, strict=True))
        loss.backward()
        topt.step()
    for k, x in enumerate(tparams):
        np.testing.assert_allclose(ref.params[k], x.detach().numpy(), rtol=1e-12, atol=1e-14)
        assert np.all(ref.params[k][::6] == 0) and np.all(x.detach().numpy()[::6] == 0)
