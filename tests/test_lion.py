import numpy as np
import pytest
from trajectories import SHAPES, against_reference

from fastopt import reference
from fastopt.optim import Lion

OPTIONS = [
    {},
    {"weight_decay": 0.1, "lr": 1e-3},
    {"betas": (0.95, 0.98), "maximize": True},
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_options_match_reference(backend, dtype, options):
    against_reference(Lion, options, backend, dtype, SHAPES["mixed"])


@pytest.mark.parametrize("size", list(SHAPES), ids=str)
def test_sizes_and_seeds_match_reference(backend, dtype, size):
    for seed in (0, 7):
        against_reference(Lion, {"weight_decay": 0.01}, backend, dtype, SHAPES[size], seed=seed)


def test_reference_follows_the_paper():
    """Algorithm 2 of Chen et al. (2023), written out independently of fastopt.reference."""
    rng = np.random.default_rng(0)
    p, m = rng.standard_normal(100), rng.standard_normal(100)
    lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.1
    p_ref, m_ref = p.copy(), m.copy()
    for _ in range(5):
        g = rng.standard_normal(100)
        update = np.sign(b1 * m + (1 - b1) * g)
        p = p - lr * (update + wd * p)
        m = b2 * m + (1 - b2) * g
        reference.lion(p_ref, g, m_ref, lr=lr, betas=(b1, b2), weight_decay=wd)
    np.testing.assert_allclose(p_ref, p, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m_ref, m, rtol=1e-12)
