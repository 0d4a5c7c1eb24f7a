"""The grain input pipeline over the AViMoS array_record build: training clips and evaluation clips.

Public API (all arrays numpy, process-local):

- `train_dataset(data_dir, *, builder_config, split, clip_frames, stride, image_size, target, audio,
  max_fixations, batch_size, seed, shard_index, shard_count, flip, ...)` -> a grain `IterDataset`;
  `iter()` of it is a `grain.DatasetIterator` whose `get_state()`/`set_state()` resume exactly (save it
  with the model checkpoint). Batches follow the batch contract (`salax.batch`).
- `to_global_batch(batch, sharding)` -> the same dict as jax.Arrays laid out on a mesh's data sharding.
- `eval_clips(data_dir, *, builder_config, split, clip_frames, stride, image_size, batch_size, ...)`
  -> batches holding every frame of every video exactly once, in order, as causal sliding clips, with
  `fixations_native`/`num_fixations` on the original ground-truth grid, `native_size`, `name`,
  `frame_index` and a `valid` mask (a video's last batch is padded up to `batch_size`).
- `list_videos(data_dir, *, builder_config, split)` -> {name: num_frames} in example order.

Clip rules (`salax.data.clips`: frame indices with first-frame padding, audio window, resizing,
normalisation). Training samples uniformly over all clip positions: each video offers
max(1, num_frames - span + 1) end frames (span = (T-1) * stride + 1), and every position is visited
once per epoch, shuffled per epoch within blocks of videos so that a stored video is read once per
block rather than once per clip (ClipOrder). The target is the clip's last frame ("last", causal) or
every frame ("all"). Frames, maps and fixations are resized to `image_size` (height, width) as a
whole, without cropping; the random horizontal flip mirrors frames, maps and fixations together.
Fixations beyond `max_fixations` per frame are dropped in training (the first ones are kept) and are
an error in evaluation, where every one counts.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
import dataclasses
import os
import threading
from typing import Any

import grain
import jax
import numpy as np

from salax import batch as batch_contract
from salax.data import avimos_builder, clips

__all__ = [
    "ClipSpec",
    "eval_clips",
    "list_videos",
    "to_global_batch",
    "train_dataset",
]


# ----------------------------------------------------------------------------- the split on disk


def _builder(data_dir: str | os.PathLike, builder_config: str | avimos_builder.AvimosConfig):
    builder = avimos_builder.Avimos(data_dir=os.fspath(data_dir), config=builder_config)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"{builder.data_dir}: AViMoS ({builder.builder_config.name}) is not built; run "
            f"python -m salax.data.build_avimos --manual_dir DIR --data_dir {data_dir}"
        )
    return builder


def _open_split(data_dir, builder_config, split: str):
    """(data source, names, frame counts, storage fps) of a built split."""
    builder = _builder(data_dir, builder_config)
    names, num_frames = avimos_builder.split_metadata(builder, split)
    return builder.as_data_source(split=split), names, num_frames, builder.builder_config.fps


def list_videos(
    data_dir: str | os.PathLike, *, builder_config: str | avimos_builder.AvimosConfig = "s224", split: str
) -> dict[str, int]:
    """A built split's video names with their stored frame counts, in example order."""
    names, num_frames = avimos_builder.split_metadata(_builder(data_dir, builder_config), split)
    return dict(zip(names, num_frames))


# ----------------------------------------------------------------------------- one clip


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What a clip looks like: frames, spacing, model input size, target, fixation and audio widths."""

    clip_frames: int
    stride: int
    image_size: tuple[int, int]
    target: str = "last"
    max_fixations: int = 128
    audio: bool = True
    audio_samples: int = 0

    def __post_init__(self):
        if self.clip_frames < 1 or self.stride < 1:
            raise ValueError(f"clip_frames and stride must be >= 1, got {self.clip_frames}, {self.stride}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (height, width), got {self.image_size!r}")
        if self.target not in batch_contract.TARGET_MODES:
            raise ValueError(f"target must be one of {batch_contract.TARGET_MODES}, got {self.target!r}")
        if self.max_fixations < 1 or self.audio_samples < 0:
            raise ValueError(f"max_fixations must be >= 1 and audio_samples >= 0, got {self}")

    @property
    def span(self) -> int:
        """Source frames from a clip's first to its last frame, both included."""
        return clips.clip_span(self.clip_frames, self.stride)

    def frame_indices(self, end: int) -> np.ndarray:
        """The clip's frame indices ending at `end`; before the video starts, the first frame."""
        return clips.frame_indices(end, self.clip_frames, self.stride)


