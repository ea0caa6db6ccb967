"""fastopt.torch optimizers against torch.optim: signatures and defaults, flags, state layout,
LR schedulers, GradScaler, closures, missing grads, no_grad and torch.compile (every
optimizer's trajectories, checkpoints both ways, copies and validation: test_optim_db.py;
what the kernels do not take: test_torch_dropin.py)."""

import inspect
import io
import math

import pytest

torch = pytest.importorskip("torch")

from optim_db import BY_NAME, DB  # noqa: E402
from tolerances import assert_close  # noqa: E402

import fastopt.torch as fo  # noqa: E402

SHAPES = [(1,), (7,), (4097,), (3, 5)]

def _torch_keys(name, group):
    """A param group without fastopt's own hyperparameters (l1, l1_mode, ...: every group
    keeps them too, at their defaults unless set)."""
    entry = BY_NAME[name]
    theirs = set(entry.torch_class([torch.zeros(1, requires_grad=True)]).defaults)
    assert {k for k in group if k not in theirs} - {"params"} == set(entry.defaults) - theirs
    return {k: v for k, v in group.items() if k in theirs or k == "params"}


def _entries(with_torch=False):
    return [pytest.param(e, id=e.name, marks=[])
            for e in DB if e.torch_name or not with_torch]


def _params(shapes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def _twin(params):
    return [p.detach().clone().requires_grad_() for p in params]


def _set_grads(pairs, gen, scale=1.0):
    """Fresh .grad tensors every step (as zero_grad(set_to_none=True) + backward)."""
    for ps in zip(*pairs, strict=True):
        g = torch.randn(ps[0].shape, generator=gen, dtype=ps[0].dtype) * scale
        for p in ps:
            p.grad = g.clone()


def _step(gen, steps, *runs):
    """`steps` steps of each run (optimizer, its params), all on the same fresh gradients."""
    for _ in range(steps):
        _set_grads([ps for _, ps in runs], gen)
        for opt, _ in runs:
            opt.step()


def _assert_same(ours, theirs, what=""):
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert_close(a.detach().numpy(), b.detach().numpy(), str(a.dtype).split(".")[1],
                     f"{what} param {i}")


def _assert_state_same(opt_a, opt_b, params_a, params_b):
    for pa, pb in zip(params_a, params_b, strict=True):
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert sorted(sa) == sorted(sb)
        for k in sb:
            if k == "step":
                assert sa[k].dtype == sb[k].dtype and sa[k].dim() == 0
                assert float(sa[k]) == float(sb[k])
            else:
                assert_close(sa[k].numpy(), sb[k].numpy(), str(sb[k].dtype).split(".")[1], k)


@pytest.mark.parametrize("flags", [dict(foreach=True), dict(fused=True), dict(foreach=False),
                                   dict(fused=False, foreach=None)])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_foreach_fused_flags_accepted(name, flags):
    kw = dict(lr=0.05, momentum=0.9) if name == "SGD" else dict(lr=0.05)
    ours = _params([(7,), (2, 3)], torch.float32)
    theirs = _twin(ours)
    a = getattr(fo, name)(ours, **kw, **flags)
    b = getattr(torch.optim, name)(theirs, **kw, **flags)
    assert _torch_keys(name, a.param_groups[0]).keys() == b.param_groups[0].keys()
    _step(torch.Generator().manual_seed(2), 5, (a, ours), (b, theirs))
    _assert_same(ours, theirs)


def test_rmsprop_capturable_flag_accepted():
    ours = _params([(5,)], torch.float32)
    theirs = _twin(ours)
    # torch's capturable path wants an accelerator; on CPU the plain step is the reference
    a, b = fo.RMSprop(ours, capturable=True), torch.optim.RMSprop(theirs)
    _step(torch.Generator().manual_seed(3), 4, (a, ours), (b, theirs))
    _assert_same(ours, theirs)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in DB if e.torch_name])
