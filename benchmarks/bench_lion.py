"""Lion (not in torch): fastopt backends vs the reference and the bandwidth limit."""

from conftest import run_case


def test_lion(benchmark, variant, size):
    run_case(benchmark, "lion", variant, size)
