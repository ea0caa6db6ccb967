"""The `numba` backend against the C++ `cpu` backend: Adam on one large tensor (16M in a full
run) and on 20,000 x 256 tensors (one launch over the whole chunk table, not one per tensor),
and clip_grad_norm_ on many tensors. Numba compiles (or loads from its cache) on the first
call, which run_case's warm-up keeps out of the timing."""

import pytest
from conftest import _quick, run_case

BACKENDS = ("cpu", "numba")


@pytest.fixture
def large(request):
    return 4096 if _quick(request.config) else 1 << 24


@pytest.mark.parametrize("backend", BACKENDS)
def test_numba_adam(benchmark, backend, large):
    run_case(benchmark, "adam", backend, large)


@pytest.mark.parametrize("backend", BACKENDS)
def test_numba_adam_many_tensors(benchmark, backend, many):
    run_case(benchmark, "adam", backend, many[1], tensors=many[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_numba_clip_many_tensors(benchmark, backend, many):
    run_case(benchmark, "clip_grad_norm", backend, many[1], tensors=many[0])
