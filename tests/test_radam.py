"""fastopt.reference.radam is torch.optim.RAdam: float64 to rtol 1e-12 over 40 steps, float32
storage to the tolerance table, every option, before and after the rectification starts
(rho_t > 5: step 6 for beta2 near 1, step 12 for beta2 = 0.68, never for beta2 = 0.5)."""

import numpy as np
import pytest
from reference_steps import against_torch

from fastopt import reference

SIZES = (1, 7, 4097)
CASES = [
    dict(),
    dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(betas=(0.9, 0.68), lr=1e-2),
    dict(betas=(0.9, 0.5), lr=1e-2),
    dict(weight_decay=0.1),
    dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
    dict(lr=1e-2, betas=(0.9, 0.68), weight_decay=0.01, maximize=True),
]


def rho(beta2: float, step: int) -> float:
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * step * beta2**step / (1 - beta2**step)


def test_cases_cover_both_branches():
    first = {}
    for hyper in CASES:
        beta2 = hyper.get("betas", (0.9, 0.999))[1]
        rectified = [t for t in range(1, 41) if rho(beta2, t) > 5]
        first[beta2] = rectified[0] if rectified else None
    assert first == {0.999: 6, 0.99: 6, 0.68: 12, 0.5: None}


@pytest.mark.parametrize("hyper", CASES, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_matches_torch(hyper, seed):
    against_torch("radam", hyper, SIZES, np.float64, seed, steps=40)


@pytest.mark.parametrize("hyper", CASES, ids=str)
def test_float32_storage_matches_torch(hyper):
    against_torch("radam", hyper, SIZES, np.float32, seed=0, steps=40)


def test_unrectified_first_step_is_plain_sgd():
    """Step 1 (rho_1 = 1): m = (1 - beta1) g and the bias correction cancels it: p - lr g."""
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(7), rng.standard_normal(7)
    expected = p - 0.1 * g
    reference.radam(p, g, np.zeros(7), np.zeros(7), step=1, lr=0.1)
    np.testing.assert_allclose(p, expected, rtol=1e-15)
