// Replays the CUDA multi-tensor kernels on the CPU (no GPU needed): every launch that the
// driver plans is executed block by block, thread by thread, through the same apply_block()
// the GPU runs, and the results must equal, bit for bit, the per-element step applied element
// by element on the host. This checks the launch planning (4 KiB and 32 KiB parameter spaces),
// the block -> (tensor, chunk) search, the 16-byte vector and the scalar paths (aligned and
// misaligned pointers, odd sizes) for all four storage types, the row wiring and the write
// masks of every optimizer of fastopt/optimizers.h in every variant (coupled L1 and proximal
// included), the device-side norm and scaling of the capturable clip, the pointer checks every
// launcher makes, and exp_f over its whole range (the variants in the 16-bit types: a
// representative part by default, all with -DFASTOPT_EMULATION_FULL=1; see checked() below).
// Built and run by tests/test_cuda_build.py.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <map>
#include <algorithm>
#include <random>
#include <vector>

#include "cuda/clip.cu"
#include "cuda/runtime.cu"
#include "cuda/step.cu"
#include "fastopt/table_check.h"
#include "fastopt/vmath.h"

using namespace fastopt;
using namespace fastopt::cuda;

static const std::vector<int64_t> kSizes = {1, 7, 4097, 65537, 0, 70001, 256};

template <typename T>
struct Lists {
  int n_slots;
  int offset;  // elements: 1 makes every pointer misaligned for vector access
  std::vector<std::vector<T>> emu, ref;  // [slot * n + t]
  std::vector<uint64_t> ptrs;

  Lists(int n_slots_, int offset_, unsigned seed, std::vector<bool> used)
      : n_slots(n_slots_), offset(offset_) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> dist(0.0, 1.0);
    const size_t n = kSizes.size();
    emu.resize(n_slots * n);
    ptrs.assign(n_slots * n, 0);
    for (int s = 0; s < n_slots; ++s)
      for (size_t t = 0; t < n; ++t) {
        auto& v = emu[s * n + t];
        v.resize(size_t(kSizes[t]) + 8);
        for (auto& x : v) x = T(s == 3 || s == 4 ? std::abs(dist(gen)) : dist(gen));
        if (used[s]) ptrs[s * n + t] = reinterpret_cast<uint64_t>(v.data() + offset);
      }
    ref = emu;
  }
  TensorList list() const {
    return TensorList{ptrs.data(), kSizes.data(), int64_t(kSizes.size()), n_slots};
  }
  T* ref_at(int s, size_t t) { return ref[s * kSizes.size() + t].data() + offset; }
  int compare(const char* what) const {
    int bad = 0;
    for (size_t i = 0; i < emu.size(); ++i)
      bad += std::memcmp(emu[i].data(), ref[i].data(), emu[i].size() * sizeof(T)) != 0;
    if (bad) std::printf("FAIL %s (offset %d, %zu-byte storage): %d arrays differ\n", what,
                         offset, sizeof(T), bad);
    return bad;
  }
};

// Every launch of the list, in 32 KiB parameter spaces where the build has them (`large`),
// else 4 KiB ones; emulate() alternates so both kernels' planning is replayed.
static bool g_emulate_large = false;

template <int N, typename T, typename Op>
void emulate(const TensorList& tl, const Op& op0) {
  g_emulate_large = !g_emulate_large;
  for_each_launch<N>(tl, g_emulate_large, [&](const auto& meta, int n_blocks) {
    for (int b = 0; b < n_blocks; ++b)
      for (int th = 0; th < kBlock; ++th) {
        Op op = op0;
        apply_block<N, T>(meta, op, b, th, kBlock);
      }
  });
}

// A scalar vector for Op: the head (sign, and l1 or prox per l1_mode: 0 none, 1 coupled L1,
// 2 proximal), then the op scalars, each 0 (a flag off, or a zero coefficient) one time in
// four and in [0.05, 0.95] otherwise, the variant flags set from `variant`.
template <class Op>
std::vector<double> scalars_for(unsigned variant, int l1_mode, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.05, 0.95);
  std::vector<double> s(kHead + Op::kScalars);
  s[kOne] = 1.0;
  s[kSign] = seed % 2 ? -1.0 : 1.0;
  s[kL1] = l1_mode == 1 ? 0.01 : 0.0;
  s[kProx] = l1_mode == 2 ? 0.003 : 0.0;
  s[kL2] = seed % 3 == 0 ? 0.01 : 0.0;  // L2 weight decay, decoupled, or neither
  s[kDecay] = seed % 3 == 1 ? 0.999 : 1.0;
  for (int i = kHead; i < int(s.size()); ++i) s[i] = gen() % 4 == 0 ? 0.0 : u(gen);
  for (int k = 0; k < Op::Variants::count; ++k)
    s[Op::Variants::index[k]] = (variant >> k) & 1u ? 1.0 : 0.0;
  return s;
}

