"""Aggregation of per-frame scores (host side, float64): per video, per split, pooled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import NamedTuple

import numpy as np


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
