"""Stateless, in-place, multi-tensor optimizer steps: one fused kernel call per (dtype, device)
steps every tensor of the lists. The stateful optimizers in fastopt.optim sit on top.

Every function takes lists of arrays (NumPy, PyTorch, CuPy, ... of one framework), validates
them (shapes, dtypes, devices, contiguity, writability, aliasing) and updates params and
state in place. `backend=` picks the implementation (see fastopt.backends).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from . import backends, ops
from ._arrays import check_writable, describe
from ._table import MASTER, SUPPORTED_DTYPES, TableCache, TensorTable, build_tables

Arrays = Sequence[Any]

#: Pointer-table rows of each built-in optimizer (param, grad, then its state rows).
SLOTS: dict[str, tuple[str, ...]] = {name: spec.table_slots for name, spec in ops.REGISTRY.items()}
#: Rows each optimizer reads only.
READ_ONLY = {"grad"}


def _step(step: Any) -> None:
    """A step count: a whole number >= 1 (the bias corrections divide by 1 - beta^step)."""
    try:
        ok = not isinstance(step, bool) and step >= 1 and math.isfinite(step) \
            and step == int(step)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"Invalid step: {step!r} (a whole number >= 1; the first step is 1)")


def check_step_count(value: Any, where: str) -> float:
    """A saved step count (a number or a one-element tensor): a whole number >= 0 (0: state
    made before any step, as torch.optim.Adagrad's). A negative or fractional count would turn
    the next step's bias corrections into NaN or nonsense, so it is refused at load."""
    try:
        step = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{where}: step {value!r} is not a number") from None
    if not (math.isfinite(step) and step >= 0 and step == int(step)):
        raise ValueError(f"{where}: step {step} is not a whole number >= 0")
    return step


def _host_number(value: Any, name: str) -> float:
    """A number given as a Python number or a one-element array or tensor (read on the host:
    for a CUDA tensor, one synchronization)."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        if hasattr(value, "item"):
            value = value.item()
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: expected a number or a one-element array, got "
                         f"{type(value).__name__}"
                         f"{tuple(value.shape) if hasattr(value, 'shape') else ''}") from None


def grad_scaling(grad_scale: Any = None, found_inf: Any = None) -> tuple[float, bool]:
    """(unscale, skip) of a step given torch.amp.GradScaler's `grad_scale` (the loss scale the
    gradients carry; None: 1) and `found_inf` (nonzero: some gradient is inf or NaN; None: 0):
    the factor 1 / grad_scale the kernels multiply the gradients by (exact for GradScaler's
    power-of-two scales), and whether the step must change nothing at all."""
    skip = found_inf is not None and _host_number(found_inf, "found_inf") != 0.0
    if grad_scale is None:
        return 1.0, skip
    scale = _host_number(grad_scale, "grad_scale")
    if not (0.0 < scale < math.inf):
        raise ValueError(f"grad_scale must be a finite number > 0, got {scale}")
    return 1.0 / scale, skip


def clip_norm_type(groups: Sequence[dict[str, Any]]) -> float:
    """The grad_norm_type the groups that clip share (one global norm needs one type)."""
    types = {float(g.get("grad_norm_type", 2.0)) for g in groups}
    if len(types) > 1:
        raise ValueError(f"max_grad_norm: the param groups clip by one global norm, but set "
                         f"grad_norm_type to {sorted(types)}")
    return types.pop()


def clip_coefficients(groups: dict[int, dict[str, Any]], norm: float) -> dict[int, float]:
    """Each clipping group's coefficient given the global norm of the step's (unscaled)
    grads, as torch.nn.utils.clip_grad_norm_ clips; a non-finite norm raises, before the
    caller has written anything."""
    if not math.isfinite(norm):
        raise ValueError(f"max_grad_norm: the gradients' norm is {norm} (an inf or NaN "
                         "gradient): nothing was stepped (found_inf= skips such steps, as "
                         "torch.amp.GradScaler does)")
    return {gi: ops.clip_coefficient(g, norm) for gi, g in groups.items()}


def clip_coefficient(group: dict[str, Any], tables: Sequence[TensorTable],
                     backend: str | None, unscale: float = 1.0) -> float:
    """A call's clipping coefficient where the group sets max_grad_norm: the joint norm of
    the tables' grads (unscaled), see clip_coefficients."""
    if group.get("max_grad_norm") is None:
        return 1.0
    from .clip import table_norm

    norm = table_norm(tables, clip_norm_type([group]), backend) * unscale
    return clip_coefficients({0: group}, norm)[0]


