"""The tests every optimizer passes, generated from tests/optim_db.py (one entry per class of
fastopt.ops.classes(), each with option sets covering every hyperparameter and L1 in both
modes): a new spec is tested here with no edit.

- trajectories (30 steps, float32 and float64) of every CPU backend against the reference, on
  a mixed list of shapes for every option set and on sizes 1, 7, 4097 and 65537 alone; the
  functional layer against the reference functions stepped with torch.optim's bookkeeping;
  the CUDA backends (where a GPU is) through fastopt.functional and fastopt.torch;
- the reference, fastopt.optim on every backend and fastopt.torch against torch.optim on the
  same numbers (L1 added around torch's step), fastopt.torch against the reference otherwise;
- checkpoints: fastopt.optim and fastopt.torch resume bitwise from their own state_dict (fresh
  or already stepped target), torch.optim's checkpoints load into fastopt.torch and back;
- copies (copy.deepcopy, pickle) continue bitwise as the original, never writing its arrays;
- every out-of-domain hyperparameter raises ValueError (torch.optim's message where torch
  refuses it too) from fastopt.optim, fastopt.torch and fastopt.functional alike;
- bitwise equal results for any thread count; NaN and inf gradients as the reference;
- proximal L1 makes exact zeros, as many as the reference's.

The reference and torch trajectories are computed once per case and shared by every backend
(tests/trajectories.py).
"""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
from conftest import backend_params
from optim_db import (
    DB,
    Entry,
    cases,
    expected_outcome,
    generated_options,
    invalid_candidates,
    uncovered,
)
from trajectories import (
    CASES,
    SHAPES,
    Snapshot,
    compare,
    each_thread_count,
    grad_stream,
    initial_params,
    optim_run,
    reference_trajectory,
    run,
    snapshot,
    torch_run,
    torch_snapshot,
    torch_trajectory,
)

import fastopt.optim
from fastopt import functional

STEPS = 30
#: the mixed list of every option set: odd sizes, two chunks of the CPU drivers (16385) and
#: 2-D shapes in one table (65537 on its own: test_sizes_match_reference)
MIXED = [(1,), (7,), (4097,), (16385,), (3, 5), (33, 17)]
DTYPES = ["float32", "float64"]
ALL_CASES = [pytest.param(e, o, id=e.option_id(i)) for e, i, o in cases()]
TORCH_CASES = [pytest.param(e, o, id=e.option_id(i)) for e, i, o in cases()
               if e.torch_accepts(o)]
ENTRIES = [pytest.param(e, id=e.name) for e in DB]
#: small shapes for the API tests (checkpoints, copies, validation)
SMALL = [(6,), (2, 3), (1,)]


def _torch():
    return pytest.importorskip("torch")


# --- the database itself ------------------------------------------------------------------


def test_every_optimizer_class_has_an_entry():
    _torch()
    import fastopt.torch as fo

    names = {e.name for e in DB}
    # the 8-bit-state classes are their base classes with another default state_dtype:
    # test_state_8bit.py drives them
    eight_bit = {n for n, _, _ in fastopt.ops.eight_bit_classes()}
    assert names == set(fastopt.optim.__all__) - {"Optimizer", "from_rule"} - eight_bit
    assert names == {n for n in fo.__all__ if isinstance(getattr(fo, n), type)
                     and issubclass(getattr(fo, n), fo.FusedOptimizer)} - {"FusedOptimizer"} \
        - eight_bit
    assert {op for op, _ in CASES} == set(fastopt.ops.REGISTRY)


@pytest.mark.parametrize("entry", ENTRIES)
def test_option_sets_set_every_option(entry):
    """Every hyperparameter moved away from its default by some option set, L1 in both modes;
    every option set valid, and torch.optim's class where the spec names one."""
    assert uncovered(entry) == [], f"add option sets to optim_db.OPTIONS[{entry.name!r}]"
    for options in entry.options:
        entry.spec.validate(entry.group(options))
    if entry.torch_name is not None and entry.torch_class is None:
        _torch()  # torch is missing: the torch tests skip
    assert entry.torch_name is None or entry.torch_class is not None


@pytest.mark.parametrize("entry", ENTRIES)
def test_generated_options_would_cover_the_class_too(entry):
    """The option sets a new spec gets before anyone writes its list (generated_options) set
    every option of every class there is."""
    generated = Entry(entry.name, entry.spec, entry.alias,
                      generated_options(entry.spec, entry.alias), generated=True)
    assert uncovered(generated) == []


