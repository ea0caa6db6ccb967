"""SGD, plain and with momentum: fastopt backends vs torch vs the bandwidth limit."""

import pytest
from conftest import run_case


@pytest.mark.parametrize("op", ["sgd", "sgd_momentum"])
def test_sgd(benchmark, op, variant, size):
    run_case(benchmark, op, variant, size)


def test_sgd_momentum_many_tensors(benchmark, variant, many):
    run_case(benchmark, "sgd_momentum", variant, many[1], tensors=many[0])
