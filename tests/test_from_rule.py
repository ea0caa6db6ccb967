"""Optimizers made from a user's scalar rule (fastopt.optim.from_rule, fastopt.torch.from_rule):
equal to the built-in optimizers and to torch.optim on multi-step trajectories, the reference
backend (the rule in Python, float64) against the Numba kernel, checkpoints, clear errors at
definition and for bad inputs, and the disk cache across processes.

The classes are made once, at import (each costs a Numba compile the first time)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tolerances import assert_close

import fastopt
import fastopt.torch
from fastopt import backends

SIZES = [(1,), (7,), (4097,), (65537,), (1, 7, 4097, 65537)]
DTYPES = ["float32", "float64"]


def adam_rule(p, g, m, v, *, lr, beta1, beta2, eps, step):
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    return (p - lr * (m / (1.0 - beta1**step)) / (math.sqrt(v / (1.0 - beta2**step)) + eps),
            m, v)


def sgd_momentum_rule(p, g, b, *, lr, momentum=0.9, step):
    """SGD with momentum as torch.optim.SGD (dampening 0): the buffer starts as the first
    gradient."""
    b = g if step == 1 else momentum * b + g
    return p - lr * b, b


def sign_rule(p, g, *, lr):
    """signSGD: no state, new p alone."""
    if g > 0:
        return p - lr
    if g < 0:
        return p + lr
    return p


ADAM_DEFAULTS = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
AdamRule = fastopt.optim.from_rule(adam_rule, state=("exp_avg", "exp_avg_sq"),
                                   defaults=ADAM_DEFAULTS, name="AdamRule")
SGDRule = fastopt.optim.from_rule(sgd_momentum_rule, state=("momentum_buffer",),
                                  defaults=dict(lr=0.01))
SignRule = fastopt.optim.from_rule(sign_rule, defaults=dict(lr=1e-3))


def _arrays(sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for n in sizes]


def _trajectory(make, sizes, dtype, steps=5, seed=1):
    """Params after `steps` steps of the optimizer `make(params)` on fixed random grads."""
    params = _arrays(sizes, dtype)
    opt = make(params)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(dtype) for p in params])
    return params, opt


def _assert_all_close(actual, expected, dtype, what):
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_close(a, e, dtype, f"{what}: param {k}")


# --- trajectories --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_adam_rule_equals_builtin_adam(sizes, dtype):
    rule, opt = _trajectory(lambda p: AdamRule(p, lr=0.01), sizes, dtype)
    builtin, ref_opt = _trajectory(lambda p: fastopt.optim.Adam(p, lr=0.01), sizes, dtype)
    _assert_all_close(rule, builtin, dtype, "params")
    for k in range(len(sizes)):
        for key in ("exp_avg", "exp_avg_sq"):
            assert_close(opt.state[0][k][key], ref_opt.state[0][k][key], dtype, key)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_backend_runs_the_rule_and_agrees_with_the_kernel(dtype):
    sizes = SIZES[-1]
    kernel, _ = _trajectory(lambda p: AdamRule(p, lr=0.01, backend="numba"), sizes, dtype, 3)
    ref, _ = _trajectory(lambda p: AdamRule(p, lr=0.01, backend="reference"), sizes, dtype, 3)
    _assert_all_close(kernel, ref, dtype, "numba vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_momentum_rule_equals_builtin_sgd(dtype):
    sizes = SIZES[-1]
    rule, opt = _trajectory(lambda p: SGDRule(p, lr=0.05, momentum=0.8), sizes, dtype)
    builtin, _ = _trajectory(lambda p: fastopt.optim.SGD(p, lr=0.05, momentum=0.8), sizes,
                             dtype)
    _assert_all_close(rule, builtin, dtype, "params")
    assert set(opt.state[0][0]) == {"momentum_buffer"}


def test_rule_without_state_returning_new_p_alone():
    params, _ = _trajectory(lambda p: SignRule(p, lr=0.1), (7, 4097), "float64", 3)
    ref, _ = _trajectory(lambda p: SignRule(p, lr=0.1, backend="reference"), (7, 4097),
                         "float64", 3)
    _assert_all_close(params, ref, "float64", "signSGD")
    start = _arrays((7, 4097), "float64")
    moved = np.abs(params[0] - start[0])  # three steps of +-lr
    assert np.all(np.isclose(moved, 0.1) | np.isclose(moved, 0.3)), moved


def test_frame_l1_and_clipping_apply_to_rules():
    """The frame's options (proximal L1, max_grad_norm) are the same on a rule's kernel as in
    the reference."""
    kw = dict(lr=0.05, momentum=0.5, l1=0.3, l1_mode="proximal", max_grad_norm=1.0)
    kernel, opt = _trajectory(lambda p: SGDRule(p, **kw), (7, 4097), "float64")
    ref, _ = _trajectory(lambda p: SGDRule(p, backend="reference", **kw), (7, 4097), "float64")
    _assert_all_close(kernel, ref, "float64", "l1 + clipping")
    assert opt.grad_norm is not None and (kernel[1] == 0).any()  # soft threshold zeros


def test_group_weight_decay_is_the_rules_own_hyperparameter():
    """A rule owns its math: a hyperparameter named weight_decay is the rule's, not the
    frame's L2."""
    def decay_rule(p, g, *, lr, weight_decay=0.0):
        return p - lr * (g + weight_decay * p * p)

    Decay = fastopt.optim.from_rule(decay_rule, defaults=dict(lr=0.1))
    p = [np.full(3, 2.0)]
    Decay(p, lr=0.1, weight_decay=0.5).step([np.zeros(3)])
    np.testing.assert_allclose(p[0], 2.0 - 0.1 * 0.5 * 4.0)


