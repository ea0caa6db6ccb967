"""Property-based fuzzing of every optimizer against fastopt.reference: random tensor lists
(1-5 tensors, shapes of rank 0-3 with sizes 0, 1, primes and, rarely, past 65536), float32 and
float64 (mixed in one list too), every option (L1 in both modes included), NaN/inf in the
gradients, arrays carved from one shared buffer, warm state and late step counts; through
fastopt.functional (every CPU backend), fastopt.optim (param groups, missing gradients, lr
changed between steps) and fastopt.torch; and gradient clipping (every norm type, mixed
float32/float64 lists, error_if_nonfinite). Profiles and strategies: tests/_fuzz.py."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from _fuzz import (
    assert_close_within_sensitivity,
    carve,
    dtype_lists,
    fuzz,
    nonfinite_spots,
    normal,
    note,
    peak,
    place,
    reference_moves,
    seeds,
    shapes,
)
from conftest import backend_params
from hypothesis import given
from hypothesis import strategies as st
from tolerances import assert_close

import fastopt.optim
from fastopt import clip, functional, ops, reference

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN/inf in the reference


def _either(common: tuple[float, ...], lo: float, hi: float) -> st.SearchStrategy:
    """A usual value or any float in [lo, hi]; values below 1e-6 become lo: float32 kernels
    round hyperparameters to float32, where 1e-60 is 0 (and 0 * inf is NaN)."""
    return st.one_of(st.sampled_from(common),
                     st.floats(lo, hi).map(lambda x: x if x >= 1e-6 else lo))


lrs = _either((0.0, 1e-3, 0.1), 1e-5, 0.5)
weight_decays = _either((0.0, 0.01), 0.0, 0.5)


@st.composite
def _sgd(draw: Any) -> dict[str, Any]:
    momentum = draw(_either((0.0, 0.9), 0.0, 0.99))
    nesterov = momentum > 0 and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(_either((0.0, 0.1), 0.0, 1.0))
    return dict(lr=draw(lrs), momentum=momentum, dampening=dampening,
                weight_decay=draw(weight_decays), nesterov=nesterov, maximize=draw(st.booleans()))


HYPER = {
    "sgd": _sgd(),
    "adam": st.fixed_dictionaries(dict(
        # beta2 below 0.5 makes the denominator the current |g + wd p| alone: a gradient
        # that cancels its weight decay then divides by a rounding error, compounding over
        # steps (ill-conditioned at float32 whatever the kernel)
        lr=lrs, betas=st.tuples(_either((0.0, 0.9), 0.0, 0.99), _either((0.999,), 0.5, 0.9999)),
        # eps = 0 with an all-zero gradient gives 0/0 = NaN, the same in both
        eps=st.sampled_from((0.0, 1e-8, 1e-6, 1e-3)), weight_decay=weight_decays,
        decoupled_weight_decay=st.booleans(), amsgrad=st.booleans(), maximize=st.booleans(),
        bias_correction=st.booleans(), eps_inside_sqrt=st.booleans())),
    "adagrad": st.fixed_dictionaries(dict(
        lr=lrs, lr_decay=_either((0.0,), 0.0, 1.0), weight_decay=weight_decays,
        eps=st.sampled_from((0.0, 1e-10, 1e-6)), maximize=st.booleans())),
    "rmsprop": st.fixed_dictionaries(dict(
        # centered RMSprop divides by sqrt(s - ga^2), which cancels catastrophically as alpha
        # goes to 0 (s = g^2, ga = g): float32 and float64 then disagree by design
        lr=lrs, alpha=_either((0.99, 1.0), 0.5, 1.0), eps=st.sampled_from((1e-8, 1e-6, 1e-3)),
        weight_decay=weight_decays, momentum=_either((0.0, 0.9), 0.0, 0.99),
        centered=st.booleans(), maximize=st.booleans())),
    "lion": st.fixed_dictionaries(dict(
        lr=lrs, betas=st.tuples(_either((0.9, 0.0, 1.0), 0.0, 1.0),
                                _either((0.99, 0.0, 1.0), 0.0, 1.0)),
        weight_decay=weight_decays, maximize=st.booleans())),
    "nadam": st.fixed_dictionaries(dict(
        lr=lrs, betas=st.tuples(_either((0.0, 0.9), 0.0, 0.99), _either((0.999,), 0.5, 0.9999)),
        eps=st.sampled_from((1e-8, 1e-6, 1e-3)), weight_decay=weight_decays,
        momentum_decay=_either((4e-3, 0.0), 0.0, 0.1), decoupled_weight_decay=st.booleans(),
        maximize=st.booleans())),
    # beta2 from 0.3 to 0.9999: rho_t > 5 (the rectified step) early, late or never
    "radam": st.fixed_dictionaries(dict(
        lr=lrs, betas=st.tuples(_either((0.0, 0.9), 0.0, 0.99), _either((0.999,), 0.3, 0.9999)),
        eps=st.sampled_from((1e-8, 1e-6, 1e-3)), weight_decay=weight_decays,
        decoupled_weight_decay=st.booleans(), maximize=st.booleans())),
    "adamax": st.fixed_dictionaries(dict(
        lr=lrs, betas=st.tuples(_either((0.0, 0.9), 0.0, 0.99), _either((0.999, 0.0), 0.0, 0.9999)),
        eps=st.sampled_from((1e-8, 1e-6, 1e-3)), weight_decay=weight_decays,
        maximize=st.booleans())),
    "adadelta": st.fixed_dictionaries(dict(
        lr=_either((1.0, 0.1), 1e-3, 1.0), rho=_either((0.9, 0.0, 1.0), 0.0, 1.0),
        eps=st.sampled_from((1e-6, 1e-4, 1e-3)), weight_decay=weight_decays,
        maximize=st.booleans())),
}
OPS = tuple(HYPER)
L1 = st.one_of(st.just({}), st.fixed_dictionaries(dict(
    l1=_either((1e-3, 0.01), 1e-5, 0.1), l1_mode=st.sampled_from(ops.L1_MODES))))


def hypers(op: str) -> st.SearchStrategy:
    """Every hyperparameter of `op`, and L1 (none, coupled or proximal)."""
    return st.builds(lambda h, l1: {**h, **l1}, HYPER[op], L1)


def used_slots(op: str, hyper: dict[str, Any]) -> list[str | None]:
    """The op's state rows, None where these options leave one unused."""
    spec = ops.get(op)
    used = spec.state_slots({**spec.defaults, **hyper})
    return [s.name if s.name in used else None for s in spec.slots]


