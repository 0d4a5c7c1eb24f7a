"""Submission scoring, end to end: salax.evaluate vs the organisers' route, same videos, same cores.

Makes a handful of AViMoS-like test videos: 1080p 10-bit lossless grey map videos (libx264 qp 0, as
the ground truth ships; one of them vertical), about 70 fixations per frame drawn from the maps, and
8-bit prediction videos at model resolution. Then, in the same run, on the same cores:

- salax: `salax.evaluate.submission.score_submission` (PyAV streams both videos, the CLI's PNG arrays
  without files, the native kernel), one worker per core;
- the organisers' route (their `bench.py`): `ffmpeg -v error -i VIDEO DIR/%03d.png` for every video
  of both sides (a thread pool of the same size), then per video a process pool of the same size over
  the frames, each frame read with `cv2.imread` and scored by the per-frame NumPy rules
  (`salax.bench.metrics.organisers_frame`: float64, `cv2.resize`, AUC-Judd over the whole map);
- decode only: PyAV decoding both videos of every name, nothing else, on a pool of the same size with
  salax's decoder settings (`submission.core_share`): the floor for salax, which must decode both.

Prints the three times, the ratios, the scratch disk each route needed, and the largest difference
between the two routes' per-video means. Needs the ffmpeg CLI and OpenCV (the `test` extra).

    python -m salax.bench.evaluate [--videos 4] [--frames 60] [--workers N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from multiprocessing.pool import ThreadPool
import os
from pathlib import Path
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

from salax.bench.metrics import organisers_frame
from salax.data import avimos, media
from salax.evaluate import submission

FULL_HD = (1080, 1920)
MODEL_SIZE = (216, 384)  # a prediction's (height, width) for a landscape video; transposed for vertical ones
FIXATIONS = 70
FPS = 30


def blob_maps(rng: np.random.Generator, frames: int, shape: tuple[int, int], centres: np.ndarray) -> np.ndarray:
    """Smooth saliency-like maps in [0, 1]: a few Gaussian blobs drifting over the frame, [frames, H, W]."""
    rows = (np.arange(shape[0], dtype=np.float32) / shape[0])[:, None]
    cols = (np.arange(shape[1], dtype=np.float32) / shape[1])[None, :]
    drift = rng.normal(0, 0.003, centres.shape)
    maps = np.empty((frames, *shape), np.float32)
    for index in range(frames):
        value = np.zeros(shape, np.float32)
        for (row, col), (d_row, d_col) in zip(centres, drift):
            value += np.exp(-((rows - row - d_row * index) ** 2 + (cols - col - d_col * index) ** 2) / 0.01)
        maps[index] = value / value.max()
    return maps


def draw_fixations(rng: np.random.Generator, maps: np.ndarray) -> list[list[list[int]]]:
    """About FIXATIONS (row, col) points per frame, drawn with probability proportional to the map."""
    entries = []
    for values in maps[:, ::4, ::4]:
        weights = values.ravel() / values.sum()
        picks = rng.choice(weights.size, size=FIXATIONS, p=weights)
        rows, cols = np.divmod(picks, values.shape[1])
        entries.append(np.stack([rows * 4, cols * 4], axis=1).tolist())
    return entries


def data_paths(root: Path) -> dict[str, Path]:
    return {"predictions": root / "predictions", "gt_saliency": root / avimos.SALIENCY_DIRS[1],
            "gt_fixations": root / avimos.FIXATION_DIRS[1], "split_json": root / avimos.SPLIT_FILE}


def make_data(root: Path, videos: int, frames: int) -> dict[str, Path]:
    """The test split's layout: truth videos, fixations, predictions and the split file under `root`."""
    rng = np.random.default_rng(0)
    paths = data_paths(root)
    names = [f"{index:04d}" for index in range(videos)]
    for index, name in enumerate(tqdm(names, desc="writing 1080p 10-bit truth and predictions", unit="video")):
        vertical = index == 1
        truth_shape = FULL_HD[::-1] if vertical else FULL_HD
        model_shape = MODEL_SIZE[::-1] if vertical else MODEL_SIZE
        centres = rng.random((3, 2)) * 0.6 + 0.2
        truth = blob_maps(rng, frames, truth_shape, centres)
        media.write_map_video(paths["gt_saliency"] / f"{name}.mp4", truth, fps=FPS, bit_depth=10)
        fixations = paths["gt_fixations"] / name / avimos.FIXATIONS_FILE
        fixations.parent.mkdir(parents=True)
        fixations.write_text(json.dumps(draw_fixations(rng, truth)))
        guess = blob_maps(rng, frames, model_shape, centres + rng.normal(0, 0.05, centres.shape))
        media.write_map_video(paths["predictions"] / f"{name}.mp4", guess, fps=FPS, bit_depth=8)
    paths["split_json"].write_text(json.dumps({"train": [], "public_test": names, "private_test": []}))
    return paths


