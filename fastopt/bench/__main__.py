"""The `fastopt` command line: `fastopt bench [options]` (also `python -m fastopt.bench`) and
`fastopt config`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import (
    DEFAULT_CASES,
    LIMIT,
    REFERENCE_MAX,
    REGISTRY,
    TORCH_AUTOGRAD,
    TORCH_FOREACH,
    TORCH_FUSED,
    Case,
    Report,
    fastopt_backends,
    metadata,
    run,
)

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
DTYPES = ("float32", "float64")
DEFAULT_OPS = ("adamw", "sgd_momentum")
DEFAULT_SIZES = (1 << 20, 1 << 24)


def parse_size(text: str) -> int:
    """'4096', '4K', '16M' (binary multiples: 1M = 2**20 elements)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", text)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"bad size {text!r} (a positive integer with an optional K, M or G "
                         "suffix, e.g. 4096, 64K, 16M)")
    return int(m.group(1)) * _SUFFIX[m.group(2).upper()]


def parse_case_size(text: str) -> tuple[int, int | None]:
    """'16M' -> (16M elements, None); '20000x256' -> (256 elements, 20000 tensors)."""
    many, sep, size = text.strip().rpartition("x")
    if not sep:
        return parse_size(size), None
    try:
        tensors = parse_size(many)
    except ValueError:
        raise ValueError(f"bad size {text!r} (N or TENSORSxN, e.g. 16M or 20000x256)") from None
    return parse_size(size), tensors


def format_size(n: int) -> str:
    for suffix in ("G", "M", "K"):
        if n % _SUFFIX[suffix] == 0:
            return f"{n // _SUFFIX[suffix]}{suffix}"
    return str(n)


def format_time(s: float) -> str:
    if not math.isfinite(s):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}" if s / scale < 100 else f"{s / scale:.0f} {unit}"
    return f"{s * 1e9:.0f} ns"


def _split(values: Sequence[str] | None) -> list[str]:
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


def build_parser(prog: str = "fastopt bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Time fastopt's fused kernels against torch (fused and foreach), "
        "the NumPy reference and this machine's limit (a one-pass bandwidth probe shaped like "
        "each op). Without options: AdamW and SGD-momentum at 1M and 16M float32 elements and "
        "Adam over 20,000 tensors of 256.")
    p.add_argument("--op", action="append", metavar="OP[,OP]",
                   help=f"ops to time, or 'all' (default {','.join(DEFAULT_OPS)}); see --list")
    p.add_argument("--backend", action="append", metavar="NAME[,NAME]",
                   help="fastopt backends and/or 'torch' (default: every available one)")
    p.add_argument("--dtype", action="append", metavar="DTYPE[,DTYPE]",
                   help=f"{' or '.join(DTYPES)} (default float32)")
    p.add_argument("--sizes", action="append", metavar="N[,N]",
                   help="elements per tensor, with K/M/G suffixes, or TENSORSxN for many "
                   "tensors (default 1M,16M; e.g. 1M,16M,20000x256)")
    p.add_argument("--tensors", type=int, default=None, metavar="N",
                   help="many-small-tensors mode: step N tensors of each size at once")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for fastopt and torch (default: fastopt's, from OMP_NUM_THREADS)")
    p.add_argument("--repeat", type=int, default=7, metavar="N",
                   help="timed samples per variant; the median is reported (default 7)")
    p.add_argument("--warmup", type=int, default=2, metavar="N",
                   help="untimed calls before timing (default 2)")
    p.add_argument("--reference-max", default=format_size(REFERENCE_MAX), metavar="N",
                   help="largest total size the slow NumPy reference runs at (default 1M)")
    p.add_argument("--json", metavar="PATH", help="write machine, versions, ISA, commit and "
                   "every sample as JSON")
    p.add_argument("--plot", metavar="PATH", help="PNG of GB/s against size, one line per "
                   "backend, the limit drawn (needs matplotlib: pip install 'fastopt[plot]')")
    p.add_argument("--compare", metavar="OLD.json", help="ratios against an earlier --json run")
    p.add_argument("--threshold", type=float, default=0.10, metavar="FRACTION",
                   help="--compare flags a regression when a median grew by more than this "
                   "(default 0.10)")
    p.add_argument("--load", metavar="RUN.json", help="report a saved --json run instead of "
                   "measuring (with --plot, --compare, --markdown)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--list", action="store_true", help="list ops and backends, then exit")
    return p


def cases_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Case]:
    ops = _split(args.op)
    if ops == ["all"]:
        ops = list(REGISTRY)
    for op in ops:
        if op not in REGISTRY:
            parser.error(f"--op: unknown op {op!r} (known: {', '.join(REGISTRY)}, all)")
    dtypes = _split(args.dtype) or ["float32"]
    for d in dtypes:
        if d not in DTYPES:
            parser.error(f"--dtype: unsupported dtype {d!r} (choose from {', '.join(DTYPES)})")
    try:
        sizes = [parse_case_size(s) for s in _split(args.sizes)]
    except ValueError as exc:
        parser.error(f"--sizes: {exc}")
    if args.tensors is not None and args.tensors < 1:
        parser.error(f"--tensors: must be >= 1, got {args.tensors}")
    if not (ops or dtypes != ["float32"] or sizes or args.tensors):
        return list(DEFAULT_CASES)
    default_tensors = args.tensors or 1
    return [Case(op, d, s, n or default_tensors) for op in ops or DEFAULT_OPS for d in dtypes
            for s, n in sizes or [(s, None) for s in DEFAULT_SIZES]]


