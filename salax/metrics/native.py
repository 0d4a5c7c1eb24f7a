"""The native CPU scoring kernel behind `salax.metrics.aim_frame_scores` (sources in csrc/).

XLA:CPU runs the pure-JAX rules on one thread and cannot vectorise AUC-Judd's counting, so on CPUs
a C++ kernel (`salax.metrics._aim_scores`, built at install) scores whole batches instead: same rules,
same float32 preparation and resize, sums in float64, frames spread over the process's cores. Two
doors: `batch_scores`, an XLA FFI call usable inside `jax.jit`, and `score_arrays` for host arrays,
which skips XLA and so the copy of every frame into its buffers. The kernel is optional: without a
compiler at install time `available()` is False, and so it is when the kernel's score columns are
not `METRIC_NAMES` (a stale build: a warning says so, and XLA scores instead).
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from salax.metrics.rules import METRIC_NAMES

try:
    from salax.metrics import _aim_scores
except ImportError:  # not built, or built for AVX2 and this CPU lacks it
    _aim_scores = None

TARGET = "salax_aim_scores"
READABLE_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)  # others are converted (`_as_frames`)
_MISSING = ("salax.metrics._aim_scores is not available: reinstall salax with a C++20 compiler (g++ or "
            "clang++) on the PATH, or score with implementation='xla'")


def column_problem(kernel) -> str | None:
    """Why a built kernel's score columns cannot be used (they must be METRIC_NAMES), or None."""
    columns = tuple(getattr(kernel, "COLUMNS", ()))
    if columns != METRIC_NAMES:
        return (f"salax.metrics._aim_scores writes the columns {columns}, but salax.metrics names "
                f"{METRIC_NAMES}: the kernel is stale; rebuild it (python setup.py build_ext --inplace) "
                "or reinstall salax. Scoring with implementation='xla' instead.")
    return None


if _aim_scores is not None and (_PROBLEM := column_problem(_aim_scores)) is not None:
    warnings.warn(_PROBLEM, RuntimeWarning, stacklevel=2)
    _aim_scores = None


@functools.cache
def available() -> bool:
    """Whether the kernel was built, runs on this CPU and writes METRIC_NAMES; registers it with XLA."""
    if _aim_scores is None:
        return False
    jax.ffi.register_ffi_target(TARGET, _aim_scores.aim_scores, platform="cpu")
    return True


def built_for_avx2() -> bool:
    """Whether the built kernel runs AVX2 code (False: the portable build, SALAX_AVX2=0 or not x86)."""
    if not available():
        raise RuntimeError(_MISSING)
    return bool(_aim_scores.AVX2)


def wanted_columns(names: Sequence[str]) -> int:
    """The kernel's bit mask of the columns asked for (by metric name)."""
    return sum(1 << METRIC_NAMES.index(name) for name in set(names))


def layout(pred, gt) -> int:
    """The kernel's bits for maps given with a channel axis ([B, H, W, C], even C = 1): the AIM
    preparation of such a map follows the channel-mean rule (see salax.metrics.prepare)."""
    return (pred.ndim == 4) | ((gt.ndim == 4) << 1)


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def score_arrays(pred: np.ndarray, gt: np.ndarray, fixations: np.ndarray, num_fixations: np.ndarray,
                 *, corrected: bool, metrics: Sequence[str] = METRIC_NAMES, threads: int | None = None,
                 first_frame: int = 0, truth_shift: int = 0) -> np.ndarray:
    """float32 [B, 5] scores of host arrays (columns in `METRIC_NAMES` order; those not in `metrics`
    are NaN and cost nothing).

    Same inputs as `batch_scores`. The maps are read in place when they are of a dtype the kernel reads
    and C-contiguous, or, for uint8 and uint16 maps, when each row is (W and C contiguous; rows and
    frames any non-negative whole number of elements apart: a decoder's plane with padded rows, as
    `plane[:, :width]`); else they are converted once. A frame the kernel refuses (NaN or inf in a
    float map) raises a ValueError naming it, counted from `first_frame`.

    `truth_shift` (0..15): a one-channel uint16 `gt` is scored as if its values were `gt << truth_shift`,
    bit for bit, without that copy (a 10-bit luma plane read as the 16-bit PNG the ffmpeg CLI writes of
    it: shift 6). A frame whose shifted values would not fit in 16 bits raises a ValueError naming it.
    """
    if not available():
        raise RuntimeError(_MISSING)
    pred, gt = (np.asarray(raw) for raw in (pred, gt))
    flags = layout(pred, gt) | _shift_bits(gt, truth_shift)
    pred, gt = (_in_place(_as_frames(raw)) for raw in (pred, gt))
    out = np.empty((gt.shape[0], len(METRIC_NAMES)), np.float32)
    try:
        _aim_scores.score_arrays(pred, gt, np.ascontiguousarray(fixations, np.int32),
                                 np.ascontiguousarray(num_fixations, np.int32), out, bool(corrected),
                                 wanted_columns(metrics), flags, threads or default_threads())
    except ValueError as error:
        if len(error.args) != 2:  # a shape or dtype the kernel names itself
            raise
        frame, problem = error.args
        raise ValueError(f"frame {first_frame + frame}: {problem}") from None
    return out


