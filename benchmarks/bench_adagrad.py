"""Adagrad: fastopt backends vs torch (fused and foreach) vs the bandwidth limit."""

from conftest import run_case


def test_adagrad(benchmark, variant, size):
    run_case(benchmark, "adagrad", variant, size)
