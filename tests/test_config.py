import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

import fastopt


def test_show_config_lists_backends_isa_and_threads(capsys):
    fastopt.show_config()
    out = capsys.readouterr().out
    built = fastopt.backends.get("cpu").available()[0]
    assert re.search(r"CPU kernels: ISA " + ("(baseline|avx2|avx512)" if built else "None"), out)
    assert re.search(r"\d+ threads", out)
    for name in fastopt.backends.REGISTRY:
        assert re.search(rf"^\s+{name}\s+(yes|no)", out, re.M), name


def test_unavailable_backend_says_why(monkeypatch):
    cpu = fastopt.backends.get("cpu")
    monkeypatch.setattr(cpu, "available", lambda: (False, "not built here"))
    with pytest.raises(fastopt.backends.BackendUnavailable, match="not built here"):
        fastopt.backends.resolve("cpu", "cpu")
    # automatic choice falls back to the next CPU backend
    assert fastopt.backends.resolve(None, "cpu").name != "cpu"


# --- README claims about threads, checked in a fresh interpreter --------------------------

_PROBE = """
import json, os, sys
import numpy as np
import fastopt
from fastopt import functional

out = {"policy": os.environ.get("OMP_WAIT_POLICY"), "threads": fastopt.get_num_threads()}
if len(sys.argv) > 1:
    fastopt.set_num_threads(int(sys.argv[1]))
    out["threads"] = fastopt.get_num_threads()
p, g = [np.zeros(1 << 17, np.float32)], [np.ones(1 << 17, np.float32)]
tasks = lambda: len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else -1
before = tasks()
functional.sgd_(p, g, lr=0.1, backend="cpu")  # 8 chunks: the first parallel region
out["spawned"] = tasks() - before if before >= 0 else None
print(json.dumps(out))
"""


def _probe(env_changes: dict, *args: str):
    """Runs _PROBE in a fresh interpreter importing this process's fastopt, with environment
    variables set (a value of None: removed); returns (its JSON output, its stderr)."""
    env = dict(os.environ)
    for k, v in env_changes.items():
        env.pop(k, None) if v is None else env.__setitem__(k, v)
    root = str(pathlib.Path(fastopt.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    # cwd elsewhere: `python -c` puts the working directory first on sys.path, and a source
    # checkout there (without its built extension) would shadow the fastopt under test
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _needs_cpu_kernels():
    ok, why = fastopt.backends.get("cpu").available()
    if not ok:
        pytest.skip(f"the cpu backend is unavailable: {why}")


def _assert_spawned(out, threads):
    """The first kernel started the OpenMP threads it was asked for (Linux: /proc/self/task)."""
    if out["spawned"] is None:
        pytest.skip("no /proc/self/task to count the kernel's threads")
    # the first parallel region starts threads - 1 workers (more only from elsewhere)
    assert out["spawned"] >= threads - 1, out


def test_omp_num_threads_is_honoured_and_wait_policy_set_passive():
    """README: OMP_NUM_THREADS sets the threads; importing fastopt sets OMP_WAIT_POLICY=passive
    unless set, and the OpenMP runtime reads it (OMP_DISPLAY_ENV prints what it read)."""
    _needs_cpu_kernels()
    out, err = _probe({"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": "3",
                       "OMP_DISPLAY_ENV": "TRUE"})
    assert out["policy"] == "passive"
    assert out["threads"] == 3
    _assert_spawned(out, 3)
    if "OMP_WAIT_POLICY" not in err:
        pytest.skip("this OpenMP runtime does not display its settings (OMP_DISPLAY_ENV)")
    assert re.search(r"OMP_WAIT_POLICY\s*=\s*'PASSIVE'", err), err


def test_set_num_threads_takes_effect_and_a_set_wait_policy_is_kept():
    _needs_cpu_kernels()
    out, err = _probe({"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1",
                       "OMP_DISPLAY_ENV": "TRUE"}, "2")
    assert out["policy"] == "ACTIVE"
    assert out["threads"] == 2
    _assert_spawned(out, 2)
    if "OMP_WAIT_POLICY" in err:
        assert re.search(r"OMP_WAIT_POLICY\s*=\s*'ACTIVE'", err), err
