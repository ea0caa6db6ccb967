"""SGD beyond the shared optimizer tests (tests/test_optim_db.py): the momentum buffer's first
step, as torch.optim.SGD starts it."""

import numpy as np
from tolerances import assert_close
from trajectories import grad_stream, initial_params

from fastopt.optim import SGD


def test_first_step_buffer_is_the_undampened_update(backend, dtype):
    """torch.optim.SGD: the buffer starts as the update d = g + wd p itself (no dampening),
    then b = momentum b + (1 - dampening) d."""
    (p,) = initial_params([(4097,)], dtype)
    p0 = p.astype(np.float64)
    g1, g2 = (g[0].astype(np.float64) for g in grad_stream([(4097,)], dtype, 2))
    opt = SGD([p], lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.1, backend=backend)
    opt.step([g1.astype(dtype)])
    b1 = g1 + 0.1 * p0
    assert_close(opt.state[0][0]["momentum_buffer"], b1, dtype, "first buffer")
    assert_close(p, p0 - 0.1 * b1, dtype, "first step")
    p1 = p.astype(np.float64)
    opt.step([g2.astype(dtype)])
    b2 = 0.9 * b1 + 0.5 * (g2 + 0.1 * p1)
    assert_close(opt.state[0][0]["momentum_buffer"], b2, dtype, "second buffer")
    assert_close(p, p1 - 0.1 * b2, dtype, "second step")
