"""Drop-in ``torch.optim`` optimizers whose step is one fused fastopt kernel call per param group.

One class per optimizer of ``fastopt.ops.REGISTRY`` (``make_class``). Where torch.optim has the
algorithm the class subclasses torch's and keeps its constructor, defaults, argument checks,
error messages, ``__setstate__`` (which fills the defaults missing from older checkpoints),
param-group keys and state layout (``state[p]['step']`` a scalar float tensor, ``'exp_avg'``,
``'sum'``, ...), so LR schedulers, ``GradScaler``, ``ZeroRedundancyOptimizer`` and checkpoints
of the torch class work unchanged, in both directions; fastopt's own hyperparameters (``l1``,
``l1_mode``, Adam's ``bias_correction``, ...) are extra keywords kept in every group. Only
``step`` is fastopt's: ``foreach``/``fused``/``capturable`` do not change it (its scalars are
computed on the host, so a step is not CUDA-graph capturable whatever ``capturable`` says).
Every class takes ``torch.amp.GradScaler``'s scale and inf flag as torch's fused optimizers do
(``_step_supports_amp_scaling``): the kernels unscale the gradients in the step's own pass and a
step with inf or NaN gradients changes nothing.

What the kernels take, they step in place: real float params of the dtypes their device's
backend supports (float32/float64 on the CPU), in any dense layout (C order, transposed,
channels_last) shared by param, grad and state. What they do not take is still stepped, never
refused:

- complex params: as their real view (``torch.view_as_real`` of param, grad and state), as
  torch does; the state stays complex, torch's layout;
- strided layouts (a param ``big[:, ::2]``, a grad or state laid out unlike its param): through
  contiguous copies, stepped, then copied back into the user's tensors;
- anything else torch.optim accepts (``differentiable=True``, sparse gradients, a dtype or
  device without a fastopt backend): that group (or those params) run
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

import inspect
import math
import operator
import sys
import warnings
from collections.abc import Callable
from itertools import repeat
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import backends, ops
from .. import functional as F
from .._arrays import describe, state_like
from .._table import MASTER, SUPPORTED_DTYPES, TableCache
from ._state import ParamState, TrackedState


def _scalar_dtype() -> torch.dtype:
    # as torch.optim.optimizer._get_scalar_dtype
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _f(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


def _plain(group: dict[str, Any]) -> dict[str, Any]:
    """A param group's hyperparameters as plain numbers (torch allows tensor lr and betas)."""
    out = {k: v for k, v in group.items() if k != "params"}
    for k, v in out.items():
        if isinstance(v, Tensor):
            out[k] = _f(v)
        elif k == "betas":
            out[k] = tuple(_f(b) for b in v)
    return out


def _finite(value: Any, key: str, where: str) -> float:
    """A saved scalar state value (ScalarState): a finite number."""
    try:
        x = _f(value)
    except (TypeError, ValueError, RuntimeError):
        x = math.nan
    if not math.isfinite(x):
        raise ValueError(f"{where}: {key} {value!r} is not a finite number")
    return x


_grad_of = operator.attrgetter("grad")


def _column(states: list[dict[str, Any]], key: str) -> list[Any]:
    """states[i][key] for every i (None where missing), in one C-level pass when none is."""
    try:
        return list(map(operator.itemgetter(key), states))
    except KeyError:
        return [st.get(key) for st in states]


def _grad_norm(grads: list[Tensor], norm_type: float) -> float:
    """The joint norm of grads (clip_grad_norm_'s): fastopt's kernels for dense real ones,
    torch for the rest (sparse, complex: |z|, devices without a backend)."""
    from ..clip import grad_norm

    if not grads:
        return 0.0
    try:
        if all(g.layout == torch.strided and not g.is_complex() for g in grads):
            return grad_norm([g.detach() for g in grads], norm_type)
    except (TypeError, ValueError, backends.BackendUnavailable):
        pass
    norms = [torch.linalg.vector_norm(g.coalesce().values() if g.is_sparse else g, norm_type)
             for g in grads]
    return float(torch.linalg.vector_norm(torch.stack([n.double().cpu() for n in norms]),
                                          norm_type))


