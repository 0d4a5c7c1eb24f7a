"""The AViMoS archive layout: where each file of a video lies once the archives are unpacked.

One home for the layout, without TFDS, so the builder, the synthetic generator, the benchmarks,
evaluation and submission scoring read it from here:

    Videos/<name>.mp4                                   the video, with its sound when it has one
    SaliencyTrain/Train/<name>.mp4, SaliencyTest/Test/<name>.mp4   ground-truth maps (10-bit video)
    FixationsTrain/Train/<name>/fixations.json, FixationsTest/Test/<name>/fixations.json
                                                        per frame a list of [row, col] on the map grid
    TrainTestSplit.json                                 {"train" (or "Train"), "public_test", "private_test": names}
    VideoInfo.json                                      per video: licence and other facts
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import os
import pathlib

import numpy as np

__all__ = [
    "FIXATIONS_FILE",
    "FIXATION_DIRS",
    "INFO_FILE",
    "NOMINAL_FPS",
    "SALIENCY_DIRS",
    "SPLITS",
    "SPLIT_FILE",
    "UNPACKING",
    "VIDEO_DIR",
    "VideoSource",
    "check_manual_dir",
    "find_sources",
    "fixations_path",
    "read_fixations",
    "read_licences",
    "read_splits",
    "saliency_path",
    "video_path",
]

SPLIT_FILE = "TrainTestSplit.json"
INFO_FILE = "VideoInfo.json"
VIDEO_DIR = "Videos"
SALIENCY_DIRS = ("SaliencyTrain/Train", "SaliencyTest/Test")  # (train, test) ground-truth maps
FIXATION_DIRS = ("FixationsTrain/Train", "FixationsTest/Test")
FIXATIONS_FILE = "fixations.json"
SPLITS = ("train", "public_test", "private_test")
_SPLIT_KEYS = {
    "train": ("train", "Train"),  # the train key's spelling is not confirmed
    "public_test": ("public_test",),
    "private_test": ("private_test",),
}
NOMINAL_FPS = 30.0  # AViMoS's frame rate, for defaults that need one before a video is opened

UNPACKING = f"""\
Download AViMoS from the AIM 2024 Video Saliency Prediction challenge (msu-video-group,
ECCVW24_Saliency_Prediction) and unpack every archive into the manual directory, keeping the folders
inside the archives:
  Videos.zip           -> {VIDEO_DIR}/<name>.mp4
  SaliencyTrain.zip    -> {SALIENCY_DIRS[0]}/<name>.mp4
  SaliencyTest.zip     -> {SALIENCY_DIRS[1]}/<name>.mp4
  FixationsTrain.zip   -> {FIXATION_DIRS[0]}/<name>/{FIXATIONS_FILE}
  FixationsTest.zip    -> {FIXATION_DIRS[1]}/<name>/{FIXATIONS_FILE}
  {SPLIT_FILE}, {INFO_FILE} -> the manual directory itself
"""


@dataclasses.dataclass(frozen=True)
class VideoSource:
    """The three files of one video (video, ground-truth map video, fixations) and its licence."""

    name: str
    video: pathlib.Path
    saliency: pathlib.Path
    fixations: pathlib.Path
    licence: str = ""


def _part(split: str) -> int:
    """0 for the train archives, 1 for the test ones."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return 0 if split == "train" else 1


def video_path(root: str | os.PathLike, name: str) -> pathlib.Path:
    """Where the video `name` lies in an unpacked AViMoS."""
    return pathlib.Path(root) / VIDEO_DIR / f"{name}.mp4"


def saliency_path(root: str | os.PathLike, name: str, split: str) -> pathlib.Path:
    """Where the ground-truth map video of `name`, a video of `split`, lies."""
    return pathlib.Path(root) / SALIENCY_DIRS[_part(split)] / f"{name}.mp4"


def fixations_path(root: str | os.PathLike, name: str, split: str) -> pathlib.Path:
    """Where the fixations.json of `name`, a video of `split`, lies."""
    return pathlib.Path(root) / FIXATION_DIRS[_part(split)] / name / FIXATIONS_FILE


def _read_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from error


