"""CI checks that a built wheel is portable and still fast.

    python .ci/check_wheel.py binary BUILD_DIR   the unstripped _C of the wheel's build:
        compiled without -march=native (CMake cache and compile commands), and no AVX
        (ymm/zmm) instruction outside the per-ISA kernels fastopt::cpu::{avx2,avx512}, so
        the baseline code runs on any x86-64 CPU
    python .ci/check_wheel.py isa                run with the installed wheel: show_config()
        reports the widest ISA this CPU supports (from /proc/cpuinfo), and every ISA is
        compiled in
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path


def fail(msg: str) -> None:
    print(f"check_wheel: FAIL: {msg}")
    sys.exit(1)


def check_binary(build_dir: Path) -> None:
    cache = (build_dir / "CMakeCache.txt").read_text()
    if not re.search(r"^FASTOPT_NATIVE:BOOL=OFF$", cache, re.M):
        fail("the wheel's CMake cache does not have FASTOPT_NATIVE=OFF")
    commands = json.loads((build_dir / "compile_commands.json").read_text())
    native = [c["file"] for c in commands if "-march=native" in c["command"]]
    if native:
        fail(f"compiled with -march=native: {native[:3]}")
    print(f"check_wheel: {len(commands)} compile commands, none with -march=native")
    if platform.machine() not in ("x86_64", "AMD64"):
        return
    so = next(build_dir.glob("_C*.so"))
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", str(so)],
                         capture_output=True, text=True, check=True).stdout
    func, bad, per_isa = "", {}, {"avx2": 0, "avx512": 0}
    for line in asm.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if head:
            func = head.group(1)
            continue
        if "%ymm" in line or "%zmm" in line:
            isa = re.search(r"fastopt::cpu::(avx2|avx512)::", func)
            if isa:
                per_isa[isa.group(1)] += 1
            else:
                bad.setdefault(func, line.strip())
    if bad:
        fail(f"AVX instructions outside the per-ISA kernels (built for the build machine?): "
             f"{list(bad.items())[:3]}")
    if not per_isa["avx2"] or not per_isa["avx512"]:
        fail(f"a per-ISA kernel set has no vector code: {per_isa}")
    print(f"check_wheel: baseline code has no AVX; vector instructions per ISA: {per_isa}")


def cpu_widest() -> str:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "baseline"


def check_isa() -> None:
    import contextlib
    import io

    import fastopt
    from fastopt._config import config

    if "site-packages" not in fastopt.__file__:
        fail(f"fastopt imported from {fastopt.__file__}, not from the installed wheel")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fastopt.show_config()
    print(out.getvalue(), end="")
    cfg = config()
    want = cpu_widest() if platform.machine() in ("x86_64", "AMD64") else "baseline"
    if cfg["isa"] != want or f"ISA {want} " not in out.getvalue():
        fail(f"show_config() reports ISA {cfg['isa']!r}; this CPU supports {want!r}")
    if platform.machine() in ("x86_64", "AMD64") and set(cfg["compiled_isas"]) != {
            "baseline", "avx2", "avx512"}:
        fail(f"compiled ISAs {cfg['compiled_isas']}, expected baseline, avx2, avx512")
    print(f"check_wheel: the wheel runs the widest ISA this CPU supports ({want})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["binary"] and len(sys.argv) == 3:
        check_binary(Path(sys.argv[2]))
    elif sys.argv[1:] == ["isa"]:
        check_isa()
    else:
        sys.exit(__doc__)
