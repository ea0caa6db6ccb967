"""The op specs: every optimizer defined once.

A spec (`OpSpec`, one module per optimizer in this package) holds what the layers above and
below need to know of an optimizer: its state slots (named as torch.optim's state keys, with
their initial values and when each is present), its hyperparameters with defaults (in
torch.optim's constructor order), their validation (one source of error messages), the host
scalars computed once per step in float64 (bias corrections, effective learning rates, ...),
the reference function (fastopt.reference) and the Numba rule. ``fastopt.functional``,
``fastopt.optim``, ``fastopt.torch``, ``fastopt bench`` and the tests derive every optimizer
from `REGISTRY`; the C++ rule header (csrc/include/fastopt/rules/<op>.h) declares the same
slots and scalars, which `check_native` compares with these at first use.

Every kernel receives one float64 scalar vector, in the same layout on every backend:

    HEAD      one (1.0), sign (-1 with maximize), l1 (coupled coefficient), prox (lr * l1),
              l2 (L2 weight decay coefficient), decay (decoupled factor 1 - lr * weight_decay)
    then      the op's own scalars, in `OpSpec.scalars_order`

and every driver runs the same per-element frame around the op's rule (math type M: float32
for float32 and 16-bit storage, float64 for float64 storage or where the op asks for it):

    p = M(param);  g = M(grad) * sign;  g = g + l1 * sign(p)       (coupled L1)
    g = g + l2 * p;  p = p * decay                                   (weight decay)
    p = rule(p, g, state..., scalars)                                (the op)
    p = sign(p) * max(|p| - prox, 0)                                 (proximal L1)

so the regularizers are written once, in the frame, and no rule repeats them. Weight decay is
L2 (added to the gradient, as torch.optim's `weight_decay`) or decoupled (Loshchilov & Hutter,
"Decoupled Weight Decay Regularization", ICLR 2019) as the group's `decoupled_weight_decay`
says, else as the spec's `decoupled`.

L1 regularization is thus available on every optimizer (`l1`, `l1_mode`): "coupled" adds the
subgradient l1 * sign(p) of the penalty l1 * |p| to the gradient (sign(0) = 0), as
weight_decay adds that of the L2 penalty; "proximal" applies the soft threshold after the
update instead, which produces exact zeros (forward-backward splitting: Duchi & Singer,
"Efficient Online and Batch Learning Using Forward Backward Splitting", JMLR 2009).

The frame's other options, `stochastic_rounding` and `seed`, round float16 and bfloat16 params
stochastically (fastopt.reference.rounding; the key: `stochastic_base`).
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The common head of every scalar vector.
HEAD = ("one", "sign", "l1", "prox", "l2", "decay")
#: The scalars of the moments every Adam variant keeps (see `moments`).
MOMENTS = ("beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "eps")
#: Keys torch.optim keeps in param groups that no fastopt kernel reads.
TORCH_FLAGS = frozenset({"foreach", "fused", "capturable", "differentiable"})
#: The modes of L1 regularization, which every optimizer takes (fastopt's, not torch's).
L1_MODES = ("coupled", "proximal")
#: The frame's hyperparameters, which every optimizer takes (fastopt's, not torch's): L1
#: regularization, stochastic rounding of 16-bit params (see `stochastic_base`), and gradient
#: clipping by the global norm fused into the step (the optimizer classes: `clip_coefficient`).
FRAME_DEFAULTS = {"l1": 0.0, "l1_mode": "coupled", "stochastic_rounding": False, "seed": 0,
                  "max_grad_norm": None, "grad_norm_type": 2.0}
#: Options of the optimizer classes (not of the stateless functional steps, which take state
#: arrays as given): the dtype new state is stored in (None: the param's; float32, bfloat16
#: or float16 for float32 and 16-bit params, math in float32 whatever the storage; float64
#: and complex params keep their own dtype); and master_weights, a float32 master copy of
#: every float16 and bfloat16 param kept in the state (state key "master_param"), which the
#: step updates in the param's place, storing the param as its rounding (apex's FusedAdam
#: master_weights).
STATE_OPTIONS = {"state_dtype": None, "master_weights": False}
#: The dtypes state_dtype may name ("8bit": blockwise-quantized, fastopt.reference.quant8;
#: tensors under quant8.MIN_SIZE elements keep float32 state).
STATE_DTYPE_NAMES = ("float32", "bfloat16", "float16", "8bit")
#: Storage dtypes whose params are rounded stochastically with stochastic_rounding=True.
STOCHASTIC_DTYPES = ("float16", "bfloat16")


@dataclass(frozen=True)
class Slot:
    """A state row of the kernel's pointer table. `key`: the key in torch.optim's per-param
    state (default: the name); `when(group)`: whether a group with these hyperparameters
    needs it (default: always); `init(group)`: the initial value (default 0)."""

    name: str
    key: str = ""
    when: Callable[[dict[str, Any]], bool] | None = None
    init: Callable[[dict[str, Any]], float] | None = None
    #: never negative (a second moment, a sum of squares): stored with the unsigned 8-bit
    #: code under state_dtype="8bit" (fastopt.reference.quant8)
    nonneg: bool = False

    @property
    def state_key(self) -> str:
        return self.key or self.name


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter: its name (torch.optim's param-group key), default, and whether the
    constructor takes it only as a keyword (after torch's ``*``)."""

    name: str
    default: Any
    keyword_only: bool = False