// One optimizer in one variant: the emulated launches against step_element on the host
// (unscale != 1: the grads unscaled in place, the step taking the unrounded product).
template <class Op, unsigned V, bool L1, typename T>
int check_step(int offset, const std::vector<double>& s, unsigned seed, const char* what,
               double unscale) {
  using M = typename Op::template Math<T>;
  constexpr unsigned use = Op::uses(V);
  std::vector<bool> used(Op::kSlots);
  for (int r = 0; r < Op::kSlots; ++r) used[r] = (use >> r) & 1u;
  Lists<T> l(Op::kSlots, offset, seed, used);
  const typename Op::template Consts<M> c(s.data());
  emulate<Op::kSlots, T>(l.list(), StepOp<Op, V, L1, T>{c, M(unscale)});
  for (size_t t = 0; t < kSizes.size(); ++t)
    for (int64_t i = 0; i < kSizes[t]; ++i) {
      M st[Op::kState];
      for (int k = 0; k < Op::kState; ++k) st[k] = used[2 + k] ? M(l.ref_at(2 + k, t)[i]) : M(0);
      T& p = l.ref_at(0, t)[i];
      T& grad = l.ref_at(1, t)[i];
      M g = M(grad);
      if (unscale != 1.0) {
        g = g * M(unscale);
        grad = T(g);
      }
      p = T(step_element<Op, V, L1>(M(p), g, st, c));
      for (int k = 0; k < Op::kState; ++k)
        if (used[2 + k]) l.ref_at(2 + k, t)[i] = T(st[k]);
    }
  return l.compare(what);
}

// Built with FASTOPT_EMULATION_FULL=1 (FASTOPT_TEST_FULL=1 in the tests), every optimizer
// in every variant, with and without L1, in every storage type. By default (each
// instantiation costs compile time, the bulk of this test) that in float storage; in the
// other types, whose loads, stores and vector paths do not depend on the variant (the rule is
// the same code on both sides of the comparison), each optimizer's plainest and fullest
// variant (every slot row it has) without L1.
#ifndef FASTOPT_EMULATION_FULL
#define FASTOPT_EMULATION_FULL 0
#endif
template <class Op, unsigned V, bool L1, typename T>
constexpr bool checked() {
  return FASTOPT_EMULATION_FULL || std::is_same_v<T, float> ||
         (!L1 && (V == 0 || V == (1u << Op::Variants::count) - 1));
}
static int g_checked = 0;  // optimizer/variant/offset cases replayed

// Every optimizer, every variant, without L1, and (at offsets 0 and 1: the vector and the
// scalar path) with coupled L1 and with the proximal step; as checked() selects.
template <typename T>
int run_all(int offset) {
  int bad = 0;
  unsigned seed = 1;
  visit_all(Optimizers{}, [&](auto tag) {
    using Op = typename decltype(tag)::type;
    for (unsigned v = 0; v < (1u << Op::Variants::count); ++v)
      for (int l1_mode = 0; l1_mode < (offset <= 1 ? 3 : 1); ++l1_mode) {
        const std::vector<double> s = scalars_for<Op>(v, l1_mode, ++seed + 17 * offset);
        const std::string what = std::string(Op::name) + " variant " + std::to_string(v) +
                                 (l1_mode == 1 ? " l1" : l1_mode == 2 ? " prox" : "");
        with_variant<Op::Variants::count>(v, [&](auto vc) {
          with_flag(l1_mode != 0, [&](auto l1) {
            constexpr unsigned V = decltype(vc)::value;
            constexpr bool L1 = decltype(l1)::value;
            if constexpr (checked<Op, V, L1, T>()) {
              // every third case unscales its grads (by 1/3: not a power of two)
              bad += check_step<Op, V, L1, T>(offset, s, seed, what.c_str(),
                                              seed % 3 == 0 ? 1.0 / 3.0 : 1.0);
              ++g_checked;
            }
          });
        });
      }
  });
  {
    using M = math_t<T>;
    Lists<T> l(1, offset, 6, {true});
    emulate<1, T>(l.list(), ClampOp<T>{M(0.5)});
    for (size_t t = 0; t < kSizes.size(); ++t)
      for (int64_t i = 0; i < kSizes[t]; ++i) clamp_rule(l.ref_at(0, t)[i], M(0.5));
    bad += l.compare("clamp");
  }
  return bad;
}

