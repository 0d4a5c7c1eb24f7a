// One frame's scores from its raw maps and fixations, and a batch of frames spread over threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "lanes.h"
#include "maps.h"
#include "pairs.h"
#include "terms.h"
#include "thresholds.h"

namespace salax_aim {

// The output columns, in order: the one list of them in C++ (bindings.cc exports it as COLUMNS,
// and salax.metrics.native checks it against METRIC_NAMES at import).
enum Column { kAucJudd, kCc, kNss, kSim, kKld, kNumMetrics };
constexpr const char* kColumnNames[kNumMetrics] = {"auc_judd", "cc", "nss", "sim", "kld"};

// The columns a call asks for, as bits (1 << Column); the others are written NaN and cost nothing.
constexpr uint32_t kAllColumns = (1u << kNumMetrics) - 1;

struct FrameInputs {
  const int32_t* fixations;  // [N, 2] (row, col), the first `count` valid
  int32_t count;
  bool corrected;
  uint32_t wanted;  // bits of the columns asked for

  bool wants(Column column) const { return (wanted >> column) & 1u; }
};

// Why a frame was not scored (its row of scores is NaN); the bindings turn it into an error.
enum class Problem : uint8_t { kNone, kPredictionNotFinite, kTruthNotFinite, kTruthShiftOverflow };

inline const char* describe(Problem problem) {
  switch (problem) {
    case Problem::kPredictionNotFinite: return "the prediction holds NaN or infinite values";
    case Problem::kTruthNotFinite: return "the ground-truth map holds NaN or infinite values";
    case Problem::kTruthShiftOverflow: return "the ground-truth map's values, shifted, do not fit in 16 bits";
    default: return "";
  }
}

// Whether every value of a raw map is finite (integer maps always are). x - x is 0 for finite x
// and NaN for NaN or +-inf, so one vector sum of them tells.
template <typename T>
bool finite_map(const RawMap<T>& map) {
  if constexpr (std::is_integral_v<T>) {
    return true;
  } else {
    const bool whole = map.contiguous();
    const int64_t rows = whole ? 1 : map.height, count = (whole ? map.height : 1) * map.width * map.channels;
    T zero = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = map.row(r);
#pragma omp simd reduction(+ : zero)
      for (int64_t i = 0; i < count; ++i) zero += row[i] - row[i];
    }
    return zero == 0;
  }
}

