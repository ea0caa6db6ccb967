"""L1 regularization in every fastopt.reference optimizer (fastopt/reference/_io.py).

coupled:  the gradient gets l1 * sign(p) right after the maximize negation, before the op's own
          weight decay: SGD is then torch.optim.SGD on loss + l1 |p|.sum() through autograd,
          and every op is that op given grad + l1 sign(p) by hand.
proximal: after the update, p = sign(p) max(|p| - lr l1, 0): exact zeros, and the hand soft
          threshold of the plain update.
"""

import inspect
import math

import numpy as np
import pytest
import torch
from reference_steps import ReferenceOptimizer, state_slots
from trajectories import grad_stream, initial_params

from fastopt import reference

SIZES = (1, 7, 4097)
SHAPES = [(n,) for n in SIZES]

#: Every optimizer, with the options that meet the L1 term (weight decay, momentum, ...) on.
EVERY_OP = [
    ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("adam", dict(lr=1e-2, weight_decay=0.01, amsgrad=True)),
    ("adam", dict(lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True)),
    ("adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.01)),
    ("rmsprop", dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=0.01)),
    ("lion", dict(lr=1e-2, weight_decay=0.01)),
    ("nadam", dict(lr=1e-2, weight_decay=0.01)),
    ("radam", dict(lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True)),
    ("adamax", dict(lr=1e-2, weight_decay=0.01)),
    ("adadelta", dict(weight_decay=0.01)),
]
OPS = sorted({op for op, _ in EVERY_OP})


def case_id(case) -> str:
    op, hyper = case
    return op + "-" + "-".join(f"{k}={v}" for k, v in hyper.items())


def lr_of(op: str, hyper: dict) -> float:
    return hyper.get("lr", inspect.signature(getattr(reference, op)).parameters["lr"].default)


def assert_same(a: ReferenceOptimizer, b: ReferenceOptimizer, what: str) -> None:
    """Bit for bit: the two runs apply the same float64 operations in the same order."""
    for k in range(len(a.params)):
        np.testing.assert_array_equal(a.params[k], b.params[k], f"{what}: param[{k}]")
        for s in a.state:
            np.testing.assert_array_equal(a.state[s][k], b.state[s][k], f"{what}: {s}[{k}]")


@pytest.mark.parametrize("hyper", [dict(lr=0.05),
                                   dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.1),
                                   dict(lr=0.02, momentum=0.8, dampening=0.2, maximize=True)],
                         ids=str)
def test_coupled_sgd_is_torch_sgd_on_the_penalized_loss(hyper):
    """torch.optim.SGD on 0.5 sum w (p - t)^2 + l1 sum |p| through autograd (whose abs has
    gradient 0 at 0). Maximizing, the penalty still shrinks p: the objective is f - l1 |p|."""
    l1 = 0.3
    rng = np.random.default_rng(5)
    t = [rng.standard_normal(n) for n in SIZES]
    w = [rng.uniform(0.5, 2.0, n) for n in SIZES]
    start = initial_params(SHAPES, np.float64, seed=5)
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


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("case", EVERY_OP, ids=case_id)
def test_coupled_is_the_op_given_grad_plus_l1_sign_p(case, maximize):
    op, hyper = case
    l1 = 0.05
    start = initial_params(SHAPES, np.float64, seed=2)
    for p in start:
        p[::4] = 0.0
    coupled = ReferenceOptimizer(op, [p.copy() for p in start], **hyper, maximize=maximize,
                                 l1=l1)
    by_hand = ReferenceOptimizer(op, [p.copy() for p in start], **hyper, maximize=maximize)
    # maximize negates the gradient it is given; the penalty is added after: g - l1 sign(p)
    # given is -g + l1 sign(p) taken, exactly (rounding is symmetric)
    penalty = -l1 if maximize else l1
    for grads in grad_stream(SHAPES, np.float64, 20, seed=3, scale=0.1):
        coupled.step(grads)
        by_hand.step([g + penalty * np.sign(p) for g, p in zip(grads, by_hand.params,
                                                               strict=True)])
    assert_same(coupled, by_hand, case_id(case))


@pytest.mark.parametrize("case", EVERY_OP, ids=case_id)
def test_coupled_subgradient_is_zero_at_zero(case):
    op, hyper = case
    grads = next(grad_stream(SHAPES, np.float64, 1, seed=4))
    runs = [ReferenceOptimizer(op, [np.zeros(n) for n in SIZES], **hyper, l1=l1)
            for l1 in (0.0, 0.5)]
    for run in runs:
        run.step(grads)
    assert_same(*runs, case_id(case))


@pytest.mark.parametrize("case", EVERY_OP, ids=case_id)
def test_proximal_is_the_soft_threshold_of_the_plain_step(case):
    op, hyper = case
    l1 = 0.05 / lr_of(op, hyper)
    tau = lr_of(op, hyper) * l1
    rng = np.random.default_rng(6)
    start = [0.05 * rng.standard_normal(n) for n in SIZES]  # most |p| < tau, but
    for p in start:
        p[::2] *= 20  # half of them: the shifted side of the threshold is exercised too
    prox = ReferenceOptimizer(op, [p.copy() for p in start], **hyper, l1=l1,
                              l1_mode="proximal")
    by_hand = ReferenceOptimizer(op, [p.copy() for p in start], **hyper)
    for grads in grad_stream(SHAPES, np.float64, 10, seed=7, scale=0.1):
        prox.step(grads)
        by_hand.step(grads)
        for p in by_hand.params:
            p[...] = np.where(np.abs(p) <= tau, 0.0, p - tau * np.sign(p))
    assert_same(prox, by_hand, case_id(case))
    zeros = sum(int(np.count_nonzero(p == 0)) for p in prox.params)
    assert sum(SIZES) // 4 < zeros < sum(SIZES) * 3 // 4, f"{case_id(case)}: {zeros} zeros"


def test_proximal_keeps_nan_and_inf():
    p = np.array([np.nan, np.inf, -np.inf, 0.01, -0.01, 1.0])
    reference.sgd(p, np.zeros(6), lr=0.1, l1=0.5, l1_mode="proximal")
    np.testing.assert_array_equal(p, [np.nan, np.inf, -np.inf, 0.0, 0.0, 0.95])


@pytest.mark.parametrize("kw, error, match", [
    (dict(l1=-0.1), ValueError, "^l1: expected a finite value >= 0, got -0.1"),
    (dict(l1=math.nan), ValueError, "^l1: .* got nan"),
    (dict(l1=math.inf, l1_mode="proximal"), ValueError, "^l1: .* got inf"),
    (dict(l1="0.1"), TypeError, "^l1: expected a real number, got str"),
    (dict(l1=True), TypeError, "^l1: expected a real number, got bool"),
    (dict(l1=0.1, l1_mode="lasso"), ValueError, "^l1_mode: expected one of"),
    (dict(l1_mode=None), ValueError, "^l1_mode: .* got None"),
], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_invalid_l1_raises_and_writes_nothing(op, kw, error, match):
    start = initial_params(SHAPES, np.float32, seed=8)
    opt = ReferenceOptimizer(op, [p.copy() for p in start], **kw)
    with pytest.raises(error, match=match):
        opt.step(next(grad_stream(SHAPES, np.float32, 1)))
    for k, p in enumerate(start):
        np.testing.assert_array_equal(opt.params[k], p)
        for s in state_slots(op):
            assert not np.any(opt.state[s][k]), f"{op}: {s}[{k}] written"
