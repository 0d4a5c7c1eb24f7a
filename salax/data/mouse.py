"""Mouse-tracking preprocessing: raw cursor tracks -> per-frame fixations -> continuous saliency maps.

AViMoS observers steered a sharp window over a blurred video with the mouse, so the cursor follows
attention with a lag. The organisers resampled each track to 100 Hz by linear interpolation, shifted it
by 300 ms, read every observer's point at each frame's time, and blurred the fixation counts with a
Gaussian. They published no code; this is our implementation of that description.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "resample_track",
    "gaze_track",
    "points_at_times",
    "frame_times_ms",
    "fixations_from_tracks",
    "saliency_map",
]

Track = tuple[np.ndarray, np.ndarray]  # (timestamps in ms [n], cursor (x, y) [n, 2])


def _check_track(times_ms: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    times_ms = np.asarray(times_ms, np.float64)
    xy = np.asarray(xy, np.float64)
    if times_ms.ndim != 1 or xy.shape != (len(times_ms), 2):
        raise ValueError(f"a track needs times [n] and (x, y) [n, 2]; got {times_ms.shape}, {xy.shape}")
    if len(times_ms) < 2:
        raise ValueError(f"a track needs at least 2 samples to interpolate, got {len(times_ms)}")
    if not np.all(np.diff(times_ms) > 0):
        raise ValueError("track timestamps must be strictly increasing")
    return times_ms, xy


def resample_track(times_ms, xy, *, rate_hz: float = 100.0) -> Track:
    """Linearly interpolate an irregular cursor track onto a uniform grid from its first sample."""
    times_ms, xy = _check_track(times_ms, xy)
    step = 1000.0 / rate_hz
    grid = times_ms[0] + step * np.arange(int(np.floor((times_ms[-1] - times_ms[0]) / step + 1e-9)) + 1)
    resampled = np.stack([np.interp(grid, times_ms, xy[:, axis]) for axis in range(2)], axis=-1)
    return grid, resampled


def gaze_track(times_ms, xy, *, rate_hz: float = 100.0, shift_ms: float = 300.0) -> Track:
    """The resampled track moved `shift_ms` earlier: the cursor at t shows where attention was at
    t - shift_ms (positive = the cursor lags; negative shifts are allowed)."""
    grid, resampled = resample_track(times_ms, xy, rate_hz=rate_hz)
    return grid - shift_ms, resampled


def points_at_times(track: Track, query_ms: np.ndarray) -> np.ndarray:
    """(x, y) [len(query), 2] linearly interpolated on the track; NaN where the track has no data."""
    grid, values = track
    query_ms = np.asarray(query_ms, np.float64)
    points = np.stack([np.interp(query_ms, grid, values[:, axis]) for axis in range(2)], axis=-1)
    outside = (query_ms < grid[0] - 1e-9) | (query_ms > grid[-1] + 1e-9)
    points[outside] = np.nan
    return points


def frame_times_ms(num_frames: int, fps: float) -> np.ndarray:
    """Presentation time of each frame in ms (frame i starts at i / fps)."""
    return 1000.0 * np.arange(num_frames) / fps


def fixations_from_tracks(
    tracks: Iterable[Track],
    *,
    num_frames: int,
    fps: float,
    map_size: tuple[int, int],
    track_size: tuple[int, int] | None = None,
    shift_ms: float = 300.0,
    rate_hz: float = 100.0,
) -> list[list[list[int]]]:
    """Per frame, every observer's integer [row, col] on the map grid, in fixations.json layout.

    `track_size` is the (width, height) of the pixel space the cursor was recorded in; None means
    coordinates are normalised to [0, 1]. Duplicates are kept; points off the map are dropped.
    """
    height, width = map_size
    scale_x, scale_y = (width, height) if track_size is None else (
        width / track_size[0], height / track_size[1])
    times = frame_times_ms(num_frames, fps)
    per_observer = []
    for times_ms, xy in tracks:
        points = points_at_times(gaze_track(times_ms, xy, rate_hz=rate_hz, shift_ms=shift_ms), times)
        with np.errstate(invalid="ignore"):
            cols = np.floor(points[:, 0] * scale_x)
            rows = np.floor(points[:, 1] * scale_y)
            inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        per_observer.append((rows, cols, inside))
    return [
        [[int(rows[frame]), int(cols[frame])] for rows, cols, inside in per_observer if inside[frame]]
        for frame in range(num_frames)
    ]


def _gaussian_profiles(centres: np.ndarray, length: int, sigma: float) -> np.ndarray:
    offsets = np.arange(length, dtype=np.float32)[None, :] - centres[:, None].astype(np.float32)
    return np.exp(-0.5 * (offsets / sigma) ** 2)


def saliency_map(points: Sequence[Sequence[int]], size: tuple[int, int], sigma: float) -> np.ndarray:
    """The fixation count map blurred with a Gaussian of `sigma` px, min-max normalised to [0, 1].

    The blur is separable and the map sparse, so it is built as a sum of outer products of 1-D
    profiles, one per fixation (no truncation, zero outside the frame): O(N (H + W) + N H W) in BLAS.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    height, width = size
    points = np.asarray(points, np.float32).reshape(-1, 2)
    if len(points) == 0:
        return np.zeros(size, np.float32)
    blurred = _gaussian_profiles(points[:, 0], height, sigma).T @ _gaussian_profiles(
        points[:, 1], width, sigma)
    low, high = blurred.min(), blurred.max()
    if high <= low:
        return np.zeros(size, np.float32)
    return ((blurred - low) / (high - low)).astype(np.float32)