# --- checkpoints and schedulers ------------------------------------------------------------
def test_state_dict_round_trip():
    params, opt = _trajectory(lambda p: AdamRule(p, lr=0.01), (7, 4097), "float64", 3)
    saved = opt.state_dict()
    assert saved["optimizer"] == "AdamRule"
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    copy = [p.copy() for p in params]
    other = AdamRule(copy, lr=0.5)
    other.load_state_dict(saved)
    assert other.param_groups[0]["lr"] == 0.01
    rng = np.random.default_rng(5)
    for _ in range(2):
        grads = [rng.standard_normal(p.shape) for p in params]
        opt.step(grads)
        other.step([g.copy() for g in grads])
    for a, b in zip(params, copy, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="from a AdamRule optimizer, not sgd_momentum_rule"):
        SGDRule([p.copy() for p in params]).load_state_dict(saved)


# --- errors at definition ------------------------------------------------------------------
def _untypable(p, g, *, lr):
    return p - lr * g * open  # noqa: F821 - a Python object Numba cannot type


def test_rule_numba_cannot_compile_names_the_line():
    line = _untypable.__code__.co_firstlineno + 1
    with pytest.raises(TypeError, match=rf"_untypable: Numba cannot compile it \(at "
                                        rf"test_from_rule.py, line {line}\)"):
        fastopt.optim.from_rule(_untypable, defaults=dict(lr=0.1))


def _two_returns(p, g, m, v, *, lr):
    return p - lr * g, m


def test_wrong_number_of_returns():
    with pytest.raises(TypeError, match=r"returns 2 values, expected 3 \(new p, m, v\)"):
        fastopt.optim.from_rule(_two_returns, state=("m", "v"), defaults=dict(lr=0.1))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(state=("lr",)), ValueError, "'lr' names both a state array and a hyperparameter"),
    (dict(state=("m", "m")), ValueError, "names repeat"),
    (dict(state=("m", "v", "w")), TypeError, "takes 3 positional arguments"),
    (dict(state=("m",), defaults=dict(lr=1.0, beta=0.9)), ValueError,
     r"\['beta'\] are not keyword-only parameters"),
    (dict(state=("m",), defaults=dict(lr="fast")), ValueError, "Invalid lr"),
])
def test_bad_definitions(kwargs, error, match):
    def rule(p, g, m, *, lr, momentum=0.9):
        return p - lr * m, momentum * m + g

    kwargs = {"defaults": dict(lr=0.1), **kwargs}
    with pytest.raises(error, match=match):
        fastopt.optim.from_rule(rule, **kwargs)


def test_bad_hyperparameter_names_and_signatures():
    def reserved(p, g, *, lr, l1):
        return p

    def no_lr(p, g, *, rate):
        return p

    def no_default(p, g, *, lr, beta):
        return p

    def star_args(p, g, *state, lr):
        return p

    for rule, error, match in ((reserved, ValueError, "'l1' is a name fastopt reserves"),
                               (no_lr, ValueError, "takes no lr"),
                               (no_default, ValueError, r"no default for \['beta'\]"),
                               (star_args, TypeError, r"no \*args")):
        with pytest.raises(error, match=match):
            fastopt.optim.from_rule(rule, defaults=dict(lr=0.1))
    with pytest.raises(TypeError, match="expected a Python function"):
        fastopt.optim.from_rule(math.sqrt)


