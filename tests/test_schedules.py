"""fastopt.schedules against torch.optim.lr_scheduler, plus argument checks and state round-trip."""

from __future__ import annotations

import copy
import importlib.util
import math
import pathlib
import pickle

import numpy as np
import pytest

try:
    from fastopt import schedules as S
except Exception:  # the package __init__ may not import yet while it is being built
    _path = pathlib.Path(__file__).resolve().parents[1] / "fastopt" / "schedules.py"
    _spec = importlib.util.spec_from_file_location("fastopt_schedules", _path)
    S = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(S)

N_STEPS = 60
BASE_LRS = (0.1, 0.01)


class FakeOptimizer:
    """Stand-in for any fastopt optimizer: only param_groups matters to a scheduler."""

    def __init__(self) -> None:
        self.param_groups = [{"lr": lr} for lr in BASE_LRS]


def fastopt_lrs(schedule, n_steps=N_STEPS):
    opt = FakeOptimizer()
    sched = S.LRScheduler(opt, schedule)
    out = []
    for t in range(n_steps):
        if t:
            sched.step()
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs == sched.get_last_lr() and sched.last_epoch == t
        out.append(lrs)
    return np.array(out)


def torch_lrs(make, n_steps=N_STEPS):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    q = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": BASE_LRS[0]},
                           {"params": [q], "lr": BASE_LRS[1]}])
    sched = make(opt)
    out = []
    for _ in range(n_steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return np.array(out)


def assert_close(ours, ref):
    # torch updates most lrs recursively (lr_t = f(lr_{t-1})); our closed forms agree to rounding.
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=0)


def _L():
    return pytest.importorskip("torch").optim.lr_scheduler


CASES = {
    "constant": (S.Constant(), lambda o: _L().ConstantLR(o)),
    "constant_half": (S.Constant(0.5, 10), lambda o: _L().ConstantLR(o, 0.5, 10)),
    "step": (S.Step(7, 0.5), lambda o: _L().StepLR(o, 7, 0.5)),
    "multistep": (S.MultiStep([30, 5, 12, 12], 0.3),
                  lambda o: _L().MultiStepLR(o, [30, 5, 12, 12], 0.3)),
    "exponential": (S.Exponential(0.93), lambda o: _L().ExponentialLR(o, 0.93)),
    "linear": (S.Linear(), lambda o: _L().LinearLR(o)),
    "linear_decay": (S.Linear(1.0, 0.05, 40), lambda o: _L().LinearLR(o, 1.0, 0.05, 40)),
    "cosine": (S.Cosine(25), lambda o: _L().CosineAnnealingLR(o, 25)),
    "cosine_eta_min": (S.Cosine(17, 1e-3), lambda o: _L().CosineAnnealingLR(o, 17, 1e-3)),
    "polynomial": (S.Polynomial(), lambda o: _L().PolynomialLR(o)),
    "polynomial_sq": (S.Polynomial(45, 2.0), lambda o: _L().PolynomialLR(o, 45, 2.0)),
    "polynomial_sqrt": (S.Polynomial(30, 0.5), lambda o: _L().PolynomialLR(o, 30, 0.5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch(name):
    ours, make = CASES[name]
    assert_close(fastopt_lrs(ours), torch_lrs(make))


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("pct_start", [0.3, 0.25])
def test_one_cycle_matches_torch(three_phase, strategy, pct_start):
    kw = dict(max_lr=0.5, total_steps=N_STEPS, pct_start=pct_start, anneal_strategy=strategy,
              div_factor=10.0, final_div_factor=100.0, three_phase=three_phase)
    ref = torch_lrs(lambda o: _L().OneCycleLR(o, cycle_momentum=False, **kw))
    # torch allows stepping to total_steps inclusive, and so do we.
    ours = fastopt_lrs(S.OneCycle(**kw), N_STEPS + 1)
    assert_close(ours[:N_STEPS], ref)
    assert ours[0, 0] == ours[0, 1] == pytest.approx(0.05)  # max_lr / div_factor; base ignored


def test_one_cycle_past_total_steps_raises():
    sched = S.LRScheduler(FakeOptimizer(), S.OneCycle(1.0, total_steps=3))
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total_steps"):
        sched.step()


@pytest.mark.parametrize("warmup", [1, 5, 10])
def test_warmup_cosine_matches_torch_sequential(warmup):
    # SequentialLR restarts the second scheduler at its epoch 0 at the milestone, which is
    # exactly Warmup's then(step - warmup_steps). LinearLR needs start_factor > 0.
    def make(o):
        L = _L()
        return L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, warmup), L.CosineAnnealingLR(o, 30)],
                              milestones=[warmup])

    ours = S.Warmup(warmup, S.Cosine(30), start_factor=0.1)
    assert_close(fastopt_lrs(ours), torch_lrs(make))


