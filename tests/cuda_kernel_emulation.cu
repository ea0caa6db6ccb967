// Replays the CUDA multi-tensor kernels on the CPU (no GPU needed): every launch that the
// driver plans is executed block by block, thread by thread, through the same apply_block()
// the GPU runs, and the results must equal, bit for bit, the rule applied element by element
// on the host. This checks the launch planning, the block -> (tensor, chunk) search, the
// 16-byte vector and the scalar paths (aligned and misaligned pointers, odd sizes), the slot
// wiring and the write masks of every op; and the launch planning of long lists. Built and run
// by tests/test_cuda_build.py.
#include <cstdio>
#include <cstring>
#include <map>
#include <algorithm>
#include <random>
#include <vector>

#include "cuda/adagrad.cu"
#include "cuda/adam.cu"
#include "cuda/clip.cu"
#include "cuda/lion.cu"
#include "cuda/rmsprop.cu"
#include "cuda/sgd.cu"

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

template <int N, typename T, typename Op>
void emulate(const TensorList& tl, const Op& op0) {
  for_each_launch<N>(tl, [&](const Meta<N>& meta, int n_blocks) {
    for (int b = 0; b < n_blocks; ++b)
      for (int th = 0; th < kBlock; ++th) {
        Op op = op0;
        apply_block<N, T>(meta, op, b, th, kBlock);
      }
  });
}

template <typename T>
int run_all(int offset) {
  using M = math_t<T>;
  int bad = 0;
  const size_t n = kSizes.size();
  for (bool ams : {false, true})
    for (bool decoupled : {false, true}) {
      Lists<T> l(kAdamSlots, offset, 1, {true, true, true, true, ams});
      const AdamHyper h{1e-2, 0.9, 0.999, 1e-8, 0.1, 1 - 0.9, 1 - 0.999, decoupled, ams, false,
                        false};
      with_flag(ams, [&](auto a) { emulate<kAdamSlots, T>(l.list(), AdamOp<a, T>{h, {}}); });
      const AdamConsts<M> c(h);
      for (size_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < kSizes[t]; ++i) {
          T* vm = ams ? l.ref_at(4, t) + i : nullptr;
          if (ams) adam_rule<true>(l.ref_at(0, t)[i], l.ref_at(1, t)[i], l.ref_at(2, t)[i],
                                   l.ref_at(3, t)[i], vm, c);
          else adam_rule<false>(l.ref_at(0, t)[i], l.ref_at(1, t)[i], l.ref_at(2, t)[i],
                                l.ref_at(3, t)[i], vm, c);
        }
      bad += l.compare("adam");
    }
  for (double momentum : {0.0, 0.9}) {
    Lists<T> l(kSgdSlots, offset, 2, {true, true, momentum != 0});
    const SgdHyper h{0.1, momentum, 0.0, 0.01, momentum != 0, false, false};
    with_flag(momentum != 0, [&](auto m) { emulate<kSgdSlots, T>(l.list(), SgdOp<m, T>{h, {}}); });
    const SgdConsts<M> c(h);
    for (size_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < kSizes[t]; ++i) {
        if (momentum != 0) sgd_rule<true>(l.ref_at(0, t)[i], l.ref_at(1, t)[i], l.ref_at(2, t) + i, c);
        else sgd_rule<false>(l.ref_at(0, t)[i], l.ref_at(1, t)[i], (T*)nullptr, c);
      }
    bad += l.compare("sgd");
  }
  {
    Lists<T> l(kAdagradSlots, offset, 3, {true, true, true});
    const AdagradHyper h{0.05, 0.1, 1e-10, true};
    emulate<kAdagradSlots, T>(l.list(), AdagradOp<T>{h, 0.0, {}});
    const AdagradConsts<M> c(h);
    for (size_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < kSizes[t]; ++i)
        adagrad_rule(l.ref_at(0, t)[i], l.ref_at(1, t)[i], l.ref_at(2, t)[i], c);
    bad += l.compare("adagrad");
  }
  {
    Lists<T> l(kRmspropSlots, offset, 4, {true, true, true, true, true});
    const RmspropHyper h{1e-3, 0.99, 1e-8, 0.01, 0.9, true, false};
    emulate<kRmspropSlots, T>(l.list(), RmspropOp<true, true, T>{h, {}});
    const RmspropConsts<M> c(h);
    for (size_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < kSizes[t]; ++i)
        rmsprop_rule<true, true>(l.ref_at(0, t)[i], l.ref_at(1, t)[i], l.ref_at(2, t)[i],
                                 l.ref_at(3, t) + i, l.ref_at(4, t) + i, c);
    bad += l.compare("rmsprop");
  }
  {
    Lists<T> l(kLionSlots, offset, 5, {true, true, true});
    const LionHyper h{1e-3, 0.9, 0.99, 0.1, false};
    emulate<kLionSlots, T>(l.list(), LionOp<T>{h, {}});
    const LionConsts c(h);
    for (size_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < kSizes[t]; ++i)
        lion_rule(l.ref_at(0, t)[i], l.ref_at(1, t)[i], l.ref_at(2, t)[i], c);
    bad += l.compare("lion");
  }
  {
    Lists<T> l(1, offset, 6, {true});
    emulate<1, T>(l.list(), ClampOp<T>{M(0.5)});
    for (size_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < kSizes[t]; ++i) clamp_rule(l.ref_at(0, t)[i], M(0.5));
    bad += l.compare("clamp");
  }
  return bad;
}

// Planning: dense global block numbering (norm partials), metadata within bounds, every element
// covered once, for lists up to 20,000 tensors.
template <int N>
static int check_plan(const std::vector<int64_t>& sizes) {
  const int64_t n = int64_t(sizes.size());
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
  for_each_launch<N>(tl, [&](const Meta<N>& meta, int n_blocks) {
    if (meta.first_block != expected_first) ++bad;
    if (meta.n_tensors < 1 || meta.n_tensors > max_tensors<N>()) ++bad;
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
  for (const auto& l : lists) bad += check_plan<1>(l) + check_plan<3>(l) + check_plan<5>(l);
  if (bad) std::printf("FAIL: launch planning, %d problems\n", bad);
  for (int offset : {0, 1}) bad += run_all<float>(offset) + run_all<double>(offset);
  std::printf("%s: CUDA kernels replayed on the host, %d mismatching ops\n", bad ? "FAIL" : "ok",
              bad);
  return bad ? 1 : 0;
}
