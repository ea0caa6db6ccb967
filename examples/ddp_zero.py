"""Data-parallel training with a fastopt optimizer on torch.distributed: DDP averages the
gradients, and ZeRO stage 1 (torch's ZeroRedundancyOptimizer) shards the optimizer state, so
each rank steps only its shard of the parameters with fastopt's fused AdamW kernel.

    torchrun --nproc-per-node 2 examples/ddp_zero.py --steps 20
    PYTHONPATH=. torchrun --nproc-per-node 2 examples/ddp_zero.py   # from a source checkout

gloo on CPU (NCCL when CUDA is available and --backend nccl is given).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP

import fastopt.torch as fo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64, help="global batch size")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--backend", default="gloo")
    ap.add_argument("--no-zero", action="store_true", help="plain DDP: every rank steps all")
    args = ap.parse_args()

    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) \
        if args.backend == "nccl" else torch.device("cpu")

    torch.manual_seed(0)  # same initial weights on every rank
    model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.GELU(),
                                torch.nn.Linear(256, 256), torch.nn.GELU(),
                                torch.nn.Linear(256, 10)).to(device)
    model = DDP(model)
    if args.no_zero:
        opt = fo.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    else:
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=fo.AdamW,
                                      lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)

    gen = torch.Generator().manual_seed(1234 + rank)  # each rank draws its own data shard
    local = args.batch // world
    for step in range(args.steps):
        x = torch.randn(local, 32, generator=gen).to(device)
        y = torch.randint(0, 10, (local,), generator=gen).to(device)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)  # SUM: gloo has no AVG
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {mean.item() / world:.4f}  "
                  f"lr {sched.get_last_lr()[0]:.2e}", flush=True)

    # every rank holds the same parameters; the optimizer state is sharded under ZeRO
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, 0)
    assert torch.equal(flat, ref), "ranks disagree on the parameters"
    if not args.no_zero:
        mine = sum(p.numel() for g in opt.optim.param_groups for p in g["params"])
        print(f"rank {rank}: steps {mine} of {flat.numel()} parameters", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