def test_every_optimizer_is_fuzzed():
    assert set(OPS) == set(ops.REGISTRY)


def _state_init(rng: np.random.Generator, slot: str, shape: tuple[int, ...], dtype: np.dtype,
                warm: bool) -> np.ndarray:
    """Initial state: zeros (a fresh optimizer) or a warm one in the slot's domain."""
    if not warm:
        return np.zeros(shape, dtype)
    x = normal(rng, shape, dtype)
    nonneg = ("exp_avg_sq", "max_exp_avg_sq", "state_sum", "square_avg", "exp_inf", "acc_delta")
    return np.abs(x) if slot in nonneg else x


def check_functional(op: str, data: st.DataObject, backend: str) -> None:
    """Steps 2-3 times through functional.<op>_ on `backend` and, tensor by tensor, through
    reference.<op>; params and state agree to the tolerance table."""
    hyper = data.draw(hypers(op), label="hyper")
    shape_list = data.draw(st.lists(shapes(), min_size=1, max_size=5), label="shapes")
    n = len(shape_list)
    dts = data.draw(dtype_lists(n), label="dtypes")
    steps = data.draw(st.integers(2, 3), label="steps")
    spots = data.draw(nonfinite_spots(tensors=n, steps=steps), label="nonfinite grads")
    packed = data.draw(st.booleans(), label="packed in one buffer")
    warm = data.draw(st.booleans(), label="warm state")
    start = data.draw(st.sampled_from((1, 1, 2, 10, 10**6)), label="first step")
    first = data.draw(st.lists(st.booleans(), min_size=steps, max_size=steps),
                      label="sgd first_step")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    note(shape_list, dts, bool(spots))

    slots = used_slots(op, hyper)
    used = [s for s in slots if s is not None]
    spec = ops.get(op)
    specs = [(s, dt) for s, dt in zip(shape_list, dts, strict=True)] * (1 + len(used))
    arrays = carve(specs, rng) if packed else [np.zeros(s, dt) for s, dt in specs]
    params = arrays[:n]
    for p, s, dt in zip(params, shape_list, dts, strict=True):
        p[...] = normal(rng, s, dt)
    state = {}
    for r, slot in enumerate(used):
        state[slot] = arrays[n * (r + 1): n * (r + 2)]
        for a, s, dt in zip(state[slot], shape_list, dts, strict=True):
            a[...] = _state_init(rng, slot, s, dt, warm)
    if "grad_avg" in state:  # s - ga^2 >= ga^2: a history in which the gradients vary
        for sq, ga in zip(state["square_avg"], state["grad_avg"], strict=True):
            sq[...] = sq + 2 * ga.astype(np.float64) ** 2
    # the reference from the same inputs, and from inputs moved by a few ulps (its sensitivity)
    moves = reference_moves(data.draw(seeds, label="jitter seed"))
    refs = [([mp(p) for p in params], {s: [ms(a) for a in arrays_] for s, arrays_ in state.items()})
            for mp, _, ms in moves]

    peaks: dict[Any, np.ndarray] = {k: peak(None, p) for k, p in enumerate(params)}
    peaks.update({(s, k): peak(None, a) for s, arrays_ in state.items()
                  for k, a in enumerate(arrays_)})
    fn, ref_fn = getattr(functional, op + "_"), getattr(reference, op)
    # the scalar state (NAdam's mu_product) as the caller carries it; a warm one is a product
    # of earlier momentum coefficients
    carried = {k: s.init * (0.5 if warm else 1.0) for k, s in spec.scalar_state.items()}
    for step in range(steps):
        grads = [normal(rng, s, dt, zeros=True) for s, dt in zip(shape_list, dts, strict=True)]
        if packed:
            carved = carve(list(zip(shape_list, dts, strict=True)), rng)
            for c, g in zip(carved, grads, strict=True):
                c[...] = g
            grads = carved
        place(grads, spots, step)
        kw = dict(hyper)
        if spec.uses_step:
            kw["step"] = start + step
        if spec.fresh_flag:
            kw["first_step"] = first[step]
        out = fn(params, grads, *[None if s is None else state[s] for s in slots],
                 backend=backend, **kw, **carried)
        for (_, move, _), (ref_params, ref_state) in zip(moves, refs, strict=True):
            for k in range(n):
                ref_fn(ref_params[k], move(grads[k]),
                       *[None if s is None else ref_state[s][k] for s in slots], **kw,
                       **carried)
        carried = out or {}
        ref_params, ref_state = refs[0]
        for k in range(n):
            peaks[k] = peak(peaks[k], ref_params[k])
            for slot in used:
                peaks[slot, k] = peak(peaks[slot, k], ref_state[slot][k])
    what = f"{op} {backend} {hyper}"
    (ref_params, ref_state), jittered = refs[0], refs[1:]
    for k in range(n):
        assert_close_within_sensitivity(params[k], ref_params[k], [j[0][k] for j in jittered],
                                        dts[k], f"{what}: param[{k}]", peaks[k])
        for slot in used:
            assert_close_within_sensitivity(state[slot][k], ref_state[slot][k],
                                            [j[1][slot][k] for j in jittered], dts[k],
                                            f"{what}: {slot}[{k}]", peaks[slot, k])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", backend_params(["cpu"]))
