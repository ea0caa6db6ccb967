"""Drop-in ``torch.optim`` optimizers whose step is one fused fastopt kernel call per param group.

SGD, Adam, AdamW, Adagrad and RMSprop subclass the matching ``torch.optim`` class and keep its
constructor, defaults, argument checks, error messages, ``__setstate__`` (which fills the
defaults missing from older checkpoints), param-group keys and state layout
(``state[p]['step']`` a scalar float tensor, ``'exp_avg'``, ``'exp_avg_sq'``,
``'max_exp_avg_sq'``, ``'momentum_buffer'``, ``'sum'``, ``'square_avg'``, ``'grad_avg'``), so LR
schedulers, ``GradScaler``, ``ZeroRedundancyOptimizer`` and checkpoints of the torch class work
unchanged, in both directions. Only ``step`` is fastopt's: ``foreach``/``fused``/``capturable``
do not change it (host-side scalars, so ``capturable`` buys nothing here), and ``GradScaler``
unscales the gradients before it (the kernels take no grad scale).

What the kernels take, they step in place: real float params of the dtypes their device's
backend supports (float32/float64 on the CPU), in any dense layout (C order, transposed,
channels_last) shared by param, grad and state. What they do not take is still stepped, never
refused:

- complex params: as their real view (``torch.view_as_real`` of param, grad and state), as
  torch does; the state stays complex, torch's layout;
- strided layouts (a param ``big[:, ::2]``, a grad or state laid out unlike its param): through
  contiguous copies, stepped, then copied back into the user's tensors;
- anything else torch.optim accepts (``differentiable=True``, sparse gradients, float16 or
  bfloat16 on the CPU, a device without a fastopt backend): that group (or those params) run
  the torch class's own implementation on the same state dicts, with a one-time warning naming
  why.

Which path a param takes is decided when the group's entry is built, not per tensor per step.
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
import sys
import warnings
from collections.abc import Callable
from itertools import repeat
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import backends
from .. import functional as F
from .._arrays import describe
from .._table import SUPPORTED_DTYPES, TableCache
from ._state import ParamState, TrackedState

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Lion", "RMSprop"]

#: table slot -> key of torch's per-param state dict
_STATE_KEY = {"state_sum": "sum"}


def _scalar_dtype() -> torch.dtype:
    # as torch.optim.optimizer._get_scalar_dtype
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _f(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


_grad_of = operator.attrgetter("grad")


def _column(states: list[dict[str, Any]], key: str) -> list[Any]:
    """states[i][key] for every i (None where missing), in one C-level pass when none is."""
    try:
        return list(map(operator.itemgetter(key), states))
    except KeyError:
        return [st.get(key) for st in states]


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _kernel_arrays(p: Tensor, g: Tensor, states: list[Tensor | None],
                   back: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, list]:
    """One param's tensors as a kernel can walk them flat: complex ones as their real view,
    and any layout the kernel cannot step in place (a strided param; a grad or state laid out
    unlike its param) as an exact copy in the param's (dense) layout. Appends to `back` the
    pairs (user's tensor, copy) to copy back after the step. A tensor of another shape or dtype
    is passed on as it is, for the kernel's validation to name."""
    kp = _real(p)
    ref = describe(kp)
    if not ref.dense:
        tmp = kp.contiguous()
        back.append((kp, tmp))
        kp, ref = tmp, describe(tmp)

    def like(t: Tensor | None, written: bool) -> Tensor | None:
        if t is None or t.layout != torch.strided:
            return t
        t = _real(t)
        if t.shape != kp.shape or t.dtype != kp.dtype or describe(t).layout == ref.layout:
            return t
        tmp = torch.empty_like(kp).copy_(t)
        if written:
            back.append((t, tmp))
        return tmp

    return kp, like(g, False), [like(s, True) for s in states]


def _caller_level() -> int:
    """warnings.warn's stacklevel of the first frame outside fastopt.torch and torch (the
    wrappers of step): the user's ``opt.step()``."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
            ("fastopt.torch", "torch.")):
        frame, level = frame.f_back, level + 1
    return level


class _Entry:
    """What one param group's steps reuse: the table cache, the step buffer, first-step flags,
    and which params the kernels step (`fast`: positions among the params with a gradient, None
    for all) and which torch's own implementation does.

    Valid only for the tensors it was made from: `holds` and `current` re-check, every step,
    that the group's active params, their state entries and their ``state[p]['step']`` tensors
    are the very objects it holds (the table cache then re-checks their memory, see
    fastopt._table)."""

    def __init__(self, slots: tuple[str, ...], params: list[Tensor], fast: list[int] | None,
                 torch_params: list[Tensor], cache: TableCache, steps: Tensor | None,
                 step_views: list[Tensor], fresh: list[bool], plain: bool) -> None:
        self.slots = slots
        self.params = params
        self.fast = fast
        self.torch_params = torch_params
        self.plain = plain  # kernel-stepped params as they are: the cached tables serve them
        self.cache = cache
        self.steps = steps
        self.step_views = step_views
        self.fresh = fresh  # per kernel-stepped param: state created at this step (SGD)
        self.mixed_fresh = len(set(fresh)) > 1
        # the state rows as last read, and the state's change count then (TrackedState)
        self.rows: dict[str, list[Any]] = {}
        self.step_row: list[Any] | None = None
        self.mark: tuple[Any, int] | None = None

    def holds(self, slots: tuple[str, ...], params: list[Tensor]) -> bool:
        return (slots == self.slots and len(params) == len(self.params)
                and all(map(operator.is_, params, self.params)))

    def current(self, step_row: list[Any] | None, rows: dict[str, list[Any]]) -> bool:
        return ((step_row is None or all(map(operator.is_, step_row, self.step_views)))
                and all(all(map(operator.is_not, row, repeat(None))) for row in rows.values()))

    def pick(self, items: list[Any]) -> list[Any]:
        return items if self.fast is None else [items[k] for k in self.fast]


class FusedOptimizer(torch.optim.Optimizer):
    """Base of the fastopt.torch optimizers: the step, the caching, the state layout. A
    subclass that also derives from a torch.optim class hands what the kernels cannot step to
    that class's own step."""

    op: ClassVar[str]
    has_step: ClassVar[bool] = True  # keeps torch's state['step']
    first_step_flag: ClassVar[bool] = False  # the kernel initializes new state itself (SGD)

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

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state" and not isinstance(value, TrackedState):
            value = TrackedState(value)  # torch.optim's __init__ and any user assignment
        super().__setattr__(name, value)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # load_state_dict and copies come through here
        self.state = self.state  # a loaded defaultdict becomes a TrackedState
        self._invalidate()  # tables name the memory of what was there before

    def state_dict(self) -> dict[str, Any]:
        # plain dicts, as torch.optim's: torch.load(weights_only=True) knows no ParamState
        sd = super().state_dict()
        sd["state"] = {k: dict(v) if isinstance(v, ParamState) else v
                       for k, v in sd["state"].items()}
        return sd
        self._invalidate()

    def _invalidate(self) -> None:
        self._fo_cache: dict[int, _Entry] = {}

    # the kernels take unscaled gradients: GradScaler must unscale them (and skip steps with
    # infs) itself, even where torch's fused=True step would take the scale
    @property
    def _step_supports_amp_scaling(self) -> bool:
        return False

    @_step_supports_amp_scaling.setter
    def _step_supports_amp_scaling(self, value: bool) -> None:
        pass

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

    # --- torch.optim's own implementation -----------------------------------------------
    @classmethod
    def _torch_step_fn(cls) -> Callable[..., Any] | None:
        """The step of the torch.optim class this one derives from (None: there is none),
        without the step hooks (they ran around this optimizer's own step)."""
        mro = cls.__mro__
        for base in mro[mro.index(FusedOptimizer) + 1:]:
            if base is torch.optim.Optimizer:
                return None
            step = vars(base).get("step")
            if step is not None:
                return step.__wrapped__ if getattr(step, "hooked", False) else step
        return None

    def _torch_step(self, group: dict[str, Any], params: list[Tensor], why: str | None) -> None:
        """Step `params` of `group` with the torch class's own implementation, on this
        optimizer's state dicts."""
        step = self._torch_step_fn()
        assert step is not None
        groups = self.param_groups
        self.param_groups = [{**group, "params": params}]
        try:
            step(self)
        finally:
            self.param_groups = groups
        if why is not None:
            self._warn_once(why)

    def _warn_once(self, why: str) -> None:
        warned = self.__dict__.setdefault("_fo_warned", set())
        if why not in warned:
            warned.add(why)
            name = type(self).__name__
            warnings.warn(f"fastopt.torch.{name}: {why}: stepped by torch.optim.{name}'s own "
                          "implementation, not fastopt's fused kernel (warned once)",
                          UserWarning, stacklevel=_caller_level())

    def _route(self, p: Tensor, backend_ok: dict[str, bool]) -> str | None:
        """Why `p` goes to torch's own step (None: the kernels step it)."""
        if self._torch_step_fn() is None:
            return None  # nothing to hand over to: the kernels' checks explain
        if p.layout != torch.strided:
            return f"{p.layout} params"
        dev = p.device.type
        real = p.dtype.to_real() if p.is_complex() else p.dtype
        if str(real).removeprefix("torch.") not in SUPPORTED_DTYPES.get(dev, ()):
            return f"{p.dtype} params on {dev}"
        if dev not in backend_ok:
            try:
                backends.resolve(None, dev)
                backend_ok[dev] = True
            except backends.BackendUnavailable:
                backend_ok[dev] = False
        return None if backend_ok[dev] else f"no fastopt backend runs on {dev}"

    # --- the step -----------------------------------------------------------------------
    def _step_group(self, gi: int, group: dict[str, Any], retry: bool = True) -> None:
        params = group["params"]
        grads = list(map(_grad_of, params))
        if all(map(operator.is_not, grads, repeat(None))):
            active = range(len(params))
        else:
            active = [i for i, g in enumerate(grads) if g is not None]
            if not active:
                return
            params = [params[i] for i in active]
            grads = [grads[i] for i in active]
        if group.get("differentiable") and self._torch_step_fn() is not None:
            self._torch_step(group, params, "differentiable=True")
            return
        slots = self._slots(group)
        entry = self._fo_cache.get(gi)
        if entry is None or not entry.holds(slots, params):
            entry = self._fo_cache[gi] = self._build(group, active, params, slots)
        kparams = entry.pick(params)
        state = self.state
        if entry.mark is not None and entry.mark[0] is state and entry.mark[1] == state.changes:
            rows, step_row = entry.rows, entry.step_row  # no state dict changed since: these
            same = True                                   # rows were found current then
        else:
            rows, step_row = self._read_rows(entry, kparams, slots)
            same = False
        if not same and not entry.current(step_row, rows):
            entry = self._fo_cache[gi] = self._build(group, active, params, slots)
            kparams = entry.pick(params)
            rows, step_row = self._read_rows(entry, kparams, slots)
        if kparams and not self._step_kernels(gi, group, entry, kparams, entry.pick(grads),
                                              rows):
            if retry:  # re-routed: nothing of this group was stepped yet
                self._step_group(gi, group, retry=False)
            return
        if entry.torch_params:
            self._torch_step(group, entry.torch_params, None)

    def _step_kernels(self, gi: int, group: dict[str, Any], entry: _Entry,
                      params: list[Tensor], grads: list[Tensor],
                      rows: dict[str, list[Tensor]]) -> bool:
        """Step the entry's kernel-stepped params: the cached tables when the entry is plain
        and every param is at one step count, else _step_each. False: the group must be
        routed again."""
        if entry.steps is not None:
            lo, hi = torch.aminmax(entry.steps)
            step_lo, step_hi = float(lo) + 1, float(hi) + 1
        else:
            step_lo = step_hi = 0.0
        if entry.plain and step_lo == step_hi and not entry.mixed_fresh:
            try:
                tables = entry.cache.tables({"param": params, "grad": grads, **rows})
            except (TypeError, ValueError):
                tables = None  # e.g. a sparse or differently laid out grad: see _step_each
            if tables is not None:
                F.run(self.op, tables, None, **self._hyper(group, step_hi, entry.fresh[0]))
                self._count(entry)
                return True
        return self._step_each(gi, group, entry, params, grads, rows)

    def _read_rows(self, entry: _Entry, params: list[Tensor], slots: tuple[str, ...]
                   ) -> tuple[dict[str, list[Any]], list[Any] | None]:
        """_rows, remembered in the entry with the state's change count after the read."""
        entry.rows, entry.step_row = self._rows(params, slots)
        entry.mark = (self.state, self.state.changes)
        return entry.rows, entry.step_row

    def _rows(self, params: list[Tensor], slots: tuple[str, ...]
              ) -> tuple[dict[str, list[Any]], list[Any] | None]:
        if not slots and not self.has_step:
            return {}, None  # as torch: no state entry at all (SGD without momentum)
        states = list(map(self.state.__getitem__, params))
        rows = {slot: _column(states, _STATE_KEY.get(slot, slot)) for slot in slots}
        return rows, (_column(states, "step") if self.has_step else None)

    def _count(self, entry: _Entry) -> None:
        if entry.steps is not None:
            entry.steps.add_(1)
        if entry.fresh[0] or entry.mixed_fresh:
            entry.fresh = [False] * len(entry.fresh)
            entry.mixed_fresh = False

    def _step_each(self, gi: int, group: dict[str, Any], entry: _Entry, params: list[Tensor],
                   grads: list[Tensor], rows: dict[str, list[Tensor]]) -> bool:
        """The general step, per tensor in Python: params at different step counts (some got
        gradients later than others) or with new and old momentum buffers, complex or strided
        params, grads laid out unlike their params. One kernel call per (step count, fresh
        state) kind, on tables validated in full; then the copies are copied back. Sparse
        grads, and params changed since the entry was built into something the kernels do not
        take, go to torch's own step (False: the group must be stepped again, re-routed)."""
        if any(g.layout != torch.strided for g in grads) and self._torch_step_fn() is not None:
            self._hand_over(gi, group, entry, params, "sparse gradients")
            return True
        backend_ok: dict[str, bool] = {}
        if any(self._route(p, backend_ok) is not None for p in params):
            self._hand_over(gi, group, entry, params, None)
            return False
        steps = entry.steps.tolist() if entry.steps is not None else [0.0] * len(params)
        kinds: dict[tuple[float, bool], list[int]] = {}
        for k, (s, fr) in enumerate(zip(steps, entry.fresh, strict=True)):
            kinds.setdefault((s + 1, fr), []).append(k)
        back: list[tuple[Tensor, Tensor]] = []
        flat = [_kernel_arrays(p, g, [rows[slot][k] for slot in entry.slots], back)
                for k, (p, g) in enumerate(zip(params, grads, strict=True))]
        calls = []
        for (step, fr), keep in sorted(kinds.items()):
            arrays: dict[str, Any] = {"param": [flat[k][0] for k in keep],
                                      "grad": [flat[k][1] for k in keep]}
            for j, slot in enumerate(entry.slots):
                arrays[slot] = [flat[k][2][j] for k in keep]
            calls.append((F.tables_for(self.op, arrays), self._hyper(group, step, fr)))
        for tables, hyper in calls:  # every table validated before anything is written
            F.run(self.op, tables, None, **hyper)
        for user, copy in back:
            user.copy_(copy)
        self._count(entry)
        return True

    def _hand_over(self, gi: int, group: dict[str, Any], entry: _Entry, params: list[Tensor],
                   why: str | None) -> None:
        """Step `params` (or, with why=None, nothing: the caller re-routes the group) with
        torch's own implementation. State the entry created for a first kernel step is dropped
        first, for torch to create as it does (SGD's first momentum buffer is the update)."""
        for p, fresh in zip(params, entry.fresh, strict=True):
            if fresh:
                for slot in entry.slots:
                    self.state[p].pop(_STATE_KEY.get(slot, slot), None)
        self._fo_cache.pop(gi, None)
        if why is not None:
            self._torch_step(group, params, why)

    def _build(self, group: dict[str, Any], active: list[int], params: list[Tensor],
               slots: tuple[str, ...]) -> _Entry:
        """Route each param with a gradient (the kernels, as it is or through real views and
        copies, or torch's own step), create the kernel-stepped params' missing state (as
        torch.optim does: a param whose state was cleared starts again at step 0) and a new
        entry."""
        backend_ok: dict[str, bool] = {}
        routes = [self._route(p, backend_ok) for p in params]
        for why in dict.fromkeys(r for r in routes if r is not None):
            self._warn_once(why)
        fast = [k for k, r in enumerate(routes) if r is None]
        kernel_params = [params[k] for k in fast]
        fresh = []
        sdtype = _scalar_dtype()
        step_values = []
        for k, p in zip(fast, kernel_params, strict=True):
            if not slots and not self.has_step:
                fresh.append(False)
                continue
            st = self.state[p]
            new = False
            if self.has_step:
                if "step" not in st:
                    st["step"] = torch.tensor(0.0, dtype=sdtype)
                step_values.append(F.check_step_count(
                    st["step"], f"{type(self).__name__}: state of param {active[k]}"))
            for slot in slots:
                name = _STATE_KEY.get(slot, slot)
                if st.get(name) is None:
                    value = self._init_value(slot, group)
                    # torch starts a complex param's state at value + value*1j
                    st[name] = torch.full_like(p, complex(value, value) if p.is_complex()
                                               else value, memory_format=torch.preserve_format)
                    new = True
            fresh.append(new and self.first_step_flag)
        steps, step_views = None, []
        if self.has_step:
            # one buffer counts the group's steps: counting a step is one tensor op
            steps = torch.tensor(step_values, dtype=sdtype)
            step_views = [steps[k] for k in range(len(kernel_params))]
            for p, view in zip(kernel_params, step_views, strict=True):
                self.state[p]["step"] = view
        plain = not any(p.is_complex() or not describe(p).dense for p in kernel_params)
        return _Entry(slots, list(params), None if len(fast) == len(params) else fast,
                      [params[k] for k, r in enumerate(routes) if r is not None],
                      F.table_cache(self.op, trusted_shapes=True), steps, step_views, fresh,
                      plain)


# --- the optimizers ---------------------------------------------------------------------
# Each derives from the torch.optim class of its algorithm: torch's __init__ (signature,
# defaults, checks, errors), __setstate__ and _init_group; FusedOptimizer's step.


class SGD(FusedOptimizer, torch.optim.SGD):
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

    def _slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _hyper(self, group: dict[str, Any], step: float, fresh: bool) -> dict[str, Any]:
        return dict(lr=_f(group["lr"]), momentum=_f(group["momentum"]),
                    dampening=_f(group["dampening"]), weight_decay=_f(group["weight_decay"]),
                    nesterov=bool(group["nesterov"]), maximize=bool(group["maximize"]),
                    first_step=fresh)


class Adam(FusedOptimizer, torch.optim.Adam):
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


class AdamW(Adam, torch.optim.AdamW):
    """Adam with decoupled weight decay, p = p * (1 - lr * weight_decay) (default 1e-2);
    signature, defaults and state as torch.optim.AdamW.

    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """


class Adagrad(FusedOptimizer, torch.optim.Adagrad):
    """Adagrad with lr decay, L2 weight decay and maximize; signature, defaults and state as
    torch.optim.Adagrad (whose state is created for every param at construction).

        g = -g if maximize else g;  g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay);  s = s + g^2;  p = p - clr * g / (sqrt(s) + eps)

    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011.
    """

    op = "adagrad"

    def _slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("state_sum",)

    def _init_value(self, slot: str, group: dict[str, Any]) -> float:
        # as torch.optim.Adagrad, which starts every sum at the constructor's value
        return _f(self.defaults["initial_accumulator_value"])

    def _hyper(self, group: dict[str, Any], step: float, fresh: bool) -> dict[str, Any]:
        return dict(step=step, lr=_f(group["lr"]), lr_decay=_f(group["lr_decay"]),
                    weight_decay=_f(group["weight_decay"]), eps=_f(group["eps"]),
                    maximize=bool(group["maximize"]))


class RMSprop(FusedOptimizer, torch.optim.RMSprop):
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
    (lr=1e-4, betas=(0.9, 0.99)); state: 'exp_avg'. torch.optim has no Lion, so there is no
    torch step to hand anything to: ``differentiable=True`` and what the kernels do not take
    (sparse grads, float16 on the CPU) are refused.

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
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= betas[0] <= 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] <= 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay < math.inf:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if differentiable:
            raise ValueError("differentiable=True is not supported: fastopt's fused kernels "
                             "update in place outside autograd")
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
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