def check_truth_shift(gt, shift: int) -> None:
    """Raises ValueError unless `gt` (NumPy or JAX, [B, H, W] or [B, H, W, C]) can be read shifted by
    `shift`: 0..15, and a shift above 0 needs a one-channel uint16 map (a 10-bit plane). Whether the
    shifted values fit in 16 bits is checked per frame, by the kernel."""
    if not 0 <= shift <= 15:
        raise ValueError(f"truth_shift must be in 0..15, got {shift}")
    if shift and (np.dtype(gt.dtype) != np.uint16 or (gt.ndim == 4 and gt.shape[-1] != 1)):
        raise ValueError(f"truth_shift needs a one-channel uint16 ground truth, got {gt.dtype} {list(gt.shape)}")


def _shift_bits(gt: np.ndarray, shift: int) -> int:
    """The kernel's layout bits of a truth shift (bits 8-11), checked."""
    check_truth_shift(gt, shift)
    return shift << 8


def _in_place(frames: np.ndarray) -> np.ndarray:
    """[B, H, W, C] frames as the kernel reads them: integer maps whose rows are contiguous as they are
    (strided rows and frames are read in place), others C-contiguous. Float maps are copied: the kernel
    sums a strided map row by row, which could round a float sum differently from the contiguous map."""
    item = frames.itemsize
    dense = (frames.shape[3] * item, item)  # the strides of W and C
    rows_contiguous = all(
        length == 1 or (stride == dense[axis - 2] if axis >= 2 else stride >= 0 and stride % item == 0)
        for axis, (length, stride) in enumerate(zip(frames.shape, frames.strides)))
    if frames.dtype.kind == "u" and rows_contiguous:
        return frames
    return np.ascontiguousarray(frames)


def _as_frames(raw):
    """[B, H, W] or [B, H, W, C] (NumPy or JAX) of any map dtype -> [B, H, W, C] of a dtype the kernel
    reads, holding what prepare.py's rule prepares alike: one-channel int8/int16/bool maps shifted
    into uint8/uint16 (min-max removes the shift exactly), float16 widened to float32, other integers
    and multi-channel signed or bool maps to float64 (exact channel sums, as the rule takes them)."""
    one_channel = raw.ndim == 3
    if one_channel:
        raw = raw[..., None]
    dtype = np.dtype(raw.dtype)
    if dtype in READABLE_DTYPES:
        return raw
    if one_channel and (dtype == np.bool_ or (dtype.kind == "i" and dtype.itemsize <= 2)):
        unsigned, shift = (np.uint8, 128) if dtype.itemsize == 1 else (np.uint16, 32768)
        return (raw.astype(np.int32) + (0 if dtype == np.bool_ else shift)).astype(unsigned)
    if dtype.kind == "f" and dtype.itemsize < 4:
        return raw.astype(np.float32)
    return raw.astype(np.float64)


def batch_scores(pred: jax.Array, gt: jax.Array, fixations: jax.Array, num_fixations: jax.Array,
                 *, corrected: bool, metrics: Sequence[str] = METRIC_NAMES,
                 threads: int | None = None) -> jax.Array:
    """float32 [B, 5] scores (columns in `METRIC_NAMES` order, NaN for those not in `metrics`);
    callable inside jit.

    Takes raw maps like `aim_frame_scores` and int32 fixations [B, N, 2] inside the grid (the caller
    checks them, and that float maps are finite: the kernel fails the call on NaN or inf). Frames
    run in parallel on `threads` cores (default: all this process may use).
    """
    if not available():
        raise RuntimeError(_MISSING)
    flags = layout(pred, gt)
    pred, gt = _as_frames(pred), _as_frames(gt)
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((gt.shape[0], len(METRIC_NAMES)), jnp.float32),
                            vmap_method="sequential")
    return call(pred, gt, fixations.astype(jnp.int32), num_fixations.astype(jnp.int32),
                corrected=np.bool_(corrected), wanted=np.int64(wanted_columns(metrics)), layout=np.int64(flags),
                threads=np.int64(threads or default_threads()))