def tables_for(op: str, arrays: dict[str, Arrays | None],
               required: Sequence[str] | None = None,
               write_grads: bool = False) -> list[TensorTable]:
    """Validated pointer tables for one call of optimizer `op` (`required`: the rows that must
    be given, by default params and grads; the optimizers pass ("param",) to check params
    alone; `write_grads`: the call unscales the grads in place, so they must be writable)."""
    for slot in ("param", "grad") if required is None else required:
        if arrays.get(slot) is None:
            raise ValueError(f"{slot}: required by {op} (got None)")
    spec = ops.get(op)
    slots = spec.table_slots + ((MASTER,) if arrays.get(MASTER) is not None else ())
    written = {s for s in slots if s not in READ_ONLY or write_grads}
    return build_tables(slots, arrays, written, _allowed(spec), free=slots[2:])


def check_writable_grads(grads: Arrays) -> None:
    """ValueError for a read-only grad: a step with a grad_scale unscales the grads in place."""
    for i, g in enumerate(grads):
        if g is not None:
            check_writable(describe(g, "grad", i), "grad", i)


def table_cache(op: str, *, trusted_shapes: bool = False, master: bool = False) -> TableCache:
    """A TableCache for repeated calls of optimizer `op` over the same params and state
    (trusted_shapes: the grads are torch .grad tensors, whose shapes torch enforces; master:
    with a row of master weights)."""
    spec = ops.get(op)
    slots = spec.table_slots + ((MASTER,) if master else ())
    return TableCache(slots, {s for s in slots if s not in READ_ONLY}, allowed=_allowed(spec),
                      trusted_shapes=trusted_shapes, free=slots[2:])


def _allowed(spec: ops.OpSpec) -> dict[str, tuple[str, ...]]:
    """The storage dtypes per device that `spec`'s kernels take."""
    if spec.dtypes is None:
        return SUPPORTED_DTYPES
    return {dev: tuple(d for d in dtypes if d in spec.dtypes)
            for dev, dtypes in SUPPORTED_DTYPES.items()}


def run(op: str, tables: Sequence[TensorTable], backend: str | None,
        scalars: ops.Scalars, unscale: float = 1.0) -> None:
    """Run optimizer `op` over validated tables, each on the backend for its device, then
    bump the autograd version of every torch tensor written (as torch's in-place ops do).
    unscale != 1 (1 / GradScaler's scale): the grads are unscaled in place first, g = g *
    unscale, in the step's own pass where the backend can (`fused_unscale`), else by a pass of
    its clipping kernel before the step. With the group's stochastic_rounding, 16-bit params
    are rounded stochastically (fastopt.reference.rounding), each tensor keyed by its position
    in the caller's list; a backend without it (`stochastic_rounding`) is refused."""
    base = ops.stochastic_base(scalars)
    builtin = ops.get(op).builtin
    for t in tables:
        b = backends.resolve(backend, t.device[0], t.dtype, builtin=builtin)
        if t.specs.get(MASTER) and not getattr(b, "master_weights", False):
            raise backends.BackendUnavailable(
                f"backend {b.name!r} has no master weights (the cpu and reference backends "
                "have them)")
        if t.mixed() and not getattr(b, "mixed_storage", False):
            rows = [f"{s} {d}" for s, d in zip(t.slots, t.row_dtypes, strict=True)
                    if d not in (None, t.dtype)]
            raise backends.BackendUnavailable(
                f"backend {b.name!r} takes state only in the params' dtype ({t.dtype}), got "
                f"{', '.join(rows)} (the cpu and reference backends take state in another "
                "dtype)")
        kw: dict[str, Any] = {}
        if base is not None and t.dtype in ops.STOCHASTIC_DTYPES:
            if not getattr(b, "stochastic_rounding", False):
                raise backends.BackendUnavailable(
                    f"backend {b.name!r} has no stochastic rounding of {t.dtype} params (the "
                    "cpu and reference backends have it): stochastic_rounding=False steps "
                    "them rounded to nearest")
            kw["stochastic"] = (t.index, base)
        if unscale != 1.0 and getattr(b, "fused_unscale", False):
            kw["unscale"] = unscale
        elif unscale != 1.0:
            b.scale(t.only("grad"), unscale)
        b.step(op, t, scalars, **kw)
    for t in tables:
        t.bump_versions()


GRAD_SCALING_DOC = """

    grad_scale, found_inf: as torch's fused optimizers take them from torch.amp.GradScaler
    (numbers or one-element arrays or tensors). The grads are unscaled in place, g = g *
    (1 / grad_scale), and the step takes them so; a nonzero found_inf skips the step: nothing
    changes, grads included. max_grad_norm: the step takes the grads clipped by their joint
    norm, as torch.nn.utils.clip_grad_norm_ over the list would leave them (grad_norm_type:
    the norm's order), scaled on the fly: the grads themselves are not changed.

    master_params: float32 master copies of float16 and bfloat16 params (None for other
    params): the step updates the master copy in place of the param, and stores the param as
    the master's value rounded to nearest. State may be stored in another dtype than the
    params (float32, bfloat16, float16; float64 for float64 params), each row rounded to its
    own."""


