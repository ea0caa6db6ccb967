"""Optimizers from a user's scalar rule: `fastopt.optim.from_rule` and `fastopt.torch.from_rule`.

A rule is a plain Python function on scalars,

    def rule(p, g, *state, *, <hyperparameters>, step) -> (new_p, *new_state)

(`step`, the step count from 1, only if the rule takes it). `make_spec` turns it into an
`ops.OpSpec` (kept in `ops.RULES`, not in the registry of built-ins) whose Numba rule is a
generated wrapper,

    def rule(x, i, p, g, c):
        r = user_rule(p, g, x[2][i], x[3][i], lr=c[6], beta1=c[7], ..., step=c[9])
        x[2][i] = r[1]; x[3][i] = r[2]
        return r[0]

that loads the state rows, calls the user's function (compiled by Numba with it, for each
target) and stores the new state. The Numba backends compile it into the same multi-tensor
driver template as the built-in optimizers (one parallel launch over all tensors, the frame
around it: coupled and proximal L1 and clipping by max_grad_norm; the rule owns the rest of
its math, weight decay and maximize included). The reference backend calls the same function
in Python, in float64, element by element: the specification a rule's kernel is tested
against.

Caching: the wrapper is written to a file under the rule cache directory (FASTOPT_CACHE_DIR,
else $XDG_CACHE_HOME/fastopt or ~/.cache/fastopt; `rules/`), named by a hash of the rule's
source file (its whole text: a global constant the rule reads is part of it) and of its
interface, and imported from there, so that Numba's on-disk cache (cache=True) keys the
kernel, named `step_<spec name>` with that hash, on exactly this rule. The user's function is
cached by Numba next to its own file (or, for a rule without a source file, under the rule
cache directory). A fresh process loads both instead of compiling them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import marshal
import math
import os
import re
import sys
import tempfile
import types as pytypes
from collections.abc import Callable
from typing import Any

from . import ops

#: Storage dtypes an optimizer made from a rule takes (math in the storage type).
DTYPES = ("float32", "float64")
#: State arrays after param and grad in the drivers' pointer tables (MAX_SLOTS - 2).
MAX_STATE = 4
#: Names a hyperparameter cannot take: the frame's options, the constructor's own arguments,
#: torch.optim's flags and the keys schedulers keep in a group.
RESERVED = frozenset({*ops.FRAME_DEFAULTS, "params", "backend", "step", "initial_lr",
                      *ops.TORCH_FLAGS})
_WRAPPER_VERSION = 1  # bump when the generated source changes


def cache_dir() -> str:
    """Where the generated wrappers (and the Numba cache of file-less rules) live."""
    root = os.environ.get("FASTOPT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "fastopt")
    return os.path.join(root, "rules")


class _Interface:
    """What from_rule reads from a rule's signature."""

    def __init__(self, rule: Callable[..., Any], state: tuple[str, ...],
                 defaults: dict[str, Any]) -> None:
        if not isinstance(rule, pytypes.FunctionType):
            raise TypeError(f"rule: expected a Python function, got {type(rule).__name__}")
        self.label = f"rule {rule.__qualname__}"
        P = inspect.Parameter
        params = list(inspect.signature(rule).parameters.values())
        if any(p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD) for p in params):
            raise TypeError(f"{self.label}: takes no *args or **kwargs (its signature: "
                            "rule(p, g, *state, *, <hyperparameters>, step))")
        positional = [p.name for p in params if p.kind != P.KEYWORD_ONLY]
        #: the keyword-only arguments in their order: the rule's scalars, after the head
        self.scalars = tuple(p.name for p in params if p.kind == P.KEYWORD_ONLY)
        self.hypers = tuple(h for h in self.scalars if h != "step")
        self.takes_step = "step" in self.scalars
        self.state = tuple(state)
        for s in self.state:
            if not isinstance(s, str) or not s.isidentifier():
                raise ValueError(f"state: {s!r} is not a valid name")
        if len(set(self.state)) != len(self.state):
            raise ValueError(f"state: names repeat in {self.state}")
        if len(self.state) > MAX_STATE:
            raise ValueError(f"state: at most {MAX_STATE} arrays per parameter, got "
                             f"{len(self.state)}")
        if "step" in self.state:
            raise ValueError("state: 'step' is the step count's key, not a state array's")
        if len(positional) != 2 + len(self.state):
            raise TypeError(
                f"{self.label}: takes {len(positional)} positional arguments "
                f"({', '.join(positional)}), expected {2 + len(self.state)}: p, g and one per "
                f"state array {self.state}; hyperparameters are keyword-only (after *)")
        for h in self.hypers:
            if h in RESERVED:
                raise ValueError(f"{self.label}: hyperparameter {h!r} is a name fastopt "
                                 f"reserves ({', '.join(sorted(RESERVED))})")
            if h in self.state:
                raise ValueError(f"{self.label}: {h!r} names both a state array and a "
                                 "hyperparameter")
        if "lr" not in self.hypers:
            raise ValueError(f"{self.label}: takes no lr (a keyword-only argument): the "
                             "learning rate that schedulers set and the frame's proximal L1 "
                             "step uses")
        kw = {k: v for k, v in (rule.__kwdefaults__ or {}).items() if k != "step"}
        unknown = sorted(set(defaults) - set(self.hypers))
        if unknown:
            raise ValueError(f"defaults: {unknown} are not keyword-only parameters of "
                             f"{self.label} (those are {list(self.hypers)})")
        self.defaults = {h: defaults.get(h, kw.get(h)) for h in self.hypers}
        missing = [h for h in self.hypers if h not in defaults and h not in kw]
        if missing:
            raise ValueError(f"defaults: no default for {missing} (give one in defaults= or in "
                             "the rule's signature)")
        for h in self.hypers:
            check_number(h, self.defaults[h])


