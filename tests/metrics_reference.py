"""The organisers' per-frame route (`bench.py` of msu-video-group/ECCVW24_Saliency_Prediction), transcribed.

Every operation is theirs, in their order and with their dtypes, so that under their pinned numpy 1.24.2
and opencv-python 4.7.0.72 (tests/organisers_oracle.py runs this file there) the results are theirs bit
for bit; under newer NumPy the same code gives the same dtypes for what `cv2.imread` returns (uint8 /
uint16 arrays, float32 `eps` scalar: NEP 50 changes nothing here). Only the file reading is left out:
`prepare` takes the array `cv2.imread(path, cv2.IMREAD_UNCHANGED)` would return.

Deliberately simple (AUC-Judd compares the whole map with every threshold), so that it is obviously
right; salax.metrics must agree with it. Runs as a script too (see `main`), for the pinned venv.
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np

EPS32 = np.finfo(np.float32).eps  # a float32 scalar, as in bench.py: it keeps uint8/uint16 maps in float32
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 1.24 has only trapz (the same sums)


def _widened(img: np.ndarray) -> np.ndarray:
    """Inputs `cv2.imread` never returns, where `read_sm` would fail or lose what they hold, made into
    equivalent ones (salax.metrics.prepare's documented rule): bool -> uint8, a signed 2-D map of at most
    16 bits -> its offset from the minimum as uint16 (same float32 arithmetic), float16/float32 -> float64
    (read_sm would compute in float32 or float16, and overflow on 3e38)."""
    if img.dtype == np.bool_:
        return img.astype(np.uint8)
    if img.dtype.kind == "f":
        return img.astype(np.float64)
    if img.ndim == 2 and img.dtype.kind == "i" and img.dtype.itemsize <= 2:
        return (img.astype(np.int64) - img.min()).astype(np.uint16)
    return img


def prepare(img: np.ndarray) -> np.ndarray:
    """`read_sm` after `cv2.imread`: the channel mean (float64 for integers), then min-max with eps32."""
    assert len(img.shape) in (2, 3)
    img = _widened(img)
    img = img.mean(axis=2) if len(img.shape) == 3 else img
    return (img - img.min()) / (img.max() - img.min() + EPS32)


def resize(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bench.py's `cv2.resize(pred, (W, H))`: the default interpolation, INTER_LINEAR."""
    return cv2.resize(saliency, (shape[1], shape[0]))


def nss(s_map: np.ndarray, gt: np.ndarray) -> float:
    s_map_norm = (s_map - np.mean(s_map)) / (np.std(s_map) + 1e-7)
    return float(np.mean(s_map_norm[gt[:, 0], gt[:, 1]]))


def sim(s_map: np.ndarray, gt: np.ndarray) -> float:
    s_map = s_map / (np.sum(s_map) + 1e-7)
    gt = gt / (np.sum(gt) + 1e-7)
    return float(np.sum(np.minimum(s_map, gt)))


def cc(s_map: np.ndarray, gt: np.ndarray) -> float:
    a = (s_map - np.mean(s_map)) / (np.std(s_map) + 1e-7)
    b = (gt - np.mean(gt)) / (np.std(gt) + 1e-7)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-7))


def kld(s_map: np.ndarray, gt: np.ndarray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        s_map = s_map / (np.sum(s_map) * 1.0)
        gt = gt / (np.sum(gt) * 1.0)
        return float(np.sum(gt * np.log(2.2204e-16 + gt / (s_map + 2.2204e-16))))


def auc_judd(S: np.ndarray, F: np.ndarray, corrected: bool = False) -> float:
    """Their AUC-Judd; `corrected` counts distinct fixated pixels instead of unique columns of F."""
    Sth = S[F[:, 0], F[:, 1]]
    n = len(Sth)
    unique = len(np.unique(F, axis=0)) if corrected else np.unique(F, axis=1).shape[-1]
    possible = np.prod(S.shape) + (n - unique)
    thresholds = np.sort(Sth)[::-1]
    tp = np.zeros(n + 2)
    fp = np.zeros(n + 2)
    tp[-1] = fp[-1] = 1
    above = np.sum(S >= thresholds[:, np.newaxis, np.newaxis], axis=(1, 2))
    k = np.arange(1, n + 1)
    fp[1:-1] = (above - k) / (possible - n)
    tp[1:-1] = k / n
    return float(_trapezoid(tp, fp))


def frame_scores(pred: np.ndarray, gt: np.ndarray, fixations: np.ndarray,
                 corrected: bool = False) -> dict[str, float]:
    """All five metrics of one frame from raw maps, as the organisers' `calculate_frame_metrics` (+ KLD)."""
    g = prepare(gt)
    p = resize(prepare(pred), g.shape)
    return {"auc_judd": auc_judd(p, fixations, corrected), "cc": cc(p, g), "nss": nss(p, fixations),
            "sim": sim(p, g), "kld": kld(p, g)}


def main(argv: list[str]) -> int:
    """`python metrics_reference.py DIR`: DIR/cases.json lists frames whose arrays are DIR/<name>.npy
    (`pred`, `gt`, `fixations`; `corrected` optional). Writes per case DIR/<i>.prepared.npy,
    DIR/<i>.resized.npy, DIR/<i>.truth.npy and DIR/scores.json (a list of score dicts)."""
    directory = argv[0]
    with open(f"{directory}/cases.json") as handle:
        cases = json.load(handle)
    scores = []
    for index, case in enumerate(cases):
        pred = np.load(f"{directory}/{case['pred']}.npy")
        gt = np.load(f"{directory}/{case['gt']}.npy")
        fixations = np.load(f"{directory}/{case['fixations']}.npy")
        prepared, truth = prepare(pred), prepare(gt)
        np.save(f"{directory}/{index}.prepared.npy", prepared)
        np.save(f"{directory}/{index}.truth.npy", truth)
        np.save(f"{directory}/{index}.resized.npy", resize(prepared, truth.shape))
        scores.append(frame_scores(pred, gt, fixations, case.get("corrected", False)) if len(fixations) else {})
    with open(f"{directory}/scores.json", "w") as handle:
        json.dump({"versions": {"numpy": np.__version__, "cv2": cv2.__version__}, "scores": scores}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
