import pytest
from trajectories import SHAPES, against_reference, against_torch

from fastopt.optim import Adagrad

OPTIONS = [
    {},
    {"lr_decay": 0.01},
    {"weight_decay": 0.1, "initial_accumulator_value": 0.5},
    {"maximize": True, "eps": 1e-6, "lr": 0.05},
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_options_match_reference(backend, dtype, options):
    against_reference(Adagrad, options, backend, dtype, SHAPES["mixed"])


@pytest.mark.parametrize("size", list(SHAPES), ids=str)
def test_sizes_and_seeds_match_reference(backend, dtype, size):
    for seed in (0, 7):
        against_reference(Adagrad, {}, backend, dtype, SHAPES[size], seed=seed)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_matches_torch(dtype, options):
    torch = pytest.importorskip("torch")
    against_torch(Adagrad, torch.optim.Adagrad, options, {**options, "foreach": False}, dtype,
                  SHAPES["mixed"])
