"""Cached pointer tables are used only while current, in the flows users actually have: copies
of optimizers, storage swaps, replaced or cleared state, params added to a group, autograd's
version checks, dense permuted layouts, bad step counts. Each test here failed (a write to
memory the optimizer no longer owns, a silent no-op, or no error) before the tables were
re-validated on every step."""

from __future__ import annotations

import copy
import gc
import pickle

import numpy as np
import pytest
from optim_db import BY_NAME, DB

import fastopt
from fastopt import functional as F
from fastopt import ops
from fastopt.optim import SGD, Adam, AdamW

torch = pytest.importorskip("torch")
import fastopt.torch as fo  # noqa: E402


def ones(n=4, dtype=np.float32):
    return np.ones(n, dtype)


# --- 1. copies of a fastopt.optim optimizer step their own arrays ------------------------


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_optimizer_steps_its_own_arrays(how):
    p = ones()
    opt = Adam([p], lr=0.1)
    opt.step([ones()])
    assert np.allclose(p, 0.9)
    twin = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    twin.step([ones()])
    np.testing.assert_allclose(p, 0.9)  # the original is untouched
    np.testing.assert_allclose(twin.param_groups[0]["params"][0], 0.8, rtol=1e-6)
    opt.step([ones()])
    np.testing.assert_allclose(p, 0.8, rtol=1e-6)


def test_copy_outlives_the_original_arrays():
    opt = Adam([ones(4097)], lr=0.1)
    opt.step([ones(4097)])
    twin = copy.deepcopy(opt)
    del opt
    gc.collect()
    for _ in range(3):  # the original's memory is freed: a stale table would write it
        twin.step([ones(4097)])
    assert np.isfinite(twin.param_groups[0]["params"][0]).all()


# --- 2. storage swaps under fastopt.optim over torch tensors -----------------------------


def test_optim_follows_a_torch_storage_swap():
    q = torch.ones(4)
    opt = fastopt.optim.SGD([q], lr=0.5)
    opt.step([torch.ones(4)])
    assert torch.equal(q, torch.full((4,), 0.5))
    old = q.data
    q.data = torch.zeros(4)  # what Module.to() / .float() do
    opt.step([torch.ones(4)])
    assert torch.equal(q, torch.full((4,), -0.5))
    assert torch.equal(old, torch.full((4,), 0.5))  # the old storage is no longer written


def test_optim_refuses_a_swapped_storage_of_another_size():
    q = torch.ones(8)
    opt = Adam([q], lr=0.1)
    opt.step([torch.ones(8)])
    q.data = torch.zeros(3)
    with pytest.raises(ValueError, match=r"exp_avg\[0\]: shape \(8,\) does not match param"):
        opt.step([torch.ones(3)])


def test_torch_same_address_smaller_storage_is_not_written():
    # free the old storage, then let a smaller tensor take its address: the pointer alone
    # is the same, the byte size is not
    p = torch.nn.Parameter(torch.ones(1 << 14))
    opt = fo.Adam([p], lr=0.1)
    p.grad = torch.ones_like(p)
    opt.step()
    m = opt.state[p]["exp_avg"]
    m.data = torch.empty(0)
    m.data = torch.zeros(16)
    with pytest.raises(ValueError, match="exp_avg"):
        opt.step()
    # the same address for certain: a smaller view of the very storage
    opt = fo.Adam([p], lr=0.1)
    opt.step()
    v = opt.state[p]["exp_avg_sq"]
    v.data = v.data[:16]
    assert v.data_ptr() == int(opt._fo_cache[0].cache.built[0].ptrs[3][0])
    with pytest.raises(ValueError, match="exp_avg_sq"):
        opt.step()


def test_numpy_state_entry_replaced_or_resized():
    p = ones(8)
    opt = Adam([p], lr=0.1)
    opt.step([ones(8)])
    opt.state[0][0]["exp_avg"] = np.full(8, 5.0, np.float32)  # a new, valid array: used
    opt.step([ones(8)])
    np.testing.assert_allclose(opt.state[0][0]["exp_avg"], 0.9 * 5 + 0.1)
    opt.state[0][0]["exp_avg_sq"] = np.zeros(3, np.float32)  # never written past its end
    with pytest.raises(ValueError, match=r"exp_avg_sq\[0\]: shape \(3,\)"):
        opt.step([ones(8)])


# --- 3. fastopt.torch: state cleared or replaced, as torch.optim treats it ---------------


def _pair(cls_name, shapes=((5,), (2, 3)), **kw):
    gen = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    return ours, theirs, getattr(fo, cls_name)(ours, **kw), getattr(torch.optim, cls_name)(
        theirs, **kw)


