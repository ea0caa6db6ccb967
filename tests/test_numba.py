"""The `numba` CPU backend beyond the shared op tests (which run every CPU backend, numba
included, through tests/conftest.py; thread determinism: tests/test_determinism.py):
clipping, dtypes, config."""

import numpy as np
import pytest

pytest.importorskip("numba")

from tolerances import assert_close  # noqa: E402
from trajectories import run_clip  # noqa: E402

import fastopt  # noqa: E402
from fastopt import functional  # noqa: E402
from fastopt.backends import numba as numba_backend  # noqa: E402


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_matches_reference(dtype):
    for r in run_clip(dtype, backend="numba"):
        r.check(dtype)


def test_rejects_unsupported_dtype_and_reports_compile_times():
    p = [np.zeros(3, np.float16)]
    with pytest.raises(fastopt.backends.BackendUnavailable, match="does not take float16"):
        functional.sgd_(p, [np.zeros(3, np.float16)], lr=0.1, backend="numba")
    functional.sgd_([np.zeros(3)], [np.ones(3)], lr=0.1, backend="numba")
    times = numba_backend.compile_times()
    assert any(k.startswith("sgd") for k in times) and all(t >= 0 for t in times.values())


def test_listed_by_show_config(capsys):
    fastopt.show_config()
    assert "numba" in capsys.readouterr().out


_CACHE_PROBE = """
import numpy as np
from fastopt import functional
from fastopt.backends import numba as backend
functional.sgd_([np.zeros(5)], [np.ones(5)], [np.zeros(5)], lr=0.1, momentum=0.9,
                backend="numba")
st = backend._get()["sgd"].stats  # the kernel step_sgd: the driver around the SGD rule
print(sum(st.cache_hits.values()), sum(st.cache_misses.values()))
"""


def test_second_process_loads_kernels_from_the_disk_cache(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run() -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, cwd=root,
                             capture_output=True, text=True, check=True).stdout.split()
        return int(out[0]), int(out[1])

    assert run() == (0, 1)  # compiled and saved
    assert run() == (1, 0)  # loaded: the second process compiles nothing


def test_one_launch_per_table_whatever_the_number_of_tensors(monkeypatch):
    """The whole chunk table in one parallel launch (was: one per tensor); the result is the
    reference's, tensors of every size included (empty ones, one chunk, many chunks)."""
    from fastopt import reference

    kernels = numba_backend._get()
    calls = []

    def counting(name):
        def launch(*args):
            calls.append(name)
            return kernels[name](*args)
        return launch

    monkeypatch.setattr(numba_backend, "_get", lambda: {k: counting(k) for k in kernels})
    sizes = (1, 0, 7, 4097, 16384, 16385, 65537) + (3,) * 50
    rng = np.random.default_rng(3)
    p = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    g = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    b = [np.zeros(n, np.float32) for n in sizes]
    want = [a.astype(np.float64) for a in p]
    wb = [np.zeros(n) for n in sizes]
    for step in range(3):
        functional.sgd_(p, g, b, lr=0.1, momentum=0.9, first_step=step == 0, backend="numba")
        for w, a, bw in zip(want, g, wb, strict=True):
            reference.sgd(w, a.astype(np.float64), bw, lr=0.1, momentum=0.9,
                          first_step=step == 0)
    assert calls == ["sgd"] * 3
    for k, (a, e) in enumerate(zip(p, want, strict=True)):
        assert_close(a, e, np.float32, f"param {k}")
