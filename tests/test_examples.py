"""The examples run end to end (smoke tests: each takes a few seconds)."""

import os
import pathlib
import subprocess
import sys

import pytest

import fastopt

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the examples import the same fastopt as these tests (the installed one in CI, the checkout in
# development)
PACKAGE_PARENT = str(pathlib.Path(fastopt.__file__).resolve().parents[1])


def run(name: str) -> str:
    path = os.pathsep.join(p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
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
