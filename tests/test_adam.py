import numpy as np
import pytest
from trajectories import SHAPES, against_reference, against_torch

from fastopt.optim import Adam, AdamW

ADAM_OPTIONS = [
    {},
    {"weight_decay": 0.1},
    {"amsgrad": True},
    {"maximize": True, "weight_decay": 0.05},
    {"bias_correction": False},
    {"eps_inside_sqrt": True},
    {"amsgrad": True, "eps_inside_sqrt": True, "bias_correction": False, "lr": 1e-2},
    {"betas": (0.8, 0.99), "eps": 1e-6, "lr": 3e-3},
]
ADAMW_OPTIONS = [
    {},
    {"weight_decay": 0.1, "amsgrad": True},
    {"maximize": True, "lr": 1e-2},
    {"weight_decay": 0.0, "eps_inside_sqrt": True},
]


@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=str)
def test_adam_options_match_reference(backend, dtype, options):
    against_reference(Adam, options, backend, dtype, SHAPES["mixed"])


@pytest.mark.parametrize("options", ADAMW_OPTIONS, ids=str)
def test_adamw_options_match_reference(backend, dtype, options):
    against_reference(AdamW, options, backend, dtype, SHAPES["mixed"])


@pytest.mark.parametrize("size", list(SHAPES), ids=str)
@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_sizes_and_seeds_match_reference(backend, dtype, cls, size):
    for seed in (0, 7):
        against_reference(cls, {"lr": 1e-2}, backend, dtype, SHAPES[size], seed=seed)


TORCH_CASES = [
    {},
    {"weight_decay": 0.1},
    {"amsgrad": True},
    {"maximize": True, "weight_decay": 0.01},
    {"betas": (0.8, 0.95), "eps": 1e-6, "lr": 1e-2, "amsgrad": True},
]


@pytest.mark.parametrize("options", TORCH_CASES, ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_matches_torch(dtype, name, options):
    torch = pytest.importorskip("torch")
    cls = {"Adam": Adam, "AdamW": AdamW}[name]
    against_torch(cls, getattr(torch.optim, name), options, {**options, "foreach": False},
                  dtype, SHAPES["mixed"])


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_matches_torch_fused(name):
    torch = pytest.importorskip("torch")
    cls = {"Adam": Adam, "AdamW": AdamW}[name]
    against_torch(cls, getattr(torch.optim, name), {"lr": 1e-2}, {"lr": 1e-2, "fused": True},
                  np.float32, SHAPES["mixed"])