def _grads(pairs, seed):
    gen = torch.Generator().manual_seed(seed)
    for ps in pairs:
        g = [torch.randn(p.shape, generator=gen) for p in ps[0]]
        for params in ps:
            for p, gi in zip(params, g, strict=True):
                p.grad = gi.clone()


def _same(a, b):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", [e.name for e in DB if e.torch_name])
def test_state_clear_reinitialises_as_torch(name):
    entry = BY_NAME[name]
    kw = {k: v for k, v in entry.full.items() if entry.torch_accepts({k: v})
          and not k.startswith("l1")}
    ours, theirs, a, b = _pair(name, **kw)
    for seed in range(5):
        _grads([(ours, theirs)], seed)
        if seed == 2:
            a.state.clear()
            b.state.clear()
        a.step()
        b.step()
    _same(ours, theirs)
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sb:
        for key, v in sb[k].items():
            torch.testing.assert_close(sa[k][key], v, rtol=1e-6, atol=1e-7)


def test_replaced_state_tensor_is_used():
    ours, theirs, a, b = _pair("Adam", lr=0.1)
    for seed in range(4):
        _grads([(ours, theirs)], seed)
        if seed == 2:
            for opt, ps in ((a, ours), (b, theirs)):
                opt.state[ps[0]]["exp_avg"] = torch.full_like(ps[0], 3.0)
                opt.state[ps[1]]["step"] = torch.tensor(10.0)
        a.step()
        b.step()
    _same(ours, theirs)
    assert float(a.state[ours[1]]["step"]) == 12.0


# --- 4. params added to a group after the first step -------------------------------------


def test_param_appended_to_a_group_is_stepped_torch():
    ours, theirs, a, b = _pair("AdamW", lr=0.1)
    _grads([(ours, theirs)], 0)
    a.step()
    b.step()
    extra = torch.nn.Parameter(torch.ones(7))
    twin = torch.nn.Parameter(torch.ones(7))
    a.param_groups[0]["params"].append(extra)
    b.param_groups[0]["params"].append(twin)
    ours.append(extra)
    theirs.append(twin)
    for seed in (1, 2):
        _grads([(ours, theirs)], seed)
        a.step()
        b.step()
    _same(ours, theirs)
    assert not torch.equal(extra, torch.ones(7))


def test_param_appended_to_a_group_is_stepped_optim():
    ps = [ones(3), ones(5)]
    opt = SGD(ps, lr=0.5, momentum=0.9)
    opt.step([ones(3), ones(5)])
    extra = ones(2)
    opt.param_groups[0]["params"].append(extra)
    with pytest.raises(ValueError, match="expected 3 arrays"):
        opt.step([ones(3), ones(5)])
    opt.step([ones(3), ones(5), ones(2)])
    np.testing.assert_allclose(extra, 0.5)  # its first step: fresh momentum
    np.testing.assert_allclose(ps[0], 1 - 0.5 - 0.5 * 1.9)
    # state follows its param when the list is reordered
    opt.param_groups[0]["params"].reverse()
    opt.step([ones(2), ones(5), ones(3)])
    np.testing.assert_allclose(extra, 0.5 - 0.5 * 1.9)


def test_aliasing_param_added_later_is_refused():
    p = ones(4)
    opt = SGD([p], lr=0.1)
    opt.step([ones(4)])
    opt.param_groups[0]["params"].append(p[:2])
    with pytest.raises(ValueError, match="share memory"):
        opt.step([ones(4), ones(2)])


# --- 5. autograd's version counter -------------------------------------------------------


@pytest.mark.parametrize("api", ["torch", "optim"])
def test_step_bumps_the_autograd_version(api):
    w = torch.nn.Parameter(torch.ones(3))
    x = torch.ones(3)
    loss = (w * w * x).sum()  # saves w for backward
    before = w._version
    if api == "torch":
        w.grad = torch.ones(3)
        opt = fo.Adam([w], lr=0.1)
        opt.step()
        assert opt.state[w]["exp_avg"]._version > 0
    else:
        opt = Adam([w.detach()], lr=0.1)
        opt.step([torch.ones(3)])
    assert w._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# --- 6. dense permuted layouts ------------------------------------------------------------


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_channels_last_params_step_in_place(name):
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(2, 3, 4, 5, generator=gen)
    ours = [torch.nn.Parameter(base.clone().to(memory_format=torch.channels_last)),
            torch.nn.Parameter(torch.randn(6, 4, generator=gen).t())]
    theirs = [torch.nn.Parameter(p.detach().clone(memory_format=torch.preserve_format))
              for p in ours]
    kw = {"lr": 0.1, "momentum": 0.9} if name == "SGD" else {"lr": 0.1}
    a, b = getattr(fo, name)(ours, **kw), getattr(torch.optim, name)(theirs, **kw)
    ptrs = [p.data_ptr() for p in ours]
    for _ in range(3):
        g = [torch.randn(p.shape, generator=gen) for p in ours]
        for p, q, gi in zip(ours, theirs, g, strict=True):
            p.grad = gi.clone(memory_format=torch.contiguous_format).as_strided(
                p.shape, p.stride()).copy_(gi)
            q.grad = p.grad.clone(memory_format=torch.preserve_format)
        a.step()
        b.step()
    _same(ours, theirs)
    assert [p.data_ptr() for p in ours] == ptrs  # in place, no copy
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
    key = "exp_avg" if name == "Adam" else "momentum_buffer"
    assert a.state[ours[0]][key].stride() == ours[0].stride()
    # a grad in another layout is stepped through a copy in the param's layout, not walked
    # in the wrong order
    ours[1].grad = torch.arange(24.0).reshape(4, 6)
    theirs[1].grad = ours[1].grad.clone()
    a.step()
    b.step()
    _same(ours, theirs)
    assert [p.data_ptr() for p in ours] == ptrs


