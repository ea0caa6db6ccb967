"""fastopt.reference.adamax is torch.optim.Adamax: float64 to rtol 1e-12 over 40 steps, float32
storage to the tolerance table, every option, NaN as torch.maximum carries it."""

import numpy as np
import pytest
from reference_steps import against_torch
from trajectories import grad_stream

SIZES = (1, 7, 4097)
CASES = [
    dict(),
    dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(weight_decay=0.1),
    dict(lr=1e-2, weight_decay=0.01, maximize=True),
]


@pytest.mark.parametrize("hyper", CASES, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_matches_torch(hyper, seed):
    against_torch("adamax", hyper, SIZES, np.float64, seed, steps=40)


@pytest.mark.parametrize("hyper", CASES, ids=str)
def test_float32_storage_matches_torch(hyper):
    against_torch("adamax", hyper, SIZES, np.float32, seed=0, steps=40)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_gradient_stays_in_exp_inf_as_torch(dtype):
    """A NaN gradient element makes u = max(beta2 u, |g| + eps) NaN from then on (torch.maximum
    propagates NaN), so that param goes NaN; the others are untouched."""
    grads = list(grad_stream([(n,) for n in SIZES], dtype, 10, seed=3))
    grads[4][1][3] = np.nan
    against_torch("adamax", dict(lr=1e-2), SIZES, dtype, grads=grads)
