"""fastopt.reference.adadelta is torch.optim.Adadelta: float64 to rtol 1e-12 over 40 steps,
float32 storage to the tolerance table, every option."""

import numpy as np
import pytest
from reference_steps import against_torch

SIZES = (1, 7, 4097)
CASES = [
    dict(),
    dict(lr=0.5, rho=0.8, eps=1e-4),
    dict(weight_decay=0.1),
    dict(lr=0.1, rho=0.95, weight_decay=0.01, maximize=True),
]


@pytest.mark.parametrize("hyper", CASES, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_matches_torch(hyper, seed):
    against_torch("adadelta", hyper, SIZES, np.float64, seed, steps=40)


@pytest.mark.parametrize("hyper", CASES, ids=str)
def test_float32_storage_matches_torch(hyper):
    against_torch("adadelta", hyper, SIZES, np.float32, seed=0, steps=40)
