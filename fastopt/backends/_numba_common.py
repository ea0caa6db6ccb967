"""What the Numba CPU and CUDA kernel modules (`_numba_cpu.py`, `_numba_cuda.py`) share: the
kernel table of a backend, the pointer intrinsic, and Numba's on-disk cache kept honest.

Numba keys a cached kernel on its own source file only, but those kernels inline the rules of
fastopt/ops/<op>.py (and the block reduction of fastopt/_numba_cuda_losses.py): a cached
kernel would outlive an edit of a rule. Kernels of those two files are therefore cached under
a stamp of their file together with every file they inline from (fastopt/_rules.py included,
which generates the wrappers of users' rules; a user's rule is in its kernel's name instead).
"""

from __future__ import annotations

import glob
import os
import types as pytypes
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_KERNEL_FILES = ("_numba_cpu.py", "_numba_cuda.py")
_PACKAGE = os.path.dirname(_HERE)
_INLINED = (os.path.join(_PACKAGE, "ops", "*.py"), os.path.join(_PACKAGE, "_numba_*losses.py"),
            os.path.join(_PACKAGE, "_rules.py"), os.path.abspath(__file__))


def norm_term(acc, e, kind, p):
    """A norm's running partial `acc` with one more |x| = e folded in (float64): kind 0 the sum
    of squares (l2), 1 the sum (l1), 2 the NaN-sticky max (inf), 3 the sum of e^p."""
    if kind == 0:
        return acc + e * e
    if kind == 1:
        return acc + e
    if kind == 2:
        return e if (e > acc or e != e) else acc
    return acc + e**p


_DECORATED: dict[tuple[int, Any], Any] = {}


def decorated(decorator: Any, fn: Any) -> Any:
    """`fn` compiled with `decorator`, one dispatcher per (decorator, function): a rule's
    function checked at definition (fastopt._rules) is the one its kernel calls."""
    key = (id(decorator), fn)
    if key not in _DECORATED:
        _DECORATED[key] = decorator(fn)
    return _DECORATED[key]


def compile_rule(spec: Any, decorator: Any) -> Any:
    """spec.rule compiled with `decorator` (njit or a CUDA device function), the helpers it may
    call (fastopt.ops.RULE_HELPERS, and the spec's own: a user's rule function) compiled with
    the same decorator in its globals."""
    from .. import ops

    fn = spec.rule
    helpers = {name: decorator(getattr(ops, name)) for name in ops.RULE_HELPERS}
    helpers.update({name: decorated(decorator, f) for name, f in spec.helpers})
    return decorator(pytypes.FunctionType(fn.__code__, {**fn.__globals__, **helpers},
                                          fn.__name__))


def optimizer_kernel(template: Any, namespace: dict[str, Any], spec: Any, decorator: Any,
                     kernel: Any) -> Any:
    """A kernel module's driver `template` compiled with `kernel` around spec.rule (compiled
    with `decorator`), bound as the template's global `op_rule`. Named `step_<op>` so that
    Numba's disk cache keeps one entry per op."""
    name = f"step_{spec.name}"
    fn = pytypes.FunctionType(template.__code__,
                              {**namespace, "op_rule": compile_rule(spec, decorator)}, name)
    fn.__qualname__ = name
    return kernel(fn)


class _Kernels(dict):
    """Kernels by name; a missing name is an optimizer made from a rule (fastopt.ops.RULES),
    whose kernel is made at its first use."""

    def __init__(self, module: Any, table: dict[str, Any]) -> None:
        super().__init__(table)
        self.module = module

    def __missing__(self, name: str) -> Any:
        from .. import ops

        fn = self[name] = self.module.optimizer_kernel(ops.get(name))
        return fn


def kernel_table(module: Any) -> dict[str, Any]:
    """A kernel module's kernels by name: its own (clipping) and one per optimizer of the
    registry, made by its driver template (compiled at the first call of each)."""
    from .. import ops

    table = dict(module.KERNELS)
    for spec in ops.REGISTRY.values():
        table[spec.name] = module.optimizer_kernel(spec)
    return _Kernels(module, table)


def pointer_intrinsic(intrinsic: Any, types: Any) -> Any:
    """as_pointer(addr, like): an address from a pointer table as a pointer to like's dtype,
    made with the target's `intrinsic` decorator and `types` (CPU or CUDA)."""

    @intrinsic
    def as_pointer(typingctx, addr, like):
        sig = types.CPointer(like.dtype)(addr, like)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    return as_pointer


def _rules_stamp() -> tuple[float, ...]:
    stamp: list[float] = []
    for path in sorted(p for pattern in _INLINED for p in glob.glob(pattern)):
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
