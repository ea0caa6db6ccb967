"""Backend registry and dispatch.

Choice: the `backend=` argument, else the FASTOPT_BACKEND environment variable, else the first
available backend for the arrays' device (CPU: cpu, numba, reference; CUDA: cuda, numba_cuda).
An explicitly requested backend that cannot run raises and says why; the automatic choice
falls back to the next one. Each backend declares the devices it runs on (`devices`) and the
storage dtypes its optimizer and clipping kernels take (`dtypes`): a table of another dtype
skips it in the automatic choice and is refused by name when it was requested.
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


def resolve(name: str | None, device: str = "cpu", dtype: str | None = None) -> Any:
    """The backend to run on arrays of `device` ('cpu' or 'cuda') stored as `dtype` (None:
    any; the optimizer and clipping calls name their table's)."""
    requested = name or os.environ.get("FASTOPT_BACKEND") or None
    if requested:
        b = get(requested)
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
        try:
            b = get(candidate)
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
