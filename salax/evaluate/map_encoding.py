"""Predicted maps as a submission holds them: resized once to the video's size, stretched, 8 bits.

The one home of the rule that `salax.predict` writes by and that `salax.evaluate --workdir` scores
"as submitted" by, so that both give the same frames:

1. each model-grid map is resized to the output size with the AIM scorer's bilinear
   (`salax.metrics.resize_bilinear`, OpenCV/IPP-exact: under x64 where the backend has float64, as
   scoring runs it), and clipped to [0, 1];
2. each frame is min-max stretched to [0, 1] (zeros if flat), as AViMoS's maps are. The AIM scores
   min-max every frame first, so this changes no score of the float map; it spreads a model's
   probabilities (often within [0, 0.1]) over all 256 levels instead of a few dozen;
3. rounded to the nearest of 256 levels (uint8), which `salax.data.media.write_map_video` stores
   losslessly (x264 qp 0, full range) and the submission scorer decodes back exactly.

Step 3 is where the two score sets of `salax.evaluate --workdir` part: a map's near-zero tail becomes
level 0, and AUC-Judd counts every pixel at or above a fixation's value, so fixations in the tail tie
with the whole tail.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from salax import metrics
from salax.data import media

__all__ = ["LEVELS", "PRESET", "RESIZE_PIXELS", "encode", "levels", "resized", "stretched", "write_video"]

LEVELS = 255  # the top level of an 8-bit map
RESIZE_PIXELS = 2**25  # output pixels resized per call: 16 maps at 1080p, 4 at 4K (134 MB of float32)
PRESET = "veryfast"  # x264 preset of the map videos: lossless anyway; 1.6x faster than medium, 20% larger


@functools.partial(jax.jit, static_argnums=1)
def _resize(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
    return jnp.clip(jax.vmap(lambda m: metrics.resize_bilinear(m, size))(maps), 0.0, 1.0)


def resized(maps: np.ndarray, size: Sequence[int], *, batch: int) -> Iterator[np.ndarray]:
    """float32 [H, W] maps in [0, 1] at `size`, one per map of `maps` [n, h, w], in order.

    Resized `batch` maps at a time (fewer when that would exceed RESIZE_PIXELS), each call padded to
    the same count so that the resize compiles once per size.
    """
    size = (int(size[0]), int(size[1]))
    maps = np.asarray(maps, np.float32)
    chunk = max(1, min(batch, RESIZE_PIXELS // (size[0] * size[1])))
    for first in range(0, len(maps), chunk):
        part = maps[first:first + chunk]
        padded = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)])
        with metrics.exact_float64():  # the resize rule's float64 steps, as scoring runs it
            values = np.asarray(_resize(padded, size))
        yield from values[: len(part)]


def stretched(values: np.ndarray) -> np.ndarray:
    """A map min-max normalised to [0, 1] (zeros if flat)."""
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def levels(values: np.ndarray) -> np.ndarray:
    """A map at its output size -> the uint8 [H, W] frame a submission holds (stretched, rounded)."""
    return np.rint(stretched(values) * LEVELS).astype(np.uint8)


def encode(maps: Iterable[np.ndarray] | np.ndarray, size: Sequence[int], *, batch: int = 32) -> Iterator[np.ndarray]:
    """Model-grid maps [h, w] -> the uint8 [H, W] frames of their submission video at `size`, streamed."""
    pending: list[np.ndarray] = []
    for values in maps:
        pending.append(np.asarray(values, np.float32))
        if len(pending) == batch:
            yield from map(levels, resized(np.stack(pending), size, batch=batch))
            pending.clear()
    if pending:
        yield from map(levels, resized(np.stack(pending), size, batch=batch))


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], *, fps: float, preset: str = PRESET) -> None:
    """Write uint8 frames (`encode`'s) as the submission's lossless 8-bit grey mp4 (a local path)."""
    # level / 255 is rounded back to the same level by the 8-bit writer.
    media.write_map_video(path, (frame / LEVELS for frame in frames), fps=fps, bit_depth=8, preset=preset)
