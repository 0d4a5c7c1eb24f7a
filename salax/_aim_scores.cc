// The CPU kernel of salax.metrics.aim_frame_scores: it scores a batch of frames by the AIM rules (see
// salax/metrics.py for the rules and the pure-JAX implementation it mirrors), as an XLA FFI custom
// call or on host arrays (score_arrays).
//
// Why native: XLA:CPU runs one thread per call and does not vectorise the compare-and-select, gathers
// and sorts that AUC-Judd needs, so the jitted JAX version takes 15-27 ms per 1080p frame. Here a
// frame is a read of each map for its extremes and sum, then one streaming pass over its rows (only a
// resized prediction's horizontal pass is kept whole), and frames are spread over threads.
//
// Per frame: the AIM preparation of both maps (channel sum, min-max with float32 eps) and the OpenCV
// INTER_LINEAR resize of the prediction are recomputed row by row with exactly the float32 arithmetic
// of metrics.py. The map sums that SIM and KLD divide by are known before the pass (from the raw
// sums, and the resize's weights), so one pass takes everything: the centred sums of CC and NSS,
// SIM, KLD and the AUC-Judd counts. Reductions end in float64, so the results are at least as
// accurate as the blocked float32 sums of the JAX path.
//
// The usual case, a uint8 prediction on a uint8 ground truth's grid (decoded saliency videos), has
// its own pass on AVX2 (BytePairs): a pixel's KLD term and AUC-Judd count are functions of its
// values, so they are read from tables made once per frame instead of computed per pixel.
//
// AUC-Judd needs, for each pixel, the number of thresholds at or below it, exactly. An integer
// prediction on the ground truth's grid has few values, so each value is counted once from a
// histogram. Otherwise eight pixels at a time are compared with a window of eight consecutive
// distinct thresholds, which moves (a bucket lookup) when the values leave it. The lookup puts the
// distinct thresholds into buckets by a monotone float function of the value, fine enough that a
// bucket holds at most two where the values allow it: a value's count is the thresholds of lower
// buckets plus one or two compares, exact whatever the rounding of the bucket function.

#include <Python.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

constexpr float kEps32 = std::numeric_limits<float>::epsilon();  // the min-max epsilon
constexpr double kStdEps = 1e-7;                                  // NSS, CC and SIM epsilon
constexpr float kKldEps = 2.2204e-16f;                            // the organisers' KLD epsilon
constexpr int kNumMetrics = 5;  // output columns: auc_judd, cc, nss, sim, kld

// A raw [B, H, W, C] map batch of one of the dtypes the kernel reads directly.
struct MapBatch {
  const void* data;
  ffi::DataType type;
  int64_t height, width, channels;
};

// Channel sums are exact integers for 8- and 16-bit maps, float32 otherwise (as in metrics.py).
template <typename T>
using Wide = std::conditional_t<std::is_integral_v<T>, int32_t, float>;

template <typename T>
inline Wide<T> channel_sum(const T* pixel, int64_t channels) {
  Wide<T> sum = pixel[0];
  for (int64_t c = 1; c < channels; ++c) sum += pixel[c];
  return sum;
}

// A frame's min-max normalisation, value = float(channel_sum - low) * scale, and the sums of the
// channel sums less `low` (exact for integer maps) and of the prepared map, in float64.
template <typename T>
struct Normaliser {
  Wide<T> low, high;
  float scale;
  double offset_sum, prepared_sum;

  float operator()(Wide<T> channel_sum) const {
    return static_cast<float>(channel_sum - low) * scale;
  }
};

// The normaliser of a map with these extremes and this sum of channel sums.
template <typename T>
Normaliser<T> normaliser_from(Wide<T> low, Wide<T> high, double total, int64_t pixels,
                              int64_t channels) {
  const float spread = static_cast<float>(high - low) +
                       static_cast<float>(static_cast<double>(channels) * kEps32);
  const float scale = 1.0f / spread;
  const double offset_sum = total - static_cast<double>(pixels) * static_cast<double>(low);
  return {low, high, scale, offset_sum, offset_sum * scale};
}

#if defined(__AVX2__)
// Min, max and sum of a uint8 map, 32 pixels per step (what the generic loop below does 8 at a time).
Normaliser<uint8_t> byte_normaliser(const uint8_t* frame, int64_t pixels) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i low = _mm256_set1_epi8(-1), high = zero, sums = zero;
  int64_t i = 0;
  for (; i + 32 <= pixels; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(frame + i));
    low = _mm256_min_epu8(low, v);
    high = _mm256_max_epu8(high, v);
    sums = _mm256_add_epi64(sums, _mm256_sad_epu8(v, zero));
  }
  alignas(32) uint8_t lows[32], highs[32];
  alignas(32) int64_t partial[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lows), low);
  _mm256_store_si256(reinterpret_cast<__m256i*>(highs), high);
  _mm256_store_si256(reinterpret_cast<__m256i*>(partial), sums);
  int32_t lowest = 255, highest = 0;
  for (int lane = 0; lane < 32; ++lane) {
    lowest = std::min<int32_t>(lowest, lows[lane]);
    highest = std::max<int32_t>(highest, highs[lane]);
  }
  int64_t total = partial[0] + partial[1] + partial[2] + partial[3];
  for (; i < pixels; ++i) {
    lowest = std::min<int32_t>(lowest, frame[i]);
    highest = std::max<int32_t>(highest, frame[i]);
    total += frame[i];
  }
  return normaliser_from<uint8_t>(lowest, highest, static_cast<double>(total), pixels, 1);
}
#endif

template <typename T>
Normaliser<T> normaliser(const T* frame, int64_t pixels, int64_t channels) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, uint8_t>) {
    if (channels == 1) return byte_normaliser(frame, pixels);
  }
