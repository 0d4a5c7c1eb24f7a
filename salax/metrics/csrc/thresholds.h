// AUC-Judd needs, for each pixel, the number of thresholds (the prediction at the fixations) at or
// below it, exactly. An integer prediction on the ground truth's grid has few values, so each value
// is counted once (counts_by_value). Otherwise eight pixels at a time are compared with a window of
// eight consecutive distinct thresholds, which moves (a bucket lookup) when the values leave it. The
// lookup puts the distinct thresholds into buckets by a monotone float function of the value, fine
// enough that a bucket holds at most two where the values allow it: a value's count is the
// thresholds of lower buckets plus one or two compares, exact whatever the rounding of the bucket
// function.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "lanes.h"
#include "maps.h"

namespace salax_aim {

// For each pixel, the number of thresholds at or below it, exactly (see the comment at the top).
// T: the values' type, float, or double for the exact float64 path (four lanes a step).
template <typename T = float>
class ThresholdCounter {
 public:
  explicit ThresholdCounter(std::vector<T> thresholds) {
    at_or_below_.push_back(0);
    if (thresholds.empty()) return;
    std::sort(thresholds.begin(), thresholds.end());
    std::vector<T> distinct;
    for (size_t i = 0; i < thresholds.size(); ++i) {
      if (i + 1 == thresholds.size() || thresholds[i + 1] != thresholds[i]) {
        distinct.push_back(thresholds[i]);
        at_or_below_.push_back(static_cast<int32_t>(i + 1));
        multiplicity_.push_back(at_or_below_.back() - at_or_below_[at_or_below_.size() - 2]);
      }
    }
    const size_t count = distinct.size();
    distinct_.assign(1, -std::numeric_limits<T>::infinity());
    distinct_.insert(distinct_.end(), distinct.begin(), distinct.end());
    distinct_.resize(count + kWindow + 2, std::numeric_limits<T>::infinity());
    multiplicity_.resize(count + kWindow, 0);
    lowest_ = distinct.front();
    const T range = distinct.back() - lowest_;
    for (int buckets = kMinBuckets;; buckets *= 4) {
      last_ = static_cast<T>(buckets - 1);
      scale_ = range > 0 && range < std::numeric_limits<T>::infinity() ? static_cast<T>(buckets) / range : 0;
      first_.assign(buckets + 1, 0);
      for (T value : distinct) ++first_[bucket(value) + 1];
      slots_ = *std::max_element(first_.begin(), first_.end());
      if (slots_ <= kMaxSlots || buckets >= kMaxBuckets) break;
    }
    for (size_t b = 1; b < first_.size(); ++b) first_[b] += first_[b - 1];
    slot_values_.assign(first_.size() * slots_, std::numeric_limits<T>::infinity());
    for (size_t j = 0; j < count; ++j) {
      const int b = bucket(distinct[j]);
      slot_values_[static_cast<size_t>(b) * slots_ + (j - first_[b])] = distinct[j];
    }
  }

  int slots() const { return slots_; }

  // Thresholds at or below one value.
  int32_t at_or_below(T value) const {
    return slots_ == 0 ? 0 : at_or_below_[distinct_at_or_below<0>(value)];
  }

  // Adds a row's counts to `sum`, and its pixels at or above the lowest threshold to
  // `above_lowest`. Saliency maps are smooth, so neighbouring pixels lie between the same few
  // thresholds: eight pixels at a time are compared with a window of kWindow consecutive distinct
  // thresholds, valid while every lane lies between the window's neighbours. The window moves (by
  // one bucket lookup) only when the values leave it.
  template <int Slots>
  void add_row(const T* row, int64_t width, int64_t& sum, int64_t& above_lowest) const {
    using Values = typename VectorOf<T>::Values;
    using Masks = typename VectorOf<T>::Masks;
    using Lane = std::remove_reference_t<decltype(Masks{}[0])>;
    constexpr int64_t kCount = VectorOf<T>::kCount;
    const T* bounds = distinct_.data();  // bounds[k + 1]: the k-th distinct threshold
    Masks extra = {}, above = {};
    int64_t row_sum = 0, x = 0;
    int32_t window = 0;  // the window holds distinct thresholds window .. window + kWindow - 1
    for (; x + kCount <= width; x += kCount) {
      const Values values = load(row + x);
      above -= values >= lowest_;
      if (any_lane((!(values >= bounds[window])) | (!(values < bounds[window + kWindow + 1])))) {
        window = std::max(distinct_at_or_below<Slots>(lowest_lane(values)) - kWindow / 4, 0);
        if (any_lane(!(values < bounds[window + kWindow + 1]))) {  // too many thresholds: lane by lane
          for (int64_t i = x; i < x + kCount; ++i)
            row_sum += at_or_below_[distinct_at_or_below<Slots>(row[i])];
          continue;
        }
      }
      row_sum += kCount * at_or_below_[window];
      for (int32_t k = 0; k < kWindow; ++k)
        extra += (values >= bounds[window + k + 1]) & static_cast<Lane>(multiplicity_[window + k]);
    }
    for (; x < width; ++x) {
      const int32_t j = distinct_at_or_below<Slots>(row[x]);
      row_sum += at_or_below_[j];
      above_lowest += j > 0;
    }
    for (int64_t lane = 0; lane < kCount; ++lane) {
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
  int32_t distinct_at_or_below(T value) const {
    const int slots = Slots > 0 ? Slots : slots_;
    const int b = bucket(value);
    int32_t j = first_[b];
    const T* in_bucket = &slot_values_[static_cast<size_t>(b) * slots];
    for (int s = 0; s < slots; ++s) j += value >= in_bucket[s];
    return j;
  }

  // Monotone in the value, so a threshold in a lower bucket is below every value of this one.
  // Written so that no value (NaN included) indexes outside the buckets.
  int bucket(T value) const {
    const T position = (value - lowest_) * scale_;
    if (!(position > 0)) return 0;
    return static_cast<int>(position < last_ ? position : last_);
  }

  int slots_ = 0;  // 0 without thresholds: every count is 0
  std::vector<T> distinct_;            // -inf, the distinct thresholds ascending, then +inf
  std::vector<int32_t> multiplicity_;  // [k]: how often the k-th distinct threshold occurs
  std::vector<int32_t> at_or_below_;   // [j]: thresholds at or below the j-th distinct one; [0]: 0
  std::vector<int32_t> first_;         // [b]: distinct thresholds in buckets below b
  std::vector<T> slot_values_;         // [b, s]: the distinct thresholds in bucket b, then +inf
  T lowest_ = 0, scale_ = 0, last_ = 0;
};

// For each integer value low .. high of a prediction (as `norm` prepares it), the thresholds at or
// below it: what AUC-Judd counts for its pixels.
template <typename T>
void counts_by_value(const Normaliser<T>& norm, const ThresholdCounter<float>& counter,
                     std::vector<int32_t>& counts) {
  counts.resize(static_cast<size_t>(int64_t{norm.high} - norm.low + 1));
  for (size_t v = 0; v < counts.size(); ++v)
    counts[v] = counter.at_or_below(norm(static_cast<Wide<T>>(norm.low + static_cast<Wide<T>>(v))));
}

}  // namespace salax_aim