// Planning: dense global block numbering (norm partials), metadata within bounds, every element
// covered once, for lists up to 20,000 tensors.
template <int N>
static int check_plan(const std::vector<int64_t>& sizes, bool large, int* n_launches = nullptr) {
  const int64_t n = int64_t(sizes.size());
  int64_t nonempty = 0;
  for (int64_t s : sizes) nonempty += s > 0;
  std::vector<std::vector<float>> data(n);
  std::vector<uint64_t> ptrs(N * n, 0);
  for (int64_t t = 0; t < n; ++t) {
    data[t].assign(size_t(sizes[t]) + 1, 0.0f);
    ptrs[t] = reinterpret_cast<uint64_t>(data[t].data());  // slot 0 only
  }
  const TensorList tl{ptrs.data(), sizes.data(), n, N};
  std::map<const float*, int64_t> where;
  for (int64_t t = 0; t < n; ++t) where[data[t].data()] = t;
  std::vector<std::vector<int>> hits(n);
  for (int64_t t = 0; t < n; ++t) hits[t].assign(size_t(sizes[t]), 0);
  int64_t expected_first = 0;
  int bad = 0;
  int launches = 0;
  for_each_launch<N>(tl, large, [&](const auto& meta, int n_blocks) {
    using MetaT = std::decay_t<decltype(meta)>;
    ++launches;
    if (meta.first_block != expected_first) ++bad;
    if (meta.n_tensors < 1 || meta.n_tensors > MetaT::kCapacity) ++bad;
    // 4 KiB launches unless the list needs more than one of them
    const bool big = MetaT::kBytes == kLargeParams;
    if (big != (large && FASTOPT_LARGE_PARAMS &&
                nonempty > Meta<N, kSmallParams>::kCapacity)) ++bad;
    if (meta.block_end[meta.n_tensors - 1] != n_blocks) ++bad;
    expected_first += n_blocks;
    for (int b = 0; b < n_blocks; ++b) {
      int tensor;
      int64_t chunk;
      locate(meta, b, tensor, chunk);
      const float* base = static_cast<const float*>(meta.addr[0][tensor]);
      const auto it = where.find(base);
      const int64_t t = it == where.end() ? -1 : it->second;
      if (t < 0 || meta.numel[tensor] != sizes[t]) { ++bad; continue; }
      const int64_t start = chunk * kChunk;
      const int64_t len = std::min<int64_t>(kChunk, sizes[t] - start);
      if (len <= 0) { ++bad; continue; }
      for (int64_t i = 0; i < len; ++i) ++hits[t][size_t(start + i)];
    }
  });
  int64_t chunks = 0;
  for (int64_t t = 0; t < n; ++t) {
    chunks += (sizes[t] + kChunk - 1) / kChunk;
    for (int h : hits[t]) bad += h != 1;
  }
  if (expected_first != chunks) ++bad;
  if (n_launches) *n_launches = launches;
  return bad;
}

