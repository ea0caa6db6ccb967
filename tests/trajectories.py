"""Multi-step trajectories of every optimizer against fastopt.reference (the specification),
shared by the test files and benchmarks/gpu_check.py.

Two layers, one pattern: a list of cases, and a function computing each case's reference
trajectory once (cached, read-only), which every backend under test is then held to.

- Stateful optimizers (fastopt.optim): `against_reference(cls, options, backend, dtype, shapes)`
  steps `cls(..., backend=backend)` and compares it with `reference_trajectory(...)`, the same
  optimizer on the `reference` backend; `against_torch` compares with torch.optim.
- The stateless layer (fastopt.functional) on any device: `CASES` (every option of every
  optimizer at least once) and `run(op, hyper, dtype, backend=..., to_device=..., to_host=...)`
  against `functional_reference(...)`; `run_clip` for clipping.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tolerances import assert_close

from fastopt import clip, functional, reference

# --- inputs -------------------------------------------------------------------------------

#: Odd sizes on their own, and all of them mixed in one list with 2-D shapes (DESIGN.md).
SHAPES = {
    "1": [(1,)],
    "7": [(7,)],
    "4097": [(4097,)],
    "65537": [(65537,)],
    "mixed": [(1,), (7,), (4097,), (65537,), (3, 5), (33, 17)],
}
#: The flat sizes of the functional-layer trajectories.
SIZES = (1, 7, 4097, 65537)


def initial_params(shapes: Sequence[tuple[int, ...]], dtype, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def grad_stream(shapes, dtype, steps: int, seed: int = 1, scale: float = 1.0):
    """The gradients of each step: varied magnitudes per tensor, never all the same."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield [(scale * rng.standard_normal(s) * rng.uniform(0.1, 3.0)).astype(dtype)
               for s in shapes]


@functools.lru_cache(maxsize=2)
def _grads(shapes: tuple, dtype: str, steps: int, seed: int) -> tuple:
    # drawing 100 steps of gradients costs as much as a reference trajectory: every option
    # of an optimizer, and every backend, steps through the same stream
    return tuple([_frozen(g) for g in grads] for grads in grad_stream(shapes, dtype, steps, seed))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # a cached trajectory is shared: no test may change it
    return a


def _key(options: dict[str, Any]) -> tuple:
    return tuple(sorted(options.items()))


# --- stateful optimizers ------------------------------------------------------------------


def snapshot(opt) -> tuple[list[np.ndarray], dict[int, dict[str, Any]]]:
    """(params, state_dict()['state']) of a fastopt optimizer, copied."""
    params = [np.array(p, copy=True) for g in opt.param_groups for p in g["params"]]
    return params, opt.state_dict()["state"]


@functools.lru_cache(maxsize=64)
def _reference_trajectory(cls, options: tuple, dtype: str, shapes: tuple, steps: int,
                          seed: int):
    opt = cls(initial_params(shapes, dtype, seed), backend="reference", **dict(options))
    for grads in _grads(shapes, dtype, steps, seed + 1):
        opt.step(grads)
    params, state = snapshot(opt)
    for entry in state.values():
        for value in entry.values():
            if isinstance(value, np.ndarray):
                _frozen(value)
    return [_frozen(p) for p in params], state


def reference_trajectory(cls, options: dict[str, Any], dtype, shapes, steps: int = 100,
                         seed: int = 0):
    """(params, state) after `steps` steps of `cls(**options)` on the reference backend, from
    initial_params(shapes, dtype, seed) and grad_stream(..., seed + 1); computed once per
    case and shared by every backend compared with it."""
    return _reference_trajectory(cls, _key(options), np.dtype(dtype).name,
                                 tuple(map(tuple, shapes)), steps, seed)


def compare_states(actual, expected, dtype, what: str) -> None:
    """Two snapshots agree: params, step counts and every state array."""
    (pa, sa), (pb, sb) = actual, expected
    assert len(pa) == len(pb)
    for k, (a, b) in enumerate(zip(pa, pb, strict=True)):
        assert_close(a, b, dtype, f"{what}: param {k}")
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].keys() == sb[k].keys()
        assert sa[k]["step"] == sb[k]["step"]
        for key, value in sa[k].items():
            if key != "step" and value is not None:
                assert_close(value, sb[k][key], dtype, f"{what}: {key} {k}")


def against_reference(cls, options: dict, backend: str, dtype, shapes, steps: int = 100,
                      seed: int = 0) -> None:
    """`backend` follows the reference trajectory of the same optimizer, start and grads."""
    shapes = tuple(map(tuple, shapes))
    opt = cls(initial_params(shapes, dtype, seed), backend=backend, **options)
    for grads in _grads(shapes, np.dtype(dtype).name, steps, seed + 1):
        opt.step(grads)
    compare_states(snapshot(opt), reference_trajectory(cls, options, dtype, shapes, steps, seed),
                   dtype, f"{cls.__name__}{options} {backend}")


