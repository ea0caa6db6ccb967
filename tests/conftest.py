import os

import numpy as np
import pytest

import fastopt
from fastopt import backends

#: Every registered CPU backend but the reference itself, held to the reference on every CPU
#: test: (name, None) when it runs here, (name, why not) otherwise. An unavailable backend
#: stays in the matrix as an explicit skip that says why, never silently dropped.
CPU_BACKEND_STATUS = [(name, None if ok else f"unavailable: {why}")
                      for name, devices, ok, why in backends.status()
                      if name in backends.AUTO_ORDER["cpu"] and name != "reference"]
if "libasan" in os.environ.get("LD_PRELOAD", ""):
    # the sanitizer run is for the C++ entry points; Numba's LLVM JIT under the ASan runtime
    # would only spend minutes compiling uninstrumented kernels
    CPU_BACKEND_STATUS = [(name, "not run under AddressSanitizer" if name == "numba" else why)
                          for name, why in CPU_BACKEND_STATUS]
CPU_BACKENDS = [name for name, why in CPU_BACKEND_STATUS if why is None]

#: The test tiers. By default the exhaustive sweeps run a representative part, every kernel
#: and storage dtype at least once: the CUDA kernels replayed on the host
#: (tests/cuda_kernel_emulation.cu), the Numba-CUDA kernels compiled to PTX and run in the
#: simulator (tests/numba_cuda_*sim_check.py). FASTOPT_TEST_FULL=1 (`.ci/run --full`) runs
#: them whole.
FULL = os.environ.get("FASTOPT_TEST_FULL", "0") not in ("", "0")


def backend_params(names=None) -> list:
    """pytest params of the CPU backends (all of CPU_BACKEND_STATUS, or those in `names`),
    an unavailable one marked skip with its reason."""
    return [pytest.param(name, marks=() if why is None else
                         pytest.mark.skip(reason=f"backend {name!r} {why}"))
            for name, why in CPU_BACKEND_STATUS if names is None or name in names]


def pytest_report_header(config):
    lines = [f"fastopt {fastopt.__version__}: CPU backends under test {CPU_BACKENDS}",
             "exhaustive sweeps: " + ("all (FASTOPT_TEST_FULL=1)" if FULL else
                                      "representative part (FASTOPT_TEST_FULL=1: all)")]
    lines += [f"  {name} skipped: {why}" for name, why in CPU_BACKEND_STATUS if why is not None]
    try:
        from fastopt import _C

        omp = os.environ.get("OMP_NUM_THREADS")
        lines.append(f"fastopt ISA {_C.isa()} (widest {_C.widest_isa()}), "
                     f"{_C.num_threads()} threads, OMP_NUM_THREADS={omp}")
    except ImportError:
        lines.append("fastopt._C is not built")
    return lines


@pytest.fixture(params=backend_params())
def backend(request):
    return request.param


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)
