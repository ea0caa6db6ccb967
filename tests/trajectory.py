"""Multi-step trajectories: the same optimizer, start and gradient stream on two backends (or
against torch.optim), compared with the one tolerance table."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tolerances import assert_close

#: Odd sizes on their own, and all of them mixed in one list with 2-D shapes (DESIGN.md).
SIZES = {
    "1": [(1,)],
    "7": [(7,)],
    "4097": [(4097,)],
    "65537": [(65537,)],
    "mixed": [(1,), (7,), (4097,), (65537,), (3, 5), (33, 17)],
}


def initial_params(shapes: Sequence[tuple[int, ...]], dtype, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grad_stream(shapes, dtype, steps: int, seed: int = 1, scale: float = 1.0):
    """The gradients of each step: varied magnitudes per tensor, never all the same."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield [(scale * rng.standard_normal(s) * rng.uniform(0.1, 3.0)).astype(dtype)
               for s in shapes]


def run(make: Callable, params: list, shapes, dtype, steps: int, seed: int = 1) -> object:
    opt = make(params)
    for grads in grad_stream(shapes, dtype, steps, seed):
        opt.step(grads)
    return opt


def compare_states(a, b, dtype, what: str) -> None:
    """Params, step counts and every state array of two fastopt optimizers agree."""
    for ga, gb in zip(a.param_groups, b.param_groups, strict=True):
        for k, (pa, pb) in enumerate(zip(ga["params"], gb["params"], strict=True)):
            assert_close(pa, pb, dtype, f"{what}: param {k}")
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].keys() == sb[k].keys()
        assert sa[k]["step"] == sb[k]["step"]
        for key, value in sa[k].items():
            if key != "step" and value is not None:
                assert_close(value, sb[k][key], dtype, f"{what}: {key} {k}")


def against_reference(cls, options: dict, backend: str, dtype, shapes, steps: int = 100,
                      seed: int = 0) -> None:
    """`backend` and the NumPy reference follow the same trajectory."""
    runs = {}
    for b in (backend, "reference"):
        params = initial_params(shapes, dtype, seed)
        runs[b] = run(lambda p, b=b: cls(p, backend=b, **options), params, shapes, dtype, steps,
                      seed + 1)
    compare_states(runs[backend], runs["reference"], dtype, f"{cls.__name__}{options} {backend}")


def against_torch(cls, torch_cls, options: dict, torch_options: dict, dtype, shapes,
                  steps: int = 100, seed: int = 0, backend: str = "cpu") -> None:
    """fastopt.optim.<cls> on NumPy arrays and torch.optim.<torch_cls> on tensors agree."""
    import torch

    params = initial_params(shapes, dtype, seed)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    topt = torch_cls(tparams, **torch_options)
    opt = cls(params, backend=backend, **options)
    for grads in grad_stream(shapes, dtype, steps, seed + 1):
        opt.step(grads)
        for t, g in zip(tparams, grads, strict=True):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
    for k, (p, t) in enumerate(zip(params, tparams, strict=True)):
        assert_close(p, t.detach().numpy(), dtype, f"{cls.__name__}{options} vs torch: param {k}")
