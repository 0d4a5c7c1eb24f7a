"""The AViMoS TFDS builder: whole videos as array_record examples, built and read without TensorFlow.

TFDS 4.9 writes and reads array_record without TensorFlow as long as no feature encodes through TF
(`tfds.features.Image`/`Video` do), so frames are JPEG-encoded here with Pillow and saliency maps are
stored as 16-bit PNGs, both as plain bytes per frame: a reader decodes only the frames a clip needs.

One example per video, in name order (shuffling is the input pipeline's job), with:
  name, licence               text
  frames                      [T] JPEG bytes at the storage resolution (short side `short_side`)
  saliency                    [T] 16-bit grey PNG bytes, the ground-truth map at storage resolution
  fixations                   [K, 2] int32 (row, col) on the storage grid, all frames concatenated
  fixations_native            [K, 2] int32 the same points on the original ground-truth grid
  fixation_counts             [T] int32 points per frame (frame t owns the next fixation_counts[t])
  num_frames, fps, native_size (height, width of the ground-truth grid)
  audio, has_audio            16 kHz mono float32 from the first frame's timestamp (empty if none)
The split's video names and frame counts, in example order, are kept in the dataset's metadata so
that a pipeline can plan clips without reading a single example.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
import concurrent.futures
import dataclasses
import hashlib
import io
import multiprocessing
import pathlib

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tqdm import tqdm

from salax import batch
from salax.data import avimos, clips, media

__all__ = [
    "Avimos",
    "AvimosConfig",
    "BadVideoError",
    "convert_video",
    "decode_jpeg",
    "decode_map_png",
    "encode_jpeg",
    "encode_map_png",
    "kept_frames",
    "split_metadata",
    "storage_size",
    "validation_names",
]

_MAP_LEVELS = 65535  # saliency maps are stored as 16-bit PNG: 1/65535 steps, finer than 10-bit sources

_HKEY_SPACE = 2**128  # TFDS's key space; spreading keys over it keeps its sort buckets small

_CITATION = """\
@inproceedings{moskalenko2024aim,
  title     = {{AIM} 2024 Challenge on Video Saliency Prediction: Methods and Results},
  author    = {Moskalenko, Andrey and Bryncev, Alexey and Vatolin, Dmitry and Timofte, Radu and
               others},
  booktitle = {European Conference on Computer Vision Workshops (ECCVW)},
  year      = {2024},
  eprint    = {2409.14827},
  archivePrefix = {arXiv}
}
"""


class BadVideoError(ValueError):
    """One video cannot be converted; the message names it and says why (counts, missing files)."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"video {name!r}: {problem}")
        self.name, self.problem = name, problem

    def __reduce__(self):  # crosses the process pool as a value
        return type(self), (self.name, self.problem)


# ----------------------------------------------------------------------------- storage codecs


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """uint8 RGB [H, W, 3] -> baseline JPEG bytes (4:2:0, as the source videos are)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 RGB [H, W, 3]."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def encode_map_png(values: np.ndarray) -> bytes:
    """float map [H, W] in [0, 1] -> 16-bit grey PNG bytes (lossless at 1/65535)."""
    levels = np.rint(np.clip(values, 0.0, 1.0) * _MAP_LEVELS).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_map_png(data: bytes) -> np.ndarray:
    """16-bit grey PNG bytes -> float32 map [H, W] in [0, 1]."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image, dtype=np.uint16).astype(np.float32) / _MAP_LEVELS