def check_number(name: str, value: Any) -> None:
    """ValueError unless a hyperparameter's value is one real number (bools count: 0, 1)."""
    try:
        x = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        x = math.nan
    if math.isnan(x) or isinstance(value, (str, bytes)):
        raise ValueError(f"Invalid {name}: {value!r} (a rule's hyperparameter is one real "
                         "number)")


def _source_key(rule: Callable[..., Any]) -> tuple[bytes, str | None]:
    """(bytes identifying the rule's code, its source file or None)."""
    try:
        path = inspect.getsourcefile(rule)
    except TypeError:
        path = None
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read() + rule.__qualname__.encode(), path
    return marshal.dumps(rule.__code__), None


def _wrapper_source(iface: _Interface, where: str) -> str:
    """The generated module: `rule` for a rule that returns a tuple, `rule_scalar` for one
    without state that returns new p alone."""
    first = len(ops.HEAD)
    call = ", ".join(["p", "g", *(f"x[{2 + k}][i]" for k in range(len(iface.state))),
                      *(f"c[{first + k}]" for k in range(len(iface.scalars)))])
    stores = "".join(f"    x[{2 + k}][i] = r[{1 + k}]\n" for k in range(len(iface.state)))
    return (f"# Generated by fastopt.optim.from_rule from {where}; rewritten when it changes.\n"
            f"# State rows {iface.state}; scalars {iface.scalars} after the vector's head.\n\n"
            f"def rule(x, i, p, g, c):\n    r = user_rule({call})\n{stores}    return r[0]\n\n\n"
            f"def rule_scalar(x, i, p, g, c):\n    return user_rule({call})\n")


