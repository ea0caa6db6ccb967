"""The registry of benchmarkable ops: what each one moves, and how to run it on every backend.

An entry names the op's streams (so its counted bytes follow the table in
docs/architecture.md: Adam in fp32 reads p, g, m, v and writes p, m, v, 28 bytes per element)
and a `setup` that, for one case, returns a callable per variant: each fastopt backend,
torch's fused and foreach implementations where torch has the op. Adding an op (a loss, say) is
one `register(...)` call with its streams and setup function.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._arrays import numpy_dtype
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
        return numpy_dtype(self.dtype).itemsize


Setup = Callable[[Case, str], Callable[[], object]]


@dataclass(frozen=True)
class Op:
    name: str
    streams: Streams
    setup: Setup
    doc: str
    torch: tuple[str, ...] = (TORCH_FUSED, TORCH_FOREACH)  # torch variants of this op
    tags: tuple[str, ...] = field(default=())
    #: floating-point operations of one call, for compute-bound ops (linear_cross_entropy)
    flops: Callable[[Case], int] | None = None
    #: more variants timed in the same run, name -> setup(case): e.g. the GEMMs alone, the
    #: floor of a GEMM-bound op
    baselines: dict[str, Callable[[Case], Callable[[], object]]] = field(default_factory=dict)
    #: an optimizer whose state rows (the last `state_rows` read-modify-write streams) are
    #: stored in this dtype whatever the case's (state_dtype=)
    state_dtype: str | None = None
    state_rows: int = 0
    #: an optimizer op's making: (fastopt.optim class, options, amp), for with_state
    optimizer: tuple[str, dict[str, Any], bool] | None = None

    def nbytes(self, case: Case) -> int:
        """Bytes the op must move (the performance model in docs/architecture.md)."""
        if self.state_dtype is None or self.state_dtype == case.dtype:
            return self.streams.nbytes(case.numel, case.itemsize)
        own = Streams(self.streams.rw - self.state_rows, self.streams.ro, self.streams.wo)
        state = Streams(self.state_rows, 0)
        if self.state_dtype == "8bit" and case.dtype != "float64":
            from ..reference.quant8 import MIN_SIZE, packed_size

            if case.size >= MIN_SIZE:  # codes and block absmax, read and written
                return (own.nbytes(case.numel, case.itemsize)
                        + state.nbytes(packed_size(case.size) * case.tensors, 1))
        itemsize = 4 if self.state_dtype == "8bit" else numpy_dtype(self.state_dtype).itemsize
        return own.nbytes(case.numel, case.itemsize) + state.nbytes(case.numel, itemsize)


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
        out.append([(rng.standard_normal(case.size) * scale).astype(numpy_dtype(case.dtype))
                    for _ in range(case.tensors)])
    return out


def _to_torch(arrays: list[np.ndarray]) -> list[Any]:
    torch = _torch()
    # torch takes no ml_dtypes array: bfloat16 goes through float32 (exact both ways)
    return [torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
            if a.dtype.name == "bfloat16" else torch.from_numpy(a.copy()) for a in arrays]


def _loss_dtype(case: Case) -> str:
    """The losses' kernels take float32 and float64."""
    if case.dtype not in ("float32", "float64"):
        raise Unavailable(f"the loss kernels take float32 or float64, not {case.dtype}")
    return case.dtype


#: the loss scale of the amp ops: 1 + 2^-23, so that unscaling does its work every call (a
#: scale of 1 is skipped) while the grads, unscaled in place call after call, barely shrink
AMP_SCALE = 1.0 + 2.0**-23


