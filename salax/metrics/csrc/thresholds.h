// AUC-Judd needs, for each pixel, the number of thresholds (the prediction at the fixations) at or
// below it, exactly. An integer prediction on the ground truth's grid has few values, so each value
// is counted once (counts_by_value). A resized prediction's values cross thresholds at most pixels:
// BucketCounter reads each pixel's count from a table by a bucket of its value, and compares only the
// pixels whose bucket holds a threshold. Otherwise eight pixels at a time are compared with a window
// of eight consecutive distinct thresholds, which moves (a bucket lookup) when the values leave it.
// The lookups put the distinct thresholds into buckets by a monotone float function of the value,
// so a value's count is the thresholds of lower buckets plus compares with those of its own bucket:
// exact whatever the rounding of the bucket function.
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

// The same counts for the rows of a resized prediction, whose values cross thresholds too often for a
// moving window: a pixel's bucket (a monotone float function of its float32 rounding, fine enough
// that few pixels share a bucket with a threshold) gives its count from one table read, unless its
// bucket holds a threshold: then one compare with it decides, exactly, and where several thresholds
// share a bucket they are compared in turn. Prepared maps are never negative (maps.h), so thresholds
// at or below 0 (fixations on the map's minimum, common on dark backgrounds) need no compare.
// T: the exact values' type (double: float64 rows, compared exactly; float: the rows themselves).
template <typename T>
class BucketCounter {
 public:
  // Takes the thresholds (any order); false, and then it counts nothing, when there are none or
  // too many for a count in 15 bits.
  bool build(std::vector<T> thresholds) {
    if (thresholds.empty() || thresholds.size() >= (1u << 15)) return false;
    std::sort(thresholds.begin(), thresholds.end());
    distinct_.clear();
    at_or_below_.assign(1, 0);
    for (size_t i = 0; i < thresholds.size(); ++i) {
      if (i + 1 == thresholds.size() || thresholds[i + 1] != thresholds[i]) {
        distinct_.push_back(thresholds[i]);
        at_or_below_.push_back(static_cast<int32_t>(i + 1));
      }
    }
    // Distinct thresholds at or below 0 are below every value: they count in every bucket.
    const int32_t reached = static_cast<int32_t>(
        std::find_if(distinct_.begin(), distinct_.end(), [](T value) { return value > 0; }) - distinct_.begin());
    lowest_ = static_cast<float>(distinct_.front());
    const float range = static_cast<float>(distinct_.back()) - lowest_;
    last_ = static_cast<float>(kBuckets - 1);
    scale_ = range > 0 && range < std::numeric_limits<float>::infinity() ? static_cast<float>(kBuckets) / range : 0;
    // first_[b]: the distinct thresholds in buckets below b.
    first_.assign(kBuckets + 1, 0);
    for (const T value : distinct_) ++first_[bucket(static_cast<float>(value)) + 1];
    for (int b = 0; b < kBuckets; ++b) first_[b + 1] += first_[b];
    for (int b = 0; b <= kBuckets; ++b) first_[b] = std::max(first_[b], reached);
    entries_.resize(kBuckets);
    limits_.assign(kBuckets, std::numeric_limits<T>::infinity());
    for (int b = 0; b < kBuckets; ++b) {
      const int32_t j = first_[b], own = first_[b + 1] - j;
      entries_[b] = at_or_below_[j];
      if (own == 1) {
        entries_[b] |= kThreshold | (at_or_below_[j + 1] << kAboveShift);
        limits_[b] = distinct_[j];
      } else if (own > 1) {
        entries_[b] = kThreshold | kCrowded;
      }
    }
    return true;
  }

