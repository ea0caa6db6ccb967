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


def test_numba_cuda_loss_kernels_compile_for_sm90():
    """The loss kernels through NVVM to PTX for compute capability 9.0 (no GPU needed)."""
    code = """
import numba
from numba import cuda
from fastopt import _numba_cuda_losses as K
for dt in (numba.float32, numba.float64):
    a = dt[::1]
    ew = (a, numba.int64, a, a, numba.int64, a, numba.int64, a, numba.boolean, a, numba.boolean,
          numba.float64, numba.float64, numba.float64[::1])
    for it in (numba.int32[::1], numba.int64[::1]):
        ce = (a, it, numba.boolean, a, a, numba.boolean, numba.float64, a, numba.boolean,
              numba.int64, numba.int64, numba.int64, numba.int64, numba.float64, numba.float64,
              numba.float64, numba.float64, numba.float64[::1])
        for fn, sig in ((K.elementwise, ew), (K.cross_entropy, ce)):
            ptx, _ = cuda.compile_ptx(fn.py_func, sig, cc=(9, 0))
            assert ".target sm_90" in ptx, ptx[:400]
print("ptx ok")
"""
    root = str(pathlib.Path(fastopt.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    if "NvvmSupportError" in proc.stderr or "libNVVM" in proc.stderr:
        pytest.skip(f"no NVVM here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0 and "ptx ok" in proc.stdout, proc.stderr[-4000:]