def _optim_setup(fastopt_cls: str, torch_cls: str | None, kwargs: dict[str, Any],
                 torch_kwargs: dict[str, Any] | None = None, amp: bool = False,
                 torch_clip: float | None = None) -> Setup:
    """Setup of a stateful optimizer: params and grads made once, the same tensors stepped
    again every call (steady state, Python overhead included), as in a training loop. amp:
    every step takes a grad_scale and found_inf (torch.amp.GradScaler's), unscaling the grads
    in place. torch_clip: torch's steps follow clip_grad_norm_(max_norm=torch_clip, foreach)
    (what fastopt's max_grad_norm fuses)."""

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
                tkw = kwargs if torch_kwargs is None else torch_kwargs
                opt = getattr(torch.optim, torch_cls)(tparams, **tkw, **{flag: True})
                if amp:
                    if variant != TORCH_FUSED:
                        raise Unavailable("only torch's fused steps take a grad scale")
                    opt.grad_scale = torch.tensor(AMP_SCALE)
                    opt.found_inf = torch.tensor(0.0)
                opt.step()
            except (TypeError, RuntimeError) as exc:
                raise Unavailable(f"torch.optim.{torch_cls}({flag}=True): {exc}") from None
            if torch_clip is not None:
                clip = torch.nn.utils.clip_grad_norm_

                def clip_step() -> None:
                    clip(tparams, torch_clip, foreach=True)
                    opt.step()

                return clip_step
            return opt.step
        import fastopt

        step_kw = {"grad_scale": AMP_SCALE, "found_inf": 0.0} if amp else {}
        try:
            opt = getattr(fastopt.optim, fastopt_cls)(params, backend=variant, **kwargs)
            opt.step(grads, **step_kw)
        except fastopt.backends.BackendUnavailable as exc:
            raise Unavailable(str(exc)) from None
        return lambda: opt.step(grads, **step_kw)

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


def _optim(name: str, cls: str, options: dict[str, Any], doc: str, amp: bool = False) -> Op:
    """A bench op stepping fastopt.optim.<cls>(**options): streams from the spec's state
    slots for these options (param and state read and written, the grad read; with `amp`
    written too; with max_grad_norm read twice, its norm pass first). Options torch lacks
    (stochastic_rounding) leave torch out; torch's steps clip first for max_grad_norm."""
    from .. import ops

    spec, alias = next((s, a) for c, s, a in ops.classes() if c == cls)
    group = {**spec.defaults, **(alias.defaults if alias else {}), **options}
    torch_cls = alias.torch if alias else spec.torch
    torch_clip = options.get("max_grad_norm")
    torch_kwargs = {k: v for k, v in options.items()
                    if k not in ops.FRAME_DEFAULTS and k not in ops.STATE_OPTIONS}
    if set(options) & set(ops.FRAME_DEFAULTS) - {"max_grad_norm"}:
        torch_cls = None
    rows = 1 + len(spec.state_slots(group))
    reads = 2 if torch_clip is not None else 1
    return register(Op(name, Streams(rows + 1, 0) if amp else Streams(rows, reads),
                       _optim_setup(cls, torch_cls, options, torch_kwargs, amp=amp,
                                    torch_clip=torch_clip), doc,
                       (TORCH_FUSED,) if amp and torch_cls else _torch_variants(torch_cls),
                       tags=("optim",), state_dtype=options.get("state_dtype"),
                       state_rows=rows - 1, optimizer=(cls, dict(options), amp)))


#: the states --state takes, as the ops' name suffixes
STATES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "8bit": "8bit"}


def with_state(name: str, state: str) -> str:
    """The name of optimizer op `name` with its state stored as `state` (a state_dtype:
    float32, bfloat16, float16 or 8bit), registering it on first use: `name` itself where the
    op already stores it so. ValueError for an op that is no optimizer or a state not in
    STATES."""
    op = REGISTRY[name]
    if state not in STATES:
        raise ValueError(f"unknown state {state!r} (choose from {', '.join(STATES)})")
    if op.optimizer is None:
        raise ValueError(f"{name} is no optimizer: it keeps no state")
    cls, options, amp = op.optimizer
    if options.get("state_dtype") == state:
        return name
    derived = f"{name}[{STATES[state]}]"
    if derived not in REGISTRY:
        _optim(derived, cls, {**options, "state_dtype": state},
               f"{op.doc}; state stored in {state}", amp=amp)
    return derived


def _torch_variants(torch_cls: str | None) -> tuple[str, ...]:
    """torch's implementations of torch.optim.<torch_cls>: fused where its constructor takes
    `fused`, foreach always (none without torch: no torch column is measured then)."""
    if torch_cls is None:
        return ()
    try:
        import torch
    except ImportError:
        return (TORCH_FUSED, TORCH_FOREACH)
    params = inspect.signature(getattr(torch.optim, torch_cls)).parameters
    return (TORCH_FUSED, TORCH_FOREACH) if "fused" in params else (TORCH_FOREACH,)