@fuzz(60)
@given(data=st.data())
def test_functional_cpu_matches_reference(op, backend, data):
    check_functional(op, data, backend)


@pytest.mark.parametrize("backend", backend_params(["numba"]))
@fuzz(60)
@given(op=st.sampled_from(OPS), data=st.data())
def test_functional_numba_matches_reference(op, backend, data):
    check_functional(op, data, backend)


# --- stateful optimizers: fastopt.optim and fastopt.torch ------------------------------------


def class_options(op: str, hyper: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The optimizer class and its constructor options for functional hyperparameters."""
    kw = dict(hyper)
    name = ops.get(op).cls
    if op == "adam" and kw.pop("decoupled_weight_decay"):
        name = "AdamW"
    return name, kw


class ReferenceModel:
    """torch.optim's bookkeeping around the reference formulas: state is created at a param's
    first gradient (Adagrad's at construction), a param's step counts its own gradients, and
    SGD's momentum buffer starts as the first update."""

    def __init__(self, op: str, groups: list[dict[str, Any]], params: list[np.ndarray],
                 initial_accumulator_value: float = 0.0) -> None:
        self.op, self.groups = op, groups
        self.spec = ops.get(op)
        self.params = [p.astype(p.dtype, copy=True) for p in params]
        self.steps = [0] * len(params)
        self.state: list[dict[str, np.ndarray]] = [{} for _ in params]
        self.scalar_state = [{k: s.init for k, s in self.spec.scalar_state.items()}
                             for _ in params]
        if op == "adagrad":
            for st_, p in zip(self.state, params, strict=True):
                st_["state_sum"] = np.full(p.shape, initial_accumulator_value, p.dtype)
        #: largest magnitudes along the trajectory, per (param index, "param" or state slot)
        self.peaks = {(k, "param"): peak(None, p) for k, p in enumerate(self.params)}

    def step(self, grads: list[np.ndarray | None], group_of: list[int]) -> None:
        for k, g in enumerate(grads):
            if g is None:
                continue
            hyper = dict(self.groups[group_of[k]])
            slots = used_slots(self.op, hyper)
            first = "momentum_buffer" not in self.state[k]
            for s in slots:
                if s is not None and s not in self.state[k]:
                    self.state[k][s] = np.zeros_like(self.params[k])
            self.steps[k] += 1
            if self.spec.uses_step:
                hyper["step"] = self.steps[k]
            if self.spec.fresh_flag:
                hyper["first_step"] = first
            out = self.spec.reference(
                self.params[k], g, *[None if s is None else self.state[k][s] for s in slots],
                **hyper, **self.scalar_state[k])
            for key in self.scalar_state[k]:
                self.scalar_state[k][key] = out
            for key, a in [("param", self.params[k]), *self.state[k].items()]:
                self.peaks[k, key] = peak(self.peaks.get((k, key)), a)


@st.composite
def stateful_case(draw: Any, torch_api: bool) -> dict[str, Any]:
    op = draw(st.sampled_from(OPS))
    hyper = draw(hypers(op))
    n = draw(st.integers(1, 5))
    shape_list = draw(st.lists(shapes(big_one_in=0), min_size=n, max_size=n))
    dts = draw(dtype_lists(n))
    steps = draw(st.integers(2, 3))
    split = draw(st.integers(0, n))  # params[:split] in group 0, the rest in group 1
    second = draw(st.fixed_dictionaries({"lr": lrs, "weight_decay": weight_decays}))
    has_grad = draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n),
                             min_size=steps, max_size=steps))
    lr_factor = draw(st.lists(st.sampled_from((1.0, 1.0, 0.5, 2.0)), min_size=steps,
                              max_size=steps))
    iav = draw(st.sampled_from((0.0, 0.1)))
    return dict(op=op, hyper=hyper, shapes=shape_list, dtypes=dts, steps=steps, split=split,
                second=second, has_grad=has_grad, lr_factor=lr_factor, iav=iav,
                spots=draw(nonfinite_spots(tensors=n, steps=steps)), seed=draw(seeds))