def folder_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


# ------------------------------------------------------------------------------------ the organisers' route


def _organisers_frame(task: tuple[str, str, list]) -> dict[str, float]:
    import cv2  # the baseline's dependency only

    cv2.setNumThreads(0)  # as bench.py does at import: OpenCV's own threads off
    prediction, truth, fixations = task
    return organisers_frame(cv2.imread(prediction, cv2.IMREAD_UNCHANGED), cv2.imread(truth, cv2.IMREAD_UNCHANGED),
                            np.array(fixations))


def organisers_route(paths: dict[str, Path], scratch: Path, workers: int) -> dict[str, dict[str, float]]:
    """Their bench.py, step by step: extract both sides to PNG, then each video's frames over a process pool."""
    names = json.loads(paths["split_json"].read_text())["public_test"]

    def extract(videos: Path, frames: Path) -> None:
        frames.mkdir(parents=True)

        def one(video: Path) -> None:
            (frames / video.stem).mkdir()
            subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), f"{frames / video.stem}/%03d.png"],
                           check=True)

        with ThreadPool(workers) as pool:
            pool.map(one, sorted(videos.iterdir()))

    extract(paths["predictions"], scratch / "predictions")
    extract(paths["gt_saliency"], scratch / "truth")
    results = {}
    for name in names:
        fixations = json.loads((paths["gt_fixations"] / name / avimos.FIXATIONS_FILE).read_text())
        truth = sorted(os.listdir(scratch / "truth" / name))
        predicted = sorted(os.listdir(scratch / "predictions" / name))
        tasks = [(str(scratch / "predictions" / name / p), str(scratch / "truth" / name / t), f)
                 for f, t, p in zip(fixations, truth, predicted)]
        with multiprocessing.get_context("fork").Pool(workers) as pool:  # their Pool: Linux's default, fork
            scores = pool.map(_organisers_frame, tasks)
        results[name] = {metric: float(np.mean([s[metric] for s in scores])) for metric in submission.SCORED}
    return results


# ------------------------------------------------------------------------------------ decode only


def _decode_both(videos: tuple[str, str], threads: int) -> int:
    return sum(sum(1 for _ in media.iter_decoded(path, threads=threads)) for path in videos)  # as salax decodes


def decode_only(paths: dict[str, Path], workers: int) -> None:
    """Decode both videos of every name, `workers` names at a time, as salax's threads do."""
    names = json.loads(paths["split_json"].read_text())["public_test"]
    pairs = [(str(paths["predictions"] / f"{name}.mp4"), str(paths["gt_saliency"] / f"{name}.mp4")) for name in names]
    workers = min(workers, len(pairs))  # as score_submission: no more workers than videos
    threads = submission.core_share(workers)[0]  # salax's decoder threads for this many videos at once
    with ThreadPool(workers) as pool:
        pool.starmap(_decode_both, [(pair, threads) for pair in pairs], chunksize=1)


# ------------------------------------------------------------------------------------ timing


