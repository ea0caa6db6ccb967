"""Drop-in ``torch.optim`` optimizers whose step is one fused fastopt kernel call per param group.

Each class is a real ``torch.optim.Optimizer`` with torch's constructor signature, defaults,
validation messages, param-group keys and state layout (``state[p]['step']`` a scalar float
tensor, ``'exp_avg'``, ``'exp_avg_sq'``, ``'max_exp_avg_sq'``, ``'momentum_buffer'``,
``'sum'``, ``'square_avg'``, ``'grad_avg'``), so LR schedulers, ``GradScaler``,
``ZeroRedundancyOptimizer`` and checkpoints of the matching ``torch.optim`` class work
unchanged. ``foreach``/``fused``/``capturable`` are accepted and have no effect: the step is
always the fused kernel (host-side scalars, so ``capturable`` buys nothing here).
``differentiable=True`` is refused: the kernels update memory in place outside autograd.

The pointer tables of each group are cached and used only while provably current (see
``fastopt._table``): every step re-reads the params, their state entries and the grads at C
speed, so a storage swap (``p.data = ...``, ``Module.to()``), a replaced or cleared state
entry, a param appended to a group or a loaded checkpoint is noticed, never written through.
Every tensor written gets its autograd version bumped, as torch's in-place ops do.
``state[p]['step']`` of the params stepped together are views into one buffer of the group,
so counting a step is one tensor op; a loaded checkpoint's step tensors are copied into such
a buffer the first time they are stepped.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from itertools import repeat
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import functional as F
from .._table import TableCache
from ._pointers import check_grads

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Lion", "RMSprop"]

#: table slot -> key of torch's per-param state dict
_STATE_KEY = {"state_sum": "sum"}


def _scalar_dtype() -> torch.dtype:
    # as torch.optim.optimizer._get_scalar_dtype
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _f(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


def _check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")


def _check_flags(fused: Any, foreach: Any, differentiable: Any) -> None:
    if differentiable:
        raise ValueError("differentiable=True is not supported: fastopt's fused kernels update "
                         "in place outside autograd (use torch.optim for a differentiable step)")
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


class _Entry:
    """What one param group's steps reuse: the table cache, the step buffer, first-step flags.

    Valid only for the tensors it was made from: `current` re-checks, every step, that the
    group's active params, their state entries and their ``state[p]['step']`` tensors are the
    very objects it holds (the table cache then re-checks their memory, see fastopt._table)."""

    def __init__(self, slots: tuple[str, ...], active: list[int], params: list[Tensor],
                 cache: TableCache, steps: Tensor | None, step_views: list[Tensor],
                 fresh: list[bool]) -> None:
        self.slots = slots
        self.active = active
        self.params = params
        self.cache = cache
        self.steps = steps
        self.step_views = step_views
        self.fresh = fresh  # per active param: state created at this step (SGD first step)
        self.mixed_fresh = len(set(fresh)) > 1

    def current(self, slots: tuple[str, ...], params: list[Tensor],
                step_row: list[Any] | None) -> bool:
        return (slots == self.slots and len(params) == len(self.params)
                and all(map(operator.is_, params, self.params))
                and (step_row is None or all(map(operator.is_, step_row, self.step_views))))


class FusedOptimizer(torch.optim.Optimizer):
    """Base of the fastopt.torch optimizers: the step, the caching, the state layout."""

    op: ClassVar[str]
    has_step: ClassVar[bool] = True  # keeps torch's state['step']
    first_step_flag: ClassVar[bool] = False  # the kernel initializes new state itself (SGD)

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._fo_cache: dict[int, _Entry] = {}
        super().__init__(params, defaults)

    # --- subclass interface -------------------------------------------------------------
    def _slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state tensors this group's options need, named as the kernel's table rows."""
        raise NotImplementedError

    def _init_value(self, slot: str, group: dict[str, Any]) -> float:
        return 0.0

    def _hyper(self, group: dict[str, Any], step: float, fresh: bool) -> dict[str, Any]:
        raise NotImplementedError

    # --- torch.optim.Optimizer overrides ------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._invalidate()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # load_state_dict and copies come through here
        self._invalidate()

    def _invalidate(self) -> None:
        self._fo_cache = {}

    @torch._disable_dynamo
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform a single optimization step (closure: re-evaluates the model, returns the
        loss)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            self._step_group(gi, group)
        return loss

    # --- the step -----------------------------------------------------------------------
    def _step_group(self, gi: int, group: dict[str, Any]) -> None:
        params = group["params"]
        grads = [p.grad for p in params]
        if all(map(operator.is_not, grads, repeat(None))):
            active = range(len(params))
        else:
            active = [i for i, g in enumerate(grads) if g is not None]
            if not active:
                return
            params = [params[i] for i in active]
            grads = [grads[i] for i in active]
        slots = self._slots(group)
        states = list(map(self.state.__getitem__, params))
        rows = {slot: [st.get(_STATE_KEY.get(slot, slot)) for st in states] for slot in slots}
        step_row = [st.get("step") for st in states] if self.has_step else None
        entry = self._fo_cache.get(gi)
        if entry is None or not entry.current(slots, params, step_row) or not all(
                all(map(operator.is_not, row, repeat(None))) for row in rows.values()):
            entry = self._build(group, active, params, slots)
            self._fo_cache[gi] = entry
            rows = {slot: [st[_STATE_KEY.get(slot, slot)] for st in states] for slot in slots}
        try:
            tables = entry.cache.tables({"param": params, "grad": grads, **rows})
        except (TypeError, ValueError):
            check_grads(type(self).__name__, grads, active)  # a clearer error for sparse
            raise
        if entry.steps is not None:
            lo, hi = torch.aminmax(entry.steps)
            step_lo, step_hi = float(lo) + 1, float(hi) + 1
        else:
            step_lo = step_hi = 0.0
        fresh0 = entry.fresh[0]
        uniform = step_lo == step_hi and not entry.mixed_fresh
        if uniform:
            F.run(self.op, tables, None, **self._hyper(group, step_hi, fresh0))
        else:
            self._step_mixed(group, entry, grads, rows)
        if entry.steps is not None:
            entry.steps.add_(1)
        if fresh0 or not uniform:
            entry.fresh = [False] * len(entry.fresh)
            entry.mixed_fresh = False

    def _step_mixed(self, group: dict[str, Any], entry: _Entry, grads: list[Tensor],
                    rows: dict[str, list[Tensor]]) -> None:
        """Params of one group at different step counts (some got gradients later than
        others) or with new and old momentum buffers: one kernel call per kind."""
        steps = entry.steps.tolist() if entry.steps is not None else [0.0] * len(entry.fresh)
        kinds: dict[tuple[float, bool], list[int]] = {}
        for k, (s, fr) in enumerate(zip(steps, entry.fresh, strict=True)):
            kinds.setdefault((s + 1, fr), []).append(k)
        for (step, fr), keep in sorted(kinds.items()):
            arrays: dict[str, Any] = {"param": [entry.params[k] for k in keep],
                                      "grad": [grads[k] for k in keep]}
            for slot in F.SLOTS[self.op][2:]:
                arrays[slot] = [rows[slot][k] for k in keep] if slot in rows else None
            F.run(self.op, F.tables_for(self.op, arrays), None,
                  **self._hyper(group, step, fr))

    def _build(self, group: dict[str, Any], active: list[int], params: list[Tensor],
               slots: tuple[str, ...]) -> _Entry:
        """Create missing state (as torch.optim does: a param whose state was cleared starts
        again at step 0) and a new entry for the group's params with a gradient."""
        fresh = []
        sdtype = _scalar_dtype()
        step_values = []
        for i, p in zip(active, params, strict=True):
            if not slots and not self.has_step:
                fresh.append(False)  # as torch: no state entry at all (SGD without momentum)
                continue
            st = self.state[p]
            new = False
            if self.has_step:
                if "step" not in st:
                    st["step"] = torch.tensor(0.0, dtype=sdtype)
                step_values.append(F.check_step_count(
                    st["step"], f"{type(self).__name__}: state of param {i}"))
            for slot in slots:
                name = _STATE_KEY.get(slot, slot)
                if st.get(name) is None:
                    st[name] = torch.full_like(p, self._init_value(slot, group),
                                               memory_format=torch.preserve_format)
                    new = True
            fresh.append(new and self.first_step_flag)
        steps, step_views = None, []
        if self.has_step:
            # one buffer counts the group's steps: counting a step is one tensor op
            steps = torch.tensor(step_values, dtype=sdtype)
            step_views = [steps[k] for k in range(len(params))]
            for p, view in zip(params, step_views, strict=True):
                self.state[p]["step"] = view
        return _Entry(slots, active, list(params), F.table_cache(self.op, trusted_shapes=True), steps, step_views,
                      fresh)


