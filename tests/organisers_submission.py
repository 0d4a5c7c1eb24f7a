"""The organisers' whole submission route, as the oracle of salax.evaluate.submission.

Transcribed from the steps of their `bench.py` (see ../shared/reference/avimos.md, "The organisers'
route in full"): every video of the split is extracted with `ffmpeg -v error -i VIDEO DIR/%03d.png`
into a folder named by its stem; a video's frame folder is found by `glob(DIR/NAME*)[0]`; the
frames of both sides are listed with `sorted(os.listdir(...))` and zipped with the entries of
fixations.json; each frame pair is read with `cv2.imread(IMREAD_UNCHANGED)` and scored by their per-frame
code (tests/metrics_reference.py: read_sm, cv2.resize, metrics) in their pinned numpy 1.24.2 + OpenCV
4.7.0.72 (tests/organisers_oracle.py, a cached venv: newer OpenCV resizes some pixels differently, which
moves AUC-Judd's ties); per video the mean over frames, then the plain mean over videos. Two departures,
both switchable, for testing salax's options: `corrected` pairs frame i with entry i (numeric order)
and counts distinct fixated pixels in AUC-Judd, and a frame without fixations (where their script
crashes) is left out of the means.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
import subprocess

import cv2
import numpy as np
import organisers_oracle

RANKED = ("cc", "sim", "nss", "auc_judd")


def extract(videos: Path, frames: Path, names: set[str]) -> None:
    """Their `extract_frames`: one folder of %03d.png per video of the split, by the ffmpeg CLI."""
    frames.mkdir(parents=True, exist_ok=True)
    for video in videos.iterdir():
        if video.stem in names:
            (frames / video.stem).mkdir()
            subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), f"{frames / video.stem}/%03d.png"], check=True)


def score_video(prediction_frames: str, truth_frames: str, fixations_json: Path, *,
                corrected: bool = False) -> dict[str, object]:
    """Their `calculate_metrics` on extracted frame folders: per-frame scores and the means."""
    fixations = json.loads(fixations_json.read_text())
    order = (lambda names: sorted(names, key=lambda name: int(name.split(".")[0]))) if corrected else sorted
    truth, predicted = order(os.listdir(truth_frames)), order(os.listdir(prediction_frames))
    assert {int(x.split(".")[0]) for x in truth} == {int(x.split(".")[0]) for x in predicted}
    cases, kept = [], []
    for points, truth_name, predicted_name in zip(fixations, truth, predicted):
        points = np.array(points, dtype=np.int64).reshape(-1, 2)
        kept.append(len(points) > 0)  # their script aborts on a frame without fixations; salax leaves it out
        if kept[-1]:
            cases.append((cv2.imread(os.path.join(prediction_frames, predicted_name), cv2.IMREAD_UNCHANGED),
                          cv2.imread(os.path.join(truth_frames, truth_name), cv2.IMREAD_UNCHANGED), points))
    scores = [case["scores"] for case in organisers_oracle.organisers_route(cases, corrected=corrected)]
    return {"frames": len(truth), "excluded_frames": kept.count(False),
            **{metric: float(np.mean([frame[metric] for frame in scores])) for metric in RANKED}}


def score_submission(predictions: Path, gt_saliency: Path, gt_fixations: Path, split_json: Path, mode: str,
                     scratch: Path, *, corrected: bool = False) -> dict[str, dict[str, object]]:
    """Their `make_bench` from the videos: {video name: scores}, extracting into `scratch` once."""
    names = set(json.loads(split_json.read_text())[mode])
    predicted_frames, truth_frames = scratch / "predictions", scratch / "truth"
    if not predicted_frames.exists():
        extract(predictions, predicted_frames, names)
        extract(gt_saliency, truth_frames, names)
    results = {}
    for name in sorted(set(os.listdir(predicted_frames)) & names):
        results[name] = score_video(glob.glob(str(predicted_frames / f"{name}*"))[0],
                                    glob.glob(str(truth_frames / f"{name}*"))[0],
                                    gt_fixations / name / "fixations.json", corrected=corrected)
    return results
