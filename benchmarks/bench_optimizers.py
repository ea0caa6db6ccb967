"""Every optimizer of fastopt.ops (its `fastopt bench` op: fastopt.optim at its defaults,
with the variants that move more bytes) against torch and the bandwidth limit: one large
tensor, float64, and many small ones (20,000 x 256 in a full run: the per-call overhead case,
the same tensors stepped again)."""

import pytest
from conftest import run_case

from fastopt.bench.ops import REGISTRY

OPTIMIZERS = [name for name, op in REGISTRY.items() if "optim" in op.tags]


@pytest.mark.parametrize("op", OPTIMIZERS)
def test_optimizer(benchmark, op, variant, size):
    run_case(benchmark, op, variant, size)


@pytest.mark.parametrize("op", ["adam", "sgd"])
def test_optimizer_float64(benchmark, op, variant, size):
    run_case(benchmark, op, variant, size, dtype="float64")


@pytest.mark.parametrize("op", ["adam", "sgd_momentum"])
def test_optimizer_many_tensors(benchmark, op, variant, many):
    run_case(benchmark, op, variant, many[1], tensors=many[0])
