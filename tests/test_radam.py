"""RAdam beyond the shared optimizer tests (tests/test_optim_db.py): the database's option
sets reach both sides of rho_t > 5, and an unrectified step is SGD with momentum."""

import numpy as np
from optim_db import BY_NAME
from tolerances import assert_close
from trajectories import grad_stream, initial_params

from fastopt.optim import RAdam

STEPS = 30  # tests/test_optim_db.py's trajectories


def rho(beta2: float, step: int) -> float:
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * step * beta2**step / (1 - beta2**step)


def test_database_options_cover_both_branches():
    """rho_t > 5 (rectified) from step 6 for beta2 near 1, from step 12 for beta2 = 0.68,
    never for beta2 = 0.5: each within the trajectories' steps."""
    first = {}
    for options in BY_NAME["RAdam"].options:
        beta2 = options.get("betas", (0.9, 0.999))[1]
        rectified = [t for t in range(1, STEPS + 1) if rho(beta2, t) > 5]
        first[beta2] = rectified[0] if rectified else None
    assert first == {0.999: 6, 0.99: 6, 0.68: 12, 0.5: None}


def test_unrectified_first_step_is_plain_sgd(backend, dtype):
    """Step 1 (rho_1 = 1): m = (1 - beta1) g and the bias correction cancels it: p - lr g."""
    (p,) = initial_params([(4097,)], dtype)
    (g,) = next(grad_stream([(4097,)], dtype, 1))
    expected = p.astype(np.float64) - 0.1 * g.astype(np.float64)
    RAdam([p], lr=0.1, backend=backend).step([g])
    assert_close(p, expected, dtype)