# --- the optimizers ---------------------------------------------------------------------


class SGD(FusedOptimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov momentum, L2 weight
    decay and maximize; signature, defaults and state as torch.optim.SGD.

        d = -g if maximize else g;  d = d + weight_decay * p
        b = d (first step) or momentum * b + (1 - dampening) * d
        d = d + momentum * b if nesterov else b;  p = p - lr * d

    Nesterov momentum: Sutskever et al., "On the importance of initialization and momentum in
    deep learning", ICML 2013.
    """

    op = "sgd"
    has_step = False
    first_step_flag = True

    def __init__(self, params: Any, lr: float | Tensor = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float | Tensor = 0, nesterov: bool = False,
                 *, maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        _check_lr(lr)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        _check_flags(fused, foreach, differentiable)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)

    def _slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _hyper(self, group: dict[str, Any], step: float, fresh: bool) -> dict[str, Any]:
        return dict(lr=_f(group["lr"]), momentum=_f(group["momentum"]),
                    dampening=_f(group["dampening"]), weight_decay=_f(group["weight_decay"]),
                    nesterov=bool(group["nesterov"]), maximize=bool(group["maximize"]),
                    first_step=fresh)


class Adam(FusedOptimizer):
    """Adam with L2 (or, with decoupled_weight_decay=True, decoupled) weight decay, AMSGrad
    and maximize; signature, defaults and state as torch.optim.Adam.

        g = -g if maximize else g;  g = g + weight_decay * p  (L2)  or
        p = p * (1 - lr * weight_decay)  (decoupled)
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
        v_max = max(v_max, v); v = v_max  (AMSGrad)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; Reddi et al., "On
    the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).
    """

    op = "adam"

    def __init__(self, params: Any, lr: float | Tensor = 1e-3,
                 betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False) -> None:
        _check_lr(lr)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not ((isinstance(betas[0], float) and isinstance(betas[1], float))
                or (isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor))):
            raise ValueError("betas must be either both floats or both Tensors")
        _check_flags(fused, foreach, differentiable)
        betas = (_f(betas[0]), _f(betas[1]))
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("decoupled_weight_decay", False)

    def _slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        base = ("exp_avg", "exp_avg_sq")
        return (*base, "max_exp_avg_sq") if group["amsgrad"] else base

    def _hyper(self, group: dict[str, Any], step: float, fresh: bool) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(step=step, lr=_f(group["lr"]), beta1=_f(beta1), beta2=_f(beta2),
                    eps=_f(group["eps"]), weight_decay=_f(group["weight_decay"]),
                    decoupled=bool(group.get("decoupled_weight_decay", False)),
                    amsgrad=bool(group["amsgrad"]), maximize=bool(group["maximize"]),
                    bias_correction=True, eps_inside_sqrt=False)


class AdamW(Adam):
    """Adam with decoupled weight decay, p = p * (1 - lr * weight_decay) (default 1e-2);
    signature, defaults and state as torch.optim.AdamW.

    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    def __init__(self, params: Any, lr: float | Tensor = 1e-3,
                 betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


class Adagrad(FusedOptimizer):
    """Adagrad with lr decay, L2 weight decay and maximize; signature, defaults and state as
    torch.optim.Adagrad (whose state is created for every param at construction).

        g = -g if maximize else g;  g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay);  s = s + g^2;  p = p - clr * g / (sqrt(s) + eps)

    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011.
    """

    op = "adagrad"

    def __init__(self, params: Any, lr: float | Tensor = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        _check_lr(lr)
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        _check_flags(fused, foreach, differentiable)
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
                state["sum"] = torch.full_like(p, initial_accumulator_value,
                                               memory_format=torch.preserve_format)

    def _slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("state_sum",)

    def _init_value(self, slot: str, group: dict[str, Any]) -> float:
        return _f(group["initial_accumulator_value"])

    def _hyper(self, group: dict[str, Any], step: float, fresh: bool) -> dict[str, Any]:
        return dict(step=step, lr=_f(group["lr"]), lr_decay=_f(group["lr_decay"]),
                    weight_decay=_f(group["weight_decay"]), eps=_f(group["eps"]),
                    maximize=bool(group["maximize"]))


class RMSprop(FusedOptimizer):
    """RMSprop, optionally centered and with momentum; signature, defaults and state as
    torch.optim.RMSprop.

        g = -g if maximize else g;  g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g^2;  ga = alpha * ga + (1 - alpha) * g  (centered)
        avg = sqrt(s - ga^2) + eps (centered) or sqrt(s) + eps
        b = momentum * b + g / avg; p = p - lr * b  (momentum > 0), else p = p - lr * g / avg

    Hinton, "Neural Networks for Machine Learning", lecture 6e, 2012; centered: Graves,
    "Generating Sequences With Recurrent Neural Networks", 2013.
    """

    op = "rmsprop"

    def __init__(self, params: Any, lr: float | Tensor = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False) -> None:
        _check_lr(lr)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        _check_flags(None, foreach, differentiable)
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)
            group.setdefault("maximize", False)

    def _slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        slots: tuple[str, ...] = ("square_avg",)
        if group["momentum"] > 0:
            slots += ("momentum_buffer",)
        if group["centered"]:
            slots += ("grad_avg",)
        return slots

    def _hyper(self, group: dict[str, Any], step: float, fresh: bool) -> dict[str, Any]:
        return dict(lr=_f(group["lr"]), alpha=_f(group["alpha"]), eps=_f(group["eps"]),
                    weight_decay=_f(group["weight_decay"]), momentum=_f(group["momentum"]),
                    centered=bool(group["centered"]), maximize=bool(group["maximize"]))


class Lion(FusedOptimizer):
    """Lion (EvoLved Sign Momentum) with decoupled weight decay and the paper's defaults
    (lr=1e-4, betas=(0.9, 0.99)); state: 'exp_avg'.

        g = -g if maximize else g;  p = p * (1 - lr * weight_decay)
        p = p - lr * sign(beta1 * m + (1 - beta1) * g);  m = beta2 * m + (1 - beta2) * g

    Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """

    op = "lion"
    has_step = False

    def __init__(self, params: Any, lr: float | Tensor = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        _check_lr(lr)
        if not 0.0 <= betas[0] <= 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] <= 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay < math.inf:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        _check_flags(fused, foreach, differentiable)
        defaults = dict(lr=lr, betas=(_f(betas[0]), _f(betas[1])), weight_decay=weight_decay,
                        maximize=maximize, foreach=foreach, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults)

    def _slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg",)

    def _hyper(self, group: dict[str, Any], step: float, fresh: bool) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(lr=_f(group["lr"]), beta1=_f(beta1), beta2=_f(beta2),
                    weight_decay=_f(group["weight_decay"]), maximize=bool(group["maximize"]))
