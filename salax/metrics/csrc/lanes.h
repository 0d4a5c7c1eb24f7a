// Eight-lane float and int vectors (GCC/Clang vector extensions) and the few lane operations the
// kernel needs. They compile for any target: one AVX2 register each where the build has AVX2, pairs
// of SSE/NEON registers or scalar code elsewhere.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstddef>
#include <type_traits>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace salax_aim {

// Vectors of eight floats (one AVX2 register) in GCC/Clang vector extensions: the compilers do not
// vectorise float reductions or the KLD log on their own without fast-math. (A build with sixteen
// lanes for AVX-512 measured no faster on the development CPU.)
constexpr int64_t kLanes = 8;
using Floats = float __attribute__((vector_size(4 * kLanes)));
using Ints = int32_t __attribute__((vector_size(4 * kLanes)));
constexpr int64_t kBlock = 16 * kLanes;  // pixels summed in float32 before a float64 flush
// Four float64 lanes (one AVX2 register) and their compare masks: the float64 resize and counting.
using Doubles = double __attribute__((vector_size(32)));
using Longs = int64_t __attribute__((vector_size(32)));
using Floats4 = float __attribute__((vector_size(16)));  // four lanes of Floats (Doubles, rounded)

[[gnu::always_inline]] inline Floats load(const float* values) {
  Floats v;
  std::memcpy(&v, values, sizeof v);
  return v;
}

// Eight consecutive 8- or 16-bit integers as int32 lanes (one widening load on AVX2).
template <typename T>
[[gnu::always_inline]] inline Ints load_ints(const T* values) {
  static_assert(std::is_same_v<T, uint8_t> || std::is_same_v<T, uint16_t>);
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, uint8_t>)
    return reinterpret_cast<Ints>(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(values))));
  else
    return reinterpret_cast<Ints>(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(values))));
#else
  Ints out;
  for (int lane = 0; lane < kLanes; ++lane) out[lane] = values[lane];
  return out;
#endif
}

// table[index] per lane (one AVX2 gather where the build has AVX2).
[[gnu::always_inline]] inline Ints gather(const int32_t* table, Ints index) {
#if defined(__AVX2__)
  return reinterpret_cast<Ints>(_mm256_i32gather_epi32(table, reinterpret_cast<__m256i>(index), 4));
#else
  Ints out;
  for (int lane = 0; lane < kLanes; ++lane) out[lane] = table[index[lane]];
  return out;
#endif
}

[[gnu::always_inline]] inline Floats gather(const float* table, Ints index) {
#if defined(__AVX2__)
  return reinterpret_cast<Floats>(_mm256_i32gather_ps(table, reinterpret_cast<__m256i>(index), 4));
#else
  Floats out;
  for (int lane = 0; lane < kLanes; ++lane) out[lane] = table[index[lane]];
  return out;
#endif
}

// Lanes where values[lane] >= table[index[lane]]: eight floats, or eight doubles by two gathers of four.
[[gnu::always_inline]] inline Ints at_least_entries(const float* values, const float* table, Ints index) {
  return load(values) >= gather(table, index);
}

// The same of eight doubles held as two vectors of four (lanes 0-3, 4-7).
[[gnu::always_inline]] inline Ints at_least_entries(Doubles head, Doubles tail, const double* table, Ints index) {
#if defined(__AVX2__)
  const __m256i indices = reinterpret_cast<__m256i>(index);
  const __m256d first = _mm256_i32gather_pd(table, _mm256_castsi256_si128(indices), 8);
  const __m256d second = _mm256_i32gather_pd(table, _mm256_extracti128_si256(indices, 1), 8);
  const __m256d a = _mm256_cmp_pd(reinterpret_cast<__m256d>(head), first, _CMP_GE_OQ);
  const __m256d b = _mm256_cmp_pd(reinterpret_cast<__m256d>(tail), second, _CMP_GE_OQ);
  // The low halves of the eight 64-bit masks: a0 a1 b0 b1 | a2 a3 b2 b3, then in lane order.
  const __m256 halves = _mm256_shuffle_ps(_mm256_castpd_ps(a), _mm256_castpd_ps(b), 0x88);
  return reinterpret_cast<Ints>(_mm256_permute4x64_pd(_mm256_castps_pd(halves), 0xD8));
#else
  Ints out;
  for (int lane = 0; lane < kLanes; ++lane)
    out[lane] = (lane < 4 ? head[lane] : tail[lane - 4]) >= table[index[lane]] ? -1 : 0;
  return out;
#endif
}