@dataclass(frozen=True)
class ScalarState:
    """A per-param scalar kept in the optimizer state besides 'step' (a momentum product, say):
    starts at `init`, and each step multiplies it by `factor(group, step)` before the host
    scalars are formed from it."""

    init: float
    factor: Callable[[dict[str, Any], float], float]


@dataclass(frozen=True)
class Alias:
    """Another class over the same kernel (AdamW over Adam): other defaults, hyperparameters
    it fixes (absent from its constructor, checked on load) and its own docstring."""

    cls: str
    torch: str | None
    defaults: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    doc: str = ""


@dataclass(frozen=True)
class OpSpec:
    """One optimizer. See the module docstring for what each layer takes from it."""

    name: str                      # kernel and table name; functional.<name>_
    cls: str                       # class name in fastopt.optim and fastopt.torch
    torch: str | None              # torch.optim class of the same algorithm, if any
    doc: str                       # formula and paper, for the generated classes
    slots: tuple[Slot, ...]        # state rows, after param and grad
    hypers: tuple[Hyper, ...]      # in torch.optim's constructor order, lr first
    check: Callable[[dict[str, Any]], None]
    host: Callable[..., dict[str, float]]  # (group, step, fresh, state) -> op scalars
    scalars_order: tuple[str, ...]
    reference: Callable[..., Any]
    rule: Callable[..., Any]       # the Numba rule: rule(x, i, p, g, c) -> new p
    math: str = "storage"          # "float64": computed in float64 whatever the storage
    decoupled: bool = False        # weight decay without decoupled_weight_decay in the group
    has_step: bool = True          # keeps torch's state['step']
    uses_step: bool = True         # host() reads the step count
    fresh_flag: bool = False       # host() is told whether the state is new (SGD)
    scalar_state: dict[str, ScalarState] = field(default_factory=dict)
    aliases: tuple[Alias, ...] = ()
    # where it differs for an optimizer made from a user's rule (fastopt.optim.from_rule):
    builtin: bool = True           # compiled into fastopt._C (the cpu and cuda backends)
    frame_decay: bool = True       # the frame applies the group's maximize and weight_decay
    dtypes: tuple[str, ...] | None = None  # storage dtypes taken (None: every backend's)
    helpers: tuple[tuple[str, Callable[..., Any]], ...] = ()  # (global name, function) the
    # rule calls, compiled with it for each target as RULE_HELPERS are

    @property
    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hypers} | FRAME_DEFAULTS

    @property
    def table_slots(self) -> tuple[str, ...]:
        return ("param", "grad", *(s.name for s in self.slots))

    def state_slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state rows a group with these hyperparameters needs."""
        return tuple(s.name for s in self.slots if s.when is None or s.when(group))

    def slot(self, name: str) -> Slot:
        return next(s for s in self.slots if s.name == name)

    def init_value(self, name: str, group: dict[str, Any]) -> float:
        init = self.slot(name).init
        return 0.0 if init is None else float(init(group))

    def validate(self, group: dict[str, Any]) -> None:
        """ValueError, worded as torch.optim's, for invalid hyperparameters."""
        self.check(group)
        nonneg("l1 value", group.get("l1", 0.0))
        if group.get("l1_mode", "coupled") not in L1_MODES:
            raise ValueError(f"Invalid l1_mode: {group['l1_mode']!r} (one of {L1_MODES})")
        if not isinstance(group.get("stochastic_rounding", False), (bool, np.bool_)):
            raise ValueError(f"Invalid stochastic_rounding: {group['stochastic_rounding']!r} "
                             "(True or False)")
        mgn = group.get("max_grad_norm")
        if mgn is not None and (isinstance(mgn, (bool, np.bool_)) or not isinstance(
                mgn, (int, float, np.integer, np.floating)) or not 0 <= mgn < math.inf):
            raise ValueError(f"Invalid max_grad_norm: {mgn!r} (None, or a finite number >= 0)")
        norm_type = group.get("grad_norm_type", 2.0)
        if isinstance(norm_type, (bool, np.bool_)) or not isinstance(
                norm_type, (int, float, np.integer, np.floating)) or not norm_type > 0:
            raise ValueError(f"Invalid grad_norm_type: {norm_type!r} (a number > 0, or inf)")
        seed = group.get("seed", 0)
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
                or not 0 <= seed < 2**32:
            raise ValueError(f"Invalid seed: {seed!r} (a whole number in [0, 2**32))")
        dtype_name(group.get("state_dtype"))
        master = group.get("master_weights", False)
        if not isinstance(master, (bool, np.bool_)):
            raise ValueError(f"Invalid master_weights: {master!r} (True or False)")
        if master and group.get("stochastic_rounding", False):
            raise ValueError("master_weights and stochastic_rounding exclude each other: the "
                             "master copy keeps what rounding would lose")

    def prepare(self, group: dict[str, Any], step: float = 0.0, fresh: bool = False,
                state: dict[str, float] | None = None,
                after: dict[str, float] | None = None, grad_coef: float = 1.0) -> Scalars:
        """The scalars of one step of `group` (hyperparameters as plain numbers) at step count
        `step` (this step included), `fresh`: the state was created for this step, `state`:
        the scalar state before this step; `after`: the state after it, where the caller
        advanced it itself (fastopt.torch: in the state tensors' dtype, as torch.optim);
        `grad_coef`: a factor on the gradient (the clipping coefficient), which the compiled
        kernels take through the head's sign (g = grad * sign: scaled on the fly, never
        stored) and the reference backend on a copy of the grad."""
        before = {k: (state or {}).get(k, s.init) for k, s in self.scalar_state.items()}
        if after is None:
            after = {k: before[k] * s.factor(group, step) for k, s in self.scalar_state.items()}
        l1 = float(group.get("l1", 0.0))
        proximal = group.get("l1_mode", "coupled") == "proximal"
        own = self.host(group, step, fresh, after)
        lr = float(group["lr"])
        # a rule made by from_rule owns its math: its own weight_decay or maximize, if any
        frame = group if self.frame_decay else {}
        wd = float(frame.get("weight_decay", 0.0))
        decoupled = bool(frame.get("decoupled_weight_decay", self.decoupled))
        sign = -1.0 if frame.get("maximize") else 1.0
        vector = np.array([1.0, sign * grad_coef,
                           0.0 if proximal else l1, lr * l1 if proximal else 0.0,
                           0.0 if decoupled else wd, 1.0 - lr * wd if decoupled else 1.0,
                           *(float(own[k]) for k in self.scalars_order)], dtype=np.float64)
        return Scalars(vector, group, step, fresh, before, after, float(grad_coef))

    def reference_kwargs(self, s: Scalars) -> dict[str, Any]:
        """Keyword arguments of `self.reference` for the step `s`."""
        accepted = inspect.signature(self.reference).parameters
        kw = {k: v for k, v in s.group.items() if k in accepted}
        extra = {"step": s.step, "first_step": s.fresh, **s.before}
        kw.update({k: v for k, v in extra.items() if k in accepted})
        return kw


