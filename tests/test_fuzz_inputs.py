"""Property-based fuzzing of the bad-input space. One argument of an otherwise valid call is
broken (wrong or unsupported dtype, wrong shape, read-only, non-contiguous, broadcast, None, not
an array, a torch tensor among NumPy arrays, aliasing another argument or overlapping it, a list
too short, too long or empty) and the call must either

  - raise TypeError/ValueError whose message names the argument and its list index (both
    arguments for aliasing), leaving every array unchanged (no partial update), or
  - where the broken-looking input is in fact fine (a read-only gradient, a one-element strided
    view, adjacent views of one buffer, a torch tensor on the same device, a strided layout that
    fastopt.optim steps through exact copies), give the reference's result.

Never a crash. Covers fastopt.functional, fastopt.optim (construction and step; a refused step
leaves no trace), fastopt.clip and fastopt.losses. Profiles and strategies: tests/_fuzz.py."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _fuzz import assert_unchanged, dtype_lists, dtypes, fuzz, normal, numel, seeds, shapes
from hypothesis import given
from hypothesis import strategies as st
from tolerances import assert_close

import fastopt._table
import fastopt.optim
from fastopt import clip, functional, losses, reference

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

#: Hyperparameters under which every state list of each optimizer is used, in argument order
#: after params and grads (as fastopt.functional.SLOTS).
FULL = {
    "sgd": dict(lr=0.1, momentum=0.9),
    "adam": dict(lr=0.01, amsgrad=True, step=1),
    "adagrad": dict(lr=0.1, step=1),
    "rmsprop": dict(lr=0.01, momentum=0.5, centered=True),
    "lion": dict(lr=0.01),
}
OPS = tuple(FULL)

#: Ways to break one entry of a list, or one array argument.
ENTRY_BREAKS = ("dtype", "other float", "shape", "read-only", "non-contiguous", "broadcast",
                "None", "not an array", "torch", "torch other dtype", "alias", "overlap",
                "adjacent")
LIST_BREAKS = ("shorter", "longer", "empty", "tuple")

NOT_ARRAYS = ([1.0, 2.0], "abc", 3.0, object(), {"data": 1})
# (float16 and bfloat16 are storage dtypes of the CPU kernels: one among float32 arrays is an
# "other float")
BAD_DTYPES = ("int32", "int64", "bool", "complex64", "uint8", ">f4", ">f8")

# What a broken entry must do: "error" (TypeError/ValueError naming it), "ok" (accepted, the
# reference's result), "alias" (ValueError naming it and the array it shares memory with), or
# "either" of error and ok (a layout that fastopt.optim may step through exact copies, or that
# clipping, element-wise, may clip in place).
ERROR, OK, ALIAS, EITHER = "error", "ok", "alias", "either"


def _noncontiguous(a: np.ndarray, how: str) -> np.ndarray:
    """A view with a's shape and values but not C-contiguous strides (unless a has at most
    one element, where every stride is contiguous)."""
    if how == "strided" and a.ndim:
        view = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)[..., ::2]
    elif how == "reversed" and a.ndim:
        view = np.zeros_like(a)[..., ::-1]
    elif a.ndim:  # Fortran order
        view = np.asfortranarray(np.zeros_like(a))
    else:
        view = a.copy()
    view[...] = a
    return view


def break_entry(draw: Any, kind: str, a: np.ndarray, written: bool,
                others: list[tuple[str, int, np.ndarray]]) -> tuple[Any, str, Any]:
    """(replacement, outcome, partner) for breaking array `a` in the way `kind`; `others` are
    the other arrays of the call (name, index, array) that an alias may point at."""
    if kind == "dtype":
        return a.astype(draw(st.sampled_from(BAD_DTYPES))), ERROR, None
    if kind == "other float":
        other = draw(st.sampled_from([d for d in ("float32", "float64", "float16")
                                      if d != a.dtype.name]))
        return a.astype(other), ERROR, None
    if kind == "shape":
        options = [a.reshape(a.shape + (1,)), np.zeros(numel(a.shape) + 1, a.dtype)]
        if a.ndim != 1:
            options.append(a.reshape(-1))
        return draw(st.sampled_from(options)), ERROR, None
    if kind == "read-only":
        b = a.copy()
        b.flags.writeable = False
        return b, ERROR if written else OK, None
    if kind == "non-contiguous":
        b = _noncontiguous(a, draw(st.sampled_from(("strided", "reversed", "fortran"))))
        return b, OK if b.flags.c_contiguous else ERROR, None
    if kind == "broadcast":  # a's first value everywhere: read-only, zero strides
        first = a.reshape(-1)[0] if a.size else a.dtype.type(0)
        b = np.broadcast_to(np.asarray(first, a.dtype), a.shape)
        return b, OK if b.flags.c_contiguous and not written else ERROR, None
    if kind == "None":
        return None, ERROR, None
    if kind == "not an array":
        return draw(st.sampled_from(NOT_ARRAYS)), ERROR, None
    if kind == "torch":  # the same memory layout on the same device: nothing to refuse
        return torch.from_numpy(a.copy()), OK, None
    if kind == "torch other dtype":
        return torch.from_numpy(a.copy()).to(torch.bfloat16), ERROR, None
    same = [(n, i, o) for n, i, o in others if o.shape == a.shape and o.dtype == a.dtype]
    if kind == "alias" and same and a.size:
        partner = draw(st.sampled_from(same))
        return partner[2], ALIAS, partner
    if kind in ("overlap", "adjacent") and same:
        # a and its partner rebuilt as two views of one buffer: overlapping, or touching
        partner = draw(st.sampled_from(same))
        n = a.size
        shift = draw(st.integers(0, n - 1)) if kind == "overlap" and n else n
        buf = np.zeros(n + shift, a.dtype)
        mine, theirs = buf[:n].reshape(a.shape), buf[shift:shift + n].reshape(a.shape)
        theirs[...] = partner[2]
        if kind == "adjacent":
            mine[...] = a
        return (mine, theirs), ALIAS if kind == "overlap" and n else OK, partner
    return a, OK, None  # nothing of that kind applies to this array


def _host(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return a.float().numpy() if a.dtype == torch.bfloat16 else a.numpy()
    return a


def _message_names(exc: BaseException, *names: str) -> bool:
    text = str(exc)
    return all(re.search(r"(?<![\w])" + re.escape(n) + r"(?![\w])", text) for n in names)


def _snapshot(objs: list[Any]) -> list[tuple[Any, Any]]:
    return [(o, o.copy() if isinstance(o, np.ndarray) else o.detach().clone()) for o in objs
            if isinstance(o, (np.ndarray, torch.Tensor))]


def _assert_unchanged(snap: list[tuple[Any, Any]], what: str) -> None:
    arrays = [(o, s) for o, s in snap if isinstance(o, np.ndarray)]
    assert_unchanged([s for _, s in arrays], [o for o, _ in arrays], what)
    for o, s in snap:
        if isinstance(o, torch.Tensor):
            assert torch.equal(o, s), f"{what}: a tensor changed"


def expect(call: Callable[[], Any], outcome: str, names: tuple[str, ...], arrays: list[Any],
           what: str) -> Any:
    """Runs `call` under the expected outcome; returns (True, its result) when accepted,
    (False, None) when refused."""
    snap = _snapshot(arrays)
    if outcome == OK:
        return True, call()
    try:
        result = call()
    except (TypeError, ValueError) as e:
        assert _message_names(e, *names), f"{what}: {e!r} does not name {names}"
        if outcome == ALIAS:
            assert "share memory" in str(e), f"{what}: {e!r}"
        _assert_unchanged(snap, what)
        return False, None
    assert outcome == EITHER, f"{what}: accepted, expected a TypeError/ValueError"
    return True, result


# --- fastopt.functional -----------------------------------------------------------------------


@st.composite
def functional_cases(draw: Any) -> dict[str, Any]:
    op = draw(st.sampled_from(OPS))
    n = draw(st.integers(1, 4))
    return dict(op=op, shapes=draw(st.lists(shapes(big_one_in=0), min_size=n, max_size=n)),
                dtypes=draw(dtype_lists(n)), slot=draw(st.sampled_from(functional.SLOTS[op])),
                index=draw(st.integers(0, n - 1)),
                kind=draw(st.sampled_from(ENTRY_BREAKS + LIST_BREAKS)), seed=draw(seeds))


@fuzz(800)
@given(case=functional_cases(), data=st.data())
def test_functional_bad_input(case, data):
    op, slot, i, kind = case["op"], case["slot"], case["index"], case["kind"]
    rng = np.random.default_rng(case["seed"])
    slots = functional.SLOTS[op]
    specs = list(zip(case["shapes"], case["dtypes"], strict=True))
    # fresh (zero) state: a random one can make centered RMSprop ill-conditioned
    lists = {s: [normal(rng, shp, dt) if s in ("param", "grad") else np.zeros(shp, dt)
                 for shp, dt in specs] for s in slots}
    expected = {s: [a.copy() for a in lst] for s, lst in lists.items()}
    hyper = FULL[op]
    for k in range(len(case["shapes"])):
        getattr(reference, op)(*[expected[s][k] for s in slots], **hyper)

    written = slot not in functional.READ_ONLY
    args = {s: list(lst) for s, lst in lists.items()}
    names: tuple[str, ...] = (f"{slot}[{i}]",)
    if kind in LIST_BREAKS:
        lst = args[slot]
        outcome, names = (OK, ()) if kind == "tuple" else (ERROR, (slot,))
        args[slot] = {"shorter": lst[:-1], "longer": lst + [lst[0].copy()], "empty": [],
                      "tuple": tuple(lst)}[kind]
    else:
        others = [(s, k, a) for s, lst in lists.items() for k, a in enumerate(lst)
                  if (s, k) != (slot, i)]
        new, outcome, partner = break_entry(data.draw, kind, lists[slot][i], written, others)
        if isinstance(new, tuple):  # two views of one buffer
            new, theirs = new
            args[partner[0]][partner[1]] = theirs
        elif kind in ("other float", "torch other dtype") and slot not in ("param", "grad"):
            # a state row may be stored in another dtype than its param (STATE_DTYPES, where
            # test_state_dtype.py checks the values): accepted there, refused elsewhere
            dtype = str(new.dtype).removeprefix("torch.")
            if dtype in fastopt._table.STATE_DTYPES[lists["param"][i].dtype.name]:
                outcome = EITHER
        args[slot][i] = new
        if outcome == ALIAS:
            names = (f"{slot}[{i}]", f"{partner[0]}[{partner[1]}]")
    what = f"{op}: {slot}[{i}] {kind} ({case})"
    passed = [a for s in slots for a in args[s]]
    expect(lambda: getattr(functional, op + "_")(*[args[s] for s in slots], **hyper),
           outcome, names, passed + [a for lst in lists.values() for a in lst], what)
    if outcome == OK:
        for s in slots:
            if s in functional.READ_ONLY:
                continue
            for k, (got, want) in enumerate(zip(args[s], expected[s], strict=True)):
                assert_close(np.asarray(got), want, want.dtype, f"{what}: {s}[{k}]")


# --- fastopt.optim: construction and step -----------------------------------------------------

CLASSES = {"sgd": ("SGD", dict(lr=0.1, momentum=0.9)), "adam": ("Adam", dict(amsgrad=True)),
           "adagrad": ("Adagrad", {}), "rmsprop": ("RMSprop", dict(momentum=0.5, centered=True)),
           "lion": ("Lion", {})}


@fuzz(400)
@given(case=functional_cases(), data=st.data(), groups=st.integers(1, 2),
       warm=st.booleans())
def test_optim_bad_grads_leave_no_trace(case, data, groups, warm):
    """A refused step changes no param and no state, and the next valid step is exactly that
    of an optimizer which never saw the bad one."""
    op, i, kind = case["op"], case["index"], case["kind"]
    rng = np.random.default_rng(case["seed"])
    name, opts = CLASSES[op]
    shp, dts = case["shapes"], case["dtypes"]
    n = len(shp)
    split = (n + 1) // 2 if groups == 2 else n
    params = [normal(rng, s, dt) for s, dt in zip(shp, dts, strict=True)]
    twin_params = [p.copy() for p in params]

    def make(ps):
        gs = [{"params": ps[:split]}] + ([{"params": ps[split:]}] if split < n else [])
        return getattr(fastopt.optim, name)(gs, **opts)

    opt, twin = make(params), make(twin_params)
    grads = [normal(rng, s, dt) for s, dt in zip(shp, dts, strict=True)]
    if warm:
        opt.step(grads)
        twin.step(grads)
    state = [a for st_ in opt.state for entry in st_ for a in entry.values()]
    bad = list(grads)
    local = i if i < split else i - split
    indices = {f"grad[{i}]", f"grad[{local}]"}  # within the list, or within its param group
    if kind in LIST_BREAKS:
        outcome = OK if kind == "tuple" else ERROR
        bad = {"shorter": bad[:-1], "longer": bad + [bad[0]], "empty": [],
               "tuple": tuple(bad)}[kind]
    else:
        # partners in the grad's own param group (across groups: see
        # test_aliasing_across_param_groups)
        group = range(split) if i < split else range(split, n)
        others = [("param", k, params[k]) for k in group] + \
                 [("grad", k, grads[k]) for k in group if k != i]
        new, outcome, partner = break_entry(data.draw, kind, grads[i], False, others)
        if isinstance(new, tuple):
            new, theirs = new
            if partner[0] == "grad":
                bad[partner[1]] = theirs
            else:  # the param can't be moved: make the grad overlap it directly
                new = partner[2] if kind == "overlap" else grads[i]
        if kind == "None":
            outcome = OK  # a missing gradient skips its param, as torch
        if kind in ("non-contiguous", "broadcast") and outcome == ERROR:
            outcome = EITHER  # other layouts may be stepped through exact copies
        bad[i] = new
    what = f"{name} grads {kind} at {i} ({case}, {groups} groups)"
    snap = _snapshot(params + state)
    try:
        opt.step(bad)
    except (TypeError, ValueError) as e:
        assert outcome != OK, f"{what}: refused ({e!r}), expected to be accepted"
        named = _message_names(e, "grads") if kind in LIST_BREAKS else \
            any(_message_names(e, x) for x in indices)
        assert named, f"{what}: {e!r} does not name the grad"
        _assert_unchanged(snap, what)
    else:
        assert outcome != ERROR, f"{what}: accepted, expected a TypeError/ValueError"
        # the twin steps the same values as dense arrays
        twin.step([None if b is None else np.array(_host(b), dtype=g.dtype)
                   for b, g in zip(bad, grads, strict=True)])
    next_grads = [normal(rng, s, dt) for s, dt in zip(shp, dts, strict=True)]
    opt.step(next_grads)
    twin.step(next_grads)
    for k, (p, q) in enumerate(zip(params, twin_params, strict=True)):
        np.testing.assert_array_equal(p, q, err_msg=f"{what}: param[{k}] after the next step")


@fuzz(300)
@given(case=functional_cases(), data=st.data())
def test_optim_bad_params_are_refused(case, data):
    op, i, kind = case["op"], case["index"], case["kind"]
    if kind in LIST_BREAKS + ("adjacent", "torch", "torch other dtype"):
        kind = "read-only"  # lists of params are any iterable; one framework per optimizer
    rng = np.random.default_rng(case["seed"])
    name, opts = CLASSES[op]
    params = [normal(rng, s, dt) for s, dt in zip(case["shapes"], case["dtypes"], strict=True)]
    others = [("param", k, p) for k, p in enumerate(params) if k != i]
    new, outcome, partner = break_entry(data.draw, kind, params[i], True, others)
    if kind in ("other float", "shape"):
        outcome = OK  # any shape, float32 and float64 mixed
    if isinstance(new, dict):
        new = "abc"  # a dict in a params list is a param group
    if kind == "non-contiguous" and outcome == ERROR:
        outcome = EITHER  # writable strided params may be stepped through exact copies
    if isinstance(new, tuple):
        new, theirs = new
        params[partner[1]] = theirs
    params[i] = new
    names = (f"param[{i}]",) if outcome != ALIAS else (f"param[{i}]", f"param[{partner[1]}]")
    what = f"{name}: param[{i}] {kind}"
    accepted, opt = expect(lambda: getattr(fastopt.optim, name)(params, **opts), outcome,
                           names, params, what)
    if accepted:  # a step lands in the user's arrays, as in dense copies of them
        dense = [np.array(p) for p in params]
        twin = getattr(fastopt.optim, name)(dense, **opts)
        grads = [normal(rng, p.shape, p.dtype) for p in dense]
        opt.step(grads)
        twin.step(grads)
        for k, (p, q) in enumerate(zip(params, dense, strict=True)):
            np.testing.assert_array_equal(np.asarray(p), q, err_msg=f"{what}: param[{k}]")


# --- fastopt.clip -----------------------------------------------------------------------------


@fuzz(300)
@given(shape_list=st.lists(shapes(big_one_in=0), min_size=1, max_size=4), data=st.data(),
       kind=st.sampled_from(ENTRY_BREAKS), seed=seeds, by_norm=st.booleans())
def test_clip_bad_input(shape_list, data, kind, seed, by_norm):
    if kind == "shape":
        kind = "dtype"  # any shape is a valid gradient
    rng = np.random.default_rng(seed)
    n = len(shape_list)
    dts = data.draw(dtype_lists(n))
    i = data.draw(st.integers(0, n - 1))
    grads = [normal(rng, s, dt) for s, dt in zip(shape_list, dts, strict=True)]
    expected = [g.copy() for g in grads]
    if by_norm:
        reference.clip_grad_norm(expected, 0.5, 2.0)
    else:
        reference.clip_grad_value(expected, 0.5)
    others = [("grad", k, g) for k, g in enumerate(grads) if k != i]
    new, outcome, partner = break_entry(data.draw, kind, grads[i], True, others)
    if kind in ("other float", "torch other dtype"):
        outcome = OK  # gradients of any float storage dtype may be mixed (a table per dtype)
    if kind == "non-contiguous" and outcome == ERROR:
        outcome = EITHER  # clipping is element-wise: any dense layout may be clipped in place
    passed = list(grads)
    if isinstance(new, tuple):
        new, passed[partner[1]] = new
    passed[i] = new
    names = (f"grad[{i}]",) if outcome != ALIAS else (f"grad[{i}]", f"grad[{partner[1]}]")
    call = (lambda: clip.clip_grad_norm_(passed, 0.5, 2.0)) if by_norm else \
        (lambda: clip.clip_grad_value_(passed, 0.5))
    accepted, _ = expect(call, outcome, names, passed + grads, f"clip: grad[{i}] {kind}")
    if accepted:  # a gradient rounded to float32 moves the joint norm: float32's tolerance
        for k, (got, want) in enumerate(zip(passed, expected, strict=True)):
            coarse = want.dtype
            if kind == "other float":  # the coarser of the new dtype and float32
                coarse = min(np.dtype(new.dtype), np.dtype(np.float32), key=lambda d: d.itemsize)
            elif kind == "torch other dtype":
                coarse = "bfloat16"
            assert_close(np.asarray(_host(got), want.dtype), want, coarse,
                         f"clip: grad[{i}] {kind}: grad[{k}]")


# --- fastopt.losses ---------------------------------------------------------------------------

LOSS_BREAKS = ("dtype", "other float", "shape", "non-contiguous", "None", "not an array",
               "torch other dtype")


@fuzz(300)
@given(n=st.sampled_from((1, 3, 7)), c=st.sampled_from((1, 2, 5)), dtype=dtypes,
       argument=st.sampled_from(("logits", "target", "weight", "out of range", "inplace")),
       kind=st.sampled_from(LOSS_BREAKS), data=st.data(), seed=seeds)
def test_cross_entropy_bad_input(n, c, dtype, argument, kind, data, seed):
    rng = np.random.default_rng(seed)
    args = dict(logits=normal(rng, (n, c), dtype), target=rng.integers(0, c, n),
                weight=(rng.random(c) + 0.5).astype(dtype))
    extra = {}
    if argument == "out of range":  # a class index outside [0, C) that is not ignore_index
        args["target"][data.draw(st.integers(0, n - 1))] = data.draw(
            st.sampled_from((c, c + 7, -1, -99)))
        outcome, name = ERROR, "target"
    elif argument == "inplace":  # logits that can't be overwritten
        extra["inplace"] = True
        b = _noncontiguous(args["logits"], "strided")
        if b.flags.c_contiguous or kind != "non-contiguous":
            b.flags.writeable = False
        args["logits"] = b
        outcome, name = ERROR, "logits"
    else:
        if argument == "target" and kind in ("dtype", "other float"):
            # index dtypes torch accepts and fastopt is gaining (uint8, int16): not errors
            new, outcome = args["target"].astype(np.float32), ERROR
        elif argument == "target" and kind == "None":
            new, outcome = None, ERROR
        else:
            new, outcome, _ = break_entry(data.draw, kind, args[argument], False, [])
            if argument == "target" and kind == "torch other dtype":
                outcome = ERROR
        if argument == "logits" and kind == "shape":
            new = args["logits"].reshape(-1)[:-1] if n * c > 1 else np.zeros((0,), dtype)
            outcome = ERROR
        if argument == "weight" and kind == "None":
            outcome = OK  # no class weights
        args[argument] = new
        name = argument
    snap_in = [a for a in args.values() if a is not None]
    expect(lambda: losses.cross_entropy(**args, **extra), outcome, (name,), snap_in,
           f"cross_entropy {argument} {kind}")


def _broadcasts(wshape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """fastopt's rule for weight shapes: leading 1s dropped, a trailing part of the input's."""
    w = list(wshape)
    while w and w[0] == 1:
        w.pop(0)
    return len(w) <= len(shape) and (not w or tuple(w) == shape[len(shape) - len(w):])


@fuzz(300)
@given(shape=shapes(big_one_in=0), dtype=dtypes, data=st.data(), seed=seeds,
       loss=st.sampled_from(("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "kl_div",
                             "binary_cross_entropy", "binary_cross_entropy_with_logits")),
       argument=st.sampled_from(("input", "target", "weight", "pos_weight")),
       kind=st.sampled_from(LOSS_BREAKS))
def test_elementwise_loss_bad_input(shape, dtype, data, seed, loss, argument, kind):
    rng = np.random.default_rng(seed)
    args = dict(input=np.asarray(rng.random(shape), dtype), target=np.asarray(rng.random(shape),
                                                                             dtype))
    if argument == "weight" and loss.startswith("binary"):
        args["weight"] = np.ones(shape, dtype)
    elif argument == "pos_weight" and loss.endswith("logits"):
        args["pos_weight"] = np.ones(shape, dtype)
    else:
        argument = data.draw(st.sampled_from(("input", "target")))
    new, outcome, _ = break_entry(data.draw, kind, args[argument], False, [])
    if argument in ("weight", "pos_weight") and (
            kind == "None" or (kind == "shape" and _broadcasts(new.shape, shape))):
        outcome = OK
    args[argument] = new
    expect(lambda: getattr(losses, loss)(**args), outcome, (argument,),
           [a for a in args.values() if a is not None], f"{loss} {argument} {kind}")


# --- known bugs (reproducers) -----------------------------------------------------------------


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter: the bugs below crash or write freed memory."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("backend", ["cpu", "numba", "reference"])
def test_functional_none_for_a_required_list(backend):
    result = _run_isolated(f"""
        import numpy as np
        from fastopt import functional as F
        FULL = {FULL!r}
        for op, hyper in FULL.items():
            slots = F.SLOTS[op]
            for missing in slots[1:]:
                lists = [None if s == missing else [np.ones(4, np.float32)] for s in slots]
                try:
                    getattr(F, op + "_")(*lists, backend={backend!r}, **hyper)
                except (TypeError, ValueError) as e:
                    assert missing in str(e), (op, missing, str(e))
                else:
                    raise SystemExit(f"{{op}}: None for {{missing}} was accepted")
        print("all refused")
        """)
    assert result.returncode == 0 and "all refused" in result.stdout, \
        (result.returncode, result.stdout[-500:], result.stderr[-500:])


def test_numpy_scalar_param_is_refused():
    result = _run_isolated("""
        import numpy as np
        from fastopt import functional as F
        p = np.float64(3.0)
        try:
            F.sgd_([p], [np.ones((), np.float64)], lr=0.5)
        except (TypeError, ValueError) as e:
            assert "param[0]" in str(e), str(e)
            print("refused")
        else:
            print("accepted, param", p)
        """)
    assert result.returncode == 0 and "refused" in result.stdout, \
        (result.returncode, result.stdout[-500:], result.stderr[-500:])


@pytest.mark.parametrize("call,name", [
    (lambda: functional.sgd_(5, [np.ones(3, np.float32)]), "param"),
    (lambda: functional.sgd_([np.ones(3, np.float32)], 5), "grad"),
    (lambda: clip.clip_grad_norm_(None, 1.0), "grad"),
], ids=["int params", "int grads", "None grads to clip"])
def test_list_arguments_that_are_not_lists(call, name):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert _message_names(info.value, name) or _message_names(info.value, name + "s"), \
        repr(info.value)


def test_aliasing_across_param_groups():
    a, b = np.ones(4, np.float32), np.ones(4, np.float32)
    opt = fastopt.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.5)
    with pytest.raises(ValueError, match="share memory"):
        opt.step([np.ones(4, np.float32), a])
    np.testing.assert_array_equal(a, 1.0)
    np.testing.assert_array_equal(b, 1.0)


def test_written_list_mixing_numpy_and_torch():
    params = [torch.ones(3), np.ones(3, np.float32)]
    before = [np.array(_host(p)) for p in params]
    grads = [np.ones(3, np.float32), np.ones(3, np.float32)]
    try:
        functional.sgd_(params, grads, lr=0.5)
    except (TypeError, ValueError) as e:  # refusing the mix is fine, stepping half of it not
        assert _message_names(e, "param[0]") or _message_names(e, "param[1]"), repr(e)
        for p, b in zip(params, before, strict=True):
            np.testing.assert_array_equal(_host(p), b)
    else:
        for p in params:
            np.testing.assert_array_equal(_host(p), 0.5)
