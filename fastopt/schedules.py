"""Learning-rate schedules for every fastopt optimizer.

A schedule is a small, immutable object mapping ``(step, base_lr) -> lr`` in closed form (float64
Python floats). :class:`LRScheduler` applies one to any optimizer exposing ``param_groups``, a
list of dicts with an ``'lr'`` key, and so works with fastopt and torch optimizers alike::

    sched = LRScheduler(opt, Warmup(100, then=Cosine(T_max=900)))
    for batch in data:
        opt.step(...)
        sched.step()

Defaults and formulas follow ``torch.optim.lr_scheduler``. Torch updates most lrs recursively
(``lr_t = f(lr_{t-1})``); the closed forms here agree with it to rounding, and do not drift.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "Schedule",
    "Constant",
    "Step",
    "MultiStep",
    "Exponential",
    "Linear",
    "Cosine",
    "Polynomial",
    "OneCycle",
    "Warmup",
    "LRScheduler",
]


def _int(name: str, value: Any, minimum: int) -> int:
    # operator.index accepts Python and NumPy integers but not floats or strings.
    try:
        if isinstance(value, bool):
            raise TypeError
        ivalue = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if ivalue < minimum:
        bound = "non-negative" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return ivalue


def _real(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf,
          lo_open: bool = False) -> float:
    try:
        fvalue = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    # NaN fails every comparison, so it is rejected too.
    ok = (lo < fvalue if lo_open else lo <= fvalue) and fvalue <= hi
    if not ok:
        lo_s = f"{'>' if lo_open else '>='} {lo}" if lo > -math.inf else ""
        hi_s = f"<= {hi}" if hi < math.inf else ""
        raise ValueError(f"{name} must be {' and '.join(s for s in (lo_s, hi_s) if s)}, "
                         f"got {value!r}")
    return fvalue


def _step(step: int) -> int:
    return _int("step", step, 0)


class Schedule(Protocol):
    """Anything callable as ``schedule(step, base_lr) -> lr``; every class here is one."""

    def __call__(self, step: int, base_lr: float) -> float: ...


@dataclass(frozen=True)
class Constant:
    """``lr = base_lr * factor`` while ``step < total_iters``, then ``base_lr``.

    torch ConstantLR; ``factor`` in [0, 1].
    """

    factor: float = 1.0 / 3
    total_iters: int = 5

    def __post_init__(self) -> None:
        _real("factor", self.factor, 0.0, 1.0)
        _int("total_iters", self.total_iters, 0)

    def __call__(self, step: int, base_lr: float) -> float:
        return base_lr * self.factor if _step(step) < self.total_iters else float(base_lr)


@dataclass(frozen=True)
class Step:
    """``lr = base_lr * gamma ** (step // step_size)`` (torch StepLR)."""

    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _int("step_size", self.step_size, 1)
        _real("gamma", self.gamma, 0.0, lo_open=True)

    def __call__(self, step: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (_step(step) // self.step_size)


@dataclass(frozen=True)
class MultiStep:
    """``lr = base_lr * gamma ** (number of milestones <= step)`` (torch MultiStepLR).

    A milestone listed twice decays twice, as in torch.
    """

    milestones: Sequence[int]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        ms = tuple(sorted(_int("milestone", m, 0) for m in self.milestones))
        object.__setattr__(self, "milestones", ms)  # a tuple keeps the dataclass hashable
        _real("gamma", self.gamma, 0.0, lo_open=True)

    def __call__(self, step: int, base_lr: float) -> float:
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, _step(step))


@dataclass(frozen=True)
class Exponential:
    """``lr = base_lr * gamma ** step`` (torch ExponentialLR)."""

    gamma: float

    def __post_init__(self) -> None:
        _real("gamma", self.gamma, 0.0, lo_open=True)

    def __call__(self, step: int, base_lr: float) -> float:
        return base_lr * self.gamma ** _step(step)


@dataclass(frozen=True)
class Linear:
    """``lr = base_lr * (s + (e - s) * min(step, total_iters) / total_iters)`` (torch LinearLR).

    ``s = start_factor`` in (0, 1], ``e = end_factor`` in [0, 1].
    """

    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_iters: int = 5

    def __post_init__(self) -> None:
        _real("start_factor", self.start_factor, 0.0, 1.0, lo_open=True)
        _real("end_factor", self.end_factor, 0.0, 1.0)
        _int("total_iters", self.total_iters, 1)

    def __call__(self, step: int, base_lr: float) -> float:
        frac = min(_step(step), self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


@dataclass(frozen=True)
class Cosine:
    """Cosine annealing (torch CosineAnnealingLR, closed form; no restarts).

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2``; past ``T_max`` the
    cosine keeps going, rising back towards ``base_lr`` as in torch.

    Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    """

    T_max: int
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        _int("T_max", self.T_max, 1)
        _real("eta_min", self.eta_min, 0.0)

    def __call__(self, step: int, base_lr: float) -> float:
        cos = math.cos(math.pi * _step(step) / self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * (1.0 + cos) / 2.0


@dataclass(frozen=True)
class Polynomial:
    """``lr = base_lr * (1 - min(step, total_iters) / total_iters) ** power``.

    torch PolynomialLR: decays to 0 at ``total_iters`` and stays there.
    """

    total_iters: int = 5
    power: float = 1.0

    def __post_init__(self) -> None:
        _int("total_iters", self.total_iters, 1)
        _real("power", self.power, 0.0)

    def __call__(self, step: int, base_lr: float) -> float:
        return base_lr * (1.0 - min(_step(step), self.total_iters) / self.total_iters) ** self.power


@dataclass(frozen=True)
class OneCycle:
    """The 1cycle policy (torch OneCycleLR, lr only; ``base_lr`` is ignored).

    With ``initial = max_lr / div_factor`` and ``min_lr = initial / final_div_factor``, lr anneals
    ``initial -> max_lr`` over steps ``[0, pct_start * total_steps - 1]``, then ``max_lr ->
    min_lr`` until step ``total_steps - 1``. With ``three_phase`` it goes ``initial -> max_lr ->
    initial`` symmetrically and then ``initial -> min_lr``. Annealing from ``a`` to ``b`` at
    fraction ``p`` is ``b + (a - b) * (1 + cos(pi * p)) / 2`` ("cos") or ``a + (b - a) * p``
    ("linear"). Steps beyond ``total_steps`` raise ``ValueError``, as in torch.

    Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
    Learning Rates", 2019.
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    _phases: tuple[tuple[float, float, float], ...] = field(init=False, repr=False,
                                                            compare=False)

    def __post_init__(self) -> None:
        _real("max_lr", self.max_lr, 0.0, lo_open=True)
        n = _int("total_steps", self.total_steps, 1)
        pct = _real("pct_start", self.pct_start, 0.0, 1.0)
        if self.anneal_strategy not in ("cos", "linear"):
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', "
                             f"got {self.anneal_strategy!r}")
        _real("div_factor", self.div_factor, 0.0, lo_open=True)
        _real("final_div_factor", self.final_div_factor, 0.0, lo_open=True)
        initial = self.max_lr / self.div_factor
        min_lr = initial / self.final_div_factor
        # (end_step, start_lr, end_lr); float end steps exactly as torch computes them.
        if self.three_phase:
            phases = ((pct * n - 1, initial, self.max_lr),
                      (2 * pct * n - 2, self.max_lr, initial),
                      (n - 1, initial, min_lr))
        else:
            phases = ((pct * n - 1, initial, self.max_lr), (n - 1, self.max_lr, min_lr))
        object.__setattr__(self, "_phases", phases)

    def __call__(self, step: int, base_lr: float = 0.0) -> float:
        step = _step(step)
        if step > self.total_steps:
            raise ValueError(f"OneCycle: step {step} is beyond total_steps={self.total_steps}")
        begin = 0.0
        for i, (end, a, b) in enumerate(self._phases):
            if step <= end or i == len(self._phases) - 1:
                # A zero-length phase (torch divides by zero here) is already complete.
                p = (step - begin) / (end - begin) if end != begin else 1.0
                if self.anneal_strategy == "cos":
                    return b + (a - b) / 2.0 * (math.cos(math.pi * p) + 1.0)
                return (b - a) * p + a
            begin = end
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Warmup:
    """Linear warmup, then any other schedule.

    ``lr = base_lr * (start_factor + (1 - start_factor) * step / warmup_steps)`` for
    ``step < warmup_steps``, then ``then(step - warmup_steps, base_lr)``, so ``then`` starts
    from its own step 0 (as torch SequentialLR with milestones=[warmup_steps]).
    """

    warmup_steps: int
    then: Schedule
    start_factor: float = 0.0

    def __post_init__(self) -> None:
        _int("warmup_steps", self.warmup_steps, 0)
        if not callable(self.then):
            raise ValueError(f"then must be a schedule, got {self.then!r}")
        _real("start_factor", self.start_factor, 0.0, 1.0)

    def __call__(self, step: int, base_lr: float) -> float:
        step = _step(step)
        if step >= self.warmup_steps:
            return self.then(step - self.warmup_steps, base_lr)
        frac = step / self.warmup_steps
        return base_lr * (self.start_factor + (1.0 - self.start_factor) * frac)


class LRScheduler:
    """Drives ``optimizer.param_groups[i]['lr']`` with a schedule: ``lr_i = schedule(t, base_i)``.

    ``base_i`` is the group's ``'initial_lr'`` (set from its ``'lr'`` if absent, as torch does,
    so stacking schedulers on one optimizer keeps the original base). Construction writes the
    step-0 lrs; each :meth:`step` (called after ``optimizer.step()``) advances ``last_epoch``.
    """

    def __init__(self, optimizer: Any, schedule: Schedule) -> None:
        if not callable(schedule):
            raise ValueError(f"schedule must be callable as schedule(step, base_lr), "
                             f"got {schedule!r}")
        self.optimizer = optimizer
        self.schedule = schedule
        self.base_lrs: list[float] = [
            float(group.setdefault("initial_lr", group["lr"])) for group in optimizer.param_groups
        ]
        self._apply(0)

    def _apply(self, epoch: int) -> None:
        # every lr computed before anything changes: a schedule that raises (OneCycle past
        # total_steps) leaves the scheduler and the optimizer as they were
        lrs = [self.schedule(epoch, b) for b in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self.last_epoch, self._last_lr = epoch, lrs

    def step(self) -> None:
        """Advance one step and write every group's lr."""
        self._apply(self.last_epoch + 1)

    def get_last_lr(self) -> list[float]:
        """The lrs last written, one per param group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Progress only: the schedule itself is code, rebuilt by the caller."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore progress and the base lrs, and rewrite the groups' lrs and ``'initial_lr'``
        (the schedule is stateless, so this is exact whichever of optimizer and scheduler is
        loaded first, and a scheduler stacked later starts from the restored base)."""
        missing = [k for k in ("last_epoch", "base_lrs") if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict lacks {', '.join(missing)}")
        base_lrs = [float(b) for b in state_dict["base_lrs"]]
        if len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"state_dict has {len(base_lrs)} base lrs but the optimizer has "
                             f"{len(self.optimizer.param_groups)} param groups")
        epoch = _int("last_epoch", state_dict["last_epoch"], 0)
        before = self.base_lrs
        self.base_lrs = base_lrs
        try:
            self._apply(epoch)
        except Exception:
            self.base_lrs = before
            raise
        for group, base in zip(self.optimizer.param_groups, base_lrs, strict=True):
            group["initial_lr"] = base

    def __repr__(self) -> str:
        return f"LRScheduler(schedule={self.schedule!r}, last_epoch={self.last_epoch})"