@dataclass(frozen=True)
class Scalars:
    """What a backend's step(op, table, scalars) gets: `vector`, the float64 scalar vector the
    compiled kernels read, and what it was formed from (the reference backend calls the
    specification with those)."""

    vector: np.ndarray
    group: dict[str, Any]
    step: float
    fresh: bool
    before: dict[str, float]   # scalar state before the step
    after: dict[str, float]    # and after it
    grad_coef: float = 1.0     # the gradient's factor, in the vector's sign (prepare)


def clip_coefficient(group: dict[str, Any], norm: float) -> float:
    """The factor of a group's gradients given the global norm of the step's gradients: as
    torch.nn.utils.clip_grad_norm_, min(max_grad_norm / (norm + 1e-6), 1); 1 without
    max_grad_norm."""
    mgn = group.get("max_grad_norm")
    return 1.0 if mgn is None else min(float(mgn) / (norm + 1e-6), 1.0)


def stochastic_base(s: Scalars) -> int | None:
    """The key of a step's stochastic rounding (None: round to nearest): seed and step count
    mixed (fastopt.reference.mix32); each tensor's key mixes its id in, each element's its
    index, so the random bits of an element depend on nothing else (thread count, chunking)."""
    if not s.group.get("stochastic_rounding", False):
        return None
    from ..reference import mix32

    seed = np.uint32(int(s.group.get("seed", 0)))
    step = np.uint32(int(s.step) & 0xFFFFFFFF)
    return int(mix32(mix32(seed) ^ step))


