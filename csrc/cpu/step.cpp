// The CPU driver of every optimizer in fastopt/optimizers.h: one pass over each chunk of the
// table, the rule applied element by element with its state in registers (fastopt/rule.h).
#include <type_traits>
#include <utility>

#include "fastopt/optimizers.h"
#include "half.h"
#include "multi_tensor.h"
#include "quant8.h"
#include "ops.h"

namespace fastopt::cpu::FASTOPT_ISA {

namespace {

template <bool Used, typename M, typename T>
inline M load(const T* x, int64_t i) {
  if constexpr (Used) return M(x[i]);
  else return M(0);
}

template <bool Used, typename T, typename M>
inline void store(T* x, int64_t i, M v) {
  if constexpr (Used) x[i] = T(v);
}

// One chunk of n elements. Every row has its own __restrict pointer (the state rows as the
// pack `state`), and Use (the rows the variant touches) is known at compile time, so the loop
// carries no branch on either and vectorizes; rows outside Use are null and never touched.
template <class Op, unsigned V, bool L1, unsigned Use, typename T, typename M, size_t... I,
          typename... S>
void step_chunk(int64_t n, T* __restrict param, const T* __restrict grad,
                const typename Op::template Consts<M>& consts, std::index_sequence<I...>,
                S* __restrict... state) {
  // a local copy: its fields cannot alias the rows, so they stay in registers and GCC can
  // unswitch the loop on the rule's run-time flags
  const typename Op::template Consts<M> c = consts;
  for (int64_t i = 0; i < n; ++i) {
    M st[Op::kState] = {load<(Use >> (2 + I) & 1u) != 0, M>(state, i)...};
    const M p = step_element<Op, V, L1>(M(param[i]), M(grad[i]), st, c);
    (store<(Use >> (2 + I) & 1u) != 0>(state, i, st[I]), ...);
    param[i] = T(p);
  }
}

// The same loop with every a * b + c rounded as written: for the ops whose math is float64
// whatever the storage (Lion: the sign of an interpolation is the update), whose 16-bit state
// must round exactly as the float64 reference's, ties included. A fused multiply-add (GCC
// contracts by default) is nearer the real value, but a tie it breaks the other way flips a
// sign later. (Clang and MSVC do not contract across statements; this attribute is GCC's.)
#if defined(__GNUC__) && !defined(__clang__)
#define FASTOPT_NO_CONTRACTION __attribute__((optimize("fp-contract=off")))
#else
#define FASTOPT_NO_CONTRACTION
#endif
template <class Op, unsigned V, bool L1, unsigned Use, typename T, typename M, size_t... I,
          typename... S>
FASTOPT_NO_CONTRACTION void step_chunk_exact(int64_t n, T* __restrict param,
                                             const T* __restrict grad,
                                             const typename Op::template Consts<M>& c,
                                             std::index_sequence<I...> rows,
                                             S* __restrict... state) {
  step_chunk<Op, V, L1, Use, T, M>(n, param, grad, c, rows, state...);
}

// One chunk, the exact-rounding loop for the float64-math ops.
template <class Op, unsigned V, bool L1, unsigned Use, typename T, typename M, size_t... I,
          typename... S>
inline void step_any(int64_t n, T* param, const T* grad,
                     const typename Op::template Consts<M>& c, std::index_sequence<I...> rows,
                     S*... state) {
  if constexpr (std::is_same_v<typename Op::template Math<float>, double>)
    step_chunk_exact<Op, V, L1, Use, T, M>(n, param, grad, c, rows, state...);
  else
    step_chunk<Op, V, L1, Use, T, M>(n, param, grad, c, rows, state...);
}

// Stochastic rounding of 16-bit params: on, and the key of tensor t of the table (the tensor's
// id mixed into the step's base key, see half.h).
struct Stochastic {
  bool on = false;
  uint32_t base = 0;
  const int64_t* ids = nullptr;
  uint32_t key(int64_t t) const { return mix32(base ^ uint32_t(uint64_t(ids[t]))); }
};

// A state row whose storage is known at run time (RowStorage: a DType code or an 8-bit
// RowKind), elements [off, off + n) of its `numel` converted to or from the math type; T, the
// params' storage type, is the common case, converted as the params are. The switch runs once
// per tile and row.
template <typename T, typename M>
FASTOPT_HD void row_to_math(int kind, const void* row, int64_t numel, int64_t off, M* dst,
                            int64_t n) {
  if (kind == storage_code<T>()) {
    to_math(static_cast<const T*>(row) + off, dst, n);
  } else if (kind >= kQuant8Signed) {
    quant_to_math(kind == kQuant8Signed, row, numel, off, dst, n);
  } else {
    dispatch_storage(DType(kind), [&](auto tag) {
      to_math(static_cast<const decltype(tag)*>(row) + off, dst, n);
    });
  }
}

template <typename T, typename M>
FASTOPT_HD void row_from_math(int kind, const M* src, void* row, int64_t numel, int64_t off,
                              int64_t n) {
  if (kind == storage_code<T>()) {
    from_math(src, static_cast<T*>(row) + off, n);
  } else if (kind >= kQuant8Signed) {
    quant_from_math(kind == kQuant8Signed, src, row, numel, off, n);
  } else {
    dispatch_storage(DType(kind),
                     [&](auto tag) { from_math(src, static_cast<decltype(tag)*>(row) + off, n); });
  }
}

// A chunk a tile at a time (16-bit params, state rows in another dtype than the params, or
// master weights): the used rows converted into math-type buffers (one vector conversion
// each, half.h), the math-type loop run on them, the written rows converted back (the
// gradient too when it is unscaled; the param stochastically with `sr`). Converting inside
// the rule's loop instead costs several times the rule's own arithmetic (float16's bit-exact
// conversion is ~20 vector operations). state[I]: row I's tensor (its start: `first` is the
// chunk's offset in it), sd[I] its storage; numel: the tensor's size (8-bit rows: where the
// absmax follow the codes); master: the tensor's float32 master copy, or null.
template <class Op, unsigned V, bool L1, unsigned Use, typename T, typename M, size_t... I>
void step_tiles(int64_t n, T* param, T* grad, const typename Op::template Consts<M>& c,
                M unscale, const Stochastic& sr, int64_t t, int64_t first, int64_t numel,
                std::index_sequence<I...> rows, void* const* state, const int* sd,
                float* master) {
  constexpr int64_t kTile = 256;
  constexpr unsigned kWrite = Op::kWritten & Use;
  alignas(64) M p[kTile], g[kTile], st[Op::kState > 0 ? Op::kState : 1][kTile];
  for (int64_t b = 0; b < n; b += kTile) {
    const int64_t m = n - b < kTile ? n - b : kTile;
    if (master)
      to_math(master + first + b, p, m);
    else
      to_math(param + b, p, m);
    to_math(grad + b, g, m);
    if (unscale != M(1)) {
      // the update takes the unscaled gradient unrounded, as torch's fused steps do
      for (int64_t i = 0; i < m; ++i) g[i] = g[i] * unscale;
      from_math(g, grad + b, m);
    }
    ((Use >> (2 + I) & 1u ? row_to_math<T>(sd[I], state[I], numel, first + b, st[I], m)
                          : void()),
     ...);
    step_any<Op, V, L1, Use, M, M>(m, p, g, c, rows,
                                   ((Use >> (2 + I) & 1u) ? st[I] : static_cast<M*>(nullptr))...);
    if (master) from_math(p, master + first + b, m);
    bool rounded = false;
    if constexpr (std::is_same_v<T, f16> || std::is_same_v<T, bf16>) {
      if (sr.on) {  // 32-bit params round to nearest
        from_math_stochastic(p, param + b, m, sr.key(t), first + b);
        rounded = true;
      }
    }
    if (!rounded) from_math(p, param + b, m);
    ((kWrite >> (2 + I) & 1u ? row_from_math<T>(sd[I], st[I], state[I], numel, first + b, m)
                             : void()),
     ...);
  }
}

// The chunk [b, e) of tensor t: the rows the variant uses, null for the others. `tiled`: some
// state row is stored in another dtype than T, or there are master weights (RowStorage).
// (unscale != 1: the gradient is first unscaled in place, g = g * unscale, while the chunk is in
// cache: one pass over memory still.)
template <class Op, unsigned V, bool L1, typename T, typename M, size_t... I>
void step_rows(const TensorList& tl, int64_t t, int64_t b, int64_t e,
               const typename Op::template Consts<M>& c, double unscale,
               const Stochastic& sr, const int* sd, const uint64_t* master, bool tiled,
               std::index_sequence<I...> rows) {
  constexpr unsigned Use = Op::uses(V);
  constexpr bool k16 = std::is_same_v<T, f16> || std::is_same_v<T, bf16>;
  (void)sd, (void)master, (void)tiled;  // float64 params keep float64 state, no master
  T* const grad = tl.slot<T>(1, t) + b;
  if constexpr (!std::is_same_v<T, double>) {
    if (k16 || tiled) {
      void* const state[] = {
          ((Use >> (2 + I) & 1u) ? static_cast<void*>(tl.slot<T>(int(2 + I), t)) : nullptr)...,
          nullptr};
      float* const mt = master ? reinterpret_cast<float*>(uintptr_t(master[t])) : nullptr;
      step_tiles<Op, V, L1, Use, T, M>(e - b, tl.slot<T>(0, t) + b, grad, c, M(unscale), sr, t,
                                       b, tl.numel[t], rows, state, sd, mt);
      return;
    }
  }
  if constexpr (!k16) {
    (void)sr;  // 32- and 64-bit params round to nearest
    if (unscale != 1.0) {
      const math_t<T> u(unscale);
      for (int64_t i = 0; i < e - b; ++i) grad[i] = T(math_t<T>(grad[i]) * u);
    }
    step_any<Op, V, L1, Use, T, M>(
        e - b, tl.slot<T>(0, t) + b, grad, c, rows,
        ((Use >> (2 + I) & 1u) ? tl.slot<T>(int(2 + I), t) + b : static_cast<T*>(nullptr))...);
  }
}

template <class Op>
void step_op(const TensorList& tl, DType dtype, const RowStorage& rs, const double* s,
             double unscale, const Stochastic& sr) {
  const unsigned variant = rule_info<Op>().variant(s);
  const bool l1 = s[kL1] != 0.0 || s[kProx] != 0.0;
  int sd[Op::kState > 0 ? Op::kState : 1];
  bool tiled = rs.master != nullptr;
  for (size_t i = 0; i < Op::kState; ++i) {
    sd[i] = rs.state ? rs.state[i] : int(dtype);
    tiled = tiled || sd[i] != int(dtype);
  }
  dispatch_storage(dtype, [&](auto tag) {
    using T = decltype(tag);
    using M = typename Op::template Math<T>;
    const typename Op::template Consts<M> c(s);
    with_variant<Op::Variants::count>(variant, [&](auto v) {
      with_flag(l1, [&](auto l1_on) {
        for_each_chunk(tl, [&](int64_t, int64_t t, int64_t b, int64_t e) {
          step_rows<Op, decltype(v)::value, decltype(l1_on)::value, T, M>(
              tl, t, b, e, c, unscale, sr, sd, rs.master, tiled,
              std::make_index_sequence<Op::kState>{});
        });
      });
    });
  });
}

}  // namespace

void step(int op, const TensorList& tl, DType dtype, const RowStorage& rs, const double* scalars,
          double unscale, const int64_t* stochastic_ids, uint32_t stochastic_base) {
  const Stochastic sr{stochastic_ids != nullptr, stochastic_base, stochastic_ids};
  visit(Optimizers{}, op, [&](auto tag) {
    step_op<typename decltype(tag)::type>(tl, dtype, rs, scalars, unscale, sr);
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA
