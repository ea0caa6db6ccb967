"""fastopt.torch optimizers under torch.distributed: DistributedDataParallel, and ZeRO stage 1
through torch.distributed.optim.ZeroRedundancyOptimizer. Two processes on this machine (gloo,
loopback only) train with fastopt.torch.AdamW; their parameters must equal single-process
training with torch.optim.AdamW. The workers import the fastopt this process imports (the
installed package, or this checkout when run from it) and report the backend they ran."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import fastopt

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)
# two fresh interpreters importing torch and training twice: tens of seconds
pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
#: the folder holding the fastopt package imported here, first on the workers' path
PACKAGE_ROOT = Path(fastopt.__file__).resolve().parents[1]
WORLD = 2
STEPS = 6
BATCH = 8  # global batch, split evenly across ranks
TIMEOUT_S = 240


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3),
                               torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()


def _batch(step):
    g = torch.Generator().manual_seed(100 + step)
    return (torch.randn(BATCH, 5, generator=g, dtype=torch.float64),
            torch.randn(BATCH, 1, generator=g, dtype=torch.float64))


def _opt_kwargs():
    return dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)


def _train(model, opt, rank, world):
    lo, hi = rank * BATCH // world, (rank + 1) * BATCH // world
    for step in range(STEPS):
        x, y = _batch(step)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x[lo:hi]), y[lo:hi]).backward()
        opt.step()


def _worker(rank, port, out):
    import datetime

    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    import fastopt
    import fastopt.torch as fo

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    # what the optimizers' automatic backend choice picks in this worker, and from where
    result = {"backend": fastopt.backends.resolve(None, "cpu").name,
              "package": str(Path(fastopt.__file__).resolve())}
    # DDP: gradients averaged across ranks, every rank steps all params with fastopt
    ddp = DDP(_model())
    _train(ddp, fo.AdamW(ddp.parameters(), **_opt_kwargs()), rank, WORLD)
    result["ddp"] = [p.detach().clone() for p in ddp.module.parameters()]
    # ZeRO-1: each rank keeps state for, and steps, only its shard, then params are synced
    ddp = DDP(_model())
    zero = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=fo.AdamW,
                                   **_opt_kwargs())
    assert isinstance(zero.optim, fo.AdamW)
    _train(ddp, zero, rank, WORLD)
    result["zero"] = [p.detach().clone() for p in ddp.module.parameters()]
    result["zero_local"] = [int(p.numel()) for g in zero.optim.param_groups for p in g["params"]]
    result["zero_state"] = [sorted(s) for s in zero.optim.state.values()]
    zero.consolidate_state_dict(to=0)
    if rank == 0:
        sd = zero.state_dict()
        result["zero_sd_keys"] = sorted({k for s in sd["state"].values() for k in s})
        result["zero_sd_count"] = len(sd["state"])
    torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    port = _free_port()
    path = [str(PACKAGE_ROOT), str(HERE), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(port), str(tmp / f"{r}.pt")],
                              env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for r in range(WORLD)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, (p, log) in enumerate(zip(procs, logs, strict=False)):
        assert p.returncode == 0, f"rank {r} failed:\n{log}"
    return [torch.load(tmp / f"{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single_process():
    model = _model()
    _train(model, torch.optim.AdamW(model.parameters(), **_opt_kwargs()), 0, 1)
    return [p.detach() for p in model.parameters()]


def test_workers_run_this_fastopt_and_its_cpu_kernels(results):
    # 'cpu' (the C++ kernels) whenever they are built, unless FASTOPT_BACKEND says otherwise
    expected = fastopt.backends.resolve(None, "cpu").name
    for rank, res in enumerate(results):
        assert res["package"] == str(Path(fastopt.__file__).resolve()), rank
        assert res["backend"] == expected, f"rank {rank} ran {res['backend']}, not {expected}"


def _assert_params(actual, expected, what):
    from tolerances import assert_close

    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_close(a.numpy(), e.numpy(), "float64", f"{what} param {i}")


def test_ddp_matches_single_process(results, single_process):
    for rank, res in enumerate(results):
        _assert_params(res["ddp"], single_process, f"DDP rank {rank}")


def test_zero_redundancy_optimizer_matches_single_process(results, single_process):
    total = sum(p.numel() for p in single_process)
    for rank, res in enumerate(results):
        _assert_params(res["zero"], single_process, f"ZeRO rank {rank}")
        # each rank's fastopt optimizer owns a strict part of the params and their state
        assert 0 < sum(res["zero_local"]) < total
        assert res["zero_state"] and all(s == ["exp_avg", "exp_avg_sq", "step"]
                                         for s in res["zero_state"])
    assert sum(sum(r["zero_local"]) for r in results) == total
    assert results[0]["zero_sd_keys"] == ["exp_avg", "exp_avg_sq", "step"]
    assert results[0]["zero_sd_count"] == len(single_process)


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
