// The pass for integer maps on one grid: an 8- or 16-bit prediction on the ground truth's grid,
// one channel each, with at most kMaxValues levels per map (decoded 8-bit predictions on 8- or
// 10-bit ground truth: what AViMoS scoring meets). A pixel's AUC-Judd count depends only on the
// prediction's level and its KLD term only on the pair of levels, so both are read from tables made
// once per frame (the counts from the exact prepared values, KLD's with the vector log); CC's sums
// are exact integer products of the levels, scaled once; SIM is one float min per pixel. No log and
// no division per pixel. Portable vector code (gathers are AVX2 instructions where the build has it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lanes.h"
#include "maps.h"
#include "terms.h"
#include "thresholds.h"

namespace salax_aim {

class IntegerPairs {
 public:
  // Levels per map the pass takes: products of two levels, summed over a block, stay in int32.
  static constexpr int64_t kMaxValues = 4096;

  // Whether the pass applies (and, with KLD, its table of pair terms is no larger than a frame).
  template <typename P, typename G>
  static bool apply(const RawMap<P>& pred, const RawMap<G>& gt, const Normaliser<P>& norm_p,
                    const Normaliser<G>& norm_g, bool kld) {
    // The shifted range decides (a shifted map is scored as its shifted copy would be).
    const int64_t values_p = norm_p.levels(), values_g = norm_g.levels();
    return pred.channels == 1 && gt.channels == 1 && pred.height == gt.height &&
           pred.width == gt.width && values_p <= kMaxValues && values_g <= kMaxValues &&
           (!kld || values_p * values_g <= gt.height * gt.width);
  }

  // The frame's sums (centred at the maps' means, so finish() shifts nothing). sum_p, sum_g: the
  // prepared maps' sums.
  template <typename P, typename G>
  FrameSums add(const RawMap<P>& pred, const RawMap<G>& gt, const Normaliser<P>& norm_p,
                const Normaliser<G>& norm_g, const ThresholdCounter<float>& counter, const Terms& terms,
                double sum_p, double sum_g, bool kld) {
    values_p_ = static_cast<int32_t>(int64_t{norm_p.high} - norm_p.low + 1);
    counts_by_value(norm_p, counter, at_or_below_);
    first_counted_ = static_cast<int32_t>(
        std::find_if(at_or_below_.begin(), at_or_below_.end(), [](int32_t c) { return c > 0; }) -
        at_or_below_.begin());
    const double step_p = level_step(norm_p), step_g = level_step(norm_g);
    if (kld) divergence_table(norm_p, norm_g, terms);
    Totals totals;
    const int64_t height = gt.height, width = gt.width;
    const auto low_p = norm_p.low, low_g = norm_g.low;
    const float sim_p = static_cast<float>(step_p / (sum_p + kStdEps));
    const float sim_g = static_cast<float>(step_g / (sum_g + kStdEps));
    for (int64_t y = 0; y < height; ++y) {
      const P* p = pred.row(y);
      const G* g = gt.row(y);
      if (kld)
        add_row<true>(p, g, width, low_p, low_g, sim_p, sim_g, totals);
      else
        add_row<false>(p, g, width, low_p, low_g, sim_p, sim_g, totals);
    }
    // sum (v - mean)^2 = (N sum v^2 - (sum v)^2) / N, exactly in integers, then scaled.
    const int64_t pixels = height * width;
    const auto centred = [pixels](int64_t products, int64_t sum_a, int64_t sum_b) {
      const __int128 exact = static_cast<__int128>(pixels) * products -
                             static_cast<__int128>(sum_a) * static_cast<__int128>(sum_b);
      return static_cast<double>(exact) / static_cast<double>(pixels);
    };
    FrameSums sums;
    sums.centre_p = sum_p / static_cast<double>(pixels);
    sums.centre_g = sum_g / static_cast<double>(pixels);
    sums.pp = centred(totals.pp, totals.sum_p, totals.sum_p) * step_p * step_p;
    sums.gg = centred(totals.gg, totals.sum_g, totals.sum_g) * step_g * step_g;
    sums.pg = centred(totals.pg, totals.sum_p, totals.sum_g) * step_p * step_g;
    sums.low_p = static_cast<double>(norm_p(norm_p.low));
    sums.high_p = static_cast<double>(norm_p(norm_p.high));
    sums.low_g = static_cast<double>(norm_g(norm_g.low));
    sums.high_g = static_cast<double>(norm_g(norm_g.high));
    sums.at_or_below = totals.at_or_below;
    sums.above_lowest = totals.above_lowest;
    sums.intersection = totals.intersection;
    sums.divergence = totals.divergence;
    return sums;
  }

 private:
  struct Totals {
    int64_t sum_p = 0, sum_g = 0, pp = 0, gg = 0, pg = 0, at_or_below = 0, above_lowest = 0;
    double intersection = 0.0, divergence = 0.0;
  };