# --- bad inputs: as for the built-in optimizers --------------------------------------------
def _error(fn):
    try:
        fn()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    raise AssertionError("no error raised")


@pytest.mark.parametrize("case", ["grad dtype", "grad shape", "read-only param",
                                  "read-only grad with grad_scale", "grad count"])
def test_bad_inputs_raise_as_for_builtins(case):
    def attempt(cls):
        params = _arrays((3, 5), "float32")
        grads = [np.ones_like(p) for p in params]
        if case == "read-only param":
            params[1].flags.writeable = False
            return _error(lambda: cls(params))
        opt = cls(params)
        kw = {}
        if case == "grad dtype":
            grads[1] = grads[1].astype(np.float64)
        elif case == "grad shape":
            grads[1] = np.ones(4, np.float32)
        elif case == "grad count":
            grads = grads[:1]
        else:
            grads[0].flags.writeable = False
            kw = dict(grad_scale=2.0)
        return _error(lambda: opt.step(grads, **kw))

    rule_error = attempt(AdamRule)
    assert rule_error == attempt(fastopt.optim.Adam), rule_error


def test_dtypes_the_kernels_do_not_take_are_refused_by_name():
    with pytest.raises(TypeError, match=r"param\[1\].*float16.*float32, float64"):
        AdamRule([np.zeros(3, np.float32), np.zeros(3, np.float16)])


def test_cpu_backend_refuses_rule_optimizers(monkeypatch):
    params = _arrays((3,), "float32")
    with pytest.raises(backends.BackendUnavailable, match="built-in optimizers only"):
        AdamRule(params, backend="cpu").step([np.ones(3, np.float32)])
    np.testing.assert_array_equal(params[0], _arrays((3,), "float32")[0])
    # a FASTOPT_BACKEND meant for the built-in optimizers is passed over
    monkeypatch.setenv("FASTOPT_BACKEND", "cpu")
    AdamRule(params).step([np.ones(3, np.float32)])
    assert not np.array_equal(params[0], _arrays((3,), "float32")[0])


