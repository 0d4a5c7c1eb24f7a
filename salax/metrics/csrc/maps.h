// The AIM preparation of a raw map (channel sum, min-max with float32 eps, as the organisers' read_sm)
// and the organisers' INTER_LINEAR resize of the prediction to the ground-truth grid, served row by row.
// The rules (dtypes, roundings, IPP's resize) are written once, in salax/metrics/prepare.py's docstring;
// this file follows them bit for bit (tests/test_metrics_exact.py checks both against the pinned cv2).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "lanes.h"

namespace salax_aim {

constexpr float kEps32 = std::numeric_limits<float>::epsilon();  // the min-max epsilon

// One frame's raw maps: rows of `width` pixels of `channels` values, each row contiguous, `row_stride`
// values from one row's start to the next (width * channels when the map is contiguous; more for a
// decoder's plane, whose rows are padded).
template <typename T>
struct RawMap {
  const T* data;
  int64_t height, width, channels;
  bool channel_axis = false;  // given as [H, W, C] (even C = 1), not [H, W]: prepare.py's rule tells them apart
  int64_t row_stride = 0;
  int shift = 0;  // a one-channel uint16 map whose values are its data << shift (see normaliser_from)

  const T* row(int64_t y) const { return data + y * row_stride; }
  // Whether the rows follow one another without a gap (the map is then read as one long row).
  bool contiguous() const { return height == 1 || row_stride == width * channels; }
};

// Channel sums are exact integers for 8- and 16-bit maps, float64 for float maps (prepare.py's rule:
// float maps are prepared in float64).
template <typename T>
using Wide = std::conditional_t<std::is_integral_v<T>, int32_t, double>;

template <typename T>
inline Wide<T> channel_sum(const T* pixel, int64_t channels) {
  Wide<T> sum = pixel[0];
  for (int64_t c = 1; c < channels; ++c) sum += pixel[c];
  return sum;
}

// A frame's min-max normalisation, value = float(channel_sum - low) * scale, and the sums of the
// channel sums less `low` (exact for integer maps) and of the prepared map, in float64.
// `exact` is the organisers' prepared value (prepare.py's rule: float32 for integer maps given without
// a channel axis, float64 otherwise; returned widened); operator() is the fast float32 approximation within an ulp of it,
// strictly increasing in the channel sum like it (so ties and order are the same).
template <typename T>
struct Normaliser {
  Wide<T> low, high;
  float scale;
  double offset_sum, prepared_sum;
  int64_t channels = 1;
  bool channel_axis = false;            // the map came as [H, W, C] (any C): the channel-mean rule
  double mean_low = 0.0, spread = 1.0;  // the exact rule's low and denominator, in its dtype
  int shift = 0;                        // the map's values are its data << shift (see normaliser_from)

  // The levels from the lowest value to the highest (of the values, shifted), both included.
  int64_t levels() const { return ((static_cast<int64_t>(high) - static_cast<int64_t>(low)) << shift) + 1; }

  float operator()(Wide<T> channel_sum) const {
    if constexpr (!std::is_integral_v<T>) return static_cast<float>(exact(channel_sum));  // any range
    return static_cast<float>(channel_sum - low) * scale;
  }

  // Whether the rule's arithmetic for this map is float64.
  bool exact_in_double() const { return !std::is_integral_v<T> || channel_axis; }