def against_torch(cls, torch_cls, options: dict, torch_options: dict, dtype, shapes,
                  steps: int = 100, seed: int = 0, backend: str = "cpu") -> None:
    """fastopt.optim.<cls> on NumPy arrays and torch.optim.<torch_cls> on tensors agree."""
    import torch

    params = initial_params(shapes, dtype, seed)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    topt = torch_cls(tparams, **torch_options)
    opt = cls(params, backend=backend, **options)
    for grads in _grads(tuple(map(tuple, shapes)), np.dtype(dtype).name, steps, seed + 1):
        opt.step(grads)
        for t, g in zip(tparams, grads, strict=True):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
    for k, (p, t) in enumerate(zip(params, tparams, strict=True)):
        assert_close(p, t.detach().numpy(), dtype, f"{cls.__name__}{options} vs torch: param {k}")


# --- the functional layer, on any device --------------------------------------------------

#: (op, hyperparameters): every option of every optimizer at least once (checked against the
#: signatures of fastopt.functional by tests/test_optim.py).
CASES: list[tuple[str, dict[str, Any]]] = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=1e-3, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd", dict(lr=1e-3, momentum=0.8, dampening=0.1, maximize=True)),
    ("adam", dict(lr=1e-2)),
    ("adam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True,
                  betas=(0.8, 0.99))),
    ("adam", dict(lr=1e-2, weight_decay=0.05, maximize=True, eps_inside_sqrt=True,
                  bias_correction=False, eps=1e-6)),
    ("adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1)),
    ("adagrad", dict(lr=0.1, maximize=True, eps=1e-6)),
    ("rmsprop", dict(lr=1e-2)),
    ("rmsprop", dict(lr=1e-4, momentum=0.9, centered=True, weight_decay=0.01, alpha=0.9,
                     eps=1e-6, maximize=True)),
    ("lion", dict(lr=1e-3, weight_decay=0.1)),
    ("lion", dict(lr=1e-3, betas=(0.95, 0.98), maximize=True)),
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


def _functional_inputs(sizes, dtype: np.dtype, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    # magnitudes ~0.1: fp32 state then carries absolute errors well inside the table's atol
    grads = [[(rng.standard_normal(n) * (0.1 * (1 + step % 3))).astype(dtype) for n in sizes]
             for step in range(1, steps + 1)]
    return params, grads


@functools.lru_cache(maxsize=32)
def _functional_reference(op: str, hyper: tuple, dtype: np.dtype, sizes: tuple, steps: int,
                          seed: int):
    hyper = dict(hyper)
    params, grads = _functional_inputs(sizes, dtype, steps, seed)
    state = [None if s is None else [np.zeros(n, dtype) for n in sizes]
             for s in _used_slots(op, hyper)]
    ref_fn = getattr(reference, op)
    for step, g in enumerate(grads, start=1):
        kw = {**hyper, **_step_kwargs(op, hyper, step)}
        for k in range(len(sizes)):
            ref_fn(params[k], g[k], *[None if s is None else s[k] for s in state], **kw)
    return ([_frozen(p) for p in params],
            [None if s is None else [_frozen(a) for a in s] for s in state])


def functional_reference(op: str, hyper: dict[str, Any], dtype, sizes=SIZES, steps: int = 100,
                         seed: int = 0):
    """(params, state rows) after `steps` reference steps of `op` (read-only, cached)."""
    return _functional_reference(op, _key(hyper), np.dtype(dtype), tuple(sizes), steps, seed)


def run(op: str, hyper: dict[str, Any], dtype: Any, *, backend: str | None,
        sizes=SIZES, steps: int = 100, seed: int = 0,
        to_device: Callable[[np.ndarray], Any] = lambda a: a,
        to_host: Callable[[Any], np.ndarray] = np.asarray,
        ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Steps a list of tensors of `sizes` `steps` times through `backend`; returns (name,
    actual, expected) for every param and state array, expected from functional_reference."""
    dtype = np.dtype(dtype)
    params, grads = _functional_inputs(sizes, dtype, steps, seed)
    slots = _used_slots(op, hyper)
    dev_params = [to_device(p) for p in params]
    dev_state = [None if s is None else [to_device(np.zeros(n, dtype)) for n in sizes]
                 for s in slots]
    fn = getattr(functional, op + "_")
    for step, g in enumerate(grads, start=1):
        fn(dev_params, [to_device(x) for x in g], *dev_state, backend=backend,
           **hyper, **_step_kwargs(op, hyper, step))
    ref_params, ref_state = functional_reference(op, hyper, dtype, sizes, steps, seed)
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
