"""Decoding speed: salax (PyAV, threaded, resized in libswscale) vs the organisers' PNG route.

The organisers extracted every frame with the ffmpeg CLI to PNG files and read them back with OpenCV.
Both routes here turn the same 1080p H.264 clip into model-size RGB arrays, in the same run:

    python -m salax.bench.media [--frames 120] [--size 224 224] [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
import shutil
import subprocess
import tempfile
import time

import av
import numpy as np
from tqdm import tqdm

from salax.data import media

CLIP_FPS = 30


def make_clip(path: Path, num_frames: int, bit_rate: int = 8_000_000) -> None:
    """A 1920x1080 H.264 clip at a real-video bit rate (AViMoS averages ~6 Mbit/s): a panning,
    detailed texture with fresh grain in every frame, so the decoder has real work."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 128, size=(1080 // 8 + 1, 1920 // 8 + 64, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:1080] + 48
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=CLIP_FPS)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.bit_rate = bit_rate
        stream.codec_context.options = {"preset": "veryfast"}
        for index in tqdm(range(num_frames), desc="writing the 1080p clip", unit="frame"):
            offset = 4 * index % 512
            grain = rng.integers(0, 32, size=(1080, 1920, 3), dtype=np.uint8)
            image = np.ascontiguousarray(texture[:, offset:offset + 1920] + grain)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_salax(path: Path, size: tuple[int, int]) -> int:
    return sum(len(chunk) for chunk in media.iter_frames(path, size=size))


def decode_png_route(path: Path, size: tuple[int, int], workdir: Path) -> int:
    """ffmpeg CLI -> PNG files -> cv2.imread -> cv2.resize, as the organisers' scripts did."""
    import cv2

    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(path), str(workdir / "%05d.png")],
                   check=True)
    count = 0
    for png in sorted(workdir.glob("*.png")):
        image = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
        cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        count += 1
    return count


def best_rate(run, repeats: int) -> tuple[float, int]:
    """Frames per second of the fastest of `repeats` runs (the least disturbed by other load)."""
    best = 0.0
    count = 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - start))
    return best, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m salax.bench.media", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120, help="clip length in frames (default 120)")
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"),
                        help="model input size (default 224 224)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per route; the best counts")
    args = parser.parse_args(argv)
    size = tuple(args.size)
    with tempfile.TemporaryDirectory(prefix="salax-bench-") as tmp:
        clip = Path(tmp) / "clip1080p.mp4"
        make_clip(clip, args.frames)
        print(f"clip: {args.frames} frames 1920x1080, "
              f"{clip.stat().st_size * 8 * CLIP_FPS / args.frames / 1e6:.1f} Mbit/s")
        salax_fps, count = best_rate(lambda: decode_salax(clip, size), args.repeats)
        print(f"salax (PyAV, threaded, swscale resize, no files): {salax_fps:7.1f} frames/s "
              f"(-> {size[0]}x{size[1]} RGB)")
        missing = [name for name, found in (("ffmpeg CLI", shutil.which("ffmpeg")),
                                            ("opencv-python", importlib.util.find_spec("cv2")))
                   if not found]
        if missing:
            print(f"BASELINE SKIPPED: {' and '.join(missing)} not installed "
                  "(apt-get install ffmpeg; pip install opencv-python-headless)")
            return

        def png_route() -> int:
            with tempfile.TemporaryDirectory(dir=tmp) as pngs:
                return decode_png_route(clip, size, Path(pngs))

        png_fps, png_count = best_rate(png_route, args.repeats)
        if png_count != count:
            print(f"WARNING: the PNG route produced {png_count} frames, salax {count}")
        print(f"organisers' route (ffmpeg -> PNG -> cv2.imread/resize): {png_fps:7.1f} frames/s")
        print(f"speed-up: {salax_fps / png_fps:.1f}x")


if __name__ == "__main__":
    main()
