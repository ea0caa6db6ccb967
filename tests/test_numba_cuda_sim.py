"""The numba_cuda backend's kernels in Numba's CUDA simulator, against the reference (tiny
sizes). NUMBA_ENABLE_CUDASIM must be set before numba is imported, so the check runs in a
fresh interpreter: tests/numba_cuda_sim_check.py."""

import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("numba")
pytest.importorskip("numba.cuda")

import fastopt  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


@pytest.mark.slow  # the simulator runs every CUDA thread in Python: about a minute
def test_numba_cuda_kernels_match_reference_in_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    # the child imports the same fastopt as this process (installed or source checkout)
    root = str(pathlib.Path(fastopt.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(HERE / "numba_cuda_sim_check.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert "arrays match" in proc.stdout


@pytest.mark.slow  # about half a minute in the simulator
def test_numba_cuda_losses_match_reference_in_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    root = str(pathlib.Path(fastopt.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(HERE / "numba_cuda_losses_sim_check.py")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    assert "arrays match" in proc.stdout