#endif
  Wide<T> low = channel_sum(frame, channels), high = low;
  double total = 0.0;
  constexpr int64_t kChunk = 4096;  // channel sums added exactly in Wide<T>'s range, then in float64
  for (int64_t start = 0; start < pixels; start += kChunk) {
    const int64_t stop = std::min(start + kChunk, pixels);
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
  return normaliser_from<T>(low, high, total, pixels, channels);
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

// A raw map after the AIM preparation, served row by row, and its sum.
struct PreparedMap {
  std::function<void(int64_t row, float* out)> rows;
  double sum;
};

template <typename T>
PreparedMap prepare(const T* frame, int64_t width, int64_t channels, const Normaliser<T>& norm) {
  return {[=](int64_t y, float* out) {
            normalised_row(frame + y * width * channels, width, channels, norm, out);
          },
          norm.prepared_sum};
}

// OpenCV INTER_LINEAR taps along one axis, as metrics._linear_taps: positions in float64, the second
// tap's weight rounded to float32, clamped at the borders.
struct Taps {
  std::vector<int64_t> first, second;
  std::vector<float> weight;
};

Taps linear_taps(int64_t source, int64_t target) {
  Taps taps;
  taps.first.resize(target);
  taps.second.resize(target);
  taps.weight.resize(target);
  const double scale = 1.0 / (static_cast<double>(target) / static_cast<double>(source));
  for (int64_t i = 0; i < target; ++i) {
    const double position = (static_cast<double>(i) + 0.5) * scale - 0.5;
    const double floor = std::floor(position);
    int64_t first = static_cast<int64_t>(floor);
    double weight = position - floor;
    if (first < 0 || first >= source - 1) {
      first = first < 0 ? 0 : source - 1;
      weight = 0.0;
    }
    taps.first[i] = first;
    taps.second[i] = std::min(first + 1, source - 1);
    taps.weight[i] = static_cast<float>(weight);
  }
  return taps;
}

// The blend of metrics._resize_axis, a + w (b - a): exact on plateaus. The build disables FMA
// contraction, so every row rounds alike however the compiler vectorises it.
inline float blend(float a, float b, float weight) { return a + weight * (b - a); }

// Vectors of eight floats (one AVX2 register) in GCC/Clang vector extensions: the compilers do not
// vectorise float reductions or the KLD log on their own without fast-math. (A build with sixteen
// lanes for AVX-512 measured no faster on the development CPU.)
constexpr int64_t kLanes = 8;
using Floats = float __attribute__((vector_size(4 * kLanes)));
using Ints = int32_t __attribute__((vector_size(4 * kLanes)));
constexpr int64_t kBlock = 16 * kLanes;  // pixels summed in float32 before a float64 flush

[[gnu::always_inline]] inline Floats load(const float* values) {
  Floats v;
  std::memcpy(&v, values, sizeof v);
  return v;
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

// A frame's prediction, prepared and resized to the ground-truth grid, served row by row. Of a
// resized prediction the horizontal pass (or, without one, the prepared rows) is kept: [h, W].
class PredictionRows {
 public:
  void load(PreparedMap source, int64_t height, int64_t width, int64_t out_height,
            int64_t out_width) {
    out_width_ = out_width;
    row_.resize(std::max(padded(width), padded(out_width)));
    same_size_ = height == out_height && width == out_width;
    if (same_size_) {
      sum_ = source.sum;
      source_ = std::move(source.rows);
      return;
    }
    // The resize is linear, so its sum is the source rows' sums weighted by the vertical taps.
    std::vector<double> row_weights(height, height == out_height ? 1.0 : 0.0);
    if (height != out_height) {
      vertical_ = linear_taps(height, out_height);
      for (int64_t y = 0; y < out_height; ++y) {
        row_weights[vertical_.first[y]] += 1.0 - static_cast<double>(vertical_.weight[y]);
        row_weights[vertical_.second[y]] += vertical_.weight[y];
      }
    }
    horizontal_.resize(static_cast<size_t>(height * out_width) + padded(0));
    const Taps taps = linear_taps(width, out_width);
    sum_ = 0.0;
    for (int64_t y = 0; y < height; ++y) {
      float* out = &horizontal_[y * out_width];
      if (width == out_width) {
        source.rows(y, out);
      } else {
        source.rows(y, row_.data());
        for (int64_t x = 0; x < out_width; ++x)
          out[x] = blend(row_[taps.first[x]], row_[taps.second[x]], taps.weight[x]);
      }
      double row_sum = 0.0;
#pragma omp simd reduction(+ : row_sum)
      for (int64_t x = 0; x < out_width; ++x) row_sum += out[x];
      sum_ += row_sum * row_weights[y];
    }
  }

  // Row y of the prepared, resized prediction (valid until the next call).
  const float* row(int64_t y) {
    if (same_size_) {
      source_(y, row_.data());
      return row_.data();
    }
    if (vertical_.first.empty()) return &horizontal_[y * out_width_];
    const float* a = &horizontal_[vertical_.first[y] * out_width_];
    const float* b = &horizontal_[vertical_.second[y] * out_width_];
    const float weight = vertical_.weight[y];
    float* out = row_.data();
#pragma omp simd
    for (int64_t x = 0; x < out_width_; ++x) out[x] = blend(a[x], b[x], weight);
    return out;
  }

  double sum() const { return sum_; }

 private:
  bool same_size_ = false;
  int64_t out_width_ = 0;
  double sum_ = 0.0;
  std::function<void(int64_t, float*)> source_;
  std::vector<float> horizontal_, row_;
  Taps vertical_;
};

// For each pixel, the number of thresholds at or below it, exactly (see the file comment).
class ThresholdCounter {
 public:
  explicit ThresholdCounter(std::vector<float> thresholds) {
    at_or_below_.push_back(0);
    if (thresholds.empty()) return;
    std::sort(thresholds.begin(), thresholds.end());
    std::vector<float> distinct;
    for (size_t i = 0; i < thresholds.size(); ++i) {
      if (i + 1 == thresholds.size() || thresholds[i + 1] != thresholds[i]) {
        distinct.push_back(thresholds[i]);
        at_or_below_.push_back(static_cast<int32_t>(i + 1));
        multiplicity_.push_back(at_or_below_.back() - at_or_below_[at_or_below_.size() - 2]);
      }
    }
    const size_t count = distinct.size();
    distinct_.assign(1, -std::numeric_limits<float>::infinity());
    distinct_.insert(distinct_.end(), distinct.begin(), distinct.end());
    distinct_.resize(count + kWindow + 2, std::numeric_limits<float>::infinity());
    multiplicity_.resize(count + kWindow, 0);
    lowest_ = distinct.front();
    const float range = distinct.back() - lowest_;
    for (int buckets = kMinBuckets;; buckets *= 4) {
      last_ = static_cast<float>(buckets - 1);
      scale_ = range > 0.0f ? static_cast<float>(buckets) / range : 0.0f;
      first_.assign(buckets + 1, 0);
      for (float value : distinct) ++first_[bucket(value) + 1];
      slots_ = *std::max_element(first_.begin(), first_.end());
      if (slots_ <= kMaxSlots || buckets >= kMaxBuckets) break;
    }
    for (size_t b = 1; b < first_.size(); ++b) first_[b] += first_[b - 1];
    slot_values_.assign(first_.size() * slots_, std::numeric_limits<float>::infinity());
    for (size_t j = 0; j < count; ++j) {
      const int b = bucket(distinct[j]);
      slot_values_[static_cast<size_t>(b) * slots_ + (j - first_[b])] = distinct[j];
    }
  }

  int slots() const { return slots_; }

  // Thresholds at or below one value.
  int32_t at_or_below(float value) const {
    return slots_ == 0 ? 0 : at_or_below_[distinct_at_or_below<0>(value)];
  }

  // Adds a row's counts to `sum`, and its pixels at or above the lowest threshold to
  // `above_lowest`. Saliency maps are smooth, so neighbouring pixels lie between the same few
  // thresholds: eight pixels at a time are compared with a window of kWindow consecutive distinct
  // thresholds, valid while every lane lies between the window's neighbours. The window moves (by
  // one bucket lookup) only when the values leave it.
  template <int Slots>
  void add_row(const float* row, int64_t width, int64_t& sum, int64_t& above_lowest) const {
    const float* bounds = distinct_.data();  // bounds[k + 1]: the k-th distinct threshold
    Ints extra = {}, above = {};
    int64_t row_sum = 0, x = 0;
    int32_t window = 0;  // the window holds distinct thresholds window .. window + kWindow - 1
    for (; x + kLanes <= width; x += kLanes) {
      const Floats values = load(row + x);
      above -= values >= lowest_;
      if (any_lane(!(values >= bounds[window]) | !(values < bounds[window + kWindow + 1]))) {
        window = std::max(distinct_at_or_below<Slots>(lowest_lane(values)) - kWindow / 4, 0);
        if (any_lane(!(values < bounds[window + kWindow + 1]))) {  // too many thresholds: lane by lane
          for (int64_t i = x; i < x + kLanes; ++i)
            row_sum += at_or_below_[distinct_at_or_below<Slots>(row[i])];
          continue;
        }
      }
      row_sum += kLanes * at_or_below_[window];
      for (int32_t k = 0; k < kWindow; ++k)
        extra += (values >= bounds[window + k + 1]) & multiplicity_[window + k];
    }
    for (; x < width; ++x) {
      const int32_t j = distinct_at_or_below<Slots>(row[x]);
      row_sum += at_or_below_[j];
      above_lowest += j > 0;
    }
    for (int lane = 0; lane < kLanes; ++lane) {
      row_sum += extra[lane];
      above_lowest += above[lane];
    }
    sum += row_sum;
  }

 private:
  static constexpr int kMaxSlots = 2, kMinBuckets = 4096, kMaxBuckets = 1 << 18;
  static constexpr int32_t kWindow = 8;  // distinct thresholds compared with each vector

  // Distinct thresholds at or below the value: those of lower buckets, plus those of its own
  // bucket that a compare admits. Slots > 0 must equal slots() (it unrolls the compares).
  template <int Slots>
  int32_t distinct_at_or_below(float value) const {
    const int slots = Slots > 0 ? Slots : slots_;
    const int b = bucket(value);
    int32_t j = first_[b];
    const float* in_bucket = &slot_values_[static_cast<size_t>(b) * slots];
    for (int s = 0; s < slots; ++s) j += value >= in_bucket[s];
    return j;
  }

  // Monotone in the value, so a threshold in a lower bucket is below every value of this one.
  int bucket(float value) const {
    return static_cast<int>(std::clamp((value - lowest_) * scale_, 0.0f, last_));
  }

  int slots_ = 0;  // 0 without thresholds: every count is 0
  std::vector<float> distinct_;        // -inf, the distinct thresholds ascending, then +inf
  std::vector<int32_t> multiplicity_;  // [k]: how often the k-th distinct threshold occurs
  std::vector<int32_t> at_or_below_;   // [j]: thresholds at or below the j-th distinct one; [0]: 0
  std::vector<int32_t> first_;         // [b]: distinct thresholds in buckets below b
  std::vector<float> slot_values_;     // [b, s]: the distinct thresholds in bucket b, then +inf
  float lowest_ = 0.0f, scale_ = 0.0f, last_ = 0.0f;
};

// For each integer value low .. high of a prediction (as `norm` prepares it), the thresholds at or
// below it: what AUC-Judd counts for its pixels.
template <typename T>
void counts_by_value(const Normaliser<T>& norm, const ThresholdCounter& counter,
                     std::vector<int32_t>& counts) {
  counts.resize(static_cast<size_t>(int64_t{norm.high} - norm.low + 1));
  for (size_t v = 0; v < counts.size(); ++v)
    counts[v] = counter.at_or_below(norm(static_cast<Wide<T>>(norm.low + static_cast<Wide<T>>(v))));
}

struct FrameInputs {
  const int32_t* fixations;  // [N, 2] (row, col), the first `count` valid
  int32_t count;
  bool corrected;
};

// The organisers' unique count U of the false-positive denominator H*W - U.
int64_t unique_fixations(const FrameInputs& in, int64_t width) {
  if (!in.corrected) {  // unique columns of the [N, 2] array: 1 when every row == col, else 2
    for (int32_t i = 0; i < in.count; ++i)
      if (in.fixations[2 * i] != in.fixations[2 * i + 1]) return 2;
    return 1;
  }
  std::vector<int64_t> pixels(in.count);
  for (int32_t i = 0; i < in.count; ++i)
    pixels[i] = int64_t{in.fixations[2 * i]} * width + in.fixations[2 * i + 1];
  std::sort(pixels.begin(), pixels.end());
  return std::unique(pixels.begin(), pixels.end()) - pixels.begin();
}

// What one pass over a frame adds up.
struct FrameSums {
  double centre_p = 0, centre_g = 0;  // the centres of pp, gg and pg
  double pp = 0, gg = 0, pg = 0;      // products of the maps minus their centres
  double intersection = 0, divergence = 0;
  int64_t at_or_below = 0, above_lowest = 0;  // AUC-Judd: over pixels, thresholds <= pixel; > 0
};

// The per-pixel terms of CC, NSS, SIM and KLD, given the sums of the two maps.
class Terms {
 public:
  Terms(double sum_p, double sum_g, double pixels)
      : centre_p_(static_cast<float>(sum_p / pixels)),
        centre_g_(static_cast<float>(sum_g / pixels)),
        sim_p_(static_cast<float>(1.0 / (sum_p + kStdEps))),
        sim_g_(static_cast<float>(1.0 / (sum_g + kStdEps))),
        kld_p_(static_cast<float>(1.0 / sum_p)),
        kld_g_(static_cast<float>(1.0 / sum_g)) {}

  // Sums for a pass that centres the maps at these float32 centres.
  FrameSums centred_sums() const {
    FrameSums sums;
    sums.centre_p = centre_p_;
    sums.centre_g = centre_g_;
    return sums;
  }

  // Adds a row: float32 sums of kBlock pixels, each flushed to float64. The lanes of the last
  // vector that lie past the row's end are dropped (row buffers are padded to whole vectors).
  void add_row(const float* p, const float* g, int64_t width, FrameSums& sums) const {
    for (int64_t x = 0; x < width; x += kBlock) {
      Floats block[kTerms] = {};
      const int64_t stop = std::min(x + kBlock, width);
      int64_t i = x;
      for (; i + kLanes <= stop; i += kLanes) add(load(p + i), load(g + i), block);
      if (i < stop) {
        const Ints keep = first_lanes(stop - i);
        Floats tail[kTerms] = {};
        add(load(p + i), load(g + i), tail);
        for (int t = 0; t < kTerms; ++t) block[t] += select(keep, tail[t], Floats{});
      }
      double* totals[kTerms] = {&sums.pp, &sums.gg, &sums.pg, &sums.intersection, &sums.divergence};
      for (int t = 0; t < kTerms; ++t) *totals[t] += lane_total(block[t]);
    }
  }

  // SIM's term of a pixel (or of a vector of them).
  template <typename V>
  [[gnu::always_inline]] V similarity(V p, V g) const {
    const V sp = p * sim_p_, sg = g * sim_g_;
    return sg < sp ? sg : sp;
  }

  // KLD's term of a vector of pixels.
  [[gnu::always_inline]] Floats divergence(Floats p, Floats g) const {
    const Floats q = g * kld_g_;
    return q * log_positive(kKldEps + q / (p * kld_p_ + kKldEps));
  }

 private:
  static constexpr int kTerms = 5;

  [[gnu::always_inline]] void add(Floats p, Floats g, Floats* block) const {
    const Floats dp = p - centre_p_, dg = g - centre_g_;
    block[0] += dp * dp;
    block[1] += dg * dg;
    block[2] += dp * dg;
    // Where the ground truth is 0 (dark background, common) SIM and KLD add 0: skip the log.
    if (!any_lane(g != 0.0f)) return;
    block[3] += similarity(p, g);
    block[4] += divergence(p, g);
  }

  float centre_p_, centre_g_, sim_p_, sim_g_, kld_p_, kld_g_;
};

// One frame's raw maps.
template <typename T>
struct RawMap {
  const T* data;
  int64_t height, width, channels;
};

// Fixations clamped to the grid, as (row, col), sorted by row so that rows are visited once.
std::vector<std::pair<int64_t, int64_t>> fixation_places(const FrameInputs& in, int64_t height,
                                                         int64_t width) {
  std::vector<std::pair<int64_t, int64_t>> places(in.count);
  for (int32_t i = 0; i < in.count; ++i)
    places[i] = {std::clamp<int64_t>(in.fixations[2 * i], 0, height - 1),
                 std::clamp<int64_t>(in.fixations[2 * i + 1], 0, width - 1)};
  std::sort(places.begin(), places.end());
  return places;
}

#if defined(__AVX2__)
// A uint8 prediction on a uint8 ground truth's grid, one channel each: the usual case (decoded
// saliency videos). A pixel's KLD term depends only on its pair of values, and its AUC-Judd count
// only on the prediction's value, so both are read from tables made once per frame (KLD's with the
// vector log, at most 256 x 256 terms) by AVX2 gathers, 16 pixels a step: the pass takes no log.
// CC's sums are exact integer products of the values less their minima; SIM is Terms' own.
class BytePairs {
 public:
  // Whether the tables pay for themselves: no more KLD terms than pixels.
  static bool apply(const RawMap<uint8_t>& pred, const RawMap<uint8_t>& gt,
                    const Normaliser<uint8_t>& norm_p, const Normaliser<uint8_t>& norm_g) {
    const int64_t values_p = norm_p.high - norm_p.low + 1, values_g = norm_g.high - norm_g.low + 1;
    return pred.channels == 1 && gt.channels == 1 && pred.height == gt.height &&
           pred.width == gt.width && values_p * values_g <= gt.height * gt.width;
  }

  // The whole frame's sums: centred CC products, SIM, KLD and the AUC-Judd counts.
  FrameSums add(const RawMap<uint8_t>& pred, const RawMap<uint8_t>& gt,
                const Normaliser<uint8_t>& norm_p, const Normaliser<uint8_t>& norm_g,
                const ThresholdCounter& counter, const Terms& terms) {
    make_tables(norm_p, norm_g, counter, terms);
    const int64_t pixels = gt.height * gt.width;
    Totals totals;
    for (int64_t y = 0; y < gt.height; ++y)
      add_row(pred.data + y * gt.width, gt.data + y * gt.width, gt.width, norm_p, norm_g, terms,
              totals);
    int64_t ints[kInts];
    for (int t = 0; t < kInts; ++t) ints[t] = totals.tail_ints[t] + int_total(totals.ints[t]);
    // sum (v - mean)^2 = (N sum v^2 - (sum v)^2) / N, exactly in integers, then scaled.
    const auto centred = [pixels](int64_t products, double sum_a, double sum_b) {
      const __int128 exact = static_cast<__int128>(pixels) * products -
                             static_cast<__int128>(sum_a) * static_cast<__int128>(sum_b);
      return static_cast<double>(exact) / static_cast<double>(pixels);
    };
    const double scale_p = norm_p.scale, scale_g = norm_g.scale;
    FrameSums sums;  // centred at the means themselves, so finish() shifts nothing
    sums.centre_p = norm_p.prepared_sum / static_cast<double>(pixels);
    sums.centre_g = norm_g.prepared_sum / static_cast<double>(pixels);
    sums.pp = centred(ints[0], norm_p.offset_sum, norm_p.offset_sum) * scale_p * scale_p;
    sums.gg = centred(ints[1], norm_g.offset_sum, norm_g.offset_sum) * scale_g * scale_g;
    sums.pg = centred(ints[2], norm_p.offset_sum, norm_g.offset_sum) * scale_p * scale_g;
    sums.at_or_below = ints[3];
    sums.above_lowest = ints[4];
    sums.intersection = totals.tail_intersection + double_total(totals.intersection);
    sums.divergence = totals.tail_divergence + double_total(totals.divergence);
    return sums;
  }

 private:
  static constexpr int kInts = 5;  // integer sums: pp, gg, pg, at_or_below, above_lowest

  // A frame's sums in vector lanes (int64 and float64), and those of rows' last few pixels.
  struct Totals {
    __m256i ints[kInts] = {};
    __m256d intersection = _mm256_setzero_pd(), divergence = _mm256_setzero_pd();
    int64_t tail_ints[kInts] = {};
    double tail_intersection = 0.0, tail_divergence = 0.0;
  };

  void make_tables(const Normaliser<uint8_t>& norm_p, const Normaliser<uint8_t>& norm_g,
                   const ThresholdCounter& counter, const Terms& terms) {
    values_p_ = norm_p.high - norm_p.low + 1;
    const int32_t values_g = norm_g.high - norm_g.low + 1;
    counts_by_value(norm_p, counter, at_or_below_);
    first_counted_ = static_cast<int32_t>(
        std::find_if(at_or_below_.begin(), at_or_below_.end(), [](int32_t c) { return c > 0; }) -
        at_or_below_.begin());
    // Row a of the KLD table is written a vector at a time; a last vector's spill into row a + 1 is
    // overwritten by that row, and the final one lands in the slack.
    divergence_.resize(static_cast<size_t>(values_g) * values_p_ + kLanes);
    Ints lanes;
    for (int lane = 0; lane < kLanes; ++lane) lanes[lane] = lane;
    for (int32_t a = 0; a < values_g; ++a) {
      const Floats g = Floats{} + norm_g(a + norm_g.low);
      float* row = &divergence_[static_cast<size_t>(a) * values_p_];
      for (int32_t b = 0; b < values_p_; b += kLanes) {
        const Floats p = __builtin_convertvector(lanes + b, Floats) * norm_p.scale;
        const Floats terms_of_row = terms.divergence(p, g);
        std::memcpy(row + b, &terms_of_row, sizeof terms_of_row);
      }
    }
  }

  // One row: 16 pixels a step, sums flushed every kBlock pixels (floats into float64, integers
  // into int64 before they could overflow), in vectors.
  void add_row(const uint8_t* p, const uint8_t* g, int64_t width,
               const Normaliser<uint8_t>& norm_p, const Normaliser<uint8_t>& norm_g,
               const Terms& terms, Totals& totals) const {
    const __m128i low_p = _mm_set1_epi8(static_cast<char>(norm_p.low));
    const __m128i low_g = _mm_set1_epi8(static_cast<char>(norm_g.low));
    const __m256i stride = _mm256_set1_epi16(static_cast<int16_t>(values_p_));
    const __m256i below_counted = _mm256_set1_epi16(static_cast<int16_t>(first_counted_ - 1));
    const float* divergence = divergence_.data();
    const int32_t* at_or_below = at_or_below_.data();
    int64_t x = 0;
    while (x + 16 <= width) {
      const int64_t stop = std::min(width, x + kBlock);
      __m256i ints[kInts] = {};  // int32 lanes, but above_lowest's int16
      Floats intersection = {}, divergence_sum = {};
      // Eight pixels: their table reads and SIM terms (16-bit values, index widened to 32 bits).
      const auto eight = [&](__m128i b16, __m128i a16, __m128i index16) {
        const __m256i b = _mm256_cvtepu16_epi32(b16), a = _mm256_cvtepu16_epi32(a16);
        ints[3] = _mm256_add_epi32(ints[3], _mm256_i32gather_epi32(at_or_below, b, 4));
        divergence_sum += reinterpret_cast<Floats>(
            _mm256_i32gather_ps(divergence, _mm256_cvtepu16_epi32(index16), 4));
        intersection += terms.similarity(
            __builtin_convertvector(reinterpret_cast<Ints>(b), Floats) * norm_p.scale,
            __builtin_convertvector(reinterpret_cast<Ints>(a), Floats) * norm_g.scale);
      };
      for (; x + 16 <= stop; x += 16) {
        const __m256i b = _mm256_cvtepu8_epi16(
            _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + x)), low_p));
        const __m256i a = _mm256_cvtepu8_epi16(
            _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + x)), low_g));
        ints[0] = _mm256_add_epi32(ints[0], _mm256_madd_epi16(b, b));
        ints[1] = _mm256_add_epi32(ints[1], _mm256_madd_epi16(a, a));
        ints[2] = _mm256_add_epi32(ints[2], _mm256_madd_epi16(b, a));
        ints[4] = _mm256_sub_epi16(ints[4], _mm256_cmpgt_epi16(b, below_counted));
        const __m256i index = _mm256_add_epi16(_mm256_mullo_epi16(a, stride), b);
        eight(_mm256_castsi256_si128(b), _mm256_castsi256_si128(a), _mm256_castsi256_si128(index));
        eight(_mm256_extracti128_si256(b, 1), _mm256_extracti128_si256(a, 1),
              _mm256_extracti128_si256(index, 1));
      }
      ints[4] = _mm256_madd_epi16(ints[4], _mm256_set1_epi16(1));  // int16 lanes to int32
      for (int t = 0; t < kInts; ++t) totals.ints[t] = add_wide(totals.ints[t], ints[t]);
      totals.intersection = add_wide(totals.intersection, intersection);
      totals.divergence = add_wide(totals.divergence, divergence_sum);
    }
    for (; x < width; ++x) {
      const int32_t b = p[x] - norm_p.low, a = g[x] - norm_g.low;
      totals.tail_ints[0] += b * b;
      totals.tail_ints[1] += a * a;
      totals.tail_ints[2] += b * a;
      totals.tail_ints[3] += at_or_below[b];
      totals.tail_ints[4] += b >= first_counted_;
      totals.tail_intersection += terms.similarity(norm_p(p[x]), norm_g(g[x]));
      totals.tail_divergence += divergence[a * values_p_ + b];
    }
  }

  // Eight int32 (float32) lanes added into four int64 (float64) ones.
  static __m256i add_wide(__m256i wide, __m256i v) {
    return _mm256_add_epi64(_mm256_add_epi64(wide, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v))),
                            _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
  }
  static __m256d add_wide(__m256d wide, Floats v) {
    const __m256 f = reinterpret_cast<__m256>(v);
    return _mm256_add_pd(_mm256_add_pd(wide, _mm256_cvtps_pd(_mm256_castps256_ps128(f))),
                         _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
  }
  static int64_t int_total(__m256i v) {
    alignas(32) int64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), v);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
  }
  static double double_total(__m256d v) {
    alignas(32) double lanes[4];
    _mm256_store_pd(lanes, v);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
  }

  int32_t values_p_ = 0, first_counted_ = 0;  // first_counted_: the lowest p - low_p with a count
  std::vector<float> divergence_;             // [(g - low_g) * values_p + p - low_p]: KLD's term
  std::vector<int32_t> at_or_below_;          // [p - low_p]: thresholds at or below it
};
#endif

