"""Threads and the configuration report."""

from __future__ import annotations

import os
import platform
import sys

from . import backends


def _lib():
    try:
        from . import _C

        return _C
    except ImportError:
        return None


def set_num_threads(n: int) -> None:
    """Threads used by the CPU kernels (OMP_NUM_THREADS sets the initial value)."""
    lib = _lib()
    if lib is None:
        raise RuntimeError("fastopt._C is not built; the CPU kernels are unavailable")
    lib.set_num_threads(int(n))


def get_num_threads() -> int:
    lib = _lib()
    return lib.num_threads() if lib is not None else 1


def config() -> dict:
    """Everything show_config() prints, as a dict (also recorded by `fastopt bench --json`)."""
    from . import __version__

    lib = _lib()
    info = {
        "fastopt": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": get_num_threads(),
        "isa": lib.isa() if lib else None,
        "widest_isa": lib.widest_isa() if lib else None,
        "compiled_isas": list(lib.compiled_isas()) if lib else [],
        "backends": [{"name": n, "devices": list(d), "available": ok, "detail": why}
                     for n, d, ok, why in backends.status()],
    }
    return info


def show_config() -> None:
    """Print fastopt's backends (available or why not), CPU ISA, threads and devices."""
    info = config()
    print(f"fastopt {info['fastopt']}  (Python {info['python']}, {info['platform']})")
    print(f"CPU kernels: ISA {info['isa']} (widest supported: {info['widest_isa']}; "
          f"compiled: {', '.join(info['compiled_isas']) or 'none'}), "
          f"{info['threads']} threads of {info['cpu_count']} CPUs")
    print("backends:")
    for b in info["backends"]:
        mark = "yes" if b["available"] else "no "
        print(f"  {b['name']:<11} {mark}  [{', '.join(b['devices'])}]  {b['detail']}")
