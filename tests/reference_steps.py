"""fastopt.reference optimizers stepped like torch.optim steps them, and held to torch.optim.

- `ReferenceOptimizer(op, params, **hyper)`: the reference function of `op` over a list of
  float arrays, with torch.optim's bookkeeping (a step count from 1, SGD's first step, NAdam's
  mu_product carried from step to step, state slots zero-initialized).
- `against_torch(op, hyper, sizes, dtype, seed)`: steps it and torch.optim.<Op>(**hyper) from
  the same start and gradients, and compares params and every state array (and NAdam's
  mu_product) to the tolerance table. The reference takes torch's param-group keywords, so one
  `hyper` dict configures both.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import numpy as np
import torch
from tolerances import assert_close
from trajectories import grad_stream, initial_params

from fastopt import reference

#: torch.optim's class for each reference optimizer it has.
TORCH_NAMES = {"sgd": "SGD", "adam": "Adam", "adagrad": "Adagrad", "rmsprop": "RMSprop",
               "nadam": "NAdam", "radam": "RAdam", "adamax": "Adamax", "adadelta": "Adadelta"}


def state_slots(op: str) -> list[str]:
    """The state rows of reference.<op>, in slot order (its positional arrays after grad)."""
    sig = inspect.signature(getattr(reference, op)).parameters.values()
    return [p.name for p in sig if p.kind is p.POSITIONAL_OR_KEYWORD][2:]


class ReferenceOptimizer:
    """Steps `params` (float arrays, in place) with reference.<op>."""

    def __init__(self, op: str, params: list[np.ndarray], **hyper: Any) -> None:
        self.fn = getattr(reference, op)
        self.takes = inspect.signature(self.fn).parameters
        self.params, self.hyper = params, hyper
        self.state = {s: [np.zeros_like(p) for p in params] for s in state_slots(op)}
        self.mu_product = [1.0] * len(params)
        self.steps = 0

    def step(self, grads: list[np.ndarray], **override: Any) -> None:
        self.steps += 1
        for k, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            kw = {**self.hyper, **override}
            if "step" in self.takes:
                kw["step"] = self.steps
            if "first_step" in self.takes:
                kw["first_step"] = self.steps == 1
            if "mu_product" in self.takes:
                kw["mu_product"] = self.mu_product[k]
            out = self.fn(p, g, *[rows[k] for rows in self.state.values()], **kw)
            if "mu_product" in self.takes:
                self.mu_product[k] = out


@contextlib.contextmanager
def torch_default_dtype(dtype: torch.dtype):
    """torch.optim keeps its scalar state (step, NAdam's mu_product) in the default dtype: a
    float64 model runs with float64 as the default."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def against_torch(op: str, hyper: dict[str, Any], sizes, dtype, seed: int = 0,
                  steps: int = 30, grads=None) -> None:
    """reference.<op> follows torch.optim.<Op>(**hyper) over `steps` steps from the same start
    and gradients (grad_stream's, or the given list of per-step gradient lists)."""
    dtype = np.dtype(dtype)
    shapes = [(n,) for n in sizes]
    start = initial_params(shapes, dtype, seed)
    ref = ReferenceOptimizer(op, [p.copy() for p in start], **hyper)
    tparams = [torch.tensor(p, requires_grad=True) for p in start]
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    with torch_default_dtype(tdtype):
        topt = getattr(torch.optim, TORCH_NAMES[op])(tparams, **hyper)
        stream = grads if grads is not None else grad_stream(shapes, dtype, steps, seed + 1)
        for g in stream:
            for t, x in zip(tparams, g, strict=True):
                t.grad = torch.from_numpy(x.copy())
            topt.step()
            ref.step(g)
    what = f"{op}{hyper} {dtype.name} seed {seed}"
    for k, t in enumerate(tparams):
        assert_close(ref.params[k], t.detach().numpy(), dtype, f"{what}: param[{k}]")
        tstate = topt.state[t]
        for s, rows in ref.state.items():
            if tstate.get(s) is not None:
                assert_close(rows[k], tstate[s].numpy(), dtype, f"{what}: {s}[{k}]")
        if "mu_product" in tstate:
            assert_close(ref.mu_product[k], float(tstate["mu_product"]), dtype,
                         f"{what}: mu_product[{k}]")