class FrameScorer {
 public:
  template <typename P, typename G>
  void score(const RawMap<P>& pred, const RawMap<G>& gt, const FrameInputs& in, float* out) {
    const Normaliser<P> norm_p = normaliser(pred.data, pred.height * pred.width, pred.channels);
    const Normaliser<G> norm_g = normaliser(gt.data, gt.height * gt.width, gt.channels);
    const int64_t height = gt.height, width = gt.width;
    prediction_.load(prepare(pred.data, pred.width, pred.channels, norm_p), pred.height, pred.width,
                     height, width);
    const PreparedMap truth = prepare(gt.data, gt.width, gt.channels, norm_g);
    truth_.resize(padded(width));

    std::vector<float> at_fixations;
    int64_t loaded = -1;
    const float* row = nullptr;
    for (const auto& [y, x] : fixation_places(in, height, width)) {
      if (y != loaded) row = prediction_.row(loaded = y);
      at_fixations.push_back(row[x]);
    }
    const ThresholdCounter counter(at_fixations);
    const Terms terms(prediction_.sum(), truth.sum, static_cast<double>(height * width));
#if defined(__AVX2__)
    if constexpr (std::is_same_v<P, uint8_t> && std::is_same_v<G, uint8_t>) {
      if (BytePairs::apply(pred, gt, norm_p, norm_g)) {
        const FrameSums sums = pairs_.add(pred, gt, norm_p, norm_g, counter, terms);
        return finish(sums, prediction_.sum(), truth.sum, at_fixations, in, height, width, out);
      }
    }
#endif

    // An integer prediction on the ground truth's grid takes few values: AUC-Judd counts each
    // value once, weighted by how often it occurs, instead of each pixel.
    bool counted = false;
    FrameSums sums = terms.centred_sums();
    if constexpr (std::is_integral_v<P>) {
      if (pred.height == height && pred.width == width && counter.slots() > 0)
        counted = count_by_value(pred, norm_p, counter, sums);
    }
    for (int64_t y = 0; y < height; ++y) {
      const float* p = prediction_.row(y);
      truth.rows(y, truth_.data());
      terms.add_row(p, truth_.data(), width, sums);
      if (counted) continue;
      switch (counter.slots()) {
        case 0: break;  // no thresholds
        case 1: counter.add_row<1>(p, width, sums.at_or_below, sums.above_lowest); break;
        case 2: counter.add_row<2>(p, width, sums.at_or_below, sums.above_lowest); break;
        default: counter.add_row<0>(p, width, sums.at_or_below, sums.above_lowest);
      }
    }
    finish(sums, prediction_.sum(), truth.sum, at_fixations, in, height, width, out);
  }

