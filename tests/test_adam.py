"""Adam and AdamW beyond the shared optimizer tests (tests/test_optim_db.py): AdamW is Adam
with decoupled weight decay, bitwise; torch.optim's fused implementation agrees too."""

import numpy as np
import pytest
from tolerances import assert_close
from trajectories import SHAPES, grad_stream, initial_params

from fastopt.optim import Adam, AdamW


def test_adamw_is_adam_with_decoupled_weight_decay(backend, dtype):
    shapes = SHAPES["mixed"]
    a, b = initial_params(shapes, dtype), initial_params(shapes, dtype)
    kw = dict(lr=1e-2, weight_decay=0.1, amsgrad=True, backend=backend)
    adamw, adam = AdamW(a, **kw), Adam(b, decoupled_weight_decay=True, **kw)
    for g in grad_stream(shapes, dtype, 10):
        adamw.step(g)
        adam.step(g)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_matches_torch_fused(name, backend):
    torch = pytest.importorskip("torch")
    cls = {"Adam": Adam, "AdamW": AdamW}[name]
    shapes = SHAPES["mixed"]
    params = initial_params(shapes, np.float32)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    topt = getattr(torch.optim, name)(tparams, lr=1e-2, fused=True)
    opt = cls(params, lr=1e-2, backend=backend)
    for g in grad_stream(shapes, np.float32, 30):
        opt.step(g)
        for t, x in zip(tparams, g, strict=True):
            t.grad = torch.from_numpy(x.copy())
        topt.step()
    for k, (p, t) in enumerate(zip(params, tparams, strict=True)):
        assert_close(p, t.detach().numpy(), np.float32, f"{name} vs fused torch: param {k}")
