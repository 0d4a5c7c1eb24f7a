// The per-pixel terms of CC, NSS, SIM and KLD and the sums a frame's pass adds them into.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "lanes.h"

namespace salax_aim {

constexpr double kStdEps = 1e-7;        // NSS, CC and SIM epsilon
constexpr float kKldEps = 2.2204e-16f;  // the organisers' KLD epsilon

// What one pass over a frame adds up.
struct FrameSums {
  double centre_p = 0, centre_g = 0;  // the centres of pp, gg and pg
  double pp = 0, gg = 0, pg = 0;      // products of the maps minus their centres
  double intersection = 0, divergence = 0;
  int64_t at_or_below = 0, above_lowest = 0;  // AUC-Judd: over pixels, thresholds <= pixel; > 0
  // The maps' extremes: the exact mean lies between them, so finish() clips the computed one (a
  // constant map then centres to exactly 0, and its NSS and CC are 0 by the formulas).
  double low_p = std::numeric_limits<double>::infinity(), high_p = -std::numeric_limits<double>::infinity();
  double low_g = std::numeric_limits<double>::infinity(), high_g = -std::numeric_limits<double>::infinity();
};

// A ground-truth row for Terms::add_row: prepared values (a padded float32 buffer), eight at a time.
struct PreparedRow {
  const float* values;
  [[gnu::always_inline]] Floats operator()(int64_t x) const { return load(values + x); }
  // The lanes from x to the row's end, then anything (the buffer is padded).
  Floats tail(int64_t x) const { return load(values + x); }
};

// A one-channel integer ground-truth row read in place, prepared as it is read: (value - low) in
// float32 times scale, Normaliser's rule (no buffer to fill and read back).
template <typename G>
struct IntegerRow {
  const G* raw;
  int64_t width;
  int32_t low;
  float scale;
  [[gnu::always_inline]] Floats operator()(int64_t x) const {
    return __builtin_convertvector(load_ints(raw + x) - low, Floats) * scale;
  }
  // The lanes from x to the row's end, then zeros (never reading past the row: it may end the frame).
  Floats tail(int64_t x) const {
    G rest[kLanes] = {};
    std::copy(raw + x, raw + width, rest);
    Floats out = {};
    for (int64_t lane = 0; lane < width - x; ++lane) out[lane] = static_cast<float>(rest[lane] - low) * scale;
    return out;
  }
};

// `totals` plus the lane_total of each of the first four blocks (lane t: block t), in one vector: per
// block the same float64 adds in the same order (0, then lanes 0 to 7), by a transpose of the blocks.
[[gnu::always_inline]] inline Doubles lane_totals(const Floats* block, Doubles totals) {
  const Floats t0 = __builtin_shufflevector(block[0], block[1], 0, 8, 1, 9, 4, 12, 5, 13);
  const Floats t1 = __builtin_shufflevector(block[0], block[1], 2, 10, 3, 11, 6, 14, 7, 15);
  const Floats t2 = __builtin_shufflevector(block[2], block[3], 0, 8, 1, 9, 4, 12, 5, 13);
  const Floats t3 = __builtin_shufflevector(block[2], block[3], 2, 10, 3, 11, 6, 14, 7, 15);
  // Lane l of the four blocks: column l % 4, half l / 4.
  const Floats columns[4] = {
      __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13),
      __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15),
      __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13),
      __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15),
  };
  Doubles total = {};
  for (int c = 0; c < 4; ++c)
    total += __builtin_convertvector(__builtin_shufflevector(columns[c], columns[c], 0, 1, 2, 3), Doubles);
  for (int c = 0; c < 4; ++c)
    total += __builtin_convertvector(__builtin_shufflevector(columns[c], columns[c], 4, 5, 6, 7), Doubles);
  return totals + total;
}

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
  // KLD's terms (a log per pixel) only when Kld; the maps' extremes only when Extremes (the caller
  // may know them).
  template <bool Kld, bool Extremes, typename Truth>
  void add_row(const float* p, const Truth& g, int64_t width, FrameSums& sums) const {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    Floats low_p = Floats{} + kInf, high_p = Floats{} - kInf, low_g = Floats{} + kInf, high_g = Floats{} - kInf;
    Doubles totals = {sums.pp, sums.gg, sums.pg, sums.intersection};
    for (int64_t x = 0; x < width; x += kBlock) {
      Floats block[kTerms] = {};
      const int64_t stop = std::min(x + kBlock, width);
      int64_t i = x;
      for (; i + kLanes <= stop; i += kLanes) {
        const Floats vp = load(p + i), vg = g(i);
        add<Kld>(vp, vg, block);
        if constexpr (Extremes) {
          low_p = vp < low_p ? vp : low_p;
          high_p = vp > high_p ? vp : high_p;
          low_g = vg < low_g ? vg : low_g;
          high_g = vg > high_g ? vg : high_g;
        }
      }
      if (i < stop) {
        const Ints keep = first_lanes(stop - i);
        Floats tail[kTerms] = {};
        const Floats vg = g.tail(i);
        add<Kld>(load(p + i), vg, tail);
        for (int t = 0; t < kTerms; ++t) block[t] += select(keep, tail[t], Floats{});
        for (int64_t lane = 0; lane < stop - i; ++lane) {
          low_p[0] = std::min(low_p[0], p[i + lane]);
          high_p[0] = std::max(high_p[0], p[i + lane]);
          low_g[0] = std::min(low_g[0], vg[lane]);
          high_g[0] = std::max(high_g[0], vg[lane]);
        }
      }
      totals = lane_totals(block, totals);
      if constexpr (Kld) sums.divergence += lane_total(block[4]);  // else its block is all 0
    }
    sums.pp = totals[0];
    sums.gg = totals[1];
    sums.pg = totals[2];
    sums.intersection = totals[3];
    if (!Extremes) return;
    for (int lane = 0; lane < kLanes; ++lane) {
      sums.low_p = std::min<double>(sums.low_p, low_p[lane]);
      sums.high_p = std::max<double>(sums.high_p, high_p[lane]);
      sums.low_g = std::min<double>(sums.low_g, low_g[lane]);
      sums.high_g = std::max<double>(sums.high_g, high_g[lane]);
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

  template <bool Kld>
  [[gnu::always_inline]] void add(Floats p, Floats g, Floats* block) const {
    const Floats dp = p - centre_p_, dg = g - centre_g_;
    block[0] += dp * dp;
    block[1] += dg * dg;
    block[2] += dp * dg;
    block[3] += similarity(p, g);
    // Where the ground truth is 0 (dark background, common) KLD adds 0: skip the log.
    if (Kld && any_lane(g != 0.0f)) block[4] += divergence(p, g);
  }

  float centre_p_, centre_g_, sim_p_, sim_g_, kld_p_, kld_g_;
};

}  // namespace salax_aim
