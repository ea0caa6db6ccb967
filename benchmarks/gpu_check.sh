#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: builds fastopt's CUDA kernels in place (unless
# the extension next to the sources already has them), then runs benchmarks/gpu_check.py under
# a time limit. Nothing is downloaded. Usage: benchmarks/gpu_check.sh [seconds, default 290]
set -uo pipefail
cd "$(dirname "$0")/.."
limit="${1:-290}"
start=$(date +%s)
has_cuda() { python -c "import fastopt._C as c, sys; sys.exit(0 if c.cuda_compiled else 1)" 2>/dev/null; }
if ! has_cuda; then
  # one architecture (the GPU's own, sm_90 for H100/H200) keeps the build short; the
  # release build compiles sm_80 + sm_90 + PTX
  arch="${CUDAARCHS:-90-real}"
  jobs=$(nproc)
  CUDAARCHS="$arch" CMAKE_BUILD_PARALLEL_LEVEL="$jobs" \
    tools/build_inplace.sh -DFASTOPT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" || exit 3
  has_cuda || { echo "gpu_check.sh: the build has no CUDA kernels" >&2; exit 3; }
fi
echo "gpu_check.sh: build ready after $(( $(date +%s) - start )) s"
left=$(( limit - ($(date +%s) - start) ))
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout "$left" python benchmarks/gpu_check.py
