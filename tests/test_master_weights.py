"""master_weights=True: a float32 master copy of every float16 and bfloat16 param, kept in the
state (key "master_param"), stepped in the param's place; the param is stored as the master's
value rounded to nearest (apex FusedAdam's master_weights).

- every optimizer class on bf16/fp16 params with master weights: the C++ kernels against the
  reference backend (master, params and state), 10 steps, mixed shapes, float32 params in the
  same group (which keep no master);
- the master follows the float32 trajectory: with float32 state and the same grads, within
  float32 rounding of torch.optim.AdamW(fused=True) stepping float32 params; without a master
  the 16-bit params stray far further;
- the param is always the master rounded to nearest, bit for bit;
- checkpoints keep the master exactly (torch.optim's load casts state to the param dtype);
- refusals: master arrays of the wrong dtype or for non-16-bit params, stochastic rounding
  together with master weights, backends without master weights.
"""

from __future__ import annotations

import numpy as np
import pytest
from optim_db import DB
from tolerances import assert_close
from trajectories import compare, initial_params, optim_run

import fastopt
import fastopt.functional as F
from fastopt import backends

ml_dtypes = pytest.importorskip("ml_dtypes")

MIXED = [(1,), (7,), (4097,), (16385,), (3, 5), (33, 17)]
DTYPES16 = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}


@pytest.fixture(autouse=True)
def _cpu_kernels():
    ok, why = backends.get("cpu").available()
    if not ok:
        pytest.skip(f"the C++ CPU kernels are not built: {why}")


@pytest.mark.parametrize("dtype", sorted(DTYPES16))
@pytest.mark.parametrize("entry", DB, ids=lambda e: e.name)
def test_optim_classes_with_master_weights_match_reference(entry, dtype):
    options = {**entry.full, "master_weights": True}
    if options.get("stochastic_rounding"):
        pytest.skip("stochastic rounding excludes master weights")
    dt = DTYPES16[dtype]
    got = optim_run(entry.optim_class, options, "cpu", dt, MIXED, steps=10)
    want = optim_run(entry.optim_class, options, "reference", dt, MIXED, steps=10)
    for k, st in got.state.items():
        master = st["master_param"]
        assert master.dtype == np.float32
        # the param is its master rounded to nearest, bit for bit
        np.testing.assert_array_equal(got.params[k], master.astype(dt))
    compare(got, want, dtype, f"{entry.name} {dtype} master weights")


def _grads(shapes, steps, seed=1):
    """Gradients exact in bfloat16 (and so in float16's range here), for runs in either."""
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(s) * 0.1).astype(ml_dtypes.bfloat16).astype(np.float32)
             for s in shapes] for _ in range(steps)]


@pytest.mark.parametrize("dtype", sorted(DTYPES16))
def test_master_follows_the_float32_trajectory(dtype):
    """bf16/fp16 params with master weights and float32 state step as float32 params would:
    the master stays within float32 rounding of torch's fused float32 AdamW over 50 steps,
    where the 16-bit params without a master stray by many 16-bit ulps."""
    torch = pytest.importorskip("torch")
    dt = DTYPES16[dtype]
    shapes = [(7,), (4097,), (33, 17)]
    init = [p.astype(dt).astype(np.float32) for p in initial_params(shapes, np.float32)]
    grads = _grads(shapes, 50)
    runs = {}
    for name, kw in (("master", dict(master_weights=True, state_dtype="float32")),
                     ("plain", {})):
        params = [p.astype(dt) for p in init]
        opt = fastopt.optim.AdamW(params, lr=1e-3, **kw)
        for g in grads:
            opt.step([x.astype(dt) for x in g])
        runs[name] = (params, opt)
    tparams = [torch.tensor(p, requires_grad=True) for p in init]
    topt = torch.optim.AdamW(tparams, lr=1e-3, fused=True)
    for g in grads:
        for p, x in zip(tparams, g, strict=True):
            p.grad = torch.tensor(x)
        topt.step()
    params, opt = runs["master"]
    for k, tp in enumerate(tparams):
        want = tp.detach().numpy()
        assert_close(opt.state[0][k]["master_param"], want, "float32", f"master {k}")
        stray = np.max(np.abs(runs["plain"][0][k].astype(np.float64) - want))
        near = np.max(np.abs(opt.state[0][k]["master_param"].astype(np.float64) - want))
        assert near * 100 < stray, (k, near, stray)


def test_functional_master_params():
    """functional.<op>_(..., master_params=[...]): a float32 master for each 16-bit param,
    None for the others in the same call."""
    bf = DTYPES16["bfloat16"]
    rng = np.random.default_rng(0)
    base = [rng.standard_normal(n).astype(np.float32) for n in (1, 7, 4097, 65537)]
    params = [base[0].astype(bf), base[1], base[2].astype(bf), base[3].astype(bf)]
    masters = [base[0].astype(bf).astype(np.float32), None,
               base[2].astype(bf).astype(np.float32), base[3].astype(bf).astype(np.float32)]
    bufs = [np.zeros_like(p) for p in params]
    ref = [[None if a is None else a.copy() for a in row] for row in (params, masters, bufs)]
    for step in range(1, 6):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        F.sgd_(params, grads, bufs, step=step, lr=0.1, momentum=0.9, first_step=step == 1,
               master_params=masters, backend="cpu")
        F.sgd_(ref[0], [g.copy() for g in grads], ref[2], step=step, lr=0.1, momentum=0.9,
               first_step=step == 1, master_params=ref[1], backend="reference")
    for k in (0, 2, 3):
        assert_close(masters[k], ref[1][k], "bfloat16", f"master {k}")
        np.testing.assert_array_equal(params[k], masters[k].astype(bf))
    assert_close(params[1], ref[0][1], "float32")