class Stopwatch:
    """Wall seconds, and CPU seconds of this process (all threads) plus every child it waited for.

    The CPU time is what a route costs whatever else runs on the machine; on a shared host the wall
    time of each route depends on the load while it ran.
    """

    def __enter__(self) -> Stopwatch:
        self.wall, self.cpu = -time.perf_counter(), -self._cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter()
        self.cpu += self._cpu()

    @staticmethod
    def _cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_organisers(paths: dict[str, Path], scratch: Path, workers: int) -> dict:
    """The organisers' route in a fresh Python process (it forks its pools, as theirs does; this process has
    run JAX, which must not be forked): {"wall", "cpu", "disk", "results"}."""
    out = scratch.with_suffix(".json")
    command = [sys.executable, "-m", "salax.bench.evaluate", "--organisers_route", str(paths["split_json"].parent),
               str(scratch), str(workers), str(out)]
    with Stopwatch() as watch:
        subprocess.run(command, check=True)
    return {"wall": watch.wall, "cpu": watch.cpu, "disk": folder_bytes(scratch),
            "results": json.loads(out.read_text())}


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m salax.bench.evaluate", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4, help="test videos (the second is vertical)")
    parser.add_argument("--frames", type=int, default=60, help="frames per video")
    parser.add_argument("--workers", type=int, default=None, help="cores for every route (default: all allowed)")
    parser.add_argument("--keep", default=None, help="write the data here and keep it, or reuse what an earlier run "
                        "with the same --videos and --frames left there (default: a temporary folder)")
    parser.add_argument("--organisers_route", nargs=4, metavar=("DATA", "SCRATCH", "WORKERS", "OUT"),
                        help=argparse.SUPPRESS)  # the child process of run_organisers
    args = parser.parse_args(argv)
    if args.organisers_route:
        data, scratch, workers, out = args.organisers_route
        Path(out).write_text(json.dumps(organisers_route(data_paths(Path(data)), Path(scratch), int(workers))))
        return
    if shutil.which("ffmpeg") is None:
        parser.error("the organisers' route needs the ffmpeg CLI (apt-get install ffmpeg)")
    workers = args.workers or submission.available_cores()
    with tempfile.TemporaryDirectory(prefix="salax-bench-evaluate-") as temporary:
        root = Path(args.keep) if args.keep else Path(temporary)
        for previous in (root / "salax", root / "frames", root / "frames.json"):  # an earlier run's, with --keep
            shutil.rmtree(previous, ignore_errors=True) if previous.is_dir() else previous.unlink(missing_ok=True)
        paths = data_paths(root / "data")
        split = json.loads(paths["split_json"].read_text()) if paths["split_json"].is_file() else {}
        if (len(split.get("public_test", [])) == args.videos
                and media.count_frames(paths["gt_saliency"] / "0000.mp4") == args.frames):
            print(f"reusing the data in {root / 'data'}")
        else:
            shutil.rmtree(root / "data", ignore_errors=True)
            make_data(root / "data", args.videos, args.frames)
        frames = args.videos * args.frames
        print(f"{args.videos} videos x {args.frames} frames (1080p 10-bit truth, {MODEL_SIZE[1]}x{MODEL_SIZE[0]} "
              f"8-bit predictions, {FIXATIONS} fixations per frame), {workers} worker(s) for every route; "
              f"load average before: {os.getloadavg()[0]:.1f}")
        with Stopwatch() as ours_watch:
            ours = submission.score_submission(paths["predictions"], paths["gt_saliency"], paths["gt_fixations"],
                                               paths["split_json"], out=root / "salax" / "results.json",
                                               num_workers=workers, progress=False)
        ours_disk = folder_bytes(root / "salax")
        with Stopwatch() as floor:
            decode_only(paths, workers)
        theirs = run_organisers(paths, root / "frames", workers)
    difference = max(abs(row[metric] - theirs["results"][row["video_name"]][metric])
                     for row in ours["videos"] for metric in submission.SCORED)
    print(f"{'route':<48}{'wall s':>8}{'frames/s':>10}{'CPU s':>8}  scratch disk")
    rows = [("salax.evaluate (streamed, native kernel)", ours_watch.wall, ours_watch.cpu,
             f"none (results: {ours_disk / 1e3:.0f} kB)"),
            ("organisers (ffmpeg CLI -> PNG, NumPy per frame)", theirs["wall"], theirs["cpu"],
             f"{theirs['disk'] / 1e6:.0f} MB of PNG"),
            ("decode only, both videos (the floor for salax)", floor.wall, floor.cpu, "")]
    for label, wall, cpu, disk in rows:
        print(f"{label:<48}{wall:8.1f}{frames / wall:10.1f}{cpu:8.1f}  {disk}")
    print(f"salax vs the organisers' route: {theirs['wall'] / ours_watch.wall:.1f}x faster (wall), "
          f"{theirs['cpu'] / ours_watch.cpu:.1f}x less CPU; salax vs decode only: {ours_watch.wall / floor.wall:.2f}x "
          f"(wall), {ours_watch.cpu / floor.cpu:.2f}x (CPU); load average after: {os.getloadavg()[0]:.1f}")
    print(f"largest difference between the two routes in a per-video mean: {difference:.1e}")


if __name__ == "__main__":
    main()
