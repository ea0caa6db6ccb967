// The shape every optimizer rule (rules/<op>.h) takes, and the per-element step that every
// driver (CPU, CUDA) wraps around it. An optimizer is one struct deriving from Rule:
//
//   name            "adam": what Python calls it
//   FASTOPT_STATE   its state rows after param (row 0) and grad (row 1): enum State, kState,
//                   kSlots, slot_names, kWritten (param and every state row)
//   FASTOPT_SCALARS its op scalars, in the order of the scalar vector from index kHead on (the
//                   contract with the Python spec): S::<name> (index in the vector), kScalars,
//                   scalar_names, and Consts<M>, every scalar (head included) as an M field
//   Math<T>         arithmetic type for storage T (default math_t<T>: float, double for double)
//   Variants        VariantFlags<S::flag, ...>: flags that select a compile-time variant (bit i
//                   of a variant number is flag i), so vectorized loops carry no branch on them
//   uses(variant)   the slots the variant reads and writes (default: all)
//   update<V>(p, g, st, c) -> new p
//                   the rule: g has the sign, the coupled L1 term and the L2 weight decay
//                   applied, p the decoupled weight decay; st holds the state rows
//                   (st[exp_avg], ...) in M, read and written in place
//
// The scalar vector (float64, formed on the host by fastopt/ops/<op>.py) starts with the common
// head: one (1.0), sign (-1 to maximize), l1 (coupled L1 coefficient), prox (proximal
// threshold lr * l1), l2 (L2 weight decay, added to the gradient), decay (decoupled weight
// decay factor 1 - lr * weight_decay). The regularizers are the frame's, not the rules': every
// optimizer has them all. The step of one element, in every driver:
//
//   p = M(param); g = M(grad) * sign
//   if l1 != 0:   g = g + l1 * nan_sign(p)
//   if l2 != 0:   g = g + l2 * p
//   if decay != 1: p = p * decay
//   p = Op::update<V>(p, g, state, consts)
//   if prox != 0: p = soft_threshold(p, prox)
//   param = T(p)
//
// with the L1 lines compiled only in the L1 variant of the driver (l1 != 0 or prox != 0).
#pragma once
#include <cstddef>
#include <type_traits>
#include <utility>

#include "fastopt/common.h"

namespace fastopt {

// The common head of every scalar vector.
enum HeadScalar : int { kOne = 0, kSign = 1, kL1 = 2, kProx = 3, kL2 = 4, kDecay = 5, kHead = 6 };

// Flags (indices into the scalar vector) that select compile-time variants; bit i of a variant
// number is Flags[i].
template <int... Flags>
struct VariantFlags {
  static constexpr int count = int(sizeof...(Flags));
  static constexpr int index[count + 1] = {Flags..., -1};  // -1: never empty

