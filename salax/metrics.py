"""Saliency metrics, jitted and exact to the AIM 2024 scoring rules (AViMoS, `bench.py`).

The organisers score each frame in float64 NumPy; here a whole batch of frames is one jitted call in
float32. Two things keep float32 within 1e-5 of their numbers at 1080p: every sum over the pixels is
blocked (one partial sum per image row, then a sum of the row sums, so no accumulator adds up millions
of terms), and the variances are taken around the mean (two passes) rather than as E[x^2] - E[x]^2.

AUC-Judd never counts the pixels above each threshold separately: the area under the organisers'
piecewise-linear curve is a closed form in two integers, the sum over pixels of the number of
thresholds at or below the pixel and the count of pixels at or above the lowest threshold (see
`_auc_from_thresholds`), both taken in one pass per group of thresholds with integer arithmetic.

On CPUs `aim_frame_scores` runs the same rules in a native kernel by default (`salax.native_metrics`,
built at install: called directly on host arrays, or as an XLA FFI call on JAX arrays; frames spread
over the cores; 5x what XLA:CPU makes of this code for resized predictions, over 10x for uint8 maps
at full size). This module stays the reference implementation and the one every other backend runs.

Fixations are `int32 [N, 2]` (row, col) per frame, padded beyond `num_fixations`; padding never changes
a result. A frame without fixations gets NaN for the fixation metrics (the organisers' script crashes);
the aggregation helpers exclude such frames and count them.

Layout: per-frame functions on prepared maps (`auc_judd`, `cc`, `nss`, `sim`, `kld` and the options
`auc_judd_mit`, `auc_shuffled`), the AIM preparation (`prepare_map`, `resize_bilinear`), the batched
public entry `aim_frame_scores`, and the aggregation helpers `video_means`, `aim_means`, `pooled_means`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from salax import native_metrics

METRIC_NAMES = ("auc_judd", "cc", "nss", "sim", "kld")
IMPLEMENTATIONS = ("auto", "native", "xla")
EPS32 = float(np.finfo(np.float32).eps)  # the min-max epsilon of the organisers' `read_sm`
STD_EPS = 1e-7  # added to standard deviations and sums in NSS, CC and SIM
KLD_EPS = 2.2204e-16  # the organisers' KLD epsilon (MATLAB's eps)
MIT_JITTER = 1e-7  # the MIT benchmark's jitter scale, which breaks ties between pixels
THRESHOLD_GROUP = 16  # AUC thresholds handled per pass over the map
POSITIVE_INF_BITS = 0x7F800000  # float32 +inf read as int32: the padding threshold
RESIZE_BLOCK = 16  # output rows (or columns) that share one band of tap selections
HOST_ALIGNMENT = 64  # bytes: XLA:CPU reads host arrays so aligned in place


# ---------------------------------------------------------------------------------------------------
# Blocked reductions


def _total(x: jax.Array) -> jax.Array:
    """Sum of a 2-D map: per-row sums, then their sum, so float32 error stays near one rounding."""
    return jnp.sum(jnp.sum(x, axis=-1), axis=-1)


def _mean(x: jax.Array) -> jax.Array:
    return _total(x) / (x.shape[-2] * x.shape[-1])


def _count(mask_or_ints: jax.Array) -> jax.Array:
    """Exact integer total of a 2-D map of small non-negative integers (int32)."""
    return jnp.sum(jnp.sum(mask_or_ints.astype(jnp.int32), axis=-1), axis=-1)


def _centred(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x - mean, sum of squares of that, population std): two passes, for float32 accuracy."""
    centred = x - _mean(x)
    squares = _total(centred * centred)
    return centred, squares, jnp.sqrt(squares / (x.shape[-2] * x.shape[-1]))


# ---------------------------------------------------------------------------------------------------
# Fixation helpers


def _valid(fixations: jax.Array, num_fixations: jax.Array) -> jax.Array:
    """Boolean [N]: which rows of the padded fixation array are real."""
    return jnp.arange(fixations.shape[0]) < num_fixations


def _values_at(saliency: jax.Array, fixations: jax.Array) -> jax.Array:
    """The map's values at the fixations, [N] (padding rows read pixel (0, 0) and are masked later)."""
    rows = jnp.clip(fixations[:, 0], 0, saliency.shape[0] - 1)
    cols = jnp.clip(fixations[:, 1], 0, saliency.shape[1] - 1)
    return saliency[rows, cols]