# --- fastopt.torch -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_class_equals_torch_adam_with_a_scheduler(dtype):
    torch = pytest.importorskip("torch")
    TorchAdamRule = fastopt.torch.from_rule(adam_rule, state=("exp_avg", "exp_avg_sq"),
                                            defaults=ADAM_DEFAULTS, name="AdamRule")
    dt = getattr(torch, dtype)
    ours = [torch.tensor(a, dtype=dt, requires_grad=True) for a in _arrays(SIZES[-1], dtype)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = TorchAdamRule(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01)
    scheds = [torch.optim.lr_scheduler.StepLR(o, 2, 0.5) for o in (a, b)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        for p, q in zip(ours, theirs, strict=True):
            g = torch.randn(p.shape, generator=gen, dtype=dt)
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
        for s in scheds:
            s.step()
    for p, q in zip(ours, theirs, strict=True):
        assert_close(p.detach().numpy(), q.detach().numpy(), dtype, "params")
        for key in ("exp_avg", "exp_avg_sq"):
            assert_close(a.state[p][key].numpy(), b.state[q][key].numpy(), dtype, key)
    assert float(a.state[ours[0]]["step"]) == 5
    assert a.param_groups[0]["lr"] == b.param_groups[0]["lr"] == 0.0025
    assert isinstance(a, torch.optim.Optimizer)


# --- compiled code cached on disk ----------------------------------------------------------
_CACHE_PROBE = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import fastopt
from fastopt.backends import _numba_common, _numba_cpu, numba as backend
from my_rule import momentum_rule

Cls = fastopt.optim.from_rule(momentum_rule, state=("buf",), defaults=dict(lr=0.1))
for dtype in ("float32", "float64"):
    p = [np.ones(5, dtype)]
    Cls(p).step([np.ones(5, dtype)])
user = _numba_common._DECORATED[(id(_numba_cpu.scalar), Cls.spec.helpers[0][1])].stats
kernel = backend._get()[Cls.spec.name].stats
print(json.dumps({name: [sum(s.cache_hits.values()), sum(s.cache_misses.values())]
                  for name, s in (("rule", user), ("kernel", kernel))}))
"""


def test_a_second_process_loads_the_rule_and_its_kernel_from_the_disk_cache(tmp_path):
    (tmp_path / "my_rule.py").write_text(textwrap.dedent("""
        def momentum_rule(p, g, buf, *, lr, step):
            buf = 0.5 * buf + g
            return p - lr * buf / step, buf
    """))
    env = dict(os.environ, FASTOPT_CACHE_DIR=str(tmp_path / "cache"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run():
        out = subprocess.run([sys.executable, "-c", _CACHE_PROBE, str(tmp_path)], env=env,
                             cwd=root, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.splitlines()[-1])

    first = run()
    # compiled and saved: the rule for float64 (at definition) and float32 (in its kernel)
    assert first == {"rule": [0, 2], "kernel": [0, 2]}, first
    assert run() == {"rule": [1, 0], "kernel": [2, 0]}  # loaded: nothing compiled
    assert list((tmp_path / "cache" / "rules").glob("rule_momentum_rule_*.py"))


# --- Numba-CUDA: the same driver template ---------------------------------------------------
def test_rule_kernel_compiles_to_ptx_for_sm90():
    pytest.importorskip("numba.cuda")
    from numba import cuda
    from numba.cuda import types

    if cuda.config.ENABLE_CUDASIM:
        pytest.skip("the simulator does not compile")
    from fastopt.backends import _numba_cuda

    spec = AdamRule.spec
    i64 = types.int64[::1]
    for storage in (types.float32, types.float64):
        scalars = types.UniTuple(storage, len(fastopt.ops.HEAD) + len(spec.scalars_order))
        try:
            ptx, _ = cuda.compile_ptx(_numba_cuda.optimizer_kernel(spec).py_func,
                                      (i64, i64, i64, storage[::1], scalars), cc=(9, 0))
        except Exception as exc:  # NVVM missing: a packaging problem of the environment
            if "NVVM" in str(exc) or "libnvvm" in str(exc):
                pytest.skip(f"NVVM unavailable: {exc}")
            raise
        assert ".target sm_90" in ptx and ".entry" in ptx


_SIM_CHECK = """
import os, sys
os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
sys.path.insert(0, sys.argv[1])
import numpy as np
import fastopt
from tolerances import assert_close
from test_from_rule import ADAM_DEFAULTS, adam_rule


class SimArray:  # a host array presented as CUDA memory (the simulator's is host memory)
    def __init__(self, host):
        self.host = host

    @property
    def __cuda_array_interface__(self):
        a = self.host
        return {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
                "version": 3, "strides": None, "stream": None}


from fastopt import functional as F

Cls = fastopt.optim.from_rule(adam_rule, state=("exp_avg", "exp_avg_sq"),
                              defaults=ADAM_DEFAULTS)
spec = Cls.spec
group = {**spec.defaults, "lr": 0.01}
rng = np.random.default_rng(0)
for dtype in ("float32", "float64"):
    host = [rng.standard_normal(n).astype(dtype) for n in (1, 7, 300)]
    state = {s: [np.zeros_like(h) for h in host] for s in ("exp_avg", "exp_avg_sq")}
    copies = [h.copy() for h in host]
    ref = Cls(copies, lr=0.01, backend="reference")
    for step in (1, 2):
        grads = [rng.standard_normal(h.shape).astype(dtype) for h in host]
        arrays = {"param": [SimArray(h) for h in host], "grad": [SimArray(g) for g in grads],
                  **{s: [SimArray(a) for a in rows] for s, rows in state.items()}}
        F.run(spec.name, F.tables_for(spec.name, arrays), "numba_cuda",
              spec.prepare(group, float(step)))
        ref.step(grads)
    for a, b in zip(host, copies):
        assert_close(a, b, dtype, "numba_cuda (simulator) vs reference")
print("ok")
"""


def test_numba_cuda_runs_the_rule_in_the_simulator(tmp_path):
    """The Numba-CUDA driver around a rule, in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM
    must be set before numba is imported: a fresh interpreter), against the reference."""
    pytest.importorskip("numba.cuda")
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FASTOPT_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _SIM_CHECK, here], env=env,
                         cwd=os.path.dirname(here), capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr


def test_grad_scale_unscales_before_the_rule():
    scaled, _ = _trajectory(lambda p: SGDRule(p, lr=0.1), (7,), "float64", 1)
    params = _arrays((7,), "float64")
    opt = SGDRule(params, lr=0.1)
    grads = [np.random.default_rng(1).standard_normal(7) * 4.0]
    opt.step(grads, grad_scale=4.0)
    np.testing.assert_allclose(params[0], scaled[0], rtol=1e-15)
    opt.step([np.full(7, np.nan)], found_inf=1.0)  # skipped: nothing changes
    np.testing.assert_allclose(params[0], scaled[0], rtol=1e-15)