def scalar_index(*names: str) -> Any:
    """Positions in the scalar vector of the head and of the op scalars `names`, as
    attributes (`I.beta1`): the Numba rules index the vector with them (a global namedtuple
    is a compile-time constant to Numba), and `I._fields[len(HEAD):]` is the op's order."""
    full = (*HEAD, *names)
    return namedtuple("Scalars", full)(*range(len(full)))


# --- the frame, as the Numba drivers compile it (fastopt/backends/_numba_*.py) -----------
# Plain scalar functions of the math type, like the rules: no float literal in arithmetic.
ONE, SIGN, L1, PROX, L2, DECAY = range(len(HEAD))


def frame_grad(p, g, c):
    """The gradient a rule sees: sign (maximize), coupled L1 l1 * sign(p), L2 l2 * p."""
    g = g * c[SIGN]
    if c[L1] != 0:
        if p > 0:
            g = g + c[L1]
        elif p < 0:
            g = g - c[L1]
        elif p != p:
            g = p  # sign(NaN) is NaN
    if c[L2] != 0:
        g = g + c[L2] * p
    return g


def frame_param(p, c):
    """The param after the rule: the proximal L1 step p = sign(p) * max(|p| - prox, 0)."""
    t = c[PROX]
    if t != 0:
        if p > t:
            return p - t
        if p < -t:
            return p + t
        if p == p:
            return p - p  # +0: the exact zero of the soft threshold
    return p


def moment(a, i, v, beta, one_minus_beta):
    """State row `a` (x[k] of a rule) at element i moved to beta * a[i] + (1 - beta) * v,
    stored and returned: the moments of the Adam variants. Rules may call the functions of
    RULE_HELPERS, which the Numba backends compile with them. (A helper takes a row, not the
    tuple x and an index into it: numba-cuda would compile that for the current GPU.)"""
    m = beta * a[i] + one_minus_beta * v
    a[i] = m
    return m


