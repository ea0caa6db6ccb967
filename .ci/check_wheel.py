"""CI checks that a built wheel is portable and still fast.

    python .ci/check_wheel.py binary BUILD_DIR   the wheel's build: compiled without
        -march=native (CMake cache and compile commands), AVX flags only on the per-ISA
        kernels, and no AVX (ymm/zmm) instruction in the baseline kernels, so the code that
        runs before the run-time ISA choice runs on any x86-64 CPU
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


def _vector_regs(obj: Path) -> set[str]:
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(obj)],
                         capture_output=True, text=True, check=True).stdout
    return {reg for reg in ("ymm", "zmm") if f"%{reg}" in asm}


def check_binary(build_dir: Path) -> None:
    cache = (build_dir / "CMakeCache.txt").read_text()
    if not re.search(r"^FASTOPT_NATIVE:BOOL=OFF$", cache, re.M):
        fail("the wheel's CMake cache does not have FASTOPT_NATIVE=OFF")
    commands = json.loads((build_dir / "compile_commands.json").read_text())
    native = [c["file"] for c in commands if "-march=native" in c["command"]]
    if native:
        fail(f"compiled with -march=native: {native[:3]}")
    # AVX flags only on the per-ISA kernel objects, chosen at run time
    loose = [c["file"] for c in commands if re.search(r"-mavx|-march=(?!x86-64\b)", c["command"])
             and not re.search(r"fastopt_cpu_avx(2|512)\.dir", c["command"])]
    if loose:
        fail(f"ISA flags outside the per-ISA kernels: {loose[:3]}")
    print(f"check_wheel: {len(commands)} compile commands, none with -march=native; AVX "
          "flags only on the per-ISA kernels")
    if platform.machine() not in ("x86_64", "AMD64"):
        return
    # the kernel objects are plain machine code (the bindings' are LTO bytecode, covered by
    # the flags check above); the shipped library is stripped, so look at them
    want = {"baseline": set(), "avx2": {"ymm"}, "avx512": {"zmm"}}
    for isa, regs in want.items():
        objs = sorted((build_dir / "CMakeFiles" / f"fastopt_cpu_{isa}.dir").rglob("*.o"))
        if not objs:
            fail(f"no {isa} kernel objects under {build_dir}")
        found = set().union(*(_vector_regs(o) for o in objs))
        if isa == "baseline" and found:
            fail(f"baseline kernels use {sorted(found)} registers: not portable")
        if not regs <= found:
            fail(f"{isa} kernels have no {sorted(regs)} code: {sorted(found)}")
        print(f"check_wheel: {len(objs)} {isa} kernel objects, vector registers "
              f"{sorted(found) or 'xmm only'}")


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
