// 16-bit storage types of the CPU kernels: float16 and bfloat16 values held as their bits,
// converted to and from float (their math type, fastopt/common.h: math_t) with round to
// nearest even, as NumPy's float16 casts and ml_dtypes' bfloat16 casts do (the reference's
// rounding), NaN kept NaN and overflow going to infinity.
//
// Both in bit arithmetic that GCC vectorizes in every ISA build (GCC 12 does not vectorize
// loops over _Float16, whose scalar vcvtph2ps made a float16 Adam step 7x slower than this),
// and defined inside the per-ISA namespace, so that each ISA's object keeps its own inline
// copies.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>
#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "fastopt/common.h"
#include "multi_tensor.h"

namespace fastopt::cpu::FASTOPT_ISA {

inline float bits_to_float(uint32_t u) { return __builtin_bit_cast(float, u); }

inline uint32_t float_to_bits(float f) { return __builtin_bit_cast(uint32_t, f); }

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

struct f16 {
  uint16_t bits;

  f16() = default;
  // F. Giesen's float_to_half_fast3_rtne: round to nearest even, subnormals through a float
  // addition (which rounds the same way), overflow to infinity, NaN to a quiet NaN
  explicit f16(float f) {
    const uint32_t x = float_to_bits(f);
    const uint32_t sign = x & 0x80000000u;
    const uint32_t u = x ^ sign;
    // every case computed, one selected: branches with float arithmetic keep GCC from
    // vectorizing the loop
    const uint32_t special = u > 0x7F800000u ? 0x7E00u : 0x7C00u;
    const float magic = bits_to_float(((127u - 15u) + (23u - 10u) + 1u) << 23);
    const uint32_t small = float_to_bits(bits_to_float(u) + magic) - float_to_bits(magic);
    const uint32_t normal = (u + (uint32_t(15 - 127) << 23) + 0xFFFu + ((u >> 13) & 1u)) >> 13;
    const uint32_t o = u >= (127u + 16u) << 23 ? special : (u < 113u << 23 ? small : normal);
    bits = uint16_t(o | (sign >> 16));
  }
  explicit f16(double d) : f16(round_to_odd(d)) {}
  explicit operator float() const {
    const uint32_t shifted_exp = 0x7C00u << 13;
    const uint32_t m = (uint32_t(bits) & 0x7FFFu) << 13;
    const uint32_t exp = shifted_exp & m;
    const uint32_t o = m + ((127u - 15u) << 23);
    const uint32_t special = o + ((128u - 16u) << 23);  // infinity or NaN
    // zero or subnormal: renormalized by a float subtraction
    const uint32_t small =
        float_to_bits(bits_to_float(o + (1u << 23)) - bits_to_float(113u << 23));
    const uint32_t r = exp == shifted_exp ? special : (exp == 0 ? small : o);
    return bits_to_float(r | (uint32_t(bits) & 0x8000u) << 16);
  }
  explicit operator double() const { return double(float(*this)); }
};

static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2, "16-bit storage");

// Rows converted to and from the math type, n elements (the 16-bit drivers' tiles).
template <typename T, typename M>
FASTOPT_HD void to_math(const T* __restrict src, M* __restrict dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  // GCC vectorizes the plain loops below in 16-byte halves with a slow 16-bit pack; these are
  // the same roundings, eight elements an instruction sequence
  if constexpr (std::is_same_v<T, bf16> && std::is_same_v<M, float>)
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(
                                    _mm256_cvtepu16_epi32(_mm_loadu_si128(
                                        reinterpret_cast<const __m128i*>(src + i))),
                                    16)));
#endif
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, f16> && std::is_same_v<M, float>)
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                    reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = M(src[i]);
}

