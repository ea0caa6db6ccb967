"""Gradient clipping by norm (a norm pass and a scaling pass) and by value, vs torch's
foreach implementations."""

import pytest
from conftest import run_case


@pytest.mark.parametrize("op", ["clip_grad_norm", "clip_grad_value"])
def test_clip(benchmark, op, variant, size):
    run_case(benchmark, op, variant, size)


def test_clip_grad_norm_many_tensors(benchmark, variant, many):
    run_case(benchmark, "clip_grad_norm", variant, many[1], tensors=many[0])