#: The functions of this module a Numba rule may call.
RULE_HELPERS = ("moment",)


# --- validation helpers: torch.optim's wording ------------------------------------------
def nonneg(name: str, value: float) -> None:
    if not 0.0 <= value < math.inf:
        raise ValueError(f"Invalid {name}: {value}")


def beta(name: str, value: float, closed: bool = False) -> None:
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"Invalid {name}: {value}")


def betas(group: dict[str, Any], closed: bool = False) -> tuple[float, float]:
    b = group["betas"]
    if len(b) != 2:
        raise ValueError(f"Invalid betas: {b} (expected two values)")
    beta("beta parameter at index 0", b[0], closed)
    beta("beta parameter at index 1", b[1], closed)
    return float(b[0]), float(b[1])


def common(group: dict[str, Any], *names: str) -> None:
    """lr and the usual non-negative hyperparameters of `names`."""
    nonneg("learning rate", group["lr"])
    for n in names:
        nonneg(f"{'epsilon' if n == 'eps' else n} value", group[n])


def moments(group: dict[str, Any]) -> dict[str, float]:
    """The scalars of the moments every Adam variant keeps (m, v; Kingma & Ba), first in
    their scalar lists: beta1, 1 - beta1, beta2, 1 - beta2, eps."""
    b1, b2 = betas(group)
    return dict(beta1=b1, one_minus_beta1=1.0 - b1, beta2=b2, one_minus_beta2=1.0 - b2,
                eps=float(group["eps"]))


def get(name: str) -> OpSpec:
    """The spec of optimizer `name`: a built-in one, or one made by from_rule (RULES)."""
    spec = REGISTRY.get(name) or RULES.get(name)
    if spec is None:
        raise ValueError(f"unknown optimizer {name!r} (known: {', '.join(REGISTRY)})")
    return spec


def classes() -> list[tuple[str, OpSpec, Alias | None]]:
    """(class name, spec, alias) of every optimizer class, in registry order."""
    out: list[tuple[str, OpSpec, Alias | None]] = []
    for spec in REGISTRY.values():
        out.append((spec.cls, spec, None))
        out += [(a.cls, spec, a) for a in spec.aliases]
    return out


#: Classes with 8-bit state by default (bitsandbytes' names): made beside the registry's in
#: fastopt.optim and fastopt.torch (not in the functional layer, whose state is the caller's).
EIGHT_BIT = ("Adam", "AdamW")


def eight_bit_classes() -> list[tuple[str, OpSpec, Alias]]:
    """(class name, spec, alias) of the 8-bit-state classes: Adam8bit, AdamW8bit."""
    import dataclasses

    out = []
    for name, spec, alias in classes():
        if name in EIGHT_BIT:
            base = alias or Alias(spec.cls, spec.torch, doc=spec.doc)
            doc = (base.doc.rstrip() + "\n\n    State: state_dtype='8bit' by default, the moments "
                   "quantized blockwise (fastopt.reference.quant8; tensors under 4096 elements "
                   "keep float32 state). Dettmers et al., \"8-bit Optimizers via Block-wise "
                   "Quantization\", ICLR 2022.")
            out.append((f"{name}8bit", spec, dataclasses.replace(
                base, cls=f"{name}8bit", defaults={**base.defaults, "state_dtype": "8bit"},
                doc=doc)))
    return out


