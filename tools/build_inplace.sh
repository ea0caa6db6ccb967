#!/usr/bin/env bash
# Development build: compiles fastopt._C into build/dev and copies it next to the sources, so
# `python -m pytest` in this checkout tests this checkout. Extra CMake options pass through,
# e.g. tools/build_inplace.sh -DFASTOPT_SANITIZE=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')" "$@" >/dev/null
ninja -C build/dev
cp build/dev/_C*.so fastopt/
