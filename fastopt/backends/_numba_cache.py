"""Numba's on-disk cache for the optimizer kernels, kept honest.

Numba keys a cached kernel on its own source file only, but the optimizer kernels
(`_numba_cpu.py`, `_numba_cuda.py`) inline the rules of fastopt/ops/<op>.py: a cached kernel
would outlive an edit of a rule. Kernels of those two files are therefore cached under a
stamp of their file together with every file of fastopt/ops/.
"""

from __future__ import annotations

import glob
import os
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_KERNEL_FILES = ("_numba_cpu.py", "_numba_cuda.py")
_RULES = os.path.join(os.path.dirname(_HERE), "ops")


def _rules_stamp() -> tuple[float, ...]:
    stamp: list[float] = []
    for path in sorted(glob.glob(os.path.join(_RULES, "*.py"))):
        st = os.stat(path)
        stamp += [st.st_mtime, st.st_size]
    return tuple(stamp)


def track_rules_in_cache(caching: Any) -> None:
    """Make `caching` (numba.core.caching or numba.cuda.core.caching) stamp fastopt's kernel
    files together with the rules. Idempotent."""
    impl = caching.CacheImpl
    if getattr(impl, "_fastopt_rules_tracked", False):
        return
    wrapped = []
    for base in impl._locator_classes:
        if "InTree" not in base.__name__ and "UserWide" not in base.__name__:
            continue

        class Locator(base):  # type: ignore[misc, valid-type]
            @classmethod
            def from_function(cls, py_func, py_file):
                path = os.path.abspath(py_file)
                if os.path.dirname(path) != _HERE or os.path.basename(path) not in _KERNEL_FILES:
                    return None
                return super().from_function(py_func, py_file)

            def get_source_stamp(self):
                return (*super().get_source_stamp(), *_rules_stamp())

        wrapped.append(Locator)
    impl._locator_classes = [*impl._locator_classes[:1], *wrapped, *impl._locator_classes[1:]]
    impl._fastopt_rules_tracked = True