def test_bad_master_arrays_are_refused_before_anything_is_written():
    bf = DTYPES16["bfloat16"]
    p = [np.ones(4, bf), np.ones(4, np.float32)]
    g = [np.ones(4, bf), np.ones(4, np.float32)]
    bufs = [np.zeros(4, bf), np.zeros(4, np.float32)]
    cases = [([np.ones(4, np.float32), np.ones(4, np.float32)], "param\\[1\\] is float32"),
             ([None, None], "param\\[0\\] is bfloat16, master_param\\[0\\] is None"),
             ([np.ones(4, np.float64), None], "master_param\\[0\\]: dtype float64"),
             ([np.ones(5, np.float32), None], "master_param\\[0\\]: shape")]
    for masters, match in cases:
        with pytest.raises((TypeError, ValueError), match=match):
            F.sgd_(p, g, bufs, step=1, lr=0.1, momentum=0.9, master_params=masters)
    shared = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        F.sgd_([p[0], np.ones(4, bf)], [g[0], np.ones(4, bf)], [bufs[0], np.zeros(4, bf)],
               step=1, lr=0.1, momentum=0.9, master_params=[shared[:4], shared[2:6]])
    assert all(np.all(x == 1) for x in p)


def test_master_weights_refusals():
    bf = DTYPES16["bfloat16"]
    with pytest.raises(ValueError, match="master_weights and stochastic_rounding"):
        fastopt.optim.AdamW([np.ones(4, bf)], master_weights=True, stochastic_rounding=True)
    with pytest.raises(ValueError, match="master_weights"):
        fastopt.optim.AdamW([np.ones(4, bf)], master_weights="yes")
    pytest.importorskip("numba")
    p = [np.ones(4, np.float32)]
    opt = fastopt.optim.AdamW(p, master_weights=True, backend="numba")
    opt.step([np.ones(4, np.float32)])  # float32 params keep no master: numba steps them
    assert "master_param" not in opt.state[0][0]


def test_master_weights_checkpoint_round_trip_and_late_switch():
    """state_dict carries the master exactly; a checkpoint without one (or a group switched to
    master_weights later) starts the master from the param."""
    bf = DTYPES16["bfloat16"]
    params = [p.astype(bf) for p in initial_params(MIXED, np.float32)]
    grads = [[x.astype(bf) for x in g] for g in _grads(MIXED, 4)]
    opt = fastopt.optim.AdamW([p.copy() for p in params], master_weights=True)
    for g in grads[:2]:
        opt.step(g)
    resumed = fastopt.optim.AdamW([p.copy() for p in opt.param_groups[0]["params"]],
                                  master_weights=True)
    resumed.load_state_dict(opt.state_dict())
    for k in range(len(MIXED)):
        np.testing.assert_array_equal(resumed.state[0][k]["master_param"],
                                      opt.state[0][k]["master_param"])
    for g in grads[2:]:
        opt.step(g)
        resumed.step(g)
    for a, b in zip(resumed.param_groups[0]["params"], opt.param_groups[0]["params"],
                    strict=True):
        np.testing.assert_array_equal(a, b)
    late = fastopt.optim.AdamW([p.copy() for p in params])
    late.step(grads[0])
    late.param_groups[0]["master_weights"] = True
    late.step(grads[1])
    for k, p in enumerate(late.param_groups[0]["params"]):
        np.testing.assert_array_equal(p, late.state[0][k]["master_param"].astype(bf))


def test_fastopt_torch_master_weights_and_checkpoint():
    torch = pytest.importorskip("torch")
    import fastopt.torch as fo

    shapes = [(7,), (4097,), (33, 17)]
    init = [torch.tensor(p) for p in initial_params(shapes, np.float32)]
    params = [p.to(torch.bfloat16).requires_grad_() for p in init] + \
        [init[0].clone().requires_grad_()]  # a float32 param in the group keeps no master
    opt = fo.AdamW(params, lr=1e-2, master_weights=True)
    twin = fastopt.optim.AdamW([p.detach().float().numpy().astype(ml_dtypes.bfloat16)
                                for p in params[:3]] + [init[0].numpy().copy()],
                               lr=1e-2, master_weights=True)
    for g in _grads([*shapes, (7,)], 5):
        for p, x in zip(params, g, strict=True):
            p.grad = torch.tensor(x).to(p.dtype)
        opt.step()
        twin.step([x.astype(ml_dtypes.bfloat16) for x in g[:3]] + [g[3]])
    assert "master_param" not in opt.state[params[3]]
    for k, p in enumerate(params[:3]):
        master = opt.state[p]["master_param"]
        assert master.dtype == torch.float32
        np.testing.assert_array_equal(master.numpy(), twin.state[0][k]["master_param"])
        assert torch.equal(p.detach(), master.to(torch.bfloat16))
    copy = fo.AdamW([p.detach().clone().requires_grad_() for p in params], lr=1e-2,
                    master_weights=True)
    copy.load_state_dict(opt.state_dict())  # torch would cast the master to bfloat16
    for p, q in zip(copy.param_groups[0]["params"][:3], params[:3], strict=True):
        assert torch.equal(copy.state[p]["master_param"], opt.state[q]["master_param"])
    with pytest.raises(ValueError, match="master_weights"):
        fo.AdamW(params, master_weights=True, stochastic_rounding=True)