def print_table(report: Report, out: Any = None, markdown: bool = False) -> None:
    out = out or sys.stdout
    # a speedup column for every baseline some row was compared with
    names = {TORCH_FUSED: "vs fused", TORCH_FOREACH: "vs foreach", TORCH_AUTOGRAD: "vs torch",
             "reference": "vs ref"}
    present = {k for r in report.rows for k in r.speedup}
    baselines = [k for k in names if k in present] or [TORCH_FUSED, TORCH_FOREACH, "reference"]
    head = ("op", "backend", "dtype", "size", "median", "GB/s", "% limit",
            *(names[k] for k in baselines), "1st call")
    lines = [head]
    for r in report.rows:
        size = format_size(r.size) if r.tensors == 1 else f"{r.tensors}x{format_size(r.size)}"
        sp = [f"{r.speedup[k]:.2f}x" if k in r.speedup else "" for k in baselines]
        lines.append((r.op, r.backend, r.dtype, size, format_time(r.median_s),
                      f"{r.gbps:.1f}", f"{r.pct_limit:.0f}%", *sp,
                      format_time(r.first_call_s) if r.backend != LIMIT else ""))
    if markdown:
        for k, line in enumerate(lines):
            print("| " + " | ".join(line) + " |", file=out)
            if k == 0:
                print("|" + "|".join("---" if i < 4 else "--:" for i in range(len(line))) + "|",
                      file=out)
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for k, line in enumerate(lines):
        print("  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip(),
              file=out)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=out)
    print("\nGB/s: the bytes each op must move (DESIGN.md) / median time. limit: a one-pass "
          "loop over the same bytes, timed in the same rounds. vs X: X's time / this time.",
          file=out)


def print_unavailable(report: Report, out: Any = None) -> None:
    out = out or sys.stdout
    if report.unavailable:
        print("not measured:", file=out)
        for name, why in report.unavailable.items():
            print(f"  {name}: {why}", file=out)
    for name, times in report.compile_times.items():
        print(f"{name} compile times: {times}", file=out)