  // Adds a row's counts to `sum`, and its pixels at or above the lowest threshold to `above_lowest`.
  // keys: the row rounded to float32 (the bucket's argument); values: the row exactly. Pixels whose
  // bucket holds one threshold are decided in the vector; those of buckets that hold several are set
  // aside as they come and decided after the row.
  void add_row(const float* keys, const T* values, int64_t width, int64_t& sum, int64_t& above_lowest) {
    const int32_t* entries = entries_.data();
    const T* limits = limits_.data();
    const float lowest = lowest_, scale = scale_, last = last_;
    pending_.resize(static_cast<size_t>(width + kLanes));
    int32_t* pending = pending_.data();
    int64_t waiting = 0, x = 0;
    Ints columns;
    for (int lane = 0; lane < kLanes; ++lane) columns[lane] = lane;
    // Vectors of one value (flat stretches, most of an upscaled map) take one scalar count, which the
    // next such vector reuses when its value is the same.
    T flat_value = std::numeric_limits<T>::quiet_NaN();
    int64_t flat_count = 0, flat_sum = 0, flat_above = 0;
    while (x + kLanes <= width) {
      const int64_t stop = std::min(width, x + kBlock);
      Ints counts = {}, above = {};
      for (; x + kLanes <= stop; x += kLanes) {
        if (all_equal(values + x)) {
          if (!(values[x] == flat_value)) {
            flat_value = values[x];
            const int b = bucket(keys[x]);
            flat_count = decided_count(b, entries[b], flat_value);
          }
          flat_sum += flat_count;
          flat_above += flat_count > 0;
          continue;
        }
        const Ints bucket = buckets(load(keys + x), lowest, scale, last);
        const Ints entry = gather(entries, bucket);
        // A bucket with one threshold: a compare with it picks the entry's lower or upper count
        // (limits is +inf for the others; pixels often equal a threshold exactly, so no finer bucket
        // would part them). Several (then both counts read 0): set aside, decided after the row.
        const Ints upper = at_least_entries(values + x, limits, bucket);
        const Ints count = (((entry >> kAboveShift) & upper) | (entry & ~upper)) & kCountMask;
        const Ints crowded = (entry & kCrowded) != 0;
        if (any_lane(crowded)) [[unlikely]]
          waiting += compress(pending + waiting, columns + static_cast<int32_t>(x), crowded);
        counts += count;
        above -= count > 0;
      }
      sum += lane_total(counts);
      above_lowest += lane_total(above);
    }
    sum += kLanes * flat_sum;
    above_lowest += kLanes * flat_above;
    for (; x < width; ++x) pending[waiting++] = static_cast<int32_t>(x);
    for (int64_t i = 0; i < waiting; ++i) {
      const int64_t column = pending[i];
      const int b = bucket(keys[column]);
      const int32_t count = decided_count(b, entries[b], values[column]);
      sum += count;
      above_lowest += count > 0;
    }
  }

  // The count of one value (its float32 rounding: `key`).
  int32_t count(float key, T value) const {
    const int b = bucket(key);
    return decided_count(b, entries_[b], value);
  }

  // A row counted eight pixels at a time as they are computed (a resized prediction's fused pass,
  // maps.h PredictionRows::row_counted): add_row's counts, without the row written out and read back.
  class Tally {
   public:
    explicit Tally(const BucketCounter& counter) : counter_(&counter) {}

    // Counts eight pixels: their exact values (lanes 0-3 and 4-7) and their float32 rounding.
    [[gnu::always_inline]] void operator()(Doubles head, Doubles tail, Floats keys) {
      if (!any_lane((head != head[0]) | (tail != head[0]))) {  // one value: one scalar count
        if (!(head[0] == flat_value_)) {
          flat_value_ = head[0];
          const int b = counter_->bucket(keys[0]);
          flat_count_ = counter_->decided_count(b, counter_->entries_[b], flat_value_);
        }
        sum_ += kLanes * flat_count_;
        above_lowest_ += flat_count_ > 0 ? kLanes : 0;
        return;
      }
      const Ints bucket = buckets(keys, counter_->lowest_, counter_->scale_, counter_->last_);
      const Ints entry = gather(counter_->entries_.data(), bucket);
      const Ints upper = at_least_entries(head, tail, counter_->limits_.data(), bucket);
      const Ints count = (((entry >> kAboveShift) & upper) | (entry & ~upper)) & kCountMask;
      const Ints crowded = (entry & kCrowded) != 0;
      if (any_lane(crowded)) [[unlikely]] {  // those lanes counted 0: their thresholds in turn
        for (int lane = 0; lane < kLanes; ++lane) {
          if (!crowded[lane]) continue;
          const int32_t exact = counter_->crowded_count(bucket[lane], lane < 4 ? head[lane] : tail[lane - 4]);
          sum_ += exact;
          above_lowest_ += exact > 0;
        }
      }
      counts_ += count;
      above_ -= count > 0;
      if (++vectors_ == kBlock / kLanes) flush();
    }

