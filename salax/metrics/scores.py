"""`aim_frame_scores`: a batch of raw decoded frames scored by the AIM rules, by XLA or the kernel.

The organisers score each frame in float64 NumPy, one PNG pair at a time; here a chunk of frames is
one call, either the jitted JAX rules (`salax.metrics.rules`, every backend) or, on CPUs where it was
built, the native kernel (`salax.metrics.native`), which follows the same rules. This module checks
the inputs, picks the implementation, cuts the batch into chunks and stages them for XLA.
"""

from __future__ import annotations

from collections.abc import Sequence
import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from salax.metrics import native
from salax.metrics.prepare import prepare_map, resize_bilinear
from salax.metrics.rules import METRIC_NAMES, auc_judd, cc, kld, nss, sim

IMPLEMENTATIONS = ("auto", "native", "xla")
MAP_DTYPE_KINDS = "biuf"  # bool, signed and unsigned integers, floats
HOST_ALIGNMENT = 64  # bytes: XLA:CPU reads host arrays so aligned in place


def _frame_scores(pred: jax.Array, gt: jax.Array, fixations: jax.Array, num_fixations: jax.Array,
                  corrected: bool, names: tuple[str, ...]) -> dict[str, jax.Array]:
    """The metrics `names` of one frame (the others are not computed)."""
    ground_truth = prepare_map(gt)
    saliency = resize_bilinear(prepare_map(pred), ground_truth.shape)
    rules = {
        "auc_judd": lambda: auc_judd(saliency, fixations, num_fixations, corrected=corrected),
        "cc": lambda: cc(saliency, ground_truth),
        "nss": lambda: nss(saliency, fixations, num_fixations),
        "sim": lambda: sim(saliency, ground_truth),
        "kld": lambda: kld(saliency, ground_truth),
    }
    return {name: rules[name]() for name in names}


@functools.partial(jax.jit, static_argnames=("corrected", "implementation", "names"))
def _batch_scores(pred, gt, fixations, num_fixations, corrected, implementation, names=METRIC_NAMES):
    """Scores of a batch of frames: the native kernel, a loop over frames on CPUs, or vmapped.

    Vmapping turns each frame's scalars (mean, min, thresholds) into broadcasts over [B, H, W] that
    XLA's CPU code does not vectorise (several times slower there); one frame at a time keeps them
    scalars. On CPUs the native kernel is faster still: see `salax.metrics.native`.
    """
    if implementation == "native":
        return _named_columns(native.batch_scores(pred, gt, fixations, num_fixations, corrected=corrected,
                                                  metrics=names), names)

    def score(frame):
        return _frame_scores(*frame, corrected, names)

    frames = (pred, gt, fixations, num_fixations)
    if jax.default_backend() == "cpu":
        return jax.lax.map(score, frames)
    return jax.vmap(score)(frames)


def _named_columns(table, names: tuple[str, ...]):
    """The columns `names` of the native kernel's [B, 5] table as {metric name: [B]} (the kernel's
    column order is checked against METRIC_NAMES at import)."""
    return {name: table[:, METRIC_NAMES.index(name)] for name in names}


