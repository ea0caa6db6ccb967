"""`fastopt bench`: the command line runs every option on tiny sizes (speed is not asserted
here; it belongs in benchmarks/), and bad options fail with a clear message."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastopt.bench import LIMIT, Case, run
from fastopt.bench.__main__ import bench_main, main, parse_case_size, parse_size
from fastopt.bench.ops import REGISTRY
from fastopt.bench.probe import Probe, Streams
from fastopt.bench.timing import calibrate, gbps, interleaved, median

TINY = ["--sizes", "1K", "--repeat", "2", "--warmup", "1"]


def _bench(capsys, *argv):
    assert bench_main(list(argv)) == 0
    return capsys.readouterr().out


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
    assert rows["cpu"].nbytes == 28 * 1000  # DESIGN.md: Adam fp32 moves 28 bytes/element
    assert rows["cpu"].speedup["reference"] == pytest.approx(
        rows["reference"].median_s / rows["cpu"].median_s)
    assert rows[LIMIT].pct_limit == pytest.approx(100.0)


def test_registry_bytes_follow_design_table():
    per_elem = {name: op.streams.accesses * 4 for name, op in REGISTRY.items()}
    assert per_elem["sgd"] == 12 and per_elem["sgd_momentum"] == 20
    assert per_elem["adam"] == per_elem["adamw"] == 28 and per_elem["adam_amsgrad"] == 36
    assert per_elem["adagrad"] == per_elem["rmsprop"] == per_elem["lion"] == 20


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


def test_cli_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plot.png"
    _bench(capsys, "--op", "sgd", "--sizes", "1K,4K", "--backend", "cpu", "--repeat", "2",
           "--plot", str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["--op", "nosuch"], "--op: unknown op 'nosuch'"),
    (["--backend", "nosuch"], "--backend: unknown backend 'nosuch'"),
    (["--dtype", "int8"], "--dtype: unsupported dtype 'int8'"),
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


def test_cli_plot_without_matplotlib(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
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