  double exact(Wide<T> channel_sum) const {
    if constexpr (std::is_integral_v<T>) {
      if (channel_axis)
        return (static_cast<double>(channel_sum) / static_cast<double>(channels) - mean_low) / spread;
      return static_cast<double>(static_cast<float>(channel_sum - low) / static_cast<float>(spread));
    } else {
      const double mean = channels > 1 ? channel_sum / static_cast<double>(channels) : channel_sum;
      return (mean - mean_low) / spread;
    }
  }
};

// The normaliser of a map with these extremes and this sum of channel sums (`channel_axis`: given as
// [H, W, C]; a map of several channels always is).
// `shift` (one-channel integer maps): the map's values are its data v << shift, and the normaliser
// reads v. Every term of the rule then scales by 2^shift except the epsilon added to the spread:
// (v 2^s - low 2^s) / ((high - low) 2^s + eps) is exactly (v - low) / ((high - low) + eps 2^-s), as a
// power of two scales every rounding alike (float32 and float64; no value comes near underflow), so
// the normaliser of the data with eps 2^-shift prepares the shifted map's values, bit for bit.
template <typename T>
Normaliser<T> normaliser_from(Wide<T> low, Wide<T> high, double total, int64_t pixels,
                              int64_t channels, bool channel_axis, int shift = 0) {
  const float eps = std::ldexp(kEps32, -shift);
  const float spread = static_cast<float>(high - low) +
                       static_cast<float>(static_cast<double>(channels) * eps);
  const float scale = 1.0f / spread;
  const double offset_sum = total - static_cast<double>(pixels) * static_cast<double>(low);
  Normaliser<T> norm{low, high, scale, offset_sum, offset_sum * scale, channels, channel_axis || channels > 1};
  norm.shift = shift;
  if constexpr (std::is_integral_v<T>) {
    if (norm.channel_axis) {  // float64 means; the extreme means are the means of the extreme sums
      const double c = static_cast<double>(channels);
      norm.mean_low = static_cast<double>(low) / c;
      norm.spread = (static_cast<double>(high) / c - norm.mean_low) + static_cast<double>(eps);
    } else {
      norm.spread = static_cast<float>(high - low) + eps;
    }
  } else {
    const double c = static_cast<double>(channels);
    const double mean_low = channels > 1 ? low / c : low, mean_high = channels > 1 ? high / c : high;
    norm.mean_low = mean_low;
    norm.spread = (mean_high - mean_low) + static_cast<double>(kEps32);
    norm.prepared_sum = offset_sum / (c * norm.spread);  // float32's scale would vanish on huge ranges
  }
  return norm;
}

#if defined(__AVX2__)
// The normaliser from a vector extremes-and-sum pass of a one-channel map: the lanes of `low` and
// `high` reduced with the extremes of the pixels the vectors left (`lowest`, `highest`).
template <typename T>
Normaliser<T> vector_normaliser(__m256i low, __m256i high, int32_t lowest, int32_t highest, int64_t total,
                                int64_t pixels, bool channel_axis, int shift) {
  constexpr int kLanes = 32 / sizeof(T);
  alignas(32) T lows[kLanes], highs[kLanes];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lows), low);
  _mm256_store_si256(reinterpret_cast<__m256i*>(highs), high);
  for (int lane = 0; lane < kLanes; ++lane) {
    lowest = std::min<int32_t>(lowest, lows[lane]);
    highest = std::max<int32_t>(highest, highs[lane]);
  }
  return normaliser_from<T>(lowest, highest, static_cast<double>(total), pixels, 1, channel_axis, shift);
}

// Min, max and sum of a uint8 map of `rows` rows of `width` pixels, `stride` apart, 32 pixels per step
// (what the generic loop below does 8 at a time); the pixels after a row's last step one by one.
inline Normaliser<uint8_t> byte_normaliser(const uint8_t* frame, int64_t rows, int64_t width, int64_t stride,
                                           bool channel_axis, int shift) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i low = _mm256_set1_epi8(-1), high = zero, sums = zero;
  int32_t lowest = 255, highest = 0;
  int64_t total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = frame + r * stride;
    int64_t x = 0;
    for (; x + 32 <= width; x += 32) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + x));
      low = _mm256_min_epu8(low, v);
      high = _mm256_max_epu8(high, v);
      sums = _mm256_add_epi64(sums, _mm256_sad_epu8(v, zero));
    }
    for (; x < width; ++x) {
      lowest = std::min<int32_t>(lowest, row[x]);
      highest = std::max<int32_t>(highest, row[x]);
      total += row[x];
    }
  }
  alignas(32) int64_t partial[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(partial), sums);
  total += partial[0] + partial[1] + partial[2] + partial[3];
  return vector_normaliser<uint8_t>(low, high, lowest, highest, total, rows * width, channel_axis, shift);
}

