"""Input speed: training clips from the array_record build vs decoding them straight from the mp4 files.

Both routes make the same clips (16 frames ending at the same frame, resized to the model input and
ImageNet-normalised, plus the target saliency map), one at a time on one thread, in the same run, so
the ratio is clips/s per core. The build route is the training pipeline itself (`train_dataset` on the
calling thread, which reads each stored video once per shuffle block). The mp4 route is what peers
do: seek each video (and its map video) to the keyframe before the clip and decode forward with PyAV.
Also reports the bytes stored per frame and the storage an hour of AViMoS (30 fps) costs per config.

    python -m salax.bench.input                       # builds 1080p synthetic sources in a temp dir
    python -m salax.bench.input --manual_dir ~/avimos --data_dir ~/tensorflow_datasets --videos 20
"""

from __future__ import annotations

import argparse
from fractions import Fraction
import json
import pathlib
import tempfile
import time

import av
import numpy as np
from tqdm import tqdm

from salax.data import avimos, avimos_builder, build_avimos, clips, media, pipeline

AVIMOS_FPS = avimos.NOMINAL_FPS
AVIMOS_FRAMES = 870_000  # about 1500 videos of 19 s


# ----------------------------------------------------------------------------- 1080p sources


def _texture_frames(num_frames: int, seed: int):
    """A detailed, panning 1920x1080 texture with grain, so the decoder has real work."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(1080 // 8 + 1, (1920 + 512) // 8, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:1080] // 2 + 64
    for index in range(num_frames):
        shift = 4 * index % 512
        grain = rng.integers(0, 8, size=(1080, 1920, 3), dtype=np.uint8)
        yield np.ascontiguousarray(texture[:, shift : shift + 1920]) + grain


def _write_h264(path: pathlib.Path, frames, fps: float, gop: int) -> None:
    """H.264 crf 18 with a keyframe every `gop` frames (seek cost depends on it)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _gaussian_maps(num_frames: int, seed: int):
    """A moving Gaussian blob per frame at 1080p, the shape of a real continuous map."""
    rng = np.random.default_rng(seed)
    rows, cols = np.arange(1080.0), np.arange(1920.0)
    centre = rng.uniform([200, 300], [880, 1620])
    for _ in range(num_frames):
        centre = np.clip(centre + rng.normal(0, 8, 2), [100, 100], [980, 1820])
        yield np.outer(np.exp(-(rows - centre[0]) ** 2 / 2 / 60**2), np.exp(-(cols - centre[1]) ** 2 / 2 / 60**2))


def make_sources(root: pathlib.Path, num_videos: int, num_frames: int, gop: int) -> None:
    """A manual directory in the AViMoS layout with 1080p videos, 10-bit lossless maps and fixations."""
    names = [f"bench{index:03d}" for index in range(num_videos)]
    for folder in (avimos.VIDEO_DIR, *avimos.SALIENCY_DIRS, *avimos.FIXATION_DIRS):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(tqdm(names, desc="1080p sources", unit="video")):
        _write_h264(avimos.video_path(root, name), _texture_frames(num_frames, index), AVIMOS_FPS, gop)
        media.write_map_video(
            avimos.saliency_path(root, name, "train"), _gaussian_maps(num_frames, index), fps=AVIMOS_FPS
        )
        rng = np.random.default_rng(index)
        points = [rng.integers([0, 0], [1080, 1920], size=(60, 2)).tolist() for _ in range(num_frames)]
        fixations = avimos.fixations_path(root, name, "train")
        fixations.parent.mkdir()
        fixations.write_text(json.dumps(points))
    splits = {split: names if split == "train" else [] for split in avimos.SPLITS}
    (root / avimos.SPLIT_FILE).write_text(json.dumps(splits))


# ----------------------------------------------------------------------------- the mp4 route


def _decode_span(path: pathlib.Path, first: int, last: int, convert) -> dict[int, np.ndarray]:
    """Frames first..last of a video: seek to the keyframe before `first`, decode forward on one thread."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        fps = float(stream.average_rate)
        start = stream.start_time or 0
        container.seek(start + int(first / fps / stream.time_base), stream=stream, backward=True)
        frames = {}
        for frame in container.decode(stream):
            index = round(float((frame.pts - start) * stream.time_base) * fps)
            if index >= first:
                frames[index] = convert(frame)
            if index >= last:
                break
        return frames


def clip_from_mp4(video: pathlib.Path, maps: pathlib.Path, end: int, spec: pipeline.ClipSpec) -> dict:
    """The pipeline's training clip (video and target map), decoded straight from the source files."""
    height, width = spec.image_size
    indices = spec.frame_indices(end)
    rgb = _decode_span(video, int(indices[0]), end, lambda f: f.to_ndarray(width=width, height=height, format="rgb24"))
    grey = _decode_span(maps, end, end, lambda f: f.to_ndarray(width=width, height=height, format="gray16le"))
    return {
        "video": clips.normalise(np.stack([rgb[int(i)] for i in indices])),
        "saliency": grey[end].astype(np.float32) / 65535,
    }


