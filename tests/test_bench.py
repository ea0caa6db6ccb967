"""`fastopt bench`: the command line runs every option on tiny sizes (speed is not asserted
here; it belongs in benchmarks/), and bad options fail with a clear message."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastopt.bench.__main__ as cli
from fastopt.bench import LIMIT, Case, Report, Row, busy_warning, run
from fastopt.bench.__main__ import bench_main, figure, main, parse_case_size, parse_size
from fastopt.bench.ops import REGISTRY
from fastopt.bench.probe import Probe, Streams
from fastopt.bench.timing import calibrate, gbps, interleaved, median

TINY = ["--sizes", "1K", "--repeat", "2", "--warmup", "1"]


def _bench(capsys, *argv):
    assert bench_main(list(argv)) == 0
    return capsys.readouterr().out


def _no_measuring(*args, **kwargs):
    raise AssertionError("measured before checking the options")


def test_parse_size():
    assert parse_size("4096") == 4096
    assert parse_size("64K") == 64 << 10
    assert parse_size("16m") == 16 << 20
    for bad in ("", "0", "1.5M", "-3", "12T"):
        with pytest.raises(ValueError, match="bad size"):
            parse_size(bad)
    assert parse_case_size("16M") == (16 << 20, None)
    assert parse_case_size("20000x256") == (256, 20000)
    with pytest.raises(ValueError, match="bad size"):
        parse_case_size("yx256")


def test_timing_helpers():
    calls = []
    out = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                      repeat=3, warmup=2, min_time=0.0)
    assert set(out) == {"a", "b"}
    for t in out.values():
        assert len(t.samples) == 3 and t.number == 1 and t.median >= 0 and t.first_call_s >= 0
    # interleaved: the timed calls alternate, the starting variant rotating each round
    assert calls[-6:] == ["a", "b", "b", "a", "a", "b"]
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert gbps(2e9, 2.0) == 1.0
    assert calibrate(lambda: None, min_time=1e-4) >= 1
    with pytest.raises(ValueError, match="repeat"):
        interleaved({"a": lambda: None}, repeat=0)


@pytest.mark.parametrize("streams", [Streams(3, 1), Streams(1, 0), Streams(0, 1, 1),
                                     Streams(4, 2, 1)])
@pytest.mark.parametrize("tensors", [1, 7])
def test_probe_moves_the_streams(streams, tensors):
    probe = Probe(streams, nbytes_per_tensor=4 * 4097, tensors=tensors)
    assert probe.nbytes == streams.accesses * 4097 * 4 * tensors
    bufs = probe._buffers
    src = sum(b.astype(np.float64) for b in bufs[streams.rw:streams.rw + streams.ro])
    if streams.ro == 0:
        src = np.zeros(4097 * tensors)
    before = [b.copy() for b in bufs[:streams.rw]]
    probe()
    # every element of every tensor was visited: rw = s - rw, wo = s
    for old, new in zip(before, bufs[:streams.rw], strict=True):
        np.testing.assert_array_equal(new, (src - old).astype(np.float32))
    for b in bufs[streams.rw + streams.ro:]:
        np.testing.assert_array_equal(b, np.asarray(src, np.float32))


def test_probe_rejects_bad_streams():
    with pytest.raises(ValueError, match="written stream"):
        Probe(Streams(0, 1), 4096)


def test_run_api_counts_bytes_and_speedups():
    report = run([Case("adamw", "float32", 1000)], ["cpu", "reference"], repeat=2, warmup=1)
    rows = {r.backend: r for r in report.rows}
    assert set(rows) == {"cpu", "reference", LIMIT}
    assert rows["cpu"].nbytes == 28 * 1000  # docs/architecture.md: Adam fp32 moves 28 bytes/element
    assert rows["cpu"].speedup["reference"] == pytest.approx(
        rows["reference"].median_s / rows["cpu"].median_s)
    assert rows[LIMIT].pct_limit == pytest.approx(100.0)
    assert "torch" not in report.unavailable  # not asked for


def test_run_without_torch_says_what_is_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    report = run([Case("sgd", "float32", 64)], ["cpu", "torch"], repeat=1, warmup=0)
    assert {r.backend for r in report.rows} == {"cpu", LIMIT}
    why = report.unavailable["torch"]
    assert "no torch-fused or torch-foreach rows" in why and "whl/cpu" in why


def test_registry_bytes_follow_design_table():
    per_elem = {name: op.streams.accesses * 4 for name, op in REGISTRY.items()}
    assert per_elem["sgd"] == 12 and per_elem["sgd_momentum"] == 20
    assert per_elem["adam"] == per_elem["adamw"] == 28 and per_elem["adam_amsgrad"] == 36
    assert per_elem["adagrad"] == per_elem["rmsprop"] == per_elem["lion"] == 20


def test_registry_losses_bytes_and_flops():
    from fastopt.bench.ops import LINEAR_CE_HIDDEN, LINEAR_CE_VOCAB, Case

    per_elem = {name: op.streams.accesses * 4 for name, op in REGISTRY.items()}
    # input and target read, gradient written
    assert per_elem["mse"] == per_elem["huber"] == per_elem["bce_with_logits"] == 12
    assert per_elem["kl_div"] == 12
    # per logit: written by the GEMM, read and overwritten by cross-entropy, read by two GEMMs
    assert per_elem["linear_cross_entropy"] == 20
    case = Case("linear_cross_entropy", "float32", 3 * LINEAR_CE_VOCAB)
    assert REGISTRY["linear_cross_entropy"].flops(case) == \
        6 * 3 * LINEAR_CE_VOCAB * LINEAR_CE_HIDDEN


def test_cli_losses_with_gemm_floor(capsys):
    """The losses run on the CPU backends and torch; linear_cross_entropy also times the three
    NumPy GEMMs alone and fastopt.torch (torch's GEMMs) in the same rounds, with GFLOP/s."""
    pytest.importorskip("torch")
    out = _bench(capsys, "--op", "mse,bce_with_logits,huber,kl_div,linear_cross_entropy",
                 "--backend", "cpu,torch", *TINY, "--sizes", "8K")
    for word in ("mse", "bce_with_logits", "huber", "kl_div", "linear_cross_entropy",
                 "numpy-gemms", "fastopt.torch", "GFLOP/s", "vs torch"):
        assert word in out, word
    rows = [line.split() for line in out.splitlines() if line.startswith("linear_cross")]
    assert {r[1] for r in rows} >= {"cpu", "torch", "numpy-gemms", "fastopt.torch", LIMIT}


def test_cli_state_variants_and_their_bytes(capsys):
    """--state times each optimizer op with its state stored so (rows op[bf16], op[8bit]),
    counting the state rows' own bytes: AdamW with float32 params moves 12 B/element of
    params and grads, and per state row and access 2 (bfloat16) or the packed 8-bit bytes."""
    from fastopt.bench.ops import Case, with_state
    from fastopt.reference.quant8 import packed_size

    out = _bench(capsys, "--op", "adamw", "--state", "bfloat16,8bit", "--backend", "cpu",
                 *TINY, "--sizes", "8K")
    assert "adamw[bf16]" in out and "adamw[8bit]" in out
    n = 8192
    case = Case("adamw[bf16]", "float32", n)
    assert REGISTRY["adamw[bf16]"].nbytes(case) == 12 * n + 2 * 2 * 2 * n
    assert REGISTRY["adamw[8bit]"].nbytes(case) == 12 * n + 2 * 2 * packed_size(n)
    assert with_state("adamw_bf16_state", "bfloat16") == "adamw_bf16_state"  # already so
    with pytest.raises(ValueError, match="no optimizer"):
        with_state("mse", "8bit")


def test_cli_op_table(capsys):
    out = _bench(capsys, "--op", "sgd_momentum,lion", "--backend", "cpu,reference", *TINY,
                 "--sizes", "5x512")
    for word in ("sgd_momentum", "lion", "cpu", "reference", LIMIT, "GB/s", "% limit"):
        assert word in out
    assert "1K" in out and "5x512" in out


def test_cli_every_op_float64_many_tensors(capsys):
    out = _bench(capsys, "--op", "all", "--dtype", "float64", "--tensors", "3",
                 "--backend", "cpu", *TINY)
    for name in REGISTRY:
        assert name in out
    assert "3x1K" in out and "float64" in out


def test_cli_torch_columns(capsys):
    torch = pytest.importorskip("torch")
    import fastopt

    before = (fastopt.get_num_threads(), torch.get_num_threads())
    out = _bench(capsys, "--op", "adam,rmsprop", "--backend", "cpu,torch", "--threads", "1",
                 *TINY)
    assert "1 threads" in out
    assert (fastopt.get_num_threads(), torch.get_num_threads()) == before  # restored
    assert "torch-fused" in out and "torch-foreach" in out and "vs fused" in out
    # torch has no fused RMSprop: listed as not measured, with the reason
    assert "torch-fused rmsprop: torch has no such implementation" in out


def test_cli_json_and_compare(tmp_path, capsys):
    path = tmp_path / "run.json"
    _bench(capsys, "--op", "sgd", "--backend", "cpu", "--json", str(path), *TINY)
    data = json.loads(path.read_text())
    for key in ("machine", "versions", "isa", "commit", "threads", "results", "created"):
        assert key in data
    rows = {r["backend"]: r for r in data["results"]}
    assert len(rows["cpu"]["samples"]) == 2 and rows["cpu"]["nbytes"] == 12 * 1024
    # a saved run reported again, as Markdown (the README's Performance table)
    out = _bench(capsys, "--load", str(path), "--markdown")
    assert "| sgd | cpu | float32 | 1K |" in out and "saved run of" in out
    # ... and saved again (the rows --op/--backend select), its machine and samples kept
    again = tmp_path / "again.json"
    _bench(capsys, "--load", str(path), "--backend", "cpu", "--json", str(again))
    saved = json.loads(again.read_text())
    assert saved["machine"] == data["machine"] and saved["created"] == data["created"]
    assert saved["results"] == data["results"]
    # an earlier run 10x faster than any machine: every row is flagged as a regression
    for r in data["results"]:
        r["median_s"] /= 10
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    out = _bench(capsys, "--op", "sgd", "--backend", "cpu", "--compare", str(old), *TINY)
    assert "REGRESSION" in out and "regression(s)" in out
    data["results"] = [dict(r, op="lion") for r in data["results"]]
    old.write_text(json.dumps(data))
    out = _bench(capsys, "--op", "sgd", "--backend", "cpu", "--compare", str(old), *TINY)
    assert "no case in common" in out


def test_cli_plot(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    figures = []
    real_figure = cli.figure
    monkeypatch.setattr(cli, "figure", lambda *a, **k: figures.append(real_figure(*a, **k))
                        or figures[-1])
    path = tmp_path / "plot.png"
    out = _bench(capsys, "--op", "sgd", "--sizes", "1K,4K,3x1K", "--backend", "cpu",
                 "--repeat", "2", "--plot", str(path))
    assert f"wrote {path}" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    sweep, bars = [ax for ax in fig.axes if ax.get_visible()]
    assert sweep.get_xscale() == "log" and bars.containers
    assert [t.get_text() for t in bars.get_xticklabels()] == ["3x1K"]


def _row(op, backend, size, tensors, gbps, limit_gbps):
    return Row(op, backend, "float32", size, tensors, 28 * size * tensors, [1e-3], 1, 1e-3,
               1e-3, gbps, 100.0 * gbps / limit_gbps)


def test_plot_figure_sweep_and_many_tensor_bars():
    pytest.importorskip("matplotlib")
    from matplotlib.collections import LineCollection

    rows = []
    for size, lim in ((1 << 10, 8.0), (1 << 20, 12.0), (1 << 24, 6.0)):
        rows += [_row("adamw", "cpu", size, 1, 0.8 * lim, lim),
                 _row("adamw", "torch-fused", size, 1, 0.5 * lim, lim),
                 _row("adamw", LIMIT, size, 1, lim, lim)]
    rows += [_row("adamw", "cpu", 256, 20000, 5.0, 7.5),
             _row("adamw", "torch-fused", 256, 20000, 0.1, 7.5),
             _row("adamw", LIMIT, 256, 20000, 7.5, 7.5)]
    fig = figure(Report(rows, {}, {}), title="machine")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    sweep, bars = axes
    # the sweep: one line per backend over the three sizes on a log axis, the limit dashed
    assert sweep.get_xscale() == "log"
    lines = {ln.get_label(): ln for ln in sweep.get_lines()}
    assert set(lines) == {"cpu", "torch-fused", LIMIT}
    assert list(lines["cpu"].get_xdata()) == [1 << 10, 1 << 20, 1 << 24]
    assert lines[LIMIT].get_linestyle() == "--"
    # beside it, the 20,000-tensor case as bars (one per backend, labelled with % of the
    # limit), the limit a dashed segment over them
    assert sweep.get_position().y0 == pytest.approx(bars.get_position().y0)
    assert bars.get_xscale() == "linear"
    assert [t.get_text() for t in bars.get_xticklabels()] == ["20000x256"]
    heights = {c.get_label(): [p.get_height() for p in c] for c in bars.containers}
    assert heights == {"cpu": [5.0], "torch-fused": [0.1]}
    assert {"67%", "1%"} <= {t.get_text() for t in bars.texts}
    (limit,) = [c for c in bars.collections if isinstance(c, LineCollection)]
    (segment,) = limit.get_segments()
    assert segment[0][1] == segment[1][1] == 7.5
    # one legend for the figure, below the panels: it covers no line of any panel
    assert all(ax.get_legend() is None for ax in axes)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["cpu", "torch-fused", LIMIT]
    fig.draw_without_rendering()
    box = legend.get_window_extent()
    for ax in axes:
        assert box.y1 <= ax.get_window_extent().y0


@pytest.mark.parametrize("argv, message", [
    (["--op", "nosuch"], "--op: unknown op 'nosuch'"),
    (["--backend", "nosuch"], "--backend: unknown backend 'nosuch'"),
    (["--dtype", "int8"], "--dtype: unsupported dtype 'int8'"),
    (["--state", "4bit"], "--state: unknown state '4bit'"),
    (["--op", "mse", "--state", "8bit"], "--state: mse is no optimizer"),
    (["--sizes", "12Q"], "--sizes: bad size '12Q'"),
    (["--tensors", "0"], "--tensors: must be >= 1"),
    (["--repeat", "0"], "--repeat: must be >= 1"),
    (["--threads", "0"], "--threads: must be >= 1"),
    (["--compare", "/nonexistent/old.json"], "--compare: cannot read"),
    (["--load", "/nonexistent/run.json"], "--load: cannot read"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_cli_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("option, name, message", [
    ("--json", "missing/x.json", "no folder"),
    ("--json", ".", "it is a folder"),
    ("--json", "file.txt/x.json", "is not a folder"),
    ("--plot", "missing/plot.png", "no folder"),
    ("--plot", "plot.foo", "matplotlib cannot write .foo files"),
])
def test_cli_output_paths_checked_before_measuring(option, name, message, tmp_path,
                                                   monkeypatch, capsys):
    if option == "--plot":
        pytest.importorskip("matplotlib")
    (tmp_path / "file.txt").write_text("")
    path = str(tmp_path / name)
    monkeypatch.setattr(cli, "run", _no_measuring)
    with pytest.raises(SystemExit) as exc:
        bench_main([option, path])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{option}: " in err and message in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="file permissions do not bind root (or are not POSIX)")
def test_cli_output_folder_without_write_permission(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        bench_main(["--json", str(folder / "x.json")])
    assert "--json: cannot write" in capsys.readouterr().err


def test_cli_write_error_after_measuring(tmp_path, monkeypatch, capsys):
    # a write that fails anyway (disk full, the folder removed meanwhile) keeps the table
    monkeypatch.setattr(cli, "_unwritable", lambda path: None)
    path = tmp_path / "gone" / "x.json"
    assert bench_main(["--op", "sgd", "--backend", "cpu", "--json", str(path), *TINY]) == 1
    captured = capsys.readouterr()
    assert "sgd" in captured.out and "fastopt bench: error:" in captured.err


def test_busy_warning():
    assert busy_warning(None, 2, "now") is None
    assert busy_warning([2.0, 9.0, 9.0], 2, "now") is None  # load at the core count: not busy
    warning = busy_warning([2.01, 0.1, 0.1], 2, "at the start of the run")
    assert "busy at the start of the run" in warning and "2.01" in warning
    assert "2 cores" in warning


@pytest.mark.parametrize("load", [(0.0, 0.0, 0.0), "busy", None])
def test_cli_records_load_average(load, tmp_path, monkeypatch, capsys):
    cores = os.cpu_count()
    if load == "busy":
        load = (cores + 1.5, cores + 1.0, 0.5)
    if load is None:
        def getloadavg():
            raise OSError("no load average here")
    else:
        def getloadavg():
            return load
    monkeypatch.setattr(os, "getloadavg", getloadavg, raising=False)
    path = tmp_path / "run.json"
    assert bench_main(["--op", "sgd", "--backend", "cpu", "--json", str(path), *TINY]) == 0
    captured = capsys.readouterr()
    saved = json.loads(path.read_text())
    busy = load is not None and load[0] > cores
    if load is None:
        assert saved["load"] == {"start": None, "end": None}
        assert "load average: not recorded" in captured.out
    else:
        assert saved["load"] == {"start": list(load), "end": list(load)}
        assert f"load average (1 minute): {load[0]:.2f} at the start" in captured.out
    assert saved["machine"]["cpu_count"] == cores
    assert ("warning: the machine is busy at the start of the run" in captured.err) == busy
    assert ("warning: the machine is busy at the end of the run" in captured.err) == busy
    assert ("BUSY" in captured.out) == busy
    # the saved run reported again (the README's table) says the same, idle or not
    out = _bench(capsys, "--load", str(path), "--markdown")
    assert ("BUSY" in out) == busy
    assert ("not recorded" in out) == (load is None)


def test_cli_plot_without_matplotlib(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(cli, "run", _no_measuring)
    with pytest.raises(SystemExit):
        bench_main(["--plot", "x.png"])
    assert "pip install 'fastopt[plot]'" in capsys.readouterr().err


def test_console_entry(capsys):
    assert main(["config"]) == 0
    assert "backends:" in capsys.readouterr().out
    assert main(["nosuch"]) == 2
    assert "unknown command 'nosuch'" in capsys.readouterr().err
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "adamw" in out and "reference" in out


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "fastopt.bench", "--op", "sgd", "--backend",
                          "cpu", *TINY], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sgd" in out.stdout and LIMIT in out.stdout


@pytest.mark.skipif(shutil.which("fastopt") is None, reason="the console script is installed "
                    "with the package")
def test_console_script():
    out = subprocess.run(["fastopt", "bench", "--list"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "adamw" in out.stdout
