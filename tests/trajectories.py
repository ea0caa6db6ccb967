"""Multi-step trajectories of every optimizer against fastopt.reference (the specification) and
torch.optim: the one helper module of the optimizer tests (tests/test_optim_db.py and the
per-op files) and of benchmarks/gpu_check.py.

One pattern throughout: a case (an optimizer class of tests/optim_db.py and its options, or an
op and its functional keywords), a function computing the case's expected trajectory once
(cached, read-only), and the implementation under test stepped from the same start and
gradients and held to it with tests/tolerances.py.

- Stateful optimizers: `reference_trajectory(cls, options, ...)` (fastopt.optim on the
  `reference` backend) and `torch_trajectory(entry, options, ...)` (torch.optim, L1 added
  around its step), each a `Snapshot`; `optim_run` and `torch_run` step fastopt.optim and
  fastopt.torch the same way; `compare` holds one snapshot to another.
- The stateless layer (fastopt.functional) on any device: `CASES` (every option set of the
  database as functional keywords) and `run(op, hyper, dtype, backend=..., to_device=...,
  to_host=...)` against `functional_reference(...)`, which steps the reference functions
  with torch.optim's bookkeeping (`ReferenceOptimizer`); `run_clip` for clipping.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from optim_db import DB, Entry
from tolerances import assert_close

from fastopt import clip, functional, ops, reference

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


@functools.lru_cache(maxsize=8)
def _grads(shapes: tuple, dtype: str, steps: int, seed: int) -> tuple:
    # drawing the gradients costs as much as a short reference trajectory: every option set
    # of every optimizer, and every backend, steps through the same stream
    return tuple([_frozen(g) for g in grads] for grads in grad_stream(shapes, dtype, steps, seed))


def cached_grads(shapes, dtype, steps: int, seed: int = 1) -> tuple:
    """grad_stream(...) as a cached, read-only tuple of per-step lists."""
    return _grads(tuple(map(tuple, shapes)), np.dtype(dtype).name, steps, seed)


def _frozen(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        a.flags.writeable = False  # a cached trajectory is shared: no test may change it
    return a


def _key(options: dict[str, Any]) -> tuple:
    return tuple(sorted(options.items()))


@contextlib.contextmanager
def torch_default_dtype(dtype):
    """torch.optim keeps its scalar state (step, NAdam's mu_product) in the default dtype: a
    float64 model runs with float64 as the default."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


# --- stateful optimizers ------------------------------------------------------------------


class Snapshot(NamedTuple):
    """Params and per-param state ({index: {key: array or number}}, keys as fastopt.optim's
    state_dict: the spec's slot names, 'step', scalar state such as 'mu_product')."""

    params: list[np.ndarray]
    state: dict[int, dict[str, Any]]


def snapshot(opt) -> Snapshot:
    """A fastopt.optim optimizer's params and state_dict()['state'], copied."""
    params = [np.array(p, copy=True) for g in opt.param_groups for p in g["params"]]
    return Snapshot(params, opt.state_dict()["state"])


def torch_snapshot(opt, params, spec: ops.OpSpec) -> Snapshot:
    """A torch.optim (or fastopt.torch) optimizer's params and state, keys as snapshot()'s."""
    keys = {s.state_key: s.name for s in spec.slots}
    state = {}
    for k, p in enumerate(params):
        entry = {}
        for key, value in opt.state[p].items():
            if value is None:
                continue
            if key in keys:
                entry[keys[key]] = value.detach().cpu().numpy().copy()
            elif value.dim() == 0:
                entry[key] = float(value)
        state[k] = entry
    return Snapshot([p.detach().cpu().numpy().copy() for p in params], state)


def compare(actual: Snapshot, expected: Snapshot, dtype, what: str,
            same_keys: bool = True) -> None:
    """Params, step counts, scalar state and every state array agree to the tolerance table
    (same_keys: and both hold the same state keys; else actual holds expected's)."""
    assert len(actual.params) == len(expected.params)
    for k, (a, b) in enumerate(zip(actual.params, expected.params, strict=True)):
        assert_close(a, b, dtype, f"{what}: param {k}")
    assert actual.state.keys() == expected.state.keys(), what
    for k, want in expected.state.items():
        got = actual.state[k]
        want = {key: v for key, v in want.items() if v is not None}
        got = {key: v for key, v in got.items() if v is not None}
        if same_keys:
            assert got.keys() == want.keys(), (what, k, sorted(got), sorted(want))
        for key, value in want.items():
            assert key in got, (what, k, key)
            if key == "step":
                assert float(got[key]) == float(value), (what, k)
            else:
                assert_close(got[key], value, dtype, f"{what}: {key} {k}")


@functools.lru_cache(maxsize=64)
def _reference_trajectory(cls, options: tuple, dtype: str, shapes: tuple, steps: int,
                          seed: int) -> Snapshot:
    opt = cls(initial_params(shapes, dtype, seed), backend="reference", **dict(options))
    for g in _grads(shapes, dtype, steps, seed + 1):
        opt.step(g)
    out = snapshot(opt)
    for entry in out.state.values():
        for value in entry.values():
            _frozen(value)
    return Snapshot([_frozen(p) for p in out.params], out.state)


def reference_trajectory(cls, options: dict[str, Any], dtype, shapes, steps: int = 30,
                         seed: int = 0) -> Snapshot:
    """The state after `steps` steps of `cls(**options)` on the reference backend, from
    initial_params(shapes, dtype, seed) and grad_stream(..., seed + 1); computed once per
    case and shared by every backend compared with it."""
    return _reference_trajectory(cls, _key(options), np.dtype(dtype).name,
                                 tuple(map(tuple, shapes)), steps, seed)


def optim_run(cls, options: dict[str, Any], backend: str, dtype, shapes, steps: int = 30,
              seed: int = 0, grads: Sequence[list[np.ndarray]] | None = None) -> Snapshot:
    """fastopt.optim.<cls>(**options) on `backend`, stepped as reference_trajectory (or
    through the given per-step gradient lists)."""
    shapes = tuple(map(tuple, shapes))
    opt = cls(initial_params(shapes, dtype, seed), backend=backend, **options)
    for g in grads if grads is not None else cached_grads(shapes, dtype, steps, seed + 1):
        opt.step(g)
    return snapshot(opt)


def against_reference(cls, options: dict, backend: str, dtype, shapes, steps: int = 30,
                      seed: int = 0) -> None:
    """`backend` follows the reference trajectory of the same optimizer, start and grads."""
    compare(optim_run(cls, options, backend, dtype, shapes, steps, seed),
            reference_trajectory(cls, options, dtype, shapes, steps, seed),
            dtype, f"{cls.__name__}{options} {backend}")


def _l1_around(options: dict[str, Any], group: dict[str, Any]):
    """(before, after) hooks that give a torch.optim step the L1 term of `options`: coupled,
    the subgradient l1 * sign(p) added to the gradient (subtracted with maximize: torch
    negates the whole gradient); proximal, the soft threshold applied to the params after the
    step. fastopt's kernels do the same arithmetic in the same precision."""
    import torch

    l1, mode = float(options.get("l1", 0.0)), options.get("l1_mode", "coupled")
    sign = -1.0 if group.get("maximize") else 1.0
    prox = float(group["lr"]) * l1

    def before(p, g):
        return g + sign * l1 * torch.sign(p) if l1 and mode == "coupled" else g

    def after(p):
        if l1 and mode == "proximal":
            p.copy_(torch.sign(p) * torch.clamp(p.abs() - prox, min=0))

    return before, after


@functools.lru_cache(maxsize=64)
def _torch_trajectory(entry: Entry, options: tuple, dtype: str, shapes: tuple, steps: int,
                      seed: int) -> Snapshot:
    import torch

    options = dict(options)
    before, after = _l1_around(options, entry.group(options))
    kw = {k: v for k, v in options.items() if k not in ("l1", "l1_mode")}
    with torch_default_dtype(dtype), torch.no_grad():
        params = [torch.tensor(p) for p in initial_params(shapes, dtype, seed)]
        opt = entry.torch_class(params, **kw)
        for g in _grads(shapes, dtype, steps, seed + 1):
            for p, x in zip(params, g, strict=True):
                p.grad = before(p, torch.tensor(x))
            opt.step()
            for p in params:
                after(p)
        out = torch_snapshot(opt, params, entry.spec)
    for st in out.state.values():
        for value in st.values():
            _frozen(value)
    return Snapshot([_frozen(p) for p in out.params], out.state)


def torch_trajectory(entry: Entry, options: dict[str, Any], dtype, shapes, steps: int = 30,
                     seed: int = 0) -> Snapshot:
    """torch.optim's class of `entry` stepped as reference_trajectory (computed once per
    case); L1 added around torch's step (see _l1_around)."""
    return _torch_trajectory(entry, _key(options), np.dtype(dtype).name,
                             tuple(map(tuple, shapes)), steps, seed)


def torch_run(entry: Entry, options: dict[str, Any], dtype, shapes, steps: int = 30,
              seed: int = 0, device: str = "cpu") -> Snapshot:
    """fastopt.torch.<entry>(**options) stepped as reference_trajectory, on tensors of
    `device` (on the backend that FASTOPT_BACKEND or the automatic choice gives)."""
    import torch

    shapes = tuple(map(tuple, shapes))
    with torch_default_dtype(dtype):
        params = [torch.tensor(p, device=device, requires_grad=True)
                  for p in initial_params(shapes, dtype, seed)]
        opt = entry.fo_torch_class(params, **options)
        for g in cached_grads(shapes, dtype, steps, seed + 1):
            for p, x in zip(params, g, strict=True):
                p.grad = torch.tensor(x, device=device)
            opt.step()
        return torch_snapshot(opt, params, entry.spec)


# --- the functional layer, on any device --------------------------------------------------


def _functional_cases() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for e in DB:
        for options in e.options:
            case = e.functional(options)
            if case not in out:
                out.append(case)
    return out


#: (op, keywords of fastopt.functional.<op>_): every option set of tests/optim_db.py.
CASES: list[tuple[str, dict[str, Any]]] = _functional_cases()


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    op, hyper = case
    return op + "-" + "-".join(f"{k}={v}" for k, v in hyper.items())


def _few_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = [e.functional(e.full) for e in DB]
    for mode in ("coupled", "proximal"):
        e, o = next((e, o) for e in DB for o in e.options
                    if o.get("l1") and o.get("l1_mode", "coupled") == mode)
        cases.append(e.functional(o))
    return list({case_id(c): c for c in cases}.values())


#: Each class's option set with the most state, and each L1 mode once: for the slow runs (the
#: CUDA simulator runs every thread in Python; GPU checks under a time budget).
FEW_CASES: list[tuple[str, dict[str, Any]]] = _few_cases()


class ReferenceOptimizer:
    """Steps lists of float arrays (in place) with reference.<op>, keeping torch.optim's
    bookkeeping: a step count from 1, SGD's first step, NAdam's mu_product carried from step
    to step, state zero-initialized (or at the slot's initial value) where the options use it.
    Independent of the spec's host code, so the reference backend is checked against it."""

    def __init__(self, op: str, params: list[np.ndarray], **hyper: Any) -> None:
        self.spec = ops.get(op)
        self.fn = self.spec.reference
        self.takes = inspect.signature(self.fn).parameters
        self.params, self.hyper = params, hyper
        group = {**self.spec.defaults, **hyper}
        used = self.spec.state_slots(group)
        self.state = {s.name: [np.full_like(p, self.spec.init_value(s.name, group))
                               for p in params] if s.name in used else None
                      for s in self.spec.slots}
        self.scalar_state = [{k: s.init for k, s in self.spec.scalar_state.items()}
                             for _ in params]
        self.steps = 0
        # the largest magnitude each array reached, from its initial values on (tolerances)
        self.reach = {name: [_absmax(a) for a in arrays]
                      for name, arrays in [("param", params), *self.state.items()]
                      if arrays is not None}

    def step(self, grads: list[np.ndarray]) -> None:
        self.steps += 1
        for k, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            # hyperparameters of the state's initial value (Adagrad's) are no step's
            kw = {key: v for key, v in self.hyper.items() if key in self.takes}
            if "step" in self.takes:
                kw["step"] = self.steps
            if "first_step" in self.takes:
                kw["first_step"] = self.steps == 1
            kw.update(self.scalar_state[k])
            rows = [None if r is None else r[k] for r in self.state.values()]
            out = self.fn(p, g, *rows, **kw)
            for key in self.scalar_state[k]:
                self.scalar_state[k][key] = out
            for name, reach in self.reach.items():
                a = p if name == "param" else self.state[name][k]
                reach[k] = max(reach[k], _absmax(a))


def _absmax(a: np.ndarray) -> float:
    finite = np.abs(np.asarray(a, np.float64))
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if finite.size else 0.0


class Compared(NamedTuple):
    """One array of a backend's run and the reference's, with the largest magnitude the
    reference's reached on the way (tolerances.assert_close's reach)."""

    name: str
    actual: Any
    expected: Any
    reach: float = 0.0

    def check(self, dtype, what: str = "") -> None:
        assert_close(self.actual, self.expected, dtype, f"{what}: {self.name}", self.reach)


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
    params, grads = _functional_inputs(sizes, dtype, steps, seed)
    ref = ReferenceOptimizer(op, params, **dict(hyper))
    for g in grads:
        ref.step(g)
    return ([_frozen(p) for p in params],
            {s: None if rows is None else [_frozen(a) for a in rows]
             for s, rows in ref.state.items()},
            {name: tuple(r) for name, r in ref.reach.items()})


def functional_reference(op: str, hyper: dict[str, Any], dtype, sizes=SIZES, steps: int = 100,
                         seed: int = 0):
    """(params, {slot: rows or None}, {"param" or slot: largest magnitude per array}) after
    `steps` reference steps of `op` (read-only, cached)."""
    return _functional_reference(op, _key(hyper), np.dtype(dtype), tuple(sizes), steps, seed)


def run(op: str, hyper: dict[str, Any], dtype: Any, *, backend: str | None,
        sizes=SIZES, steps: int = 100, seed: int = 0,
        to_device: Callable[[np.ndarray], Any] = lambda a: a,
        to_host: Callable[[Any], np.ndarray] = np.asarray,
        ) -> list[Compared]:
    """Steps a list of tensors of `sizes` `steps` times through fastopt.functional.<op>_ on
    `backend`, carrying the step count, SGD's first step and the scalar state returned (NAdam's
    mu_product) as a caller does; returns (name, actual, expected) for every param and state
    array, expected from functional_reference."""
    dtype = np.dtype(dtype)
    spec = ops.get(op)
    params, grads = _functional_inputs(sizes, dtype, steps, seed)
    ref_params, ref_state, reach = functional_reference(op, hyper, dtype, sizes, steps, seed)
    dev_params = [to_device(p) for p in params]
    group = {**spec.defaults, **hyper}
    dev_state = {s: None if rows is None else
                 [to_device(np.full(n, spec.init_value(s, group), dtype)) for n in sizes]
                 for s, rows in ref_state.items()}
    scalar_state = {k: s.init for k, s in spec.scalar_state.items()}
    fn = getattr(functional, op + "_")
    for step, g in enumerate(grads, start=1):
        kw = dict(hyper, **scalar_state)
        if spec.uses_step:
            kw["step"] = step
        if spec.fresh_flag:
            kw["first_step"] = step == 1
        out = fn(dev_params, [to_device(x) for x in g], *dev_state.values(), backend=backend,
                 **kw)
        scalar_state.update(out or {})
    result = [Compared(f"param[{k}]", to_host(dev_params[k]), ref_params[k], reach["param"][k])
              for k in range(len(sizes))]
    for s, rows in dev_state.items():
        if rows is not None:
            result += [Compared(f"{s}[{k}]", to_host(rows[k]), ref_state[s][k], reach[s][k])
                       for k in range(len(sizes))]
    return result


def run_clip(dtype: Any, *, backend: str | None, sizes=SIZES, seed: int = 0,
             to_device: Callable[[np.ndarray], Any] = lambda a: a,
             to_host: Callable[[Any], np.ndarray] = np.asarray,
             ) -> list[Compared]:
    """clip_grad_norm_ (p = 2, 1, inf, 3) and clip_grad_value_ against the reference; returns
    the norms and the clipped gradients compared."""
    rng = np.random.default_rng(seed)
    out = []
    for norm_type in (2.0, 1.0, math.inf, 3.0):
        grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
        ref_grads = [g.copy() for g in grads]
        dev = [to_device(g) for g in grads]
        total = clip.clip_grad_norm_(dev, 0.5, norm_type, backend=backend)
        expected = reference.clip_grad_norm(ref_grads, 0.5, norm_type)
        out.append(Compared(f"norm(p={norm_type})", np.float64(total), np.float64(expected)))
        out += [Compared(f"grad[{k}] p={norm_type}", to_host(d), r)
                for k, (d, r) in enumerate(zip(dev, ref_grads, strict=True))]
    grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
    ref_grads = [g.copy() for g in grads]
    dev = [to_device(g) for g in grads]
    clip.clip_grad_value_(dev, 0.7, backend=backend)
    reference.clip_grad_value(ref_grads, 0.7)
    out += [Compared(f"clamped[{k}]", to_host(d), r)
            for k, (d, r) in enumerate(zip(dev, ref_grads, strict=True))]
    return out



# --- thread counts ------------------------------------------------------------------------

#: thread counts every CPU backend must give bitwise the same results for
THREADS = (1, 2, 3)


@contextlib.contextmanager
def threads(backend: str, n: int):
    """Run `backend`'s kernels on n threads (as many as it may use, for Numba)."""
    if backend == "numba":
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            numba.set_num_threads(before)
    else:
        import fastopt

        before = fastopt.get_num_threads()
        fastopt.set_num_threads(n)
        try:
            yield
        finally:
            fastopt.set_num_threads(before)


def each_thread_count(backend: str, fn: Callable[[], Any]) -> list[Any]:
    """fn() under each of THREADS threads; the results, which must all be equal."""
    out = []
    for n in THREADS:
        with threads(backend, n):
            out.append(fn())
    return out