# ----------------------------------------------------------------------------- measuring


def _best_rate(run, count: int, repeats: int) -> float:
    """Clips per second of the fastest of `repeats` runs (the one least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def storage_report(builder: avimos_builder.Avimos) -> dict[str, float]:
    """Bytes per stored frame: JPEG frames, PNG maps, and all files on disk (audio, fixations, index)."""
    frames = jpeg = png = 0
    for source in builder.as_data_source().values():
        for index in range(len(source)):
            example = source[index]
            frames += len(example["frames"])
            jpeg += sum(map(len, example["frames"]))
            png += sum(map(len, example["saliency"]))
    on_disk = sum(p.stat().st_size for p in pathlib.Path(builder.data_dir).glob("*.array_record*"))
    return {"frames": frames, "jpeg": jpeg / frames, "png": png / frames, "total": on_disk / frames}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m salax.bench.input", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manual_dir", help="AViMoS-layout sources (default: make 1080p synthetic ones)")
    parser.add_argument("--data_dir", help="where to build (default: a temporary folder)")
    parser.add_argument("--configs", nargs="+", default=["s224", "s360"], help="configs to build; speed uses the first")
    parser.add_argument("--videos", type=int, default=3, help="synthetic videos to make (default 3)")
    parser.add_argument("--frames", type=int, default=150, help="frames per synthetic video (default 150)")
    parser.add_argument("--gop", type=int, default=60, help="keyframe interval of synthetic videos (default 60)")
    parser.add_argument("--clips", type=int, default=48, help="clips per route (default 48)")
    parser.add_argument("--videos_per_block", type=int, default=16, help="pipeline shuffle block (default 16)")
    parser.add_argument("--clip_frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--image_size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=2, help="runs per route; the fastest counts (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="build processes (default 1)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="salax-bench-input-") as tmp:
        manual_dir = pathlib.Path(args.manual_dir) if args.manual_dir else pathlib.Path(tmp) / "manual"
        data_dir = pathlib.Path(args.data_dir) if args.data_dir else pathlib.Path(tmp) / "data"
        if not args.manual_dir:
            make_sources(manual_dir, args.videos, args.frames, args.gop)
        builders = {c: build_avimos.build(manual_dir, data_dir, config=c, workers=args.workers) for c in args.configs}

        config = args.configs[0]
        names, num_frames = avimos_builder.split_metadata(builders[config], "train")
        sources, _ = avimos.find_sources(manual_dir, names)
        options = dict(clip_frames=args.clip_frames, stride=1, image_size=tuple(args.image_size), audio=False)
        spec = pipeline.ClipSpec(**options)
        order = pipeline.ClipOrder(
            num_frames, spec.span, seed=0, shard_index=0, shard_count=1, videos_per_block=args.videos_per_block
        )
        plan = [order(index) for index in range(args.clips)]

        def from_build():  # the training pipeline itself, on the calling thread, same clips as `plan`
            dataset = pipeline.train_dataset(
                data_dir, builder_config=config, **options, batch_size=1, seed=0, flip=False,
                videos_per_block=args.videos_per_block, num_threads=0,
            )
            for _, _batch in zip(range(len(plan)), dataset):
                pass

        def from_mp4():
            for video, end in plan:
                clip_from_mp4(sources[video].video, sources[video].saliency, end, spec)

        built_rate = _best_rate(from_build, len(plan), args.repeats)
        mp4_rate = _best_rate(from_mp4, len(plan), args.repeats)
        print(f"\n{len(plan)} clips of {spec.clip_frames} frames at {spec.image_size}, one thread, "
              f"best of {args.repeats}")
        print(f"  array_record build ({args.configs[0]}): {built_rate:8.1f} clips/s per core")
        print(f"  mp4 files (PyAV seek + decode):   {mp4_rate:8.1f} clips/s per core")
        print(f"  ratio: {built_rate / mp4_rate:.1f}x")
        print("\nstorage per frame and per AViMoS hour (30 fps), and for all of AViMoS (~870k frames):")
        for config, built in builders.items():
            sizes = storage_report(built)
            hour = sizes["total"] * AVIMOS_FPS * 3600 / 2**30
            print(
                f"  {config:11s} JPEG {sizes['jpeg'] / 1024:6.1f} KiB + map PNG {sizes['png'] / 1024:6.1f} KiB; "
                f"on disk {sizes['total'] / 1024:6.1f} KiB/frame = {hour:5.2f} GiB/hour, "
                f"{sizes['total'] * AVIMOS_FRAMES / 2**30:6.1f} GiB in all ({sizes['frames']} frames measured)"
            )


if __name__ == "__main__":
    main()