def _register_optimizers() -> None:
    """Every optimizer class of fastopt.ops at its defaults (lr 1e-3 for SGD), and a few
    variants that move more bytes."""
    from .. import ops

    for cls, spec, alias in ops.classes():
        options = {"lr": 1e-3} if spec.name == "sgd" else {}
        where = f"torch.optim.{alias.torch if alias else spec.torch}" \
            if (alias.torch if alias else spec.torch) else "not in torch"
        _optim(cls.lower(), cls, options, f"{cls}, default hyperparameters ({where})")
    _optim("sgd_momentum", "SGD", {"lr": 1e-3, "momentum": 0.9},
           "SGD, momentum 0.9 (+ momentum buffer)")
    _optim("adam_amsgrad", "Adam", {"amsgrad": True}, "Adam with AMSGrad (+ max_exp_avg_sq)")
    _optim("adamw_amp", "AdamW", {}, "AdamW taking GradScaler's scale (grads unscaled in place)",
           amp=True)
    _optim("adamw_sr", "AdamW", {"stochastic_rounding": True},
           "AdamW, 16-bit params rounded stochastically (--dtype bfloat16,float16)")
    _optim("adamw_clip", "AdamW", {"max_grad_norm": 1.0},
           "AdamW, max_grad_norm 1 (torch: clip_grad_norm_ then the step)")
    for short, state in (("bf16", "bfloat16"), ("fp32", "float32")):
        _optim(f"adamw_{short}_state", "AdamW", {"state_dtype": state},
               f"AdamW, state stored in {state} whatever the params' dtype (torch: state in the "
               "params' dtype)")
    _optim("adamw_8bit", "AdamW", {"state_dtype": "8bit"},
           "AdamW8bit: moments quantized blockwise in 8 bits (torch: its AdamW)")


_register_optimizers()
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
        logits = rng.standard_normal((rows, classes)).astype(_loss_dtype(case))
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
        from .. import losses

        # in place, the logits become the gradient: later calls run on those values, which
        # costs the same (every element is read and written once either way); otherwise the
        # gradient goes to one grad_out= buffer, as for the element-wise losses
        out = None if inplace else np.empty_like(logits)
        return _fastopt_call(variant, lambda: losses.cross_entropy(
            logits, target, inplace=inplace, grad_out=out, backend=variant))

    return setup


def _fastopt_call(variant: str, fn: Callable[[], object]) -> Callable[[], object]:
    """fn, called once to compile and check that the backend runs this op."""
    from .. import backends

    try:
        fn()
    except (backends.BackendUnavailable, NotImplementedError, AttributeError) as exc:
        raise Unavailable(str(exc)) from None
    return fn


def _elementwise_setup(fastopt_fn: str, torch_fn: str, kind: str,
                       kwargs: dict[str, Any] | None = None) -> Setup:
    """An element-wise loss forward + gradient over `size` elements (mean reduction)."""
    kwargs = kwargs or {}

    def setup(case: Case, variant: str) -> Callable[[], object]:
        if case.tensors != 1:
            raise Unavailable("a loss takes one input array (no --tensors)")
        rng = np.random.default_rng(0)
        x = rng.standard_normal(case.size)
        y = rng.random(case.size) if kind == "probs" else rng.standard_normal(case.size)
        if fastopt_fn == "kl_div":
            x = np.log(rng.random(case.size) + 1e-3)
        x, y = x.astype(_loss_dtype(case)), y.astype(case.dtype)
        if variant == TORCH_AUTOGRAD:
            torch = _torch()
            xt = torch.from_numpy(x).requires_grad_()
            yt = torch.from_numpy(y)
            fn = getattr(torch.nn.functional, torch_fn)

            def step() -> None:
                xt.grad = None
                fn(xt, yt, **kwargs).backward()

            return step
        if variant in TORCH_VARIANTS:
            raise Unavailable(f"torch has no fused {torch_fn} with its gradient")
        from .. import losses

        fn = getattr(losses, fastopt_fn)
        # the gradient goes to one buffer for every call (grad_out=), as a training loop keeps
        # it: a new 64 MB array per call costs its page faults, about the loss's own time
        grad = np.empty_like(x)
        return _fastopt_call(variant, lambda: fn(x, y, backend=variant, grad_out=grad,
                                                 **kwargs))

    return setup


#: linear_cross_entropy cases: a vocabulary of this many classes and hidden size; the case's
#: size is the number of logits, N x V (N = size / V rows, at least one)
LINEAR_CE_VOCAB = 8192
LINEAR_CE_HIDDEN = 512