def compare(report: Report, old: dict[str, Any], threshold: float,
            out: Any = None) -> list[tuple]:
    """Print old/new time ratios for rows present in both runs; return the regressions."""
    out = out or sys.stdout
    old_rows = {(r["op"], r["backend"], r["dtype"], r["size"], r["tensors"]): r
                for r in old.get("results", [])}
    print(f"\ncompared with {old.get('created', '?')} (commit {old.get('commit')}): "
          "speed = old time / new time", file=out)
    regressions = []
    matched = 0
    for r in report.rows:
        o = old_rows.get(r.key)
        if o is None or r.backend == LIMIT:
            continue
        matched += 1
        speed = o["median_s"] / r.median_s
        flag = ""
        if r.median_s > o["median_s"] * (1 + threshold):
            flag = f"REGRESSION (> {threshold:.0%} slower)"
            regressions.append(r.key)
        size = format_size(r.size) if r.tensors == 1 else f"{r.tensors}x{format_size(r.size)}"
        print(f"  {r.op:<16} {r.backend:<14} {r.dtype:<8} {size:<10} "
              f"{format_time(o['median_s']):>9} -> {format_time(r.median_s):>9}  "
              f"{speed:5.2f}x  {flag}".rstrip(), file=out)
    if not matched:
        print("  no case in common with the earlier run", file=out)
    elif regressions:
        print(f"{len(regressions)} regression(s) beyond {threshold:.0%}", file=out)
    return regressions


