"""Stateless, in-place, multi-tensor optimizer steps: one fused kernel call per (dtype, device)
steps every tensor of the lists. The stateful optimizers in fastopt.optim sit on top.

Every function takes lists of arrays (NumPy, PyTorch, CuPy, ... of one framework), validates
them (shapes, dtypes, devices, contiguity, writability, aliasing) and updates params and
state in place. `backend=` picks the implementation (see fastopt.backends).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from . import backends
from ._table import TableCache, TensorTable, build_tables

Arrays = Sequence[Any]

#: Pointer-table rows of each optimizer, in the order of csrc/include/fastopt/rules/<op>.h.
SLOTS: dict[str, tuple[str, ...]] = {
    "sgd": ("param", "grad", "momentum_buffer"),
    "adam": ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "adagrad": ("param", "grad", "state_sum"),
    "rmsprop": ("param", "grad", "square_avg", "momentum_buffer", "grad_avg"),
    "lion": ("param", "grad", "exp_avg"),
}
#: Rows each optimizer reads only.
READ_ONLY = {"grad"}
#: Rows every call of an optimizer needs (the others depend on its options, which each
#: function below checks): a kernel would dereference a missing row.
REQUIRED = {
    "sgd": ("param", "grad"),
    "adam": ("param", "grad", "exp_avg", "exp_avg_sq"),
    "adagrad": ("param", "grad", "state_sum"),
    "rmsprop": ("param", "grad", "square_avg"),
    "lion": ("param", "grad", "exp_avg"),
}


def _nonneg(name: str, value: float) -> None:
    if not 0.0 <= value < math.inf:
        raise ValueError(f"Invalid {name}: {value} (must be a finite number >= 0)")


def _beta(name: str, value: float, closed: bool = False) -> None:
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"Invalid {name}: {value} (must be in [0, 1{']' if closed else ')'})")


def _step(step: int) -> None:
    """A step count: a whole number >= 1 (the bias corrections divide by 1 - beta^step)."""
    try:
        ok = not isinstance(step, bool) and step >= 1 and math.isfinite(step) \
            and step == int(step)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"Invalid step: {step!r} (a whole number >= 1; the first step is 1)")


def check_sgd(lr: float, momentum: float, dampening: float, weight_decay: float,
              nesterov: bool, **_: Any) -> None:
    _nonneg("learning rate", lr)
    _nonneg("momentum value", momentum)
    _nonneg("weight_decay value", weight_decay)
    if not math.isfinite(dampening):
        raise ValueError(f"Invalid dampening value: {dampening}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def check_adam(lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
               **_: Any) -> None:
    _nonneg("learning rate", lr)
    _nonneg("epsilon value", eps)
    _beta("beta parameter at index 0", beta1)
    _beta("beta parameter at index 1", beta2)
    _nonneg("weight_decay value", weight_decay)


def check_adagrad(lr: float, lr_decay: float, weight_decay: float, eps: float,
                  **_: Any) -> None:
    _nonneg("learning rate", lr)
    _nonneg("lr_decay value", lr_decay)
    _nonneg("weight_decay value", weight_decay)
    _nonneg("epsilon value", eps)


def check_rmsprop(lr: float, alpha: float, eps: float, weight_decay: float, momentum: float,
                  **_: Any) -> None:
    _nonneg("learning rate", lr)
    _nonneg("epsilon value", eps)
    _nonneg("momentum value", momentum)
    _nonneg("weight_decay value", weight_decay)
    _beta("alpha value", alpha, closed=True)


def check_lion(lr: float, beta1: float, beta2: float, weight_decay: float, **_: Any) -> None:
    _nonneg("learning rate", lr)
    _beta("beta parameter at index 0", beta1, closed=True)
    _beta("beta parameter at index 1", beta2, closed=True)
    _nonneg("weight_decay value", weight_decay)


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


def tables_for(op: str, arrays: dict[str, Arrays | None],
               required: Sequence[str] | None = None) -> list[TensorTable]:
    """Validated pointer tables for one call of optimizer `op` (`required`: the rows that must
    be given, by default REQUIRED[op]; the optimizers pass ("param",) to check params alone)."""
    for slot in REQUIRED[op] if required is None else required:
        if arrays.get(slot) is None:
            raise ValueError(f"{slot}: required by {op} (got None)")
    slots = SLOTS[op]
    written = {s for s in slots if s not in READ_ONLY}
    return build_tables(slots, arrays, written)


def table_cache(op: str, *, trusted_shapes: bool = False) -> TableCache:
    """A TableCache for repeated calls of optimizer `op` over the same params and state
    (trusted_shapes: the grads are torch .grad tensors, whose shapes torch enforces)."""
    slots = SLOTS[op]
    return TableCache(slots, {s for s in slots if s not in READ_ONLY},
                      trusted_shapes=trusted_shapes)


def run(op: str, tables: Sequence[TensorTable], backend: str | None, **hyper: Any) -> None:
    """Run optimizer `op` over validated tables, each on the backend for its device, then
    bump the autograd version of every torch tensor written (as torch's in-place ops do)."""
    for t in tables:
        getattr(backends.resolve(backend, t.device[0]), op)(t, **hyper)
    for t in tables:
        t.bump_versions()


def sgd_(params: Arrays, grads: Arrays, momentum_buffers: Arrays | None = None, *,
         lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
         weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False,
         first_step: bool = False, backend: str | None = None) -> None:
    """SGD step in place; see fastopt.reference.sgd for the formula. `momentum_buffers` is
    required when momentum != 0; with first_step=True the buffers are overwritten with the
    first update, as torch.optim.SGD initializes them."""
    check_sgd(lr, momentum, dampening, weight_decay, nesterov)
    if momentum != 0 and momentum_buffers is None:
        raise ValueError("momentum_buffers: required when momentum != 0")
    tables = tables_for("sgd", {"param": params, "grad": grads,
                                "momentum_buffer": momentum_buffers if momentum != 0 else None})
    run("sgd", tables, backend, lr=lr, momentum=momentum, dampening=dampening,
        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, first_step=first_step)


def adam_(params: Arrays, grads: Arrays, exp_avgs: Arrays, exp_avg_sqs: Arrays,
          max_exp_avg_sqs: Arrays | None = None, *, step: int, lr: float = 1e-3,
          beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.0, decoupled: bool = False, amsgrad: bool = False,
          maximize: bool = False, bias_correction: bool = True, eps_inside_sqrt: bool = False,
          backend: str | None = None) -> None:
    """Adam step in place (AdamW with decoupled=True); see fastopt.reference.adam."""
    check_adam(lr, beta1, beta2, eps, weight_decay)
    _step(step)
    if amsgrad and max_exp_avg_sqs is None:
        raise ValueError("max_exp_avg_sqs: required when amsgrad=True")
    tables = tables_for("adam", {"param": params, "grad": grads, "exp_avg": exp_avgs,
                                 "exp_avg_sq": exp_avg_sqs,
                                 "max_exp_avg_sq": max_exp_avg_sqs if amsgrad else None})
    run("adam", tables, backend, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
        weight_decay=weight_decay, decoupled=decoupled, amsgrad=amsgrad, maximize=maximize,
        bias_correction=bias_correction, eps_inside_sqrt=eps_inside_sqrt)


def adamw_(params: Arrays, grads: Arrays, exp_avgs: Arrays, exp_avg_sqs: Arrays,
           max_exp_avg_sqs: Arrays | None = None, *, step: int, lr: float = 1e-3,
           weight_decay: float = 1e-2, **kwargs: Any) -> None:
    """AdamW step in place: adam_ with decoupled weight decay (default 1e-2, as torch)."""
    adam_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step=step, lr=lr,
          weight_decay=weight_decay, decoupled=True, **kwargs)