# --- 7. step counts ----------------------------------------------------------------------


@pytest.mark.parametrize("step", [0, -1, 2.5, float("nan"), float("inf"), True, "3"])
def test_functional_step_must_be_a_whole_number_from_1(step):
    p, m, v = ones(), np.zeros(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="Invalid step"):
        F.adam_([p], [ones()], [m], [v], step=step)
    np.testing.assert_array_equal(p, 1.0)


@pytest.mark.parametrize("bad", [-1.0, 2.5, float("nan")])
def test_checkpoint_with_a_bad_step_is_refused(bad):
    opt = AdamW([ones()], lr=0.1)
    opt.step([ones()])
    sd = opt.state_dict()
    sd["state"][0]["step"] = bad
    with pytest.raises(ValueError, match="step"):
        AdamW([ones()]).load_state_dict(sd)
    w = torch.nn.Parameter(torch.ones(4))
    topt = fo.AdamW([w], lr=0.1)
    w.grad = torch.ones(4)
    topt.step()
    tsd = topt.state_dict()
    tsd["state"][0]["step"] = torch.tensor(bad)
    fresh = fo.AdamW([w], lr=0.1)
    fresh.load_state_dict(tsd)
    with pytest.raises(ValueError, match="step"):
        fresh.step()
    assert torch.isfinite(w).all()


def test_checkpoint_at_step_zero_steps_finitely():
    opt = Adam([ones()], lr=0.1)
    opt.step([ones()])
    sd = opt.state_dict()
    sd["state"][0]["step"] = 0.0
    p = ones()
    twin = Adam([p], lr=0.1)
    twin.load_state_dict(sd)
    twin.step([ones()])
    assert np.isfinite(p).all()


# --- loading checkpoints: torch's flags, schedules ---------------------------------------