  // The prepared value per level (the map is linear in the level): CC and SIM scale by it.
  template <typename T>
  static double level_step(const Normaliser<T>& norm) {
    if (norm.high == norm.low) return 0.0;
    return static_cast<double>(norm(norm.high)) / static_cast<double>(norm.high - norm.low);
  }

  // KLD's term of each pair of levels, [(g - low_g) * values_p + (p - low_p)], from the exact
  // prepared values, eight at a time with the vector log.
  template <typename P, typename G>
  void divergence_table(const Normaliser<P>& norm_p, const Normaliser<G>& norm_g, const Terms& terms) {
    const int32_t values_g = static_cast<int32_t>(int64_t{norm_g.high} - norm_g.low + 1);
    prepared_p_.resize(static_cast<size_t>(values_p_) + kLanes);
    for (int32_t b = 0; b < values_p_ + kLanes; ++b)
      prepared_p_[b] = norm_p(static_cast<Wide<P>>(norm_p.low + std::min(b, values_p_ - 1)));
    divergence_.resize(static_cast<size_t>(values_g) * values_p_ + kLanes);
    for (int32_t a = 0; a < values_g; ++a) {
      const Floats g = Floats{} + norm_g(static_cast<Wide<G>>(norm_g.low + a));
      float* row = &divergence_[static_cast<size_t>(a) * values_p_];
      // A row's last vector spills into the next row, which overwrites it (the last: into slack).
      for (int32_t b = 0; b < values_p_; b += kLanes) {
        const Floats terms_of_row = terms.divergence(load(&prepared_p_[b]), g);
        std::memcpy(row + b, &terms_of_row, sizeof terms_of_row);
      }
    }
  }

  // One row, eight pixels a step: integer sums flushed into int64 and float sums into float64
  // every kBlock pixels.
  template <bool Kld, typename P, typename G>
  void add_row(const P* p, const G* g, int64_t width, Wide<P> low_p, Wide<G> low_g, float sim_p,
               float sim_g, Totals& totals) const {
    const int32_t* at_or_below = at_or_below_.data();
    const float* divergence = divergence_.data();
    int64_t x = 0;
    for (; x + kLanes <= width;) {
      const int64_t stop = std::min(width, x + kBlock);
      Ints sum_p = {}, sum_g = {}, pp = {}, gg = {}, pg = {}, counts = {}, above = {};
      Floats intersection = {}, divergence_sum = {};
      for (; x + kLanes <= stop; x += kLanes) {
        const Ints b = load_ints(p + x) - static_cast<int32_t>(low_p);
        const Ints a = load_ints(g + x) - static_cast<int32_t>(low_g);
        sum_p += b;
        sum_g += a;
        pp += b * b;
        gg += a * a;
        pg += b * a;
        counts += gather(at_or_below, b);
        above -= b >= first_counted_;
        const Floats sp = __builtin_convertvector(b, Floats) * sim_p;
        const Floats sg = __builtin_convertvector(a, Floats) * sim_g;
        intersection += sg < sp ? sg : sp;
        if constexpr (Kld) divergence_sum += gather(divergence, a * values_p_ + b);
      }
      totals.sum_p += lane_total(sum_p);
      totals.sum_g += lane_total(sum_g);
      totals.pp += lane_total(pp);
      totals.gg += lane_total(gg);
      totals.pg += lane_total(pg);
      totals.at_or_below += lane_total(counts);
      totals.above_lowest += lane_total(above);
      totals.intersection += lane_total(intersection);
      if constexpr (Kld) totals.divergence += lane_total(divergence_sum);
    }
    for (; x < width; ++x) {
      const int32_t b = static_cast<int32_t>(p[x] - low_p), a = static_cast<int32_t>(g[x] - low_g);
      totals.sum_p += b;
      totals.sum_g += a;
      totals.pp += int64_t{b} * b;
      totals.gg += int64_t{a} * a;
      totals.pg += int64_t{b} * a;
      totals.at_or_below += at_or_below[b];
      totals.above_lowest += b >= first_counted_;
      totals.intersection += std::min(static_cast<float>(b) * sim_p, static_cast<float>(a) * sim_g);
      if constexpr (Kld) totals.divergence += divergence[a * values_p_ + b];
    }
  }

  int32_t values_p_ = 0, first_counted_ = 0;  // first_counted_: the lowest level with a count
  std::vector<int32_t> at_or_below_;          // [p - low_p]: thresholds at or below the level
  std::vector<float> prepared_p_;             // [p - low_p]: the prepared value (KLD's table)
  std::vector<float> divergence_;             // [(g - low_g) * values_p + p - low_p]: KLD's term
};

}  // namespace salax_aim
