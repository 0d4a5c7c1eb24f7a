"""The AIM preparation of a decoded map (`read_sm`) and the organisers' bilinear resize, in JAX, bit for bit.

The organisers (`bench.py`, numpy 1.24.2, opencv-python 4.7.0.72) prepare a frame as `read_sm` does and
resize the prediction with `cv2.resize(..., INTER_LINEAR)`. AUC-Judd counts pixels >= each threshold, so a
value that rounds differently moves it; both steps are reproduced here exactly, and `csrc/maps.h` (the
native kernel) follows the same rules.

Preparation rule, per frame: the arithmetic follows the array's layout, as NumPy's promotion in `read_sm`
treats it (for the arrays `cv2.imread` returns from PNG frames: [H, W] for 1-channel PNGs, [H, W, 3] for
3-channel ones; other inputs are widened so that nothing they hold is lost):
- 2-D maps ([H, W]; batched [B, H, W]) of integers of at most 16 bits (1-channel PNG frames: uint8,
  uint16) and bool: float32, as NumPy promotes them with the float32 eps scalar. (x - min) is exact;
  the denominator is float32(float32(max - min) + eps32) with eps32 = 2^-23; one float32 division.
- everything else in float64: maps with a channel axis ([H, W, C] with any C, 1 included; batched
  [B, H, W, C]), whose channel mean `read_sm` takes in float64 (so equal-channel frames, e.g. of a
  grey video, may come as [H, W, 1] at one channel's cost and be prepared exactly as their
  [H, W, 3] PNGs are), 2-D integers of 32 or 64 bits, and float maps of any width (float16/32/64: the
  organisers' NumPy would compute float32 or float16 for these, and overflow on 3e38; no PNG frame
  is a float map). m = S / C with S the channel sum (exact for integers; for floats added left to
  right in float64, NumPy's order), then (m - min m) / ((max m - min m) + eps32), each operation one
  float64 rounding.
float64 needs `jax.enable_x64(True)` around the call; without it float64 work falls back to float32,
which keeps each value within about one float32 rounding but does not reproduce ties.

Resize rule, found by testing against the pinned cv2 4.7.0.72 (tests/test_metrics_exact.py). For
float32/float64 maps that cv2 resizes with Intel IPP (ippicv 2020, on by default in the wheels), never
with OpenCV's own code, unless a side of the source is 1; IPP runs before cv2's switch to INTER_AREA,
so an exact 2x downscale is bilinear like any other. Per axis (source size s, target size t, output
index j), in float64:
    pos = fma(j + 0.5, s / t, -0.5);  i = floor(pos);  w = pos - i           (all exact but the fma)
    out = fma(w, b - a, a)  with a = src[i], b = src[i + 1]                   (b - a rounded once)
    i < 0 -> out = src[0];  i >= s - 1 -> out = src[s - 1]                    (replicated border)
The horizontal pass runs first (its rows are kept in the map's dtype), then the vertical one. IPP's
vector loops take the interior columns (those whose tap is not a border one) two float64 or four
float32 at a time; the k = (interior columns mod 2 or 4) last interior columns are left to scalar code,
which does not fuse: a + round(w * (b - a)). float64: the vertical pass has that unfused tail, the
horizontal one none. float32 (w rounded to float32; a fused value is computed exactly in float64 and
rounded once to float32): both passes have the tail, except that the border rows of the output (those
copying the first or last source row) copy a horizontal pass without tail. On the pinned cv2 this is
bit for bit on every probe; IPP's SSE4.2 build (CPUs without AVX2) rounds differently (up to hundreds
of float64 ulps at 1080p), its AVX2 and AVX-512 builds agree with each other and with this rule.
Sources with a side of 1 take OpenCV's own code: positions rounded to float32
(pos32 = float32((j + 0.5) * (1 / (t / s)) - 0.5), w = pos32 - floor(pos32), 1 - w in float32),
out = a * (1 - w) + b * w unfused in the map's dtype; horizontally an out-of-range tap replicates the
border, vertically only the row index is clamped (the weights stay). Same-size maps are copied.

XLA (through LLVM) contracts a * b + c into an FMA wherever it sees one, even through a float32 product
computed in float64, and turns x / c into x * (1 / c); so the fused and unfused roundings above are
computed by `exact_fma` (error-free transformations, immune to contraction) and products pass `_opaque`,
and divisions `_divide`. The XLA path is therefore bit for bit the rule where it has float64: measured on
CPUs; GPUs have float64 and the same code (not measured here). Where float64 is missing (TPUs) it runs in
float32 and is within a few float32 roundings.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # the min-max epsilon of the organisers' `read_sm` (2^-23)
_SPLIT_BITS = 27  # low mantissa bits cleared by the Veltkamp-style split: 26-bit halves multiply exactly


# ---------------------------------------------------------------------------------------------------
# The preparation


def prepared_dtype(dtype, channel_axis: bool) -> np.dtype:
    """The dtype of the preparation's arithmetic for a map of this dtype, [H, W, C] (`channel_axis`) or
    [H, W] (module docstring)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iubf" and dtype != jnp.bfloat16:
        raise ValueError(f"maps must be numeric (integer, bool or float), got dtype {dtype}")
    if not channel_axis and dtype.kind in "iub" and dtype.itemsize <= 2:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _working(dtype: np.dtype) -> np.dtype:
    """`dtype`, or float32 where float64 is unavailable (x64 off)."""
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        return np.dtype(np.float32)
    return dtype


