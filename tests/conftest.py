import os

import numpy as np
import pytest

import fastopt
from fastopt import backends

#: Backends held to the reference on every CPU test: every registered CPU backend that runs here
#: (the reference itself excluded).
CPU_BACKENDS = [name for name, devices, ok, _ in backends.status()
                if ok and "cpu" in devices and name != "reference"]


def pytest_report_header(config):
    lines = [f"fastopt {fastopt.__version__}: CPU backends under test {CPU_BACKENDS}"]
    try:
        from fastopt import _C

        omp = os.environ.get("OMP_NUM_THREADS")
        lines.append(f"fastopt ISA {_C.isa()} (widest {_C.widest_isa()}), "
                     f"{_C.num_threads()} threads, OMP_NUM_THREADS={omp}")
    except ImportError:
        lines.append("fastopt._C is not built")
    return lines


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)
