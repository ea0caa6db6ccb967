"""The examples run end to end (smoke tests: each takes a few seconds)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(name: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_linear_regression():
    out = run("linear_regression.py")
    assert "fastopt: loss" in out
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert "agree to 1e-6" in out


def test_digits_mlp():
    pytest.importorskip("sklearn")
    out = run("digits_mlp.py")
    assert "test accuracy" in out