template <typename M, typename T>
FASTOPT_HD void from_math(const M* __restrict src, T* __restrict dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, bf16> && std::is_same_v<M, float>) {
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    for (; i + 8 <= n; i += 8) {
      const __m256 x = _mm256_loadu_ps(src + i);
      const __m256i u = _mm256_castps_si256(x);
      const __m256i hi = _mm256_srli_epi32(u, 16);
      const __m256i rounded = _mm256_srli_epi32(
          _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(hi, one))), 16);
      const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
      const __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(hi, quiet), nan);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm_packus_epi32(_mm256_castsi256_si128(r),
                                        _mm256_extracti128_si256(r, 1)));
    }
  }
#endif
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, f16> && std::is_same_v<M, float>)
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) dst[i] = T(src[i]);
}

// --- stochastic rounding --------------------------------------------------------------------
// A counter-based generator: C. Wellons' lowbias32 integer hash (a bijection of 32-bit words
// with near-ideal avalanche), applied to a key of (seed, step, tensor) and the element index,
// so each element's random bits depend on nothing else: the same for any thread count and
// chunking. fastopt/reference/_io.py holds the same functions in NumPy.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// float -> 16 bits rounded stochastically with the 32 random bits r: away from zero with
// probability equal to the fraction of an ulp the value lies beyond the 16-bit value toward
// zero (the random low bits added, then truncated), so that the rounding is unbiased; NaN and
// infinity convert as with round to nearest.
inline uint16_t stochastic_bits(bf16, float f, uint32_t r) {
  const uint32_t u = float_to_bits(f);
  // infinity as it is, NaN quiet (bf16's round to nearest)
  const uint32_t special = (u >> 16) | ((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x40u : 0u);
  return uint16_t((u & 0x7F800000u) != 0x7F800000u ? (u + (r >> 16)) >> 16 : special);
}

inline uint16_t stochastic_bits(f16, float f, uint32_t r) {
  const uint32_t x = float_to_bits(f);
  const uint32_t sign = x & 0x80000000u;
  const uint32_t a = x ^ sign;
  // normal results: 13 low bits dropped, the random ones added first; a carry rounds up
  const uint32_t normal = ((a + (r >> 19)) >> 13) - ((127u - 15u) << 10);
  // subnormal results (|f| < 2^-14): the bits are the integer |f| * 2^24, rounded by adding a
  // uniform fraction of 13 bits and truncating (1024 is the smallest normal's bits)
  const float y = bits_to_float(a) * 16777216.0f + float(r >> 19) * (1.0f / 8192.0f);
  const uint32_t small = uint32_t(int32_t(y));
  // overflow to infinity, NaN to the quiet NaN: as round to nearest, through its conversion
  // (computing the two results directly made GCC vectorize this loop 1.6x slower)
  const uint32_t o = a >= (127u + 16u) << 23 ? uint32_t(f16(f).bits & 0x7FFFu)
                                             : (a < 113u << 23 ? small : normal);
  return uint16_t(o | (sign >> 16));
}

// The param row of a tile rounded stochastically: element first + j gets the bits
// mix32(mix32(key ^ hi) ^ lo) of its index (hi, lo: the index's upper and lower 32 bits; a
// tile never straddles a multiple of 2^32).
template <typename M, typename T>
inline void from_math_stochastic(const M* __restrict src, T* __restrict dst, int64_t n,
                                 uint32_t key, int64_t first) {
  const uint32_t k = mix32(key ^ uint32_t(uint64_t(first) >> 32));
  const uint32_t lo = uint32_t(uint64_t(first));
  for (int64_t j = 0; j < n; ++j)
    dst[j].bits = stochastic_bits(T{}, float(src[j]), mix32(k ^ (lo + uint32_t(j))));
}

// The DType code of storage type T.
template <typename T>
constexpr int storage_code() {
  if constexpr (std::is_same_v<T, float>) return int(DType::f32);
  else if constexpr (std::is_same_v<T, double>) return int(DType::f64);
  else if constexpr (std::is_same_v<T, f16>) return int(DType::f16);
  else return int(DType::bf16);
}

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