def test_defaults_and_signatures_match_torch(entry):
    """torch.optim's parameters (order, defaults, kinds), then fastopt's own as keywords (not
    those the class fixes: AdamW's decoupled_weight_decay, which torch.optim.AdamW does not
    take either)."""
    ours = inspect.signature(entry.fo_torch_class.__init__).parameters
    theirs = inspect.signature(entry.torch_class.__init__).parameters
    assert list(ours)[:len(theirs)] == list(theirs)
    for k, prm in theirs.items():
        assert ours[k].default == prm.default, k
        assert ours[k].kind == prm.kind, k
    extra = {k: v for k, v in entry.defaults.items() if k not in theirs and k not in entry.fixed}
    assert {k: (p.default, p.kind) for k, p in list(ours.items())[len(theirs):]} == \
        {k: (v, inspect.Parameter.KEYWORD_ONLY) for k, v in extra.items()}


@pytest.mark.parametrize("entry", _entries())
def test_defaults_match_torch(entry):
    p = [torch.zeros(2, requires_grad=True)]
    ours = entry.fo_torch_class(p).defaults
    if entry.torch_class is None:
        assert {k: ours[k] for k in entry.defaults} == entry.defaults
    else:
        theirs = entry.torch_class(p).defaults
        assert {k: v for k, v in ours.items() if k in theirs} == theirs
        assert {k: v for k, v in ours.items() if k not in theirs} == \
            {k: v for k, v in entry.defaults.items() if k not in theirs}


def test_fused_and_foreach_together_refused():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        fo.AdamW(p, fused=True, foreach=True)


def _save_load(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_layout_is_torch_layout():
    ps = _params([(3,), (2, 2)], torch.float32)
    opt = fo.AdamW(ps, lr=1e-2)
    ref = torch.optim.AdamW(_twin(ps), lr=1e-2)
    for o, params in [(opt, ps), (ref, ref.param_groups[0]["params"])]:
        for p in params:
            p.grad = torch.ones_like(p)
        o.step()
    a, b = opt.state_dict(), ref.state_dict()
    assert [_torch_keys("AdamW", g) for g in a["param_groups"]] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in b["state"]:
        assert a["state"][k].keys() == b["state"][k].keys()
        assert a["state"][k]["step"].dtype == torch.float32
        assert float(a["state"][k]["step"]) == 1.0


def _schedulers():
    S = torch.optim.lr_scheduler
    return {
        "LambdaLR": lambda o: S.LambdaLR(o, lambda e: 0.9**e),
        "MultiplicativeLR": lambda o: S.MultiplicativeLR(o, lambda e: 0.95),
        "StepLR": lambda o: S.StepLR(o, step_size=3, gamma=0.5),
        "MultiStepLR": lambda o: S.MultiStepLR(o, milestones=[2, 5], gamma=0.3),
        "ConstantLR": lambda o: S.ConstantLR(o, factor=0.5, total_iters=4),
        "LinearLR": lambda o: S.LinearLR(o, start_factor=0.2, total_iters=5),
        "ExponentialLR": lambda o: S.ExponentialLR(o, gamma=0.9),
        "PolynomialLR": lambda o: S.PolynomialLR(o, total_iters=6, power=2.0),
        "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, T_max=5),
        "CosineAnnealingWarmRestarts": lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3),
        "CyclicLR": lambda o: S.CyclicLR(o, base_lr=1e-3, max_lr=1e-2, step_size_up=3),
        "OneCycleLR": lambda o: S.OneCycleLR(o, max_lr=1e-2, total_steps=20),
        "SequentialLR": lambda o: S.SequentialLR(
            o, [S.ConstantLR(o, factor=0.5, total_iters=2), S.ExponentialLR(o, gamma=0.9)],
            milestones=[3]),
        "ChainedScheduler": lambda o: S.ChainedScheduler(
            [S.ConstantLR(o, factor=0.5, total_iters=2), S.ExponentialLR(o, gamma=0.9)]),
        "ReduceLROnPlateau": lambda o: S.ReduceLROnPlateau(o, patience=1, factor=0.5),
    }


def test_every_lr_scheduler_class_is_covered():
    S = torch.optim.lr_scheduler
    public = {n for n in S.__all__ if isinstance(getattr(S, n), type)
              and issubclass(getattr(S, n), (S.LRScheduler, S.ReduceLROnPlateau))
              and n not in ("LRScheduler", "_LRScheduler")}
    assert public <= set(_schedulers())


