#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: builds fastopt's CUDA kernels in place (for
# this GPU's architecture only, CPU kernels for the baseline ISA only: what the check needs),
# then runs benchmarks/gpu_check.py under the time limit. Nothing is downloaded.
#
#   benchmarks/gpu_check.sh [--quick] [--dry-run] [--out DIR] [--limit SECONDS] [--no-build]
#                           [-- gpu_check.py options, e.g. --only equality,robustness]
#
# The limit (default 420 s; 240 with --quick) covers the build and the check. Whatever the
# build leaves, the check gets at least 120 s; at the limit it receives SIGINT, prints its
# summary so far and exits (SIGKILL 30 s later if it does not). The whole log is teed to
# DIR/gpu_check.log (DIR: --out, else $OUT when set, else /tmp/fastopt-gpu-check) beside the
# check's summary.txt / summary.json and the sanitizer logs. --dry-run skips the build and
# runs the check on the CPU (tests/test_gpu_check.py does, in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0 dry=0 build=1 limit="" out="${OUT:-/tmp/fastopt-gpu-check}"
extra=()
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --dry-run) dry=1 build=0 ;;
    --no-build) build=0 ;;
    --out) out="$2"; shift ;;
    --limit) limit="$2"; shift ;;
    --) shift; extra=("$@"); break ;;
    [0-9]*) limit="$1" ;;  # the old positional form: gpu_check.sh SECONDS
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 64 ;;
  esac
  shift
done
if [[ -z "$limit" ]]; then limit=$((quick ? 240 : 420)); fi
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
# the toolkit's nvcc before any other (CMake takes the first on PATH)
[[ -d /usr/local/cuda/bin ]] && export PATH="/usr/local/cuda/bin:$PATH"
py="${PYTHON:-python3}"
start=$(date +%s)
echo "gpu_check.sh: $(date -u +%FT%TZ) limit ${limit} s, output in $out"

if ((build)); then
  # the GPU's own architecture (9.0 on H100/H200): one target keeps the build short
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  arch="${CUDAARCHS:-${cap:-90}-real}"
  gen="Unix Makefiles"
  command -v ninja >/dev/null 2>&1 && gen=Ninja
  pybind11_dir=$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir())') || exit 3
  echo "gpu_check.sh: building for sm_${arch%-real} with $(command -v nvcc || echo 'no nvcc')"
  # cmake --build is incremental: a second run on the same machine rebuilds only what changed
  cmake -S . -B build/gpu-check -G "$gen" -DCMAKE_BUILD_TYPE=Release \
    -DPython_EXECUTABLE="$(command -v "$py")" -Dpybind11_DIR="$pybind11_dir" \
    -DFASTOPT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DFASTOPT_BASELINE_ONLY=ON >/dev/null \
    && cmake --build build/gpu-check -j "$(nproc)" \
    || { echo "gpu_check.sh: build failed" >&2; exit 3; }
  cp build/gpu-check/_C*.so fastopt/ || exit 3
  PYTHONPATH="$PWD" "$py" -c "import fastopt._C as c, sys; sys.exit(0 if c.cuda_compiled else 1)" \
    || { echo "gpu_check.sh: the build has no CUDA kernels" >&2; exit 3; }
  echo "gpu_check.sh: build ready after $(( $(date +%s) - start )) s"
fi

left=$(( limit - ($(date +%s) - start) ))
if (( left < 120 )); then left=120; fi  # timeout 0 would mean no limit, a negative one fails
args=(--out "$out")
((quick)) && args+=(--quick)
((dry)) && args+=(--dry-run)
# the in-place build here, except in a dry run (no build: an installed fastopt, if any, is
# the one to check; gpu_check.py falls back to this checkout)
pypath="$PWD${PYTHONPATH:+:$PYTHONPATH}"
((dry)) && pypath="${PYTHONPATH:-}"
PYTHONPATH="$pypath" timeout -s INT -k 30 "$left" \
  "$py" benchmarks/gpu_check.py "${args[@]}" "${extra[@]}"
rc=$?
echo "gpu_check.sh: exit $rc after $(( $(date +%s) - start )) s"
exit $rc
