"""A float64 NumPy oracle written straight from the AIM scoring rules, one frame at a time.

Deliberately simple (AUC-Judd compares the whole map with every threshold and integrates with
`np.trapezoid`), so that it is obviously right; salax.metrics must agree with it.
"""

from __future__ import annotations

import cv2
import numpy as np

EPS32 = np.finfo(np.float32).eps


def prepare(raw: np.ndarray) -> np.ndarray:
    x = raw.astype(np.float64)
    if x.ndim == 3:
        x = x.mean(axis=2)
    return (x - x.min()) / (x.max() - x.min() + EPS32)


def resize(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(saliency, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def nss(p: np.ndarray, fixations: np.ndarray) -> float:
    z = (p - p.mean()) / (p.std() + 1e-7)
    return float(z[fixations[:, 0], fixations[:, 1]].mean())


def sim(p: np.ndarray, g: np.ndarray) -> float:
    return float(np.minimum(p / (p.sum() + 1e-7), g / (g.sum() + 1e-7)).sum())


def cc(p: np.ndarray, g: np.ndarray) -> float:
    a = (p - p.mean()) / (p.std() + 1e-7)
    b = (g - g.mean()) / (g.std() + 1e-7)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-7))


def kld(p: np.ndarray, g: np.ndarray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        p, g = p / p.sum(), g / g.sum()
        return float(np.sum(g * np.log(2.2204e-16 + g / (p + 2.2204e-16))))


def auc_judd(p: np.ndarray, fixations: np.ndarray, corrected: bool = False) -> float:
    thresholds = np.sort(p[fixations[:, 0], fixations[:, 1]])[::-1]
    n = len(thresholds)
    if corrected:
        unique = len(np.unique(fixations, axis=0))
    else:
        unique = np.unique(fixations, axis=1).shape[-1]
    possible = p.size + n - unique
    above = np.array([(p >= t).sum() for t in thresholds])
    k = np.arange(1, n + 1)
    tp = np.concatenate([[0.0], k / n, [1.0]])
    fp = np.concatenate([[0.0], (above - k) / (possible - n), [1.0]])
    return float(np.trapezoid(tp, fp))


def frame_scores(pred: np.ndarray, gt: np.ndarray, fixations: np.ndarray,
                 corrected: bool = False) -> dict[str, float]:
    """All five metrics of one frame from raw maps, as the organisers' `calculate_frame_metrics`."""
    g = prepare(gt)
    p = resize(prepare(pred), g.shape)
    return {"auc_judd": auc_judd(p, fixations, corrected), "cc": cc(p, g), "nss": nss(p, fixations),
            "sim": sim(p, g), "kld": kld(p, g)}