def _divide(a: jax.Array, b) -> jax.Array:
    """a / b correctly rounded: XLA turns a division by a constant or broadcast scalar into a product
    with its reciprocal, which rounds differently; a select it cannot fold keeps the divisor elementwise."""
    return a / jnp.where(jnp.isnan(a), a, b)


def prepare_map(raw: jax.Array) -> jax.Array:
    """One decoded frame ([H, W] or [H, W, C]) -> the organisers' prepared map in [0, 1] (module docstring)."""
    if raw.ndim not in (2, 3):
        raise ValueError(f"a map must be [H, W] or [H, W, C], got shape {raw.shape}")
    out = _working(prepared_dtype(raw.dtype, channel_axis=raw.ndim == 3))
    integer = jnp.issubdtype(raw.dtype, jnp.integer) or raw.dtype == jnp.bool_
    if integer:
        wide = jnp.int64 if jax.config.jax_enable_x64 else jnp.int32
        x = raw.astype(wide)
        if raw.ndim == 3:
            x = jnp.sum(x, axis=-1)  # exact on integers, in any order
        low, high = jnp.min(x), jnp.max(x)
        if raw.ndim == 3:  # float64 means; min and max of the means are the means of the extreme sums
            channels = out.type(raw.shape[-1])
            mean = _divide(x.astype(out), channels)
            low_mean, high_mean = _divide(low.astype(out), channels), _divide(high.astype(out), channels)
            return _divide(mean - low_mean, (high_mean - low_mean) + out.type(EPS32))
        spread = (high - low).astype(out) + out.type(EPS32)
        return _divide((x - low).astype(out), spread)
    x = raw.astype(out)
    if raw.ndim == 3:
        total = x[..., 0]
        for channel in range(1, raw.shape[-1]):  # NumPy's order for a short reduction: left to right
            total = total + x[..., channel]
        x = _divide(total, out.type(raw.shape[-1]))
    low, high = jnp.min(x), jnp.max(x)
    return _divide(x - low, (high - low) + out.type(EPS32))


# ---------------------------------------------------------------------------------------------------
# Exact float64 arithmetic that XLA's FMA contraction cannot change


def _split(x: jax.Array, xp) -> tuple[jax.Array, jax.Array]:
    """x = hi + lo, each with at most 26 significant bits (hi rounded by integer operations)."""
    bits = x.view(np.int64) if xp is np else jax.lax.bitcast_convert_type(x, jnp.int64)
    bits = (bits + (1 << (_SPLIT_BITS - 1))) & ~((1 << _SPLIT_BITS) - 1)
    hi = bits.view(np.float64) if xp is np else jax.lax.bitcast_convert_type(bits, jnp.float64)
    return hi, x - hi