// The same for a uint16 map, 16 pixels per step: the sum adds the values less 32768 as int16 pairs
// (one multiply-add), in int32 lanes flushed to int64 before they could overflow.
inline Normaliser<uint16_t> word_normaliser(const uint16_t* frame, int64_t rows, int64_t width, int64_t stride,
                                            bool channel_axis, int shift) {
  const __m256i bias = _mm256_set1_epi16(static_cast<int16_t>(0x8000)), ones = _mm256_set1_epi16(1);
  __m256i low = _mm256_set1_epi16(-1), high = _mm256_setzero_si256(), sums = _mm256_setzero_si256();
  int32_t lowest = 65535, highest = 0;
  int64_t total = 0, summed = 0, steps = 0;  // summed: pixels in the vector sums (each less 32768)
  constexpr int64_t kFlush = 1 << 14;        // steps: each adds at most 65536 in magnitude to a lane
  const auto flush = [&] {
    alignas(32) int32_t partial[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(partial), sums);
    for (const int32_t lane : partial) total += lane;
    sums = _mm256_setzero_si256();
    steps = 0;
  };
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* row = frame + r * stride;
    int64_t x = 0;
    while (x + 16 <= width) {
      const int64_t stop = std::min(width, x + 16 * (kFlush - steps));
      for (; x + 16 <= stop; x += 16, ++steps) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + x));
        low = _mm256_min_epu16(low, v);
        high = _mm256_max_epu16(high, v);
        sums = _mm256_add_epi32(sums, _mm256_madd_epi16(_mm256_xor_si256(v, bias), ones));
      }
      if (steps == kFlush) flush();
    }
    summed += x;
    for (; x < width; ++x) {
      lowest = std::min<int32_t>(lowest, row[x]);
      highest = std::max<int32_t>(highest, row[x]);
      total += row[x];
    }
  }
  flush();
  total += 32768 * summed;  // the bias of the pixels the vectors summed
  return vector_normaliser<uint16_t>(low, high, lowest, highest, total, rows * width, channel_axis, shift);
}
#endif

// A map's normaliser from one pass over its values (a contiguous map read as one long row).
template <typename T>
Normaliser<T> normaliser(const RawMap<T>& map) {
  const bool whole = map.contiguous();
  const int64_t rows = whole ? 1 : map.height, width = whole ? map.height * map.width : map.width;
  const int64_t channels = map.channels, stride = map.row_stride;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, uint8_t>) {
    if (channels == 1) return byte_normaliser(map.data, rows, width, stride, map.channel_axis, map.shift);
  }
  if constexpr (std::is_same_v<T, uint16_t>) {
    if (channels == 1) return word_normaliser(map.data, rows, width, stride, map.channel_axis, map.shift);
  }
#endif
  Wide<T> low = channel_sum(map.data, channels), high = low;
  double total = 0.0;
  constexpr int64_t kChunk = 4096;  // channel sums added exactly in Wide<T>'s range, then in float64
  for (int64_t r = 0; r < rows; ++r) {
    const T* frame = map.data + r * stride;
    for (int64_t start = 0; start < width; start += kChunk) {
      const int64_t stop = std::min(start + kChunk, width);
      std::conditional_t<std::is_integral_v<T>, int64_t, double> chunk = 0;
      if (channels == 1) {
#pragma omp simd reduction(min : low) reduction(max : high) reduction(+ : chunk)
        for (int64_t i = start; i < stop; ++i) {
          low = std::min<Wide<T>>(low, frame[i]);
          high = std::max<Wide<T>>(high, frame[i]);
          chunk += frame[i];
        }
      } else {
        for (int64_t i = start; i < stop; ++i) {
          const Wide<T> sum = channel_sum(frame + i * channels, channels);
          low = std::min(low, sum);
          high = std::max(high, sum);
          chunk += sum;
        }
      }
      total += static_cast<double>(chunk);
    }
  }
  return normaliser_from<T>(low, high, total, rows * width, channels, map.channel_axis, map.shift);
}

template <typename T>
void normalised_row(const T* row, int64_t width, int64_t channels, const Normaliser<T>& norm,
                    float* out) {
  if (channels == 1) {
#pragma omp simd
    for (int64_t x = 0; x < width; ++x) out[x] = norm(row[x]);
  } else {
    for (int64_t x = 0; x < width; ++x) out[x] = norm(channel_sum(row + x * channels, channels));
  }
}

template <typename T>
void exact_row(const T* row, int64_t width, int64_t channels, const Normaliser<T>& norm, double* out) {
  if (channels == 1) {
#pragma omp simd
    for (int64_t x = 0; x < width; ++x) out[x] = norm.exact(row[x]);
  } else {
    for (int64_t x = 0; x < width; ++x) out[x] = norm.exact(channel_sum(row + x * channels, channels));
  }
}

// A raw map after the AIM preparation, served row by row (`rows`: float32, fast; `exact_rows`: the
// rule's values, float64 when `exact_double`, else float32 values widened), and its sum. `levels`: an
// integer map, whose prepared values are strictly increasing in the channel sum (so `rows` orders and
// ties the pixels exactly as `exact_rows`).
struct PreparedMap {
  std::function<void(int64_t row, float* out)> rows;
  double sum;
  std::function<void(int64_t row, double* out)> exact_rows;
  bool exact_double = false;
  bool levels = false;
};