def run_stateful(case: dict[str, Any], make, set_grads, get_param, get_state) -> None:
    """Drives an optimizer built by make(params, groups, class name, extra options) and the
    ReferenceModel through the same steps; compares params and every state array."""
    rng = np.random.default_rng(case["seed"])
    op, shape_list, dts = case["op"], case["shapes"], case["dtypes"]
    note(shape_list, dts, bool(case["spots"]))
    n, split = len(shape_list), case["split"]
    params = [normal(rng, s, dt) for s, dt in zip(shape_list, dts, strict=True)]
    group_of = [0 if k < split else 1 for k in range(n)]
    hyper0 = dict(case["hyper"])
    hyper1 = {**hyper0, **case["second"]}
    name, opts0 = class_options(op, hyper0)
    _, opts1 = class_options(op, hyper1)
    groups = [g for g in (
        {"params": list(range(split)), **opts0}, {"params": list(range(split, n)), **opts1},
    ) if g["params"]]
    extra = {"initial_accumulator_value": case["iav"]} if op == "adagrad" else {}
    moves = reference_moves(case["seed"])
    models = [ReferenceModel(op, [dict(hyper0), dict(hyper1)], [mp(p) for p in params],
                             case["iav"]) for mp, _, _ in moves]
    opt, handles = make(params, groups, name, extra)
    for step in range(case["steps"]):
        grads = [normal(rng, s, dt, zeros=True) if case["has_grad"][step][k] else None
                 for k, (s, dt) in enumerate(zip(shape_list, dts, strict=True))]
        place([g if g is not None else np.zeros(0) for g in grads], case["spots"], step)
        factor = case["lr_factor"][step]
        for g in opt.param_groups:
            g["lr"] *= factor
        set_grads(opt, handles, grads)
        for (_, move, _), model in zip(moves, models, strict=True):
            for h in model.groups:
                h["lr"] *= factor
            model.step([None if g is None else move(g) for g in grads], group_of)
    what = f"{name} {hyper0} / {case['second']}"
    model, jittered = models[0], models[1:]
    for k in range(n):
        assert_close_within_sensitivity(get_param(handles[k]), model.params[k],
                                        [j.params[k] for j in jittered], dts[k],
                                        f"{what}: param[{k}]", model.peaks[k, "param"])
        for slot, expected in model.state[k].items():
            assert_close_within_sensitivity(get_state(opt, handles, k, slot), expected,
                                            [j.state[k][slot] for j in jittered], dts[k],
                                            f"{what}: {slot}[{k}]", model.peaks.get((k, slot)))