[[gnu::always_inline]] inline Ints at_least_entries(const double* values, const double* table, Ints index) {
  Doubles head, tail;
  std::memcpy(&head, values, sizeof head);
  std::memcpy(&tail, values + 4, sizeof tail);
  return at_least_entries(head, tail, table, index);
}

// For each 8-bit lane mask, the lanes set, in order (then zeros): what compress() permutes by.
struct CompressOrder {
  int32_t lanes[256][kLanes] = {};
  constexpr CompressOrder() {
    for (int mask = 0; mask < 256; ++mask) {
      int next = 0;
      for (int lane = 0; lane < kLanes; ++lane)
        if ((mask >> lane) & 1) lanes[mask][next++] = lane;
    }
  }
};
inline constexpr CompressOrder kCompressOrder{};

// Writes the lanes of `values` where `mask` is set to out[0..], in order, and returns how many; it
// writes kLanes values whatever the mask, so out needs that room (one permute and store on AVX2).
[[gnu::always_inline]] inline int64_t compress(int32_t* out, Ints values, Ints mask) {
#if defined(__AVX2__)
  const int bits = _mm256_movemask_ps(reinterpret_cast<__m256>(mask));
  const __m256i order = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kCompressOrder.lanes[bits]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                      _mm256_permutevar8x32_epi32(reinterpret_cast<__m256i>(values), order));
  return __builtin_popcount(static_cast<unsigned>(bits));
#else
  int64_t count = 0;
  for (int lane = 0; lane < kLanes; ++lane) {
    out[count] = values[lane];
    count += mask[lane] != 0;
  }
  return count;
#endif
}

// The lanes' sum in int64.
[[gnu::always_inline]] inline int64_t lane_total(Ints v) {
  int64_t total = 0;
  for (int lane = 0; lane < kLanes; ++lane) total += v[lane];
  return total;
}

[[gnu::always_inline]] inline Floats select(Ints mask, Floats yes, Floats no) {
  return reinterpret_cast<Floats>((reinterpret_cast<Ints>(yes) & mask) |
                                  (reinterpret_cast<Ints>(no) & ~mask));
}

// Lanes whose index is below `count` (the rest lie past a row's end).
[[gnu::always_inline]] inline Ints first_lanes(int64_t count) {
  Ints lanes;
  for (int lane = 0; lane < kLanes; ++lane) lanes[lane] = lane;
  return lanes < static_cast<int32_t>(count);
}

// The lanes' sum in float64 (once per kBlock pixels).
[[gnu::always_inline]] inline double lane_total(Floats v) {
  double total = 0.0;
  for (int lane = 0; lane < kLanes; ++lane) total += v[lane];
  return total;
}

// fma(w, d, a) lane by lane, rounded once (one instruction where the build has FMA).
[[gnu::always_inline]] inline Doubles fused_lanes(Doubles w, Doubles d, Doubles a) {
#if defined(__FMA__)
  return reinterpret_cast<Doubles>(_mm256_fmadd_pd(reinterpret_cast<__m256d>(w), reinterpret_cast<__m256d>(d),
                                                   reinterpret_cast<__m256d>(a)));
#else
  Doubles out;
  for (int lane = 0; lane < 4; ++lane) out[lane] = std::fma(w[lane], d[lane], a[lane]);
  return out;
#endif
}