  static constexpr int position(int flag) {
    for (int i = 0; i < count; ++i)
      if (index[i] == flag) return i;
    return -1;
  }
  // The variant bit of a flag; naming a flag that is not a variant does not compile.
  template <int Flag>
  static constexpr unsigned bit =
      position(Flag) >= 0 ? 1u << position(Flag) : throw "not a variant flag";
};

// Defaults of the optional parts of a rule.
struct Rule {
  template <typename T> using Math = math_t<T>;
  using Variants = VariantFlags<>;
  static constexpr unsigned uses(unsigned /*variant*/) { return ~0u; }
  // The bit of state row `state` in a slot mask (rows 0 and 1 are param and grad).
  static constexpr unsigned row(int state) { return 1u << (2 + state); }
};

#define FASTOPT_RULE_ENUM_(n) n,
#define FASTOPT_RULE_NAME_(n) #n,
#define FASTOPT_RULE_FIELD_(n) M n;
#define FASTOPT_RULE_READ_(n) n = M(s[S::n]);

// Declares the state rows (after param and grad) of a rule: FASTOPT_STATE(LIST) with
// LIST(X) = X(exp_avg) X(exp_avg_sq) ...
#define FASTOPT_STATE(LIST)                                                              \
  enum State : int { LIST(FASTOPT_RULE_ENUM_) kState };                                  \
  static constexpr int kSlots = 2 + kState;                                              \
  static constexpr const char* slot_names[kSlots] = {"param", "grad",                    \
                                                     LIST(FASTOPT_RULE_NAME_)};          \
  static constexpr unsigned kWritten = ((1u << kSlots) - 1u) & ~2u;

// Declares the op scalars of a rule, in scalar-vector order from kHead on, and Consts<M>:
// FASTOPT_SCALARS(LIST) with LIST(X) = X(lr) X(beta1) ...
#define FASTOPT_SCALARS(LIST)                                                            \
  struct S {                                                                             \
    enum : int { kBefore_ = kHead - 1, LIST(FASTOPT_RULE_ENUM_) kEnd_ };                 \
  };                                                                                     \
  static constexpr int kScalars = S::kEnd_ - kHead;                                      \
  static constexpr const char* scalar_names[kScalars] = {LIST(FASTOPT_RULE_NAME_)};      \
  template <typename M>                                                                  \
  struct Consts {                                                                        \
    M one, sign, l1, prox, l2, decay;                                                    \
    LIST(FASTOPT_RULE_FIELD_)                                                            \
    FASTOPT_HD explicit Consts(const double* s)                                          \
        : one(M(s[kOne])), sign(M(s[kSign])), l1(M(s[kL1])), prox(M(s[kProx])),         \
          l2(M(s[kL2])), decay(M(s[kDecay])) {                                           \
      LIST(FASTOPT_RULE_READ_)                                                           \
    }                                                                                    \
  };

// The proximal step of L1 (soft thresholding): shrink p towards 0 by t, to 0 within t; NaN
// stays NaN, and 0 * p keeps the sign of a zeroed p.
template <typename M>
FASTOPT_HD M soft_threshold(M p, M t) {
  return p > t ? p - t : (p < -t ? p + t : (p != p ? p : M(0) * p));
}

// One element's step (see the top of this file). L1: the coupled L1 / proximal variant.
template <class Op, unsigned V, bool L1, typename M>
FASTOPT_HD M step_element(M p, M grad, M (&st)[Op::kState],
                          const typename Op::template Consts<M>& c) {
  M g = grad * c.sign;
  if constexpr (L1) g = c.l1 != M(0) ? g + c.l1 * nan_sign(p) : g;
  // loop-invariant tests: the compiler unswitches them, the vector loops carry no branch
  if (c.l2 != M(0)) g = g + c.l2 * p;
  if (c.decay != M(1)) p = p * c.decay;
  p = Op::template update<V>(p, g, st, c);
  // soft_threshold(p, 0) is p, bit for bit: no test of prox != 0 (a select there keeps GCC
  // from vectorizing the loop)
  if constexpr (L1) p = soft_threshold(p, c.prox);
  return p;
}

// Calls f(std::integral_constant<unsigned, v>{}) for the run-time variant v < 2^Bits.
template <int Bits, typename F, unsigned... I>
void with_variant(unsigned v, F&& f, std::integer_sequence<unsigned, I...>) {
  (void)((v == I ? (f(std::integral_constant<unsigned, I>{}), true) : false) || ...);
}
template <int Bits, typename F>
void with_variant(unsigned v, F&& f) {
  with_variant<Bits>(v, std::forward<F>(f), std::make_integer_sequence<unsigned, 1u << Bits>{});
}

// A list of rules (fastopt/optimizers.h holds the one list); visit() calls f(type_tag<Op>{})
// for the op at `index`, and returns whether there was one.
template <class... Ops> struct RuleList {
  static constexpr int size = int(sizeof...(Ops));
};
template <class Op> struct type_tag { using type = Op; };

template <class... Ops, typename F>
bool visit(RuleList<Ops...>, int index, F&& f) {
  int i = 0;
  return ((i++ == index ? (f(type_tag<Ops>{}), true) : false) || ...);
}

// Calls f(type_tag<Op>{}) for every op of the list, in order.
template <class... Ops, typename F>
void visit_all(RuleList<Ops...>, F&& f) {
  (f(type_tag<Ops>{}), ...);
}

// What a binding needs to know of a rule at run time: names, table shape, variants.
struct RuleInfo {
  const char* name;
  int n_slots;
  const char* const* slot_names;
  unsigned written;  // bit s: row s is stored back
  int n_scalars;     // op scalars (the vector holds kHead + n_scalars)
  const char* const* scalar_names;
  int n_variants;
  const int* variant_index;  // scalar-vector index of each variant flag
  unsigned (*uses)(unsigned variant);
  bool float64_math;  // Math<T> is double for every storage type

  unsigned variant(const double* s) const {
    unsigned v = 0;
    for (int i = 0; i < n_variants; ++i)
      if (s[variant_index[i]] != 0.0) v |= 1u << i;
    return v;
  }
  // Rows a table must hold for every non-empty tensor, given the scalar vector.
  unsigned required(const double* s) const { return uses(variant(s)) & ((1u << n_slots) - 1u); }
};

template <class Op>
constexpr RuleInfo rule_info() {
  return RuleInfo{Op::name,           Op::kSlots,
                  Op::slot_names,     Op::kWritten,
                  Op::kScalars,       Op::scalar_names,
                  Op::Variants::count, Op::Variants::index,
                  [](unsigned v) { return Op::uses(v); },
                  std::is_same_v<typename Op::template Math<float>, double>};
}

template <class... Ops>
const RuleInfo* rule_infos(RuleList<Ops...>) {
  static const RuleInfo infos[] = {rule_info<Ops>()...};
  return infos;
}

}  // namespace fastopt
