"""Multi-step trajectories of every optimizer on any backend and device, against
fastopt.reference: shared by the backend test files and benchmarks/gpu_check.py.

`to_device` turns a NumPy array into the array type under test (identity for CPU backends, a
torch CUDA tensor, a Numba device array, ...) and `to_host` turns it back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from fastopt import clip, functional, reference

SIZES = (1, 7, 4097, 65537)

#: (op, hyperparameters): every option of every optimizer at least once.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=1e-3, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd", dict(lr=1e-3, momentum=0.8, dampening=0.1, maximize=True)),
    ("adam", dict(lr=1e-2)),
    ("adam", dict(lr=1e-2, weight_decay=0.1, decoupled=True, amsgrad=True)),
    ("adam", dict(lr=1e-2, weight_decay=0.05, maximize=True, eps_inside_sqrt=True,
                  bias_correction=False)),
    ("adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1)),
    ("adagrad", dict(lr=0.1, maximize=True)),
    ("rmsprop", dict(lr=1e-2)),
    ("rmsprop", dict(lr=1e-4, momentum=0.9, centered=True, weight_decay=0.01)),
    ("lion", dict(lr=1e-3, weight_decay=0.1)),
    ("lion", dict(lr=1e-3, beta1=0.95, maximize=True)),
]


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    op, hyper = case
    return op + "-" + "-".join(f"{k}={v}" for k, v in hyper.items())


def _used_slots(op: str, hyper: dict[str, Any]) -> list[str | None]:
    slots = list(functional.SLOTS[op][2:])
    used = {
        "momentum_buffer": hyper.get("momentum", 0) != 0,
        "max_exp_avg_sq": hyper.get("amsgrad", False),
        "grad_avg": hyper.get("centered", False),
    }
    return [s if used.get(s, True) else None for s in slots]


def _step_kwargs(op: str, hyper: dict[str, Any], step: int) -> dict[str, Any]:
    if op in ("adam", "adagrad"):
        return {"step": step}
    if op == "sgd" and hyper.get("momentum", 0) != 0:
        return {"first_step": step == 1}
    return {}


def run(op: str, hyper: dict[str, Any], dtype: Any, *, backend: str | None,
        sizes=SIZES, steps: int = 100, seed: int = 0,
        to_device: Callable[[np.ndarray], Any] = lambda a: a,
        to_host: Callable[[Any], np.ndarray] = np.asarray,
        ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Steps a list of tensors of `sizes` `steps` times through `backend` and through the
    reference; returns (name, actual, expected) for every param and state array."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    slots = _used_slots(op, hyper)
    ref_state = [None if s is None else [np.zeros(n, dtype) for n in sizes] for s in slots]
    ref_params = [p.copy() for p in params]
    dev_params = [to_device(p) for p in params]
    dev_state = [None if s is None else [to_device(np.zeros(n, dtype)) for n in sizes]
                 for s in slots]
    fn = getattr(functional, op + "_")
    ref_fn = getattr(reference, op)
    for step in range(1, steps + 1):
        # magnitudes ~0.1: fp32 state then carries absolute errors well inside the table's atol
        grads = [(rng.standard_normal(n) * (0.1 * (1 + step % 3))).astype(dtype) for n in sizes]
        kw = {**hyper, **_step_kwargs(op, hyper, step)}
        for k in range(len(sizes)):
            ref_fn(ref_params[k], grads[k], *[None if s is None else s[k] for s in ref_state],
                   **kw)
        fn(dev_params, [to_device(g) for g in grads], *dev_state, backend=backend, **kw)
    out = [(f"param[{k}]", to_host(dev_params[k]), ref_params[k]) for k in range(len(sizes))]
    for s, dev, refs in zip(slots, dev_state, ref_state, strict=True):
        if s is not None:
            out += [(f"{s}[{k}]", to_host(dev[k]), refs[k]) for k in range(len(sizes))]
    return out


def run_clip(dtype: Any, *, backend: str | None, sizes=SIZES, seed: int = 0,
             to_device: Callable[[np.ndarray], Any] = lambda a: a,
             to_host: Callable[[Any], np.ndarray] = np.asarray,
             ) -> list[tuple[str, Any, Any]]:
    """clip_grad_norm_ (p = 2, 1, inf, 3) and clip_grad_value_ against the reference; returns
    (name, actual, expected) for the norms and the clipped gradients."""
    rng = np.random.default_rng(seed)
    out = []
    for norm_type in (2.0, 1.0, math.inf, 3.0):
        grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
        ref_grads = [g.copy() for g in grads]
        dev = [to_device(g) for g in grads]
        total = clip.clip_grad_norm_(dev, 0.5, norm_type, backend=backend)
        expected = reference.clip_grad_norm(ref_grads, 0.5, norm_type)
        out.append((f"norm(p={norm_type})", np.float64(total), np.float64(expected)))
        out += [(f"grad[{k}] p={norm_type}", to_host(d), r)
                for k, (d, r) in enumerate(zip(dev, ref_grads, strict=True))]
    grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
    ref_grads = [g.copy() for g in grads]
    dev = [to_device(g) for g in grads]
    clip.clip_grad_value_(dev, 0.7, backend=backend)
    reference.clip_grad_value(ref_grads, 0.7)
    out += [(f"clamped[{k}]", to_host(d), r)
            for k, (d, r) in enumerate(zip(dev, ref_grads, strict=True))]
    return out
