"""Adam, AdamW and AMSGrad, one large tensor and many small ones (20,000 x 256 in a full run:
the per-call overhead case, the same tensors stepped again)."""

import pytest
from conftest import run_case


@pytest.mark.parametrize("op", ["adam", "adamw", "adam_amsgrad"])
def test_adam(benchmark, op, variant, size):
    run_case(benchmark, op, variant, size)


def test_adam_float64(benchmark, variant, size):
    run_case(benchmark, "adam", variant, size, dtype="float64")


def test_adam_many_tensors(benchmark, variant, many):
    run_case(benchmark, "adam", variant, many[1], tensors=many[0])
