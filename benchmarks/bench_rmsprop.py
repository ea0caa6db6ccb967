"""RMSprop: fastopt backends vs torch foreach (torch has no fused RMSprop) vs the limit."""

from conftest import run_case


def test_rmsprop(benchmark, variant, size):
    run_case(benchmark, "rmsprop", variant, size)
