"""Clip geometry and model input: which frames make a clip, its audio window, resizing, normalisation.

The rules training, evaluation and prediction share (no TFDS, no grain, so any tool can use them):

- A clip of T frames ending at frame e holds frames e - (T-1)·stride, ..., e - stride, e. Indices
  before the first frame repeat the first frame: this pads the start of every video, and videos
  shorter than the clip's span.
- Its audio window is the S samples that end where frame e leaves the screen; sound before the
  video or after its track is silence. S defaults to the clip's span at the build's frame rate.
- Frames, maps and fixations are resized whole to the model input (no crop); frames are then
  ImageNet-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from salax import batch
from salax.data import avimos

__all__ = [
    "audio_window",
    "audio_window_until",
    "clip_span",
    "default_audio_samples",
    "frame_indices",
    "normalise",
    "rescale_points",
    "resize_antialiased",
]


def clip_span(clip_frames: int, stride: int) -> int:
    """Source frames from a clip's first to its last frame, both included."""
    return (clip_frames - 1) * stride + 1


def frame_indices(end: int, clip_frames: int, stride: int) -> np.ndarray:
    """The frame indices of the clip ending at `end`; before the video starts, the first frame (0)."""
    return np.maximum(end - stride * np.arange(clip_frames - 1, -1, -1), 0)


def default_audio_samples(clip_frames: int, stride: int, fps: float | None) -> int:
    """Samples covering the clip's span at the build's frame rate (AViMoS's 30 fps when native)."""
    return round(clip_frames * stride * batch.AUDIO_SAMPLE_RATE / (fps or avimos.NOMINAL_FPS))


def _window(audio: np.ndarray, stop: int, num_samples: int) -> np.ndarray:
    start = stop - num_samples
    window = np.zeros(num_samples, np.float32)
    lo, hi = max(start, 0), min(stop, len(audio))
    if hi > lo:
        window[lo - start : hi - start] = audio[lo:hi]
    return window


def audio_window(audio: np.ndarray, end: int, fps: float, num_samples: int) -> np.ndarray:
    """The `num_samples` samples ending where frame `end` of a constant-rate video leaves the screen."""
    return _window(audio, round((end + 1) * batch.AUDIO_SAMPLE_RATE / fps), num_samples)


def audio_window_until(audio: np.ndarray, stop_seconds: float, num_samples: int) -> np.ndarray:
    """The `num_samples` samples ending at `stop_seconds` after the first frame (any frame timing)."""
    return _window(audio, round(stop_seconds * batch.AUDIO_SAMPLE_RATE), num_samples)


def resize_antialiased(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize to `size` (height, width) of a uint8 RGB frame or a 2-D map (uint8 or float).

    Pillow's bilinear: half-pixel centres; when shrinking the kernel widens with the scale, so small
    targets average the pixels they cover instead of aliasing. Upscaling is OpenCV's INTER_LINEAR.
    Used for storage, model input and overlays; scoring resizes with `salax.metrics` instead.
    """
    size = (int(size[0]), int(size[1]))
    if image.shape[:2] == size:
        return image
    if image.ndim == 2 and image.dtype != np.uint8:
        image = np.ascontiguousarray(image, dtype=np.float32)  # Pillow mode "F"
    resized = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def rescale_points(points: np.ndarray, source: Sequence[int], target: Sequence[int]) -> np.ndarray:
    """(row, col) pixel indices on a `source` grid -> the pixels of a `target` grid holding their centres."""
    scale = np.array(target, np.float64) / np.array(source, np.float64)
    scaled = np.floor((points + 0.5) * scale).astype(np.int32)
    return np.minimum(scaled, np.array(target, np.int32) - 1)


_SCALE = 1 / (255 * batch.IMAGENET_STD)
_OFFSET = -batch.IMAGENET_MEAN / batch.IMAGENET_STD


def normalise(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., W, 3] -> float32 ImageNet-normalised: (x / 255 - mean) / std as a multiply-add.

    Works on whole image rows: numpy is slow when broadcasting over a last axis of only 3 channels.
    """
    values = frames.astype(np.float32)
    rows = values.reshape(-1, frames.shape[-2] * 3)
    rows *= np.tile(_SCALE, frames.shape[-2])
    rows += np.tile(_OFFSET, frames.shape[-2])
    return values