template <typename T>
PreparedMap prepare(const RawMap<T>& map, const Normaliser<T>& norm) {
  PreparedMap prepared{
      [=](int64_t y, float* out) { normalised_row(map.row(y), map.width, map.channels, norm, out); },
      norm.prepared_sum,
      [=](int64_t y, double* out) { exact_row(map.row(y), map.width, map.channels, norm, out); },
      norm.exact_in_double(), std::is_integral_v<T>};
  if constexpr (std::is_integral_v<T>) {
    // A one-channel map of few levels for its pixels: each level's exact value computed once (a
    // division in the float64 rule), then read from a table.
    const int64_t levels = int64_t{norm.high} - norm.low + 1;
    if (map.channels == 1 && 4 * levels <= map.height * map.width) {
      prepared.exact_rows = [=, table = std::vector<double>()](int64_t y, double* out) mutable {
        if (table.empty()) {  // at the first row asked for (a ground truth's never are)
          table.resize(static_cast<size_t>(levels));
          for (int64_t v = 0; v < levels; ++v) table[v] = norm.exact(static_cast<Wide<T>>(norm.low + v));
        }
        const T* row = map.row(y);
        const Wide<T> low = norm.low;
        for (int64_t x = 0; x < map.width; ++x) out[x] = table[row[x] - low];
      };
    }
  }
  return prepared;
}

// One axis of the organisers' resize (prepare.py's docstring): per output index the clamped taps,
// the weights, and which outputs copy the first (1) or the last (2) source entry.
struct Axis {
  std::vector<int64_t> first, second;
  std::vector<double> w0, w1;  // IPP: w1 only (float64); OpenCV's own code: both, float32 values
  std::vector<uint8_t> border;
  int64_t interior = 0;  // outputs with border == 0 (IPP: they are contiguous)
};

// IPP's taps: pos = fma(j + 0.5, s / t, -0.5), i = floor(pos), w = pos - i.
inline Axis ipp_axis(int64_t source, int64_t target) {
  Axis axis;
  axis.first.resize(target);
  axis.second.resize(target);
  axis.w1.resize(target);
  axis.border.resize(target);
  const double scale = static_cast<double>(source) / static_cast<double>(target);
  for (int64_t j = 0; j < target; ++j) {
    const double position = std::fma(static_cast<double>(j) + 0.5, scale, -0.5);
    const double floor = std::floor(position);
    const int64_t first = static_cast<int64_t>(floor);
    axis.border[j] = first < 0 ? 1 : (first >= source - 1 ? 2 : 0);
    axis.first[j] = std::clamp<int64_t>(first, 0, source - 1);
    // A border output copies its edge: both taps there, so that the blend gives the copy exactly.
    axis.second[j] = axis.border[j] ? axis.first[j] : axis.first[j] + 1;
    axis.w1[j] = position - floor;
    axis.interior += axis.border[j] == 0;
  }
  return axis;
}

// OpenCV's own taps (a source side of 1): positions rounded to float32; out-of-range taps keep their
// weights (the horizontal pass copies the border instead, the vertical one clamps only the rows).
inline Axis opencv_axis(int64_t source, int64_t target) {
  Axis axis;
  axis.first.resize(target);
  axis.second.resize(target);
  axis.w0.resize(target);
  axis.w1.resize(target);
  axis.border.resize(target);
  const double scale = 1.0 / (static_cast<double>(target) / static_cast<double>(source));
  for (int64_t j = 0; j < target; ++j) {
    const float position = static_cast<float>((static_cast<double>(j) + 0.5) * scale - 0.5);
    const int64_t first = static_cast<int64_t>(std::floor(position));
    const float w1 = position - static_cast<float>(first);
    axis.border[j] = first < 0 ? 1 : (first >= source - 1 ? 2 : 0);
    axis.first[j] = std::clamp<int64_t>(first, 0, source - 1);
    axis.second[j] = std::clamp<int64_t>(first + 1, 0, source - 1);
    axis.w0[j] = 1.0f - w1;
    axis.w1[j] = w1;
  }
  return axis;
}

