"""The `fastopt` command line: `fastopt bench [options]` (also `python -m fastopt.bench`) and
`fastopt config`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
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
    Row,
    busy_warning,
    fastopt_backends,
    load_average,
    metadata,
    run,
)
from .ops import with_state

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
DTYPES = ("float32", "float64", "bfloat16", "float16")
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
    p.add_argument("--state", action="append", metavar="STATE[,STATE]",
                   help="optimizer ops also with their state stored as float32, bfloat16, "
                   "float16 or 8bit (state_dtype=; rows named op[bf16], op[8bit], ...; torch "
                   "keeps its state in the params' dtype)")
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
    p.add_argument("--json", metavar="PATH", help="write machine, versions, ISA, commit, load "
                   "average and every sample as JSON (with --load: the rows selected)")
    p.add_argument("--plot", metavar="PATH", help="figure of GB/s per backend (PNG, or the "
                   "format PATH's extension names: .svg, .pdf, ...): sizes swept as lines, "
                   "one-size cases such as 20000x256 as bars, the limit dashed (needs "
                   "matplotlib: pip install 'fastopt[plot]')")
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
    states = _split(getattr(args, "state", None))
    if not (ops or dtypes != ["float32"] or sizes or args.tensors or states):
        return list(DEFAULT_CASES)
    if states:
        try:
            ops = [with_state(op, st) for op in ops or DEFAULT_OPS for st in states]
        except ValueError as exc:
            parser.error(f"--state: {exc}")
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
    flops = any(not math.isnan(getattr(r, "gflops", math.nan)) for r in report.rows)
    head = ("op", "backend", "dtype", "size", "median", "GB/s", "% limit",
            *(("GFLOP/s",) if flops else ()), *(names[k] for k in baselines), "1st call")
    lines = [head]
    for r in report.rows:
        size = format_size(r.size) if r.tensors == 1 else f"{r.tensors}x{format_size(r.size)}"
        sp = [f"{r.speedup[k]:.2f}x" if k in r.speedup else "" for k in baselines]
        gf = getattr(r, "gflops", math.nan)
        lines.append((r.op, r.backend, r.dtype, size, format_time(r.median_s),
                      f"{r.gbps:.1f}", f"{r.pct_limit:.0f}%",
                      *((f"{gf:.1f}" if not math.isnan(gf) else "",) if flops else ()), *sp,
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
    print("\nGB/s: the bytes each op must move (docs/architecture.md) / median time. limit: a "
          "one-pass loop over the same bytes, timed in the same rounds. vs X: X's time / this "
          "time.", file=out)


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


def _panels(report: Report) -> list[list[tuple[str, str, str, dict]]]:
    """The panels of each (op, dtype), in the rows' order, as (kind, op, dtype, data). A case
    timed at two or more sizes is a 'sweep' (data: {tensors: {backend: [(elements, GB/s)]}});
    the cases of an (op, dtype) timed at one size each, such as the many-tensor ones, share a
    'bars' panel (data: {case label: {backend: row}}): one point on a log axis says nothing."""
    groups: dict[tuple[str, str], dict[int, dict[int, dict[str, Row]]]] = {}
    for r in report.rows:
        groups.setdefault((r.op, r.dtype), {}).setdefault(r.tensors, {}).setdefault(
            r.size, {})[r.backend] = r
    out = []
    for (op, dtype), by_tensors in groups.items():
        panels = []
        bars: dict[str, dict[str, Row]] = {}
        for tensors, by_size in by_tensors.items():
            if len(by_size) == 1:
                size, rows = next(iter(by_size.items()))
                label = format_size(size) if tensors == 1 else f"{tensors}x{format_size(size)}"
                bars[label] = rows
                continue
            lines: dict[str, list[tuple[int, float]]] = {}
            for size, rows in sorted(by_size.items()):
                for backend, r in rows.items():
                    lines.setdefault(backend, []).append((size * tensors, r.gbps))
            panels.append(("sweep", op, dtype, {tensors: lines}))
        if bars:
            panels.append(("bars", op, dtype, bars))
        out.append(panels)
    return out


def figure(report: Report, title: str = "") -> Any:
    """The --plot figure (a matplotlib Figure): per (op, dtype), GB/s against size on a log
    axis where a case was timed at several sizes (one line per backend, the probe's limit
    dashed), and a bar chart of the cases timed at one size, such as 20,000 tensors of 256
    (one bar per backend labelled with its % of the limit, the limit a dashed segment over
    each case). One legend for the whole figure, below the panels, so it hides no line."""
    from matplotlib.figure import Figure

    # one colour per backend across every panel
    order = ["cpu", "numba", "reference", TORCH_FUSED, TORCH_FOREACH, TORCH_AUTOGRAD]
    order += sorted({r.backend for r in report.rows} - set(order) - {LIMIT})
    colours = {b: f"C{i % 10}" for i, b in enumerate(order)}
    # panels flow left to right, up to 4 a row; an (op, dtype)'s panels stay side by side
    groups = _panels(report)
    cols = max(1, min(4, sum(map(len, groups))), *map(len, groups))
    slots: list[tuple[int, int]] = []
    row = col = 0
    for panels in groups:
        if col + len(panels) > cols:
            row, col = row + 1, 0
        slots += [(row, col + i) for i in range(len(panels))]
        col += len(panels)
    rows = row + 1
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.6), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    placed = list(zip((grid[rc] for rc in slots), (p for g in groups for p in g), strict=True))
    limit_style = dict(color="black", linestyle="--", label=LIMIT)
    for ax, (kind, op, dtype, data) in placed:
        if kind == "sweep":
            (tensors, lines), = data.items()
            for backend, pts in sorted(lines.items(), key=lambda kv: kv[0] == LIMIT):
                xs, ys = zip(*pts, strict=True)
                style = limit_style if backend == LIMIT else dict(color=colours[backend],
                                                                  label=backend)
                ax.plot(xs, ys, marker="o", **style)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{op} {dtype}" + (f" ({tensors} tensors)" if tensors > 1 else ""),
                         fontsize=9)
            ax.set_xlabel("elements", fontsize=8)
        else:
            present = [b for b in order if any(b in case for case in data.values())]
            width = 0.8 / max(1, len(present))
            for i, backend in enumerate(present):
                xs = [j for j, case in enumerate(data.values()) if backend in case]
                cases = [case[backend] for case in data.values() if backend in case]
                bars = ax.bar([j - 0.4 + (i + 0.5) * width for j in xs],
                              [r.gbps for r in cases], width, color=colours[backend],
                              label=backend)
                ax.bar_label(bars, [f"{r.pct_limit:.0f}%" for r in cases], fontsize=6)
            for j, case in enumerate(data.values()):
                if LIMIT in case:
                    ax.hlines(case[LIMIT].gbps, j - 0.45, j + 0.45, **limit_style)
            ax.set_xticks(range(len(data)), list(data), fontsize=7)
            ax.set_xlim(-0.6, len(data) - 0.4)
            many = all("x" in k for k in data)
            ax.set_title(f"{op} {dtype}" + (", many tensors" if many else ""), fontsize=9)
            ax.set_xlabel("tensors x elements" if many else "elements", fontsize=8)
        ax.set_ylabel("GB/s", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    used = {id(ax) for ax, _ in placed}
    for ax in grid.flat:
        ax.set_visible(id(ax) in used)
    legend: dict[str, Any] = {}
    for ax, _ in placed:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels = sorted(legend, key=lambda b: order.index(b) if b in order else len(order))
    fig.legend([legend[b] for b in labels], labels, loc="outside lower center",
               ncols=min(len(labels), 7), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot(report: Report, path: str, title: str = "") -> None:
    """Save figure(report, title) to path (the format from its extension; PNG without one)."""
    figure(report, title).savefig(path, dpi=80)


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
            from matplotlib.backend_bases import FigureCanvasBase
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'fastopt[plot]'")
        kinds = FigureCanvasBase.get_supported_filetypes()
        ext = Path(args.plot).suffix[1:].lower()
        if ext and ext not in kinds:
            parser.error(f"--plot: matplotlib cannot write .{ext} files (it writes "
                         f"{', '.join(sorted(kinds))})")
    # a path that cannot be written fails now, not after minutes of measuring
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            why = _unwritable(Path(path))
            if why:
                parser.error(f"{option}: cannot write {path}: {why}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: must be >= 1, got {args.threads}")
    with _threads(args.threads) as threads:
        return _measure_and_report(args, argv, cases, backends, reference_max, old, loaded,
                                   threads)


def _unwritable(path: Path) -> str | None:
    """Why `path` cannot be written as a file, or None if it can."""
    if path.is_dir():
        return "it is a folder"
    folder = path.parent
    if not folder.exists():
        return f"no folder {folder}"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(path if path.exists() else folder, os.W_OK):
        return "permission denied"
    return None


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
    load = meta.setdefault("load", {})
    if not args.load:
        _warn_busy(load.get("start"), m.get("cpu_count"), "at the start of the run")
        from tqdm import tqdm

        # delay: no bar for a run that is over within a couple of seconds; disable=None:
        # none when stderr is not a terminal (logs, CI)
        with tqdm(total=len(cases) * args.repeat, unit="round", delay=2.0, file=sys.stderr,
                  leave=False, disable=None) as bar:
            report = run(cases, backends, repeat=args.repeat, warmup=args.warmup,
                         reference_max=reference_max, progress=bar)
        report.meta = meta
        load["end"] = load_average()
        _warn_busy(load["end"], m.get("cpu_count"), "at the end of the run")
    print()
    print_table(report, markdown=args.markdown)
    print(f"\n{describe_load(load, m.get('cpu_count'))}")
    print_unavailable(report)
    if old is not None:
        compare(report, old, args.threshold)
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(report.to_json(), indent=1) + "\n")
            print(f"wrote {args.json}")
        if args.plot:
            plot(report, args.plot,
                 title=f"{m.get('cpu')}, {threads} threads, ISA {meta['isa']}")
            print(f"wrote {args.plot}")
    except OSError as exc:
        print(f"fastopt bench: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _warn_busy(load: list[float] | None, cores: int | None, when: str) -> None:
    message = busy_warning(load, cores, when)
    if message:
        print(message, file=sys.stderr)


def describe_load(load: dict[str, Any], cores: int | None) -> str:
    """One line on the machine's load during a run: the 1-minute load average at its start
    and end against the core count."""
    seen = [(when, load.get(when)) for when in ("start", "end")]
    seen = [(when, avg) for when, avg in seen if avg]
    if not seen:
        return "load average: not recorded"
    text = ", ".join(f"{avg[0]:.2f} at the {when}" for when, avg in seen)
    busy = any(busy_warning(avg, cores, when) for when, avg in seen)
    return (f"load average (1 minute): {text}; {cores} cores"
            + ("; BUSY: times are slow and noisy, re-run on an idle machine" if busy else ""))


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
