"""Peak resident memory of one call, measured in a fresh interpreter. Unlike tracemalloc, which
sees only Python's and NumPy's allocations, the resident set's high-water mark counts every
byte a call touches: C++ buffers, OpenMP threads, torch's allocator."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = """
import sys
sys.path[:0] = {path!r}


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024


{setup}
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark restarts from the current resident set
except OSError:
    print("no-reset")
    raise SystemExit
before = status("VmRSS")
{call}
print(status("VmHWM") - before)
"""


def peak_extra_bytes(setup: str, call: str, timeout: float = 300) -> int:
    """How far the resident set's high-water mark rises above the resident set while `call`
    runs, after `setup` (both Python source, run in a new interpreter with this one's import
    path). Warm up in `setup` (first calls start threads and fill caches). Linux only."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the high-water mark comes from Linux's /proc/self/status")
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("under AddressSanitizer the resident set holds its shadow and quarantine "
                    "(the plain test run measures)")
    script = _SCRIPT.format(path=list(sys.path), setup=textwrap.dedent(setup),
                            call=textwrap.dedent(call))
    # buffers of 128 KiB and more are mapped and unmapped one by one, so the high-water mark
    # counts the bytes live at once, not what glibc's heap kept after earlier frees
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr
    last = out.stdout.split()[-1]
    if last == "no-reset":
        pytest.skip("/proc/self/clear_refs cannot reset the high-water mark here")
    return json.loads(last)