@pytest.mark.parametrize("optname", ["SGD", "AdamW"])
@pytest.mark.parametrize("sched", list(_schedulers()))
def test_lr_schedulers(sched, optname):
    kw = dict(lr=1e-2, momentum=0.9) if optname == "SGD" else dict(lr=1e-2)
    ours = _params([(6,), (2, 3)], torch.float32)
    theirs = _twin(ours)
    a, b = getattr(fo, optname)(ours, **kw), getattr(torch.optim, optname)(theirs, **kw)
    sa, sb = _schedulers()[sched](a), _schedulers()[sched](b)
    gen = torch.Generator().manual_seed(6)
    for i in range(12):
        _set_grads([ours, theirs], gen)
        a.step()
        b.step()
        if sched == "ReduceLROnPlateau":
            sa.step(1.0)
            sb.step(1.0)
        else:
            sa.step()
            sb.step()
        assert a.param_groups[0]["lr"] == b.param_groups[0]["lr"], i
    _assert_same(ours, theirs, sched)


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_grad_scaler_with_injected_infs(name):
    kw = dict(lr=1e-2, momentum=0.9) if name == "SGD" else dict(lr=1e-2)
    torch.manual_seed(7)
    model_a = torch.nn.Linear(5, 3)
    model_b = torch.nn.Linear(5, 3)
    model_b.load_state_dict(model_a.state_dict())
    a = getattr(fo, name)(model_a.parameters(), **kw)
    b = getattr(torch.optim, name)(model_b.parameters(), **kw)
    sc_a = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    sc_b = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    x = torch.randn(8, 5)
    for i in range(8):
        before = [p.detach().clone() for p in model_a.parameters()]
        for model, opt, sc in [(model_a, a, sc_a), (model_b, b, sc_b)]:
            opt.zero_grad()
            sc.scale(model(x).square().mean()).backward()
            if i in (2, 5):
                model.weight.grad[0, 0] = math.inf if i == 2 else math.nan
            if i == 5:
                sc.unscale_(opt)  # explicit unscale_ before step, as for gradient clipping
            sc.step(opt)
            sc.update()
        if i in (2, 5):
            for p, q in zip(model_a.parameters(), before, strict=True):
                assert torch.equal(p.detach(), q)  # the step was skipped
        assert sc_a.get_scale() == sc_b.get_scale()
    assert sc_a.get_scale() < 2.0**10 * 4
    _assert_same(list(model_a.parameters()), list(model_b.parameters()), "GradScaler")


def test_closure():
    torch.manual_seed(8)
    model_a = torch.nn.Linear(4, 1)
    model_b = torch.nn.Linear(4, 1)
    model_b.load_state_dict(model_a.state_dict())
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    a = fo.SGD(model_a.parameters(), lr=0.1, momentum=0.5)
    b = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.5)

    def closure_for(model, opt):
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss
        return closure

    for _ in range(5):
        la = a.step(closure_for(model_a, a))
        lb = b.step(closure_for(model_b, b))
        assert float(la) == pytest.approx(float(lb), rel=1e-5)
    _assert_same(list(model_a.parameters()), list(model_b.parameters()))


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in DB if e.torch_name])
def test_params_without_grad_skipped_and_joining_later(entry):
    kw, name = {k: v for k, v in entry.full.items() if not k.startswith("l1")}, entry.name
    ours = _params([(3,), (4,), (2, 2)], torch.float32)
    theirs = _twin(ours)
    a, b = entry.fo_torch_class(ours, **kw), entry.torch_class(theirs, **kw)
    gen = torch.Generator().manual_seed(9)
    frozen = ours[1].detach().clone()
    for i in range(9):
        # param 1 has no grad for 3 steps, then joins (at another step count); later, param 0
        # skips a step: the group mixes step counts and new and old momentum buffers
        for ps in (ours, theirs):
            for p in ps:
                p.grad = None
        live = [0, 2] if i < 3 else [1, 2] if i == 6 else [0, 1, 2]
        for k in live:
            g = torch.randn(ours[k].shape, generator=gen)
            ours[k].grad, theirs[k].grad = g.clone(), g.clone()
        a.step()
        b.step()
        if i < 3:
            assert torch.equal(ours[1].detach(), frozen)
            # as torch: no state (torch.optim.Adagrad's is created up front)
            assert sorted(a.state[ours[1]]) == sorted(b.state[theirs[1]])
    _assert_same(ours, theirs, name)
    _assert_state_same(a, b, ours, theirs)