// The lanes' sum in float64.
[[gnu::always_inline]] inline double lane_total(Doubles v) { return (v[0] + v[1]) + (v[2] + v[3]); }

[[gnu::always_inline]] inline Floats lane_min(Floats a, Floats b) { return a < b ? a : b; }

[[gnu::always_inline]] inline float lowest_lane(Floats v) {
  v = lane_min(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3));
  v = lane_min(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5));
  return std::min(v[0], v[1]);
}

// Whether any lane of a compare's mask is set (one vptest on AVX).
[[gnu::always_inline]] inline bool any_lane(Ints mask) {
#if defined(__AVX__)
  return !_mm256_testz_si256(reinterpret_cast<__m256i>(mask), reinterpret_cast<__m256i>(mask));
#else
  for (int lane = 0; lane < kLanes; ++lane)
    if (mask[lane]) return true;
  return false;
#endif
}

[[gnu::always_inline]] inline Doubles load(const double* values) {
  Doubles v;
  std::memcpy(&v, values, sizeof v);
  return v;
}

[[gnu::always_inline]] inline bool any_lane(Longs mask) {
#if defined(__AVX__)
  return !_mm256_testz_si256(reinterpret_cast<__m256i>(mask), reinterpret_cast<__m256i>(mask));
#else
  for (int lane = 0; lane < 4; ++lane)
    if (mask[lane]) return true;
  return false;
#endif
}

[[gnu::always_inline]] inline double lowest_lane(Doubles v) {
  return std::min(std::min(v[0], v[1]), std::min(v[2], v[3]));
}

// Whether eight consecutive values are all equal (flat stretches of an upscaled map: most vectors).
[[gnu::always_inline]] inline bool all_equal(const float* values) {
  return !any_lane(load(values) != values[0]);
}

[[gnu::always_inline]] inline bool all_equal(const double* values) {
  Doubles head, tail;
  std::memcpy(&head, values, sizeof head);
  std::memcpy(&tail, values + 4, sizeof tail);
  return !any_lane((head != values[0]) | (tail != values[0]));
}

// The vector of T values (float: eight lanes, double: four) and of its compare masks.
template <typename T>
struct VectorOf;
template <>
struct VectorOf<float> {
  using Values = Floats;
  using Masks = Ints;
  static constexpr int64_t kCount = kLanes;
};
template <>
struct VectorOf<double> {
  using Values = Doubles;
  using Masks = Longs;
  static constexpr int64_t kCount = 4;
};

// Natural log for the KLD sum: x = 2^e m with m in [sqrt(1/2), sqrt(2)), and log m = 2 atanh(s),
// s = (m - 1) / (m + 1), |s| <= 0.172, by its series to s^9 (truncation error below 1e-9). Valid
// for positive normal x, which the KLD argument always is (it is at least 2.2204e-16).
[[gnu::always_inline]] inline Floats log_positive(Floats x) {
  const Ints bits = reinterpret_cast<Ints>(x);
  Ints exponent = ((bits >> 23) & 0xff) - 127;
  Floats m = reinterpret_cast<Floats>((bits & 0x7fffff) | 0x3f800000);
  const Ints high = m > 1.41421356f;
  m = select(high, m * 0.5f, m);
  exponent -= high;  // a true lane is -1
  const Floats s = (m - 1.0f) / (m + 1.0f);
  const Floats s2 = s * s;
  const Floats series =
      s * (2.0f + s2 * (2.0f / 3.0f + s2 * (2.0f / 5.0f + s2 * (2.0f / 7.0f + s2 * (2.0f / 9.0f)))));
  return __builtin_convertvector(exponent, Floats) * 0.69314718f + series;
}

// Row buffers hold whole vectors plus one, so a row's last vector can be loaded whole.
inline size_t padded(int64_t width) { return static_cast<size_t>((width / kLanes + 2) * kLanes); }

}  // namespace salax_aim
