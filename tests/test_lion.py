"""Lion beyond the shared optimizer tests (tests/test_optim_db.py): the paper's algorithm, and
its sign: every element moves by exactly lr, or not at all where the interpolation is 0."""

import numpy as np
from trajectories import grad_stream, initial_params

from fastopt import reference
from fastopt.optim import Lion


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


def test_every_element_moves_by_lr_or_not_at_all(backend, dtype):
    """Params on a grid of powers of two, so that every difference is exact: where gradient
    and momentum are 0 the sign is 0 and the element stays; every other one moves by lr."""
    (p,) = initial_params([(4097,)], dtype)
    p[:] = np.round(p * 64) / 64
    lr = 2.0**-10
    opt = Lion([p], lr=lr, backend=backend)
    for (g,) in grad_stream([(4097,)], dtype, 3):
        g[::5] = 0
        before = p.astype(np.float64)
        opt.step([g])
        moved = np.abs(p - before)
        assert (moved[::5] == 0).all()
        assert (np.delete(moved, np.s_[::5]) == lr).all()
