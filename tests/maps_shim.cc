// A C entry to salax/metrics/csrc/maps.h for tests/test_metrics_exact.py (built there with the
// kernel's flags): one raw map prepared and resized, every row's exact values written out.
#include <cstdint>

#include "maps.h"

namespace {

template <typename T>
void prepared_resized(const T* data, int64_t height, int64_t width, int64_t channels, bool channel_axis,
                      int64_t out_height, int64_t out_width, double* out) {
  using namespace salax_aim;
  const RawMap<T> map{data, height, width, channels, channel_axis, width * channels};
  const Normaliser<T> norm = normaliser(map);
  PredictionRows rows;
  rows.load(prepare(map, norm), height, width, out_height, out_width);
  for (int64_t y = 0; y < out_height; ++y) {
    const double* row = rows.row_exact(y);
    for (int64_t x = 0; x < out_width; ++x) out[y * out_width + x] = row[x];
  }
}

}  // namespace

// dtype: 0 uint8, 1 uint16, 2 float32 (the kernel's map types); channel_axis: the map is [H, W, C], not
// [H, W]. Returns 0, or 1 for an unknown dtype.
extern "C" int salax_prepared_resized(const void* data, int dtype, int64_t height, int64_t width,
                                      int64_t channels, int channel_axis, int64_t out_height, int64_t out_width,
                                      double* out) {
  switch (dtype) {
    case 0:
      prepared_resized(static_cast<const uint8_t*>(data), height, width, channels, channel_axis != 0, out_height,
                       out_width, out);
      return 0;
    case 1:
      prepared_resized(static_cast<const uint16_t*>(data), height, width, channels, channel_axis != 0, out_height,
                       out_width, out);
      return 0;
    case 2:
      prepared_resized(static_cast<const float*>(data), height, width, channels, channel_axis != 0, out_height,
                       out_width, out);
      return 0;
    default: return 1;
  }
}