def adagrad_(params: Arrays, grads: Arrays, state_sums: Arrays, *, step: int,
             lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
             eps: float = 1e-10, maximize: bool = False, backend: str | None = None) -> None:
    """Adagrad step in place; see fastopt.reference.adagrad."""
    check_adagrad(lr, lr_decay, weight_decay, eps)
    _step(step)
    tables = tables_for("adagrad", {"param": params, "grad": grads, "state_sum": state_sums})
    run("adagrad", tables, backend, step=step, lr=lr, lr_decay=lr_decay,
        weight_decay=weight_decay, eps=eps, maximize=maximize)


def rmsprop_(params: Arrays, grads: Arrays, square_avgs: Arrays,
             momentum_buffers: Arrays | None = None, grad_avgs: Arrays | None = None, *,
             lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
             weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
             maximize: bool = False, backend: str | None = None) -> None:
    """RMSprop step in place; see fastopt.reference.rmsprop."""
    check_rmsprop(lr, alpha, eps, weight_decay, momentum)
    if momentum > 0 and momentum_buffers is None:
        raise ValueError("momentum_buffers: required when momentum > 0")
    if centered and grad_avgs is None:
        raise ValueError("grad_avgs: required when centered=True")
    tables = tables_for("rmsprop", {
        "param": params, "grad": grads, "square_avg": square_avgs,
        "momentum_buffer": momentum_buffers if momentum > 0 else None,
        "grad_avg": grad_avgs if centered else None})
    run("rmsprop", tables, backend, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
        momentum=momentum, centered=centered, maximize=maximize)


def lion_(params: Arrays, grads: Arrays, exp_avgs: Arrays, *, lr: float = 1e-4,
          beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0,
          maximize: bool = False, backend: str | None = None) -> None:
    """Lion step in place; see fastopt.reference.lion."""
    check_lion(lr, beta1, beta2, weight_decay)
    tables = tables_for("lion", {"param": params, "grad": grads, "exp_avg": exp_avgs})
    run("lion", tables, backend, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
        maximize=maximize)


__all__ = ["adagrad_", "adam_", "adamw_", "lion_", "rmsprop_", "sgd_"]
