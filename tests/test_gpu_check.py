"""benchmarks/gpu_check.sh and gpu_check.py, tested on the CPU before a GPU sees them: the dry
run goes through every part with the CPU backends (GPU-only steps reported as skipped), under
the shell script's option parsing, time limit and log tee; an interrupted run still prints and
writes its summary."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

pytest.importorskip("torch")

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"

pytestmark = [
    pytest.mark.skipif(not SCRIPT.exists(), reason="not a source checkout"),
    pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                       reason="needs bash and timeout"),
]


def _env():
    return dict(os.environ, PYTHON=sys.executable, NUMBA_ENABLE_CUDASIM="0")


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_part(tmp_path):
    # --limit 1: the time left after the (skipped) build is clamped to the minimum, not 0
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--limit", "1", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env=_env(), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "ALL CHECKS PASSED" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dry_run"] and not summary["failures"] and not summary["interrupted"]
    rows = dict(summary["summary"])
    for check in ("1,000 backend resolutions (automatic)", "equality cpu vs reference",
                  "clip over 300 tensors", "Adam over 200 x 256 tensors, 3 steps",
                  "misaligned views buf[1:] (scalar path)", "sanitizer workload (no sanitizer)",
                  "equality cpu vs torch.optim", "cross_entropy cpu vs reference/torch",
                  "device-to-device copy"):
        assert check in rows, sorted(rows)
    assert rows["sanitizer workload (no sanitizer)"].startswith("clean")
    assert rows["CUDA graph capture, streams"].startswith("skipped")
    assert "one SGD step + norms of a 65,541-element float32 tensor" in rows
    # the log is teed next to the summary
    assert "ALL CHECKS PASSED" in (tmp_path / "gpu_check.log").read_text()


def test_gpu_check_interrupted_prints_its_summary(tmp_path):
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                             "--dry-run", "--out", str(tmp_path), "--only",
                             "environment,resolution,torch,equality"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env())
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "[resolution done]" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out[-4000:]
    assert "interrupted" in out and "INTERRUPTED" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"]
    assert "1,000 backend resolutions (automatic)" in dict(summary["summary"])


def test_gpu_check_sh_refuses_unknown_arguments(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True,
                          timeout=60, env=_env())
    assert proc.returncode == 64 and "unknown argument --bogus" in proc.stderr
