"""GPU code compiles and is checked on a machine without a GPU: every csrc/cuda/*.cu with nvcc
for sm_90; the CUDA kernels' launches replayed thread by thread on the host against the
per-element step, for every optimizer of csrc/include/fastopt/optimizers.h;
every Numba-CUDA kernel to PTX for compute capability 9.0 (NVVM, through numba-cuda); and
fastopt imports and reports why CUDA is unavailable when there is no driver."""

import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from conftest import FULL
from tolerances import assert_close

import fastopt
import fastopt.losses
from fastopt import _arrays, ops

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
    thread on the CPU (apply_block is host+device) and compares bitwise with the per-element
    step, for every optimizer of csrc/include/fastopt/optimizers.h in every variant (in
    float64 and the 16-bit storage types by default the plainest and fullest variant of each;
    every variant with FASTOPT_TEST_FULL=1)."""
    exe = tmp_path / "emulation"
    # PTX only (no ptxas), unoptimized (-Xcicc -O0): the device code is not what this test runs
    cmd = ["nvcc", "-std=c++17", "-O1", "-arch=compute_90", "-Xcicc", "-O0",
           f"-DFASTOPT_EMULATION_FULL={int(FULL)}", f"-I{ROOT / 'csrc' / 'include'}",
           f"-I{ROOT / 'csrc'}", str(ROOT / "tests" / "cuda_kernel_emulation.cu"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.startswith("ok")


def _taken_in_turn(items, k: int) -> list:
    """All of items with FASTOPT_TEST_FULL=1, else the k-th (cyclically): each compile to PTX
    takes seconds, and a sweep over kernels takes the dtypes in turn, so that every kernel and
    every dtype is compiled at least once."""
    return list(items) if FULL else [items[k % len(items)]]


def _kernel_signatures():
    """The clipping kernels' signatures in every storage dtype (the optimizers' are made from
    the specs in the test); by default each kernel in one dtype."""
    from numba import types

    i = types.int64[::1]  # the table's metadata: pointers, block starts, sizes
    dtypes = ((types.float32, types.float32), (types.float64, types.float64),
              (types.float16, types.float32))
    for dt, mt in _taken_in_turn(dtypes, 2):
        yield "clamp", (i, i, i, dt[::1], types.UniTuple(mt, 3))
    for dt, _ in _taken_in_turn(dtypes, 0):
        yield "norm_partials", (i, i, i, dt[::1], types.int64, types.float64,
                                types.float64[::1])


def _loss_kernel_signatures():
    """The loss kernels' signatures in both dtypes and (cross-entropy) both index dtypes; by
    default each kernel once, each dtype and index dtype at least once."""
    from numba import types

    def arrays(dt):
        return dt[::1], types.float64, types.boolean, types.int64

    for dt in _taken_in_turn((types.float32, types.float64), 0):
        a, f, b, i = arrays(dt)
        yield "elementwise", (a, i, a, a, i, a, i, a, b, a, b, f, f, f[::1])
    pairs = [(dt, index) for dt in (types.float64, types.float32)
             for index in (types.int32[::1], types.int64[::1])]
    for dt, index in (pairs if FULL else pairs[::3]):
        a, f, b, i = arrays(dt)
        yield "cross_entropy", (a, index, b, a, a, b, f, a, b, i, i, i, i, f, f, f, f, f[::1])


def test_numba_cuda_kernels_compile_to_ptx_for_sm90():
    """Every optimizer's kernel (the driver template around its rule) and the clipping
    kernels compile for sm_90 in every storage dtype, without a GPU (by default each kernel in
    one storage dtype, the dtypes taken in turn; all with FASTOPT_TEST_FULL=1)."""
    pytest.importorskip("numba.cuda")
    from numba import cuda
    from numba.cuda import types

    if cuda.config.ENABLE_CUDASIM:
        pytest.skip("the simulator does not compile")
    from fastopt.backends import _numba_cuda

    i64 = types.int64[::1]
    kernels = [(name, _numba_cuda.KERNELS[name], sig) for name, sig in _kernel_signatures()]
    storages = ((types.float32, types.float32), (types.float16, types.float32),
                (types.float64, types.float64))
    for k, spec in enumerate(ops.REGISTRY.values()):
        for storage, math in _taken_in_turn(storages, k):
            math = types.float64 if spec.math == "float64" else math
            scalars = types.UniTuple(math, len(ops.HEAD) + len(spec.scalars_order))
            kernels.append((spec.name, _numba_cuda.optimizer_kernel(spec),
                            (i64, i64, i64, storage[::1], scalars)))
    for name, kernel, sig in kernels:
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        except Exception as exc:  # NVVM missing: a packaging problem of the environment
            if "NVVM" in str(exc) or "libnvvm" in str(exc):
                pytest.skip(f"NVVM unavailable: {exc}")
            raise
        assert ".target sm_90" in ptx and ".entry" in ptx, name


def test_numba_cuda_loss_kernels_compile_to_ptx_for_sm90():
    pytest.importorskip("numba.cuda")
    from numba import cuda

    if cuda.config.ENABLE_CUDASIM:
        pytest.skip("the simulator does not compile")
    from fastopt import _numba_cuda_losses

    for name, sig in _loss_kernel_signatures():
        try:
            ptx, _ = cuda.compile_ptx(getattr(_numba_cuda_losses, name).py_func, sig,
                                      cc=(9, 0))
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


def test_cuda_backend_step_passes_op_table_device_stream_and_scalars(monkeypatch):
    """The Python side of the cuda backend, without a GPU: backend.step(op, table, scalars)
    reaches _C.cuda.step with the op name, the table, its dtype code, device and stream (the
    arrays' own), and the scalar vector unchanged."""
    from fastopt._table import TensorTable
    from fastopt.backends import cuda as cuda_backend

    ext = _RecordingExtension()
    backend = cuda_backend.CudaBackend()
    monkeypatch.setattr(backend, "_cu", ext)
    rows = {name: [_fake_cuda_with_namespace(np.zeros(n, np.float64), stream=7, device=1)
                   for n in (5, 3)] for name in ("param", "grad", "exp_avg")}
    table = TensorTable(slots=tuple(rows), dtype="float64", device=("cuda", 1),
                        index=np.arange(2),
                        specs={k: [_arrays.describe(x) for x in v] for k, v in rows.items()})
    scalars = ops.get("lion").prepare(dict(ops.get("lion").defaults), 1.0)
    backend.step("lion", table, scalars)
    (name, args), = ext.calls
    assert name == "step"
    assert args[0] == "lion" and args[1] is table.ptrs and args[2] is table.numel
    assert args[3:6] == (1, 1, 7)  # float64 code, device 1, the arrays' stream
    assert args[6] is scalars.vector


@pytest.mark.skipif(not _extension_has_cuda(), reason="the extension has no CUDA kernels")
def test_cuda_launchers_refuse_bad_pointer_tables_before_launching():
    """fastopt._C.cuda checks every table, scalar vector, device scalar and cross-entropy
    pointer on the host and raises ValueError naming the op, slot and tensor, before it selects
    a device or launches anything (so this runs without a GPU: a valid table would fail later,
    at the device). The rows an optimizer needs follow its variant flags."""
    from fastopt import _C

    cu = _C.cuda
    buf = np.zeros(64, np.float32)
    a = buf.ctypes.data
    numel = np.array([4, 7], np.int64)
    meta = {d["name"]: d for d in _C.optimizers()}

    def table(rows):
        return np.array(rows, np.uint64).reshape(len(rows) // 2, 2)

    head = len(ops.HEAD)

    def scalars(op, **flags):
        s = np.zeros(head + len(meta[op]["scalars"]))
        s[:2] = 1.0  # one, sign
        s[ops.HEAD.index("decay")] = 1.0
        for name, value in flags.items():
            s[head + meta[op]["scalars"].index(name)] = value
        return s

    good = [a, a + 16, a + 48, a + 64, a + 96, a + 128, a + 160, a + 192, 0, 0]

    def adam(rows, n=numel, s=None):
        cu.step("adam", table(rows), n, 0, 0, 0, scalars("adam") if s is None else s)

    with pytest.raises(ValueError, match=r"adam: exp_avg\[1\]: null pointer for 7 elements"):
        adam(good[:5] + [0] + good[6:])
    with pytest.raises(ValueError, match=r"adam: grad\[0\]: address 0x[0-9a-f]+ is not aligned "
                                         r"to its 4-byte elements"):
        adam(good[:2] + [a + 18] + good[3:])
    with pytest.raises(ValueError, match=r"param\[1\]: negative numel -1"):
        adam(good, np.array([4, -1], np.int64))
    with pytest.raises(ValueError, match=r"pointer table must have shape \(5, n_tensors\)"):
        cu.step("adam", table(good[:8]), numel, 0, 0, 0, scalars("adam"))
    with pytest.raises(ValueError, match=r"adam: max_exp_avg_sq\[0\]: null pointer"):
        adam(good, s=scalars("adam", amsgrad=1.0))
    want = head + len(meta["adam"]["scalars"])
    with pytest.raises(ValueError,
                       match=rf"fastopt CUDA adam: scalars must be .* of {want} values"):
        adam(good, s=np.ones(want - 1))
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamw' \(compiled: sgd, adam"):
        cu.step("adamw", table(good), numel, 0, 0, 0, scalars("adam"))
    with pytest.raises(ValueError, match=r"sgd: momentum_buffer\[0\]: null pointer"):
        cu.step("sgd", table(good[:4] + [0, 0]), numel, 0, 0, 0,
                scalars("sgd", has_momentum=1.0))
    with pytest.raises(ValueError, match=r"rmsprop: grad_avg\[0\]: null pointer"):
        cu.step("rmsprop", table(good[:8] + [0, 0]), numel, 0, 0, 0,
                scalars("rmsprop", centered=1.0))
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
        cu.step("sgd", table(good[:6]), numel, 7, 0, 0, scalars("sgd"))
    with pytest.raises(ValueError, match=r"clamp: grad\[0\]: address .* wraps around"):
        cu.clamp(table([2**64 - 16, a]), numel, 0, 0, 0, 1.0)
    with pytest.raises(ValueError, match="workspace holds 1 partials, the table needs 2"):
        cu.norm_partials(table([a, a + 16]), numel, 0, 0, 0, 0, 2.0, a, 1)
    with pytest.raises(ValueError, match="scale_by: coef: null pointer"):
        cu.scale_by(table([a, a + 16]), numel, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="norm_finish: .*not aligned"):
        cu.norm_finish(a, 2, 0, 2.0, 1.0, a + 4, 0, 0)
    # cross_entropy(dtype, device, stream, logits, grad, target, kind, weight, row_loss, n, c, ...)
    with pytest.raises(ValueError, match="cross_entropy: target: null pointer for 3 elements"):
        cu.cross_entropy(0, 0, 0, a, 0, 0, 1, 0, a, 3, 5, -100, 0.0, 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="cross_entropy: target: address .* 8-byte"):
        cu.cross_entropy(0, 0, 0, a, 0, a + 4, 1, 0, a, 3, 5, -100, 0.0, 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="cross_entropy: row_loss: address .* 8-byte"):
        cu.cross_entropy(0, 0, 0, a, 0, a, 0, 0, a + 4, 3, 5, -100, 0.0, 0.0, 0.0, 1)
    assert not hasattr(cu, "add_scalar") and not hasattr(cu, "adam")


class _CountingCuda:
    """fastopt._C.cuda with two devices, counting the device queries."""

    def __init__(self):
        self.queries = 0

    def device_count(self):
        self.queries += 1
        return 2, ""

    def runtime_version(self):
        return 13000

    def device_name(self, i):
        self.queries += 1
        return f"GPU {i}"

    def large_params(self, i):
        self.queries += 1
        return i == 0


def test_cuda_availability_is_queried_once(monkeypatch):
    """backends.resolve() asks the backend on every kernel call: the device-properties query
    behind available() is made once, then the answer is kept."""
    from fastopt import backends
    from fastopt.backends import cuda as cuda_backend

    backend = cuda_backend.CudaBackend()
    ext = _CountingCuda()
    monkeypatch.setattr(backend, "_cu", ext)
    monkeypatch.setitem(backends._loaded, "cuda", backend)
    monkeypatch.delenv("FASTOPT_BACKEND", raising=False)
    ok, why = backend.available()
    assert ok and "GPU 0" in why and "GPU 1" in why
    assert "32 KiB kernel parameters on devices [0]" in why
    first = ext.queries
    for _ in range(1000):
        assert backends.resolve(None, "cuda") is backend
        assert backends.resolve("cuda", "cuda") is backend
    assert ext.queries == first


def test_cuda_availability_failure_is_not_kept_as_success(monkeypatch):
    from fastopt.backends import cuda as cuda_backend

    class NoDevice(_CountingCuda):
        def device_count(self):
            self.queries += 1
            return -1, "cudaErrorNoDevice: no CUDA-capable device is detected"

    backend = cuda_backend.CudaBackend()
    monkeypatch.setattr(backend, "_cu", NoDevice())
    ok, why = backend.available()
    assert not ok and "no CUDA-capable device" in why
    assert backend.available() == (ok, why)


class _RecordingClip(_RecordingExtension):
    """Records the launcher calls; norm_blocks answers as the C++ one (64K-element chunks)."""

    def norm_blocks(self, numel):
        return int(sum(-(-int(n) // 65536) for n in numel))


def _fake_cuda_with_namespace(a: np.ndarray, stream: int = 7, device: int = 0):
    class Namespace:
        float64 = np.float64

        @staticmethod
        def empty(shape, dtype):
            return _fake_cuda_with_namespace(np.empty(shape, dtype), stream, device)

    class Fake(_FakeCudaArray):
        def __array_namespace__(self):
            return Namespace

        def __getitem__(self, key):
            return self.a[key]

    f = Fake(a, stream)
    f.device = type("Device", (), {"index": device})()
    return f


def test_grad_norm_clipper_keeps_everything_on_the_device(monkeypatch):
    """GradNormClipper on CUDA arrays: per table, the partials into the workspace after the
    previous table's; one fold writing norm and coefficient; every table scaled by the
    coefficient in device memory; all on the grads' stream, and no new workspace per call."""
    from fastopt import backends, clip

    backend = backends.get("cuda")
    ext = _RecordingClip()
    monkeypatch.setattr(backend, "_cu", ext)
    monkeypatch.setattr(backend, "available", lambda: (True, "test double"))
    grads = [_fake_cuda_with_namespace(np.ones(70000, np.float32)),
             _fake_cuda_with_namespace(np.ones(3, np.float64)),
             _fake_cuda_with_namespace(np.ones(5, np.float32))]
    clipper = clip.GradNormClipper(1.0, 3.0)
    clipper(grads)
    work = clipper._work
    ws = _arrays.describe(work).ptr
    assert work.shape == (2 + 2 + 1 + 1,) and work.dtype == np.float64
    names = [name for name, _ in ext.calls]
    assert names == ["norm_partials", "norm_partials", "norm_finish", "scale_by", "scale_by"]
    (_, a32), (_, a64), (_, fin), (_, s32), (_, s64) = ext.calls
    # (ptrs, numel, dtype, device, stream, kind, p, partial, capacity)
    assert list(a32[1]) == [70000, 5] and a32[2:7] == (0, 0, 7, 3, 3.0)
    assert a32[7:] == (ws + 16, 4)
    assert list(a64[1]) == [3] and a64[2] == 1 and a64[7:] == (ws + 16 + 8 * 3, 1)
    assert fin == (ws + 16, 4, 3, 3.0, 1.0, ws, 0, 7)
    assert s32[2:] == (0, 0, 7, ws + 8) and s64[2:] == (1, 0, 7, ws + 8)
    ext.calls.clear()
    clipper(grads)  # the same workspace: nothing allocated
    assert clipper._work is work and ext.calls[2][1][5] == ws
    clipper([_fake_cuda_with_namespace(np.ones(300000, np.float32))])  # more partials: grown
    assert clipper._work is not work and clipper._work.shape == (2 + 5,)


def test_clip_grad_norm_on_cuda_arrays_runs_on_each_call_s_stream(monkeypatch):
    """clip_grad_norm_ keeps no grad between calls (its tables release the row), yet each call
    reaches the launcher with that call's grads' stream, and a second call with new arrays of
    the same layout is validated against the kept layout (the generic path of a framework
    without a C++ gather); another shape rebuilds."""
    from fastopt import backends, clip

    backend = backends.get("cuda")
    ext = _RecordingClip()
    monkeypatch.setattr(backend, "_cu", ext)
    monkeypatch.setattr(backend, "available", lambda: (True, "test double"))
    clip._kept.clear()
    for stream in (7, 9, 9):
        grads = [_FakeCudaArray(np.ones(5, np.float32), stream),
                 _FakeCudaArray(np.ones(3, np.float32), stream)]
        ext.calls.clear()
        clip.clip_grad_norm_(grads, 1.0)
        norm = [args for name, args in ext.calls if name == "norm_sum"]
        assert len(norm) == 1 and norm[0][3:5] == (0, stream)  # (ptrs, numel, dtype, dev, s)
        assert list(norm[0][0][0]) == [_arrays.describe(g).ptr for g in grads]
    cache = clip._kept._caches[2]
    assert cache.builds == 1  # calls 2 and 3 re-validated the new arrays against the kept ones
    (table,) = cache._tables
    assert all(s.obj is None for s in table.specs["grad"])  # no reference to any grad
    ext.calls.clear()
    clip.clip_grad_norm_([_FakeCudaArray(np.ones(5, np.float32)),
                          _FakeCudaArray(np.ones(4, np.float32))], 1.0)  # another shape
    (norm,) = [args for name, args in ext.calls if name == "norm_sum"]
    assert list(norm[1]) == [5, 4]
    clip._kept.clear()


def test_grad_norm_clipper_on_cuda_arrays_needs_the_cuda_backend(monkeypatch):
    from fastopt import backends, clip

    monkeypatch.setattr(backends.get("numba_cuda"), "available", lambda: (True, "test double"))
    g = _fake_cuda_with_namespace(np.ones(3, np.float32))
    with pytest.raises(backends.BackendUnavailable, match="needs the cuda backend"):
        clip.GradNormClipper(1.0, backend="numba_cuda")([g])
    with pytest.raises(ValueError, match="several devices"):
        clip.GradNormClipper(1.0, backend="numba_cuda")(
            [g, _fake_cuda_with_namespace(np.ones(3, np.float32), device=1)])


class _FakeNumbaCuda:
    """numba.cuda for the numba_cuda backend without a GPU: a context per device that records
    which device was current for each allocation and launch."""

    def __init__(self):
        self.current = 0
        self.events = []
        fake = self

        class Context:
            def __init__(self, i):
                self.i = i

            def __enter__(self):
                self.previous, fake.current = fake.current, self.i

            def __exit__(self, *exc):
                fake.current = self.previous

        self.gpus = [Context(0), Context(1)]

    def from_cuda_array_interface(self, desc, owner=None, sync=False):
        self.events.append(("view", self.current))
        return np.zeros(desc["shape"], np.dtype(desc["typestr"]))

    def to_device(self, host, stream=None):
        self.events.append(("copy", self.current))
        return np.array(host)

    def device_array(self, n, dtype, stream=None):
        self.events.append(("alloc", self.current))

        class Out(np.ndarray):
            def copy_to_host(self, stream=None):
                return np.asarray(self)

        return np.zeros(n, dtype).view(Out)

    def external_stream(self, handle):
        class Stream:
            def synchronize(self):
                pass

        return Stream()


def test_numba_cuda_norm_runs_in_the_arrays_device_context(monkeypatch):
    from fastopt.backends import numba_cuda as nc

    fake = _FakeNumbaCuda()

    class Kernel:
        def __getitem__(self, config):
            def launch(*args):
                fake.events.append(("launch", fake.current))
                args[-1][:] = 4.0  # every block's partial sum of squares
            return launch

    monkeypatch.setattr(nc, "_simulated", lambda: False)
    monkeypatch.setattr(nc, "_cuda", lambda: fake)
    monkeypatch.setattr(nc, "_get", lambda: {"norm_partials": Kernel()})
    g = _fake_cuda_with_namespace(np.ones(3, np.float32), device=1)
    table = fastopt.clip._tables([g])[0]
    assert table.device == ("cuda", 1)
    assert nc.NumbaCudaBackend().norm_sum(table, 2.0) == 4.0
    # the table's metadata, the partials and the dummy for missing rows, then the launch
    assert fake.events == [("copy", 1), ("alloc", 1), ("copy", 1), ("launch", 1)]
    assert fake.current == 0  # restored


def test_numba_cuda_explains_a_driver_that_cannot_jit_the_ptx(monkeypatch):
    from fastopt.backends import numba_cuda as nc

    refusal = RuntimeError("[222] Call to cuLinkAddData results in "
                           "CUDA_ERROR_UNSUPPORTED_PTX_VERSION: ptxas application ptx input, "
                           "line 9; fatal : Unsupported .version 8.8; current version is '8.4'")
    monkeypatch.setattr(nc, "_versions", lambda: ("12.4", "12.8"))
    err = nc.explain_jit_error(refusal, "adam[float32]")
    assert isinstance(err, RuntimeError)
    for words in ("driver (CUDA 12.4)", "NVVM (CUDA 12.8)", "PTX ISA 8.8", "adam[float32]",
                  "backend='cuda'", "upgrade the driver", "nvjitlink"):
        assert words in str(err)
    assert nc.explain_jit_error(ValueError("wrong shape"), "adam[float32]") is None

    class Refusing:
        def __getitem__(self, config):
            def launch(*args):
                raise refusal
            return launch

    monkeypatch.setattr(nc, "_compile_times", {})
    with pytest.raises(RuntimeError, match="cannot JIT-compile") as info:
        nc.NumbaCudaBackend._call(Refusing(), "adam", "float32", 1, 0, ())
    assert info.value.__cause__ is refusal
    with pytest.raises(KeyError):  # anything else passes through unchanged
        nc.NumbaCudaBackend._call({}, "adam", "float32", 1, 0, ())


# --- cross-entropy ------------------------------------------------------------------------

_CE_CASES = [  # (shape, dtype, options, reduction, index dtype, inplace)
    ((3, 7), np.float32, {}, "mean", np.int64, False),
    ((5, 4097), np.float32, dict(weight=True, ignore=True, label_smoothing=0.2), "mean",
     np.int32, False),
    ((2, 50257), np.float32, dict(z_loss=1e-4), "sum", np.int64, True),
    ((4, 1031), np.float32, dict(softcap=5.0, label_smoothing=0.1), "none", np.int64, False),
    ((3, 2049), np.float32, dict(probs=True, weight=True, label_smoothing=0.1), "mean", None,
     False),
    ((3, 1500), np.float64, dict(weight=True, ignore=True, label_smoothing=0.3, z_loss=1e-3,
                                 softcap=4.0), "mean", np.int64, True),
    ((2, 999), np.float64, dict(probs=True, softcap=3.0, z_loss=1e-3), "none", None, False),
    ((1, 1), np.float64, {}, "mean", np.int64, False),
    ((4, 33), np.float32, dict(nonfinite=True), "none", np.int64, False),
]


@pytest.fixture(scope="module")
def ce_emulator(tmp_path_factory):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found")
    if not CU_FILES:  # the tests were copied beside an installed wheel: no csrc/ here
        pytest.skip("not a source checkout")
    exe = tmp_path_factory.mktemp("ce") / "cuda_ce_emulation"
    cmd = ["nvcc", "-std=c++17", "-O1", "-arch=compute_90", "-Xcicc", "-O0",
           f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}",
           str(ROOT / "tests" / "cuda_ce_emulation.cu"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


# the tests sharing a compiled replay stay on one worker under pytest-xdist (--dist loadgroup)
@pytest.mark.xdist_group("ce_emulator")
@pytest.mark.parametrize("case", range(len(_CE_CASES)))
def test_cuda_cross_entropy_replayed_on_host_matches_reference(case, ce_emulator, tmp_path):
    """The CUDA cross-entropy kernel's per-thread sweeps and block folds, replayed on the host
    by tests/cuda_ce_emulation.cu (1024 threads per row, the kernel's fold order), against
    fastopt.reference: loss, row losses and gradient (in place or not)."""
    from fastopt import reference as ref

    shape, dtype, opts, reduction, index_dtype, inplace = _CE_CASES[case]
    rng = np.random.default_rng(case)
    n, c = shape
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if opts.get("nonfinite"):
        x[1, 5], x[2, 0], x[3, :] = np.nan, np.inf, -np.inf
    if opts.get("probs"):
        p = rng.random(shape)
        t = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
        kind = 2
    else:
        t = rng.integers(0, c, n).astype(index_dtype)
        if opts.get("ignore"):
            t[::3] = -100
        kind = 0 if index_dtype == np.int32 else 1
    w = (rng.random(c) + 0.5).astype(dtype) if opts.get("weight") else None
    kw = {k: v for k, v in opts.items() if k in ("label_smoothing", "z_loss", "softcap")}
    files = {name: tmp_path / name for name in ("x", "t", "w", "rows", "g")}
    x.tofile(files["x"])
    t.tofile(files["t"])
    if w is not None:
        w.tofile(files["w"])
    bits = 64 if dtype == np.float64 else 32
    args = [str(ce_emulator), str(bits), str(kind), str(n), str(c), "-100",
            repr(kw.get("label_smoothing", 0.0)), repr(kw.get("z_loss", 0.0)),
            repr(kw.get("softcap", 0.0)), str({"none": 0, "mean": 1, "sum": 2}[reduction]),
            str(files["x"]), str(files["t"]), str(files["w"]) if w is not None else "-",
            str(files["rows"]), str(files["g"]), str(int(inplace))]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stdout + run.stderr
    total, denom, bad = run.stdout.split()[1:]
    assert int(bad) == -1
    rows = np.fromfile(files["rows"], dtype=np.float64)
    grad = np.fromfile(files["g"], dtype=dtype).reshape(shape)
    rloss, rgrad = ref.cross_entropy(x, t, w, reduction=reduction, **kw)
    if reduction == "none":
        assert_close(rows.astype(dtype), rloss, dtype, "row losses")
    else:
        loss = float(total) if reduction == "sum" else float(total) / float(denom)
        assert_close(loss, rloss, dtype, "loss")
    assert_close(grad, rgrad, dtype, "grad")


@pytest.mark.xdist_group("ce_emulator")
def test_cuda_cross_entropy_replay_reports_bad_target(ce_emulator, tmp_path):
    x = np.zeros((3, 5), np.float32)
    t = np.array([1, 7, 2], np.int64)
    x.tofile(tmp_path / "x")
    t.tofile(tmp_path / "t")
    args = [str(ce_emulator), "32", "1", "3", "5", "-100", "0", "0", "0", "1",
            str(tmp_path / "x"), str(tmp_path / "t"), "-", str(tmp_path / "rows"),
            str(tmp_path / "g"), "0"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert run.stdout.split()[-1] == "1"


class _FakeCudaArray:
    """A host buffer dressed as a CUDA array (__cuda_array_interface__ v3 with a stream), for
    routing tests without a GPU."""

    def __init__(self, a: np.ndarray, stream: int = 7):
        self.a = a
        self.shape = a.shape
        self.dtype = a.dtype
        self.__cuda_array_interface__ = {"shape": a.shape, "typestr": a.dtype.str,
                                         "data": (a.ctypes.data, False), "version": 3,
                                         "strides": None, "stream": stream}

    def __array_namespace__(self):
        class _Namespace:
            @staticmethod
            def empty(shape, dtype):
                return _FakeCudaArray(np.empty(shape, dtype))

        return _Namespace

    def reshape(self, *shape):
        return self.a.reshape(*shape)

    def __setitem__(self, key, value):
        self.a[key] = value


class _RecordingCrossEntropy:
    def __init__(self, result):
        self.calls = []
        self.result = result

    def cross_entropy(self, *args):
        self.calls.append(args)
        return self.result

    def elementwise_loss(self, *args):
        self.calls.append(args)
        return 6.0


@pytest.fixture
def fake_cuda(monkeypatch):
    from fastopt import backends

    backend = backends.get("cuda")
    ext = _RecordingCrossEntropy((6.0, 4.0, -1))
    monkeypatch.setattr(backend, "_cu", ext)
    monkeypatch.setattr(backend, "available", lambda: (True, "test double"))
    return ext


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_route_cuda_arrays_to_the_cuda_backend(fake_cuda, reduction):
    """fastopt.losses.cross_entropy on CUDA arrays reaches the CUDA launcher with the device,
    the array's stream, the pointers and options, and allocates the gradient like the logits."""
    x = _FakeCudaArray(np.zeros((4, 9), np.float32))
    t = _FakeCudaArray(np.array([1, 2, -100, 3], np.int32))
    w = _FakeCudaArray(np.ones(9, np.float32))
    loss, grad = fastopt.losses.cross_entropy(x, t, w, reduction=reduction,
                                              label_smoothing=0.25, z_loss=1e-3, softcap=2.0)
    (args,) = fake_cuda.calls
    spec = _arrays.describe
    assert args[:3] == (0, 0, 7)  # float32 code, device 0, the array's stream
    assert args[3] == spec(x).ptr and args[5] == spec(t).ptr and args[7] == spec(w).ptr
    assert isinstance(grad, _FakeCudaArray) and args[4] == spec(grad).ptr
    assert grad.shape == (4, 9) and grad.dtype == np.float32
    assert args[6] == 0  # int32 class indices
    assert args[9:] == (4, 9, -100, 0.25, 1e-3, 2.0, {"none": 0, "mean": 1, "sum": 2}[reduction])
    if reduction == "mean":
        assert loss == 1.5
    elif reduction == "sum":
        assert loss == 6.0
    else:  # the row losses come back as an array of the logits' kind
        assert isinstance(loss, _FakeCudaArray) and loss.shape == (4,)


def test_losses_cuda_inplace_forward_only_and_device_mismatch(fake_cuda):
    x = _FakeCudaArray(np.zeros((2, 3), np.float64))
    t = _FakeCudaArray(np.zeros((2, 3), np.float64))  # probabilities
    loss, grad = fastopt.losses.cross_entropy(x, t, inplace=True)
    assert grad is x and fake_cuda.calls[-1][4] == fake_cuda.calls[-1][3]
    assert fake_cuda.calls[-1][:3] == (1, 0, 7) and fake_cuda.calls[-1][6] == 2
    fastopt.losses.cross_entropy(x, t, return_grad=False)
    assert fake_cuda.calls[-1][4] == 0
    with pytest.raises(ValueError, match="target"):
        fastopt.losses.cross_entropy(x, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="weight"):
        fastopt.losses.cross_entropy(x, _FakeCudaArray(np.zeros(2, np.int64)),
                                     np.ones(3, np.float64))
    with pytest.raises(ValueError, match="target: expected a host array"):
        fastopt.losses.cross_entropy(np.zeros((2, 3)), _FakeCudaArray(np.zeros(2, np.int64)))


def test_losses_cuda_arrays_without_the_cuda_backend_raise_clearly(monkeypatch):
    from fastopt import backends

    monkeypatch.setattr(backends.get("cuda"), "available", lambda: (False, "no driver"))
    # on a machine with a GPU numba_cuda is there: it must not see these host buffers
    monkeypatch.setattr(backends.get("numba_cuda"), "available", lambda: (False, "no driver"))
    x = _FakeCudaArray(np.zeros((2, 3), np.float32))
    t = _FakeCudaArray(np.zeros(2, np.int64))
    with pytest.raises(backends.BackendUnavailable, match="cuda"):
        fastopt.losses.cross_entropy(x, t)
    # the fallback for CUDA arrays is numba_cuda
    numba_cuda = backends.get("numba_cuda")
    monkeypatch.setattr(numba_cuda, "available", lambda: (True, "test double"))
    calls = []
    monkeypatch.setattr(numba_cuda, "cross_entropy",
                        lambda *args, **kw: calls.append(kw) or 0.5, raising=False)
    assert fastopt.losses.cross_entropy(x, t, reduction="sum", return_grad=False) == 0.5
    assert len(calls) == 1


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_elementwise_losses_route_cuda_arrays_to_the_cuda_backend(fake_cuda, reduction):
    """An element-wise loss on CUDA arrays reaches the CUDA launcher with the kind, dtype,
    device, the input's stream, the pointers, the broadcast periods and the gradient scale;
    the gradient and (for 'none') the element losses are allocated like the input."""
    x = _FakeCudaArray(np.zeros((4, 3), np.float64))
    y = _FakeCudaArray(np.ones((4, 3), np.float64))
    w = _FakeCudaArray(np.ones(3, np.float64))
    pw = _FakeCudaArray(np.ones(3, np.float64))
    loss, grad = fastopt.losses.binary_cross_entropy_with_logits(x, y, w, reduction, pw)
    (args,) = fake_cuda.calls
    spec = _arrays.describe
    assert args[:4] == (5, 1, 0, 7)  # bce_logits, float64, device 0, the array's stream
    assert args[4:10] == (spec(x).ptr, spec(y).ptr, spec(w).ptr, 3, spec(pw).ptr, 3)
    assert isinstance(grad, _FakeCudaArray) and args[10] == spec(grad).ptr
    assert args[12:] == (12, 0.0, 1 / 12 if reduction == "mean" else 1.0)
    if reduction == "none":
        assert isinstance(loss, _FakeCudaArray) and args[11] == spec(loss).ptr
    else:
        assert args[11] == 0 and loss == (0.5 if reduction == "mean" else 6.0)
    with pytest.raises(ValueError, match="target: expected an array on cuda:0 like input"):
        fastopt.losses.mse_loss(x, np.zeros((4, 3)))


@pytest.fixture(scope="module")
def loss_emulator(tmp_path_factory):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found")
    if not CU_FILES:
        pytest.skip("not a source checkout")
    exe = tmp_path_factory.mktemp("loss") / "cuda_loss_emulation"
    cmd = ["nvcc", "-std=c++17", "-O1", "-arch=compute_90", "-Xcicc", "-O0",
           f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}",
           str(ROOT / "tests" / "cuda_loss_emulation.cu"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


_LOSS_KINDS = {"mse": 0, "l1": 1, "huber": 2, "smooth_l1": 3, "bce": 4, "bce_logits": 5,
               "kl_div": 6, "kl_div_log_target": 7}


@pytest.mark.xdist_group("loss_emulator")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 4097, 65537, 300_006])
@pytest.mark.parametrize("name", list(_LOSS_KINDS))
def test_cuda_elementwise_loss_replayed_on_host_matches_reference(name, n, dtype,
                                                                  loss_emulator, tmp_path):
    """The CUDA element-wise loss kernel, every thread of the launch replayed on the host by
    tests/cuda_loss_emulation.cu (the kernel's element map and fold order; 300006 elements
    take the full 1024-block grid, several elements per thread), against fastopt.reference:
    the loss sum, the element losses and the gradient, weighted where the loss takes
    weights."""
    from fastopt import reference as ref

    rng = np.random.default_rng(n)
    x, y = rng.standard_normal(n) * 2, rng.standard_normal(n)
    if name == "bce":
        x, y = rng.random(n), rng.random(n)
    elif name in ("bce_logits", "kl_div"):
        y = rng.random(n)
    if name == "kl_div":
        x = np.log(rng.random(n) + 1e-3)
    x, y = x.astype(dtype), y.astype(dtype)
    period = 7 if n % 7 == 0 else 1
    kw, param = {}, 0.0
    w = pw = None
    if name in ("bce", "bce_logits"):
        w = kw["weight"] = (rng.random(period) + 0.5).astype(dtype)
    if name == "bce_logits":
        pw = kw["pos_weight"] = (rng.random(period) * 3).astype(dtype)
    if name == "huber":
        param = kw["delta"] = 0.7
    if name == "smooth_l1":
        param = kw["beta"] = 0.5
    if name.startswith("kl_div"):
        kw["log_target"] = name == "kl_div_log_target"
    rfn = {"mse": ref.mse_loss, "l1": ref.l1_loss, "huber": ref.huber_loss,
           "smooth_l1": ref.smooth_l1_loss, "bce": ref.binary_cross_entropy,
           "bce_logits": ref.binary_cross_entropy_with_logits, "kl_div": ref.kl_div,
           "kl_div_log_target": ref.kl_div}[name]
    if w is not None and period > 1:  # [n / 7, 7]: the weights repeat along the last axis
        x, y = x.reshape(-1, 7), y.reshape(-1, 7)
    files = {k: tmp_path / k for k in ("x", "y", "w", "p", "g", "out")}
    x.tofile(files["x"])
    y.tofile(files["y"])
    for key, arr in (("w", w), ("p", pw)):
        if arr is not None:
            arr.tofile(files[key])
    args = [str(loss_emulator), "64" if dtype == np.float64 else "32", str(_LOSS_KINDS[name]),
            str(n), repr(param), repr(1.0 / n), str(files["x"]), str(files["y"]),
            str(files["w"]) if w is not None else "-", str(period),
            str(files["p"]) if pw is not None else "-", str(period), str(files["g"]),
            str(files["out"])]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stdout + run.stderr
    total, blocks = float(run.stdout.split()[1]), int(run.stdout.split()[2])
    assert blocks == min(-(-n // 256), 1024)
    rloss, rgrad = rfn(x, y, reduction="mean", **kw)
    rows, _ = rfn(x, y, reduction="none", **kw)
    assert_close(total / n, rloss, dtype, "loss")
    assert_close(np.fromfile(files["g"], dtype).reshape(x.shape), rgrad, dtype, "grad")
    assert_close(np.fromfile(files["out"], dtype).reshape(x.shape), rows, dtype, "losses")
