"""Adagrad beyond the shared optimizer tests (tests/test_optim_db.py): the accumulator starts
at initial_accumulator_value, and the first step's learning rate is lr itself."""

import numpy as np
from tolerances import assert_close
from trajectories import grad_stream, initial_params

from fastopt.optim import Adagrad


def test_initial_accumulator_value_and_first_step(backend, dtype):
    (p,) = initial_params([(4097,)], dtype)
    p0 = p.astype(np.float64)
    (g,) = next(grad_stream([(4097,)], dtype, 1))
    opt = Adagrad([p], lr=0.1, lr_decay=0.5, initial_accumulator_value=0.25, eps=1e-10,
                  backend=backend)
    opt.step([g])
    s = 0.25 + g.astype(np.float64) ** 2  # clr = lr / (1 + (t - 1) lr_decay) = lr at t = 1
    assert_close(opt.state[0][0]["state_sum"], s, dtype, "state_sum")
    assert_close(p, p0 - 0.1 * g / (np.sqrt(s) + 1e-10), dtype, "param")
