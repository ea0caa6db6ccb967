"""The stateful optimizer API: param groups, lr changes, checkpoints, skipped params, other
frameworks' arrays, the functional layer."""

import copy
import sys

import numpy as np
import pytest
from conftest import backend_params
from tolerances import assert_close
from trajectories import SHAPES as _SHAPES
from trajectories import grad_stream, initial_params

import fastopt
from fastopt import functional as F
from fastopt import reference
from fastopt.optim import SGD, Adam, AdamW

SHAPES = _SHAPES["mixed"]


def test_load_state_dict_drops_state_the_checkpoint_lacks():
    """As torch.optim: the loaded state replaces the optimizer's. A momentum buffer of the run
    before the load must not survive a checkpoint without one: switched on again, momentum
    starts from the first update."""
    g = [np.ones(3)]
    opt = SGD([np.zeros(3)], lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.step(g)
    opt.load_state_dict(SGD([np.zeros(3)], lr=0.1).state_dict())
    assert set(opt.state_dict()["state"][0]) == {"step"}
    opt.param_groups[0]["momentum"] = 0.9
    p = opt.param_groups[0]["params"][0]
    before = p.copy()
    opt.step(g)
    np.testing.assert_allclose(p - before, -0.1)


def test_state_dict_is_a_copy_with_torch_layout():
    params = initial_params(SHAPES, np.float64)
    opt = Adam(params, amsgrad=True)
    opt.step(list(grad_stream(SHAPES, np.float64, 1))[0])
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 1.0
    assert sd["param_groups"][0]["params"] == list(range(len(SHAPES)))
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)
    before = sd["state"][0]["exp_avg"].copy()
    opt.step(list(grad_stream(SHAPES, np.float64, 1, seed=5))[0])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], before)


def test_param_groups_take_their_own_hyperparameters():
    params = initial_params(SHAPES, np.float64)
    a, b = [p.copy() for p in params[:3]], [p.copy() for p in params[3:]]
    opt = AdamW([{"params": a}, {"params": b, "lr": 0.1, "weight_decay": 0.0}], lr=0.01)
    ra, rb = [p.copy() for p in a], [p.copy() for p in b]
    ma = [np.zeros_like(p) for p in a] + [np.zeros_like(p) for p in b]
    va = [np.zeros_like(p) for p in ma]
    for step, g in enumerate(grad_stream(SHAPES, np.float64, 5), start=1):
        opt.step(g)
        for k, (p, gk) in enumerate(zip(ra + rb, g, strict=True)):
            lr, wd = (0.01, 0.01) if k < 3 else (0.1, 0.0)
            reference.adam(p, gk, ma[k], va[k], step=step, lr=lr, weight_decay=wd,
                           decoupled_weight_decay=True)
    for x, y in zip(a + b, ra + rb, strict=True):
        assert_close(x, y)


def test_learning_rate_changes_between_steps():
    params = initial_params(SHAPES, np.float64)
    ref = [p.copy() for p in params]
    opt = SGD(params, lr=0.1)
    for step, g in enumerate(grad_stream(SHAPES, np.float64, 4)):
        opt.param_groups[0]["lr"] = 0.1 / (step + 1)
        opt.step(g)
        for p, gk in zip(ref, g, strict=True):
            reference.sgd(p, gk, lr=0.1 / (step + 1))
    for x, y in zip(params, ref, strict=True):
        assert_close(x, y)


def test_schedule_drives_any_optimizer():
    params = initial_params(SHAPES, np.float32)
    opt = Adam(params, lr=0.1)
    sched = fastopt.schedules.LRScheduler(opt, fastopt.schedules.Cosine(T_max=10))
    lrs = []
    for g in grad_stream(SHAPES, np.float32, 10):
        opt.step(g)
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    expected = [0.05 * (1 + np.cos(np.pi * t / 10)) for t in range(1, 11)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)


def test_none_grads_skip_params_and_their_step_count():
    params = initial_params(SHAPES, np.float64)
    ref = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    opt = Adam(params, lr=0.01)
    steps = [0] * len(params)
    for i, g in enumerate(grad_stream(SHAPES, np.float64, 6)):
        g = [None if (k + i) % 3 == 0 else gk for k, gk in enumerate(g)]
        opt.step(g)
        for k, gk in enumerate(g):
            if gk is not None:
                steps[k] += 1
                reference.adam(ref[k], gk, m[k], v[k], step=steps[k], lr=0.01)
    for x, y in zip(params, ref, strict=True):
        assert_close(x, y)
    sd = opt.state_dict()["state"]
    assert [sd[k]["step"] for k in range(len(params))] == [float(s) for s in steps]


def test_momentum_buffer_starts_from_first_update_even_when_switched_on_later():
    params = initial_params([(50,)], np.float64)
    ref = [params[0].copy()]
    buf = [np.zeros(50)]
    opt = SGD(params, lr=0.1, momentum=0.0)
    for i, g in enumerate(grad_stream([(50,)], np.float64, 4)):
        momentum = 0.0 if i < 2 else 0.9
        opt.param_groups[0]["momentum"] = momentum
        opt.param_groups[0]["dampening"] = 0.5
        opt.step(g)
        reference.sgd(ref[0], g[0], buf[0] if momentum else None, lr=0.1, momentum=momentum,
                      dampening=0.5, first_step=(i == 2))
    assert_close(params[0], ref[0])