 private:
  static constexpr int64_t kMaxCountedValues = 1 << 16;
  static constexpr int64_t kCopies = 4;  // histograms alternated over neighbouring pixels

  // The AUC-Judd counts from a histogram of the prediction's values (false when they are too many).
  // Neighbouring pixels often share a value: alternating between kCopies histograms keeps each
  // increment from waiting on the one before.
  template <typename P>
  bool count_by_value(const RawMap<P>& pred, const Normaliser<P>& norm, const ThresholdCounter& counter,
                      FrameSums& sums) {
    const int64_t values = int64_t{norm.high} - norm.low + 1;
    if (values > kMaxCountedValues) return false;
    histogram_.assign(static_cast<size_t>(values * kCopies), 0);
    uint32_t* counts = histogram_.data();
    const int64_t pixels = pred.height * pred.width, channels = pred.channels;
    const Wide<P> low = norm.low;
    int64_t i = 0;
    if (channels == 1) {
      for (; i + kCopies <= pixels; i += kCopies)
        for (int64_t c = 0; c < kCopies; ++c) ++counts[c * values + (pred.data[i + c] - low)];
    }
    for (; i < pixels; ++i) ++counts[channel_sum(pred.data + i * channels, channels) - low];
    counts_by_value(norm, counter, value_counts_);
    for (int64_t v = 0; v < values; ++v) {
      int64_t occurrences = 0;
      for (int64_t c = 0; c < kCopies; ++c) occurrences += counts[c * values + v];
      sums.at_or_below += value_counts_[v] * occurrences;
      sums.above_lowest += value_counts_[v] > 0 ? occurrences : 0;
    }
    return true;
  }

