// Replays the CUDA cross-entropy kernel on the CPU (no GPU needed): each row's block is run
// thread by thread through the same host+device sweeps (CeRow::sweep1/sweep2) with the block
// folds in the kernel's order, and the host preparation and final row sum are the launcher's
// own. Reads raw arrays from files and writes the row losses and the gradient, which
// tests/test_cuda_build.py compares with fastopt.reference.
//   cuda_ce_emulation BITS KIND N C IGNORE EPS Z CAP REDUCTION LOGITS TARGET WEIGHT|- OUT_ROWS
//                     OUT_GRAD|- INPLACE
// prints "ok SUM DENOM BAD".
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/cross_entropy.cu"
#include "emulation_io.h"

using namespace fastopt;
using namespace fastopt::cuda;

template <typename T>
static int emulate(char** argv) {
  using M = math_t<T>;
  const int kind = std::atoi(argv[2]);
  const int64_t n = std::atoll(argv[3]), c = std::atoll(argv[4]);
  const int64_t ignore = std::atoll(argv[5]);
  const double eps = std::atof(argv[6]), z = std::atof(argv[7]), cap = std::atof(argv[8]);
  const int reduction = std::atoi(argv[9]);
  const std::string wpath = argv[12], gpath = argv[14];
  const bool inplace = std::atoi(argv[15]) != 0;
  std::vector<T> logits = read<T>(argv[10], size_t(n * c));
  std::vector<T> probs_t;
  std::vector<int32_t> t32;
  std::vector<int64_t> t64, y(n);
  const void* target;
  if (kind == 2) {
    probs_t = read<T>(argv[11], size_t(n * c));
    target = probs_t.data();
  } else if (kind == 0) {
    t32 = read<int32_t>(argv[11], size_t(n));
    for (int64_t i = 0; i < n; ++i) y[i] = t32[i];
    target = t32.data();
  } else {
    t64 = read<int64_t>(argv[11], size_t(n));
    y = t64;
    target = t64.data();
  }
  std::vector<T> weight;
  if (wpath != "-") weight = read<T>(wpath, size_t(c));
  std::vector<T> grad(gpath == "-" || inplace ? 0 : size_t(n * c));
  T* g = gpath == "-" ? nullptr : (inplace ? logits.data() : grad.data());
  std::vector<double> rows(n);
  const CrossEntropyArgs a{logits.data(), g, target, weight.empty() ? nullptr : weight.data(),
                           rows.data(), n, c, CeTarget(kind), ignore, eps, z, cap,
                           Reduction(reduction)};
  CrossEntropyResult res{0.0, 0.0, -1};
  const double weight_sum =
      host_prepare<T>(a, weight.empty() ? nullptr : weight.data(), y.data(), res);
  if (res.bad_row < 0) {
    const CeRow<T> r = make_row<T>(a, weight_sum, res.denom, rows.data());
    std::vector<typename CeRow<T>::Part> parts(kCeBlock);
    std::vector<double> fold(kCeBlock);
    auto add = [](double u, double v) { return u + v; };
    for (int64_t i = 0; i < n; ++i) {
      if (r.ignored(i)) {
        if (g) std::fill(g + i * c, g + (i + 1) * c, T(0));
        rows[i] = 0.0;
        continue;
      }
      for (int t = 0; t < kCeBlock; ++t) parts[t] = r.sweep1(i, t, kCeBlock);
      const M xy = r.probs() ? M(0) : r.value(r.logits + i * c, r.index(i));
      for (int t = 0; t < kCeBlock; ++t) fold[t] = double(parts[t].max);
      const M m = M(tree_fold(fold, kCeBlock, [](double u, double v) { return nan_max(u, v); }));
      if (!(m > M(-INFINITY) && m < M(INFINITY))) {
        if (g) std::fill(g + i * c, g + (i + 1) * c, T(M(NAN)));
        rows[i] = double(NAN);
        continue;
      }
      for (int t = 0; t < kCeBlock; ++t) fold[t] = CeRow<T>::rescaled(parts[t], m);
      const double S = tree_fold(fold, kCeBlock, add);
      double A = 0.0;
      if (r.probs()) {
        for (int t = 0; t < kCeBlock; ++t) fold[t] = double(parts[t].a);
        A = tree_fold(fold, kCeBlock, add);
      }
      const auto st = r.stats(i, m, S, A);
      for (int t = 0; t < kCeBlock; ++t) fold[t] = double(r.sweep2(i, t, kCeBlock, st));
      const double tx = r.needs_tx() ? tree_fold(fold, kCeBlock, add) : 0.0;
      rows[i] = r.loss(i, st, xy, tx);
    }
    std::vector<double> partial(rows);
    res.loss_sum = cpu::pairwise_sum(partial.data(), n);
  }
  write(argv[13], rows.data(), size_t(n));
  if (g) write(gpath, g, size_t(n * c));
  std::printf("ok %.17g %.17g %lld\n", res.loss_sum, res.denom, (long long)res.bad_row);
  return 0;
}

int main(int argc, char** argv) {
  return replay_main(argc, argv, 16, "tests/cuda_ce_emulation.cu",
                     [argv](auto t) { return emulate<decltype(t)>(argv); });
}