def _two_sum(a, b):
    """(s, e): s = round(a + b) and e = a + b - s exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _odd_sum(a, b, xp):
    """round(a + b) to odd: the nearest double is replaced by its odd neighbour towards a + b when inexact."""
    s, e = _two_sum(a, b)
    if xp is np:
        bits = s.view(np.int64)
        step = np.where(np.signbit(s) == np.signbit(e), 1, -1)
        return np.where((e != 0) & (bits & 1 == 0), (bits + step).view(np.float64), s)
    bits = jax.lax.bitcast_convert_type(s, jnp.int64)
    step = jnp.where(jnp.signbit(s) == jnp.signbit(e), 1, -1)
    nudged = jax.lax.bitcast_convert_type(bits + step, jnp.float64)
    return jnp.where((e != 0) & (bits & 1 == 0), nudged, s)


def exact_fma(a, b, c, xp=jnp):
    """round(a * b + c), correctly rounded in float64, with NumPy (`xp=np`) or under jit.

    Boldo and Melquiond's emulated FMA: the product exactly as uh + ul (Dekker, with 26-bit halves whose
    products are exact), then round(th + round_to_odd(tl + ul)) with (th, tl) = TwoSum(c, uh). The only
    inexact product, uh, passes `_opaque`, so no FMA contraction can change a rounding.
    Exact for finite operands whose products and sums neither overflow nor fall below 2^-960.
    """
    a, b, c = (xp.asarray(v, dtype=xp.float64) for v in (a, b, c))
    a, b, c = xp.broadcast_arrays(a, b, c)
    high = a * b if xp is np else _opaque(a * b)
    a_hi, a_lo = _split(a, xp)
    b_hi, b_lo = _split(b, xp)
    low = (((a_hi * b_hi - high) + a_hi * b_lo) + a_lo * b_hi) + a_lo * b_lo
    total, error = _two_sum(c, high)
    return total + _odd_sum(error, low, xp)


# ---------------------------------------------------------------------------------------------------
# The resize


class Taps(NamedTuple):
    """One axis of the resize: per output index, the first source tap, the second tap's weight, and
    which outputs copy the first (`low`) or last (`high`) source entry."""

    first: np.ndarray  # int64 [target], clamped into [0, source - 1]
    second: np.ndarray  # int64 [target], first + 1 clamped
    weight: np.ndarray  # float64 [target]
    low: np.ndarray  # bool [target]
    high: np.ndarray  # bool [target]


@functools.lru_cache(maxsize=64)
def ipp_taps(source: int, target: int) -> Taps:
    """IPP's taps along one axis (module docstring): pos = fma(j + 0.5, s / t, -0.5) in float64."""
    position = exact_fma(np.arange(target) + 0.5, source / target, -0.5, xp=np)
    floor = np.floor(position)
    first = floor.astype(np.int64)
    low, high = first < 0, first >= source - 1
    first = np.clip(first, 0, source - 1)
    return Taps(first, np.minimum(first + 1, source - 1), position - floor, low, high)


@functools.lru_cache(maxsize=64)
def opencv_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's own taps (sources with a side of 1): (first, second, weight of first, weight of second).

    Positions rounded to float32; out-of-range taps keep their weights here: the horizontal pass
    replaces them by the border (`ipp`-style masks are applied by the caller), the vertical one does not.
    """
    position = np.float32((np.arange(target) + 0.5) * (1.0 / (target / source)) - 0.5)
    first = np.floor(position).astype(np.int64)
    second_weight = (position - first.astype(np.float32)).astype(np.float32)
    first_weight = (np.float32(1.0) - second_weight).astype(np.float32)
    return first, first + 1, first_weight, second_weight


def _take(x: jax.Array, index: np.ndarray, axis: int) -> jax.Array:
    return jnp.take(x, jnp.asarray(index, jnp.int32), axis=axis)


def _opaque(x: jax.Array) -> jax.Array:
    """x, behind a select that LLVM cannot fold (finite x: the select never fires): a product passed
    through it is never fused into an addition. (An optimisation barrier does not stop LLVM's FMA
    contraction on XLA:CPU.)"""
    return jnp.where(jnp.isnan(x), jnp.zeros_like(x), x)


def _product(x: jax.Array, weight: jax.Array) -> jax.Array:
    """round(x * weight) in x's dtype, never fused into a following addition (`_opaque`)."""
    if x.dtype == jnp.float64:
        return exact_fma(x, weight, 0.0)
    return _opaque(x * weight)


