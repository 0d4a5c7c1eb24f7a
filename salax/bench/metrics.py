"""Scoring speed: salax.metrics.aim_frame_scores vs the organisers' per-frame NumPy algorithm.

Both score the same frames in the same run: FullHD uint8 ground truth, 70 fixations per frame, and a
prediction either at 1920x1080 or at the model size 224x384 (resized to the ground truth). The
baseline follows the organisers' `bench.py` frame by frame: float64 maps, `cv2.resize`, and AUC-Judd
comparing the whole map with each threshold. It scores AUC-Judd, CC, NSS and SIM; salax also
scores KLD. The last column is the largest difference between the two on frame 0. Needs OpenCV
(the `test` extra). On a GPU, salax runs there (jax's default device); the baseline stays on the CPU.
On a CPU salax uses its native kernel on all the cores this process may use (`--implementation xla`
times the pure-JAX code instead); the baseline, like the organisers' script, uses one.

    python -m salax.bench.metrics [--frames 64] [--batch 16] [--baseline-frames 3]
                                  [--implementation auto|native|xla]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from tqdm import tqdm

from salax import metrics, native_metrics

FULL_HD = (1080, 1920)
MODEL_SIZE = (224, 384)
EPS32 = np.finfo(np.float32).eps


def smooth_maps(rng: np.random.Generator, count: int, shape: tuple[int, int]) -> np.ndarray:
    """uint8 saliency-like maps: coarse noise upsampled smoothly, so values vary but ties exist."""
    import cv2

    maps = np.empty((count, *shape), np.uint8)
    for index in range(count):
        coarse = rng.random((9, 16)).astype(np.float32) ** 3
        smooth = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
        maps[index] = np.clip(255 * smooth / smooth.max(), 0, 255).astype(np.uint8)
    return maps


def organisers_frame(pred: np.ndarray, gt: np.ndarray, fixations: np.ndarray) -> dict[str, float]:
    """One frame the organisers' way (float64 NumPy), the baseline of this benchmark."""
    import cv2

    def read(raw):
        x = raw.astype(np.float64)
        x = x.mean(axis=2) if x.ndim == 3 else x
        return (x - x.min()) / (x.max() - x.min() + EPS32)

    g = read(gt)
    p = cv2.resize(read(pred), (g.shape[1], g.shape[0]))
    z = (p - p.mean()) / (p.std() + 1e-7)
    zg = (g - g.mean()) / (g.std() + 1e-7)
    thresholds = np.sort(p[fixations[:, 0], fixations[:, 1]])[::-1]
    n = len(thresholds)
    unique = np.unique(fixations, axis=1).shape[-1]
    above = np.array([np.sum(p >= t) for t in thresholds])
    k = np.arange(1, n + 1)
    tp = np.concatenate([[0.0], k / n, [1.0]])
    fp = np.concatenate([[0.0], (above - k) / (p.size - unique), [1.0]])
    return {
        "auc_judd": float(np.trapezoid(tp, fp)),
        "cc": float((z * zg).sum() / np.sqrt((z * z).sum() * (zg * zg).sum() + 1e-7)),
        "nss": float(z[fixations[:, 0], fixations[:, 1]].mean()),
        "sim": float(np.minimum(p / (p.sum() + 1e-7), g / (g.sum() + 1e-7)).sum()),
    }


def baseline_rate(pred, gt, fixations, frames: int) -> tuple[float, dict[str, float]]:
    """Frames per second of the organisers' algorithm, and its scores of frame 0."""
    start = time.perf_counter()
    scores = [organisers_frame(pred[index], gt[index], fixations[index])
              for index in tqdm(range(frames), desc="baseline", unit="frame", leave=False)]
    return frames / (time.perf_counter() - start), scores[0]


def salax_rate(pred, gt, fixations, counts, batch: int, repeats: int,
               implementation: str) -> tuple[float, dict]:
    """Frames per second of the fastest of `repeats` runs, after a compiling warm-up."""
    score = lambda: metrics.aim_frame_scores(pred, gt, fixations, counts, chunk_size=batch,
                                             implementation=implementation)
    metrics.aim_frame_scores(pred[:batch], gt[:batch], fixations[:batch], counts[:batch],
                             chunk_size=batch, implementation=implementation)
    best, scores = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        scores = score()
        best = min(best, time.perf_counter() - start)
    return len(gt) / best, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64,
                        help="frames scored by salax per run (default %(default)s)")
    parser.add_argument("--batch", type=int, default=16,
                        help="frames per jitted call, the chunk size (default %(default)s)")
    parser.add_argument("--baseline-frames", type=int, default=3,
                        help="frames scored by the slow baseline (default %(default)s)")
    parser.add_argument("--fixations", type=int, default=70,
                        help="fixations per frame (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="salax runs, the fastest counts (default %(default)s)")
    parser.add_argument("--implementation", choices=metrics.IMPLEMENTATIONS, default="auto",
                        help="salax's scoring code: the native CPU kernel, pure JAX, or auto "
                             "(native on CPUs where it was built; default)")
    args = parser.parse_args()
    if min(args.frames, args.batch, args.baseline_frames, args.fixations, args.repeats) < 1:
        parser.error("every count must be positive")

    rng = np.random.default_rng(0)
    distinct = min(args.frames, 8)  # cycle a few maps: making 1080p maps is not what is measured
    cycle = np.arange(args.frames) % distinct
    gt = smooth_maps(rng, distinct, FULL_HD)[cycle]
    predictions = {size: smooth_maps(rng, distinct, size)[cycle] for size in (FULL_HD, MODEL_SIZE)}
    fixations = np.stack([rng.integers(0, FULL_HD[0], (args.frames, args.fixations)),
                          rng.integers(0, FULL_HD[1], (args.frames, args.fixations))], axis=-1)
    counts = np.full(args.frames, args.fixations)

    rows = []
    for size, pred in predictions.items():
        fast, scores = salax_rate(pred, gt, fixations, counts, args.batch, args.repeats,
                                  args.implementation)
        slow, reference = baseline_rate(pred, gt, fixations, min(args.baseline_frames, args.frames))
        diff = max(abs(float(scores[name][0]) - value) for name, value in reference.items())
        rows.append(f"| {size[1]}x{size[0]} uint8 | {fast:.1f} | {1e3 / fast:.2f} | {slow:.2f} | "
                    f"{fast / slow:.0f}x | {diff:.1e} |")
    implementation = metrics.resolve_implementation(args.implementation)
    cores = f", {native_metrics.default_threads()} threads" if implementation == "native" else ""
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), salax {implementation}"
          f"{cores}, {args.frames} frames, batch {args.batch}, {args.fixations} fixations per frame, "
          "ground truth 1920x1080 uint8")
    print("| prediction | salax frames/s | salax ms/frame | baseline frames/s | ratio | max abs diff |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