# --- trajectories against the reference ---------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("entry,options", ALL_CASES)
def test_matches_reference(backend, entry, options, dtype):
    compare(optim_run(entry.optim_class, options, backend, dtype, MIXED, STEPS),
            reference_trajectory(entry.optim_class, options, dtype, MIXED, STEPS),
            dtype, f"{entry.name}{options} {backend}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", ["1", "7", "4097", "65537"])
@pytest.mark.parametrize("entry", ENTRIES)
def test_sizes_match_reference(backend, entry, size, dtype):
    shapes, options = SHAPES[size], entry.full
    compare(optim_run(entry.optim_class, options, backend, dtype, shapes, STEPS, seed=7),
            reference_trajectory(entry.optim_class, options, dtype, shapes, STEPS, seed=7),
            dtype, f"{entry.name}{options} {backend} size {size}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", [*backend_params(), "reference"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_functional_matches_reference(case, backend, dtype):
    """fastopt.functional, driven as a caller does (step count, SGD's first step, NAdam's
    mu_product carried from the returned value), against the reference functions stepped
    with torch.optim's bookkeeping; the reference backend checks the spec's host scalars."""
    for r in run(*case, dtype, backend=backend, sizes=(1, 7, 4097), steps=10):
        r.check(dtype, f"{case} {backend}")


def _without_step(s: Snapshot) -> Snapshot:
    return Snapshot(s.params, {k: {key: v for key, v in st.items() if key != "step"}
                               for k, st in s.state.items()})


def cuda_backend_params() -> list:
    """pytest params of the CUDA backends, an unavailable one marked skip with its reason."""
    return [pytest.param(name, marks=() if ok else pytest.mark.skip(
        reason=f"backend {name!r} unavailable: {why}"))
        for name, devices, ok, why in fastopt.backends.status() if "cuda" in devices]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", cuda_backend_params())
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_cuda_functional_matches_reference(case, backend, dtype):
    """fastopt.functional on CUDA tensors (sizes 1, 7, 4097, 65537 in one list)."""
    torch = _torch()
    for r in run(*case, dtype, backend=backend, steps=STEPS,
                 to_device=lambda a: torch.from_numpy(a).cuda(), to_host=lambda t: t.cpu().numpy()):
        r.check(dtype, f"{case} {backend}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("entry,options", ALL_CASES)
@pytest.mark.parametrize("backend", cuda_backend_params())
def test_cuda_fastopt_torch_matches_reference(backend, entry, options, dtype, monkeypatch):
    """fastopt.torch on CUDA tensors, every state entry against the reference."""
    _torch()
    monkeypatch.setenv("FASTOPT_BACKEND", backend)
    expected = reference_trajectory(entry.optim_class, options, dtype, MIXED, STEPS)
    if not entry.spec.has_step:
        expected = _without_step(expected)
    compare(torch_run(entry, options, dtype, MIXED, STEPS, device="cuda"), expected, dtype,
            f"fastopt.torch {backend} (CUDA) {entry.name}{options}", same_keys=False)


# --- torch.optim on the same numbers -------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("entry,options", TORCH_CASES)
def test_reference_matches_torch(entry, options, dtype):
    _torch()
    compare(reference_trajectory(entry.optim_class, options, dtype, MIXED, STEPS),
            torch_trajectory(entry, options, dtype, MIXED, STEPS),
            dtype, f"reference {entry.name}{options} vs torch.optim", same_keys=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("entry,options", TORCH_CASES)
def test_optim_matches_torch(backend, entry, options, dtype):
    _torch()
    compare(optim_run(entry.optim_class, options, backend, dtype, MIXED, STEPS),
            torch_trajectory(entry, options, dtype, MIXED, STEPS),
            dtype, f"fastopt.optim {backend} {entry.name}{options} vs torch.optim",
            same_keys=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("entry,options", ALL_CASES)
def test_fastopt_torch_matches_torch(backend, entry, options, dtype, monkeypatch):
    """fastopt.torch against torch.optim: params and every state entry, torch's keys and no
    other ('step' and NAdam's 'mu_product' in torch's dtype); against the reference where
    torch.optim has no such class or option."""
    _torch()
    monkeypatch.setenv("FASTOPT_BACKEND", backend)
    ours = torch_run(entry, options, dtype, MIXED, STEPS)
    what = f"fastopt.torch {backend} {entry.name}{options}"
    if entry.torch_accepts(options):
        compare(ours, torch_trajectory(entry, options, dtype, MIXED, STEPS), dtype,
                f"{what} vs torch.optim")
    else:
        expected = reference_trajectory(entry.optim_class, options, dtype, MIXED, STEPS)
        if not entry.spec.has_step:
            expected = _without_step(expected)
        compare(ours, expected, dtype, f"{what} vs the reference")


# --- checkpoints ---------------------------------------------------------------------------


def _other(entry, options):
    """Another option set of the class (a checkpoint must bring its own hyperparameters)."""
    i = next(k for k, o in enumerate(entry.options) if o is options)
    return entry.options[(i + 1) % len(entry.options)]


#: a known bug, see tests/test_optim.py::test_load_state_dict_drops_state_the_checkpoint_lacks

def _steps(n, seed, dtype=np.float32):
    return list(grad_stream(SMALL, dtype, n, seed))


def _assert_bitwise(a: Snapshot, b: Snapshot, what: str) -> None:
    for k, (x, y) in enumerate(zip(a.params, b.params, strict=True)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{what}: param {k}")
    assert a.state.keys() == b.state.keys()
    for k in a.state:
        assert a.state[k].keys() == b.state[k].keys(), what
        for key, v in a.state[k].items():
            w = b.state[k][key]
            if v is None or w is None:
                assert v is w, (what, k, key)
            else:
                np.testing.assert_array_equal(np.asarray(v), np.asarray(w),
                                              err_msg=f"{what}: {key} {k}")


@pytest.mark.parametrize("target", ["fresh", "stepped"])
@pytest.mark.parametrize("entry,options", ALL_CASES)
def test_optim_resumes_bitwise_from_its_state_dict(backend, entry, options, target, request):
    """A checkpoint (pickled) loaded into an optimizer built with another option set, fresh or
    already stepped (state allocated, tables cached), continues exactly as the uninterrupted
    run, and takes the checkpoint's hyperparameters and state (no other)."""
    cls, grads = entry.optim_class, _steps(8, 1)
    params = initial_params(SMALL, np.float32)
    opt = cls(params, backend=backend, **options)
    for g in grads[:4]:
        opt.step(g)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    at_save = [p.copy() for p in params]
    for g in grads[4:]:
        opt.step(g)

    resumed = initial_params(SMALL, np.float32, seed=5)
    other = cls(resumed, backend=backend, **_other(entry, options))
    if target == "stepped":
        for g in _steps(3, 9):
            other.step(g)
    for p, q in zip(resumed, at_save, strict=True):
        p[...] = q  # the model's weights restored in place, as load_state_dict does
    other.load_state_dict(saved)
    for mine, theirs in zip(other.param_groups, saved["param_groups"], strict=True):
        assert {k: v for k, v in mine.items() if k != "params"} == \
            {k: v for k, v in theirs.items() if k != "params"}
    for g in grads[4:]:
        other.step(g)
    _assert_bitwise(snapshot(other), snapshot(opt), f"{entry.name}{options} resumed")


def _save_load(sd):
    torch = _torch()
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _tensors(seed=0):
    torch = _torch()
    return [torch.tensor(p, requires_grad=True) for p in initial_params(SMALL, np.float32, seed)]


def _step_torch(opt, params, grads):
    torch = _torch()
    for g in grads:
        for p, x in zip(params, g, strict=True):
            p.grad = torch.tensor(x)
        opt.step()


@pytest.mark.parametrize("target", ["fresh", "stepped"])
@pytest.mark.parametrize("entry,options", ALL_CASES)
def test_fastopt_torch_resumes_bitwise_from_its_state_dict(backend, entry, options, target,
                                                           monkeypatch):
    torch = _torch()
    monkeypatch.setenv("FASTOPT_BACKEND", backend)
    cls, grads = entry.fo_torch_class, _steps(8, 1)
    params = _tensors()
    opt = cls(params, **options)
    _step_torch(opt, params, grads[:4])
    saved = _save_load(opt.state_dict())
    resumed = _tensors(5)
    other = cls(resumed, **_other(entry, options))
    if target == "stepped":
        _step_torch(other, resumed, _steps(3, 9))
    with torch.no_grad():
        for p, q in zip(resumed, params, strict=True):
            p.copy_(q)  # the same data pointers: cached tables must follow the new state
    other.load_state_dict(saved)
    assert other.state_dict()["param_groups"] == saved["param_groups"]
    _step_torch(opt, params, grads[4:])
    _step_torch(other, resumed, grads[4:])
    _assert_bitwise(torch_snapshot(other, resumed, entry.spec),
                    torch_snapshot(opt, params, entry.spec), f"{entry.name}{options}")


#: option sets torch.optim runs as they are (no L1): checkpoints cross between the two
PLAIN_TORCH_CASES = [c for c in TORCH_CASES if not c.values[1].get("l1")]


@pytest.mark.parametrize("direction", ["torch->fastopt", "fastopt->torch"])
@pytest.mark.parametrize("entry,options", PLAIN_TORCH_CASES)
def test_torch_checkpoints_load_both_ways(backend, entry, options, direction, monkeypatch):
    """A torch.optim checkpoint continues in fastopt.torch, and that one's checkpoint back in
    torch.optim (and the other way round), as the uninterrupted source run."""
    _torch()
    monkeypatch.setenv("FASTOPT_BACKEND", backend)
    src_cls, dst_cls = entry.torch_class, entry.fo_torch_class
    if direction == "fastopt->torch":
        src_cls, dst_cls = dst_cls, src_cls
    grads = _steps(11, 2)
    first = _tensors()
    src = src_cls(first, **options)
    _step_torch(src, first, grads[:4])
    second = [p.detach().clone().requires_grad_() for p in first]
    dst = dst_cls(second, **options)
    dst.load_state_dict(_save_load(src.state_dict()))
    _step_torch(src, first, grads[4:8])
    _step_torch(dst, second, grads[4:8])
    what = f"{entry.name}{options} {direction}"
    compare(torch_snapshot(dst, second, entry.spec), torch_snapshot(src, first, entry.spec),
            "float32", what)
    third = [p.detach().clone().requires_grad_() for p in first]
    again = src_cls(third, **options)
    again.load_state_dict(_save_load(dst.state_dict()))
    _step_torch(src, first, grads[8:])
    _step_torch(again, third, grads[8:])
    compare(torch_snapshot(again, third, entry.spec), torch_snapshot(src, first, entry.spec),
            "float32", f"{what} and back")


# --- copies --------------------------------------------------------------------------------


def _copy(obj, how):
    return copy.deepcopy(obj) if how == "deepcopy" else pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("entry,options", ALL_CASES)
def test_optim_copy_continues_as_the_original(backend, entry, options, how):
    """A copy steps its own arrays (the original's stay as they were) and continues bitwise as
    the original does."""
    grads = _steps(6, 3)
    params = initial_params(SMALL, np.float32)
    opt = entry.optim_class(params, backend=backend, **options)
    for g in grads[:3]:
        opt.step(g)
    twin = _copy(opt, how)
    before = snapshot(opt)
    for g in grads[3:]:
        twin.step(g)
    _assert_bitwise(snapshot(opt), before, "the original after the copy's steps")
    for g in grads[3:]:
        opt.step(g)
    _assert_bitwise(snapshot(twin), snapshot(opt), f"{entry.name}{options} {how}")


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("entry,options", ALL_CASES)
def test_fastopt_torch_copy_continues_as_the_original(backend, entry, options, how,
                                                      monkeypatch):
    monkeypatch.setenv("FASTOPT_BACKEND", backend)
    grads = _steps(6, 3)
    params = _tensors()
    opt = entry.fo_torch_class(params, **options)
    _step_torch(opt, params, grads[:3])
    twin = _copy(opt, how)
    twin_params = twin.param_groups[0]["params"]
    before = torch_snapshot(opt, params, entry.spec)
    _step_torch(twin, twin_params, grads[3:])
    _assert_bitwise(torch_snapshot(opt, params, entry.spec), before,
                    "the original after the copy's steps")
    _step_torch(opt, params, grads[3:])
    _assert_bitwise(torch_snapshot(twin, twin_params, entry.spec),
                    torch_snapshot(opt, params, entry.spec), f"{entry.name}{options} {how}")


# --- validation ----------------------------------------------------------------------------


def _outcome(make):
    """None if make() succeeds, else the exception it raised."""
    try:
        make()
    except Exception as exc:  # the test compares whatever each API raises
        return exc
    return None


def _functional_call(entry, bad):
    op, hyper = entry.functional(bad)
    spec = entry.spec
    p = [np.ones(3)]
    state = [[np.zeros(3)] for _ in spec.slots]
    kw = {"step": 1} if spec.uses_step else {}
    return lambda: getattr(functional, op + "_")(p, [np.ones(3)], *state, backend="reference",
                                                 **kw, **hyper)


VALIDATION = [pytest.param(e, bad, id=f"{e.name}-{k}={v}")
              for e in DB for bad in invalid_candidates(e) for k, v in bad.items()]


@pytest.mark.parametrize("entry,bad", VALIDATION)
def test_invalid_hyperparameters_refused_as_torch(entry, bad):
    """fastopt.optim, fastopt.torch and fastopt.functional agree on every out-of-domain value:
    the same ValueError, worded as torch.optim's where torch refuses it too; non-finite values
    (some of which torch lets through) and values out of the domain of an option torch has
    not are always refused."""
    torch = _torch()
    ours = {
        "fastopt.optim": _outcome(lambda: entry.optim_class([np.ones(3)], **bad)),
        "fastopt.torch": _outcome(lambda: entry.fo_torch_class(
            [torch.ones(3, requires_grad=True)], **bad)),
        "fastopt.functional": _outcome(_functional_call(entry, bad)),
    }
    expect = expected_outcome(entry, bad)
    theirs = None
    if expect == "torch":
        theirs = _outcome(lambda: entry.torch_class([torch.ones(3, requires_grad=True)], **bad))
        if theirs is not None and not isinstance(theirs, ValueError):
            # torch fails on its own terms (an IndexError for one beta): fastopt says why
            ours.pop("fastopt.torch")
            expect = "refuse"
    for api, got in ours.items():
        assert got is None or isinstance(got, ValueError), (api, repr(got))
    messages = {api: None if got is None else str(got) for api, got in ours.items()}
    assert len(set(messages.values())) == 1, messages
    message = next(iter(messages.values()))
    if expect == "torch":
        assert message == (None if theirs is None else str(theirs)), messages
    elif expect == "refuse":
        assert message is not None and message.startswith("Invalid"), messages


# --- determinism, non-finite gradients, L1 --------------------------------------------------

#: several chunks per tensor, and more chunks than threads
THREAD_SHAPES = [(1,), (70001,), (300, 257), (5,), (40000,)]


#: the driver splits the work the same way whatever the options: each class's fullest
#: option set and its L1 ones
THREAD_CASES = [c for c in ALL_CASES if c.values[1] is c.values[0].full or c.values[1].get("l1")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("entry,options", THREAD_CASES)
@pytest.mark.parametrize("backend", backend_params())
def test_bitwise_for_any_thread_count(backend, entry, options, dtype):
    def steps():
        params = initial_params(THREAD_SHAPES, dtype)
        opt = entry.optim_class(params, backend=backend, **options)
        for g in grad_stream(THREAD_SHAPES, dtype, 3):
            opt.step(g)
        return params

    first, *others = each_thread_count(backend, steps)
    for other in others:
        for a, b in zip(first, other, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("entry,options", ALL_CASES)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_grads_propagate_as_the_reference(backend, entry, options, dtype):
    """NaN, inf and -inf gradient elements: the same elements become NaN or inf as in the
    reference, and the others agree."""
    runs = {}
    for b in (backend, "reference"):
        rng = np.random.default_rng(0)
        params = [np.linspace(-1, 1, 64).astype(dtype), np.ones(9, dtype)]
        opt = entry.optim_class(params, backend=b, **options)
        for step in range(4):
            g = [rng.standard_normal(64).astype(dtype), rng.standard_normal(9).astype(dtype)]
            if step in (1, 2):
                g[0][3], g[0][10], g[0][20] = np.nan, np.inf, -np.inf
            opt.step(g)
        runs[b] = snapshot(opt)
    ours, ref = runs[backend], runs["reference"]
    for a, b in zip(ours.params, ref.params, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    compare(ours, ref, dtype, f"{entry.name}{options} {backend} non-finite grads")


PROXIMAL = [c for c in ALL_CASES if c.values[1].get("l1_mode") == "proximal"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("entry,options", PROXIMAL)
def test_proximal_l1_makes_exact_zeros_as_the_reference(backend, entry, options, dtype):
    """The soft threshold zeroes params exactly: as many per tensor as the reference (float32:
    within a few elements that end a step within rounding of the threshold), a good part of
    them; the same l1 coupled makes next to none."""
    ours = optim_run(entry.optim_class, options, backend, dtype, MIXED, STEPS)
    ref = reference_trajectory(entry.optim_class, options, dtype, MIXED, STEPS)
    zeros = [int(np.count_nonzero(p == 0)) for p in ours.params]
    want = [int(np.count_nonzero(p == 0)) for p in ref.params]
    slack = [0 if dtype == "float64" else 2 + p.size // 10000 for p in ref.params]
    assert all(abs(z - w) <= s for z, w, s in zip(zeros, want, slack, strict=True)), \
        (zeros, want)
    total = sum(p.size for p in ref.params)
    assert sum(want) > total // 20, f"{entry.name}{options}: only {sum(want)} of {total} zeros"
    coupled = {**options, "l1_mode": "coupled"}
    ours = optim_run(entry.optim_class, coupled, backend, dtype, MIXED, STEPS)
    assert sum(int(np.count_nonzero(p == 0)) for p in ours.params) < total // 1000