// The rule's two roundings of a + w (b - a). float64: a true FMA, or a product then a sum (the build
// has -ffp-contract=off, so the compiler fuses nothing itself). float32: the float32 product is exact
// in float64, so the fused value is computed there and rounded once.
inline double fused(double w, double difference, double a) { return std::fma(w, difference, a); }
inline float fused(float w, float difference, float a) {
  return static_cast<float>(static_cast<double>(w) * difference + a);
}
template <typename V>
inline V unfused(V w, V difference, V a) { return a + w * difference; }

// IPP's vector loops take 128 bits of columns at a time; the rest of the interior is scalar, unfused.
template <typename V>
constexpr int64_t kIppLanes = 16 / sizeof(V);

// A row's sum in float64, by four accumulators of four lanes (no add waits on the one before).
template <typename V>
double row_total(const V* row, int64_t width) {
  Doubles sums[4] = {};
  int64_t x = 0;
  for (; x + 16 <= width; x += 16)
    for (int a = 0; a < 4; ++a)
      for (int lane = 0; lane < 4; ++lane) sums[a][lane] += static_cast<double>(row[x + 4 * a + lane]);
  double total = 0.0;
  for (; x < width; ++x) total += static_cast<double>(row[x]);
  for (int a = 0; a < 4; ++a) total += lane_total(sums[a]);
  return total;
}

// Widens [low, high] to hold a row's values (four accumulators of four lanes: a min or max waits
// for the one before it in its accumulator only).
inline void widen_extremes(const double* row, int64_t width, double& low, double& high) {
  constexpr int kAccumulators = 4;
  Doubles lows[kAccumulators], highs[kAccumulators];
  for (int a = 0; a < kAccumulators; ++a) {
    lows[a] = Doubles{} + low;
    highs[a] = Doubles{} + high;
  }
  int64_t x = 0;
  for (; x + 4 * kAccumulators <= width; x += 4 * kAccumulators) {
    for (int a = 0; a < kAccumulators; ++a) {
      const Doubles v = load(row + x + 4 * a);
      lows[a] = v < lows[a] ? v : lows[a];
      highs[a] = v > highs[a] ? v : highs[a];
    }
  }
  for (; x < width; ++x) {
    low = std::min(low, row[x]);
    high = std::max(high, row[x]);
  }
  for (int a = 0; a < kAccumulators; ++a) {
    for (int lane = 0; lane < 4; ++lane) {
      low = std::min(low, lows[a][lane]);
      high = std::max(high, highs[a][lane]);
    }
  }
}

// A frame's prediction, prepared and resized to the ground-truth grid exactly as the organisers' route
// (prepare.py's rule), served row by row: row() in float32 (the exact value rounded: what the sums
// take), row_exact() in float64 (the exact value: what AUC-Judd's thresholds must compare).
// No value is negative: a prepared value is a difference from the map's minimum (>= 0) over a positive
// spread, and each of the resize's roundings (a + w (b - a), w in [0, 1), or w0 a + w1 b) of values
// >= 0 is >= 0, as 0 is representable and rounding is monotone (thresholds.h relies on it).
class PredictionRows {
 public:
  void load(PreparedMap source, int64_t height, int64_t width, int64_t out_height, int64_t out_width) {
    out_width_ = out_width;
    row_.resize(std::max(padded(width), padded(out_width)));
    exact_.resize(std::max(padded(width), padded(out_width)));
    loaded_ = -1;
    low_ = std::numeric_limits<double>::infinity();
    high_ = -low_;
    same_size_ = height == out_height && width == out_width;
    sum_ = source.sum;
    source_ = std::move(source);
    if (same_size_) return;
    double_ = source_.exact_double;
    ipp_ = std::min(height, width) > 1;
    source_width_ = width;
    columns_ = ipp_ ? ipp_axis(width, out_width) : opencv_axis(width, out_width);
    interior_begin_ = std::find(columns_.border.begin(), columns_.border.end(), 0) - columns_.border.begin();
    rows_ = ipp_ ? ipp_axis(height, out_height) : opencv_axis(height, out_height);
    if (double_)
      prepare_source(source64_, ring64_, height, width);
    else
      prepare_source(source32_, ring32_, height, width);
  }

  // Row y of the prepared, resized prediction in float32 (valid until the next call).
  const float* row(int64_t y) {
    if (same_size_) {
      source_.rows(y, row_.data());
      return row_.data();
    }
    compute(y);
    return row_.data();
  }

