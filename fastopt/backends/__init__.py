"""Backend registry and dispatch.

Choice: the `backend=` argument, else the FASTOPT_BACKEND environment variable, else the first
available backend for the arrays' device (CPU: cpu, numba, reference; CUDA: cuda, numba_cuda).
An explicitly requested backend that cannot run raises and says why; the automatic choice
falls back to the next one. Each backend declares the devices it runs on (`devices`) and the
storage dtypes its optimizer and clipping kernels take (`dtypes`): a table of another dtype
skips it in the automatic choice and is refused by name when it was requested.

Optimizers made from a user's rule (fastopt.optim.from_rule) run on the Numba backends and the
reference only: the compiled ones (`builtin_only`: cpu, cuda) hold fastopt's own optimizers
alone. For those, the automatic choice is numba (CPU) or numba_cuda (CUDA); the reference,
which runs the rule in Python element by element, only when asked for by name; and a
FASTOPT_BACKEND naming a compiled backend is passed over (it cannot run them).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

#: name -> module defining BACKEND; each module imports its heavy dependencies lazily.
REGISTRY: dict[str, str] = {
    "cpu": "fastopt.backends.cpu",
    "reference": "fastopt.backends.reference",
    "numba": "fastopt.backends.numba",
    "cuda": "fastopt.backends.cuda",
    "numba_cuda": "fastopt.backends.numba_cuda",
}

#: Storage dtypes of every float kernel (a backend's `dtypes` when it does not say).
ALL_DTYPES = ("float32", "float64", "float16", "bfloat16")

#: Automatic order per device type.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "numba", "reference"),
    "cuda": ("cuda", "numba_cuda"),
}

_loaded: dict[str, Any] = {}


class BackendUnavailable(RuntimeError):
    """Raised when an explicitly requested backend cannot run here."""


def get(name: str) -> Any:
    """The backend object registered as `name` (whether or not it is available)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(sorted(REGISTRY))})")
    if name not in _loaded:
        _loaded[name] = importlib.import_module(REGISTRY[name]).BACKEND
    return _loaded[name]


def status() -> list[tuple[str, tuple[str, ...], bool, str]]:
    """(name, devices, available, reason) for every registered backend."""
    rows = []
    for name in REGISTRY:
        try:
            b = get(name)
            ok, why = b.available()
            rows.append((name, b.devices, ok, why))
        except Exception as exc:  # a backend whose module cannot even import is unavailable
            rows.append((name, (), False, f"{type(exc).__name__}: {exc}"))
    return rows


def _dtypes(b: Any) -> tuple[str, ...]:
    return getattr(b, "dtypes", ALL_DTYPES)


def _rule_ok(b: Any) -> bool:
    return not getattr(b, "builtin_only", False)


def resolve(name: str | None, device: str = "cpu", dtype: str | None = None,
            builtin: bool = True) -> Any:
    """The backend to run on arrays of `device` ('cpu' or 'cuda') stored as `dtype` (None:
    any; the optimizer and clipping calls name their table's); `builtin=False`: for an
    optimizer made from a user's rule (see the module docstring)."""
    requested = name or os.environ.get("FASTOPT_BACKEND") or None
    if requested and not builtin and not name and not _rule_ok(get(requested)):
        requested = None  # FASTOPT_BACKEND=cpu, say, cannot mean a rule's optimizer
    if requested:
        b = get(requested)
        if not builtin and not _rule_ok(b):
            raise BackendUnavailable(
                f"backend {requested!r} runs fastopt's built-in optimizers only (compiled "
                "ahead of time); an optimizer made from a rule runs on numba, numba_cuda or "
                "reference")
        ok, why = b.available()
        if not ok:
            raise BackendUnavailable(f"backend {requested!r} is not available: {why}")
        if device not in b.devices:
            raise BackendUnavailable(f"backend {requested!r} runs on {', '.join(b.devices)} "
                                     f"arrays, not {device}")
        if dtype is not None and dtype not in _dtypes(b):
            raise BackendUnavailable(f"backend {requested!r} does not take {dtype} arrays "
                                     f"(it takes {', '.join(_dtypes(b))})")
        return b
    reasons = []
    for candidate in AUTO_ORDER.get(device, ()):
        if candidate not in REGISTRY:
            continue
        if not builtin and candidate == "reference":
            reasons.append("reference: runs a rule in Python, only when asked for by name "
                           "(backend='reference')")
            continue
        try:
            b = get(candidate)
            if not builtin and not _rule_ok(b):
                continue  # nothing to explain: no rule runs there
            ok, why = b.available()
        except Exception as exc:
            ok, why = False, str(exc)
        if ok and dtype is not None and dtype not in _dtypes(b):
            ok, why = False, f"does not take {dtype} arrays"
        if ok:
            return b
        reasons.append(f"{candidate}: {why}")
    what = f"{dtype} arrays on {device}" if dtype else f"{device} arrays"
    raise BackendUnavailable(f"no backend can run on {what} ({'; '.join(reasons)})")