def _linear_ce_shape(case: Case) -> tuple[int, int, int]:
    v = min(LINEAR_CE_VOCAB, case.size)
    return max(1, case.size // v), LINEAR_CE_HIDDEN, v


def _linear_ce_data(case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, h, v = _linear_ce_shape(case)
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((n, h)).astype(_loss_dtype(case))
    weight = (rng.standard_normal((v, h)) / np.sqrt(h)).astype(case.dtype)
    return hidden, weight, rng.integers(0, v, n)


def _linear_ce_setup(case: Case, variant: str) -> Callable[[], object]:
    """hidden [N, H] @ weight.T [H, V] + cross-entropy, forward and the three gradients."""
    if case.tensors != 1:
        raise Unavailable("a loss takes one hidden array (no --tensors)")
    hidden, weight, target = _linear_ce_data(case)
    if variant in (TORCH_AUTOGRAD, "fastopt.torch"):
        torch = _torch()
        h, w = (torch.from_numpy(a).requires_grad_() for a in (hidden, weight))
        t = torch.from_numpy(target)

        def step() -> None:
            h.grad = w.grad = None
            if variant == TORCH_AUTOGRAD:  # unfused: the [N, V] logits and their gradient
                torch.nn.functional.cross_entropy(h @ w.T, t).backward()
            else:
                import fastopt.torch as fo

                fo.linear_cross_entropy(h, w, t).backward()

        return step
    if variant in TORCH_VARIANTS:
        raise Unavailable("torch has no fused linear cross-entropy")
    from .. import losses

    return _fastopt_call(variant, lambda: losses.linear_cross_entropy(hidden, weight, target,
                                                                      backend=variant))


def _numpy_gemms(case: Case) -> Callable[[], object]:
    """The three GEMMs of linear_cross_entropy alone, through NumPy: the floor it is held to."""
    hidden, weight, _ = _linear_ce_data(case)

    def step() -> None:
        logits = hidden @ weight.T
        logits @ weight
        logits.T @ hidden

    return step


def _register_losses() -> None:
    import importlib.util

    if importlib.util.find_spec("fastopt.losses") is None:
        return
    # read input and target, write the gradient: 12 bytes per float32 element
    for name, fn, torch_fn, kind, kw in (
            ("mse", "mse_loss", "mse_loss", "normal", {}),
            ("bce_with_logits", "binary_cross_entropy_with_logits",
             "binary_cross_entropy_with_logits", "probs", {}),
            ("huber", "huber_loss", "huber_loss", "normal", dict(delta=1.0)),
            ("kl_div", "kl_div", "kl_div", "probs", dict(reduction="batchmean"))):
        register(Op(name, Streams(0, 2, 1), _elementwise_setup(fn, torch_fn, kind, kw),
                    f"{fn} forward + gradient (reads input and target, writes the gradient; "
                    "fastopt into one grad_out= buffer)",
                    (TORCH_AUTOGRAD,), tags=("loss",)))
    # per logit: the GEMM writes it, the cross-entropy kernel reads and overwrites it with
    # its gradient, the two gradient GEMMs read it (5 accesses; the inputs and gradients of
    # the projection are not counted). 6 N V H flops: three GEMMs of N x V x H.
    register(Op("linear_cross_entropy", Streams(1, 2, 1), _linear_ce_setup,
                f"linear_cross_entropy forward + 3 gradients, size = N x V logits "
                f"(V = {LINEAR_CE_VOCAB}, H = {LINEAR_CE_HIDDEN}); GFLOP/s beside "
                "numpy-gemms (the three GEMMs alone) and fastopt.torch (torch's GEMMs)",
                (TORCH_AUTOGRAD,), tags=("loss",),
                flops=lambda case: 6 * int(np.prod(_linear_ce_shape(case))),
                baselines={"numpy-gemms": _numpy_gemms,
                           "fastopt.torch": lambda case: _linear_ce_setup(case,
                                                                          "fastopt.torch")}))
    # read logits, write the gradient: 8 bytes per float32 element (docs/architecture.md)
    register(Op("cross_entropy", Streams(0, 1, 1), _cross_entropy_setup(False),
                "softmax cross-entropy forward + gradient, logits (size/4096, 4096); fastopt "
                "into one grad_out= buffer",
                (TORCH_AUTOGRAD,), tags=("loss",)))
    register(Op("cross_entropy_inplace", Streams(1, 0), _cross_entropy_setup(True),
                "cross-entropy with the gradient written over the logits",
                (TORCH_AUTOGRAD,), tags=("loss",)))


_register_losses()


__all__ = ["LINEAR_CE_HIDDEN", "LINEAR_CE_VOCAB", "LOSS_CLASSES", "REGISTRY", "TORCH_AUTOGRAD",
           "TORCH_FOREACH", "TORCH_FUSED", "TORCH_VARIANTS", "Case", "Op", "Unavailable",
           "register"]