def test_no_grads_at_all_is_a_no_op():
    ps = _params([(3,)], torch.float32)
    before = ps[0].detach().clone()
    opt = fo.AdamW(ps)
    opt.step()
    assert torch.equal(ps[0].detach(), before) and len(opt.state) == 0


def test_step_under_no_grad_and_with_grad_enabled():
    ours = _params([(5,)], torch.float32)
    theirs = _twin(ours)
    a, b = fo.AdamW(ours, lr=0.1), torch.optim.AdamW(theirs, lr=0.1)
    gen = torch.Generator().manual_seed(10)
    for i in range(4):
        _set_grads([ours, theirs], gen)
        if i % 2:
            with torch.no_grad():
                a.step()
        else:
            a.step()
        b.step()
    assert ours[0].is_leaf and ours[0].grad_fn is None
    _assert_same(ours, theirs)


def _inductor_compiles():
    """None if torch.compile's default backend (inductor: generated C++ built by the C++
    compiler) works here, else why not."""
    try:
        torch._dynamo.reset()
        fn = torch.compile(lambda t: (t.sin() * 2).sum())
        fn(torch.ones(3))
        return None
    except Exception as exc:  # no compiler, a broken toolchain: inductor says so its own way
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


# inductor's first use imports torch.jit code that warns about its own deprecation
@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=[
    pytest.mark.slow, pytest.mark.filterwarnings("ignore:`torch.jit.script_method`")])])
def test_torch_compiled_model(backend):
    if backend == "inductor" and (why := _inductor_compiles()) is not None:
        pytest.skip(f"torch.compile's inductor backend cannot compile here: {why}")
    torch.manual_seed(11)
    model_a = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model_b = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model_b.load_state_dict(model_a.state_dict())
    compiled = torch.compile(model_a, backend=backend)
    a = fo.AdamW(model_a.parameters(), lr=1e-2)
    b = torch.optim.AdamW(model_b.parameters(), lr=1e-2)
    x = torch.randn(10, 6)

    @torch.compile(backend=backend)
    def train_step():  # the optimizer step inside a compiled function runs eagerly
        a.zero_grad()
        compiled(x).square().mean().backward()
        a.step()

    for _ in range(4):
        train_step()
        b.zero_grad()
        model_b(x).square().mean().backward()
        b.step()
    _assert_same(list(model_a.parameters()), list(model_b.parameters()), "compile")


def test_cache_follows_grads_params_and_state_changes():
    ours = _params([(4,), (3,)], torch.float32)
    theirs = _twin(ours)
    a, b = fo.Adam(ours, lr=0.1), torch.optim.Adam(theirs, lr=0.1)
    gen = torch.Generator().manual_seed(12)
    for i in range(10):
        if i in (0, 1, 2, 3):  # same .grad tensors, zeroed in place and accumulated into
            for ps in (ours, theirs):
                for p in ps:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad.zero_()
            for k in range(2):
                g = torch.randn(ours[k].shape, generator=gen)
                ours[k].grad.add_(g)
                theirs[k].grad.add_(g)
        else:
            _set_grads([ours, theirs], gen)
        if i == 5:  # parameter memory replaced: the cached table must not write the old one
            for p in ours:
                p.data = p.data.clone()
        a.step()
        b.step()
    _assert_same(ours, theirs)
    _assert_state_same(a, b, ours, theirs)


def test_add_param_group_and_multiple_groups():
    ours = _params([(4,), (3,), (2,)], torch.float64)
    theirs = _twin(ours)
    a = fo.SGD([{"params": ours[:1]}, {"params": ours[1:2], "lr": 0.5}], lr=0.1, momentum=0.9)
    b = torch.optim.SGD([{"params": theirs[:1]}, {"params": theirs[1:2], "lr": 0.5}], lr=0.1,
                        momentum=0.9)
    gen = torch.Generator().manual_seed(13)
    _step(gen, 3, (a, ours), (b, theirs))
    a.add_param_group({"params": ours[2:], "momentum": 0.5})
    b.add_param_group({"params": theirs[2:], "momentum": 0.5})
    _step(gen, 3, (a, ours), (b, theirs))
    _assert_same(ours, theirs)


