"""Gradient scaling in the step (torch.amp.GradScaler's `grad_scale` and `found_inf`, as torch's
fused optimizers take them): the grads are unscaled in place, g = g * (1 / grad_scale), and
stepped so; a nonzero found_inf changes nothing.

- every optimizer case of the functional layer, on every CPU backend and storage dtype: a step
  on grads scaled by a power of two with grad_scale equals the plain step bit for bit, and
  leaves the unscaled grads behind (the C++ kernels in the step's own pass, the others by a
  scaling pass first); another scale stays within one rounding;
- found_inf skips the step: params, state, grads and step counts as they were;
- fastopt.torch under GradScaler against torch's fused optimizers, infs injected; params torch
  hands to its own step (sparse grads) unscaled too;
- bad scales and read-only grads refused before anything changes.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CPU_BACKENDS
from optim_db import DB
from tolerances import assert_close
from trajectories import CASES, FEW_CASES, SIZES, case_id

import fastopt
from fastopt import backends, functional, ops

SCALE = 2.0**12


def _dtypes(backend: str) -> list[str]:
    takes = getattr(backends.get(backend), "dtypes", backends.ALL_DTYPES)
    out = ["float32", "float64", "float16", "bfloat16"]
    if "bfloat16" in takes:
        pytest.importorskip("ml_dtypes")
    return [d for d in out if d in takes]


def _np_dtype(name: str):
    return fastopt._arrays.numpy_dtype(name)


def _start(op: str, hyper: dict, dtype, seed: int = 0):
    """Params, state rows (None where the options need none) and the keywords of one step."""
    spec = ops.get(op)
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    group = {**spec.defaults, **hyper}
    need = spec.state_slots(group)
    state = [[np.full(n, spec.init_value(s.name, group), dtype) for n in SIZES]
             if s.name in need else None for s in spec.slots]
    return params, state


def _grads(dtype, seed: int):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * rng.uniform(0.1, 3.0)).astype(dtype) for n in SIZES]


def _trajectory(op: str, hyper: dict, dtype, backend: str, steps: int, scale: float | None,
                stream=None):
    """`steps` steps of functional.<op>_ (on the grads of `stream`, else drawn); with
    `scale`, on grads multiplied by it and grad_scale=scale. Returns the params, state rows and
    each step's grads after the step."""
    spec = ops.get(op)
    fn = getattr(functional, op + "_")
    params, state = _start(op, hyper, dtype)
    scalar_state = {k: s.init for k, s in spec.scalar_state.items()}
    seen = []
    for step in range(1, steps + 1):
        grads = [g.copy() for g in stream[step - 1]] if stream else _grads(dtype, step)
        if scale is not None:
            grads = [(g.astype(np.float64) * scale).astype(dtype) for g in grads]
        kw = dict(hyper, **scalar_state)
        if spec.uses_step:
            kw["step"] = step
        if spec.fresh_flag:
            kw["first_step"] = step == 1
        out = fn(params, grads, *state, backend=backend,
                 **({} if scale is None else {"grad_scale": scale}), **kw)
        scalar_state.update(out or {})
        seen.append(grads)
    return params, state, seen


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint8)


#: every case on the C++ kernels (their unscaling is in each op's pass); a few on the others
#: (an op-agnostic scaling pass before the step)
SCALED_CASES = [pytest.param(b, c, id=f"{b}-{case_id(c)}") for b in [*CPU_BACKENDS, "reference"]
                for c in (CASES if b == "cpu" else FEW_CASES)]


@pytest.mark.parametrize(("backend", "case"), SCALED_CASES)
def test_power_of_two_grad_scale_equals_the_plain_step_bitwise(backend, case):
    op, hyper = case
    for dtype in _dtypes(backend):
        dt = _np_dtype(dtype)
        p0, s0, g0 = _trajectory(op, hyper, dt, backend, 3, None)
        p1, s1, g1 = _trajectory(op, hyper, dt, backend, 3, SCALE)
        what = f"{case_id(case)} {backend} {dtype}"
        for k, (a, b) in enumerate(zip(p1, p0, strict=True)):
            np.testing.assert_array_equal(_bits(a), _bits(b), err_msg=f"{what} param[{k}]")
        for rows1, rows0, slot in zip(s1, s0, ops.get(op).slots, strict=True):
            for k, (a, b) in enumerate(zip(rows1 or (), rows0 or (), strict=True)):
                np.testing.assert_array_equal(_bits(a), _bits(b),
                                              err_msg=f"{what} {slot.name}[{k}]")
        # the grads are left unscaled, as torch's fused steps leave them
        for step, (scaled, plain) in enumerate(zip(g1, g0, strict=True)):
            for k, (a, b) in enumerate(zip(scaled, plain, strict=True)):
                np.testing.assert_array_equal(_bits(a), _bits(b),
                                              err_msg=f"{what} grad[{k}] of step {step + 1}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", FEW_CASES, ids=case_id)