def _write(path: str, text: str) -> None:
    """Write `text` to `path` unless it holds it already (atomically: processes may race)."""
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _import(name: str, path: str) -> Any:
    """The generated module, kept in sys.modules: a kernel loaded from Numba's cache finds the
    globals of its functions by importing their module by name."""
    spec = importlib.util.spec_from_file_location(f"fastopt_{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    return module


_MODULES: dict[str, Any] = {}  # the imported wrappers, by spec name
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _compile_error(label: str, exc: BaseException) -> TypeError:
    """A TypeError that says why Numba refused the rule, naming the line it reports."""
    text = _ANSI.sub("", str(exc))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        if ln.startswith("During:") or "This error may have been caused" in ln:
            break
        keep.append(ln)
    at = re.findall(r'File "([^"]+)", line (\d+)', text)
    where = f" (at {os.path.basename(at[-1][0])}, line {at[-1][1]})" if at else ""
    return TypeError(f"{label}: Numba cannot compile it{where}: "
                     f"{type(exc).__name__}: " + "\n".join(keep[:12]))


def _positional(rule: Callable[..., Any], path: str) -> Callable[..., Any]:
    """The rule with its keyword-only arguments made positional, in their order (Numba folds
    keyword arguments of a call from compiled code into keyword-only ones wrongly), its
    source file `path` (Numba caches a function next to its file: a rule without one gets
    the wrapper's)."""
    code = rule.__code__
    code = code.replace(co_argcount=code.co_argcount + code.co_kwonlyargcount,
                        co_kwonlyargcount=0, co_filename=path)
    fn = pytypes.FunctionType(code, rule.__globals__, rule.__name__, None, rule.__closure__)
    fn.__qualname__ = f"{rule.__qualname__}__fastopt_rule"
    return fn


def _check_compiles(iface: _Interface, fn: Callable[..., Any]) -> bool:
    """Compile the rule's function for float64 scalars (the CPU dispatcher its kernels call:
    from Numba's cache where it is there) and check what it returns. True: it returns new p
    alone (a rule without state may)."""
    from numba import types
    from numba.core.errors import NumbaError

    from .backends import _numba_common, _numba_cpu

    disp = _numba_common.decorated(_numba_cpu.scalar, fn)
    args = (types.float64,) * (2 + len(iface.state) + len(iface.scalars))
    try:
        disp.compile(args)
    except (NumbaError, NotImplementedError, TypeError, ValueError, AttributeError) as exc:
        raise _compile_error(iface.label, exc) from None
    ret = next(s.return_type for s in disp.nopython_signatures if s.args == args)
    want = 1 + len(iface.state)
    names = ", ".join(("new p", *iface.state))
    if isinstance(ret, types.BaseTuple):
        if len(ret) != want:
            raise TypeError(f"{iface.label}: returns {len(ret)} values, expected {want} "
                            f"({names})")
        bad = [t for t in ret if not isinstance(t, (types.Number, types.Boolean))]
        if bad:
            raise TypeError(f"{iface.label}: returns {ret}, expected {want} numbers ({names})")
        return False
    if isinstance(ret, (types.Number, types.Boolean)) and want == 1:
        return True
    raise TypeError(f"{iface.label}: returns {ret}, expected a tuple of {want} numbers "
                    f"({names})")


def _reference(rule: Callable[..., Any], iface: _Interface) -> Callable[..., None]:
    """The rule as a reference function (fastopt.reference's form): float64, element by
    element, in Python; the frame's L1 as fastopt.reference does it."""
    from .reference._io import direction, proximal, store

    def reference(param: Any, grad: Any, *state: Any, step: float = 1.0, lr: float,
                  l1: float = 0.0, l1_mode: str = "coupled", **hyper: Any) -> None:
        import numpy as np

        p = np.asarray(param, dtype=np.float64)
        g = direction(np.asarray(grad, dtype=np.float64), p, False, l1, l1_mode)
        kw = {h: float(v) for h, v in {"lr": lr, **hyper}.items()}
        if iface.takes_step:
            kw["step"] = float(step)
        rows = [np.asarray(s, dtype=np.float64).reshape(-1).tolist() for s in state]
        new_p = np.empty(p.size)
        new_s = [np.empty(p.size) for _ in state]
        for j, (pj, gj) in enumerate(zip(p.reshape(-1).tolist(), g.reshape(-1).tolist(),
                                         strict=True)):
            out = rule(pj, gj, *(r[j] for r in rows), **kw)
            if not state and not isinstance(out, tuple):
                out = (out,)
            new_p[j] = out[0]
            for k, row in enumerate(new_s):
                row[j] = out[1 + k]
        for s, row in zip(state, new_s, strict=True):
            store(s, row.reshape(s.shape))
        store(param, proximal(new_p.reshape(p.shape), lr, l1, l1_mode))

    P = inspect.Parameter
    reference.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [P("param", P.POSITIONAL_OR_KEYWORD), P("grad", P.POSITIONAL_OR_KEYWORD),
         *(P(s, P.POSITIONAL_OR_KEYWORD) for s in iface.state),
         P("step", P.KEYWORD_ONLY, default=1.0),
         *(P(h, P.KEYWORD_ONLY) for h in iface.hypers),
         P("l1", P.KEYWORD_ONLY, default=0.0), P("l1_mode", P.KEYWORD_ONLY, default="coupled")])
    return reference


