"""The native CPU scoring kernel behind `salax.metrics.aim_frame_scores`.

XLA:CPU runs the pure-JAX metrics on one thread and cannot vectorise AUC-Judd's counting, so on CPUs
a C++ kernel (salax/_aim_scores.cc, built at install) scores whole batches instead: same rules, same
float32 preparation and resize, sums in float64, frames spread over the process's cores. Two doors:
`batch_scores`, an XLA FFI call usable inside `jax.jit`, and `score_arrays` for host arrays, which
skips XLA and so the copy of every frame into its buffers. The kernel is optional: without a
compiler at install time (or on an x86 CPU without AVX2) `available()` is False.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

TARGET = "salax_aim_scores"
READABLE_DTYPES = (np.uint8, np.uint16, np.float32)  # other dtypes are cast to float32 first
_MISSING = ("salax._aim_scores is not available: reinstall salax with a C++20 compiler (g++ or "
            "clang++) on the PATH (on x86 the CPU needs AVX2), or score with implementation='xla'")


@functools.cache
def available() -> bool:
    """Whether the kernel was built and runs on this CPU; registers it with XLA the first time."""
    try:
        from salax import _aim_scores
    except ImportError:  # not built, or built for AVX2 and this CPU lacks it
        return False
    jax.ffi.register_ffi_target(TARGET, _aim_scores.aim_scores, platform="cpu")
    return True


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def score_arrays(pred: np.ndarray, gt: np.ndarray, fixations: np.ndarray, num_fixations: np.ndarray,
                 *, corrected: bool, threads: int | None = None) -> np.ndarray:
    """float32 [B, 5] scores of host arrays (columns in `metrics.METRIC_NAMES` order).

    Same inputs as `batch_scores`; the arrays are read in place when they are C-contiguous and of a
    dtype the kernel reads (else converted once).
    """
    if not available():
        raise RuntimeError(_MISSING)
    from salax import _aim_scores

    pred, gt = (np.ascontiguousarray(_as_frames(np.asarray(raw))) for raw in (pred, gt))
    out = np.empty((gt.shape[0], 5), np.float32)
    _aim_scores.score_arrays(pred, gt, np.ascontiguousarray(fixations, np.int32),
                             np.ascontiguousarray(num_fixations, np.int32), out,
                             bool(corrected), threads or default_threads())
    return out


def _as_frames(raw):
    """[B, H, W] or [B, H, W, C] (NumPy or JAX) of any dtype -> [B, H, W, C] the kernel reads."""
    if raw.ndim == 3:
        raw = raw[..., None]
    return raw if raw.dtype in READABLE_DTYPES else raw.astype(np.float32)


def batch_scores(pred: jax.Array, gt: jax.Array, fixations: jax.Array, num_fixations: jax.Array,
                 *, corrected: bool, threads: int | None = None) -> jax.Array:
    """float32 [B, 5] scores (columns in `metrics.METRIC_NAMES` order); callable inside jit.

    Takes raw maps like `aim_frame_scores` and int32 fixations [B, N, 2] inside the grid (the caller
    checks them). Frames run in parallel on `threads` cores (default: all this process may use).
    """
    if not available():
        raise RuntimeError(_MISSING)
    pred, gt = _as_frames(pred), _as_frames(gt)
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((gt.shape[0], 5), jnp.float32),
                            vmap_method="sequential")
    return call(pred, gt, fixations.astype(jnp.int32), num_fixations.astype(jnp.int32),
                corrected=np.bool_(corrected), threads=np.int64(threads or default_threads()))