def _spec(fps: float | None, audio_samples: int | None, **fields) -> ClipSpec:
    """A ClipSpec whose audio window defaults to the clip's span at the build's frame rate."""
    if audio_samples is None:
        audio_samples = clips.default_audio_samples(fields["clip_frames"], fields["stride"], fps)
    return ClipSpec(audio_samples=audio_samples, **fields)


def _frame_points(example: dict, key: str, frame: int) -> np.ndarray:
    """One frame's fixations from the flat [K, 2] array and the per-frame counts."""
    counts = example["fixation_counts"]
    start = int(counts[:frame].sum())
    return example[key][start : start + int(counts[frame])]


def _padded(points: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    kept = points[:width]
    padded = np.zeros((width, 2), np.int32)
    padded[: len(kept)] = kept
    return padded, len(kept)


def load_clip(example: dict, end: int, spec: ClipSpec, flip: bool) -> dict[str, np.ndarray]:
    """One training element (the batch contract without the batch axis) for the clip ending at `end`."""
    indices = spec.frame_indices(end)
    decoded = {i: avimos_builder.decode_jpeg(example["frames"][i]) for i in np.unique(indices)}
    frames = np.stack([clips.resize_antialiased(decoded[i], spec.image_size) for i in indices])
    targets = indices[-1:] if spec.target == "last" else indices
    maps = np.stack([
        clips.resize_antialiased(avimos_builder.decode_map_png(example["saliency"][i]), spec.image_size)
        for i in targets
    ])
    fixations, counts = [], []
    for frame in targets:
        native = _frame_points(example, "fixations_native", frame)  # one rounding, not two via storage
        grid = clips.rescale_points(native, tuple(example["native_size"]), spec.image_size)
        if flip:
            grid = grid * np.array([1, -1], np.int32) + np.array([0, spec.image_size[1] - 1], np.int32)
        padded, count = _padded(grid, spec.max_fixations)
        fixations.append(padded)
        counts.append(count)
    if flip:
        frames, maps = frames[:, :, ::-1], maps[:, :, ::-1]
    has_audio = bool(spec.audio and example["has_audio"])
    audio = (
        clips.audio_window(example["audio"], int(end), float(example["fps"]), spec.audio_samples)
        if has_audio
        else np.zeros(spec.audio_samples, np.float32)
    )
    squeeze = (lambda a: a[0]) if spec.target == "last" else (lambda a: a)
    return {
        "video": clips.normalise(frames),
        "audio": audio,
        "has_audio": np.bool_(has_audio),
        "saliency": squeeze(np.ascontiguousarray(maps, np.float32)),
        "fixations": squeeze(np.stack(fixations)),
        "num_fixations": squeeze(np.array(counts, np.int32)),
    }


# ----------------------------------------------------------------------------- training


class ClipOrder:
    """This process's clips, epoch after epoch: (video, last frame) for a global index, deterministically.

    Videos are dealt to processes round-robin (video i to process i % shard_count), so shards are
    disjoint and together hold every clip. Each epoch visits every clip position of the shard once:
    the shard's videos are shuffled and cut into blocks of `videos_per_block`, and the clips inside a
    block are shuffled together. A block's clips thus need one read per video (see _VideoCache)
    instead of one per clip; a larger block mixes more videos per batch and holds more in memory.
    """

    def __init__(
        self, num_frames: Sequence[int], span: int, *, seed: int, shard_index: int, shard_count: int,
        videos_per_block: int,
    ):
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard_index {shard_index} outside [0, shard_count={shard_count})")
        if len(num_frames) < shard_count:
            raise ValueError(f"{len(num_frames)} videos cannot feed {shard_count} shards")
        if videos_per_block < 1:
            raise ValueError(f"videos_per_block must be >= 1, got {videos_per_block}")
        self.videos = np.arange(shard_index, len(num_frames), shard_count)
        self.num_frames = np.asarray(num_frames, np.int64)[self.videos]
        self.clips_per_video = np.maximum(1, self.num_frames - span + 1)
        self.span, self.seed, self.videos_per_block = span, seed, videos_per_block
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        """Clips per epoch."""
        return int(self.clips_per_video.sum())

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(video indices, last frames) of every clip of one epoch, in visiting order."""
        cached = self._epoch_cache
        if cached is not None and cached[0] == epoch:
            return cached[1], cached[2]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.videos))
        videos, ends = [], []
        for first in range(0, len(order), self.videos_per_block):
            block = order[first : first + self.videos_per_block]
            counts = self.clips_per_video[block]
            local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            end = np.minimum(local + self.span - 1, np.repeat(self.num_frames[block] - 1, counts))
            shuffle = rng.permutation(len(end))
            videos.append(np.repeat(self.videos[block], counts)[shuffle])
            ends.append(end[shuffle])
        self._epoch_cache = (epoch, np.concatenate(videos), np.concatenate(ends))
        return self._epoch_cache[1], self._epoch_cache[2]

    def __call__(self, index: int, _=None) -> tuple[int, int]:
        epoch, position = divmod(index, len(self))
        videos, ends = self.epoch(epoch)
        return int(videos[position]), int(ends[position])


class _VideoCache:
    """The most recently read examples, shared by a process's reading threads."""

    def __init__(self, source, capacity: int):
        self.source, self.capacity = source, capacity
        self._examples: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, video: int) -> dict:
        with self._lock:
            if video in self._examples:
                self._examples.move_to_end(video)
                return self._examples[video]
        example = self.source[video]  # outside the lock: threads read different videos at once
        with self._lock:
            self._examples[video] = example
            while len(self._examples) > self.capacity:
                self._examples.popitem(last=False)
        return example

    def __getstate__(self):  # worker processes start with an empty cache
        return {"source": self.source, "capacity": self.capacity}

    def __setstate__(self, state):
        self.__init__(state["source"], state["capacity"])