def _new_state(group: dict[str, Any], p: Tensor, value: float, signed: bool) -> Tensor:
    """A new state tensor for p, every element `value`, stored as the group's state_dtype
    says (torch.optim's layout: p's dtype and memory format; a complex param's state starts
    at value + value*1j)."""
    name = None if group.get("state_dtype") is None else \
        ops.state_dtype(group, str(p.dtype).removeprefix("torch."))
    if name == "8bit":
        return state_like(p, value, name, signed)
    return torch.full_like(p, complex(value, value) if p.is_complex() else value,
                           memory_format=torch.preserve_format,
                           dtype=None if name is None else getattr(torch, name))


def _takes_master(p: Tensor) -> bool:
    """Whether master_weights keeps a float32 copy of p (a float16 or bfloat16 param)."""
    return p.dtype in (torch.float16, torch.bfloat16)


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _kernel_arrays(p: Tensor, g: Tensor, states: list[Tensor | None],
                   back: list[tuple[Tensor, Tensor]], write_grad: bool = False
                   ) -> tuple[Tensor, Tensor, list]:
    """One param's tensors as a kernel can walk them flat: complex ones as their real view,
    and any layout the kernel cannot step in place (a strided param; a grad or state laid out
    unlike its param) as an exact copy in the param's (dense) layout. Appends to `back` the
    pairs (user's tensor, copy) to copy back after the step (the grad's too with
    `write_grad`: an unscaling step). A tensor of another shape or dtype is passed on as it
    is, for the kernel's validation to name."""
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
        if t.shape != kp.shape or describe(t).layout == ref.layout:
            return t
        tmp = torch.empty_like(kp, dtype=t.dtype).copy_(t)
        if written:
            back.append((t, tmp))
        return tmp

    return kp, like(g, write_grad), [like(s, True) for s in states]


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
                 torch_params: list[Tensor], cache: TableCache, counters: dict[str, Tensor],
                 counter_views: dict[str, list[Tensor]], fresh: list[bool], plain: bool) -> None:
        self.slots = slots
        self.params = params
        self.fast = fast
        self.torch_params = torch_params
        self.plain = plain  # kernel-stepped params as they are: the cached tables serve them
        self.cache = cache
        # 'step' and the op's scalar state (ops.ScalarState): one buffer each, whose
        # elements are the params' state tensors
        self.counters = counters
        self.counter_views = counter_views
        self.steps = counters.get("step")
        self.fresh = fresh  # per kernel-stepped param: state created at this step (SGD)
        self.mixed_fresh = len(set(fresh)) > 1
        # the state rows as last read, and the state's change count then (TrackedState)
        self.rows: dict[str, list[Any]] = {}
        self.counter_rows: dict[str, list[Any]] = {}
        self.mark: tuple[Any, int] | None = None

    def holds(self, slots: tuple[str, ...], params: list[Tensor],
              keys: tuple[str, ...]) -> bool:
        return (slots == self.slots and keys == tuple(self.counters)
                and len(params) == len(self.params)
                and all(map(operator.is_, params, self.params)))

    def current(self, counter_rows: dict[str, list[Any]], rows: dict[str, list[Any]],
                params: list[Tensor]) -> bool:
        """Whether the state read now is what the entry was built for: its step tensors, and
        every state tensor there (a master copy exactly where the param is 16-bit)."""
        return (all(all(map(operator.is_, row, self.counter_views[k]))
                    for k, row in counter_rows.items())
                and all(all(map(operator.is_not, row, repeat(None)))
                        for slot, row in rows.items() if slot != MASTER)
                and all((m is not None) == _takes_master(p)
                        for m, p in zip(rows.get(MASTER, ()), params, strict=False)))

    def pick(self, items: list[Any]) -> list[Any]:
        return items if self.fast is None else [items[k] for k in self.fast]


