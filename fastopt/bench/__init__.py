"""`fastopt bench`: fused-kernel microbenchmarks against torch, the NumPy reference and the
machine's own limit.

Every case (op, dtype, size, number of tensors) times each fastopt backend, torch's fused and
foreach implementations and a one-pass bandwidth probe shaped like the op (fastopt.bench.probe)
in interleaved rounds, and reports medians, GB/s from the op's counted bytes (the performance
model of docs/architecture.md), the percentage of the probe's bandwidth, and speedups. The load
average is recorded at the start and end of a run: on a busy machine (load above the core
count) every process gets a fraction of a core and the absolute numbers mean little.

    from fastopt.bench import Case, run
    report = run([Case("adamw", "float32", 1 << 20)])
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .ops import (
    REGISTRY,
    TORCH_AUTOGRAD,
    TORCH_FOREACH,
    TORCH_FUSED,
    TORCH_VARIANTS,
    Case,
    Op,
    Unavailable,
)
from .probe import Probe, Streams
from .timing import gbps, interleaved

#: Variant name of the bandwidth probe in results.
LIMIT = "limit"
#: The NumPy reference runs only up to this many elements by default: it is slow.
REFERENCE_MAX = 1 << 20
#: ... and over at most this many tensors (it loops over them in Python).
REFERENCE_MAX_TENSORS = 256

DEFAULT_CASES = (
    Case("adamw", "float32", 1 << 20), Case("adamw", "float32", 1 << 24),
    Case("sgd_momentum", "float32", 1 << 20), Case("sgd_momentum", "float32", 1 << 24),
    Case("adam", "float32", 256, 20_000),
)


@dataclass
class Row:
    """One variant of one case."""

    op: str
    backend: str
    dtype: str
    size: int
    tensors: int
    nbytes: int
    samples: list[float]
    number: int
    first_call_s: float
    median_s: float
    gbps: float
    pct_limit: float = math.nan
    speedup: dict[str, float] = field(default_factory=dict)  # vs torch-fused, ..., reference
    gflops: float = math.nan  # for ops that count their flops (linear_cross_entropy)

    @property
    def key(self) -> tuple:
        return (self.op, self.backend, self.dtype, self.size, self.tensors)


@dataclass
class Report:
    rows: list[Row]
    unavailable: dict[str, str]  # backend (or "<backend> <op>") -> why it did not run
    meta: dict[str, Any]
    compile_times: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """A report saved with to_json() (`fastopt bench --json`)."""
        names = set(Row.__dataclass_fields__)
        rows = [Row(**{k: v for k, v in r.items() if k in names}) for r in data["results"]]
        meta = {k: v for k, v in data.items()
                if k not in ("schema", "unavailable", "compile_times", "results")}
        return cls(rows, dict(data.get("unavailable", {})), meta,
                   dict(data.get("compile_times", {})))

    def to_json(self) -> dict[str, Any]:
        return {"schema": 1, **self.meta, "unavailable": self.unavailable,
                "compile_times": self.compile_times, "results": [asdict(r) for r in self.rows]}


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, ISA flags: enough to name the machine a result came from."""
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count(), "cpu": platform.processor() or None}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["simd"] = sorted(f for f in flags if f.startswith(("avx", "sse4", "fma")))
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["memory_gib"] = round(int(mem[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    return info


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS keeps none, e.g. Windows)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def busy_warning(load: Sequence[float] | None, cores: int | None, when: str) -> str | None:
    """A warning when the last minute's load is above the core count: more runnable processes
    than cores, so each timed process gets a fraction of one and waits for the rest."""
    if not load or not cores or load[0] <= cores:
        return None
    return (f"warning: the machine is busy {when} (load average {load[0]:.2f} over the last "
            f"minute, {cores} cores): times are slow and noisy; the interleaved ratios are "
            "fairer than the absolute numbers, but re-run on an idle machine before relying "
            "on them")


def versions() -> dict[str, str | None]:
    import numpy

    from .. import __version__

    out: dict[str, str | None] = {"fastopt": __version__, "python": sys.version.split()[0],
                                  "numpy": numpy.__version__}
    for mod in ("torch", "numba"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def git_commit() -> str | None:
    """The commit of the fastopt checkout being benchmarked (None for an installed package)."""
    here = Path(__file__).resolve().parent.parent
    if not (here.parent / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(here.parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(here.parent), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def fastopt_backends() -> list[tuple[str, bool, str, tuple[str, ...]]]:
    """(name, available, why, devices) of every registered fastopt backend."""
    from .. import backends

    return [(name, ok, why, tuple(devices)) for name, devices, ok, why in backends.status()]


def run(cases: Sequence[Case], backends: Sequence[str] | None = None, *, repeat: int = 7,
        warmup: int = 2, reference_max: int = REFERENCE_MAX,
        progress: Any = None) -> Report:
    """Measure every case on the given backends (fastopt backend names and 'torch'; default
    all of them). `progress` is a tqdm-like object; it advances by one per round (one sample
    of every variant), `repeat` rounds per case."""
    status = fastopt_backends()
    known = {name for name, *_ in status}
    wanted = list(backends) if backends is not None else [*known, "torch"]
    unavailable: dict[str, str] = {}
    usable: list[str] = []
    for name, ok, why, devices in status:
        if name not in wanted:
            continue
        if not ok:
            unavailable[name] = why
        elif "cpu" not in devices:
            unavailable[name] = (f"runs on {', '.join(devices)} arrays; fastopt bench times "
                                 "CPU arrays")
        else:
            usable.append(name)
    use_torch = "torch" in wanted
    if use_torch:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            unavailable["torch"] = (f"not installed ({exc}): no torch-fused or torch-foreach "
                                    "rows; pip install torch (the CPU build: --index-url "
                                    "https://download.pytorch.org/whl/cpu)")
            use_torch = False
    rows: list[Row] = []
    for case in cases:
        op = REGISTRY[case.op]
        variants: dict[str, Callable[[], object]] = {}
        for b in usable:
            if b == "reference" and (case.numel > reference_max
                                     or case.tensors > REFERENCE_MAX_TENSORS):
                continue
            try:
                variants[b] = op.setup(case, b)
            except Unavailable as exc:
                unavailable[f"{b} {case.op} {case.dtype}"] = str(exc)
        if use_torch:
            for v in TORCH_VARIANTS:
                if v not in op.torch:
                    # a loss compares with torch's autograd only: no fused/foreach to list
                    if v != TORCH_AUTOGRAD and TORCH_AUTOGRAD not in op.torch:
                        unavailable.setdefault(f"{v} {case.op}",
                                               "torch has no such implementation")
                    continue
                try:
                    variants[v] = op.setup(case, v)
                except Unavailable as exc:
                    unavailable[f"{v} {case.op} {case.dtype}"] = str(exc)
        for name, make in op.baselines.items():
            if name.startswith("fastopt.torch") and not use_torch:
                continue
            try:
                variants[name] = make(case)
            except Unavailable as exc:
                unavailable[f"{name} {case.op} {case.dtype}"] = str(exc)
        # streams of equal size moving the op's bytes (its rows may differ in dtype)
        probe = Probe(op.streams, op.nbytes(case) // (op.streams.accesses * case.tensors),
                      case.tensors)
        variants[LIMIT] = probe
        timings = interleaved(variants, repeat=repeat, warmup=warmup,
                              tick=(lambda: progress.update(1)) if progress is not None else None)
        nbytes = op.nbytes(case)
        limit_gbps = gbps(probe.nbytes, timings[LIMIT].median)
        case_rows = {}
        for name, t in timings.items():
            moved = probe.nbytes if name == LIMIT else nbytes
            row = Row(case.op, name, case.dtype, case.size, case.tensors, moved,
                      t.samples, t.number, t.first_call_s, t.median, gbps(moved, t.median))
            row.pct_limit = 100.0 * row.gbps / limit_gbps
            if op.flops is not None and name != LIMIT:
                row.gflops = op.flops(case) / t.median / 1e9
            case_rows[name] = row
        for name, row in case_rows.items():
            if name in (LIMIT, *TORCH_VARIANTS):
                continue
            for other in (*TORCH_VARIANTS, "reference"):
                if other in case_rows and other != name:
                    row.speedup[other] = case_rows[other].median_s / row.median_s
        rows.extend(case_rows.values())
        del variants, probe, timings
    report = Report(rows, unavailable, {})
    for b in usable:
        from .. import backends as _backends

        be = _backends.get(b)
        if hasattr(be, "compile_times"):
            report.compile_times[b] = be.compile_times()
    return report


def metadata(argv: Sequence[str], repeat: int) -> dict[str, Any]:
    from .._config import config

    cfg = config()
    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": ["fastopt", "bench", *argv], "commit": git_commit(),
            "machine": machine_info(), "versions": versions(), "isa": cfg["isa"],
            "widest_isa": cfg["widest_isa"], "threads": cfg["threads"], "repeat": repeat,
            "load": {"start": load_average(), "end": None}, "config": cfg}


__all__ = ["DEFAULT_CASES", "LIMIT", "REGISTRY", "TORCH_AUTOGRAD", "TORCH_FOREACH", "TORCH_FUSED",
           "Case", "Op",
           "Probe", "Report", "Row", "Streams", "busy_warning", "git_commit", "load_average",
           "machine_info", "metadata", "run", "versions"]