  // The five scores from a frame's sums (metrics.py's formulas, in float64).
  static void finish(const FrameSums& sums, double sum_p, double sum_g,
                     const std::vector<float>& at_fixations, const FrameInputs& in, int64_t height,
                     int64_t width, float* out) {
    const double pixels = static_cast<double>(height * width);
    // Centred sums from the centres c: sum (p - m)^2 = sum (p - c)^2 - N (m - c)^2.
    const double mean_p = sum_p / pixels, mean_g = sum_g / pixels;
    const double shift_p = mean_p - sums.centre_p, shift_g = mean_g - sums.centre_g;
    const double squares_p = sums.pp - pixels * shift_p * shift_p;
    const double squares_g = sums.gg - pixels * shift_g * shift_g;
    const double cross = sums.pg - pixels * shift_p * shift_g;
    const double std_p = std::sqrt(std::max(squares_p, 0.0) / pixels);
    const double std_g = std::sqrt(std::max(squares_g, 0.0) / pixels);
    const double scale_p = std_p + kStdEps, scale_g = std_g + kStdEps;
    const double power = (squares_p / (scale_p * scale_p)) * (squares_g / (scale_g * scale_g));
    const double nan = std::numeric_limits<double>::quiet_NaN();

    // AUC-Judd's closed form (metrics._auc_from_thresholds).
    const double n = in.count;
    const double negatives = pixels - static_cast<double>(unique_fixations(in, width));
    const double excess = 2.0 * static_cast<double>(sums.at_or_below) -
                          static_cast<double>(sums.above_lowest) - n * n;
    double standardised = 0.0;
    for (float value : at_fixations) standardised += (value - mean_p) / scale_p;

    out[0] = static_cast<float>(n > 0 && negatives > 0 ? 1.0 - excess / (2.0 * n * negatives) : nan);
    out[1] = static_cast<float>(cross / (scale_p * scale_g) / std::sqrt(power + kStdEps));
    out[2] = static_cast<float>(n > 0 ? standardised / n : nan);
    out[3] = static_cast<float>(sums.intersection);
    out[4] = static_cast<float>(sum_p > 0.0 && sum_g > 0.0 ? sums.divergence : nan);
  }