class _ClipReader(grain.transforms.RandomMap):
    """(video, last frame) -> training element, decoding only the clip's frames."""

    def __init__(self, videos: _VideoCache, spec: ClipSpec, flip: bool):
        self.videos, self.spec, self.flip = videos, spec, flip

    def random_map(self, element: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        video, end = element
        flip = self.flip and bool(rng.integers(2))
        return load_clip(self.videos[video], end, self.spec, flip)


def train_dataset(
    data_dir: str | os.PathLike,
    *,
    builder_config: str | avimos_builder.AvimosConfig = "s224",
    split: str = "train",
    clip_frames: int,
    stride: int = 1,
    image_size: tuple[int, int],
    target: str = "last",
    audio: bool = True,
    max_fixations: int = 128,
    batch_size: int,
    seed: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    flip: bool = True,
    num_epochs: int | None = None,
    audio_samples: int | None = None,
    videos_per_block: int = 16,
    num_threads: int = 8,
    worker_count: int = 0,
) -> grain.IterDataset:
    """Shuffled, augmented training batches of this process's shard (see the module docstring).

    `batch_size` is per process; incomplete batches are dropped. `num_epochs=None` repeats forever,
    which multi-process training needs: shards hold whole videos, so their epochs differ in length.
    Clips are shuffled within blocks of `videos_per_block` videos (see ClipOrder), each read once per
    block: memory holds about videos_per_block + num_threads stored videos (~15 MB each at s224).
    `num_threads` decode clips in parallel inside a process; `worker_count > 0` adds that many
    processes (grain mp_prefetch) for hosts with many cores. The iterator's state restores exactly.
    """
    source, _, num_frames, fps = _open_split(data_dir, builder_config, split)
    spec = _spec(fps, audio_samples, clip_frames=clip_frames, stride=stride, image_size=tuple(image_size),
                 target=target, max_fixations=max_fixations, audio=audio)
    order = ClipOrder(
        num_frames, spec.span, seed=seed, shard_index=shard_index, shard_count=shard_count,
        videos_per_block=videos_per_block,
    )
    videos = _VideoCache(source, capacity=videos_per_block + num_threads)
    clip_stream = (
        grain.MapDataset.range(len(order))
        .repeat(num_epochs)
        .map_with_index(order)
        .random_map(_ClipReader(videos, spec, flip), seed=seed)
    )
    prefetch = max(2 * batch_size, num_threads)  # clips, not batches: bounds memory
    read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    dataset = clip_stream.to_iter_dataset(read_options).batch(batch_size, drop_remainder=True)
    if worker_count > 0:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return dataset


def to_global_batch(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
    """Assemble every process's local batch into global arrays split over `sharding`'s batch axis."""
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for key, v in batch.items()}


# ----------------------------------------------------------------------------- evaluation


def _eval_batch(example: dict, frames: np.ndarray, ends: np.ndarray, spec: ClipSpec, name: str) -> dict:
    """Clips ending at `ends` of one decoded video, with native-grid fixations for exact scoring."""
    fixations, counts = [], []
    for end in ends:
        points = _frame_points(example, "fixations_native", int(end))
        if len(points) > spec.max_fixations:
            raise ValueError(
                f"video {name!r} frame {end}: {len(points)} fixations exceed "
                f"max_fixations={spec.max_fixations}; raise it, every fixation counts in scoring"
            )
        padded, count = _padded(points, spec.max_fixations)
        fixations.append(padded)
        counts.append(count)
    has_audio = bool(spec.audio and example["has_audio"])
    fps = float(example["fps"])
    silence = np.zeros(spec.audio_samples, np.float32)
    return {
        "video": clips.normalise(frames[np.stack([spec.frame_indices(int(end)) for end in ends])]),
        "audio": np.stack([
            clips.audio_window(example["audio"], int(end), fps, spec.audio_samples) if has_audio else silence
            for end in ends
        ]),
        "has_audio": np.full(len(ends), has_audio),
        "fixations_native": np.stack(fixations),
        "num_fixations": np.array(counts, np.int32),
        "saliency": np.stack([avimos_builder.decode_map_png(example["saliency"][int(end)]) for end in ends]),
        "native_size": np.asarray(example["native_size"], np.int32),
        "name": name,
        "frame_index": ends.astype(np.int32),
    }


def _pad_batch(batch: dict[str, Any], size: int) -> dict[str, Any]:
    """Repeat the last clip up to `size` and mark the copies invalid, so batch shapes never change."""
    count = len(batch["frame_index"])
    per_clip = {"video", "audio", "has_audio", "fixations_native", "num_fixations", "saliency", "frame_index"}
    padded = {
        key: np.concatenate([value, np.repeat(value[-1:], size - count, axis=0)]) if key in per_clip else value
        for key, value in batch.items()
    }
    padded["valid"] = np.arange(size) < count
    return padded


def eval_clips(
    data_dir: str | os.PathLike,
    *,
    builder_config: str | avimos_builder.AvimosConfig = "s224",
    split: str,
    clip_frames: int,
    stride: int = 1,
    image_size: tuple[int, int],
    batch_size: int,
    audio: bool = True,
    max_fixations: int = 512,
    audio_samples: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> Iterator[dict[str, Any]]:
    """Every frame of every video of this process's shard once, in order, as clips ending at that frame.

    Videos are dealt to processes round-robin (video i goes to process i % shard_count). Each batch
    comes from one video: `video`, `audio`, `has_audio` as in training; `fixations_native` [B, N, 2]
    and `num_fixations` [B] on the original grid of `native_size` (height, width); `saliency` [B, h, w]
    the stored maps (storage grid, for quick checks: exact scoring reads the source map videos);
    `name`; `frame_index` [B]; `valid` [B] (False on the padding of a video's last batch).
    """
    source, names, _, fps = _open_split(data_dir, builder_config, split)
    spec = _spec(fps, audio_samples, clip_frames=clip_frames, stride=stride, image_size=tuple(image_size),
                 max_fixations=max_fixations, audio=audio)
    for video in range(shard_index, len(names), shard_count):
        example = source[video]
        frames = np.stack([
            clips.resize_antialiased(avimos_builder.decode_jpeg(data), spec.image_size) for data in example["frames"]
        ])
        for first in range(0, len(frames), batch_size):
            ends = np.arange(first, min(first + batch_size, len(frames)))
            yield _pad_batch(_eval_batch(example, frames, ends, spec, names[video]), batch_size)