@pytest.mark.parametrize("warmup", [1, 4])
def test_warmup_then_a_schedule_not_starting_at_the_base_lr(warmup):
    # the follow-on schedule's own step 0 lands exactly at warmup_steps, and its first lr
    # (start_factor * base) is not the base lr the warmup ends on
    def make(o):
        L = _L()
        return L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, warmup), L.LinearLR(o, 0.5, 0.2, 9)],
                              milestones=[warmup])

    ours = S.Warmup(warmup, S.Linear(0.5, 0.2, 9), start_factor=0.1)
    assert_close(fastopt_lrs(ours), torch_lrs(make))
    assert ours(warmup, 1.0) == 0.5


def test_warmup_formula():
    # start_factor=0 (our default) has no torch counterpart (LinearLR rejects it): check the
    # float64 formula directly.
    then = S.Step(4, 0.5)
    w = S.Warmup(8, then)
    for t in range(N_STEPS):
        expect = 0.3 * t / 8 if t < 8 else 0.3 * 0.5 ** ((t - 8) // 4)
        assert w(t, 0.3) == pytest.approx(expect, rel=1e-12, abs=0)
    assert S.Warmup(0, then)(5, 0.3) == then(5, 0.3)
    constant = S.Warmup(3, S.Constant(0.25, 2))
    assert [constant(t, 1.0) for t in range(7)] == [0.0, 1 / 3, 2 / 3, 0.25, 0.25, 1.0, 1.0]


def test_closed_forms():
    assert S.Cosine(10)(5, 2.0) == pytest.approx(1.0)
    assert S.Cosine(10, 0.5)(10, 2.0) == pytest.approx(0.5)
    assert S.Polynomial(10, 2.0)(5, 1.0) == pytest.approx(0.25)
    assert S.Polynomial(10)(99, 1.0) == 0.0
    assert S.Exponential(0.5)(3, 8.0) == 1.0
    assert S.MultiStep((3, 3))(3, 1.0) == pytest.approx(0.01)  # duplicate milestone: twice
    assert S.Linear(0.5, 1.0, 4)(2, 1.0) == pytest.approx(0.75)
    assert isinstance(S.Step(2)(np.int64(3), 1), float)


BAD = [
    (lambda: S.Constant(factor=1.5), "factor"),
    (lambda: S.Constant(total_iters=-1), "total_iters"),
    (lambda: S.Step(0), "step_size"),
    (lambda: S.Step(2.5), "step_size"),
    (lambda: S.Step(3, gamma=0.0), "gamma"),
    (lambda: S.MultiStep([2, -1]), "milestone"),
    (lambda: S.Exponential(-0.9), "gamma"),
    (lambda: S.Exponential(math.nan), "gamma"),
    (lambda: S.Linear(start_factor=0.0), "start_factor"),
    (lambda: S.Linear(end_factor=1.1), "end_factor"),
    (lambda: S.Linear(total_iters=0), "total_iters"),
    (lambda: S.Cosine(0), "T_max"),
    (lambda: S.Cosine(10, eta_min=-1.0), "eta_min"),
    (lambda: S.Polynomial(total_iters=0), "total_iters"),
    (lambda: S.Polynomial(power=-1.0), "power"),
    (lambda: S.OneCycle(0.0, 10), "max_lr"),
    (lambda: S.OneCycle(1.0, 0), "total_steps"),
    (lambda: S.OneCycle(1.0, 10, pct_start=1.5), "pct_start"),
    (lambda: S.OneCycle(1.0, 10, anneal_strategy="exp"), "anneal_strategy"),
    (lambda: S.OneCycle(1.0, 10, div_factor=0.0), "div_factor"),
    (lambda: S.Warmup(-1, S.Cosine(5)), "warmup_steps"),
    (lambda: S.Warmup(5, None), "then"),
    (lambda: S.Warmup(5, S.Cosine(5), start_factor=2.0), "start_factor"),
    (lambda: S.Cosine(5)(-1, 0.1), "step"),
    (lambda: S.Step(2)(1.5, 0.1), "step"),
    (lambda: S.LRScheduler(FakeOptimizer(), "cosine"), "schedule"),
]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_arguments_raise(i):
    make, name = BAD[i]
    with pytest.raises(ValueError, match=name):
        make()


def test_schedules_are_frozen_hashable_picklable():
    s = S.Warmup(3, S.OneCycle(1.0, 20))
    with pytest.raises(AttributeError):
        s.warmup_steps = 4
    assert hash(s) == hash(S.Warmup(3, S.OneCycle(1.0, 20)))
    assert pickle.loads(pickle.dumps(s)) == s
    assert S.MultiStep([5, 2]).milestones == (2, 5)


def test_state_dict_round_trip():
    schedule = S.Warmup(5, S.Cosine(20, 1e-4))
    opt = FakeOptimizer()
    sched = S.LRScheduler(opt, schedule)
    for _ in range(12):
        sched.step()
    state = copy.deepcopy(sched.state_dict())
    assert state == {"last_epoch": 12, "base_lrs": list(BASE_LRS)}
    expected_next = (sched.step(), sched.get_last_lr())[1]

    # Resume in a fresh process: new optimizer (already carrying its checkpointed lrs or not).
    opt2 = FakeOptimizer()
    sched2 = S.LRScheduler(opt2, schedule)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 12
    assert [g["lr"] for g in opt2.param_groups] == [schedule(12, b) for b in BASE_LRS]
    sched2.step()
    assert sched2.get_last_lr() == expected_next

    with pytest.raises(ValueError, match="param groups"):
        sched2.load_state_dict({"last_epoch": 1, "base_lrs": [0.1]})
    with pytest.raises(ValueError, match="base_lrs"):
        sched2.load_state_dict({"last_epoch": 1})


def test_state_dict_restores_the_saved_base_lrs():
    """A resumed run's optimizer is built with other lrs (a new config, or the lrs the
    schedule had reached): the schedule continues from the checkpoint's base lrs."""
    schedule = S.Warmup(3, S.Cosine(20, 1e-4))
    sched = S.LRScheduler(FakeOptimizer(), schedule)
    for _ in range(7):
        sched.step()
    state = copy.deepcopy(sched.state_dict())

    opt2 = FakeOptimizer()
    for group, lr in zip(opt2.param_groups, (0.5, 0.2), strict=True):
        group["lr"] = lr
    sched2 = S.LRScheduler(opt2, schedule)
    assert sched2.base_lrs == [0.5, 0.2]
    sched2.load_state_dict(state)
    assert sched2.base_lrs == list(BASE_LRS)
    assert [g["lr"] for g in opt2.param_groups] == [schedule(7, b) for b in BASE_LRS]
    # a scheduler stacked afterwards starts from the restored base as well
    assert [g["initial_lr"] for g in opt2.param_groups] == list(BASE_LRS)
    assert S.LRScheduler(opt2, S.Exponential(0.5)).base_lrs == list(BASE_LRS)
    sched2.step()
    assert sched2.get_last_lr() == [schedule(8, b) for b in BASE_LRS]


def test_a_step_that_raises_changes_nothing():
    opt = FakeOptimizer()
    sched = S.LRScheduler(opt, S.OneCycle(1.0, total_steps=2))
    sched.step()
    sched.step()
    lrs, state = sched.get_last_lr(), sched.state_dict()
    with pytest.raises(ValueError, match="total_steps"):
        sched.step()
    assert sched.state_dict() == state and sched.get_last_lr() == lrs
    assert [g["lr"] for g in opt.param_groups] == lrs
    with pytest.raises(ValueError, match="total_steps"):
        sched.load_state_dict({"last_epoch": 5, "base_lrs": list(BASE_LRS)})
    assert sched.state_dict() == state


def test_initial_lr_is_kept_across_schedulers():
    opt = FakeOptimizer()
    S.LRScheduler(opt, S.Constant(0.5, 3))
    sched = S.LRScheduler(opt, S.Exponential(0.5))  # base is the original lr, not lr * 0.5
    assert sched.base_lrs == list(BASE_LRS)
    assert [g["initial_lr"] for g in opt.param_groups] == list(BASE_LRS)
