"""The registry of benchmarkable ops: what each one moves, and how to run it on every backend.

An entry names the op's streams (so its counted bytes follow the table in
docs/architecture.md: Adam in fp32 reads p, g, m, v and writes p, m, v, 28 bytes per element)
and a `setup` that, for one case, returns a callable per variant: each fastopt backend,
torch's fused and foreach implementations where torch has the op. Adding an op (a loss, say) is
one `register(...)` call with its streams and setup function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .probe import Streams

#: torch's implementations, as variant names
TORCH_FUSED = "torch-fused"
TORCH_FOREACH = "torch-foreach"
#: torch's unfused forward + backward (autograd), for the losses
TORCH_AUTOGRAD = "torch"
TORCH_VARIANTS = (TORCH_FUSED, TORCH_FOREACH, TORCH_AUTOGRAD)


class Unavailable(Exception):
    """This variant cannot run here; the message says why."""


@dataclass(frozen=True)
class Case:
    """One measured configuration: `tensors` tensors of `size` elements each."""

    op: str
    dtype: str
    size: int
    tensors: int = 1

    @property
    def numel(self) -> int:
        return self.size * self.tensors

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


Setup = Callable[[Case, str], Callable[[], object]]


@dataclass(frozen=True)
class Op:
    name: str
    streams: Streams
    setup: Setup
    doc: str
    torch: tuple[str, ...] = (TORCH_FUSED, TORCH_FOREACH)  # torch variants of this op
    tags: tuple[str, ...] = field(default=())

    def nbytes(self, case: Case) -> int:
        """Bytes the op must move (the performance model in docs/architecture.md)."""
        return self.streams.nbytes(case.numel, case.itemsize)


REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    REGISTRY[op.name] = op
    return op


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"torch is not installed ({exc})") from None
    return torch


def _arrays(case: Case, count: int, scale: float = 1.0, seed: int = 0) -> list[list[np.ndarray]]:
    """`count` lists of case.tensors NumPy arrays of case.size elements (separate buffers)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        out.append([(rng.standard_normal(case.size) * scale).astype(case.dtype)
                    for _ in range(case.tensors)])
    return out


def _to_torch(arrays: list[np.ndarray]) -> list[Any]:
    torch = _torch()
    return [torch.from_numpy(a.copy()) for a in arrays]


def _optim_setup(fastopt_cls: str, torch_cls: str | None, kwargs: dict[str, Any],
                 torch_kwargs: dict[str, Any] | None = None) -> Setup:
    """Setup of a stateful optimizer: params and grads made once, the same tensors stepped
    again every call (steady state, Python overhead included), as in a training loop."""

    def setup(case: Case, variant: str) -> Callable[[], object]:
        params, grads = _arrays(case, 2)
        grads = [g * np.asarray(1e-3, g.dtype) for g in grads]
        if variant in TORCH_VARIANTS:
            torch = _torch()
            if torch_cls is None:
                raise Unavailable("torch has no such optimizer")
            tparams = [t.requires_grad_() for t in _to_torch(params)]
            for p, g in zip(tparams, _to_torch(grads), strict=True):
                p.grad = g
            flag = "fused" if variant == TORCH_FUSED else "foreach"
            try:
                opt = getattr(torch.optim, torch_cls)(tparams, **(torch_kwargs or kwargs),
                                                      **{flag: True})
                opt.step()
            except (TypeError, RuntimeError) as exc:
                raise Unavailable(f"torch.optim.{torch_cls}({flag}=True): {exc}") from None
            return opt.step
        import fastopt

        try:
            opt = getattr(fastopt.optim, fastopt_cls)(params, backend=variant, **kwargs)
            opt.step(grads)
        except fastopt.backends.BackendUnavailable as exc:
            raise Unavailable(str(exc)) from None
        return lambda: opt.step(grads)

    return setup


def _clip_setup(fn: str, arg: float) -> Setup:
    def setup(case: Case, variant: str) -> Callable[[], object]:
        (grads,) = _arrays(case, 1)
        if variant in TORCH_VARIANTS:
            torch = _torch()
            if variant == TORCH_FUSED:
                raise Unavailable(f"torch.nn.utils.{fn} has no fused implementation")
            params = []
            for g in _to_torch(grads):
                p = torch.empty_like(g)
                p.grad = g
                params.append(p)
            torch_fn = getattr(torch.nn.utils, fn)
            return lambda: torch_fn(params, arg, foreach=True)
        import fastopt

        f = getattr(fastopt.clip, fn)
        try:
            f(grads, arg, backend=variant)
        except fastopt.backends.BackendUnavailable as exc:
            raise Unavailable(str(exc)) from None
        return lambda: f(grads, arg, backend=variant)

    return setup