def _first_occurrences(fixations: jax.Array, valid: jax.Array, width: int) -> jax.Array:
    """Boolean [N]: valid fixations whose pixel no earlier valid fixation has."""
    pixel = fixations[:, 0] * width + fixations[:, 1]
    same = (pixel[:, None] == pixel[None, :]) & valid[None, :]
    earlier = jnp.tril(same, k=-1)
    return valid & ~jnp.any(earlier, axis=1)


def _aim_unique_count(fixations: jax.Array, valid: jax.Array) -> jax.Array:
    """The organisers' `np.unique(F, axis=1).shape[-1]`: unique columns of the [N, 2] array.

    It is 1 when every fixation has row == col and 2 otherwise (the intended rule counts pixels).
    """
    diagonal = jnp.all(jnp.where(valid, fixations[:, 0] == fixations[:, 1], True))
    return jnp.where(diagonal, 1, 2)


# ---------------------------------------------------------------------------------------------------
# Per-frame metrics on prepared maps ([H, W] float32, in [0, 1]: AUC-Judd relies on non-negative
# values); vmap them for batches.


def nss(saliency: jax.Array, fixations: jax.Array, num_fixations: jax.Array) -> jax.Array:
    """Normalised scanpath saliency: mean standardised saliency at the fixations (duplicates kept)."""
    centred, _, std = _centred(saliency)
    standardised = _values_at(centred, fixations) / (std + STD_EPS)
    valid = _valid(fixations, num_fixations)
    total = jnp.sum(jnp.where(valid, standardised, 0.0))
    return jnp.where(num_fixations > 0, total / jnp.maximum(num_fixations, 1), jnp.nan)


def cc(saliency: jax.Array, ground_truth: jax.Array) -> jax.Array:
    """Pearson correlation with the organisers' epsilons (std + 1e-7, and + 1e-7 under the root)."""
    centred_p, squares_p, std_p = _centred(saliency)
    centred_g, squares_g, std_g = _centred(ground_truth)
    scale_p, scale_g = std_p + STD_EPS, std_g + STD_EPS
    cross = _total(centred_p * centred_g) / (scale_p * scale_g)
    power = (squares_p / (scale_p * scale_p)) * (squares_g / (scale_g * scale_g))
    return cross / jnp.sqrt(power + STD_EPS)


def sim(saliency: jax.Array, ground_truth: jax.Array) -> jax.Array:
    """Histogram intersection of the two maps, each divided by (its sum + 1e-7)."""
    p = saliency / (_total(saliency) + STD_EPS)
    g = ground_truth / (_total(ground_truth) + STD_EPS)
    return _total(jnp.minimum(p, g))


def kld(saliency: jax.Array, ground_truth: jax.Array) -> jax.Array:
    """KL divergence of the ground truth from the prediction, both divided by their sums.

    As in the organisers' code there is no epsilon in those sums: a map that sums to zero gives NaN.
    """
    p = saliency / _total(saliency)
    g = ground_truth / _total(ground_truth)
    return _total(g * jnp.log(KLD_EPS + g / (p + KLD_EPS)))


