"""fastopt.reference.nadam is torch.optim.NAdam: float64 to rtol 1e-12 over 40 steps, float32
storage to the tolerance table, every option."""

import numpy as np
import pytest
from reference_steps import against_torch
from trajectories import grad_stream, initial_params

from fastopt import reference

SIZES = (1, 7, 4097)
CASES = [
    dict(),
    dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(weight_decay=0.1),
    dict(weight_decay=0.1, decoupled_weight_decay=True),
    dict(momentum_decay=0.05, maximize=True),
    dict(lr=1e-2, momentum_decay=0.0, weight_decay=0.01, decoupled_weight_decay=True,
         maximize=True),
]


@pytest.mark.parametrize("hyper", CASES, ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_matches_torch(hyper, seed):
    against_torch("nadam", hyper, SIZES, np.float64, seed, steps=40)


@pytest.mark.parametrize("hyper", CASES, ids=str)
def test_float32_storage_matches_torch(hyper):
    against_torch("nadam", hyper, SIZES, np.float32, seed=0, steps=40)


def test_mu_product_is_carried_by_the_caller():
    """The returned mu_product is the product of the momentum schedule
    mu_t = beta1 (1 - 0.5 * 0.96^(t psi)) over the steps so far (Dozat 2016)."""
    beta1, psi = 0.9, 4e-3
    p = initial_params([(7,)], np.float64)[0]
    m, v = np.zeros(7), np.zeros(7)
    product, expected = 1.0, 1.0
    for t, (g,) in enumerate(grad_stream([(7,)], np.float64, 10), start=1):
        product = reference.nadam(p, g, m, v, step=t, mu_product=product)
        expected *= beta1 * (1 - 0.5 * 0.96 ** (t * psi))
        assert product == pytest.approx(expected, rel=1e-15)
