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



def test_numba_cuda_unavailable_when_its_array_support_cannot_load(monkeypatch):
    """numba-cuda 0.30 under NumPy 2.5 (np.row_stack removed) fails every compile deep in
    numba: the backend reports that as unavailable, with the versions, before any launch."""
    import importlib
    import types

    from fastopt.backends import numba_cuda as module

    real_import = importlib.import_module

    def broken(name, *args):
        if name == "numba.cuda.np.arrayobj":
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")
        return real_import(name, *args)

    assert module._array_support_error() is None  # this machine's NumPy works
    backend = module.NumbaCudaBackend()
    device = types.SimpleNamespace(name=b"Test GPU")
    monkeypatch.setattr(module, "_simulated", lambda: False)
    monkeypatch.setattr(module._cuda(), "is_available", lambda: True)
    monkeypatch.setattr(module._cuda(), "get_current_device", lambda: device)
    assert backend.available() == (True, "Numba-CUDA on Test GPU")
    backend._available = None
    monkeypatch.setattr(importlib, "import_module", broken)
    ok, why = backend.available()
    assert not ok and "row_stack" in why and "NumPy" in why and "numba-cuda 0." in why