def make_spec(rule: Callable[..., Any], state: tuple[str, ...] | list[str] = (),
              defaults: dict[str, Any] | None = None, name: str | None = None,
              doc: str | None = None) -> ops.OpSpec:
    """The OpSpec of a user's rule (see the module docstring), compiled for float64 now
    (errors name the rule's line), registered in ops.RULES."""
    iface = _Interface(rule, tuple(state), dict(defaults or {}))
    cls = name or rule.__name__
    if not cls.isidentifier():
        raise ValueError(f"name: {cls!r} is not a valid class name")
    key, path = _source_key(rule)
    where = f"{path}:{rule.__code__.co_firstlineno}" if path else f"<{rule.__qualname__}>"
    text = _wrapper_source(iface, where)
    digest = hashlib.sha256(b"\0".join([
        key, text.encode(), repr((_WRAPPER_VERSION, sys.version_info[:2])).encode(),
    ])).hexdigest()[:16]
    op = f"rule_{re.sub(r'[^0-9A-Za-z_]', '_', rule.__name__)}_{digest}"
    wrapper_path = os.path.join(cache_dir(), f"{op}.py")
    if op not in _MODULES:
        try:
            _write(wrapper_path, text)
        except OSError:  # a read-only cache directory: a private one for this user
            wrapper_path = os.path.join(tempfile.gettempdir(), f"fastopt-rules-{os.getuid()}",
                                        f"{op}.py")
            _write(wrapper_path, text)
        _MODULES[op] = _import(op, wrapper_path)
    wrapper_path = _MODULES[op].__file__
    module = _MODULES[op]
    fn = _positional(rule, path or wrapper_path)
    scalar_return = _check_compiles(iface, fn)

    def check(group: dict[str, Any]) -> None:
        ops.nonneg("learning rate", group["lr"])
        for h in iface.hypers:
            check_number(h, group[h])

    def host(group: dict[str, Any], step: float, fresh: bool,
             state: dict[str, float]) -> dict[str, float]:
        return {**{h: float(group[h]) for h in iface.hypers}, "step": float(step)}

    spec = ops.OpSpec(
        name=op, cls=cls, torch=None, check=check, host=host, scalars_order=iface.scalars,
        reference=_reference(rule, iface),
        rule=module.rule_scalar if scalar_return else module.rule,
        slots=tuple(ops.Slot(s) for s in iface.state),
        hypers=tuple(ops.Hyper(h, iface.defaults[h]) for h in iface.hypers),
        doc=doc or inspect.getdoc(rule) or f"The optimizer of {iface.label}.",
        uses_step=iface.takes_step, builtin=False, frame_decay=False, dtypes=DTYPES,
        helpers=(("user_rule", fn),))
    ops.RULES[op] = spec
    return spec


def class_doc(spec: ops.OpSpec) -> str:
    return (f"{spec.doc}\n\n    Made by from_rule: state {[s.name for s in spec.slots]}, "
            f"hyperparameters {[h.name for h in spec.hypers]}; also l1 (default 0) and "
            "l1_mode ('coupled' or 'proximal'), max_grad_norm (default None) with "
            "grad_norm_type (default 2), see fastopt.ops. Storage float32 or float64, on the "
            "numba and numba_cuda backends, or reference (docs/rules.md).")
