import pytest
from trajectories import SHAPES, against_reference, against_torch

from fastopt.optim import RMSprop

OPTIONS = [
    {},
    {"momentum": 0.9},
    {"centered": True},
    {"centered": True, "momentum": 0.5, "weight_decay": 0.1},
    {"alpha": 0.9, "eps": 1e-6, "maximize": True},
    {"lr": 1e-3, "weight_decay": 0.01},
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_options_match_reference(backend, dtype, options):
    against_reference(RMSprop, options, backend, dtype, SHAPES["mixed"])


@pytest.mark.parametrize("size", list(SHAPES), ids=str)
def test_sizes_and_seeds_match_reference(backend, dtype, size):
    for seed in (0, 7):
        against_reference(RMSprop, {"centered": True, "momentum": 0.9}, backend, dtype,
                          SHAPES[size], seed=seed)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_matches_torch(dtype, options):
    torch = pytest.importorskip("torch")
    against_torch(RMSprop, torch.optim.RMSprop, options, {**options, "foreach": False}, dtype,
                  SHAPES["mixed"])