def dtype_name(dtype: Any) -> str | None:
    """The name of a state_dtype given as a name, a NumPy or ml_dtypes dtype or a torch dtype
    (None stays None); ValueError for any other."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        name = dtype
    elif type(dtype).__module__ == "torch":
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
    if name not in STATE_DTYPE_NAMES:
        raise ValueError(f"Invalid state_dtype: {dtype!r} (None for the params' dtype, or one "
                         f"of {', '.join(STATE_DTYPE_NAMES)})")
    return name


def state_dtype(group: dict[str, Any], param_dtype: str) -> str | None:
    """The dtype of new state for a param of `param_dtype` in `group`: its state_dtype for
    float32 and 16-bit params, None (the param's own) otherwise or without one."""
    if param_dtype not in ("float32", "bfloat16", "float16"):
        return None
    name = dtype_name(group.get("state_dtype"))
    return None if name == param_dtype else name


def signature(spec: OpSpec, alias: Alias | None,
              extra: dict[str, Any] | None = None) -> inspect.Signature:
    """The constructor signature of an optimizer class: params, the hyperparameters in
    torch.optim's order (keyword-only where torch's are), then the frame's (FRAME_DEFAULTS),
    the state's (STATE_OPTIONS) and `extra` (keyword-only)."""
    P = inspect.Parameter
    defaults = {**spec.defaults, **(alias.defaults if alias else {})}
    fixed = alias.fixed if alias else {}
    params = [P("params", P.POSITIONAL_OR_KEYWORD)]
    params += [P(h.name, P.KEYWORD_ONLY if h.keyword_only else P.POSITIONAL_OR_KEYWORD,
                 default=defaults[h.name]) for h in spec.hypers if h.name not in fixed]
    params += [P(k, P.KEYWORD_ONLY, default=defaults[k]) for k in FRAME_DEFAULTS]
    params += [P(k, P.KEYWORD_ONLY, default=defaults.get(k, v)) for k, v in STATE_OPTIONS.items()]
    params += [P(k, P.KEYWORD_ONLY, default=v) for k, v in (extra or {}).items()]
    return inspect.Signature(params)


def class_doc(spec: OpSpec, alias: Alias | None) -> str:
    doc = alias.doc if alias and alias.doc else spec.doc
    return (f"{doc}\n\n    Every optimizer also takes l1 (default 0) and l1_mode ('coupled' or "
            "'proximal'): L1 regularization, see fastopt.ops; and stochastic_rounding (default "
            "False) with seed (default 0): float16 and bfloat16 params rounded stochastically, "
            "see fastopt.reference.stochastic_round; and max_grad_norm (default None) with "
            "grad_norm_type (default 2): the step takes the grads clipped by their global norm "
            "(recorded as the optimizer's grad_norm); and state_dtype (default None: the "
            "params' dtype): float32, bfloat16 or float16 storage for the state of float32 and "
            "16-bit params, math in float32; and master_weights (default False): float32 "
            "master copies of float16 and bfloat16 params, stepped in their place (state key "
            "'master_param'). Formula: "
            f"fastopt.reference.{spec.name}.")


def check_native(native: list[dict[str, Any]]) -> None:
    """Raise RuntimeError unless the compiled kernels (`_C.optimizers()`) declare exactly the
    registry's optimizers, with the specs' slots and scalars in the same order."""
    found = {d["name"]: d for d in native}
    for spec in REGISTRY.values():
        d = found.pop(spec.name, None)
        if d is None:
            raise RuntimeError(f"no compiled kernel for {spec.name}: rebuild fastopt._C")
        if tuple(d["slots"]) != spec.table_slots or tuple(d["scalars"]) != spec.scalars_order:
            raise RuntimeError(
                f"the compiled {spec.name} kernel declares slots {d['slots']} and scalars "
                f"{d['scalars']}, its spec {spec.table_slots} and {spec.scalars_order}: "
                "rebuild fastopt._C")
    if found:
        raise RuntimeError(f"compiled kernels without a spec: {sorted(found)}")


# --- the registry ------------------------------------------------------------------------
def _discover() -> dict[str, OpSpec]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None)
        if isinstance(spec, OpSpec):
            found[spec.name] = spec
    return found


REGISTRY: dict[str, OpSpec] = _discover()
#: The specs made from users' rules (fastopt.optim.from_rule), by name: apart from REGISTRY,
#: which lists what fastopt._C compiles (check_native) and what fastopt generates classes of.
RULES: dict[str, OpSpec] = {}