def read_splits(manual_dir: str | os.PathLike) -> dict[str, list[str]]:
    """TrainTestSplit.json -> {"train", "public_test", "private_test": sorted names without extension}.

    `manual_dir` is the unpacked AViMoS folder (its TrainTestSplit.json is read) or the split file itself.
    """
    path = pathlib.Path(manual_dir)
    if not path.is_file():
        path = path / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{manual_dir}: missing {SPLIT_FILE} (see the manual download instructions)")
    table = _read_json(path)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected a JSON object of split -> names, got {type(table).__name__}")
    splits = {}
    for split, keys in _SPLIT_KEYS.items():
        key = next((k for k in keys if k in table), None)
        if key is None:
            raise ValueError(f"{path}: no {' or '.join(map(repr, keys))} key (has {sorted(table)})")
        splits[split] = sorted(os.path.splitext(str(name))[0] for name in table[key])
    return splits


def read_licences(manual_dir: str | os.PathLike) -> dict[str, str]:
    """VideoInfo.json -> {name: licence}; tolerant of a name-keyed object or a list of records; {} if absent."""
    path = pathlib.Path(manual_dir) / INFO_FILE
    if not path.is_file():
        return {}
    table = _read_json(path)
    records = table.items() if isinstance(table, dict) else ((r.get("name", ""), r) for r in table)
    licences = {}
    for name, record in records:
        if isinstance(record, dict):
            value = next((record[k] for k in ("licence", "license", "License", "Licence") if k in record), "")
            licences[os.path.splitext(str(name))[0]] = str(value)
    return licences


def _locate(manual_dir: pathlib.Path, folders: Sequence[str], relative: str):
    """(the file under the first folder that has it or None, the places looked at)."""
    candidates = [manual_dir / folder / relative for folder in folders]
    found = next((path for path in candidates if path.is_file()), None)
    return found, " or ".join(map(str, candidates))


def find_sources(manual_dir: str | os.PathLike, names: Sequence[str]) -> tuple[list[VideoSource], list[str]]:
    """Locate every video's files: (complete sources, one line per video naming its missing files).

    The ground truth of a name is looked for in the train folders, then the test ones, so a caller
    needs no split to find it.
    """
    manual_dir = pathlib.Path(manual_dir)
    licences = read_licences(manual_dir)
    sources, problems = [], []
    for name in names:
        video, video_places = _locate(manual_dir, [VIDEO_DIR], f"{name}.mp4")
        saliency, saliency_places = _locate(manual_dir, SALIENCY_DIRS, f"{name}.mp4")
        fixations, fixation_places = _locate(manual_dir, FIXATION_DIRS, f"{name}/{FIXATIONS_FILE}")
        missing = [
            f"{what} ({places})"
            for what, path, places in [
                ("video", video, video_places),
                ("saliency maps", saliency, saliency_places),
                ("fixations", fixations, fixation_places),
            ]
            if path is None
        ]
        if missing:
            problems.append(f"video {name!r}: missing {'; '.join(missing)}")
        else:
            sources.append(VideoSource(name, video, saliency, fixations, licences.get(name, "")))
    return sources, problems


def check_manual_dir(manual_dir: str | os.PathLike) -> None:
    """Fail listing every archive folder that is absent, before any work starts."""
    manual_dir = pathlib.Path(manual_dir)
    expected = [SPLIT_FILE, VIDEO_DIR, *SALIENCY_DIRS, *FIXATION_DIRS]
    missing = [item for item in expected if not (manual_dir / item).exists()]
    if missing:
        raise FileNotFoundError(
            f"{manual_dir}: missing {', '.join(missing)}. Unpack the archives as described in the "
            f"manual download instructions (python -m salax.data.build_avimos --help)."
        )


def read_fixations(path: str | os.PathLike) -> list[np.ndarray]:
    """fixations.json -> per frame an int32 [n, 2] array of (row, col); ValueError naming the file."""
    try:
        frames = json.loads(pathlib.Path(path).read_text())
        if not isinstance(frames, list):
            raise TypeError(f"expected a list with one entry per frame, got {type(frames).__name__}")
        return [np.asarray(points, np.int32).reshape(-1, 2) for points in frames]
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: unreadable fixations ({error})") from error