    // Adds the row's counts to `sum` and `above_lowest` (as add_row does).
    void add_to(int64_t& sum, int64_t& above_lowest) {
      flush();
      sum += sum_;
      above_lowest += above_lowest_;
    }

   private:
    void flush() {
      sum_ += lane_total(counts_);
      above_lowest_ += lane_total(above_);
      counts_ = Ints{};
      above_ = Ints{};
      vectors_ = 0;
    }

    const BucketCounter* counter_;  // a pointer: a Tally is copied into the pass's registers (maps.h blend)
    Ints counts_ = {}, above_ = {};
    int64_t vectors_ = 0, sum_ = 0, above_lowest_ = 0, flat_count_ = 0;
    T flat_value_ = std::numeric_limits<T>::quiet_NaN();
  };

 private:
  static constexpr int kBuckets = 1 << 14;
  static constexpr int kAboveShift = 15;
  static constexpr int32_t kCountMask = (1 << 15) - 1;
  // An entry: the thresholds in lower buckets (bits 0-14); for a bucket that holds one threshold,
  // also those plus its own (bits 15-29) and kThreshold; for one that holds several, kThreshold | kCrowded.
  static constexpr int32_t kThreshold = std::numeric_limits<int32_t>::min(), kCrowded = 1 << 30;

  // The count of a value in bucket b (entry `entry`): a shift picks the entry's lower or upper count
  // (no branch on the compare, which ties make unpredictable).
  int32_t decided_count(int b, int32_t entry, T value) const {
    if (entry & kCrowded) [[unlikely]] return crowded_count(b, value);
    const int shift = static_cast<int>(value >= limits_[b]) * kAboveShift;
    return (entry >> shift) & kCountMask;
  }

  // Monotone in the key (no value, NaN included, indexes outside the buckets); buckets() is the same
  // arithmetic on eight lanes, so both give the same bucket.
  int bucket(float key) const {
    float position = (key - lowest_) * scale_;
    position = position > 0 ? position : 0;
    position = position < last_ ? position : last_;
    return static_cast<int>(position);
  }

  [[gnu::always_inline]] static Ints buckets(Floats keys, float lowest, float scale, float last) {
    Floats position = (keys - lowest) * scale;
    position = position > 0 ? position : Floats{};
    position = position < last ? position : Floats{} + last;
    return __builtin_convertvector(position, Ints);
  }

  // The count of a value in a crowded bucket, by its thresholds in turn.
  int32_t crowded_count(int b, T value) const {
    int32_t j = first_[b];
    while (j < first_[b + 1] && value >= distinct_[j]) ++j;
    return at_or_below_[j];
  }

  std::vector<T> distinct_;            // the distinct thresholds, ascending
  std::vector<int32_t> at_or_below_;   // [j]: thresholds among the j lowest distinct ones
  std::vector<int32_t> first_;         // [b]: distinct thresholds in buckets below b
  std::vector<int32_t> entries_;       // [b]: see kThreshold
  std::vector<T> limits_;              // [b]: bucket b's one distinct threshold, or +inf
  std::vector<int32_t> pending_;       // add_row's columns whose bucket holds thresholds
  float lowest_ = 0, scale_ = 0, last_ = 0;
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