def _optim(name: str, fastopt_cls: str, torch_cls: str | None, streams: Streams, doc: str,
           torch: tuple[str, ...] = (TORCH_FUSED, TORCH_FOREACH), **kwargs: Any) -> Op:
    return register(Op(name, streams, _optim_setup(fastopt_cls, torch_cls, kwargs), doc,
                       torch if torch_cls else (), tags=("optim",)))


_optim("sgd", "SGD", "SGD", Streams(1, 1), "SGD, lr 1e-3 (read p, g; write p)", lr=1e-3)
_optim("sgd_momentum", "SGD", "SGD", Streams(2, 1), "SGD, momentum 0.9 (+ momentum buffer)",
       lr=1e-3, momentum=0.9)
_optim("adam", "Adam", "Adam", Streams(3, 1), "Adam, default hyperparameters")
_optim("adamw", "AdamW", "AdamW", Streams(3, 1), "AdamW, weight decay 1e-2")
_optim("adam_amsgrad", "Adam", "Adam", Streams(4, 1), "Adam with AMSGrad (+ max_exp_avg_sq)",
       amsgrad=True)
_optim("adagrad", "Adagrad", "Adagrad", Streams(2, 1), "Adagrad, default hyperparameters")
_optim("rmsprop", "RMSprop", "RMSprop", Streams(2, 1), "RMSprop, default hyperparameters",
       torch=(TORCH_FOREACH,))
_optim("lion", "Lion", None, Streams(2, 1), "Lion, default hyperparameters (not in torch)")
# the norm reads every gradient, then the scaling reads and writes it: 12 bytes per fp32
register(Op("clip_grad_norm", Streams(1, 1), _clip_setup("clip_grad_norm_", 1.0),
            "clip_grad_norm_, max_norm 1 (norm pass + scaling pass)", (TORCH_FOREACH,),
            tags=("clip",)))
register(Op("clip_grad_value", Streams(1, 0), _clip_setup("clip_grad_value_", 0.5),
            "clip_grad_value_, clip_value 0.5", (TORCH_FOREACH,), tags=("clip",)))


#: logits of a loss case: rows of this many classes (fewer when the size is smaller)
LOSS_CLASSES = 4096


def _cross_entropy_setup(inplace: bool) -> Setup:
    """Softmax cross-entropy forward + gradient over logits (size / C, C), integer targets."""

    def setup(case: Case, variant: str) -> Callable[[], object]:
        if case.tensors != 1:
            raise Unavailable("a loss takes one logits array (no --tensors)")
        classes = min(LOSS_CLASSES, case.size)
        rows = case.size // classes
        rng = np.random.default_rng(0)
        logits = rng.standard_normal((rows, classes)).astype(case.dtype)
        target = rng.integers(0, classes, rows)
        if variant == TORCH_AUTOGRAD:
            torch = _torch()
            x = torch.from_numpy(logits).requires_grad_()
            t = torch.from_numpy(target)

            def step() -> None:
                x.grad = None
                torch.nn.functional.cross_entropy(x, t).backward()

            return step
        if variant in TORCH_VARIANTS:
            raise Unavailable("torch has no fused cross-entropy with its gradient")
        from .. import backends, losses

        try:
            losses.cross_entropy(logits, target, inplace=inplace, backend=variant)
        except (backends.BackendUnavailable, NotImplementedError, AttributeError) as exc:
            raise Unavailable(str(exc)) from None
        # in place, the logits become the gradient: later calls run on those values, which
        # costs the same (every element is read and written once either way)
        return lambda: losses.cross_entropy(logits, target, inplace=inplace, backend=variant)

    return setup


def _register_losses() -> None:
    import importlib.util

    if importlib.util.find_spec("fastopt.losses") is None:
        return
    # read logits, write the gradient: 8 bytes per float32 element (docs/architecture.md)
    register(Op("cross_entropy", Streams(0, 1, 1), _cross_entropy_setup(False),
                "softmax cross-entropy forward + gradient, logits (size/4096, 4096)",
                (TORCH_AUTOGRAD,), tags=("loss",)))
    register(Op("cross_entropy_inplace", Streams(1, 0), _cross_entropy_setup(True),
                "cross-entropy with the gradient written over the logits",
                (TORCH_AUTOGRAD,), tags=("loss",)))


_register_losses()


__all__ = ["LOSS_CLASSES", "REGISTRY", "TORCH_AUTOGRAD", "TORCH_FOREACH", "TORCH_FUSED",
           "TORCH_VARIANTS", "Case", "Op",
           "Unavailable", "register"]
