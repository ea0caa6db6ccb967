"""pytest-benchmark suite: `pytest benchmarks --benchmark-only` times every op on every
variant (fastopt backends, torch fused/foreach, the bandwidth probe `limit`) with the same
set-up and helpers as `fastopt bench`; GB/s from the counted bytes lands in extra_info.

With --benchmark-disable (CI's smoke run), --quick or FASTOPT_BENCH_QUICK=1, sizes shrink to
a few thousand elements so the whole suite takes seconds.
"""

from __future__ import annotations

import os

import pytest

from fastopt.bench import LIMIT, REFERENCE_MAX, REFERENCE_MAX_TENSORS
from fastopt.bench.ops import REGISTRY, TORCH_VARIANTS, Case, Unavailable
from fastopt.bench.probe import Probe
from fastopt.bench.timing import calibrate

FULL_SIZES = (1 << 20, 1 << 24)
QUICK_SIZES = (4096,)
#: many-small-tensors mode: (tensors, elements each)
FULL_MANY = (20_000, 256)
QUICK_MANY = (64, 256)
VARIANTS = ("cpu", "reference", *TORCH_VARIANTS, LIMIT)


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="fastopt benchmarks: tiny sizes (a smoke run)")


def pytest_collect_file(file_path, parent):
    # a file named on the command line is collected by pytest itself
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _quick(config) -> bool:
    return bool(config.getoption("--quick") or config.getoption("benchmark_disable", False)
                or os.environ.get("FASTOPT_BENCH_QUICK"))


def pytest_generate_tests(metafunc):
    quick = _quick(metafunc.config)
    if "size" in metafunc.fixturenames:
        metafunc.parametrize("size", QUICK_SIZES if quick else FULL_SIZES,
                             ids=lambda n: f"{n}")
    if "many" in metafunc.fixturenames:
        metafunc.parametrize("many", [QUICK_MANY if quick else FULL_MANY],
                             ids=lambda m: f"{m[0]}x{m[1]}")
    if "variant" in metafunc.fixturenames:
        metafunc.parametrize("variant", VARIANTS)


def run_case(benchmark, op: str, variant: str, size: int, tensors: int = 1,
             dtype: str = "float32", rounds: int = 7) -> None:
    """Time one variant of one case; skips (with the reason) what cannot run here."""
    case = Case(op, dtype, size, tensors)
    spec = REGISTRY[op]
    if variant == "reference" and (case.numel > REFERENCE_MAX
                                   or tensors > REFERENCE_MAX_TENSORS):
        pytest.skip("the NumPy reference is timed only on small cases")
    if variant in TORCH_VARIANTS and variant not in spec.torch:
        pytest.skip(f"torch has no {variant} {op}")
    if variant == LIMIT:
        fn = Probe(spec.streams, size * case.itemsize, tensors)
    else:
        try:
            fn = spec.setup(case, variant)
        except Unavailable as exc:
            pytest.skip(str(exc))
    benchmark.group = f"{op} {dtype} {tensors}x{size}" if tensors > 1 else f"{op} {dtype} {size}"
    nbytes = fn.nbytes if variant == LIMIT else spec.nbytes(case)
    benchmark.extra_info["bytes"] = nbytes
    if benchmark.disabled:
        benchmark(fn)
        return
    fn()
    benchmark.pedantic(fn, iterations=calibrate(fn), rounds=rounds, warmup_rounds=1)
    benchmark.extra_info["GB/s"] = round(nbytes / benchmark.stats.stats.median / 1e9, 2)