  // Row y in float32 as row() gives it, with AUC-Judd's counts of its exact values added to `sum` and
  // `above_lowest` by `counter` (thresholds.h BucketCounter<double>): the float64 rows that IPP blends
  // from two horizontal rows are counted eight pixels at a time as they are computed (Counter::Tally),
  // without writing the exact row out and reading it back; other rows from row_exact(). A later
  // row_exact(y) recomputes the row.
  template <typename Counter>
  const float* row_counted(int64_t y, Counter& counter, int64_t& sum, int64_t& above_lowest) {
    if (same_size_ || !double_ || !ipp_ || rows_.border[y] || y == loaded_) {
      const float* p = row(y);
      counter.add_row(p, row_exact(y), out_width_, sum, above_lowest);
      return p;
    }
    typename Counter::Tally tally(counter);
    const int64_t counted = vertical_pass(source64_, ring64_, y, &tally);
    tally.add_to(sum, above_lowest);
    const double* exact = exact_.data();
    for (int64_t x = counted; x < out_width_; ++x) {  // the columns past the last whole vector
      const int32_t count = counter.count(row_[x], exact[x]);
      sum += count;
      above_lowest += count > 0;
    }
    loaded_ = -1;  // exact_ holds only those columns
    return row_.data();
  }

  // Row y exactly (float64; a float32 rule's values widened), valid until the next call.
  const double* row_exact(int64_t y) {
    if (same_size_) {
      source_.exact_rows(y, exact_.data());
      widen_extremes(exact_.data(), out_width_, low_, high_);
      return exact_.data();
    }
    compute(y);
    return exact_.data();
  }

  // The exact value at (y, x), as row_exact(y)[x] (a fixation's value, wanted before the pass over the
  // rows): alone, from its four source values, where the rows are IPP's float64 blends.
  double exact_at(int64_t y, int64_t x) {
    if (same_size_ || !double_ || !ipp_) return row_exact(y)[x];
    const Axis &r = rows_, &c = columns_;
    const auto horizontal = [&](int64_t i) {  // horizontal_row(source64_, i, ...)[x]: no tail in float64
      const double* values = &source64_[i * source_width_];
      const double a = values[c.first[x]], b = values[c.second[x]];
      return fused(c.w1[x], b - a, a);
    };
    if (r.border[y]) return horizontal(r.first[y]);  // vertical_pass's copy
    const double a = horizontal(r.first[y]), b = horizontal(r.second[y]), w = r.w1[y];
    const int64_t tail_end = interior_begin_ + c.interior;
    const bool tail = x >= tail_end - c.interior % kIppLanes<double> && x < tail_end;
    return tail ? unfused(w, b - a, a) : fused(w, b - a, a);
  }

  double sum() const { return sum_; }

  // The lowest and highest exact value of the rows row_exact() served since load() (or of the
  // resized rows row() served): the map's extremes once every row was read.
  double low() const { return low_; }
  double high() const { return high_; }

  // Whether row() can order or tie pixels differently from row_exact() (then AUC-Judd must compare
  // row_exact): a float64-rule map, unless it is an integer map on its own grid.
  bool exact() const { return source_.exact_double && !(same_size_ && source_.levels); }

 private:
  // The source map prepared in the rule's dtype V ([h, w]: what the horizontal pass blends), room for
  // the two horizontal rows the vertical pass blends at a time (and one border row), and the map's
  // sum: the source weighted by how much of each pixel the resize takes (the taps' weights).
  template <typename V>
  void prepare_source(std::vector<V>& values, std::vector<V>& ring, int64_t height, int64_t width) {
    std::vector<double> source(padded(width));
    values.resize(static_cast<size_t>(height * width));
    ring.resize(static_cast<size_t>(3 * out_width_));
    ring_rows_[0] = ring_rows_[1] = -1;
    const std::vector<double> row_weights = tap_weights(rows_, height, ipp_);  // OpenCV's rows: clamped blends
    const std::vector<double> column_weights = tap_weights(columns_, width, true);
    sum_ = 0.0;
    for (int64_t y = 0; y < height; ++y) {
      source_.exact_rows(y, source.data());
      V* row = &values[y * width];
      double row_sum = 0.0;
      for (int64_t x = 0; x < width; ++x) {
        row[x] = static_cast<V>(source[x]);
        row_sum += column_weights[x] * static_cast<double>(row[x]);
      }
      sum_ += row_sum * row_weights[y];
    }
  }