  PredictionRows prediction_;
  std::vector<float> truth_;
  std::vector<uint32_t> histogram_;
  std::vector<int32_t> value_counts_;  // count_by_value's thresholds at or below each value
#if defined(__AVX2__)
  BytePairs pairs_;
#endif
};

bool readable(ffi::DataType type) {
  return type == ffi::DataType::U8 || type == ffi::DataType::U16 || type == ffi::DataType::F32;
}

// Calls f(RawMap<T>) for frame `index` of a batch, with T its dtype.
template <typename F>
void with_frame(const MapBatch& batch, int64_t index, F&& f) {
  const int64_t offset = batch.height * batch.width * batch.channels * index;
  auto frame = [&](const auto* data) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(data)>>;
    f(RawMap<T>{data + offset, batch.height, batch.width, batch.channels});
  };
  switch (batch.type) {
    case ffi::DataType::U8:
      return frame(static_cast<const uint8_t*>(batch.data));
    case ffi::DataType::U16:
      return frame(static_cast<const uint16_t*>(batch.data));
    default:
      return frame(static_cast<const float*>(batch.data));
  }
}

// Scores `batch` frames into out [batch, kNumMetrics], the frames spread over `threads` threads.
void score_batch(const MapBatch& pred, const MapBatch& gt, const int32_t* fixations, int64_t slots,
                 const int32_t* counts, int64_t batch, bool corrected, int64_t threads, float* out) {
  auto work = [&](int64_t worker, int64_t workers) {
    FrameScorer scorer;
    for (int64_t frame = worker; frame < batch; frame += workers) {
      const int32_t count = std::clamp<int32_t>(counts[frame], 0, static_cast<int32_t>(slots));
      const FrameInputs in{fixations + frame * slots * 2, count, corrected};
      with_frame(pred, frame, [&](const auto& p) {
        with_frame(gt, frame, [&](const auto& g) {
          scorer.score(p, g, in, out + frame * kNumMetrics);
        });
      });
    }
  };
  const int64_t workers = std::max<int64_t>(1, std::min(threads, batch));
  std::vector<std::thread> pool;
  for (int64_t w = 1; w < workers; ++w) pool.emplace_back(work, w, workers);
  work(0, workers);
  for (auto& thread : pool) thread.join();
}

