"""Runs the numba_cuda backend's kernels in Numba's CUDA simulator against the reference.

Started by tests/test_numba_cuda_sim.py in a fresh interpreter, because NUMBA_ENABLE_CUDASIM
must be set before numba is first imported. The simulator executes every thread in Python
(about 100 us per element), so sizes and step counts are tiny. Exits 1 on any mismatch.
"""

from __future__ import annotations

import os
import sys

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from trajectories import FEW_CASES, Compared, case_id, run, run_clip  # noqa: E402

import fastopt  # noqa: E402

FULL = os.environ.get("FASTOPT_TEST_FULL", "0") not in ("", "0")


class SimArray:
    """A host array presented as CUDA memory (the simulator's device memory is host memory)."""

    def __init__(self, host: np.ndarray) -> None:
        self.host = np.ascontiguousarray(host)

    @property
    def __cuda_array_interface__(self) -> dict:
        a = self.host
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
                "version": 3, "strides": None, "stream": None}


def to_host(x: SimArray) -> np.ndarray:
    return x.host.copy()


class Checks:
    """Counts the arrays compared against the reference and collects what failed."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.failures: list[str] = []
        self.count = 0

    def __call__(self, results, dtype, what: str) -> None:
        """Compares trajectories.Compared results within the tolerance table."""
        for r in results:
            r = Compared(*r)  # the losses' (name, actual, expected) triples as well
            self.count += 1
            try:
                r.check(dtype, what)
            except AssertionError as exc:
                self.failures.append(str(exc))

    def raises(self, call, exc_type: type, words: str, what: str) -> None:
        """call() must raise exc_type with `words` in its message."""
        try:
            call()
        except exc_type as exc:
            if words not in str(exc):
                self.failures.append(f"unclear error from {what}: {exc}")
        else:
            self.failures.append(f"{what} did not raise")

    def report(self) -> int:
        """Prints the failures and the tally; the exit status (1 on any failure)."""
        for f in self.failures:
            print(f, file=sys.stderr)
        print(f"{self.label}: {self.count - len(self.failures)}/{self.count} arrays match")
        return 1 if self.failures else 0


def main() -> int:
    check = Checks("numba_cuda (simulator)")

    # the simulator is slow: FASTOPT_TEST_FULL=1 runs every case in float32 and every other
    # one in float64 and float16; by default each case once, the dtypes taken in turn
    cases = FEW_CASES
    if FULL:
        runs = [("float32", 4, cases), ("float64", 3, cases[::2]), ("float16", 2, cases[1::2])]
    else:
        runs = [("float32", 3, cases[::3]), ("float64", 2, cases[1::3]),
                ("float16", 2, cases[2::3])]
    for dtype, steps, subset in runs:
        for case in subset:
            check(run(*case, dtype, backend="numba_cuda", sizes=(1, 7, 33), steps=steps,
                      to_device=SimArray, to_host=to_host), dtype, f"{case_id(case)} {dtype}")
    for dtype in ("float32", "float64") if FULL else ("float32",):
        check(run_clip(dtype, backend="numba_cuda", sizes=(1, 7, 300), to_device=SimArray,
                       to_host=to_host), dtype, f"clip {dtype}")
    # one launch per table, not per tensor: three tensors (one empty), one adam launch
    from fastopt.backends import numba_cuda as nc

    launches = []
    call = nc.NumbaCudaBackend._call
    nc.NumbaCudaBackend._call = staticmethod(
        lambda fn, name, *a: (launches.append(name), call(fn, name, *a))[1])
    try:
        arrays = [[SimArray(np.full(n, fill, np.float32)) for n in (5, 0, 300)]
                  for fill in (0.5, 0.5, 0.0, 0.0)]  # params, grads, exp_avg, exp_avg_sq
        fastopt.functional.adam_(*arrays, step=1, lr=0.1, backend="numba_cuda")
    finally:
        nc.NumbaCudaBackend._call = staticmethod(call)
    if launches != ["adam"]:
        check.failures.append(f"numba_cuda adam over 3 tensors launched {launches}")
    want = np.full(300, 0.4, np.float32)  # Adam's first step moves each param by lr
    check([("adam one launch", to_host(arrays[0][2]), want)], "float32", "one launch")
    # automatic choice for CUDA arrays falls back to numba_cuda when cuda cannot run
    p, g = SimArray(np.ones(3, np.float32)), SimArray(np.ones(3, np.float32))
    fastopt.functional.sgd_([p], [g], lr=0.5)
    check([("auto", to_host(p), np.full(3, 0.5, np.float32))], "float32", "automatic backend")
    bad = SimArray(np.zeros(3, np.float32))
    check.raises(lambda: fastopt.functional.sgd_([bad], [np.zeros(3, np.float32)], lr=0.1),
                 ValueError, "mixing devices", "mixing a CUDA param and a host grad")
    return check.report()


if __name__ == "__main__":
    sys.exit(main())
