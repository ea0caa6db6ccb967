import pytest
from trajectories import SHAPES, against_reference, against_torch

from fastopt.optim import SGD

OPTIONS = [
    {"lr": 1e-2},
    {"lr": 1e-2, "momentum": 0.9},
    {"lr": 1e-2, "momentum": 0.9, "dampening": 0.5},
    {"lr": 1e-2, "momentum": 0.9, "nesterov": True},
    {"lr": 1e-2, "momentum": 0.8, "weight_decay": 0.1, "maximize": True},
    {"lr": 1e-2, "weight_decay": 0.01, "maximize": True},
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_options_match_reference(backend, dtype, options):
    against_reference(SGD, options, backend, dtype, SHAPES["mixed"])


@pytest.mark.parametrize("size", list(SHAPES), ids=str)
def test_sizes_and_seeds_match_reference(backend, dtype, size):
    for seed in (0, 7):
        against_reference(SGD, {"lr": 1e-2, "momentum": 0.9}, backend, dtype, SHAPES[size],
                          seed=seed)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_matches_torch(dtype, options):
    torch = pytest.importorskip("torch")
    against_torch(SGD, torch.optim.SGD, options, {**options, "foreach": False}, dtype,
                  SHAPES["mixed"])