@pytest.mark.parametrize("entry", _entries(with_torch=True))
def test_added_group_takes_the_class_defaults(entry):
    """add_param_group fills a new group from the optimizer's defaults, as torch.optim does;
    it then steps as torch's does."""
    kw = {k: v for k, v in entry.full.items() if not k.startswith("l1")}
    ours = _params([(4,), (3,)], torch.float32)
    theirs = _twin(ours)
    a = entry.fo_torch_class(ours[:1], **kw)
    b = entry.torch_class(theirs[:1], **kw)
    a.add_param_group({"params": ours[1:]})
    b.add_param_group({"params": theirs[1:]})
    added = _torch_keys(entry.name, a.param_groups[1])
    assert {k: v for k, v in added.items() if k != "params"} == \
        {k: v for k, v in b.param_groups[1].items() if k != "params"}
    gen = torch.Generator().manual_seed(13)
    for _ in range(3):
        _set_grads([ours, theirs], gen)
        a.step()
        b.step()
    _assert_same(ours, theirs)


def test_mixed_dtypes_in_one_group_and_tensor_lr():
    ours = _params([(5,), (3,)], torch.float32) + _params([(4,)], torch.float64)
    theirs = _twin(ours)
    lr = torch.tensor(0.01, dtype=torch.float64)  # float32 would round torch's float64 math
    a, b = fo.AdamW(ours, lr=lr), torch.optim.AdamW(theirs, lr=lr)
    _step(torch.Generator().manual_seed(14), 5, (a, ours), (b, theirs))
    _assert_same(ours, theirs)


def test_invalid_tensors_raise_clearly():
    p = [torch.zeros(3, 3, requires_grad=True)]
    opt = fo.Adam(p, lr=0.1)
    p[0].grad = torch.ones(3, 3)
    opt.step()
    opt.state[p[0]]["exp_avg"] = torch.zeros(9)  # a state entry of another shape
    with pytest.raises(ValueError, match=r"exp_avg\[0\].*shape"):
        opt.step()


def test_many_tensors_one_table():
    ours = _params([(3,)] * 300 + [(1,)] * 5, torch.float32)
    theirs = _twin(ours)
    a, b = fo.RMSprop(ours, lr=1e-2), torch.optim.RMSprop(theirs, lr=1e-2)
    _step(torch.Generator().manual_seed(15), 3, (a, ours), (b, theirs))
    assert len(a._fo_cache[0].cache.built) == 1
    _assert_same(ours, theirs)


def test_tables_are_reused_across_steps_with_new_grads():
    ps = _params([(5,), (2, 3), (1,)], torch.float32)
    opt = fo.AdamW(ps)
    gen = torch.Generator().manual_seed(16)
    _set_grads([ps], gen)
    opt.step()
    entry = opt._fo_cache[0]
    for _ in range(3):
        _set_grads([ps], gen)  # new .grad tensors at new addresses
        opt.step()
        assert opt._fo_cache[0] is entry
    assert entry.cache.builds == 1
    # one buffer counts the group's steps; state['step'] are views of it
    assert all(opt.state[p]["step"]._base is entry.steps for p in ps)
    assert float(opt.state[ps[0]]["step"]) == 4.0


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_optimizer_keeps_no_reference_to_grads(name):
    import gc
    import weakref

    ps = _params([(5,), (3,)], torch.float32)
    opt = getattr(fo, name)(ps, lr=0.1)
    for _ in range(2):  # first step builds the tables, the second refreshes them
        for p in ps:
            p.grad = torch.ones_like(p)
        refs = [weakref.ref(p.grad) for p in ps]
        opt.step()
        opt.zero_grad(set_to_none=True)
        gc.collect()
        assert all(r() is None for r in refs)  # set_to_none frees the gradients' memory
