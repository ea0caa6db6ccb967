// Replays the CUDA element-wise loss kernel on the CPU (no GPU needed): every thread of the
// launch runs the kernel's own host+device loop (LossThread::sum) with the kernel's thread ->
// element map, each block's threads are folded in the kernel's tree order and the partials by
// the launcher's pairwise sum. Reads raw arrays from files and writes the gradient and the
// element losses, which tests/test_cuda_build.py compares with fastopt.reference.
//   cuda_loss_emulation BITS KIND N PARAM SCALE INPUT TARGET WEIGHT|- WP POS_WEIGHT|- PP
//                       OUT_GRAD OUT_LOSS
// prints "ok SUM BLOCKS".
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/elementwise_loss.cu"
#include "emulation_io.h"

using namespace fastopt;
using namespace fastopt::cuda;

template <PointLoss K, typename T>
static double replay(const PointLossArgs& a) {
  const int64_t blocks = loss_blocks(a.n);
  const LossThread<K, T> th{a};
  std::vector<double> partial(blocks), acc(kLossBlock);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int t = 0; t < kLossBlock; ++t) acc[t] = th.sum(b * kLossBlock + t, blocks * kLossBlock);
    partial[b] = tree_fold(acc, kLossBlock, [](double u, double v) { return u + v; });
  }
  return blocks ? cpu::pairwise_sum(partial.data(), blocks) : 0.0;
}

template <typename T>
static int emulate(char** argv) {
  const int kind = std::atoi(argv[2]);
  const int64_t n = std::atoll(argv[3]);
  const double param = std::atof(argv[4]), scale = std::atof(argv[5]);
  const std::vector<T> x = read<T>(argv[6], size_t(n)), y = read<T>(argv[7], size_t(n));
  const std::string wpath = argv[8], ppath = argv[10];
  const int64_t wp = std::atoll(argv[9]), pp = std::atoll(argv[11]);
  std::vector<T> w, pw;
  if (wpath != "-") w = read<T>(wpath, size_t(wp));
  if (ppath != "-") pw = read<T>(ppath, size_t(pp));
  std::vector<T> g(n), out(n);
  const PointLossArgs a{x.data(), y.data(), w.empty() ? nullptr : w.data(), wp,
                        pw.empty() ? nullptr : pw.data(), pp, g.data(), out.data(), n, param,
                        scale};
  const double total =
      with_point_loss(PointLoss(kind), [&](auto k) { return replay<decltype(k)::value, T>(a); });
  write(argv[12], g.data(), size_t(n));
  write(argv[13], out.data(), size_t(n));
  std::printf("ok %.17g %lld\n", total, (long long)loss_blocks(n));
  return 0;
}

int main(int argc, char** argv) {
  return replay_main(argc, argv, 14, "tests/cuda_loss_emulation.cu",
                     [argv](auto t) { return emulate<decltype(t)>(argv); });
}