def test_torch_cpu_tensors_are_updated_in_place():
    torch = pytest.importorskip("torch")
    params = initial_params(SHAPES, np.float32)
    tparams = [torch.from_numpy(p.copy()) for p in params]
    ptrs = [t.data_ptr() for t in tparams]
    opt_np, opt_t = AdamW(params, lr=0.01), AdamW(tparams, lr=0.01)
    for g in grad_stream(SHAPES, np.float32, 10):
        opt_np.step(g)
        opt_t.step([torch.from_numpy(x) for x in g])
    assert [t.data_ptr() for t in tparams] == ptrs
    for p, t in zip(params, tparams, strict=True):
        np.testing.assert_array_equal(p, t.numpy())
    assert isinstance(opt_t.state_dict()["state"][0]["exp_avg"], torch.Tensor)


def test_dlpack_arrays_without_array_interface_are_accepted():
    class OnlyDLPack:
        def __init__(self, a):
            self._a = a

        def __dlpack__(self, **kw):
            return self._a.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self._a.__dlpack_device__()

    params = initial_params([(5,)], np.float64)
    ref = [params[0].copy()]
    grad = np.ones(5)
    SGD([OnlyDLPack(params[0])], lr=0.5).step([OnlyDLPack(grad)])
    reference.sgd(ref[0], grad, lr=0.5)
    np.testing.assert_array_equal(params[0], ref[0])


# the one test of the reference backend itself: the plumbing from the functional layer
@pytest.mark.parametrize("backend", [*backend_params(), "reference"])
def test_functional_layer_matches_reference(backend):
    params = initial_params(SHAPES, np.float32)
    exp_avg = [np.zeros_like(p) for p in params]
    exp_avg_sq = [np.zeros_like(p) for p in params]
    ref = copy.deepcopy((params, exp_avg, exp_avg_sq))
    for step, g in enumerate(grad_stream(SHAPES, np.float32, 10), start=1):
        F.adamw_(params, g, exp_avg, exp_avg_sq, step=step, lr=0.01, backend=backend)
        for k in range(len(params)):
            reference.adam(ref[0][k], g[k], ref[1][k], ref[2][k], step=step, lr=0.01,
                           weight_decay=0.01, decoupled_weight_decay=True)
    for x, y in zip(params, ref[0], strict=True):
        assert_close(x, y)


def test_mixed_dtypes_in_one_group():
    p32 = initial_params([(100,)], np.float32)
    p64 = initial_params([(100,)], np.float64, seed=3)
    params = [p32[0], p64[0]]
    ref = [p32[0].copy(), p64[0].copy()]
    m = [np.zeros_like(p) for p in ref]
    v = [np.zeros_like(p) for p in ref]
    opt = Adam(params, lr=0.01)
    rng = np.random.default_rng(0)
    for step in range(1, 6):
        g = [rng.standard_normal(100).astype(p.dtype) for p in params]
        opt.step(g)
        for k in range(2):
            reference.adam(ref[k], g[k], m[k], v[k], step=step, lr=0.01)
    assert_close(params[0], ref[0])
    assert_close(params[1], ref[1])


def test_backend_env_variable_is_the_default(monkeypatch):
    monkeypatch.setenv("FASTOPT_BACKEND", "reference")
    assert fastopt.backends.resolve(None, "cpu").name == "reference"
    monkeypatch.setenv("FASTOPT_BACKEND", "no-such-backend")
    with pytest.raises(ValueError, match="unknown backend"):
        fastopt.backends.resolve(None, "cpu")


def _python_calls(fn) -> int:
    """Python-level calls (functions and builtins called from Python code) while fn runs."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += event in ("call", "c_call")

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def _cached_step(framework: str, n: int):
    """An AdamW over n tensors, stepped once (tables built); returns a step with new grads."""
    if framework == "torch":
        torch = pytest.importorskip("torch")
        import fastopt.torch as fo

        ps = [torch.zeros(4, requires_grad=True) for _ in range(n)]
        opt = fo.AdamW(ps)

        def step():
            for p in ps:  # new .grad tensors at new addresses, as zero_grad(set_to_none=True)
                p.grad = torch.ones_like(p)
            return opt.step
    else:
        opt = AdamW([np.zeros(4, np.float32) for _ in range(n)])

        def step():
            grads = [np.ones(4, np.float32) for _ in range(n)]
            return lambda: opt.step(grads)
    step()()
    return step


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_step_python_work_does_not_grow_with_tensor_count(framework):
    """README: pointer tables are cached, so a step over 20,000 tensors costs little more than
    the kernel. A step with new gradients makes the same Python calls for 20,000 tensors as for
    20: the per-tensor work (new pointers, checks) runs in C."""
    calls = {}
    _cached_step(framework, 2)()()  # one-time lazy work (resolving the C++ gather) done first
    for n in (20, 20000):
        step = _cached_step(framework, n)
        calls[n] = [_python_calls(step()) for _ in range(2)]
    assert calls[20000] == calls[20], calls