def storage_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to `short_side`, aspect kept, never upscaled."""
    scale = min(1.0, short_side / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass
class AvimosConfig(tfds.core.BuilderConfig):
    """Storage resolution, frame rate and JPEG quality of a build, and the validation carve-out.

    fps=None keeps every source frame (needed for scoring by the official rules); a lower rate keeps
    the frames on screen at k / fps, with their maps and fixations.
    """

    short_side: int = 224
    fps: float | None = None
    jpeg_quality: int = 90
    validation_videos: int = 50


_CONFIGS = [
    AvimosConfig(name="s224", description="Short side 224 px, native frame rate (the default)."),
    AvimosConfig(name="s360", description="Short side 360 px, native frame rate.", short_side=360),
    AvimosConfig(name="s224_fps15", description="Short side 224 px, 15 fps, for fast training.", fps=15.0),
]


# ----------------------------------------------------------------------------- the validation carve-out


def validation_names(train_names: Sequence[str], count: int) -> list[str]:
    """A fixed subset of train: the names with the smallest SHA-1, so it never depends on order.

    At most a quarter of train is held out, so tiny (synthetic) datasets keep most videos for training.
    """
    count = max(0, min(count, len(train_names) // 4))
    ranked = sorted(train_names, key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    return sorted(ranked[:count])


# ----------------------------------------------------------------------------- converting one video


def kept_frames(num_frames: int, source_fps: float, fps: float | None) -> np.ndarray:
    """Indices of the source frames on screen at k / fps (all of them when fps is None or higher)."""
    if fps is None or fps >= source_fps:
        return np.arange(num_frames)
    times = np.arange(int(np.ceil(num_frames * fps / source_fps))) / fps
    return np.unique(np.minimum(np.floor(times * source_fps + 1e-6).astype(np.int64), num_frames - 1))


def convert_video(source: avimos.VideoSource, config: AvimosConfig) -> dict:
    """Decode, resize and encode one video with its ground truth into an example dict.

    Raises BadVideoError when a file is corrupt or the frame counts of the video, the map video
    and fixations.json disagree.
    """
    try:
        fixations = avimos.read_fixations(source.fixations)
    except ValueError as error:
        raise BadVideoError(source.name, str(error)) from error
    try:
        info = media.probe(source.video)
        map_info = media.probe(source.saliency)
        size = storage_size(info.height, info.width, config.short_side)
        map_size = storage_size(map_info.height, map_info.width, config.short_side)
        frames = [encode_jpeg(f, config.jpeg_quality) for chunk in media.iter_frames(source.video, size=size)
                  for f in chunk]
        maps = [encode_map_png(clips.resize_antialiased(m, map_size)) for chunk in media.iter_maps(source.saliency)
                for m in chunk]
        audio = media.read_audio(source.video, sample_rate=batch.AUDIO_SAMPLE_RATE)
    except media.MediaError as error:
        raise BadVideoError(source.name, str(error)) from error
    if not len(frames) == len(maps) == len(fixations):
        raise BadVideoError(
            source.name,
            f"frame counts disagree: {len(frames)} video frames ({source.video}), {len(maps)} saliency "
            f"maps ({source.saliency}), {len(fixations)} fixation frames ({source.fixations})",
        )
    native = (map_info.height, map_info.width)
    kept = kept_frames(len(frames), info.fps, config.fps)
    points = [fixations[i] for i in kept]
    native_points = np.concatenate(points) if points else np.zeros((0, 2), np.int32)
    outside = (native_points < 0) | (native_points >= np.array(native))
    if outside.any():
        raise BadVideoError(source.name, f"{source.fixations}: fixations outside the {native} map grid")
    return {
        "name": source.name,
        "licence": source.licence,
        "frames": [frames[i] for i in kept],
        "saliency": [maps[i] for i in kept],
        "fixations": clips.rescale_points(native_points, native, map_size),
        "fixations_native": native_points,
        "fixation_counts": np.array([len(p) for p in points], np.int32),
        "num_frames": len(kept),
        "fps": float(info.fps if config.fps is None else min(config.fps, info.fps)),
        "native_size": np.array(native, np.int32),
        "audio": np.zeros(0, np.float32) if audio is None else audio,
        "has_audio": audio is not None,
    }


def _convert_or_report(source: avimos.VideoSource, config: AvimosConfig) -> dict | BadVideoError:
    """Worker entry point: a bad video comes back as a value so the parent decides to skip or fail."""
    try:
        return convert_video(source, config)
    except BadVideoError as error:
        return error


def _converted(
    sources: Sequence[avimos.VideoSource],
    config: AvimosConfig,
    pool: concurrent.futures.Executor | None,
    window: int,
) -> Iterator[dict | BadVideoError]:
    """Convert in order, on `pool` when given, with at most `window` videos in flight (bounded memory)."""
    if pool is None:
        yield from (_convert_or_report(source, config) for source in sources)
        return
    pending: collections.deque = collections.deque()
    for source in sources:
        pending.append(pool.submit(_convert_or_report, source, config))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# ----------------------------------------------------------------------------- the builder


class Avimos(tfds.core.GeneratorBasedBuilder):
    """AViMoS (AIM 2024 video saliency): videos, continuous maps, fixations and audio, one example a video."""

    name = "avimos"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: JPEG frames, 16-bit PNG maps, fixations, 16 kHz audio."}
    BUILDER_CONFIGS = _CONFIGS
    DEFAULT_CONFIG_NAME = "s224"
    MANUAL_DOWNLOAD_INSTRUCTIONS = avimos.UNPACKING

    def __init__(self, *, workers: int = 1, skip_bad: bool = False, **kwargs):
        """`workers` processes convert videos; `skip_bad` skips unconvertible videos, listed in `skipped`."""
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._workers = workers
        self._skip_bad = skip_bad
        self._pool: concurrent.futures.Executor | None = None
        self.skipped: list[str] = []
        self.reused = False  # set by download_and_prepare: an existing build was kept, nothing converted

    def download_and_prepare(self, **kwargs) -> None:
        """TFDS's, with one pool of spawned worker processes shared by all splits (none for 1 worker).

        An existing build is kept unless the download mode overwrites it; then `reused` is set and
        `skipped` lists what that earlier build skipped, so a caller can say so.
        """
        config = kwargs.get("download_config") or tfds.download.DownloadConfig()
        if self.is_prepared() and not config.download_mode.overwrite_dataset:
            self.reused = True
            self.skipped = list(self.info.metadata.get("skipped", []))
            return None
        if self._workers <= 1:
            return super().download_and_prepare(**kwargs)
        context = multiprocessing.get_context("spawn")  # no fork of a parent's threads and locks
        with concurrent.futures.ProcessPoolExecutor(self._workers, mp_context=context) as self._pool:
            try:
                return super().download_and_prepare(**kwargs)
            finally:
                self._pool = None

    def _info(self) -> tfds.core.DatasetInfo:
        bytes_per_frame = tfds.features.Sequence(tfds.features.Scalar(np.object_))
        points = tfds.features.Tensor(shape=(None, 2), dtype=np.int32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "name": tfds.features.Text(),
                "licence": tfds.features.Text(),
                "frames": bytes_per_frame,
                "saliency": bytes_per_frame,
                "fixations": points,
                "fixations_native": points,
                "fixation_counts": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "num_frames": tfds.features.Scalar(np.int32),
                "fps": tfds.features.Scalar(np.float32),
                "native_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
                "audio": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "has_audio": tfds.features.Scalar(np.bool_),
            }),
            disable_shuffling=True,
            homepage="https://github.com/msu-video-group/ECCVW24_Saliency_Prediction",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(),
            license="CC-BY-4.0 (per video, see the licence feature)",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = pathlib.Path(dl_manager.manual_dir)
        avimos.check_manual_dir(manual_dir)
        splits = avimos.read_splits(manual_dir)
        held_out = set(validation_names(splits["train"], self.builder_config.validation_videos))
        splits["validation"] = sorted(held_out)
        splits["train"] = [name for name in splits["train"] if name not in held_out]
        sources = {split: avimos.find_sources(manual_dir, names) for split, names in splits.items()}
        problems = [problem for _, found in sources.values() for problem in found]
        if problems and not self._skip_bad:
            raise FileNotFoundError(
                f"{manual_dir}: {len(problems)} video(s) lack files (use --skip_bad to skip them):\n  "
                + "\n  ".join(problems)
            )
        self.skipped.extend(problems)
        self.info.metadata["skipped"] = self.skipped
        return {split: self._generate_examples(split, found) for split, (found, _) in sources.items() if found}

    def _generate_examples(self, split: str, sources: Sequence[avimos.VideoSource]):
        """Yield (key, example) in name order; the int keys tell TFDS to keep that order."""
        index = {"names": [], "num_frames": []}
        self.info.metadata.setdefault("splits", {})[split] = index
        key_step = _HKEY_SPACE // max(1, len(sources))
        converted = _converted(sources, self.builder_config, self._pool, 2 * self._workers)
        progress = tqdm(converted, total=len(sources), desc=f"{split} videos", unit="video")
        for position, result in enumerate(progress):
            if isinstance(result, BadVideoError):
                if not self._skip_bad:
                    raise result
                self.skipped.append(str(result))
                continue
            index["names"].append(result["name"])
            index["num_frames"].append(result["num_frames"])
            yield position * key_step, result


def split_metadata(builder: Avimos, split: str) -> tuple[list[str], list[int]]:
    """A built split's video names and frame counts, in example order, without reading examples."""
    built = builder.info.metadata.get("splits", {})
    if split not in built:
        raise ValueError(f"{builder.data_dir}: split {split!r} is not built (has {sorted(built)})")
    index = built[split]
    return list(index["names"]), [int(n) for n in index["num_frames"]]
