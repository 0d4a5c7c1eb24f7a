"""The batch contract: the keys, shapes and dtypes every batch holds, the audio rate, ImageNet statistics.

Data makes batches and models, losses, training and evaluation read them; both import this module and
it imports neither, so a fact of the contract has one home. A training batch (`train_shapes`):

    video          [B, T, H, W, 3] float32   ImageNet-normalised RGB (`IMAGENET_MEAN`, `IMAGENET_STD`)
    audio          [B, S] float32            mono at AUDIO_SAMPLE_RATE, ending with the clip's last frame;
                                             zeros without sound
    has_audio      [B] bool
    saliency       [B, H, W] | [B, T, H, W] float32 in [0, 1]   target "last" | "all"
    fixations      [B, N, 2] | [B, T, N, 2] int32  (row, col) on the H x W grid, zero-padded
    num_fixations  [B] | [B, T] int32

An evaluation batch holds the three model inputs, `saliency`, and instead of `fixations` the points on
the ground-truth grid for exact scoring: `fixations_native` [B, N, 2], `num_fixations` [B],
`native_size` [2] (height, width), `name` (the video), `frame_index` [B] and `valid` [B] (False on the
padding that fills a video's last batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AUDIO_SAMPLE_RATE",
    "EVAL_KEYS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_INPUTS",
    "TARGET_MODES",
    "TRAIN_KEYS",
    "check_batch",
    "model_inputs",
    "train_shapes",
    "unnormalise",
]

AUDIO_SAMPLE_RATE = 16_000  # Hz: what the data cuts and the log-mel front end expects
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
TARGET_MODES = ("last", "all")  # the saliency target: the clip's last frame (causal) or every frame

MODEL_INPUTS = ("video", "audio", "has_audio")
TRAIN_KEYS = (*MODEL_INPUTS, "saliency", "fixations", "num_fixations")
EVAL_KEYS = (*MODEL_INPUTS, "saliency", "fixations_native", "num_fixations", "native_size", "name",
             "frame_index", "valid")


def train_shapes(
    batch_size: int,
    *,
    clip_frames: int,
    image_size: Sequence[int],
    audio_samples: int,
    max_fixations: int,
    target: str = "last",
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The (shape, dtype) of every key of a training batch, for checks and for shape-only model init."""
    if target not in TARGET_MODES:
        raise ValueError(f"target must be one of {TARGET_MODES}, got {target!r}")
    height, width = image_size
    frames = (clip_frames,) if target == "all" else ()
    return {
        "video": ((batch_size, clip_frames, height, width, 3), np.dtype(np.float32)),
        "audio": ((batch_size, audio_samples), np.dtype(np.float32)),
        "has_audio": ((batch_size,), np.dtype(np.bool_)),
        "saliency": ((batch_size, *frames, height, width), np.dtype(np.float32)),
        "fixations": ((batch_size, *frames, max_fixations, 2), np.dtype(np.int32)),
        "num_fixations": ((batch_size, *frames), np.dtype(np.int32)),
    }


def check_batch(batch: Mapping[str, Any], shapes: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Raise a ValueError listing every key that is missing, extra, or of another shape or dtype."""
    problems = [f"missing {key!r}" for key in shapes if key not in batch]
    problems += [f"unexpected {key!r}" for key in batch if key not in shapes]
    for key, (shape, dtype) in shapes.items():
        if key in batch:
            value = batch[key]
            got = (tuple(np.shape(value)), np.dtype(getattr(value, "dtype", np.asarray(value).dtype)))
            if got != (tuple(shape), dtype):
                problems.append(f"{key!r} is {got[1]} {got[0]}, the contract says {dtype} {tuple(shape)}")
    if problems:
        raise ValueError("batch does not follow the batch contract: " + "; ".join(problems))


def model_inputs(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The keys a model reads (video, audio, has_audio) as arrays, leaving labels and bookkeeping behind."""
    return {key: np.asarray(batch[key]) for key in MODEL_INPUTS}


def unnormalise(video: np.ndarray) -> np.ndarray:
    """ImageNet-normalised frames back to RGB in [0, 1] (for pictures of a batch)."""
    return np.clip(np.asarray(video) * IMAGENET_STD + IMAGENET_MEAN, 0.0, 1.0)
