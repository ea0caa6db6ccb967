"""Adamax beyond the shared optimizer tests (tests/test_optim_db.py): a NaN gradient stays in
exp_inf as torch.maximum carries it."""

import numpy as np
import pytest
from conftest import backend_params
from optim_db import BY_NAME
from trajectories import compare, grad_stream, initial_params, optim_run, torch_snapshot

SIZES = [(1,), (7,), (4097,)]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", [*backend_params(), "reference"])
def test_nan_gradient_stays_in_exp_inf_as_torch(backend, dtype):
    """A NaN gradient element makes u = max(beta2 u, |g| + eps) NaN from then on (torch.maximum
    propagates NaN), so that param goes NaN; the others are untouched."""
    torch = pytest.importorskip("torch")
    entry = BY_NAME["Adamax"]
    grads = list(grad_stream(SIZES, dtype, 10, seed=3))
    grads[4][1][3] = np.nan
    params = [torch.tensor(p) for p in initial_params(SIZES, dtype)]
    opt = torch.optim.Adamax(params, lr=1e-2)
    for g in grads:
        for p, x in zip(params, g, strict=True):
            p.grad = torch.tensor(x)
        opt.step()
    ours = optim_run(entry.optim_class, dict(lr=1e-2), backend, dtype, SIZES, grads=grads)
    assert np.isnan(ours.params[1][3]) and np.isnan(ours.state[1]["exp_inf"][3])
    assert np.isfinite(np.delete(ours.params[1], 3)).all()
    compare(ours, torch_snapshot(opt, params, entry.spec), dtype, f"Adamax {backend} NaN",
            same_keys=False)