// The organisers' unique count U of the false-positive denominator H*W - U.
inline int64_t unique_fixations(const FrameInputs& in, int64_t width) {
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

// Fixations clamped to the grid, as (row, col), sorted by row so that rows are visited once.
inline std::vector<std::pair<int64_t, int64_t>> fixation_places(const FrameInputs& in, int64_t height,
                                                                int64_t width) {
  std::vector<std::pair<int64_t, int64_t>> places(in.count);
  for (int32_t i = 0; i < in.count; ++i)
    places[i] = {std::clamp<int64_t>(in.fixations[2 * i], 0, height - 1),
                 std::clamp<int64_t>(in.fixations[2 * i + 1], 0, width - 1)};
  std::sort(places.begin(), places.end());
  return places;
}

class FrameScorer {
 public:
  // Scores one frame into out[kNumMetrics] (columns not asked for: NaN). A frame whose maps cannot
  // be scored is not read past the check: its scores stay NaN and its problem is returned.
  template <typename P, typename G>
  Problem score(const RawMap<P>& pred, const RawMap<G>& gt, const FrameInputs& in, float* out) {
    std::fill(out, out + kNumMetrics, std::numeric_limits<float>::quiet_NaN());
    if (!finite_map(pred)) return Problem::kPredictionNotFinite;
    if (!finite_map(gt)) return Problem::kTruthNotFinite;
    const bool kld = in.wants(kKld), auc = in.wants(kAucJudd);
    const Normaliser<P> norm_p = normaliser(pred);
    const Normaliser<G> norm_g = normaliser(gt);
    if constexpr (std::is_integral_v<G>) {
      if (gt.shift > 0 && (int64_t{norm_g.high} << gt.shift) > std::numeric_limits<uint16_t>::max())
        return Problem::kTruthShiftOverflow;
    }
    const int64_t height = gt.height, width = gt.width;
    prediction_.load(prepare(pred, norm_p), pred.height, pred.width, height, width);
    const PreparedMap truth = prepare(gt, norm_g);
    truth_.resize(padded(width));

    // The prediction at the fixations: exactly (float64) where its float32 rounding could tie or
    // order pixels differently (a resized float64-rule map); then AUC-Judd counts on exact rows.
    const bool exact = prediction_.exact();
    std::vector<double> at_fixations;
    std::vector<float> thresholds;
    for (const auto& [y, x] : fixation_places(in, height, width)) {  // by row: a float32 row computed once
      if (exact) {
        at_fixations.push_back(prediction_.exact_at(y, x));
      } else {
        const float value = prediction_.row(y)[x];
        at_fixations.push_back(value);
        thresholds.push_back(value);
      }
    }
    // AUC-Judd's counts: by bucket for a resized prediction (its values cross the thresholds at most
    // pixels), else by a moving window, or by value (below).
    const bool resized = pred.height != height || pred.width != width;
    const bool by_bucket = auc && resized && (exact ? exact_buckets_.build(at_fixations) : buckets_.build(thresholds));
    const bool windowed = auc && !by_bucket;
    const ThresholdCounter<float> counter(windowed && !exact ? thresholds : std::vector<float>{});
    const ThresholdCounter<double> exact_counter(windowed && exact ? at_fixations : std::vector<double>{});
    const Terms terms(prediction_.sum(), truth.sum, static_cast<double>(height * width));
    if constexpr (std::is_integral_v<P> && std::is_integral_v<G>) {
      if (IntegerPairs::apply(pred, gt, norm_p, norm_g, kld)) {
        const FrameSums sums = pairs_.add(pred, gt, norm_p, norm_g, counter, terms, prediction_.sum(),
                                          truth.sum, kld);
        finish(sums, prediction_.sum(), truth.sum, at_fixations, in, height, width, out);
        return Problem::kNone;
      }
    }

    // An integer prediction on the ground truth's grid takes few values: AUC-Judd counts each
    // value once, weighted by how often it occurs, instead of each pixel.
    bool counted = false;
    FrameSums sums = terms.centred_sums();
    if constexpr (std::is_integral_v<P>) {
      if (pred.height == height && pred.width == width && counter.slots() > 0)
        counted = count_by_value(pred, norm_p, counter, sums);
    }
    // The extremes are known, without a compare per pixel, for a resized prediction (PredictionRows
    // tracks them) on a one-channel integer truth (its prepared extremes are its extremes' values).
    const bool known = resized && std::is_integral_v<G> && gt.channels == 1;
    if (known) {
      sums.low_g = norm_g(norm_g.low);
      sums.high_g = norm_g(norm_g.high);
    }
    for (int64_t y = 0; y < height; ++y) {
      if (exact && by_bucket) {  // counted as the row is computed
        const float* p = prediction_.row_counted(y, exact_buckets_, sums.at_or_below, sums.above_lowest);
        add_terms(terms, p, gt, norm_g, truth, y, kld, known, sums);
        continue;
      }
      const float* p = prediction_.row(y);
      add_terms(terms, p, gt, norm_g, truth, y, kld, known, sums);
      if (exact) {  // the extremes (a flat map) and AUC-Judd's counts on the exact values
        const double* e = prediction_.row_exact(y);
        if (!counted && exact_counter.slots() > 0)
          exact_counter.add_row<0>(e, width, sums.at_or_below, sums.above_lowest);
        continue;
      }
      if (counted) continue;
      if (by_bucket) {
        buckets_.add_row(p, p, width, sums.at_or_below, sums.above_lowest);
        continue;
      }
      switch (counter.slots()) {
        case 0: break;  // no thresholds (or AUC-Judd not asked for)
        case 1: counter.add_row<1>(p, width, sums.at_or_below, sums.above_lowest); break;
        case 2: counter.add_row<2>(p, width, sums.at_or_below, sums.above_lowest); break;
        default: counter.add_row<0>(p, width, sums.at_or_below, sums.above_lowest);
      }
    }
    if (exact || known) {  // every row was read
      sums.low_p = prediction_.low();
      sums.high_p = prediction_.high();
    }
    finish(sums, prediction_.sum(), truth.sum, at_fixations, in, height, width, out);
    return Problem::kNone;
  }

 private:
  static constexpr int64_t kMaxCountedValues = 1 << 16;
  static constexpr int64_t kCopies = 4;  // histograms alternated over neighbouring pixels

  // Adds row y's CC, NSS, SIM (and KLD) terms: a one-channel integer truth read in place, others
  // prepared into a buffer first; the maps' extremes too, unless `known` (see score()).
  template <typename G>
  void add_terms(const Terms& terms, const float* p, const RawMap<G>& gt, const Normaliser<G>& norm_g,
                 const PreparedMap& truth, int64_t y, bool kld, bool known, FrameSums& sums) {
    const int64_t width = gt.width;
    if constexpr (std::is_integral_v<G>) {
      if (gt.channels == 1) {
        const IntegerRow<G> row{gt.row(y), width, static_cast<int32_t>(norm_g.low), norm_g.scale};
        if (known)
          return kld ? terms.add_row<true, false>(p, row, width, sums) : terms.add_row<false, false>(p, row, width, sums);
        return kld ? terms.add_row<true, true>(p, row, width, sums) : terms.add_row<false, true>(p, row, width, sums);
      }
    }
    truth.rows(y, truth_.data());
    const PreparedRow row{truth_.data()};
    kld ? terms.add_row<true, true>(p, row, width, sums) : terms.add_row<false, true>(p, row, width, sums);
  }

  // The AUC-Judd counts from a histogram of the prediction's values (false when they are too many).
  // Neighbouring pixels often share a value: alternating between kCopies histograms keeps each
  // increment from waiting on the one before.
  template <typename P>
  bool count_by_value(const RawMap<P>& pred, const Normaliser<P>& norm, const ThresholdCounter<float>& counter,
                      FrameSums& sums) {
    const int64_t values = int64_t{norm.high} - norm.low + 1;
    if (values > kMaxCountedValues) return false;
    histogram_.assign(static_cast<size_t>(values * kCopies), 0);
    uint32_t* counts = histogram_.data();
    const bool whole = pred.contiguous();
    const int64_t rows = whole ? 1 : pred.height, pixels = (whole ? pred.height : 1) * pred.width;
    const int64_t channels = pred.channels;
    const Wide<P> low = norm.low;
    for (int64_t r = 0; r < rows; ++r) {
      const P* row = pred.row(r);
      int64_t i = 0;
      if (channels == 1) {
        for (; i + kCopies <= pixels; i += kCopies)
          for (int64_t c = 0; c < kCopies; ++c) ++counts[c * values + (row[i + c] - low)];
      }
      for (; i < pixels; ++i) ++counts[channel_sum(row + i * channels, channels) - low];
    }
    counts_by_value(norm, counter, value_counts_);
    for (int64_t v = 0; v < values; ++v) {
      int64_t occurrences = 0;
      for (int64_t c = 0; c < kCopies; ++c) occurrences += counts[c * values + v];
      sums.at_or_below += value_counts_[v] * occurrences;
      sums.above_lowest += value_counts_[v] > 0 ? occurrences : 0;
    }
    return true;
  }

  // The five scores from a frame's sums (rules.py's formulas, in float64).
  static void finish(const FrameSums& sums, double sum_p, double sum_g,
                     const std::vector<double>& at_fixations, const FrameInputs& in, int64_t height,
                     int64_t width, float* out) {
    const double pixels = static_cast<double>(height * width);
    // Centred sums from the centres c: sum (p - m)^2 = sum (p - c)^2 - N (m - c)^2.
    const double mean_p = std::clamp(sum_p / pixels, sums.low_p, sums.high_p);
    const double mean_g = std::clamp(sum_g / pixels, sums.low_g, sums.high_g);
    const double shift_p = mean_p - sums.centre_p, shift_g = mean_g - sums.centre_g;
    // A constant map centres to exactly 0 (as the clipped mean makes it in rules.py); otherwise the
    // shifted sums, never below 0 where rounding would take them.
    const bool flat_p = !(sums.high_p > sums.low_p), flat_g = !(sums.high_g > sums.low_g);
    const double squares_p = flat_p ? 0.0 : std::max(sums.pp - pixels * shift_p * shift_p, 0.0);
    const double squares_g = flat_g ? 0.0 : std::max(sums.gg - pixels * shift_g * shift_g, 0.0);
    const double cross = flat_p || flat_g ? 0.0 : sums.pg - pixels * shift_p * shift_g;
    const double std_p = std::sqrt(squares_p / pixels);
    const double std_g = std::sqrt(squares_g / pixels);
    const double scale_p = std_p + kStdEps, scale_g = std_g + kStdEps;
    const double power = (squares_p / (scale_p * scale_p)) * (squares_g / (scale_g * scale_g));
    const double nan = std::numeric_limits<double>::quiet_NaN();

    // AUC-Judd's closed form (rules._auc_from_thresholds).
    const double n = in.count;
    const double negatives = pixels - static_cast<double>(unique_fixations(in, width));
    const double excess = 2.0 * static_cast<double>(sums.at_or_below) -
                          static_cast<double>(sums.above_lowest) - n * n;
    double standardised = 0.0;
    if (!flat_p)
      for (double value : at_fixations) standardised += (value - mean_p) / scale_p;

    const double scores[kNumMetrics] = {
        n > 0 && negatives > 0 ? 1.0 - excess / (2.0 * n * negatives) : nan,
        cross / (scale_p * scale_g) / std::sqrt(power + kStdEps),
        n > 0 ? standardised / n : nan,
        sums.intersection,
        sum_p > 0.0 && sum_g > 0.0 ? sums.divergence : nan,
    };
    for (int column = 0; column < kNumMetrics; ++column)
      if (in.wants(static_cast<Column>(column))) out[column] = static_cast<float>(scores[column]);
  }

  PredictionRows prediction_;
  BucketCounter<float> buckets_;
  BucketCounter<double> exact_buckets_;
  std::vector<float> truth_;
  std::vector<uint32_t> histogram_;
  std::vector<int32_t> value_counts_;  // count_by_value's thresholds at or below each value
  IntegerPairs pairs_;
};

// The element types the kernel reads, and a raw [B, H, W, C] map batch of one of them.
enum class MapType { kU8, kU16, kF32, kF64 };

// Strides count elements; a frame's rows are RawMap's (each contiguous, row_stride apart).
struct MapBatch {
  const void* data;
  MapType type;
  int64_t height, width, channels;
  bool channel_axis;  // the caller's maps were [B, H, W, C], not [B, H, W]
  int64_t row_stride, frame_stride;
  int shift = 0;  // see RawMap
};

// The bits of a call's `layout`: which maps came with a channel axis, and (bits 8-11) the truth's
// shift (its values are its data << shift: a 10-bit plane read as the 16-bit PNG that holds it).
constexpr uint32_t kPredChannelAxis = 1, kTruthChannelAxis = 2;
constexpr int kTruthShiftBit = 8;
inline int truth_shift(uint32_t layout) { return static_cast<int>((layout >> kTruthShiftBit) & 15u); }

// Calls f(RawMap<T>) for frame `index` of a batch, with T its dtype.
template <typename F>
void with_frame(const MapBatch& batch, int64_t index, F&& f) {
  const int64_t offset = batch.frame_stride * index;
  auto frame = [&](const auto* data) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(data)>>;
    f(RawMap<T>{data + offset, batch.height, batch.width, batch.channels, batch.channel_axis, batch.row_stride,
                batch.shift});
  };
  switch (batch.type) {
    case MapType::kU8:
      return frame(static_cast<const uint8_t*>(batch.data));
    case MapType::kU16:
      return frame(static_cast<const uint16_t*>(batch.data));
    case MapType::kF64:
      return frame(static_cast<const double*>(batch.data));
    default:
      return frame(static_cast<const float*>(batch.data));
  }
}

