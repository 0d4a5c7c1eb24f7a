// The CPU kernel of salax.metrics.aim_frame_scores (entry points: salax/metrics/native.py): it scores
// a batch of frames by the AIM rules (salax/metrics/rules.py holds the rules and the pure-JAX
// implementation this mirrors), as an XLA FFI custom call or on host arrays (score_arrays).
//
// Why native: XLA:CPU runs one thread per call and does not vectorise the compare-and-select, gathers
// and sorts that AUC-Judd needs. Here a frame is a read of each map for its extremes and sum, then one
// streaming pass over its rows (a resized prediction keeps its prepared source map and the two
// horizontal rows being blended), and frames are spread over threads.
//
// The sources, one concept each (this file is the one translation unit):
//   lanes.h         eight-lane vectors, portable (AVX2 registers where the build has AVX2)
//   maps.h          the AIM preparation of a raw map and OpenCV's INTER_LINEAR resize, row by row
//   thresholds.h    AUC-Judd's exact count of the thresholds at or below each pixel
//   terms.h         the per-pixel terms of CC, NSS, SIM and KLD and a frame's sums
//   pairs.h         integer maps on one grid: per-pixel terms read from tables made per frame
//   frame_scorer.h  one frame's scores and checks, the output columns, a batch over threads
//   bindings.cc     the XLA FFI handler, the host-array call and the Python module
//
// Per frame: the AIM preparation of both maps and the resize of the prediction are recomputed row by
// row with exactly the arithmetic of salax/metrics/prepare.py (float32 or float64, by its rule). The map sums that SIM and KLD
// divide by are known before the pass (from the raw sums, and the resize's weights), so one pass
// takes everything: the centred sums of CC and NSS, SIM, KLD and the AUC-Judd counts. Reductions end
// in float64, so the results are at least as accurate as the blocked float32 sums of the JAX path.

#include <Python.h>

#include <cstdint>
#include <optional>
#include <string>