// Why a call's shapes cannot be scored, or empty.
std::string shape_problem(const int64_t* pred, const int64_t* gt, const int64_t* fixations,
                          int64_t counts) {
  if (fixations[2] != 2) return "fixations must be [B, N, 2]";
  if (pred[0] != gt[0] || fixations[0] != gt[0] || counts != gt[0]) return "batch sizes differ";
  if (pred[1] < 1 || pred[2] < 1 || gt[1] < 1 || gt[2] < 1 || pred[3] < 1 || gt[3] < 1)
    return "maps must have at least one pixel and channel";
  return "";
}

ffi::Error AimScoresImpl(ffi::AnyBuffer pred, ffi::AnyBuffer gt, ffi::Buffer<ffi::S32> fixations,
                         ffi::Buffer<ffi::S32> counts, bool corrected, int64_t threads,
                         ffi::ResultBuffer<ffi::F32> scores) {
  const auto pd = pred.dimensions(), gd = gt.dimensions(), fd = fixations.dimensions();
  if (pd.size() != 4 || gd.size() != 4 || fd.size() != 3)
    return ffi::Error::InvalidArgument("aim_scores: expected pred [B,h,w,C], gt [B,H,W,C], "
                                       "fixations [B,N,2]");
  if (!readable(pred.element_type()) || !readable(gt.element_type()))
    return ffi::Error::InvalidArgument("aim_scores: maps must be uint8, uint16 or float32");
  const std::string problem = shape_problem(pd.begin(), gd.begin(), fd.begin(),
                                            static_cast<int64_t>(counts.element_count()));
  if (!problem.empty()) return ffi::Error::InvalidArgument("aim_scores: " + problem);
  score_batch({pred.untyped_data(), pred.element_type(), pd[1], pd[2], pd[3]},
              {gt.untyped_data(), gt.element_type(), gd[1], gd[2], gd[3]}, fixations.typed_data(),
              fd[1], counts.typed_data(), gd[0], corrected, threads, scores->typed_data());
  return ffi::Error::Success();
}