def plot(report: Report, path: str, title: str = "") -> None:
    """GB/s against total size, one subplot per (op, dtype, tensor count), one line per
    backend, the probe's limit dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, dict[str, list[tuple[int, float]]]] = {}
    for r in report.rows:
        g = groups.setdefault((r.op, r.dtype, r.tensors), {})
        g.setdefault(r.backend, []).append((r.size * r.tensors, r.gbps))
    # one colour per backend across every subplot
    order = ["cpu", "numba", "reference", TORCH_FUSED, TORCH_FOREACH, TORCH_AUTOGRAD]
    order += sorted({r.backend for r in report.rows} - set(order) - {LIMIT})
    colours = {b: f"C{i % 10}" for i, b in enumerate(order)}
    n = len(groups)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, ((op, dtype, tensors), lines) in zip(axes.flat, groups.items(), strict=False):
        for backend, pts in sorted(lines.items(), key=lambda kv: kv[0] == LIMIT):
            pts.sort()
            xs, ys = zip(*pts, strict=True)
            style = (dict(color="black", linestyle="--") if backend == LIMIT
                     else dict(color=colours[backend]))
            ax.plot(xs, ys, marker="o", label=backend, **style)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{op} {dtype}" + (f" ({tensors} tensors)" if tensors > 1 else ""),
                     fontsize=9)
        ax.set_xlabel("elements", fontsize=8)
        ax.set_ylabel("GB/s", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def list_all(out: Any = None) -> None:
    out = out or sys.stdout
    print("ops:", file=out)
    for name, op in REGISTRY.items():
        s = op.streams
        print(f"  {name:<16} {op.doc}; {s.accesses * 4} bytes/element in float32", file=out)
    print("backends:", file=out)
    for name, ok, why, devices in fastopt_backends():
        print(f"  {name:<12} {'yes' if ok else 'no ':<4} [{', '.join(devices)}] {why}", file=out)
    try:
        import torch

        print(f"  {'torch':<12} yes  torch {torch.__version__} (fused and foreach)", file=out)
    except ImportError as exc:
        print(f"  {'torch':<12} no   {exc}", file=out)


def bench_main(argv: Sequence[str] | None = None, prog: str = "fastopt bench") -> int:
    parser = build_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.list:
        list_all()
        return 0
    loaded = None
    if args.load:
        try:
            loaded = Report.from_json(json.loads(Path(args.load).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"--load: cannot read {args.load}: {exc}")
    cases = cases_from(args, parser) if not args.load else []
    known = {name for name, *_ in fastopt_backends()} | {"torch"}
    backends = _split(args.backend) or None
    for b in backends or ():
        if b not in known:
            parser.error(f"--backend: unknown backend {b!r} (known: {', '.join(sorted(known))})")
    if args.repeat < 1:
        parser.error(f"--repeat: must be >= 1, got {args.repeat}")
    if args.warmup < 0:
        parser.error(f"--warmup: must be >= 0, got {args.warmup}")
    try:
        reference_max = parse_size(args.reference_max)
    except ValueError as exc:
        parser.error(f"--reference-max: {exc}")
    if not 0 <= args.threshold < math.inf:
        parser.error(f"--threshold: must be a fraction >= 0, got {args.threshold}")
    old = None
    if args.compare:
        try:
            old = json.loads(Path(args.compare).read_text())
            if not isinstance(old, dict) or "results" not in old:
                raise ValueError("no 'results' in it")
        except (OSError, ValueError) as exc:
            parser.error(f"--compare: cannot read {args.compare}: {exc}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'fastopt[plot]'")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: must be >= 1, got {args.threads}")
    with _threads(args.threads) as threads:
        return _measure_and_report(args, argv, cases, backends, reference_max, old, loaded,
                                   threads)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[int]:
    """fastopt's and torch's thread counts set to n (default: fastopt's) for the run, then
    restored: bench_main may run inside a bigger program (or a test session)."""
    from .._config import get_num_threads, set_num_threads

    before = get_num_threads()
    try:
        import torch
    except ImportError:
        torch = None
    torch_before = torch.get_num_threads() if torch is not None else None
    if n is not None:
        try:
            set_num_threads(n)
        except RuntimeError as exc:
            print(f"note: {exc}", file=sys.stderr)
    threads = n or before
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if n is not None and n != before:
            set_num_threads(before)
        if torch is not None:
            torch.set_num_threads(torch_before)


def _measure_and_report(args: argparse.Namespace, argv: list[str], cases: list[Case],
                        backends: list[str] | None, reference_max: int, old: Any,
                        loaded: Report | None, threads: int) -> int:
    if loaded is not None:
        report = loaded
        # --op / --backend select rows of the saved run (the limit row of each case stays)
        ops = set(_split(args.op)) - {"all"}
        keep = set(backends or ())
        report.rows = [r for r in report.rows
                       if (not ops or r.op in ops)
                       and (not keep or r.backend == LIMIT or r.backend in keep
                            or ("torch" in keep and r.backend.startswith("torch")))]
        meta = report.meta
        threads = meta.get("threads")
    else:
        meta = metadata(argv, args.repeat)
    m = meta["machine"]
    print(f"fastopt {meta['versions']['fastopt']} bench on {m.get('cpu')} "
          f"({m.get('cpu_count')} CPUs), ISA {meta['isa']}, {threads} threads, "
          f"torch {meta['versions'].get('torch')}"
          + (f" (saved run of {meta.get('created')}, commit {meta.get('commit')})"
             if args.load else ""))
    if not args.load:
        from tqdm import tqdm

        # delay: no bar for a run that is over within a couple of seconds; disable=None:
        # none when stderr is not a terminal (logs, CI)
        with tqdm(total=len(cases) * args.repeat, unit="round", delay=2.0, file=sys.stderr,
                  leave=False, disable=None) as bar:
            report = run(cases, backends, repeat=args.repeat, warmup=args.warmup,
                         reference_max=reference_max, progress=bar)
        report.meta = meta
    print()
    print_table(report, markdown=args.markdown)
    print_unavailable(report)
    if old is not None:
        compare(report, old, args.threshold)
    if args.json and not args.load:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot(report, args.plot, title=f"{m.get('cpu')}, {threads} threads, ISA {meta['isa']}")
        print(f"wrote {args.plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `fastopt` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = "commands: bench (time the kernels; see fastopt bench --help), config"
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: fastopt COMMAND [options]\n{commands}")
        return 0 if argv else 2
    if argv[0] == "bench":
        return bench_main(argv[1:])
    if argv[0] == "config":
        from .._config import show_config

        show_config()
        return 0
    print(f"fastopt: error: unknown command {argv[0]!r}\n{commands}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(bench_main(prog="python -m fastopt.bench"))