  // How much of each source entry an axis's outputs take, in all (`copies`: its border outputs copy
  // the edge rather than blend).
  std::vector<double> tap_weights(const Axis& axis, int64_t source, bool copies) const {
    std::vector<double> weights(static_cast<size_t>(source), 0.0);
    for (size_t j = 0; j < axis.first.size(); ++j) {
      if (copies && axis.border[j]) {
        weights[axis.first[j]] += 1.0;
      } else {
        weights[axis.first[j]] += ipp_ ? 1.0 - axis.w1[j] : axis.w0[j];
        weights[axis.second[j]] += axis.w1[j];
      }
    }
    return weights;
  }

  // Source row i's horizontal pass in the rule's dtype V into out [W]: with IPP's unfused tail (the
  // rows interior output rows blend) or, `copied`, without it (what border output rows copy).
  template <typename V>
  void horizontal_row(const std::vector<V>& source, int64_t i, bool copied, V* out) const {
    const Axis& c = columns_;
    const int64_t out_width = out_width_, width = source_width_;
    const V* values = &source[i * width];
    if (ipp_) {  // border outputs too: their taps are their edge twice (ipp_axis)
#pragma omp simd
      for (int64_t x = 0; x < out_width; ++x) {
        const V a = values[c.first[x]], b = values[c.second[x]];
        out[x] = fused(static_cast<V>(c.w1[x]), b - a, a);
      }
    } else {
      for (int64_t x = 0; x < out_width; ++x) {
        const V a = values[c.first[x]], b = values[c.second[x]];
        out[x] = c.border[x] ? (c.border[x] == 1 ? values[0] : values[width - 1])
                             : a * static_cast<V>(c.w0[x]) + b * static_cast<V>(c.w1[x]);
      }
    }
    if (std::is_same_v<V, double> || copied || !ipp_) return;
    // float32: the horizontal pass has the unfused tail too
    for (int64_t x = interior_begin_ + c.interior - c.interior % kIppLanes<V>; x < interior_begin_ + c.interior; ++x) {
      const V a = values[c.first[x]], b = values[c.second[x]];
      out[x] = unfused(static_cast<V>(c.w1[x]), b - a, a);
    }
  }

  // Source row i's horizontal pass (with the tail), from the two rows kept, or computed into the slot
  // that does not hold row `keep`.
  template <typename V>
  const V* kept_row(const std::vector<V>& source, std::vector<V>& ring, int64_t i, int64_t keep) {
    for (int slot = 0; slot < 2; ++slot)
      if (ring_rows_[slot] == i) return &ring[slot * out_width_];
    const int slot = ring_rows_[0] == keep ? 1 : 0;
    horizontal_row(source, i, false, &ring[slot * out_width_]);
    ring_rows_[slot] = i;
    return &ring[slot * out_width_];
  }

  // What vertical_pass does with the float64 values of the vectors it blends: nothing (they are
  // written to exact_), or a Tally's count of them (row_counted).
  struct Written {};

  // Row y of the vertical pass into exact_ and row_, widening [low_, high_]; a `visit` (not Written)
  // takes the exact values of the columns [0, returned) instead of exact_.
  template <typename V, typename Visit = Written>
  int64_t vertical_pass(const std::vector<V>& source, std::vector<V>& ring, int64_t y, Visit* visit = nullptr) {
    const int64_t width = out_width_;
    const Axis& r = rows_;
    double* exact = exact_.data();
    if (ipp_ && r.border[y]) {  // a copy of the first or last source row's horizontal pass
      V* copy = &ring[2 * width];
      horizontal_row(source, r.first[y], true, copy);
      for (int64_t x = 0; x < width; ++x) exact[x] = copy[x];
      finish(0, width);
      return 0;
    }
    const V* a = kept_row(source, ring, r.first[y], r.second[y]);
    const V* b = kept_row(source, ring, r.second[y], r.first[y]);
    if (!ipp_) {
      const V w0 = static_cast<V>(r.w0[y]), w1 = static_cast<V>(r.w1[y]);
#pragma omp simd
      for (int64_t x = 0; x < width; ++x) exact[x] = a[x] * w0 + b[x] * w1;
      finish(0, width);
      return 0;
    }
    // Most rows: blend, round and widen in one pass.
    const V w = static_cast<V>(r.w1[y]);
    const int64_t tail_end = interior_begin_ + columns_.interior;
    const int64_t tail_begin = tail_end - columns_.interior % kIppLanes<V>;
    if (tail_begin == tail_end) return blend(a, b, w, 0, width, visit);  // no unfused tail: one blend
    const int64_t visited = blend(a, b, w, 0, tail_begin, visit);
    blend(a, b, w, tail_end, width);
    for (int64_t x = tail_begin; x < tail_end; ++x) {
      exact[x] = unfused(w, b[x] - a[x], a[x]);
      finish(x, x + 1);
    }
    return visited;
  }