def _blend(weight: jax.Array, difference: jax.Array, a: jax.Array) -> jax.Array:
    """round(weight * difference + a) in a's dtype: float64 by `exact_fma`; float32 through float64,
    where the float32 product is exact (so XLA's contraction cannot change it). Without x64, float32
    is left to XLA (fused on CPUs and GPUs: within an ulp of the rule either way)."""
    if a.dtype == jnp.float64:
        return exact_fma(weight, difference, a)
    if jax.config.jax_enable_x64:
        wide = weight.astype(jnp.float64) * difference.astype(jnp.float64) + a.astype(jnp.float64)
        return wide.astype(a.dtype)
    return a + weight * difference


def _lanes(dtype) -> int:
    """Columns per step of IPP's vector loops (two float64 or four float32: 128 bits)."""
    return 2 if dtype == jnp.float64 else 4


def _ipp_resize(image: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """IPP's bilinear resize of a map whose sides are both at least 2 (module docstring)."""
    columns, rows = ipp_taps(image.shape[1], shape[1]), ipp_taps(image.shape[0], shape[0])
    interior = np.flatnonzero(~columns.low & ~columns.high)
    tail = interior[interior.size - interior.size % _lanes(image.dtype):]  # the vector loops' leftovers

    weight = jnp.asarray(columns.weight[None, :], image.dtype)
    a, b = _take(image, columns.first, 1), _take(image, columns.second, 1)
    difference = b - a
    fused = _blend(weight, difference, a)
    fused = jnp.where(columns.low[None, :], image[:, :1], jnp.where(columns.high[None, :], image[:, -1:], fused))
    horizontal = fused
    if image.dtype != jnp.float64 and tail.size:  # float32 rows that feed interior rows: an unfused tail
        horizontal = fused.at[:, tail].set(a[:, tail] + _product(difference[:, tail], weight[:, tail]))

    weight = jnp.asarray(rows.weight[:, None], image.dtype)
    a, b = _take(horizontal, rows.first, 0), _take(horizontal, rows.second, 0)
    difference = b - a
    out = _blend(weight, difference, a)
    if tail.size:
        out = out.at[:, tail].set(a[:, tail] + _product(difference[:, tail], weight))
    return jnp.where(rows.low[:, None], fused[:1], jnp.where(rows.high[:, None], fused[-1:], out))


def _opencv_axis(x: jax.Array, target: int, axis: int) -> jax.Array:
    """One pass of OpenCV's own INTER_LINEAR (float32 positions, unfused a * w0 + b * w1)."""
    source = x.shape[axis]
    first, second, w0, w1 = opencv_taps(source, target)
    shape = [1, 1]
    shape[axis] = target
    a = _take(x, np.clip(first, 0, source - 1), axis)
    b = _take(x, np.clip(second, 0, source - 1), axis)
    w0, w1 = w0.astype(np.float64), w1.astype(np.float64)
    if axis == 1:  # horizontally an out-of-range tap copies the border (weight 1 on it)
        outside = (first < 0) | (first >= source - 1)
        w0, w1 = np.where(outside, 1.0, w0), np.where(outside, 0.0, w1)
    out = (_product(a, jnp.asarray(w0.reshape(shape), x.dtype))
           + _product(b, jnp.asarray(w1.reshape(shape), x.dtype)))
    if axis == 1:
        out = jnp.where(jnp.asarray(outside.reshape(shape)), a, out)  # an exact copy, as OpenCV's
    return out


def resize_bilinear(image: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Resize a float [h, w] map to `shape` as the organisers' `cv2.resize(..., INTER_LINEAR)` (module docstring)."""
    height, width = shape
    if tuple(image.shape) == (height, width):
        return image
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(f"resize_bilinear takes a prepared float map, got dtype {image.dtype}")
    if min(image.shape) == 1:
        return _opencv_axis(_opencv_axis(image, width, axis=1), height, axis=0)
    return _ipp_resize(image, (height, width))