def test_torch_checkpoint_loads_into_fastopt_optim():
    w = torch.nn.Parameter(torch.ones(4))
    t = torch.optim.AdamW([w], lr=0.1, foreach=False)
    w.grad = torch.ones(4)
    t.step()
    p = w.detach().clone()
    opt = AdamW([p])
    opt.load_state_dict(t.state_dict())
    assert opt.param_groups[0]["lr"] == 0.1 and "foreach" not in opt.param_groups[0]
    w.grad = torch.full((4,), 0.5)
    t.step()
    opt.step([torch.full((4,), 0.5)])
    torch.testing.assert_close(p, w.detach().clone(), rtol=1e-6, atol=1e-7)
    # torch.optim.Adam would take the checkpoint's decoupled_weight_decay=True, and so
    # continue as AdamW: so does fastopt.optim.Adam; AdamW refuses an Adam checkpoint
    q = w.detach().clone()
    adam = Adam([q])
    adam.load_state_dict(t.state_dict())
    assert adam.param_groups[0]["decoupled_weight_decay"] is True
    w.grad = torch.full((4,), 0.25)
    t.step()
    adam.step([torch.full((4,), 0.25)])
    torch.testing.assert_close(q, w.detach().clone(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="decoupled_weight_decay=False does not match AdamW"):
        AdamW([torch.ones(4)]).load_state_dict(torch.optim.Adam([w]).state_dict())


def test_scheduled_optimizer_checkpoint_round_trips():
    from fastopt.schedules import Cosine, LRScheduler

    opt = Adam([ones()], lr=0.1)
    sched = LRScheduler(opt, Cosine(T_max=10))
    opt.step([ones()])
    sched.step()
    sd = opt.state_dict()
    assert "initial_lr" in sd["param_groups"][0]
    twin = Adam([ones()], lr=0.1)
    twin.load_state_dict(sd)
    assert twin.param_groups[0]["initial_lr"] == 0.1
    assert twin.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


# --- the cost: re-validation does not rebuild --------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_steps_over_many_tensors_reuse_their_tables(kind):
    n = 3000
    if kind == "numpy":
        params = [ones(8) for _ in range(n)]
        opt = Adam(params, lr=0.1)
        for _ in range(3):
            opt.step([ones(8) for _ in range(n)])
        assert opt._caches[0].builds == 1
    else:
        params = [torch.nn.Parameter(torch.ones(8)) for _ in range(n)]
        opt = fo.Adam(params, lr=0.1)
        for _ in range(3):
            for p in params:
                p.grad = torch.ones(8)
            opt.step()
        assert opt._fo_cache[0].cache.builds == 1


def test_state_changes_through_every_dict_method_are_seen():
    # the step re-reads state dicts only when one changed: every way of changing them counts
    ours, theirs, a, b = _pair("Adam", lr=0.1)
    edits = [
        lambda o, ps: o.state.__setitem__(ps[0], {}),
        lambda o, ps: o.state[ps[1]].update(exp_avg=torch.full_like(ps[1], 2.0)),
        lambda o, ps: o.state[ps[0]].clear(),
        lambda o, ps: o.state.pop(ps[1]),
        lambda o, ps: o.state[ps[0]].__setitem__("step", torch.tensor(7.0)),
    ]
    for seed, edit in enumerate(edits):
        _grads([(ours, theirs)], seed)
        a.step()
        b.step()
        edit(a, ours)
        edit(b, theirs)
    _grads([(ours, theirs)], 99)
    a.step()
    b.step()
    _same(ours, theirs)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_torch_optimizer_steps_its_own_tensors(how):
    w = torch.nn.Parameter(torch.ones(5))
    opt = fo.AdamW([w], lr=0.1)
    w.grad = torch.ones(5)
    opt.step()
    twin = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    tw = twin.param_groups[0]["params"][0]
    tw.grad = torch.ones(5)
    before = w.detach().clone()
    twin.step()
    assert torch.equal(w, before)
    assert not torch.equal(tw, before)
    opt.step()
    torch.testing.assert_close(w, tw)


# --- found by the fuzz suite -------------------------------------------------------------


@pytest.mark.parametrize("op,extra", [
    (f"{spec.name}_", sum(s.when is None for s in spec.slots)) for spec in ops.REGISTRY.values()])
def test_functional_refuses_none_for_a_required_list(op, extra):
    # None once meant "row unused": the kernel then dereferenced a null row
    p = ones()
    kw = {"step": 1} if ops.get(op[:-1]).uses_step else {}
    with pytest.raises(ValueError, match="grad: required"):
        getattr(F, op)([p], None, *[[np.zeros(4, np.float32)]] * extra, **kw)
    if extra:
        with pytest.raises(ValueError, match="required"):
            getattr(F, op)([p], [ones()], *[None] * extra, **kw)
    np.testing.assert_array_equal(p, 1.0)


def test_numpy_scalar_is_refused_not_written_after_free():
    with pytest.raises(TypeError, match=r"param\[0\]: a NumPy scalar"):
        F.sgd_([np.float64(3.0)], [np.ones((), np.float64)], lr=0.5)
    with pytest.raises(TypeError, match=r"grad\[0\]: a NumPy scalar"):
        F.sgd_([np.ones((), np.float32)], [np.float32(1.0)], lr=0.5)


def test_aliasing_across_param_groups_is_refused():
    a, b = ones(), ones()
    opt = SGD([{"params": [a]}, {"params": [b]}], lr=0.5)
    with pytest.raises(ValueError, match=r"param group 0 param\[0\] and param group 1 grad\[0\]"):
        opt.step([ones(), a])
    np.testing.assert_array_equal(a, 1.0)
    np.testing.assert_array_equal(b, 1.0)
    opt.step([ones(), ones()])
    np.testing.assert_array_equal(a, 0.5)


def test_list_arguments_name_themselves():
    with pytest.raises(TypeError, match="param: expected a list of arrays, got int"):
        F.sgd_(5, [ones()])
    with pytest.raises(TypeError, match="grads: expected a list of arrays, got None"):
        fastopt.clip.clip_grad_norm_(None, 1.0)
    p = ones()
    F.sgd_((q for q in [p]), [ones()], lr=0.5)  # any iterable is read once
    np.testing.assert_array_equal(p, 0.5)


def test_a_list_mixing_torch_and_numpy_steps_both():
    # one table may hold both kinds: re-read through the generic path, and only the torch
    # tensors get a version bump (the fuzz suite found a RuntimeError after the step)
    ps = [torch.ones(4), ones()]
    opt = Adam(ps, lr=0.1)
    for _ in range(3):
        opt.step([torch.ones(4), ones()])
    np.testing.assert_allclose(ps[1], 0.7, rtol=1e-6)
    torch.testing.assert_close(ps[0], torch.full((4,), 0.7))
    assert ps[0]._version > 0