@fuzz(150)
@given(case=stateful_case(torch_api=False))
def test_fastopt_optim_follows_the_reference_model(case):
    def make(params, groups, name, extra):
        groups = [{**g, "params": [params[i] for i in g["params"]]} for g in groups]
        return getattr(fastopt.optim, name)(groups, **extra), params

    def set_grads(opt, handles, grads):
        opt.step(grads)

    def get_state(opt, handles, k, slot):
        return opt.state_dict()["state"][k][slot]

    run_stateful(case, make, set_grads, lambda p: p, get_state)


@fuzz(80)
@given(case=stateful_case(torch_api=True))
def test_fastopt_torch_follows_the_reference_model(case):
    torch = pytest.importorskip("torch")
    import fastopt.torch

    def make(params, groups, name, extra):
        tensors = [torch.tensor(p.copy()) for p in params]
        groups = [{**g, "params": [tensors[i] for i in g["params"]]} for g in groups]
        return getattr(fastopt.torch, name)(groups, **extra), tensors

    def set_grads(opt, tensors, grads):
        for t, g in zip(tensors, grads, strict=True):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        opt.step()

    def get_state(opt, tensors, k, slot):
        key = next(s.state_key for s in opt.spec.slots if s.name == slot)
        return opt.state[tensors[k]][key].numpy()

    run_stateful(case, make, set_grads, lambda t: t.detach().numpy(), get_state)



# --- gradient clipping -----------------------------------------------------------------------


@st.composite
def clip_cases(draw: Any) -> dict[str, Any]:
    shape_list = draw(st.lists(shapes(), min_size=0, max_size=5))
    n = len(shape_list)
    return dict(
        shapes=shape_list, dtypes=draw(dtype_lists(n)),
        norm_type=draw(st.one_of(st.sampled_from((2.0, 1.0, math.inf, 3.0, 0.5)),
                                 st.floats(0.25, 8.0))),
        max_norm=draw(st.sampled_from((0.0, 0.5, 1.0, 1e3, math.inf))),
        clip_value=draw(st.floats(0.0, 3.0)), error_if_nonfinite=draw(st.booleans()),
        spots=draw(nonfinite_spots(tensors=max(n, 1))), packed=draw(st.booleans()),
        backend=draw(st.sampled_from(("cpu", "cpu", "cpu", "numba"))), seed=draw(seeds))


@fuzz(300)
@given(case=clip_cases())
def test_clip_matches_reference(case):
    rng = np.random.default_rng(case["seed"])
    note(case["shapes"], case["dtypes"], bool(case["spots"]))
    specs = list(zip(case["shapes"], case["dtypes"], strict=True))
    grads = carve(specs, rng) if case["packed"] else [np.zeros(s, dt) for s, dt in specs]
    for g, (s, dt) in zip(grads, specs, strict=True):
        g[...] = normal(rng, s, dt, zeros=True)
    if grads:
        place(grads, case["spots"])
    # float32 anywhere in the list sets the tolerance of the norm
    tol_dtype = np.float32 if any(dt == np.float32 for dt in case["dtypes"]) else np.float64
    backend, what = case["backend"], f"clip {case}"

    ref_grads = [g.copy() for g in grads]
    before = [g.copy() for g in grads]
    expected = reference.clip_grad_norm(ref_grads, case["max_norm"], case["norm_type"])
    if case["error_if_nonfinite"] and not math.isfinite(expected):
        with pytest.raises(RuntimeError, match="non-finite"):
            clip.clip_grad_norm_(grads, case["max_norm"], case["norm_type"], True,
                                 backend=backend)
        ref_grads = before  # refused: nothing scaled
    else:
        total = clip.clip_grad_norm_(grads, case["max_norm"], case["norm_type"],
                                     case["error_if_nonfinite"], backend=backend)
        assert isinstance(total, float)
        assert_close(total, expected, tol_dtype, f"{what}: norm")
    for k, (g, r) in enumerate(zip(grads, ref_grads, strict=True)):
        assert_close(g, r, g.dtype, f"{what}: clip_grad_norm_ grad[{k}]")

    clip.clip_grad_value_(grads, case["clip_value"], backend=backend)
    reference.clip_grad_value(ref_grads, case["clip_value"])
    for k, (g, r) in enumerate(zip(grads, ref_grads, strict=True)):
        assert_close(g, r, g.dtype, f"{what}: clip_grad_value_ grad[{k}]")