def resolve_implementation(implementation: str) -> str:
    """"auto" -> the native kernel on CPUs where it was built, XLA otherwise."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    on_cpu = jax.default_backend() == "cpu"
    if implementation == "native" and not (on_cpu and native.available()):
        raise ValueError("implementation='native' needs the CPU backend and the built kernel "
                         f"(backend {jax.default_backend()}, built: {native.available()})")
    if implementation == "auto":
        return "native" if on_cpu and native.available() else "xla"
    return implementation


def _metric_names(names: Sequence[str]) -> tuple[str, ...]:
    """The metrics asked for, in METRIC_NAMES order; a ValueError for an unknown or empty choice."""
    if isinstance(names, str):
        names = (names,)
    unknown = sorted(set(names) - set(METRIC_NAMES))
    if unknown or not names:
        raise ValueError(f"metrics must be a non-empty choice from {METRIC_NAMES}, got {tuple(names)}")
    return tuple(name for name in METRIC_NAMES if name in names)


def _check_map_dtype(name: str, dtype) -> None:
    """Maps are bool, integer or float (up to 64 bits, bfloat16 too): strings, objects, dates, complex
    are refused."""
    dtype = np.dtype(dtype)
    if (dtype.kind not in MAP_DTYPE_KINDS or dtype.itemsize > 8) and dtype != jnp.bfloat16:
        raise ValueError(f"{name} has dtype {dtype}: maps must be bool, integer or float (at most 64 bits)")


def _check_inputs(pred, gt, fixations: np.ndarray, num_fixations: np.ndarray) -> None:
    """Raise a ValueError naming the frame for inputs the jitted code cannot check."""
    if pred.ndim not in (3, 4) or gt.ndim not in (3, 4):
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be [B, H, W] or [B, H, W, C]")
    for name, maps in (("pred", pred), ("gt", gt)):
        _check_map_dtype(name, maps.dtype)
        if 0 in maps.shape[1:]:
            raise ValueError(f"{name} {maps.shape}: maps must have at least one pixel and one channel")
    if fixations.ndim != 3 or fixations.shape[2] != 2:
        raise ValueError(f"fixations must be [B, N, 2] (row, col), got {fixations.shape}")
    batch = gt.shape[0]
    if pred.shape[0] != batch or fixations.shape[0] != batch or num_fixations.shape != (batch,):
        raise ValueError(f"batch sizes differ: pred {pred.shape[0]}, gt {batch}, fixations "
                         f"{fixations.shape[0]}, num_fixations {num_fixations.shape}")
    height, width = gt.shape[1:3]
    if height * width * fixations.shape[1] >= 2**31:
        raise ValueError(f"{fixations.shape[1]} fixation slots on a {height} x {width} grid overflow "
                         "the int32 AUC-Judd counts; score fewer fixations per call")
    bad_counts = np.flatnonzero((num_fixations < 0) | (num_fixations > fixations.shape[1]))
    if bad_counts.size:
        frame = int(bad_counts[0])
        raise ValueError(f"frame {frame}: num_fixations {int(num_fixations[frame])} is outside "
                         f"[0, {fixations.shape[1]}]")
    rows, cols = fixations[..., 0], fixations[..., 1]
    outside = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
    outside &= np.arange(fixations.shape[1]) < num_fixations[:, None]
    if outside.any():
        frame, index = (int(i) for i in np.argwhere(outside)[0])
        raise ValueError(f"frame {frame}: fixation (row, col) {fixations[frame, index].tolist()} lies "
                         f"outside the {height} x {width} ground-truth grid")


def _shifted(gt, truth_shift: int, first_frame: int):
    """`gt << truth_shift` as uint16 (the values the kernel reads in place), or a ValueError naming the first
    frame whose values do not fit."""
    if not truth_shift:
        return gt
    wide = np.left_shift(np.asarray(gt, np.uint32), truth_shift)
    overflow = np.flatnonzero((wide > np.iinfo(np.uint16).max).reshape(wide.shape[0], -1).any(axis=1))
    if overflow.size:
        raise ValueError(f"frame {first_frame + int(overflow[0])}: the ground-truth map's values, shifted by "
                         f"{truth_shift}, do not fit in 16 bits")
    return wide.astype(np.uint16)


@jax.jit
def _finite_frames(maps: jax.Array) -> jax.Array:
    """bool [B]: whether every value of each frame is finite (on the arrays' device)."""
    return jnp.all(jnp.isfinite(maps.reshape(maps.shape[0], -1)), axis=1)


def _check_finite(pred, gt, first_frame: int) -> None:
    """A ValueError naming the first frame whose float prediction or truth holds NaN or inf."""
    for name, maps in (("the prediction", pred), ("the ground-truth map", gt)):
        if not jnp.issubdtype(maps.dtype, jnp.floating):
            continue
        if isinstance(maps, jax.Array):
            finite = np.asarray(_finite_frames(maps))
        else:
            finite = np.isfinite(maps.reshape(maps.shape[0], -1)).all(axis=1)
        if not finite.all():
            frame = first_frame + int(np.flatnonzero(~finite)[0])
            raise ValueError(f"frame {frame}: {name} holds NaN or infinite values")


def exact_float64():
    """x64 on around XLA scoring where the backend has float64 (CPUs, GPUs): the preparation and the
    resize of `salax.metrics.prepare` then run in float64 where the organisers' do. TPUs lack it.
    Wrap other calls of `prepare_map` / `resize_bilinear` in it to get the same bits."""
    return jax.enable_x64(True) if jax.default_backend() in ("cpu", "gpu", "cuda", "rocm") else contextlib.nullcontext()


def _padded(array, size: int):
    """`array` grown to `size` frames by repeating its last frame (results for copies are dropped)."""
    missing = size - array.shape[0]
    if missing == 0:
        return array
    return np.concatenate([np.asarray(array), np.repeat(np.asarray(array[-1:]), missing, axis=0)])


class _AlignedStaging:
    """Reused 64-byte-aligned host buffers for the chunks of one scoring call.

    XLA:CPU uses a NumPy array in place when its data is 64-byte aligned and copies it (slowly, at
    about 1 GB/s) when not; decoded frames are rarely aligned. A chunk is copied into an aligned
    buffer instead, which is safe to reuse once the previous chunk's scores have been read.
    """

    def __init__(self):
        self._buffers: dict[int, np.ndarray] = {}

    def __call__(self, slot: int, array):
        if not isinstance(array, np.ndarray) or (
                array.flags.c_contiguous and array.ctypes.data % HOST_ALIGNMENT == 0):
            return array
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.shape != array.shape or buffer.dtype != array.dtype:
            raw = np.empty(array.nbytes + HOST_ALIGNMENT, np.uint8)
            offset = -raw.ctypes.data % HOST_ALIGNMENT
            buffer = raw[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
            self._buffers[slot] = buffer
        np.copyto(buffer, array)
        return buffer


def aim_frame_scores(pred, gt, fixations, num_fixations, *, corrected: bool = False,
                     chunk_size: int = 16, progress: bool = False, implementation: str = "auto",
                     metrics: Sequence[str] = METRIC_NAMES, truth_shift: int = 0) -> dict[str, np.ndarray]:
    """Score frames exactly by the AIM rules: {"auc_judd", "cc", "nss", "sim", "kld"} -> float32 [B].

    pred: raw decoded predictions [B, h, w] or [B, h, w, C], any numeric dtype and size.
    gt: raw decoded ground-truth maps [B, H, W] or [B, H, W, C].
    fixations: int [B, N, 2] (row, col) in the ground-truth grid, padded beyond num_fixations [B].
    corrected: AUC-Judd with the intended unique-fixation count instead of the AIM script's quirk.
    chunk_size: frames per call, so memory stays bounded however long the batch; for jitted calls the
        last chunk is padded to it, so there is one compilation per chunk shape.
    implementation: "native" (the C++ kernel of `salax.metrics.native`, CPU only; host arrays go to
        it directly, JAX arrays through its XLA FFI call), "xla" (pure JAX, every backend) or "auto"
        (native on CPUs where it was built). Both follow the same rules and agree to about 1e-6.
    metrics: the metrics to compute (default all five); only those are returned, and the others
        cost nothing (AIM ranks by AUC-Judd, CC, NSS and SIM: `RANKING_METRICS` skips KLD's log).
    truth_shift: the truth's values are `gt << truth_shift` (a one-channel uint16 gt): a 10-bit luma plane
        read in place is scored as the 16-bit PNG that holds it shifted by 6, without making that copy
        (the kernel scales its arithmetic instead, exactly; the XLA path shifts a copy).

    Bad input raises a ValueError naming the frame and the problem, from both implementations alike:
    maps that are not bool, integer or float, empty maps, NaN or inf in a float map, fixations
    outside the grid, counts outside [0, N]. Fixations [B, 0, 2] mean frames without fixations.
    """
    names = _metric_names(metrics)
    pred, gt = (array if hasattr(array, "shape") else np.asarray(array) for array in (pred, gt))
    fixations = np.asarray(fixations)
    num_fixations = np.asarray(num_fixations)
    _check_inputs(pred, gt, fixations, num_fixations)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    native.check_truth_shift(gt, truth_shift)
    implementation = resolve_implementation(implementation)
    batch = gt.shape[0]
    fixations = fixations.astype(np.int32)
    num_fixations = num_fixations.astype(np.int32)
    results: dict[str, list[np.ndarray]] = {name: [] for name in names}
    starts = range(0, batch, chunk_size)
    staging = _AlignedStaging()
    on_host = not any(isinstance(array, jax.Array) for array in (pred, gt))
    for start in tqdm(starts, desc="scoring", unit="chunk") if progress else starts:
        stop = min(start + chunk_size, batch)
        if implementation == "native" and on_host:  # the kernel checks the values itself, as it reads
            scores = _named_columns(native.score_arrays(
                pred[start:stop], gt[start:stop], fixations[start:stop], num_fixations[start:stop],
                corrected=corrected, metrics=names, first_frame=start, truth_shift=truth_shift), names)
        else:
            _check_finite(pred[start:stop], gt[start:stop], start)
            size = min(chunk_size, batch)
            truth = _shifted(gt[start:stop], truth_shift, start)
            chunk = [staging(slot, _padded(array, size)) for slot, array in
                     enumerate((pred[start:stop], truth, fixations[start:stop], num_fixations[start:stop]))]
            with exact_float64():
                scores = _batch_scores(*chunk, corrected=corrected, implementation=implementation, names=names)
        for name in names:
            results[name].append(np.asarray(scores[name], np.float32)[:stop - start])
    return {name: np.concatenate(parts) if parts else np.zeros(0, np.float32)
            for name, parts in results.items()}
