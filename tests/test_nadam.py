"""NAdam beyond the shared optimizer tests (tests/test_optim_db.py): the momentum schedule's
product, carried by the caller of the reference and kept as state 'mu_product' by the
optimizers."""

import numpy as np
import pytest
from trajectories import grad_stream, initial_params

from fastopt import reference
from fastopt.optim import NAdam


def _schedule(beta1, psi, steps):
    """prod_{t <= steps} beta1 (1 - 0.5 * 0.96^(t psi)) (Dozat 2016)."""
    return float(np.prod([beta1 * (1 - 0.5 * 0.96 ** (t * psi)) for t in range(1, steps + 1)]))


def test_mu_product_is_carried_by_the_caller():
    p = initial_params([(7,)], np.float64)[0]
    m, v = np.zeros(7), np.zeros(7)
    product = 1.0
    for t, (g,) in enumerate(grad_stream([(7,)], np.float64, 10), start=1):
        product = reference.nadam(p, g, m, v, step=t, mu_product=product)
        assert product == pytest.approx(_schedule(0.9, 4e-3, t), rel=1e-15)


def test_optimizer_keeps_mu_product_per_param(backend):
    """A param that joins later has its own product, from its own first step."""
    params = initial_params([(7,), (5,)], np.float32)
    opt = NAdam(params, momentum_decay=0.05, backend=backend)
    for i, g in enumerate(grad_stream([(7,), (5,)], np.float32, 6)):
        opt.step([g[0], g[1] if i >= 2 else None])
    state = opt.state_dict()["state"]
    assert state[0]["mu_product"] == pytest.approx(_schedule(0.9, 0.05, 6), rel=1e-15)
    assert state[1]["mu_product"] == pytest.approx(_schedule(0.9, 0.05, 4), rel=1e-15)
