// 16-bit storage types of the CPU kernels: float16 and bfloat16 values held as their bits,
// converted to and from float (their math type, fastopt/common.h: math_t) with round to
// nearest even, as NumPy's float16 casts and ml_dtypes' bfloat16 casts do (the reference's
// rounding), NaN kept NaN and overflow going to infinity.
//
// Defined inside the per-ISA namespace: the F16C build converts float16 with the vector
// conversion instructions (through _Float16, which GCC and Clang lower to vcvtph2ps /
// vcvtps2ph), the baseline build with bit arithmetic; one shared inline definition would let
// the linker pick the F16C one for every ISA.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastopt/common.h"
#include "multi_tensor.h"

namespace fastopt::cpu::FASTOPT_ISA {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// double -> float rounded to odd (toward zero, then the lowest mantissa bit set when inexact):
// rounding that float to nearest even in 16 bits then gives exactly the double's own rounding
// (the float has more than two extra bits), where float(d) first would round twice.
inline float round_to_odd(double d) {
  float f = float(d);
  if (double(f) != d) {
    uint32_t u = float_to_bits(f);
    if (std::fabs(double(f)) > std::fabs(d)) --u;  // rounded away from zero: truncate instead
    f = bits_to_float(u | 1u);
  }
  return f;
}

struct bf16 {
  uint16_t bits;

  bf16() = default;
  // round to nearest even on the upper 16 bits; a NaN stays a (quiet) NaN
  explicit bf16(float f) {
    const uint32_t u = float_to_bits(f);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    bits = uint16_t((u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : rounded);
  }
  explicit bf16(double d) : bf16(round_to_odd(d)) {}
  explicit operator float() const { return bits_to_float(uint32_t(bits) << 16); }
  explicit operator double() const { return double(float(*this)); }
};

#if defined(__F16C__) && defined(__FLT16_MAX__)
struct f16 {
  _Float16 value;

  f16() = default;
  explicit f16(float f) : value(_Float16(f)) {}
  explicit f16(double d) : f16(round_to_odd(d)) {}
  explicit operator float() const { return float(value); }
  explicit operator double() const { return double(float(value)); }
};
#else
struct f16 {
  uint16_t bits;

  f16() = default;
  // F. Giesen's float_to_half_fast3_rtne: round to nearest even, subnormals through a float
  // addition (which rounds the same way), overflow to infinity, NaN to a quiet NaN
  explicit f16(float f) {
    uint32_t u = float_to_bits(f);
    const uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint32_t o;
    if (u >= (127u + 16u) << 23) {
      o = u > 0x7F800000u ? 0x7E00u : 0x7C00u;
    } else if (u < 113u << 23) {
      const float magic = bits_to_float(((127u - 15u) + (23u - 10u) + 1u) << 23);
      o = float_to_bits(bits_to_float(u) + magic) - float_to_bits(magic);
    } else {
      const uint32_t mant_odd = (u >> 13) & 1u;
      u += (uint32_t(15 - 127) << 23) + 0xFFFu + mant_odd;
      o = u >> 13;
    }
    bits = uint16_t(o | (sign >> 16));
  }
  explicit f16(double d) : f16(round_to_odd(d)) {}
  explicit operator float() const {
    const uint32_t shifted_exp = 0x7C00u << 13;
    uint32_t o = (uint32_t(bits) & 0x7FFFu) << 13;
    const uint32_t exp = shifted_exp & o;
    o += (127u - 15u) << 23;
    if (exp == shifted_exp) {
      o += (128u - 16u) << 23;  // infinity or NaN
    } else if (exp == 0) {      // zero or subnormal: renormalized by a float subtraction
      o = float_to_bits(bits_to_float(o + (1u << 23)) - bits_to_float(113u << 23));
    }
    return bits_to_float(o | (uint32_t(bits) & 0x8000u) << 16);
  }
  explicit operator double() const { return double(float(*this)); }
};
#endif

static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2, "16-bit storage");

// Calls f(T{}) for the storage type of dtype: every float dtype the optimizer and clipping
// kernels take (the bindings refuse any other code first).
template <typename F>
void dispatch_storage(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    case DType::f16: f(f16{}); break;
    case DType::bf16: f(bf16{}); break;
  }
}

}  // namespace fastopt::cpu::FASTOPT_ISA
