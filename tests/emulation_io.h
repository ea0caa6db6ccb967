// Shared by the host replays of the CUDA kernels (tests/cuda_*_emulation.cu): the raw-array
// files the tests write and read back, and the block's shared-memory tree fold.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

template <typename T>
static std::vector<T> read(const std::string& path, size_t n) {
  std::vector<T> v(n);
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f || std::fread(v.data(), sizeof(T), n, f) != n) {
    std::printf("FAIL reading %s\n", path.c_str());
    std::exit(1);
  }
  std::fclose(f);
  return v;
}

template <typename T>
static void write(const std::string& path, const T* p, size_t n) {
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(p, sizeof(T), n, f);
  std::fclose(f);
}

// a[0] = the fold of a[0:block] in the kernels' tree order: at width w = block/2, ..., 1 thread
// t < w combines its value with thread t + w's.
template <typename V, typename Op>
static V tree_fold(std::vector<V>& a, int block, Op op) {
  for (int w = block / 2; w > 0; w /= 2)
    for (int t = 0; t < w; ++t) a[t] = op(a[t], a[t + w]);
  return a[0];
}

// main() of a replay: argc checked against `args` (else the usage is in the source's header);
// argv[1] picks the storage, 64 double and otherwise float, as emulate(T{}) for T.
template <typename Emulate>
static int replay_main(int argc, char** argv, int args, const char* source, Emulate emulate) {
  if (argc != args) {
    std::printf("usage: see the header of %s\n", source);
    return 2;
  }
  return std::atoi(argv[1]) == 64 ? emulate(double{}) : emulate(float{});
}
