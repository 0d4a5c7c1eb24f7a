"""Scoring speed: salax.metrics.aim_frame_scores vs the organisers' per-frame NumPy algorithm.

Both score the same frames in the same run, 70 fixations per frame, the four AIM ranking metrics
(AUC-Judd, CC, NSS, SIM; KLD is not asked for, as AIM does not rank by it). The default rows are
what AViMoS scoring meets: a 10-bit ground truth (a 10-bit map video: values 0..1023, smooth) at
1920x1080 against an 8-bit prediction at 1920x1080, or at a model resolution (398x224, 384x216)
resized to the ground truth. `--extra` adds an 8-bit ground truth row. The baseline gets the frames
as the organisers' script reads them, 3-channel PNG frames of gray map videos (equal channels), and
follows their `bench.py` frame by frame: `read_sm` (float64 channel means), `cv2.resize`, AUC-Judd
comparing the whole map with each threshold. salax gets the same frames as [H, W, 1] (what
`salax.data.media` hands the scorer for equal channels: the same float64 preparation, one channel
read). The last column is the largest difference between the two on frame 0. Needs OpenCV (the
`test` extra). On a GPU salax runs there (jax's default device) and the baseline on the CPU. On a CPU
salax uses its native kernel on all the cores this process may use (`--implementation xla` times the
pure-JAX code); the baseline, like the organisers' script, uses one.

    python -m salax.bench.metrics [--frames 64] [--batch 16] [--baseline-frames 3] [--extra]
                                  [--implementation auto|native|xla]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from tqdm import tqdm

from salax import metrics
from salax.metrics import native

FULL_HD = (1080, 1920)
MODEL_SIZES = ((224, 398), (216, 384))
EPS32 = np.finfo(np.float32).eps


def smooth_maps(rng: np.random.Generator, count: int, shape: tuple[int, int], levels: int = 256,
                dtype=np.uint8) -> np.ndarray:
    """Saliency-like maps with `levels` values: coarse noise upsampled smoothly (dark background,
    a few bright blobs), so values vary but ties exist."""
    import cv2

    maps = np.empty((count, *shape), dtype)
    for index in range(count):
        coarse = rng.random((9, 16)).astype(np.float32) ** 3
        smooth = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
        maps[index] = np.clip(np.round((levels - 1) * smooth / smooth.max()), 0, levels - 1).astype(dtype)
    return maps


def organisers_frame(pred: np.ndarray, gt: np.ndarray, fixations: np.ndarray) -> dict[str, float]:
    """One frame the organisers' way (float64 NumPy), the baseline of this benchmark."""
    import cv2

    def read(raw):  # their read_sm: float64 for channel means, NumPy's promotion otherwise
        x = raw.mean(axis=2) if raw.ndim == 3 else raw
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
    """Frames per second of the organisers' algorithm on 3-channel frames, and its scores of frame 0."""
    def png(frame):  # the 3-channel PNG frame ffmpeg writes for a gray map video
        return np.repeat(frame, 3, axis=-1)

    start = time.perf_counter()
    scores = [organisers_frame(png(pred[index]), png(gt[index]), fixations[index])
              for index in tqdm(range(frames), desc="baseline", unit="frame", leave=False)]
    return frames / (time.perf_counter() - start), scores[0]


def salax_rate(pred, gt, fixations, counts, batch: int, repeats: int,
               implementation: str) -> tuple[float, dict]:
    """Frames per second of the fastest of `repeats` runs, after a compiling warm-up."""
    def score(frames: slice) -> dict:
        return metrics.aim_frame_scores(pred[frames], gt[frames], fixations[frames], counts[frames],
                                        chunk_size=batch, implementation=implementation,
                                        metrics=metrics.RANKING_METRICS)

    score(slice(0, batch))
    best, scores = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        scores = score(slice(None))
        best = min(best, time.perf_counter() - start)
    return len(gt) / best, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64,
                        help="frames scored by salax per run (default %(default)s)")
    parser.add_argument("--batch", type=int, default=16,
                        help="frames per call, the chunk size (default %(default)s)")
    parser.add_argument("--baseline-frames", type=int, default=3,
                        help="frames scored by the slow baseline per row (default %(default)s)")
    parser.add_argument("--fixations", type=int, default=70,
                        help="fixations per frame (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="salax runs, the fastest counts (default %(default)s)")
    parser.add_argument("--extra", action="store_true",
                        help="also time an 8-bit ground truth (uint8 frames) against a 1080p prediction")
    parser.add_argument("--implementation", choices=metrics.IMPLEMENTATIONS, default="auto",
                        help="salax's scoring code: the native CPU kernel, pure JAX, or auto "
                             "(native on CPUs where it was built; default)")
    args = parser.parse_args()
    if min(args.frames, args.batch, args.baseline_frames, args.fixations, args.repeats) < 1:
        parser.error("every count must be positive")

    rng = np.random.default_rng(0)
    # Frames [N, H, W, 1]: a channel axis of 1, as the scorer's decoder gives gray map videos.
    distinct = min(args.frames, 8)  # cycle a few maps: making 1080p maps is not what is measured
    cycle = np.arange(args.frames) % distinct
    def frames(shape, **kind):
        return smooth_maps(rng, distinct, shape, **kind)[cycle, ..., None]

    truth_10bit = frames(FULL_HD, levels=1024, dtype=np.uint16)
    rows = [(f"{FULL_HD[1]}x{FULL_HD[0]} uint8", "10-bit", frames(FULL_HD), truth_10bit)]
    rows += [(f"{size[1]}x{size[0]} uint8, resized", "10-bit", frames(size), truth_10bit) for size in MODEL_SIZES]
    if args.extra:
        rows.append((f"{FULL_HD[1]}x{FULL_HD[0]} uint8", "8-bit", frames(FULL_HD), frames(FULL_HD)))
    fixations = np.stack([rng.integers(0, FULL_HD[0], (args.frames, args.fixations)),
                          rng.integers(0, FULL_HD[1], (args.frames, args.fixations))], axis=-1)
    counts = np.full(args.frames, args.fixations)

    lines = []
    for prediction, truth, pred, gt in rows:
        fast, scores = salax_rate(pred, gt, fixations, counts, args.batch, args.repeats, args.implementation)
        slow, reference = baseline_rate(pred, gt, fixations, min(args.baseline_frames, args.frames))
        diff = max(abs(float(scores[name][0]) - value) for name, value in reference.items())
        lines.append(f"| {prediction} | {truth} | {fast:.1f} | {1e3 / fast:.2f} | {slow:.2f} | "
                     f"{fast / slow:.0f}x | {diff:.1e} |")
    implementation = metrics.resolve_implementation(args.implementation)
    kernel = ""
    if implementation == "native":
        kernel = f" ({'AVX2' if native.built_for_avx2() else 'portable'}), {native.default_threads()} threads"
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), salax {implementation}{kernel}, "
          f"{args.frames} frames, batch {args.batch}, {args.fixations} fixations per frame, ground truth "
          f"{FULL_HD[1]}x{FULL_HD[0]}")
    print("| prediction | ground truth | salax frames/s | salax ms/frame | baseline frames/s | ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