  // IPP's fused blend of columns [from, to) of two horizontal rows, with finish()'s work: float64
  // rows in one pass (four accumulators of extremes, so no min waits on the one before), float32
  // rows by finish(). A `visit` takes the float64 values of the whole vectors, from column 0 up to the
  // returned column, eight at a time (with their float32 rounding), in place of exact_.
  template <typename V, typename Visit = Written>
  int64_t blend(const V* a, const V* b, V w, int64_t from, int64_t to, Visit* visit = nullptr) {
    constexpr bool kWritten = std::is_same_v<Visit, Written>;
    double* exact = exact_.data();
    int64_t x = from;
    if constexpr (std::is_same_v<V, double>) {
      float* out = row_.data();
      // The visit's copy, whose address does not escape: its sums can live in registers.
      Visit local = [visit] {
        if constexpr (kWritten) return Written{};
        else return *visit;
      }();
      constexpr int kAccumulators = 4;
      Doubles lows[kAccumulators], highs[kAccumulators];
      for (int k = 0; k < kAccumulators; ++k) {
        lows[k] = Doubles{} + low_;
        highs[k] = Doubles{} + high_;
      }
      const Doubles weight = Doubles{} + w;
      for (; x + 4 * kAccumulators <= to; x += 4 * kAccumulators) {
        Doubles values[kAccumulators];
        Floats4 roundings[kAccumulators];
        for (int k = 0; k < kAccumulators; ++k) {
          const Doubles first = salax_aim::load(a + x + 4 * k);
          const Doubles value = fused_lanes(weight, salax_aim::load(b + x + 4 * k) - first, first);
          if constexpr (kWritten) std::memcpy(exact + x + 4 * k, &value, sizeof value);
          const auto rounded = __builtin_convertvector(value, Floats4);
          std::memcpy(out + x + 4 * k, &rounded, sizeof rounded);
          lows[k] = value < lows[k] ? value : lows[k];
          highs[k] = value > highs[k] ? value : highs[k];
          values[k] = value;
          roundings[k] = rounded;
        }
        if constexpr (!kWritten) {
          local(values[0], values[1], __builtin_shufflevector(roundings[0], roundings[1], 0, 1, 2, 3, 4, 5, 6, 7));
          local(values[2], values[3], __builtin_shufflevector(roundings[2], roundings[3], 0, 1, 2, 3, 4, 5, 6, 7));
        }
      }
      if constexpr (!kWritten) *visit = local;
      for (int k = 0; k < kAccumulators; ++k) {
        for (int lane = 0; lane < 4; ++lane) {
          low_ = std::min(low_, lows[k][lane]);
          high_ = std::max(high_, highs[k][lane]);
        }
      }
    }
#pragma omp simd
    for (int64_t i = x; i < to; ++i) exact[i] = fused(w, b[i] - a[i], a[i]);
    finish(x, to);
    return kWritten ? from : x;
  }

  // Columns [from, to) of exact_ rounded into row_, and [low_, high_] widened to hold them.
  void finish(int64_t from, int64_t to) {
    float* out = row_.data();
    const double* exact = exact_.data();
#pragma omp simd
    for (int64_t x = from; x < to; ++x) out[x] = static_cast<float>(exact[x]);
    widen_extremes(exact + from, to - from, low_, high_);
  }

  void compute(int64_t y) {
    if (y == loaded_) return;
    if (double_)
      vertical_pass(source64_, ring64_, y);
    else
      vertical_pass(source32_, ring32_, y);
    loaded_ = y;
  }

  bool same_size_ = false, double_ = false, ipp_ = true;
  int64_t out_width_ = 0, loaded_ = -1;
  int64_t interior_begin_ = 0;  // the first output column that blends two source columns
  int64_t source_width_ = 0;
  int64_t ring_rows_[2] = {-1, -1};  // the source rows whose horizontal pass the ring holds
  double sum_ = 0.0, low_ = 0.0, high_ = 0.0;
  PreparedMap source_;
  Axis columns_, rows_;
  std::vector<double> source64_, ring64_, exact_;  // ring: two kept horizontal rows, then a border row
  std::vector<float> source32_, ring32_, row_;
};

}  // namespace salax_aim