#include "frame_scorer.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace salax_aim {
namespace {

// The kernel's element type of an XLA buffer, or nothing.
std::optional<MapType> map_type(ffi::DataType type) {
  switch (type) {
    case ffi::DataType::U8: return MapType::kU8;
    case ffi::DataType::U16: return MapType::kU16;
    case ffi::DataType::F32: return MapType::kF32;
    case ffi::DataType::F64: return MapType::kF64;
    default: return std::nullopt;
  }
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

// Why a truth's shift (layout bits 8-11) cannot be read, or empty.
std::string shift_problem(uint32_t layout, MapType type, int64_t channels) {
  if (truth_shift(layout) > 0 && (type != MapType::kU16 || channels != 1))
    return "a shifted ground truth must be one-channel uint16";
  return "";
}

// The message of a frame that could not be scored.
std::string batch_problem(const BatchProblem& problem) {
  return "frame " + std::to_string(problem.frame) + ": " + describe(problem.problem);
}

ffi::Error AimScoresImpl(ffi::AnyBuffer pred, ffi::AnyBuffer gt, ffi::Buffer<ffi::S32> fixations,
                         ffi::Buffer<ffi::S32> counts, bool corrected, int64_t wanted, int64_t layout, int64_t threads,
                         ffi::ResultBuffer<ffi::F32> scores) {
  const auto pd = pred.dimensions(), gd = gt.dimensions(), fd = fixations.dimensions();
  if (pd.size() != 4 || gd.size() != 4 || fd.size() != 3)
    return ffi::Error::InvalidArgument("aim_scores: expected pred [B,h,w,C], gt [B,H,W,C], "
                                       "fixations [B,N,2]");
  const auto pred_type = map_type(pred.element_type()), gt_type = map_type(gt.element_type());
  if (!pred_type || !gt_type)
    return ffi::Error::InvalidArgument("aim_scores: maps must be uint8, uint16, float32 or float64");
  std::string problem = shape_problem(pd.begin(), gd.begin(), fd.begin(),
                                      static_cast<int64_t>(counts.element_count()));
  if (problem.empty()) problem = shift_problem(static_cast<uint32_t>(layout), *gt_type, gd[3]);
  if (!problem.empty()) return ffi::Error::InvalidArgument("aim_scores: " + problem);
  // XLA's buffers are dense: rows follow one another.
  const BatchProblem failed = score_batch(
      {pred.untyped_data(), *pred_type, pd[1], pd[2], pd[3], (layout & kPredChannelAxis) != 0, pd[2] * pd[3],
       pd[1] * pd[2] * pd[3]},
      {gt.untyped_data(), *gt_type, gd[1], gd[2], gd[3], (layout & kTruthChannelAxis) != 0, gd[2] * gd[3],
       gd[1] * gd[2] * gd[3], truth_shift(static_cast<uint32_t>(layout))},
      fixations.typed_data(), fd[1], counts.typed_data(), gd[0], corrected, static_cast<uint32_t>(wanted), threads,
      scores->typed_data());
  if (failed.frame >= 0) return ffi::Error::InvalidArgument("aim_scores: " + batch_problem(failed));
  return ffi::Error::Success();
}

// A buffer of a Python object (C-contiguous, or `strided`: with its strides), released with the holder.
class HeldBuffer {
 public:
  bool hold(PyObject* object, bool writable, bool strided = false) {
    const int flags = (strided ? PyBUF_STRIDES : PyBUF_C_CONTIGUOUS) | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
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

// The kernel's element type of a buffer format character, or nothing.
std::optional<MapType> map_type(char format) {
  switch (format) {
    case 'B': return MapType::kU8;
    case 'H': return MapType::kU16;
    case 'f': return MapType::kF32;
    case 'd': return MapType::kF64;
    default: return std::nullopt;
  }
}

// A map buffer [B, H, W, C] as the kernel reads it, or why it cannot: each row (W and C) contiguous,
// rows and frames any whole number of elements apart, >= 0 (a decoder's plane with padded rows is
// read in place). The strides of axes of length 1 are never used.
std::string strided_batch(const Py_buffer& view, MapType type, bool channel_axis, MapBatch& batch) {
  const Py_ssize_t* shape = view.shape;
  const Py_ssize_t item = view.itemsize;
  int64_t strides[4];
  for (int axis = 3; axis >= 0; --axis) {
    const Py_ssize_t dense = axis == 3 ? item : strides[axis + 1] * item * shape[axis + 1];
    const Py_ssize_t stride = view.strides == nullptr || shape[axis] == 1 ? dense : view.strides[axis];
    if (stride < 0 || stride % item != 0) return "map strides must be whole, non-negative numbers of elements";
    strides[axis] = stride / item;
  }
  if (strides[3] != 1 || strides[2] != shape[3])
    return "a map's rows (its W and C axes) must be contiguous";
  batch = {view.buf, type, shape[1], shape[2], shape[3], channel_axis, strides[1], strides[0]};
  return "";
}

// score_arrays(pred, gt, fixations, counts, out, corrected, wanted, layout, threads): the same scoring on
// host arrays, without XLA (no copy into device buffers), the GIL released while it runs. The maps
// may have strided rows (strided_batch). A frame that cannot be scored raises ValueError naming it.
PyObject* ScoreArrays(PyObject*, PyObject* args) {
  PyObject *pred_object, *gt_object, *fixations_object, *counts_object, *out_object;
  int corrected;
  unsigned int wanted, layout;
  Py_ssize_t threads;
  if (!PyArg_ParseTuple(args, "OOOOOpIIn", &pred_object, &gt_object, &fixations_object,
                        &counts_object, &out_object, &corrected, &wanted, &layout, &threads))
    return nullptr;
  HeldBuffer pred, gt, fixations, counts, out;
  if (!pred.hold(pred_object, false, true) || !gt.hold(gt_object, false, true) ||
      !fixations.hold(fixations_object, false) || !counts.hold(counts_object, false) ||
      !out.hold(out_object, true))
    return nullptr;
  const Py_buffer &p = pred.view(), &g = gt.view(), &f = fixations.view(), &c = counts.view();
  std::string problem;
  if (p.ndim != 4 || g.ndim != 4 || f.ndim != 3 || c.ndim != 1 || out.view().ndim != 2)
    problem = "expected pred [B,h,w,C], gt [B,H,W,C], fixations [B,N,2], counts [B], out [B,5]";
  else if (!map_type(pred.format()) || !map_type(gt.format()))
    problem = "maps must be uint8, uint16, float32 or float64";
  else if (fixations.format() != 'i' || counts.format() != 'i' || out.format() != 'f')
    problem = "fixations and counts must be int32, out float32";
  else if (out.view().shape[0] != g.shape[0] || out.view().shape[1] != kNumMetrics)
    problem = "out must be [B, 5]";
  else
    problem = shape_problem(p.shape, g.shape, f.shape, c.shape[0]);
  if (problem.empty()) problem = shift_problem(layout, *map_type(gt.format()), g.shape[3]);
  MapBatch pred_batch{}, gt_batch{};
  if (problem.empty())
    problem = strided_batch(p, *map_type(pred.format()), (layout & kPredChannelAxis) != 0, pred_batch);
  if (problem.empty())
    problem = strided_batch(g, *map_type(gt.format()), (layout & kTruthChannelAxis) != 0, gt_batch);
  if (!problem.empty()) {
    PyErr_SetString(PyExc_ValueError, ("score_arrays: " + problem).c_str());
    return nullptr;
  }
  gt_batch.shift = truth_shift(layout);
  BatchProblem failed;
  Py_BEGIN_ALLOW_THREADS
  failed = score_batch(pred_batch, gt_batch, static_cast<const int32_t*>(f.buf), f.shape[1],
                       static_cast<const int32_t*>(c.buf), g.shape[0], corrected != 0, wanted, threads,
                       static_cast<float*>(out.view().buf));
  Py_END_ALLOW_THREADS
  if (failed.frame >= 0) {  // ValueError((frame, problem)): salax.metrics.native words it
    PyObject* details = Py_BuildValue("(Ls)", static_cast<long long>(failed.frame), describe(failed.problem));
    if (details != nullptr) PyErr_SetObject(PyExc_ValueError, details);
    Py_XDECREF(details);
    return nullptr;
  }
  Py_RETURN_NONE;
}

}  // namespace
}  // namespace salax_aim

XLA_FFI_DEFINE_HANDLER_SYMBOL(SalaxAimScores, salax_aim::AimScoresImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Attr<bool>("corrected")
                                  .Attr<int64_t>("wanted")
                                  .Attr<int64_t>("layout")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F32>>());

static PyMethodDef aim_scores_methods[] = {
    {"score_arrays", salax_aim::ScoreArrays, METH_VARARGS,
     "score_arrays(pred, gt, fixations, counts, out, corrected, wanted, layout, threads): scores into out [B, 5]."},
    {nullptr, nullptr, 0, nullptr}};

// The module hands the handler ('aim_scores') to jax.ffi.register_ffi_target, and offers the same
// scoring on host arrays (see salax/metrics/native.py).
static PyModuleDef aim_scores_module = {
    PyModuleDef_HEAD_INIT, "_aim_scores", "The CPU AIM scoring kernel (see salax/metrics/native.py).",
    -1, aim_scores_methods};

PyMODINIT_FUNC PyInit__aim_scores(void) {
#if defined(__AVX2__) && (defined(__x86_64__) || defined(__i386__))
  // Built for AVX2 and FMA (setup.py does so on x86 unless SALAX_AVX2=0): refuse to load on an older
  // CPU, and salax scores with its pure-JAX code instead.
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    PyErr_SetString(PyExc_ImportError,
                    "salax.metrics._aim_scores was built for AVX2 and FMA, which this CPU lacks "
                    "(SALAX_AVX2=0 at install builds the portable kernel)");
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
  PyObject* columns = PyTuple_New(salax_aim::kNumMetrics);
  for (int c = 0; columns != nullptr && c < salax_aim::kNumMetrics; ++c)
    PyTuple_SET_ITEM(columns, c, PyUnicode_FromString(salax_aim::kColumnNames[c]));
  if (columns == nullptr || PyModule_AddObject(module, "COLUMNS", columns) < 0) {
    Py_XDECREF(columns);
    Py_DECREF(module);
    return nullptr;
  }
#if defined(__AVX2__)
  constexpr long kAvx2 = 1;
#else
  constexpr long kAvx2 = 0;
#endif
  // Which vector code was built (SALAX_AVX2=0 at build time gives the portable one).
  if (PyModule_AddIntConstant(module, "AVX2", kAvx2) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}