def _thresholds_at_or_below(saliency: jax.Array, thresholds: jax.Array) -> jax.Array:
    """int32 map: for each pixel, how many thresholds are <= it (padding thresholds are +inf).

    For non-negative floats the order of the bit patterns, read as int32, is the order of the values,
    and (t - 1 - p) >> 31 is -1 exactly when p >= t. Integer arithmetic vectorises well on CPUs
    where compare-and-select does not, and no gather or sort is needed. Thresholds go in groups
    (one pass over the map per group), and groups that hold only padding are skipped.
    """
    pixels = jax.lax.bitcast_convert_type(saliency, jnp.int32)
    bits = jax.lax.bitcast_convert_type(thresholds.astype(jnp.float32), jnp.int32)
    num_groups = -(-bits.shape[0] // THRESHOLD_GROUP)
    group = -(-bits.shape[0] // num_groups)
    bits = jnp.pad(bits, (0, num_groups * group - bits.shape[0]), constant_values=POSITIVE_INF_BITS)
    bits = bits.reshape(num_groups, group)

    def add_group(index, below):
        for threshold in bits[index]:
            below = below + ((threshold - 1 - pixels) >> 31)
        return below

    real = jnp.sum(bits != POSITIVE_INF_BITS)
    return -jax.lax.fori_loop(0, (real + group - 1) // group, add_group, jnp.zeros_like(pixels))


def _auc_from_thresholds(saliency: jax.Array, thresholds: jax.Array, count: jax.Array,
                         negatives: jax.Array) -> jax.Array:
    """Area under the organisers' curve: thresholds (`count` real ones, padded with +inf).

    The curve joins (0, 0), (fp_k, k / n) for the thresholds sorted descending, and (1, 1), with
    fp_k = (above_k - k) / negatives and above_k = #{pixels >= threshold_k}. Summing the trapezoids by
    parts gives AUC = 1 - (2 A - above_n - n^2) / (2 n negatives), where A = sum_k above_k = sum over
    pixels of #{thresholds <= pixel}, and above_n counts the pixels at or above the lowest threshold.
    """
    thresholds = jnp.sort(thresholds)  # real ones first, so skipping trailing padding groups is safe
    at_or_below = _thresholds_at_or_below(saliency, thresholds)
    total_above = _count(at_or_below)
    above_lowest = _count(jnp.minimum(at_or_below, 1))
    count = count.astype(jnp.float32)
    excess = 2.0 * total_above.astype(jnp.float32) - above_lowest.astype(jnp.float32) - count * count
    negatives = jnp.asarray(negatives, jnp.float32)
    area = 1.0 - excess / (2.0 * count * jnp.maximum(negatives, 1.0))
    return jnp.where((count > 0) & (negatives > 0), area, jnp.nan)


def auc_judd(saliency: jax.Array, fixations: jax.Array, num_fixations: jax.Array, *,
             corrected: bool = False) -> jax.Array:
    """AUC-Judd as the organisers compute it: thresholds = saliency at the fixations, duplicates kept.

    The false-positive denominator is H*W - U. By default U reproduces the AIM script's quirk (unique
    columns of the fixation array: 2, or 1 when every fixation has row == col); `corrected=True` uses
    the intended U = number of distinct fixated pixels. A zero denominator (e.g. a 1 x 1 map) gives
    NaN, where the organisers' arithmetic divides by zero.
    """
    valid = _valid(fixations, num_fixations)
    thresholds = jnp.where(valid, _values_at(saliency, fixations), jnp.inf)
    if corrected:
        unique = jnp.sum(_first_occurrences(fixations, valid, saliency.shape[1]))
    else:
        unique = _aim_unique_count(fixations, valid)
    negatives = saliency.shape[0] * saliency.shape[1] - unique
    return _auc_from_thresholds(saliency, thresholds, num_fixations, negatives)


def auc_judd_mit(saliency: jax.Array, fixations: jax.Array, num_fixations: jax.Array,
                 key: jax.Array) -> jax.Array:
    """AUC-Judd by the MIT benchmark / pysaliency convention (an option; AIM does not use it).

    Adds uniform jitter of scale 1e-7 (seeded by `key`) to break ties between pixels, min-max
    normalises again, and counts each fixated pixel once (duplicates dropped), so the denominator
    is H*W - (distinct fixated pixels). Note that float32 keeps little of the jitter near 1.
    """
    jittered = saliency + MIT_JITTER * jax.random.uniform(key, saliency.shape, saliency.dtype)
    low, high = jnp.min(jittered), jnp.max(jittered)
    jittered = jnp.maximum((jittered - low) / jnp.where(high > low, high - low, 1.0), 0.0)
    first = _first_occurrences(fixations, _valid(fixations, num_fixations), saliency.shape[1])
    thresholds = jnp.where(first, _values_at(jittered, fixations), jnp.inf)
    unique = jnp.sum(first)
    negatives = saliency.shape[0] * saliency.shape[1] - unique
    return _auc_from_thresholds(jittered, thresholds, unique, negatives)


def auc_shuffled(saliency: jax.Array, fixations: jax.Array, num_fixations: jax.Array,
                 negatives: jax.Array, num_negatives: jax.Array) -> jax.Array:
    """Shuffled AUC (an option): saliency at the fixations against saliency at `negatives`.

    `negatives` [M, 2] are fixations of other frames or videos (see `draw_shuffled_negatives`),
    padded beyond `num_negatives`, which discounts the centre bias. The area under the full ROC curve
    equals P(positive > negative) + P(positive == negative) / 2 over all pairs.
    """
    positive = _values_at(saliency, fixations)
    negative = _values_at(saliency, negatives)
    pairs = _valid(fixations, num_fixations)[:, None] & _valid(negatives, num_negatives)[None, :]
    wins = jnp.where(positive[:, None] > negative[None, :], 1.0, 0.0)
    ties = jnp.where(positive[:, None] == negative[None, :], 0.5, 0.0)
    total = jnp.sum(jnp.where(pairs, wins + ties, 0.0))
    count = jnp.sum(pairs)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def draw_shuffled_negatives(pool: np.ndarray, pool_frames: np.ndarray, frame: int, count: int,
                            seed: int) -> np.ndarray:
    """`count` fixations drawn with replacement, seeded, from `pool` rows of frames other than `frame`.

    `pool` [M, 2] holds fixations of many frames (or videos) and `pool_frames` [M] the frame each came
    from; excluding the scored frame is what makes the AUC "shuffled".
    """
    pool = np.asarray(pool)
    candidates = pool[np.asarray(pool_frames) != frame]
    if len(candidates) == 0:
        raise ValueError(f"frame {frame}: the pool holds no fixations of other frames to draw from")
    rng = np.random.default_rng([seed, frame])
    return candidates[rng.integers(0, len(candidates), size=count)].astype(np.int32)


# ---------------------------------------------------------------------------------------------------
# The AIM preparation


def prepare_map(raw: jax.Array) -> jax.Array:
    """One decoded frame ([H, W] or [H, W, C], any numeric dtype) -> float32 map in [0, 1].

    Mean over colour channels, then (x - min) / (max - min + float32 eps), as the organisers' `read_sm`.
    It is computed on channel sums s as (s - min s) / (max s - min s + C eps), which is the same
    number: the subtraction comes first, so the minimum maps to exactly 0 (a fused multiply-add of
    the mean could leave 1e-8 there, which KLD amplifies), and 8- or 16-bit integers take their
    minimum and maximum on the integers, exact and much faster on CPUs than float min/max.
    """
    channels = raw.shape[-1] if raw.ndim == 3 else 1
    small_integers = jnp.issubdtype(raw.dtype, jnp.integer) and raw.dtype.itemsize <= 2
    wide = jnp.int32 if small_integers else jnp.float32
    summed = jnp.sum(raw, axis=-1, dtype=wide) if raw.ndim == 3 else raw
    low, high = jnp.min(summed).astype(wide), jnp.max(summed).astype(wide)
    spread = (high - low).astype(jnp.float32) + channels * EPS32
    return (summed.astype(wide) - low).astype(jnp.float32) * (1.0 / spread)


def _linear_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV INTER_LINEAR taps along one axis: (first index, second index, second weight).

    Half-pixel centres, src = (dst + 0.5) * scale - 0.5 in float64 (current OpenCV no longer rounds it
    to float32), source coordinates clamped to the border, and no antialiasing whatever the scale.
    """
    scale = 1.0 / (target / source)
    position = (np.arange(target) + 0.5) * scale - 0.5
    first = np.floor(position).astype(np.int64)
    weight = position - first
    before, after = first < 0, first >= source - 1
    first = np.where(before, 0, np.where(after, source - 1, first))
    weight = np.where(before | after, 0.0, weight)
    second = np.minimum(first + 1, source - 1)
    return first, second, weight


def _banded_taps(source: int, target: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Both interpolation taps along one axis as 0/1 selection bands of RESIZE_BLOCK outputs each.

    Returns the first source index of each band, the selections [bands, 2, RESIZE_BLOCK, K] (K the
    widest band's source span) and the second tap's weight per output position (padded with 0).
    """
    first, second, weight = _linear_taps(source, target)
    bands = -(-target // RESIZE_BLOCK)
    spans = [(first[b * RESIZE_BLOCK:(b + 1) * RESIZE_BLOCK].min(),
              second[b * RESIZE_BLOCK:(b + 1) * RESIZE_BLOCK].max()) for b in range(bands)]
    span = max(high - low + 1 for low, high in spans)
    starts = [min(int(low), source - span) for low, _ in spans]
    selections = np.zeros((bands, 2, RESIZE_BLOCK, span), np.float32)
    for position in range(target):
        band, row = divmod(position, RESIZE_BLOCK)
        selections[band, 0, row, first[position] - starts[band]] = 1.0
        selections[band, 1, row, second[position] - starts[band]] = 1.0
    weights = np.zeros(bands * RESIZE_BLOCK, np.float32)
    weights[:target] = weight
    return starts, selections, weights


def _resize_axis(image: jax.Array, target: int, axis: int) -> jax.Array:
    """Two-tap linear interpolation along one axis of a 2-D map.

    The taps are picked by banded 0/1 matrix products (XLA gathers are slow on CPUs; the products
    copy values exactly), then blended as a + w (b - a). That form keeps a plateau (a == b) exactly
    flat, as OpenCV's float64 resize does, so AUC thresholds on plateaus tie as in the organisers'
    maps (other values that tie only in exact arithmetic may round differently from float64).
    """
    x = jnp.moveaxis(image, axis, 0)
    starts, selections, weights = _banded_taps(x.shape[0], target)
    span = selections.shape[-1]
    bands = jnp.stack([x[start:start + span] for start in starts])
    taps = jnp.einsum("btik,bkn->tbin", selections, bands, precision=jax.lax.Precision.HIGHEST)
    near, far = taps.reshape(2, -1, x.shape[1])
    out = near + weights[:, None] * (far - near)
    return jnp.moveaxis(out[:target], 0, axis)


def resize_bilinear(image: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Resize a float [h, w] map to `shape` exactly like `cv2.resize(..., INTER_LINEAR)`.

    `jax.image.resize` antialiases when shrinking; OpenCV does not. Like OpenCV, the horizontal pass
    runs first, then the vertical one, each a two-tap blend in float32 (within a rounding of OpenCV).
    """
    height, width = shape
    if image.shape[1] != width:
        image = _resize_axis(image, width, axis=1)
    if image.shape[0] != height:
        image = _resize_axis(image, height, axis=0)
    return image


# ---------------------------------------------------------------------------------------------------
# The public batched entry


def _frame_scores(pred: jax.Array, gt: jax.Array, fixations: jax.Array, num_fixations: jax.Array,
                  corrected: bool) -> dict[str, jax.Array]:
    ground_truth = prepare_map(gt)
    saliency = resize_bilinear(prepare_map(pred), ground_truth.shape)
    return {
        "auc_judd": auc_judd(saliency, fixations, num_fixations, corrected=corrected),
        "cc": cc(saliency, ground_truth),
        "nss": nss(saliency, fixations, num_fixations),
        "sim": sim(saliency, ground_truth),
        "kld": kld(saliency, ground_truth),
    }


@functools.partial(jax.jit, static_argnames=("corrected", "implementation"))
def _batch_scores(pred, gt, fixations, num_fixations, corrected, implementation):
    """Scores of a batch of frames: the native kernel, a loop over frames on CPUs, or vmapped.

    Vmapping turns each frame's scalars (mean, min, thresholds) into broadcasts over [B, H, W] that
    XLA's CPU code does not vectorise (several times slower there); one frame at a time keeps them
    scalars. The native kernel (CPU only) is faster still: see `salax.native_metrics`.
    """
    if implementation == "native":
        return _named_columns(native_metrics.batch_scores(pred, gt, fixations, num_fixations,
                                                          corrected=corrected))

    def score(frame):
        return _frame_scores(*frame, corrected)

    frames = (pred, gt, fixations, num_fixations)
    if jax.default_backend() == "cpu":
        return jax.lax.map(score, frames)
    return jax.vmap(score)(frames)


def _named_columns(table):
    """The native kernel's [B, 5] table as {metric name: [B]}."""
    return {name: table[:, column] for column, name in enumerate(METRIC_NAMES)}


def resolve_implementation(implementation: str) -> str:
    """"auto" -> the native kernel on CPUs where it was built, XLA otherwise."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    on_cpu = jax.default_backend() == "cpu"
    if implementation == "native" and not (on_cpu and native_metrics.available()):
        raise ValueError("implementation='native' needs the CPU backend and the built kernel "
                         f"(backend {jax.default_backend()}, built: {native_metrics.available()})")
    if implementation == "auto":
        return "native" if on_cpu and native_metrics.available() else "xla"
    return implementation


def _check_inputs(pred, gt, fixations: np.ndarray, num_fixations: np.ndarray) -> None:
    """Raise a ValueError naming the frame for inputs the jitted code cannot check."""
    if pred.ndim not in (3, 4) or gt.ndim not in (3, 4):
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be [B, H, W] or [B, H, W, C]")
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
                     chunk_size: int = 16, progress: bool = False,
                     implementation: str = "auto") -> dict[str, np.ndarray]:
    """Score frames exactly by the AIM rules: {"auc_judd", "cc", "nss", "sim", "kld"} -> float32 [B].

    pred: raw decoded predictions [B, h, w] or [B, h, w, C], any numeric dtype and size.
    gt: raw decoded ground-truth maps [B, H, W] or [B, H, W, C].
    fixations: int [B, N, 2] (row, col) in the ground-truth grid, padded beyond num_fixations [B].
    corrected: AUC-Judd with the intended unique-fixation count instead of the AIM script's quirk.
    chunk_size: frames per call, so memory stays bounded however long the batch; for jitted calls the
        last chunk is padded to it, so there is one compilation per chunk shape.
    implementation: "native" (the C++ kernel of `salax.native_metrics`, CPU only; host arrays go to
        it directly, JAX arrays through its XLA FFI call), "xla" (pure JAX, every backend) or "auto"
        (native on CPUs where it was built). Both follow the same rules and agree to about 1e-6.
    """
    pred, gt = (array if hasattr(array, "shape") else np.asarray(array) for array in (pred, gt))
    fixations = np.asarray(fixations)
    num_fixations = np.asarray(num_fixations)
    _check_inputs(pred, gt, fixations, num_fixations)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    implementation = resolve_implementation(implementation)
    batch = gt.shape[0]
    fixations = fixations.astype(np.int32)
    num_fixations = num_fixations.astype(np.int32)
    results: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    starts = range(0, batch, chunk_size)
    staging = _AlignedStaging()
    on_host = not any(isinstance(array, jax.Array) for array in (pred, gt))
    for start in tqdm(starts, desc="scoring", unit="chunk", disable=not progress):
        stop = min(start + chunk_size, batch)
        if implementation == "native" and on_host:
            scores = _named_columns(native_metrics.score_arrays(
                pred[start:stop], gt[start:stop], fixations[start:stop], num_fixations[start:stop],
                corrected=corrected))
        else:
            size = min(chunk_size, batch)
            chunk = [staging(slot, _padded(array[start:stop], size))
                     for slot, array in enumerate((pred, gt, fixations, num_fixations))]
            scores = _batch_scores(*chunk, corrected=corrected, implementation=implementation)
        for name in METRIC_NAMES:
            results[name].append(np.asarray(scores[name])[:stop - start])
    return {name: np.concatenate(parts) if parts else np.zeros(0, np.float32)
            for name, parts in results.items()}


# ---------------------------------------------------------------------------------------------------
# Aggregation (host side, float64)


class MetricMeans(NamedTuple):
    """Means per metric, and per metric the number of frames left out because they scored NaN."""

    means: dict[str, float]
    excluded_frames: dict[str, int]


def video_means(frame_scores: Mapping[str, np.ndarray]) -> MetricMeans:
    """Mean over the frames of one video, NaN frames (no fixations) excluded and counted."""
    means, excluded = {}, {}
    for name, values in frame_scores.items():
        values = np.asarray(values, dtype=np.float64)
        finite = ~np.isnan(values)
        excluded[name] = int(values.size - finite.sum())
        means[name] = float(values[finite].mean()) if finite.any() else math.nan
    return MetricMeans(means, excluded)


def aim_means(videos: Sequence[Mapping[str, np.ndarray]]) -> MetricMeans:
    """The AIM aggregation: mean over frames per video, then mean over videos.

    A video with no scorable frame for a metric has no mean and is left out of that metric's mean
    (its frames are counted as excluded).
    """
    per_video = [video_means(scores) for scores in videos]
    names = per_video[0].means.keys() if per_video else ()
    means, excluded = {}, {}
    for name in names:
        values = np.array([video.means[name] for video in per_video])
        finite = ~np.isnan(values)
        means[name] = float(values[finite].mean()) if finite.any() else math.nan
        excluded[name] = sum(video.excluded_frames[name] for video in per_video)
    return MetricMeans(means, excluded)


def pooled_means(videos: Sequence[Mapping[str, np.ndarray]]) -> MetricMeans:
    """Frame-pooled means: every frame of every video weighs the same (long videos count more)."""
    names = videos[0].keys() if videos else ()
    return video_means({name: np.concatenate([np.asarray(v[name]).ravel() for v in videos])
                        for name in names})
