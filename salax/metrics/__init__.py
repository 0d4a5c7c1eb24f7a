"""Saliency metrics exact to the AIM 2024 scoring rules (AViMoS, the organisers' `bench.py`).

    from salax import metrics
    scores = metrics.aim_frame_scores(pred, gt, fixations, num_fixations)   # {name: float32 [B]}
    split = metrics.aim_means([scores_video_1, scores_video_2])

Modules, each one concept: `rules` (the per-frame rules in JAX, on prepared maps), `prepare` (the
AIM preparation and OpenCV's bilinear resize), `scores` (`aim_frame_scores`: checks, implementation
choice, chunks), `native` (the C++ kernel's entry points; sources in csrc/), `means` (aggregation).
The metrics know nothing of models or data.
"""

from salax.metrics.means import MetricMeans, aim_means, pooled_means, video_means
from salax.metrics.prepare import prepare_map, resize_bilinear
from salax.metrics.rules import (
    METRIC_NAMES,
    RANKING_METRICS,
    auc_judd,
    auc_judd_mit,
    auc_shuffled,
    cc,
    draw_shuffled_negatives,
    kld,
    nss,
    sim,
)
from salax.metrics.scores import IMPLEMENTATIONS, aim_frame_scores, exact_float64, resolve_implementation

__all__ = [
    "IMPLEMENTATIONS", "METRIC_NAMES", "RANKING_METRICS", "MetricMeans", "aim_frame_scores", "aim_means", "auc_judd",
    "auc_judd_mit", "auc_shuffled", "cc", "draw_shuffled_negatives", "exact_float64", "kld", "nss", "pooled_means",
    "prepare_map", "resize_bilinear", "resolve_implementation", "sim", "video_means",
]