// A C-contiguous buffer of a Python object, released with the holder.
class HeldBuffer {
 public:
  bool hold(PyObject* object, bool writable) {
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    held_ = PyObject_GetBuffer(object, &view_, flags) == 0;
    return held_;
  }
  ~HeldBuffer() {
    if (held_) PyBuffer_Release(&view_);
  }
  const Py_buffer& view() const { return view_; }
  // The element type: the buffer format without a native or little-endian byte-order mark.
  char format() const {
    const char* format = view_.format;
    while (*format == '@' || *format == '=' || *format == '<') ++format;
    return format[1] == '\0' ? format[0] : '?';
  }

 private:
  Py_buffer view_{};
  bool held_ = false;
};

ffi::DataType map_type(char format) {
  switch (format) {
    case 'B': return ffi::DataType::U8;
    case 'H': return ffi::DataType::U16;
    case 'f': return ffi::DataType::F32;
    default: return ffi::DataType::INVALID;
  }
}

// score_arrays(pred, gt, fixations, counts, out, corrected, threads): the same scoring on host
// arrays, without XLA (no copy into device buffers), the GIL released while it runs.
PyObject* ScoreArrays(PyObject*, PyObject* args) {
  PyObject *pred_object, *gt_object, *fixations_object, *counts_object, *out_object;
  int corrected;
  Py_ssize_t threads;
  if (!PyArg_ParseTuple(args, "OOOOOpn", &pred_object, &gt_object, &fixations_object,
                        &counts_object, &out_object, &corrected, &threads))
    return nullptr;
  HeldBuffer pred, gt, fixations, counts, out;
  if (!pred.hold(pred_object, false) || !gt.hold(gt_object, false) ||
      !fixations.hold(fixations_object, false) || !counts.hold(counts_object, false) ||
      !out.hold(out_object, true))
    return nullptr;
  const Py_buffer &p = pred.view(), &g = gt.view(), &f = fixations.view(), &c = counts.view();
  std::string problem;
  if (p.ndim != 4 || g.ndim != 4 || f.ndim != 3 || c.ndim != 1 || out.view().ndim != 2)
    problem = "expected pred [B,h,w,C], gt [B,H,W,C], fixations [B,N,2], counts [B], out [B,5]";
  else if (map_type(pred.format()) == ffi::DataType::INVALID ||
           map_type(gt.format()) == ffi::DataType::INVALID)
    problem = "maps must be uint8, uint16 or float32";
  else if (fixations.format() != 'i' || counts.format() != 'i' || out.format() != 'f')
    problem = "fixations and counts must be int32, out float32";
  else if (out.view().shape[0] != g.shape[0] || out.view().shape[1] != kNumMetrics)
    problem = "out must be [B, 5]";
  else
    problem = shape_problem(p.shape, g.shape, f.shape, c.shape[0]);
  if (!problem.empty()) {
    PyErr_SetString(PyExc_ValueError, ("score_arrays: " + problem).c_str());
    return nullptr;
  }
  const MapBatch pred_batch{p.buf, map_type(pred.format()), p.shape[1], p.shape[2], p.shape[3]};
  const MapBatch gt_batch{g.buf, map_type(gt.format()), g.shape[1], g.shape[2], g.shape[3]};
  Py_BEGIN_ALLOW_THREADS
  score_batch(pred_batch, gt_batch, static_cast<const int32_t*>(f.buf), f.shape[1],
              static_cast<const int32_t*>(c.buf), g.shape[0], corrected != 0, threads,
              static_cast<float*>(out.view().buf));
  Py_END_ALLOW_THREADS
  Py_RETURN_NONE;
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SalaxAimScores, AimScoresImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<bool>("corrected")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>());

static PyMethodDef aim_scores_methods[] = {
    {"score_arrays", ScoreArrays, METH_VARARGS,
     "score_arrays(pred, gt, fixations, counts, out, corrected, threads): scores into out [B, 5]."},
    {nullptr, nullptr, 0, nullptr}};

// The module hands the handler ('aim_scores') to jax.ffi.register_ffi_target, and offers the same
// scoring on host arrays (see salax/native_metrics.py).
static PyModuleDef aim_scores_module = {
    PyModuleDef_HEAD_INIT, "_aim_scores", "The CPU AIM scoring kernel (see salax/native_metrics.py).",
    -1, aim_scores_methods};

PyMODINIT_FUNC PyInit__aim_scores(void) {
#if defined(__AVX2__) && (defined(__x86_64__) || defined(__i386__))
  // Built for AVX2 (setup.py does so on x86): refuse to load on an older CPU, and salax scores with
  // its pure-JAX code instead.
  if (!__builtin_cpu_supports("avx2")) {
    PyErr_SetString(PyExc_ImportError, "salax._aim_scores needs AVX2, which this CPU lacks");
    return nullptr;
  }
#endif
  PyObject* module = PyModule_Create(&aim_scores_module);
  if (module == nullptr) return nullptr;
  PyObject* capsule = PyCapsule_New(reinterpret_cast<void*>(SalaxAimScores), nullptr, nullptr);
  if (capsule == nullptr || PyModule_AddObject(module, "aim_scores", capsule) < 0) {
    Py_XDECREF(capsule);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