// The capturable clip: the per-block partials (norm_thread + the block tree), the one-block
// fold of norm_finish (same pairs as norm()'s host fold: same bits), the norm and coefficient,
// and scale_by reading the coefficient through a pointer.
template <typename T>
int check_clip_device(int offset) {
  using M = math_t<T>;
  int bad = 0;
  const size_t n = kSizes.size();
  const NormKind kinds[] = {NormKind::l2, NormKind::l1, NormKind::linf, NormKind::lp};
  const double ps[] = {2.0, 1.0, INFINITY, 3.0};
  for (int k = 0; k < 4; ++k) {
    Lists<T> l(1, offset, 9 + k, {true});
    const TensorList tl = l.list();
    std::vector<double> partial(size_t(norm_blocks(tl)), -1.0);
    for_each_launch<1>(tl, k % 2 == 0, [&](const auto& meta, int n_blocks) {
      std::vector<double> acc(kBlock);
      for (int b = 0; b < n_blocks; ++b) {
        for (int th = 0; th < kBlock; ++th)
          acc[th] = norm_thread<T>(meta, kinds[k], ps[k], b, th, kBlock);
        for (int width = kBlock / 2; width > 0; width /= 2)
          for (int th = 0; th < width; ++th) acc[th] = combine(kinds[k], acc[th], acc[th + width]);
        partial[size_t(meta.first_block + b)] = acc[0];
      }
    });
    std::vector<double> x = partial, y = partial;
    const int64_t np = int64_t(x.size());
    for (int64_t width = 1; width < np; width *= 2)
      for (int th = 0; th < kFinishBlock; ++th)
        fold_level(x.data(), np, width, kinds[k], th, kFinishBlock);
    double out[2];
    norm_result(kinds[k], ps[k], 1.5, np ? x[0] : 0.0, out);
    const double host_sum = fold(kinds[k], y);
    double direct = 0.0;
    for (size_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < kSizes[t]; ++i)
        direct = combine(kinds[k], direct, norm_term(l.ref_at(0, t)[i], kinds[k], ps[k]));
    const double expect = kinds[k] == NormKind::lp ? std::pow(direct, 1.0 / 3.0)
                          : kinds[k] == NormKind::l2 ? std::sqrt(direct) : direct;
    const double coef = std::min(1.5 / (expect + 1e-6), 1.0);
    if (std::memcmp(&x[0], &host_sum, sizeof(double)) != 0 ||
        std::fabs(out[0] - expect) > 1e-12 * expect || std::fabs(out[1] - coef) > 1e-12 * coef) {
      std::printf("FAIL clip norm kind %d (offset %d, %zu-byte storage): %.17g vs %.17g\n", k,
                  offset, sizeof(T), out[0], expect);
      ++bad;
    }
    emulate<1, T>(tl, ScaleByOp<T>{&out[1]});
    for (size_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < kSizes[t]; ++i) scale_rule(l.ref_at(0, t)[i], M(out[1]));
    bad += l.compare("scale_by");
  }
  double out[2];
  norm_result(NormKind::l2, 2.0, 1.0, NAN, out);
  bad += !(std::isnan(out[0]) && std::isnan(out[1]));
  norm_result(NormKind::l2, 2.0, 1.0, INFINITY, out);
  bad += !(std::isinf(out[0]) && out[1] == 0.0);
  norm_result(NormKind::l1, 1.0, 10.0, 0.0, out);  // an all-zero list is not scaled up
  bad += !(out[0] == 0.0 && out[1] == 1.0);
  return bad;
}

// The launchers' pointer checks: the first problem, named by slot and tensor, or "".
static int check_table_checks() {
  int bad = 0;
  alignas(16) static float a[64], b[64], c[64];
  const char* names[] = {"param", "grad", "exp_avg"};
  auto expect = [&](const std::vector<uint64_t>& ptrs, const std::vector<int64_t>& numel,
                    int elem, unsigned required, const std::string& want) {
    const TensorList tl{ptrs.data(), numel.data(), int64_t(numel.size()), 3};
    const std::string got = table_problem(tl, elem, names, required);
    const bool ok = want.empty() ? got.empty() : got.find(want) != std::string::npos;
    if (!ok) {
      std::printf("FAIL table check: got '%s', expected '%s'\n", got.c_str(), want.c_str());
      ++bad;
    }
  };
  const auto A = uint64_t(uintptr_t(a)), B = uint64_t(uintptr_t(b)), C = uint64_t(uintptr_t(c));
  expect({A, A + 16, B, B + 16, C, C + 16}, {4, 7}, 4, 0b111u, "");
  expect({A, A + 16, B, B + 16, C, 0}, {4, 7}, 4, 0b111u,
         "exp_avg[1]: null pointer for 7 elements");
  expect({A, A + 16, B, B + 16, C, 0}, {4, 7}, 4, 0b011u, "");           // optional slot
  expect({A, A + 16, B, 0, C, 0}, {4, 0}, 4, 0b111u, "");                // empty tensor
  expect({A, A + 16, B + 2, B + 16, C, C + 16}, {4, 7}, 4, 0b111u,
         "grad[0]: address 0x");
  expect({A, A + 16, B + 2, B + 16, C, C + 16}, {4, 7}, 4, 0b111u,
         "is not aligned to its 4-byte elements");
  expect({A + 2, A + 16, B + 2, B + 16, C + 6, C + 16}, {4, 7}, 2, 0b111u, "");  // fp16: 2 bytes
  expect({A, A + 8, B, B + 8, C, C + 8}, {4, 7}, 8, 0b111u, "");          // fp64 at 8, not 16
  expect({A, A + 16, B, B + 16, C, C + 16}, {4, -1}, 4, 0b111u, "param[1]: negative numel -1");
  const uint64_t top = UINT64_MAX - 15;
  expect({A, A + 16, B, top, C, C + 16}, {4, 7}, 4, 0b111u,
         "grad[1]: address 0xfffffffffffffff0 + 7 elements wraps around");
  return bad;
}

