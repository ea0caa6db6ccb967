"""GPU code compiles and is checked on a machine without a GPU: every csrc/cuda/*.cu with nvcc
for sm_90; the CUDA kernels' launches replayed thread by thread on the host against the rules;
every Numba-CUDA kernel to PTX for compute capability 9.0 (NVVM, through numba-cuda); and
fastopt imports and reports why CUDA is unavailable when there is no driver."""

import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import fastopt

ROOT = pathlib.Path(__file__).resolve().parent.parent
CU_FILES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))


def _extension_has_cuda() -> bool:
    try:
        from fastopt import _C
    except ImportError:
        return False
    return bool(getattr(_C, "cuda_compiled", False))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
@pytest.mark.skipif(not CU_FILES, reason="not a source checkout")
@pytest.mark.skipif(_extension_has_cuda(), reason="the built extension already holds the .cu "
                    "objects (FASTOPT_CUDA found nvcc): that build compiled them")
def test_cuda_sources_compile_for_sm90(tmp_path):
    # one process for all files: nvcc's start-up dominates for small translation units
    cmd = ["nvcc", "-std=c++17", "-O1", "-arch=sm_90", "--device-c", "-Xcompiler=-fPIC",
           f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}", "-odir", str(tmp_path),
           *map(str, CU_FILES)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(list(tmp_path.glob("*.o"))) == len(CU_FILES)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
@pytest.mark.skipif(not CU_FILES, reason="not a source checkout")
def test_cuda_kernels_replayed_on_host_match_rules(tmp_path):
    """tests/cuda_kernel_emulation.cu runs every planned launch of the CUDA kernels thread by
    thread on the CPU (apply_block is host+device) and compares bitwise with the rules."""
    exe = tmp_path / "emulation"
    # PTX only (no ptxas): the device code is not what this test runs
    cmd = ["nvcc", "-std=c++17", "-O1", "-arch=compute_90", f"-I{ROOT / 'csrc' / 'include'}",
           f"-I{ROOT / 'csrc'}", str(ROOT / "tests" / "cuda_kernel_emulation.cu"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.startswith("ok")


def _kernel_signatures():
    from numba import types

    def arr(dt):
        return dt[::1]

    for dt, mt in ((types.float32, types.float32), (types.float64, types.float64),
                   (types.float16, types.float32)):
        a = arr(dt)

        def c(n, mt=mt):  # the constants, a tuple passed by value
            return types.UniTuple(mt, n)

        yield "adam", (a, a, a, a, a, c(16))
        yield "sgd", (a, a, a, c(9))
        yield "adagrad", (a, a, a, c(5))
        yield "rmsprop", (a, a, a, a, a, c(10))
        yield "lion", (a, a, a, c(1), types.UniTuple(types.float64, 8))
        yield "scale", (a, c(1))
        yield "clamp", (a, c(3))
        yield "norm_partials", (a, types.int64, types.float64, arr(types.float64))


def test_numba_cuda_kernels_compile_to_ptx_for_sm90():
    pytest.importorskip("numba.cuda")
    from numba import cuda

    if cuda.config.ENABLE_CUDASIM:
        pytest.skip("the simulator does not compile")
    from fastopt import _numba_cuda

    for name, sig in _kernel_signatures():
        try:
            ptx, _ = cuda.compile_ptx(_numba_cuda.KERNELS[name].py_func, sig, cc=(9, 0))
        except Exception as exc:  # NVVM missing: a packaging problem of the environment
            if "NVVM" in str(exc) or "libnvvm" in str(exc):
                pytest.skip(f"NVVM unavailable: {exc}")
            raise
        assert ".target sm_90" in ptx and ".entry" in ptx, name


def test_import_and_show_config_without_gpu(capsys):
    fastopt.show_config()
    out = capsys.readouterr().out
    assert "cuda" in out and "numba_cuda" in out
    from fastopt import backends

    rows = {name: (ok, why) for name, _, ok, why in backends.status()}
    ok, why = rows["cuda"]
    if not ok:
        assert why  # says why: not compiled in, or no driver/GPU


def test_cuda_arrays_without_a_usable_backend_raise_clearly():
    from fastopt import backends

    ok_cuda = backends.get("cuda").available()[0]
    if ok_cuda:
        pytest.skip("a GPU is present")
    with pytest.raises(backends.BackendUnavailable, match="cuda"):
        backends.resolve("cuda", "cuda")
    # a CPU array on a CUDA-only backend is refused with the reason
    with pytest.raises(backends.BackendUnavailable):
        fastopt.functional.sgd_([np.zeros(2)], [np.zeros(2)], lr=0.1, backend="numba_cuda")


class _RecordingExtension:
    """Stands in for fastopt._C.cuda: records each launcher call."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            return 0.0

        return call


@pytest.mark.parametrize("op", ["sgd", "adam", "adagrad", "rmsprop", "lion"])
def test_cuda_backend_passes_table_device_stream_and_scalars(op, monkeypatch):
    """The Python side of the cuda backend, without a GPU: each optimizer reaches its launcher
    with the table, dtype code, device, stream and the capturable scalar pointers."""
    from trajectories import CASES

    from fastopt.backends import cuda as cuda_backend

    ext = _RecordingExtension()
    backend = cuda_backend.CudaBackend()
    monkeypatch.setattr(backend, "_cu", ext)
    hyper = dict(next(h for o, h in CASES if o == op))
    p = [np.zeros(5, np.float32), np.zeros(3, np.float32)]
    arrays = {"param": p, "grad": [np.ones(5, np.float32), np.ones(3, np.float32)]}
    for slot in fastopt.functional.SLOTS[op][2:]:
        arrays[slot] = [np.zeros_like(x) for x in p]
    table = fastopt.functional.tables_for(op, arrays)[0]
    defaults = {"sgd": dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                            maximize=False, first_step=True),
                "adam": dict(step=3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                             decoupled=False, amsgrad=False, maximize=False,
                             bias_correction=True, eps_inside_sqrt=False),
                "adagrad": dict(step=2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
                                maximize=False),
                "rmsprop": dict(alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                                centered=False, maximize=False),
                "lion": dict(beta1=0.9, beta2=0.99, weight_decay=0.0, maximize=False)}[op]
    getattr(backend, op)(table, **{**defaults, **hyper}, lr_ptr=1024, step_ptr=2048)
    (name, args), = ext.calls
    assert name == op
    assert args[0] is table.ptrs and args[1] is table.numel
    assert args[2:5] == (0, 0, 0)  # float32 code, device 0, stream 0 (NumPy: default stream)
    assert args[-2:] == (1024, 2048)
    if op == "adam":  # bias corrections left to the device step
        assert args[10:12] == (0.0, 0.0)