def test_any_grad_scale_steps_the_grads_it_leaves(case, backend):
    """With a scale that is no power of two (3) the unscaled grads are within one rounding of
    the true ones, and the step is the plain step on exactly those grads."""
    op, hyper = case
    for dtype in ("float32", "float64"):
        dt = np.dtype(dtype)
        p1, s1, unscaled = _trajectory(op, hyper, dt, backend, 3, 3.0)
        p0, s0, _ = _trajectory(op, hyper, dt, backend, 3, None, stream=unscaled)
        what = f"{case_id(case)} {backend} {dtype}"
        for step, grads in enumerate(unscaled, start=1):
            for k, g in enumerate(grads):
                assert_close(g, _grads(dt, step)[k], dtype, f"{what} grad[{k}] of step {step}")
        for k, (a, b) in enumerate(zip(p1, p0, strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"{what} param[{k}]")
        for rows1, rows0 in zip(s1, s0, strict=True):
            for a, b in zip(rows1 or (), rows0 or (), strict=True):
                np.testing.assert_array_equal(a, b, err_msg=f"{what} state")


def _torch_one(value):
    torch = pytest.importorskip("torch")
    return torch.tensor(value)


@pytest.mark.parametrize("found_inf", [1.0, np.float32(1.0), np.array([np.inf]), "tensor"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_found_inf_changes_nothing(backend, found_inf):
    if isinstance(found_inf, str):
        found_inf = _torch_one(1.0)
    params, state = _start("adam", {}, np.float32)
    grads = _grads(np.float32, 1)
    before = [a.copy() for a in params + grads + state[0] + state[1]]
    out = functional.adam_(params, grads, *state, step=1, grad_scale=SCALE,
                           found_inf=found_inf, backend=backend)
    assert out is None
    after = params + grads + state[0] + state[1]
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    # the scalar state a skipped step returns is the state it was given
    p, st = _start("nadam", {}, np.float32)
    out = functional.nadam_(p, grads, *st, step=4, mu_product=0.5, found_inf=1.0,
                            backend=backend)
    assert out == {"mu_product": 0.5}


@pytest.mark.parametrize("entry", DB, ids=lambda e: e.name)
def test_optimizer_step_skipped_on_found_inf_counts_no_step(entry):
    """fastopt.optim: a trajectory with a skipped step in the middle is the trajectory without
    it, bit for bit: step counts (bias corrections) and scalar state did not move."""
    dtype = np.float32
    shapes = [(7,), (3, 5)]
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    stream = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(4)]
    runs = []
    for skip in (True, False):
        params = [a.copy() for a in init]
        opt = entry.optim_class(params, **entry.full)
        for i, grads in enumerate(stream):
            if i == 2:
                if not skip:
                    continue
                scaled = [g * np.float32(SCALE) for g in grads]
                opt.step(scaled, grad_scale=SCALE, found_inf=np.float32(1.0))
                np.testing.assert_array_equal(scaled[0], grads[0] * np.float32(SCALE))
            else:
                opt.step([g * np.float32(SCALE) for g in grads], grad_scale=SCALE,
                         found_inf=0.0)
        runs.append((params, opt.state_dict()))
    (p1, sd1), (p0, sd0) = runs
    for a, b in zip(p1, p0, strict=True):
        np.testing.assert_array_equal(a, b)
    for k, st in sd0["state"].items():
        for key, value in st.items():
            np.testing.assert_array_equal(sd1["state"][k][key], value, err_msg=key)


@pytest.mark.parametrize("bad", [0.0, -2.0, np.nan, np.inf, np.array([2.0, 4.0]), "2", None])
def test_bad_grad_scale_is_refused_before_anything_changes(bad):
    params, state = _start("adam", {}, np.float32)
    grads = _grads(np.float32, 1)
    before = [a.copy() for a in params + grads]
    if bad is None:  # a found_inf of several values
        with pytest.raises(ValueError, match="found_inf"):
            functional.adam_(params, grads, *state, step=1, found_inf=np.zeros(2))
    else:
        with pytest.raises(ValueError, match="grad_scale"):
            functional.adam_(params, grads, *state, step=1, grad_scale=bad)
    for a, b in zip(params + grads, before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layer", ["functional", "optim"])
def test_read_only_grads_are_refused_when_unscaling(layer):
    """Unscaling writes the grads: a read-only one is refused, and nothing is stepped."""
    params, state = _start("adam", {}, np.float32)
    grads = _grads(np.float32, 1)
    grads[2].flags.writeable = False
    before = [a.copy() for a in params]
    with pytest.raises(ValueError, match=r"grad\[2\]: array is read-only"):
        if layer == "functional":
            functional.adam_(params, grads, *state, step=1, grad_scale=SCALE)
        else:
            fastopt.optim.Adam(params).step(grads, grad_scale=SCALE)
    for a, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(a, b)
    # without a scale the grads are only read: accepted
    functional.adam_(params, grads, *state, step=1)


def test_optim_unscales_grads_stepped_through_copies():
    """A grad laid out unlike its param is stepped through a copy: the unscaled values still
    reach the caller's grad."""
    p = np.arange(12, dtype=np.float32).reshape(3, 4)
    g = np.asfortranarray(np.full((3, 4), 8.0, np.float32))
    q = p.copy()
    fastopt.optim.SGD([p], lr=0.5).step([g], grad_scale=4.0)
    fastopt.optim.SGD([q], lr=0.5).step([np.full((3, 4), 2.0, np.float32)])
    np.testing.assert_array_equal(g, np.full((3, 4), 2.0, np.float32))
    np.testing.assert_array_equal(p, q)


# --- fastopt.torch under torch.amp.GradScaler ------------------------------------------------
#: torch.optim classes whose fused CPU step takes GradScaler's scale, with options that
#: exercise their state
FUSED = {"Adam": dict(lr=1e-2, weight_decay=0.1), "AdamW": dict(lr=1e-2, amsgrad=True),
         "Adagrad": dict(lr=1e-1), "SGD": dict(lr=1e-2, momentum=0.9)}


def _amp_run(torch, make_opt, dtype, inf_at=(2,), steps=6):
    """A small model trained under GradScaler; infs injected into the grads of the steps
    `inf_at`. Returns the params, the optimizer, the scales seen and the grads after each
    step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(9, 33), torch.nn.Tanh(), torch.nn.Linear(33, 4))
    model = model.to(dtype)
    opt = make_opt(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    gen = torch.Generator().manual_seed(1)
    scales, grads = [], []
    for i in range(steps):
        x = torch.randn(16, 9, generator=gen).to(dtype)
        y = torch.randn(16, 4, generator=gen).to(dtype)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).float(), y.float())
        scaler.scale(loss).backward()
        if i in inf_at:
            next(model.parameters()).grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        grads.append([p.grad.clone() for p in model.parameters()])
    return list(model.parameters()), opt, scales, grads


#: float16 models for the Adam variants only: training feeds each rounding back through the
#: forward pass, and torch's 16-bit fused SGD and Adagrad round apart from float32 math by more
#: than one 16-bit ulp per step (see test_storage_dtypes); their 16-bit unscaling is checked bit
#: for bit in the functional tests above
AMP_CASES = [(n, "float32") for n in sorted(FUSED)] + [("Adam", "float16"), ("AdamW", "float16")]


@pytest.mark.parametrize(("name", "dtype"), AMP_CASES)
def test_fastopt_torch_under_gradscaler_matches_torch_fused(name, dtype):
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    if not backends.get("cpu").available()[0]:
        pytest.skip("the C++ CPU kernels are not built")
    tdt = getattr(torch, dtype)
    ours = _amp_run(torch, lambda ps: getattr(fo, name)(ps, **FUSED[name]), tdt)
    theirs = _amp_run(torch, lambda ps: getattr(torch.optim, name)(ps, fused=True,
                                                                   **FUSED[name]), tdt)
    assert ours[1]._step_supports_amp_scaling
    assert ours[2] == theirs[2]  # the same infs found, the same scales
    for k, (a, b) in enumerate(zip(ours[0], theirs[0], strict=True)):
        assert_close(a.detach().float().numpy(), b.detach().float().numpy(), dtype,
                     f"{name} param {k}")
        sa, sb = ours[1].state[a], theirs[1].state[b]
        for key, value in sb.items():
            if key == "step":  # the skipped steps were not counted
                assert float(sa[key]) == float(value) == 6 - 1, (name, key)
            else:
                assert_close(sa[key].float().numpy(), value.float().numpy(), dtype,
                             f"{name} {key} {k}")
    for step, (ga, gb) in enumerate(zip(ours[3], theirs[3], strict=True)):
        for a, b in zip(ga, gb, strict=True):  # left unscaled, or untouched where skipped
            assert_close(a.float().numpy(), b.float().numpy(), dtype, f"grad of step {step}")


def test_fastopt_torch_unscales_what_it_hands_to_torch():
    """Sparse grads go to torch's own (non-fused) SGD step, which takes no scale: fastopt
    unscales them first, so the result is GradScaler with torch.optim.SGD."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    runs = []
    for make in (fo.SGD, torch.optim.SGD):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(20, 6, sparse=True)
        dense = torch.nn.Linear(6, 1)
        opt = make([*emb.parameters(), *dense.parameters()], lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        for i in range(3):
            opt.zero_grad()
            idx = torch.tensor([[1, 4, 7], [2, 4, 9]]) + i
            loss = dense(emb(idx)).pow(2).mean()
            scaler.scale(loss).backward()
            with pytest.warns(UserWarning, match="sparse") if make is fo.SGD and i == 0 \
                    else _no_warning():
                scaler.step(opt)
            scaler.update()
        runs.append([p.detach().clone() for p in (*emb.parameters(), *dense.parameters())])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


def test_every_fastopt_torch_class_takes_the_scale():
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    for name, _, _ in ops.classes():
        opt = getattr(fo, name)([torch.nn.Parameter(torch.ones(3))], lr=0.1)
        assert opt._step_supports_amp_scaling, name