// exp_f against double exp over [-90, 89]: within 2 ulp of a normal result, 0 below the
// normal range, +inf past ln(FLT_MAX), NaN for NaN. (x in (88.38, 88.72] used to give +inf.)
static int check_exp_f() {
  int bad = 0;
  auto one = [&](float x) {
    const float got = exp_f(x);
    const double want = std::exp(double(x));
    bool ok;
    if (want > double(std::numeric_limits<float>::max())) ok = std::isinf(got) && got > 0;
    else if (want < double(std::numeric_limits<float>::min())) ok = got == 0.0f || x >= -87.33654f;
    else ok = std::fabs(double(got) - want) <= 2.5e-7 * want;
    if (!ok && bad < 5) std::printf("FAIL exp_f(%.9g) = %.9g, exp = %.9g\n", x, got, want);
    bad += !ok;
  };
  for (float x = -90.0f; x <= 89.0f; x += 0.0007f) one(x);
  for (float x : {88.376f, 88.38f, 88.5f, 88.7f, 88.72283f, 88.7228317f, 88.72284f, 89.0f,
                  1e30f, INFINITY, -INFINITY, -87.33654f, -87.3f, 0.0f, -0.0f})
    one(x);
  for (float x = 88.3f; x < 88.8f; x = std::nextafter(x, 100.0f)) one(x);  // every float there
  bad += !std::isnan(exp_f(NAN));
  if (bad) std::printf("FAIL exp_f: %d values\n", bad);
  return bad;
}

int main() {
  int bad = 0;
  std::vector<std::vector<int64_t>> lists = {
      {1}, {7, 4097, 65537}, {0, 5, 0}, {65536, 65536, 65537, 131072}, {1 << 22},
      std::vector<int64_t>(20000, 256), std::vector<int64_t>(100, 70000)};
  std::vector<int64_t> mixed;
  for (int i = 0; i < 3000; ++i) mixed.push_back((int64_t(i) * 7919) % 2003);
  lists.push_back(mixed);
  for (bool large : {false, true})
    for (const auto& l : lists)
      bad += check_plan<1>(l, large) + check_plan<3>(l, large) + check_plan<5>(l, large);
  // a 20,000-tensor Adam step: 278 launches in 4 KiB, 33 in 32 KiB
  int small_launches = 0, large_launches = 0;
  const std::vector<int64_t> many(20000, 256);
  bad += check_plan<5>(many, false, &small_launches) + check_plan<5>(many, true, &large_launches);
  if (small_launches != 278 || large_launches != (FASTOPT_LARGE_PARAMS ? 33 : 278)) {
    std::printf("FAIL: 20,000 tensors took %d / %d launches\n", small_launches, large_launches);
    ++bad;
  }
  if (bad) std::printf("FAIL: launch planning, %d problems\n", bad);
  for (int offset : {0, 1, 2, 3}) bad += run_all<float>(offset) + run_all<double>(offset);
  for (int offset : {0, 1, 3, 4, 8})
    bad += run_all<__half>(offset) + run_all<__nv_bfloat16>(offset);
  for (int offset : {0, 1}) bad += check_clip_device<float>(offset) + check_clip_device<double>(offset);
  bad += check_clip_device<__nv_bfloat16>(3);
  bad += check_table_checks() + check_exp_f();
  std::printf("%s: CUDA kernels replayed on the host, %d mismatching ops, %d optimizer cases%s\n",
              bad ? "FAIL" : "ok", bad, g_checked, FASTOPT_EMULATION_FULL ? " (full)" : "");
  return bad ? 1 : 0;
}
