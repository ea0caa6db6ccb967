#!/usr/bin/env python
"""Mutation check: plant known bugs in a scratch copy of fastopt and confirm the tests catch
each one. Run it before closing a change to the kernels or the optimizer base, and record its
table; it is not part of CI.

    python tools/mutate.py               # every Python-side mutant
    python tools/mutate.py -k clip       # the mutants whose name contains 'clip'
    python tools/mutate.py --rebuild     # C++ mutants too (a CMake build of _C each, minutes)
    python tools/mutate.py --list

For each mutant the package this interpreter imports (this checkout's fastopt/, or the
installed one) is copied into a temporary folder, the edit applied (its old text must occur
exactly once), and the mutant's test files run with `pytest -x -q` from that folder with it
first on PYTHONPATH. A mutant is caught when pytest fails; "not caught" is the tests' failure.
Exit status 1 if any mutant was not caught or could not be applied.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root: fastopt/... (Python) or csrc/... (C++)
    old: str | tuple[str, ...]  # each must occur exactly once; several: edited in order
    new: str | tuple[str, ...]
    tests: tuple[str, ...]  # pytest arguments, relative to the repository root
    why: str = ""

    @property
    def cpp(self) -> bool:
        return self.file.startswith("csrc/")


MUTANTS = [
    Mutant("clip-norm-first-dtype-only", "fastopt/clip.py",
           "for t in tables]\n",
           "for t in tables][:1]\n",
           ("tests/test_clip.py",),
           "the joint norm of a float32 + float64 list from the first dtype's table alone"),
    Mutant("optim-load-skips-hyperparameters", "fastopt/optim/optimizer.py",
           ('group.update({k: copy.deepcopy(v) for k, v in saved.items()\n'
            '                          if k != "params" and k not in TORCH_FLAGS})'),
           "pass",
           ("tests/test_optim.py",),
           "load_state_dict keeps the loading optimizer's own hyperparameters"),
    # --- the pointer-table invariant (fastopt/_table.py) ----------------------------------
    Mutant("tables-not-revalidated", "fastopt/_table.py",
           "        if tables is None or key != self._key or not all(",
           "        if tables is None or key != self._key or False and not all(",
           ("tests/test_hardening.py",),
           "a cached table is used without re-reading its params and state"),
    Mutant("tables-ptr-only-no-size", "fastopt/_table.py",
           ("                return (list(map(tr.data_ptr, picked)) == self._ptr_list(row)\n"
            "                        and list(map(tr.nbytes, picked)) == self._nbytes)"),
           "                return list(map(tr.data_ptr, picked)) == self._ptr_list(row)",
           ("tests/test_hardening.py",),
           "a kept torch tensor at its old address but with a smaller storage passes"),
    Mutant("no-version-bump", "fastopt/functional.py",
           "    for t in tables:\n        t.bump_versions()",
           "    for t in tables:\n        pass",
           ("tests/test_hardening.py",),
           "in-place steps leave torch's autograd version counters alone"),
    Mutant("state-changes-not-tracked", "fastopt/torch/optim.py",
           "entry.mark[0] is state and entry.mark[1] == state.changes:",
           "entry.mark[0] is state:",
           ("tests/test_hardening.py",),
           "fastopt.torch misses changes of optimizer.state (cleared or replaced entries)"),
    Mutant("groups-alias-unchecked", "fastopt/optim/optimizer.py",
           "        if len(plan) > 1:\n            _check_across_groups(plan)",
           "        pass",
           ("tests/test_hardening.py",),
           "a grad of one param group that is another group's param is accepted"),
    Mutant("torch-lion-load-is-a-no-op", "fastopt/torch/optim.py",
           '    op = "lion"\n    has_step = False\n',
           '    op = "lion"\n    has_step = False\n\n'
           "    def load_state_dict(self, state_dict):\n        return None\n",
           ("tests/test_torch_optim.py",),
           "fastopt.torch.Lion.load_state_dict does nothing"),
    Mutant("schedule-load-ignores-base-lrs", "fastopt/schedules.py",
           "        self.base_lrs = base_lrs\n", "",
           ("tests/test_schedules.py",),
           "LRScheduler.load_state_dict keeps the new optimizer's lrs as its base"),
    Mutant("warmup-boundary-off-by-one", "fastopt/schedules.py",
           "if step >= self.warmup_steps:", "if step > self.warmup_steps:",
           ("tests/test_schedules.py",),
           "Warmup hands over to its follow-on schedule one step late"),
    Mutant("set-num-threads-pinned-to-1", "fastopt/_config.py",
           "lib.set_num_threads(int(n))", "lib.set_num_threads(int(n))\n    lib.set_num_threads(1)",
           ("tests/test_config.py", "tests/test_determinism.py"),
           "set_num_threads(n) silently runs one thread"),
    Mutant("cross-entropy-f32-tiny-grads-zeroed", "fastopt/losses.py",
           '    if reduction == "none":\n        loss = _rows_out(np.asarray(loss), logits, '
           'batch_shape)\n',
           '    if not inplace and isinstance(grad_obj, np.ndarray) and grad_obj.dtype == "f4":\n'
           '        grad_obj[np.abs(grad_obj) < 5e-7] = 0\n'
           '    if reduction == "none":\n        loss = _rows_out(np.asarray(loss), logits, '
           'batch_shape)\n',
           ("tests/test_cross_entropy.py",),
           "float32 cross-entropy gradients below 5e-7 zeroed"),
    Mutant("cross-entropy-f32-small-grads-scaled", "fastopt/losses.py",
           '    if reduction == "none":\n        loss = _rows_out(np.asarray(loss), logits, '
           'batch_shape)\n',
           '    if not inplace and isinstance(grad_obj, np.ndarray) and grad_obj.dtype == "f4":\n'
           '        grad_obj[np.abs(grad_obj) < 1e-5] *= np.float32(1.1)\n'
           '    if reduction == "none":\n        loss = _rows_out(np.asarray(loss), logits, '
           'batch_shape)\n',
           ("tests/test_cross_entropy.py",),
           "float32 cross-entropy gradients below 1e-5 scaled by 1.1"),
    # --- C++: need --rebuild ---------------------------------------------------------------
    Mutant("cpp-set-num-threads-pinned-to-1", "csrc/bindings/runtime.cpp",
           "omp_set_num_threads(n);", "omp_set_num_threads(1);",
           ("tests/test_config.py", "tests/test_determinism.py"),
           "the extension ignores the requested thread count"),
    Mutant("cpp-kernels-run-one-thread", "csrc/cpu/multi_tensor.h",
           "#pragma omp parallel if (parallel)\n",
           "#pragma omp parallel if (parallel) num_threads(1)\n",
           ("tests/test_config.py",),
           "the multi-tensor driver runs one thread whatever the setting"),
    Mutant("cpp-cross-entropy-hidden-scratch", "csrc/cpu/cross_entropy.cpp",
           "  std::vector<double> partial(a.row_loss, a.row_loss + N);\n",
           "  std::vector<T> hidden(logits, logits + N * C);\n"
           '  asm volatile("" : : "r"(hidden.data()) : "memory");\n'
           "  std::vector<double> partial(a.row_loss, a.row_loss + N);\n",
           ("tests/test_cross_entropy.py",),
           "in-place cross-entropy copies the [N, C] logits into a native buffer"),
]


_WHERE = "import fastopt; print(fastopt.__file__)"


def _package_dir() -> Path:
    """The fastopt/ this interpreter imports (as the tests would, from the repository root)."""
    out = subprocess.run([sys.executable, "-c", _WHERE],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()).parent


def _apply(m: Mutant, text: str) -> str:
    olds, news = (m.old, m.new) if isinstance(m.old, tuple) else ((m.old,), (m.new,))
    for old, new in zip(olds, news, strict=True):
        count = text.count(old)
        if count != 1:
            raise ValueError(f"{m.name}: the old text occurs {count} times in {m.file}")
        text = text.replace(old, new)
    return text


def _rebuild(m: Mutant, scratch: Path, package: Path, log) -> None:
    """Build _C from a mutated copy of csrc/ and put it into the scratch package."""
    src = scratch / "src"
    shutil.copytree(ROOT / "csrc", src / "csrc")
    shutil.copy2(ROOT / "CMakeLists.txt", src / "CMakeLists.txt")
    target = src / m.file
    target.write_text(_apply(m, target.read_text()))
    import pybind11

    build = scratch / "build"
    for cmd in (["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja",
                 "-DCMAKE_BUILD_TYPE=Release", "-DFASTOPT_CUDA=OFF",
                 f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
                ["ninja", "-C", str(build)]):
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    for old in package.glob("_C*.so"):
        old.unlink()
    for so in build.glob("_C*.so"):
        shutil.copy2(so, package / so.name)


def run_mutant(m: Mutant, source: Path, verbose: bool, root: Path = ROOT) -> tuple[str, float]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fastopt-mutant-") as tmp:
        scratch = Path(tmp)
        package = scratch / "fastopt"
        # copy2 keeps modification times, so Numba's on-disk cache of the copy stays valid
        shutil.copytree(source, package, copy_function=shutil.copy2,
                        ignore=shutil.ignore_patterns("*.pyc"))
        log_path = scratch / "log.txt"
        with open(log_path, "w") as log:
            try:
                if m.cpp:
                    _rebuild(m, scratch, package, log)
                else:
                    target = scratch / m.file
                    target.write_text(_apply(m, target.read_text()))
            except (ValueError, subprocess.CalledProcessError) as exc:
                print(f"{m.name}: could not apply: {exc}", file=sys.stderr)
                return "error", time.perf_counter() - t0
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                filter(None, [str(scratch), os.environ.get("PYTHONPATH")])))
            where = subprocess.run([sys.executable, "-c", _WHERE], cwd=scratch, env=env,
                                   capture_output=True, text=True)
            if not where.stdout.startswith(str(package)):
                print(f"{m.name}: the scratch copy is not the package imported: "
                      f"{where.stdout.strip() or where.stderr[-500:]}", file=sys.stderr)
                return "error", time.perf_counter() - t0
            # run from the scratch folder: the repository root must not be on sys.path
            cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   f"--rootdir={root}", *[str(root / t) for t in m.tests]]
            proc = subprocess.run(cmd, cwd=scratch, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        out = log_path.read_text()
        if verbose or proc.returncode not in (0, 1):
            print(out[-3000:])
        # 1: tests failed (caught); 0: all passed (not caught); anything else: pytest broke
        status = {0: "no", 1: "yes"}.get(proc.returncode, f"error (pytest exit {proc.returncode})")
        return status, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="run only mutants whose name contains this")
    ap.add_argument("--rebuild", action="store_true",
                    help="also run the C++ mutants, rebuilding the extension for each")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each pytest log tail")
    ap.add_argument("--tests-from", type=Path, default=ROOT, metavar="DIR",
                    help="run the tests of another checkout (e.g. an older one, to compare)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if args.k in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:<40} {m.file:<28} {' '.join(m.tests)}\n    {m.why}")
        return 0
    source = _package_dir()
    print(f"mutating copies of {source}")
    rows = []
    for m in chosen:
        if m.cpp and not args.rebuild:
            rows.append((m.name, "skipped (C++: --rebuild)", 0.0))
            continue
        status, seconds = run_mutant(m, source, args.verbose, args.tests_from.resolve())
        rows.append((m.name, status, seconds))
        print(f"  {m.name}: caught {status} ({seconds:.0f} s)", flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n| {'mutant':<{width}} | caught | seconds |\n|{'-' * (width + 2)}|--------|--------:|")
    for name, status, seconds in rows:
        print(f"| {name:<{width}} | {status} | {seconds:.0f} |")
    bad = [r for r in rows if not r[1].startswith(("yes", "skipped"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