def _functional(name: str, spec: ops.OpSpec, alias: ops.Alias | None) -> Callable[..., Any]:
    """functional.<name>_: one in-place step of `spec` over lists of arrays."""
    defaults = {**spec.defaults, **(alias.defaults if alias else {})}
    fixed = alias.fixed if alias else {}
    rows = [f"{s.name}s" for s in spec.slots]
    extra = tuple(spec.scalar_state)

    def step_(params: Arrays, grads: Arrays, *state: Arrays | None, step: int | None = None,
              first_step: bool = False, master_params: Arrays | None = None,
              grad_scale: Any = None, found_inf: Any = None, backend: str | None = None,
              **kw: Any) -> Any:
        if len(state) > len(rows):
            raise TypeError(f"{name}_() takes {2 + len(rows)} lists of arrays "
                            f"(params, grads, {', '.join(rows)}), got {2 + len(state)}")
        scalar_state = {k: kw.pop(k) for k in extra if k in kw}
        unknown = set(kw) - set(defaults)
        if unknown:
            raise TypeError(f"{name}_() got unexpected keyword arguments {sorted(unknown)}")
        group = {**defaults, **kw, **fixed}
        spec.validate(group)
        if spec.uses_step or step is not None:
            _step(step)
        elif group["stochastic_rounding"]:
            raise ValueError(f"{name}_: stochastic_rounding needs step= (the step count keys "
                             "the random bits: a new one each step)")
        needed = spec.state_slots(group)
        arrays: dict[str, Arrays | None] = {"param": params, "grad": grads,
                                            MASTER: master_params}
        for slot, arg, given in zip(spec.slots, rows, (*state, *[None] * len(rows)),
                                    strict=False):
            if slot.name in needed and given is None:
                raise ValueError(f"{arg}: required by {name}_ with these options")
            arrays[slot.name] = given if slot.name in needed else None
        unscale, skip = grad_scaling(grad_scale, found_inf)
        tables = tables_for(spec.name, arrays, write_grads=unscale != 1.0)
        if skip:  # GradScaler found an inf or NaN: nothing changes
            return {k: float(scalar_state.get(k, s.init))
                    for k, s in spec.scalar_state.items()} or None
        scalars = spec.prepare(group, float(step or 0), first_step, scalar_state,
                               grad_coef=clip_coefficient(group, tables, backend, unscale))
        run(spec.name, tables, backend, scalars, unscale)
        return scalars.after or None

    optional = {s.name for s in spec.slots if s.when is not None}
    P = inspect.Parameter
    params = [P("params", P.POSITIONAL_OR_KEYWORD), P("grads", P.POSITIONAL_OR_KEYWORD)]
    params += [P(r, P.POSITIONAL_OR_KEYWORD, default=None) if s.name in optional
               else P(r, P.POSITIONAL_OR_KEYWORD) for r, s in zip(rows, spec.slots, strict=True)]
    # the step count: the bias corrections' (required), else only stochastic rounding's key
    params.append(P("step", P.KEYWORD_ONLY) if spec.uses_step
                  else P("step", P.KEYWORD_ONLY, default=None))
    if spec.fresh_flag:
        params.append(P("first_step", P.KEYWORD_ONLY, default=False))
    params += [P(k, P.KEYWORD_ONLY, default=s.init) for k, s in spec.scalar_state.items()]
    params += [P(k, P.KEYWORD_ONLY, default=v) for k, v in defaults.items() if k not in fixed]
    params += [P(k, P.KEYWORD_ONLY, default=None)
               for k in ("master_params", "grad_scale", "found_inf", "backend")]
    step_.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    step_.__name__ = step_.__qualname__ = f"{name}_"
    step_.spec = spec  # type: ignore[attr-defined]
    rows_doc = ", ".join(rows)
    step_.__doc__ = (f"One {alias.cls if alias else spec.cls} step in place over lists of "
                     f"arrays (params, grads, {rows_doc}); formula: fastopt.reference."
                     f"{spec.name}.\n\n    " + (alias.doc if alias and alias.doc else spec.doc)
                     + GRAD_SCALING_DOC
                     + ("\n\n    Returns the scalar state after the step: "
                        f"{', '.join(extra)}." if extra else ""))
    return step_


for _cls, _spec, _alias in ops.classes():
    globals()[f"{_cls.lower()}_"] = _functional(_cls.lower(), _spec, _alias)

__all__ = [f"{c.lower()}_" for c, _, _ in ops.classes()]
