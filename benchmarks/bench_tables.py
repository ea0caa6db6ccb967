"""The cost of the pointer-table invariant (fastopt/_table.py): every step re-reads params,
state and grads before a cached table reaches a kernel. Side by side in one run, for NumPy
arrays and torch tensors, 20,000 tensors of 256 float32 elements, Adam (4 rows):

- `revalidate`: TableCache.tables() alone on the current arrays (what the invariant costs);
- `bump`: the autograd version bump of the written torch tensors after the kernel;
- `kernel`: the C++ Adam kernel alone on the same table;
- `step`: fastopt.optim.Adam.step (everything).

`pytest benchmarks/bench_tables.py --benchmark-only --benchmark-group-by=param:kind`;
--benchmark-disable or FASTOPT_BENCH_QUICK=1 shrinks it to a smoke run.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import fastopt
from fastopt import functional as F
from fastopt import ops
from fastopt.backends import resolve
from fastopt.optim import Adam

#: the scalars of Adam's second step at its defaults (lr=1e-3, betas=(0.9, 0.999), ...)
SCALARS = ops.get("adam").prepare(ops.get("adam").defaults, step=2.0)


def _n(config) -> int:
    quick = config.getoption("benchmark_disable", False) or os.environ.get(
        "FASTOPT_BENCH_QUICK")
    return 64 if quick else 20_000


def _arrays(kind: str, n: int):
    rng = np.random.default_rng(0)
    made = [rng.random(256, dtype=np.float32) for _ in range(4 * n)]
    if kind == "torch":
        torch = pytest.importorskip("torch")
        made = [torch.from_numpy(a) for a in made]
    return made[:n], made[n:2 * n], made[2 * n:3 * n], made[3 * n:]


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("part", ["revalidate", "bump", "kernel", "step"])
def test_table_invariant_cost(benchmark, request, kind, part):
    fastopt.set_num_threads(2)
    n = _n(request.config)
    p, g, m, v = _arrays(kind, n)
    benchmark.extra_info.update(tensors=n, elements=256)
    if part == "step":
        opt = Adam(p, lr=1e-3)
        opt.step(g)
        benchmark(opt.step, g)
        return
    cache = F.table_cache("adam")
    arrays = {"param": p, "grad": g, "exp_avg": m, "exp_avg_sq": v}
    (table,) = cache.tables(arrays)
    if part == "revalidate":
        benchmark(cache.tables, arrays)
        assert cache.builds == 1
    elif part == "bump":
        benchmark(table.bump_versions)
    else:
        backend = resolve(None, "cpu")
        benchmark(backend.step, "adam", table, SCALARS)