// Float subnormals read as zero and results that would be subnormal are flushed to zero while it
// lives (x86 MXCSR FTZ and DAZ, ARM FPCR FZ), as XLA:CPU computes: both implementations then round
// every float operation alike. Restores the thread's mode.
class FlushSubnormals {
 public:
  FlushSubnormals() {
#if defined(__SSE__)
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) and DAZ (bit 6)
#elif defined(__aarch64__)
    saved_ = __builtin_aarch64_get_fpcr64();
    __builtin_aarch64_set_fpcr64(saved_ | (uint64_t{1} << 24));  // FZ
#endif
  }
  ~FlushSubnormals() {
#if defined(__SSE__)
    _mm_setcsr(saved_);
#elif defined(__aarch64__)
    __builtin_aarch64_set_fpcr64(saved_);
#endif
  }
  FlushSubnormals(const FlushSubnormals&) = delete;
  FlushSubnormals& operator=(const FlushSubnormals&) = delete;

 private:
#if defined(__SSE__)
  unsigned saved_ = 0;
#else
  uint64_t saved_ = 0;
#endif
};

// A frame that could not be scored, and why (frame -1: every frame was scored).
struct BatchProblem {
  int64_t frame = -1;
  Problem problem = Problem::kNone;
};

// Scores `batch` frames into out [batch, kNumMetrics] (the columns in `wanted`), the frames spread
// over `threads` threads; returns the first frame that could not be scored, if any.
inline BatchProblem score_batch(const MapBatch& pred, const MapBatch& gt, const int32_t* fixations,
                                int64_t slots, const int32_t* counts, int64_t batch, bool corrected,
                                uint32_t wanted, int64_t threads, float* out) {
  std::vector<Problem> problems(static_cast<size_t>(batch), Problem::kNone);
  auto work = [&](int64_t worker, int64_t workers) {
    const FlushSubnormals flush;
    FrameScorer scorer;
    for (int64_t frame = worker; frame < batch; frame += workers) {
      const int32_t count = std::clamp<int32_t>(counts[frame], 0, static_cast<int32_t>(slots));
      const FrameInputs in{fixations + frame * slots * 2, count, corrected, wanted & kAllColumns};
      with_frame(pred, frame, [&](const auto& p) {
        with_frame(gt, frame, [&](const auto& g) {
          problems[frame] = scorer.score(p, g, in, out + frame * kNumMetrics);
        });
      });
    }
  };
  const int64_t workers = std::max<int64_t>(1, std::min(threads, batch));
  std::vector<std::thread> pool;
  for (int64_t w = 1; w < workers; ++w) pool.emplace_back(work, w, workers);
  work(0, workers);
  for (auto& thread : pool) thread.join();
  for (int64_t frame = 0; frame < batch; ++frame)
    if (problems[frame] != Problem::kNone) return {frame, problems[frame]};
  return {};
}

}  // namespace salax_aim