class FusedOptimizer(torch.optim.Optimizer):
    """Base of the fastopt.torch optimizers: the step, the caching, the state layout. A
    subclass that also derives from a torch.optim class hands what the kernels cannot step to
    that class's own step."""

    spec: ClassVar[ops.OpSpec]
    #: hyperparameters of fastopt's that torch's implementation of the algorithm lacks, with
    #: their defaults: a group that sets one cannot be handed to torch's step
    extras: ClassVar[dict[str, Any]] = {}

    @property
    def op(self) -> str:
        return self.spec.name

    def _counter_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        # torch's 'step' where the algorithm keeps one, and for stochastic rounding, whose
        # random bits the step count keys (SGD and Lion keep it then)
        step = self.spec.has_step or bool(group.get("stochastic_rounding", False))
        return (("step",) if step else ()) + tuple(self.spec.scalar_state)

    def _slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state tensors this group's options need, named as the kernel's table rows (the
        master weights' last)."""
        return self.spec.state_slots(group) + ((MASTER,) if group.get("master_weights") else ())

    def _key(self, slot: str) -> str:
        """The state key of a table row."""
        return MASTER if slot == MASTER else self.spec.slot(slot).state_key

    def _scalars(self, group: dict[str, Any], step: float, fresh: bool, entry: _Entry,
                 members: list[int] | None = None) -> ops.Scalars:
        """The scalars of one kernel call over the entry's params (`members`: a subset), the
        op's scalar state advanced in its tensors' dtype, as torch.optim does."""
        plain = _plain(group)
        before, after = {}, {}
        for key, rule in self.spec.scalar_state.items():
            buf = entry.counters[key]
            first = 0 if members is None else members[0]
            before[key] = float(buf[first])
            if members is None:
                buf.mul_(rule.factor(plain, step))
            else:
                idx = torch.tensor(members)
                buf.index_copy_(0, idx, buf[idx] * rule.factor(plain, step))
            after[key] = float(buf[first])
        return self.spec.prepare(plain, step, fresh, before, after, grad_coef=self._fo_coef)

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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch.optim casts every loaded floating state tensor to its param's dtype: state
        # kept in another dtype (state_dtype, the float32 master weights) is restored as it
        # was saved instead
        keys = {slot.state_key for slot in self.spec.slots} | {MASTER}
        ids = [i for g in state_dict.get("param_groups", ()) for i in g["params"]]
        saved = state_dict.get("state", {})
        params = [p for g in self.param_groups for p in g["params"]]
        kept = {}
        for k, i in enumerate(ids):
            entry = saved.get(i)
            if not isinstance(entry, dict) or k >= len(params):
                continue
            for key, value in entry.items():
                if key in keys and isinstance(value, Tensor) and value.dtype != params[k].dtype:
                    kept[k, key] = value
        super().load_state_dict(state_dict)
        for (k, key), value in kept.items():
            self.state[params[k]][key] = value.detach().to(
                device=params[k].device, copy=True,
                memory_format=torch.preserve_format if value.dim() else torch.contiguous_format)

    def _invalidate(self) -> None:
        self._fo_cache: dict[int, _Entry] = {}

    # torch.amp.GradScaler hands every step its scale and inf flag (the attributes grad_scale
    # and found_inf, as to torch's fused optimizers) instead of unscaling the grads first: the
    # kernels unscale them in the step's own pass
    @property
    def _step_supports_amp_scaling(self) -> bool:
        return True

    @_step_supports_amp_scaling.setter
    def _step_supports_amp_scaling(self, value: bool) -> None:
        pass  # torch's __init__ sets it for fused=True only: every step here takes the scale

    #: 1 / grad_scale during a step, and the clipping coefficient of the group stepping
    _fo_unscale: float = 1.0
    _fo_coef: float = 1.0
    #: the global gradient norm of the last step, where a group sets max_grad_norm (else None)
    grad_norm: float | None = None

    @torch._disable_dynamo
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform a single optimization step (closure: re-evaluates the model, returns the
        loss).

        Under torch.amp.GradScaler (the attributes ``grad_scale`` and ``found_inf`` it sets, as
        for torch's fused optimizers) the grads are unscaled in place in the step's own pass,
        g = g * (1 / grad_scale), and a nonzero found_inf skips the step: params, state, step
        counts and grads stay as they are. Both are read on the host (for CUDA tensors one
        synchronization per step, as GradScaler's own unscaling path makes)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        unscale, skip = F.grad_scaling(getattr(self, "grad_scale", None),
                                       getattr(self, "found_inf", None))
        if skip:
            return loss
        coefs = self._clip_coefficients(unscale)
        self._fo_unscale = unscale
        try:
            for gi, group in enumerate(self.param_groups):
                self._fo_coef = coefs.get(gi, 1.0)
                self._step_group(gi, group)
        finally:
            self._fo_unscale, self._fo_coef = 1.0, 1.0
        return loss

    def _clip_coefficients(self, unscale: float) -> dict[int, float]:
        """max_grad_norm: the global norm of the grads of every group that sets it (unscaled),
        recorded in `grad_norm`, and each such group's clipping coefficient; a non-finite norm
        raises before anything is stepped."""
        clipped = {gi: _plain(g) for gi, g in enumerate(self.param_groups)
                   if g.get("max_grad_norm") is not None}
        self.grad_norm = None
        if not clipped:
            return {}
        grads = [p.grad for gi in clipped for p in self.param_groups[gi]["params"]
                 if p.grad is not None]
        norm = _grad_norm(grads, F.clip_norm_type(list(clipped.values()))) * unscale
        coefs = F.clip_coefficients(clipped, norm)
        self.grad_norm = norm
        return coefs

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
        factor = self._fo_unscale * self._fo_coef
        if factor != 1.0:
            # torch's non-fused steps take no grad scale or clipping: the grads are unscaled
            # and clipped in place here, as GradScaler and clip_grad_norm_ would
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(factor)
        amp = {k: self.__dict__.pop(k) for k in ("grad_scale", "found_inf") if k in self.__dict__}
        groups = self.param_groups
        self.param_groups = [{**group, "params": params}]
        try:
            step(self)
        finally:
            self.param_groups = groups
            self.__dict__.update(amp)
        if why is not None:
            self._warn_once(why)

    def _check_handover(self, group: dict[str, Any], why: str) -> None:
        """Refuse, before anything is stepped, to hand a group that sets one of fastopt's own
        hyperparameters (l1, ...) to torch's step, which would ignore it."""
        changed = sorted(k for k, v in self.extras.items() if group.get(k, v) != v)
        if changed:
            raise ValueError(f"fastopt.torch.{type(self).__name__}: {why} must be stepped by "
                             f"torch.optim.{type(self).__name__}'s own implementation, which "
                             f"has no {', '.join(changed)}")

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
            self._check_handover(group, "differentiable=True")
            self._torch_step(group, params, "differentiable=True")
            return
        slots = self._slots(group)
        entry = self._fo_cache.get(gi)
        if entry is None or not entry.holds(slots, params, self._counter_keys(group)):
            entry = self._fo_cache[gi] = self._build(group, active, params, slots)
        kparams = entry.pick(params)
        state = self.state
        if entry.mark is not None and entry.mark[0] is state and entry.mark[1] == state.changes:
            # no state dict changed since: these rows were found current then
            rows, counter_rows = entry.rows, entry.counter_rows
            same = True
        else:
            rows, counter_rows = self._read_rows(entry, kparams, slots)
            same = False
        if not same and not entry.current(counter_rows, rows, kparams):
            entry = self._fo_cache[gi] = self._build(group, active, params, slots)
            kparams = entry.pick(params)
            rows, counter_rows = self._read_rows(entry, kparams, slots)
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
        uniform = all(bool((buf == buf[0]).all()) for k, buf in entry.counters.items()
                      if k != "step")
        if entry.plain and step_lo == step_hi and not entry.mixed_fresh and uniform:
            try:
                tables = entry.cache.tables({"param": params, "grad": grads, **rows})
            except (TypeError, ValueError):
                tables = None  # e.g. a sparse or differently laid out grad: see _step_each
            if tables is not None:
                F.run(self.op, tables, None, self._scalars(group, step_hi, entry.fresh[0], entry),
                      self._fo_unscale)
                if self._fo_unscale != 1.0:
                    torch._C._increment_version(grads)  # written in place, as torch's ops do
                self._count(entry)
                return True
        return self._step_each(gi, group, entry, params, grads, rows)

    def _read_rows(self, entry: _Entry, params: list[Tensor], slots: tuple[str, ...]
                   ) -> tuple[dict[str, list[Any]], list[Any] | None]:
        """_rows, remembered in the entry with the state's change count after the read."""
        entry.rows, entry.counter_rows = self._rows(params, slots, tuple(entry.counters))
        entry.mark = (self.state, self.state.changes)
        return entry.rows, entry.counter_rows

    def _rows(self, params: list[Tensor], slots: tuple[str, ...], keys: tuple[str, ...]
              ) -> tuple[dict[str, list[Any]], list[Any] | None]:
        if not slots and not keys:
            return {}, {}  # as torch: no state entry at all (SGD without momentum)
        states = list(map(self.state.__getitem__, params))
        rows = {slot: _column(states, self._key(slot)) for slot in slots}
        return rows, {k: _column(states, k) for k in keys}

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
            self._check_handover(group, "sparse gradients")
            self._hand_over(gi, group, entry, params, "sparse gradients")
            return True
        backend_ok: dict[str, bool] = {}
        if any(self._route(p, backend_ok) is not None for p in params):
            self._hand_over(gi, group, entry, params, None)
            return False
        steps = entry.steps.tolist() if entry.steps is not None else [0.0] * len(params)
        scalar_state = list(zip(*(entry.counters[k].tolist() for k in self.spec.scalar_state),
                                strict=True)) or [()] * len(params)
        kinds: dict[tuple[float, bool, tuple], list[int]] = {}
        for k, (s, fr) in enumerate(zip(steps, entry.fresh, strict=True)):
            kinds.setdefault((s + 1, fr, scalar_state[k]), []).append(k)
        back: list[tuple[Tensor, Tensor]] = []
        unscaling = self._fo_unscale != 1.0
        flat = [_kernel_arrays(p, g, [rows[slot][k] for slot in entry.slots], back, unscaling)
                for k, (p, g) in enumerate(zip(params, grads, strict=True))]
        calls = []
        for (step, fr, _), keep in sorted(kinds.items()):
            arrays: dict[str, Any] = {"param": [flat[k][0] for k in keep],
                                      "grad": [flat[k][1] for k in keep]}
            for j, slot in enumerate(entry.slots):
                arrays[slot] = [flat[k][2][j] for k in keep]
            calls.append((F.tables_for(self.op, arrays, write_grads=unscaling), step, fr, keep))
        # every table validated before anything is written
        for tables, step, fr, keep in calls:
            F.run(self.op, tables, None, self._scalars(group, step, fr, entry, keep),
                  self._fo_unscale)
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
                    self.state[p].pop(self._key(slot), None)
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
            self._check_handover(group, why)
            self._warn_once(why)
        fast = [k for k, r in enumerate(routes) if r is None]
        kernel_params = [params[k] for k in fast]
        fresh = []
        sdtype = _scalar_dtype()
        keys = self._counter_keys(group)
        values: dict[str, list[float]] = {k: [] for k in keys}
        plain_group = _plain(group)
        for k, p in zip(fast, kernel_params, strict=True):
            if not slots and not keys:
                fresh.append(False)
                continue
            st = self.state[p]
            new = False
            where = f"{type(self).__name__}: state of param {active[k]}"
            for key in keys:
                init = self.spec.scalar_state[key].init if key != "step" else 0.0
                if key not in st:
                    st[key] = torch.tensor(init, dtype=sdtype)
                values[key].append(F.check_step_count(st[key], where) if key == "step"
                                   else _finite(st[key], key, where))
            for slot in slots:
                name = self._key(slot)
                if slot == MASTER:
                    if st.get(name) is None and _takes_master(p):
                        st[name] = p.detach().to(torch.float32, copy=True,
                                                 memory_format=torch.preserve_format)
                    continue
                if st.get(name) is None:
                    st[name] = _new_state(plain_group, p, self.spec.init_value(slot, plain_group),
                                          not self.spec.slot(slot).nonneg)
                    new = True
            fresh.append(new and self.spec.fresh_flag)
        # one buffer per counter: counting a step is one tensor op
        # (empty when torch's own step takes every param: the rows read are empty too)
        counters = {k: torch.tensor(v, dtype=sdtype) for k, v in values.items()}
        views = {k: [buf[i] for i in range(len(buf))] for k, buf in counters.items()}
        for key, row in views.items():
            for p, view in zip(kernel_params, row, strict=True):
                self.state[p][key] = view
        plain = not any(p.is_complex() or not describe(p).dense for p in kernel_params)
        return _Entry(slots, list(params), None if len(fast) == len(params) else fast,
                      [params[k] for k, r in enumerate(routes) if r is not None],
                      F.table_cache(self.op, trusted_shapes=True, master=MASTER in slots),
                      counters, views, fresh,
                      plain)


# --- the optimizers ---------------------------------------------------------------------
def _torch_init(cls: type) -> Callable[..., None]:
    """__init__ of a class over a torch.optim class: torch's (signature, defaults, checks,
    errors), plus fastopt's extra hyperparameters as keywords, validated and kept in every
    group (so in state_dict and in groups added later)."""
    base = vars(cls.__mro__[2])["__init__"]  # (class, FusedOptimizer, torch's class, ...)

    def __init__(self: FusedOptimizer, params: Any, *args: Any, **kwargs: Any) -> None:
        extra = {k: kwargs.pop(k, v) for k, v in self.extras.items()}
        base(self, params, *args, **kwargs)
        self.defaults.update(extra)
        for group in self.param_groups:
            for k, v in extra.items():
                group.setdefault(k, v)
            self.spec.validate(_plain(group))

    return __init__


def _own_init(spec: ops.OpSpec, alias: ops.Alias | None) -> Callable[..., None]:
    """__init__ of a class without a torch.optim counterpart: the spec's signature and
    checks, plus torch's foreach/differentiable/fused flags."""
    sig = ops.signature(spec, alias, {"foreach": None, "differentiable": False, "fused": None})

    def __init__(self: FusedOptimizer, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        defaults = dict(bound.arguments)
        params = defaults.pop("params")
        lr = defaults["lr"]
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if "betas" in defaults:
            defaults["betas"] = tuple(_f(b) for b in defaults["betas"])
        spec.validate(_plain(defaults))
        if defaults["differentiable"]:
            raise ValueError("differentiable=True is not supported: fastopt's fused kernels "
                             "update in place outside autograd")
        if defaults["fused"] and defaults["foreach"]:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        torch.optim.Optimizer.__init__(self, params, defaults)

    __init__.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                    *sig.parameters.values()])
    return __init__


def make_class(name: str, spec: ops.OpSpec, alias: ops.Alias | None) -> type:
    """The fastopt.torch class `name` of `spec`: over torch.optim's class of the algorithm
    where there is one (torch's constructor, defaults, checks, state layout, __setstate__;
    what the kernels cannot step goes to its step), else a plain torch.optim.Optimizer."""
    torch_name = alias.torch if alias else spec.torch
    base = getattr(torch.optim, torch_name) if torch_name else None
    attrs: dict[str, Any] = {"spec": spec, "__module__": __name__,
                             "__doc__": ops.class_doc(spec, alias)}
    if base is None:
        attrs["__init__"] = _own_init(spec, alias)
        return type(name, (FusedOptimizer,), attrs)
    torch_sig = inspect.signature(base.__init__)
    defaults = {**spec.defaults, **ops.STATE_OPTIONS, **(alias.defaults if alias else {})}
    fixed = alias.fixed if alias else {}
    attrs["extras"] = {k: v for k, v in defaults.items()
                       if k not in torch_sig.parameters and k not in fixed}
    cls = type(name, (FusedOptimizer, base), attrs)
    init = _torch_init(cls)
    # torch's signature, with fastopt's extras as keywords before any **kwargs
    P = inspect.Parameter
    params = [p for p in torch_sig.parameters.values() if p.kind != P.VAR_KEYWORD]
    params += [P(k, P.KEYWORD_ONLY, default=v) for k, v in attrs["extras"].items()]
    params += [p for p in torch_sig.parameters.values() if p.kind == P.VAR_KEYWORD]
    init.__signature__ = torch_sig.replace(parameters=params)  # type: ignore[attr-defined]
    cls.__init__ = init  # type: ignore[misc]
    return cls


def from_rule(rule: Any, state: Any = (), defaults: dict[str, Any] | None = None,
              name: str | None = None, doc: str | None = None) -> type:
    """A ``torch.optim.Optimizer`` subclass from a scalar rule ``rule(p, g, *state, *,
    <hyperparameters>, step) -> (new_p, *new_state)``: as fastopt.optim.from_rule (the same
    arguments, docs/rules.md), stepping float32 and float64 tensors (CPU: Numba; CUDA:
    Numba-CUDA) in one fused launch per group, state in ``state[p][<name>]``, the step count
    in ``state[p]['step']``; LR schedulers, GradScaler and checkpoints work as for the
    built-in classes."""
    from .. import _rules

    spec = _rules.make_spec(rule, tuple(state), defaults, name, doc)
    cls = make_class(spec.cls, spec, None)
    cls.__doc__ = _rules.class_doc(spec)
    cls.__module__ = getattr(rule, "__module__", None) or __name__
    return cls


for _name, _spec, _alias in (*ops.classes(), *ops.eight_bit_classes()):
    globals()[_name] = make_class(_name, _spec, _alias)
__all__ = [name for name, _, _ in (*ops.classes(), *ops.eight_bit_classes())]
