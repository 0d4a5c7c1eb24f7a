"""salax.evaluate.submission against the organisers' whole route (tests/organisers_submission.py).

A small AViMoS-like layout is written here: 10-bit lossless truth videos, fixations.json with
duplicates, a split file, and 8-bit prediction videos at model resolution (landscape, vertical,
gray, tie-heavy upscaled; a 1005-frame one in the slow set). The oracle extracts PNGs with the
ffmpeg CLI and scores them with the float64 per-frame rules; salax streams the videos.
"""

from fractions import Fraction
import json
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import av
import cv2
import numpy as np
import organisers_submission
import pytest

from salax.data import avimos, media
from salax.evaluate import submission

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")
TOLERANCE = 1e-6


def drift(index: int) -> float:
    """How far the blobs of frame `index` have moved down (a fraction of the height)."""
    return 0.1 * np.sin(index / 8)


def smooth_maps(centres: np.ndarray, frames: int, shape: tuple[int, int], levels: int | None = None) -> np.ndarray:
    """Blobs around `centres` (fractions of the frame) bobbing up and down, in [0, 1]; with `levels`, quantised to
    that many values (ties everywhere)."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]] / np.array(shape).reshape(2, 1, 1)
    maps = []
    for index in range(frames):
        value = np.zeros(shape)
        for row, col in centres:
            value += np.exp(-((rows - row - drift(index)) ** 2 + (cols - col) ** 2) / 0.02)
        value /= value.max()
        maps.append(np.round(value * (levels - 1)) / (levels - 1) if levels else value)
    return np.stack(maps).astype(np.float32)


def write_gray_video(path: Path, maps: np.ndarray) -> None:
    """A 1-channel (gray, 4:0:0) 8-bit video: FFV1 in Matroska."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(30))
        stream.height, stream.width = maps.shape[1:]
        stream.pix_fmt = "gray"
        for index, values in enumerate(maps):
            frame = av.VideoFrame.from_ndarray(np.round(values * 255).astype(np.uint8), format="gray")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def fixations_for(rng, centres: np.ndarray, frames: int, shape: tuple[int, int],
                  per_frame: int = 9) -> list[list[list[int]]]:
    """Points scattered around the truth's blobs (as smooth_maps moves them), one duplicate per frame."""
    entries = []
    for index in range(frames):
        blobs = centres[rng.integers(0, len(centres), per_frame)] + [drift(index), 0]
        points = np.round((blobs + rng.normal(0, 0.08, blobs.shape)) * shape).astype(int)
        points = np.clip(points, 0, np.array(shape) - 1)
        points[-1] = points[0]  # duplicates are real in AViMoS and must be kept
        entries.append(points.tolist())
    return entries


# name: (frames, truth (H, W), prediction (h, w), kind)
VIDEOS = {
    "land": (12, (72, 128), (18, 32), "video"),
    "vert": (10, (128, 72), (32, 18), "video"),
    "gray": (9, (72, 128), (36, 64), "gray"),
    "ties": (8, (72, 128), (18, 32), "ties"),
}
LONG = {"long": (1005, (18, 32), (9, 16), "video")}


def write_layout(root: Path, videos: dict, *, seed: int = 0) -> dict[str, Path]:
    """AViMoS's test layout (plus a prediction folder) for `videos`; returns the four paths."""
    rng = np.random.default_rng(seed)
    paths = {"predictions": root / "predictions", "gt_saliency": root / avimos.SALIENCY_DIRS[1],
             "gt_fixations": root / avimos.FIXATION_DIRS[1], "split_json": root / avimos.SPLIT_FILE}
    for name, (frames, truth_shape, prediction_shape, kind) in videos.items():
        centres = rng.random((3, 2))
        media.write_map_video(paths["gt_saliency"] / f"{name}.mp4", smooth_maps(centres, frames, truth_shape),
                              fps=30, bit_depth=10)
        fixations = paths["gt_fixations"] / name / avimos.FIXATIONS_FILE
        fixations.parent.mkdir(parents=True)
        fixations.write_text(json.dumps(fixations_for(rng, centres, frames, truth_shape)))
        guess = centres + rng.normal(0, 0.05, centres.shape)  # a fair prediction: near the truth's blobs
        predicted = smooth_maps(guess, frames, prediction_shape, levels=6 if kind == "ties" else None)
        if kind == "gray":
            paths["predictions"].mkdir(parents=True, exist_ok=True)
            write_gray_video(paths["predictions"] / f"{name}.mkv", predicted)
        else:
            media.write_map_video(paths["predictions"] / f"{name}.mp4", predicted, fps=30, bit_depth=8)
    names = sorted(videos)
    paths["split_json"].write_text(json.dumps({"train": [], "public_test": names, "private_test": []}))
    return paths


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> dict[str, Path]:
    return write_layout(tmp_path_factory.mktemp("avimos"), VIDEOS)


@pytest.fixture(scope="module")
def oracle(layout, tmp_path_factory):
    """The organisers' route on the layout, by rules: {corrected: {name: scores}}."""
    scratch = tmp_path_factory.mktemp("frames")
    return {corrected: organisers_submission.score_submission(
        layout["predictions"], layout["gt_saliency"], layout["gt_fixations"], layout["split_json"], "public_test",
        scratch, corrected=corrected) for corrected in (False, True)}


def score(layout, out: Path, **options) -> dict:
    return submission.score_submission(layout["predictions"], layout["gt_saliency"], layout["gt_fixations"],
                                       layout["split_json"], out=out, progress=False, **options)


def assert_matches(results: dict, expected: dict[str, dict]) -> None:
    assert [row["video_name"] for row in results["videos"]] == sorted(expected)
    for row in results["videos"]:
        theirs = expected[row["video_name"]]
        assert row["frames"] == theirs["frames"]
        assert row["excluded_frames"] == theirs["excluded_frames"]
        for metric in submission.SCORED:
            assert abs(row[metric] - theirs[metric]) <= TOLERANCE * max(1.0, abs(theirs[metric])), \
                (row["video_name"], metric, row[metric], theirs[metric])
    for metric in submission.SCORED:
        mean = np.mean([expected[name][metric] for name in expected])
        assert abs(results["mean"][metric] - mean) <= TOLERANCE * max(1.0, abs(mean))


@needs_ffmpeg
@pytest.mark.parametrize("corrected", [False, True], ids=["aim", "corrected"])
def test_means_equal_the_organisers_route(layout, oracle, tmp_path, corrected):
    results = score(layout, tmp_path / "results.json", corrected=corrected, num_workers=1)
    assert_matches(results, oracle[corrected])
    assert results["corrected"] is corrected and results["mode"] == "public_test" and results["failed"] == []
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert set(results) == {"videos", "mean", "mode", "corrected", "failed"}
    assert set(results["videos"][0]) == {"video_name", "frames", "cc", "sim", "nss", "auc_judd", "excluded_frames"}


@needs_ffmpeg
def test_corrected_changes_only_auc_judd_below_1000_frames(layout, tmp_path):
    aim = score(layout, tmp_path / "aim.json", num_workers=1)
    corrected = score(layout, tmp_path / "corrected.json", corrected=True, num_workers=1)
    for before, after in zip(aim["videos"], corrected["videos"]):
        for metric in ("cc", "sim", "nss"):
            assert before[metric] == after[metric]
        assert before["auc_judd"] != after["auc_judd"]  # H*W - 2 vs H*W - distinct pixels in the denominator


@needs_ffmpeg
def test_two_worker_threads_give_the_same_results(layout, tmp_path):
    one = score(layout, tmp_path / "one.json", num_workers=1)
    two = score(layout, tmp_path / "two.json", num_workers=2)
    assert one == two


@needs_ffmpeg
def test_png_frame_folders_score_like_the_videos(layout, tmp_path):
    """Either side may be the organisers' extracted layout (NAME/001.png ...)."""
    frames = tmp_path / "frames"
    organisers_submission.extract(layout["predictions"], frames, set(VIDEOS))
    videos = score(layout, tmp_path / "videos.json", num_workers=1)
    folders = submission.score_submission(frames, layout["gt_saliency"], layout["gt_fixations"],
                                          layout["split_json"], out=tmp_path / "folders.json", progress=False,
                                          num_workers=1)
    # The folder's PNGs are read as 3 channels, the grey videos' frames as 1 equal channel: the same image.
    assert folders == videos


@needs_ffmpeg
def test_score_frames_of_other_predictions_give_the_organisers_means(layout, oracle, tmp_path):
    """The door for predictions that are not files (the predict CLI's maps as submitted): the frames of the CLI's
    PNGs read by OpenCV go in, the organisers' per-video and submission means come out."""
    frames = tmp_path / "frames"
    organisers_submission.extract(layout["predictions"], frames, set(VIDEOS))
    scored = []
    for name in sorted(VIDEOS):
        predicted = (cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted((frames / name).iterdir()))
        scored.append(submission.score_frames(name, predicted, layout["gt_saliency"] / f"{name}.mp4",
                                              layout["gt_fixations"] / name / avimos.FIXATIONS_FILE))
    rows = [{"video_name": scores.name, "frames": scores.num_frames, **submission.video_means(scores)}
            for scores in scored]
    assert_matches({"videos": rows, "mean": submission.mean_scores(scored)}, oracle[False])
    one_short = (cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted((frames / "land").iterdir())[1:])
    with pytest.raises(submission.SubmissionError, match=r"^land: the frame counts differ: 11 predicted frames, 12 "):
        submission.score_frames("land", one_short, layout["gt_saliency"] / "land.mp4",
                                layout["gt_fixations"] / "land" / avimos.FIXATIONS_FILE)


@pytest.mark.slow
@needs_ffmpeg
def test_a_1005_frame_video_pairs_fixations_like_the_organisers(tmp_path):
    """From frame 1000 on, their sorted(os.listdir) pairing shifts fixations; corrected pairs frame i with entry i."""
    layout = write_layout(tmp_path / "avimos", LONG, seed=1)
    expected = {corrected: organisers_submission.score_submission(
        layout["predictions"], layout["gt_saliency"], layout["gt_fixations"], layout["split_json"], "public_test",
        tmp_path / "frames", corrected=corrected) for corrected in (False, True)}
    aim = score(layout, tmp_path / "aim.json")
    corrected = score(layout, tmp_path / "corrected.json", corrected=True)
    assert_matches(aim, expected[False])
    assert_matches(corrected, expected[True])
    assert abs(aim["videos"][0]["nss"] - corrected["videos"][0]["nss"]) > 1e-3  # the quirk moves NSS
    assert aim["videos"][0]["cc"] == corrected["videos"][0]["cc"]  # CC and SIM use no fixations


def test_fixation_entries_follow_the_lexicographic_listing():
    names = [f"{number:03d}.png" for number in range(1, 1006)]
    entries = submission.fixation_entries(names, corrected=False)
    assert entries[:100] == list(range(100))  # 001..100 come first
    assert entries[999] == 100  # 1000.png sorts right after 100.png
    assert entries[100] == 106  # 101.png comes after 1000..1005.png
    assert sorted(entries) == list(range(1005))
    assert submission.fixation_entries(names, corrected=True) == list(range(1005))


def test_the_published_leaderboard_order_is_the_mean_of_the_four_ranks():
    team, *values = submission.LEADERBOARD[4]  # MVP
    place, mean_rank, table = submission.leaderboard_place(dict(zip(submission.LEADERBOARD_METRICS, values)))
    assert [entry for entry, _ in table if entry != "this submission"] == [t for t, *_ in submission.LEADERBOARD]
    assert place == 5 and mean_rank == 5.0  # ties MVP on every metric, so shares its ranks


# ------------------------------------------------------------------------------------------ bad input, named


@pytest.fixture
def copied(layout, tmp_path) -> dict[str, Path]:
    """A private copy of the layout, to break."""
    root = tmp_path / "copy"
    shutil.copytree(layout["split_json"].parent, root)
    return {key: root / path.relative_to(layout["split_json"].parent) for key, path in layout.items()}


def test_missing_predictions_are_all_listed_before_scoring(copied, tmp_path):
    (copied["predictions"] / "land.mp4").unlink()
    (copied["predictions"] / "vert.mp4").rename(copied["predictions"] / "vert_v2.mp4")  # a near miss, not taken
    with pytest.raises(submission.SubmissionError) as raised:
        score(copied, tmp_path / "results.json", num_workers=1)
    message = str(raised.value)
    assert "2 of the 4 videos" in message and "land" in message and "vert_v2.mp4" in message
    assert "nothing was scored" in message and not (tmp_path / "results_videos").exists()


def test_a_name_that_matches_two_entries_is_refused(copied, tmp_path):
    (copied["predictions"] / "land").mkdir()
    with pytest.raises(submission.SubmissionError, match=r"2 entries are named land .*land, land.mp4"):
        score(copied, tmp_path / "results.json", num_workers=1)


def test_frame_count_mismatch_names_the_video_and_both_counts(copied, tmp_path):
    media.write_map_video(copied["predictions"] / "land.mp4", np.zeros((7, 18, 32), np.float32), fps=30, bit_depth=8)
    with pytest.raises(submission.SubmissionError, match=r"land: 7 predicted frames .* but 12 ground-truth frames"):
        score(copied, tmp_path / "results.json", num_workers=1)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_videos_are_named(copied, tmp_path, damage):
    path = copied["gt_saliency"] / "ties.mp4"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\0" * 1000)
    with pytest.raises(submission.SubmissionError, match=r"ties: .*ties.mp4"):
        score(copied, tmp_path / "results.json", num_workers=1)


@pytest.mark.parametrize("problem, message", [
    ("missing", r"fixations: no .*vert/fixations.json"),
    ("malformed", r"vert: .*fixations.json: unreadable fixations"),
    ("count", r"vert: .*fixations.json has 9 frames of fixations but the video has 10 frames"),
])
def test_bad_fixations_are_named(copied, tmp_path, problem, message):
    path = copied["gt_fixations"] / "vert" / "fixations.json"
    if problem == "missing":
        path.unlink()
    elif problem == "malformed":
        path.write_text("[[1, 2], ")
    else:
        path.write_text(json.dumps(json.loads(path.read_text())[:9]))
    with pytest.raises(submission.SubmissionError, match=message):
        score(copied, tmp_path / "results.json", num_workers=1)


def test_keep_going_records_failures_and_scores_the_rest(copied, tmp_path):
    (copied["gt_fixations"] / "vert" / "fixations.json").write_text("{}")
    (copied["predictions"] / "gray.mkv").unlink()
    results = score(copied, tmp_path / "results.json", num_workers=2, keep_going=True)
    assert [row["video_name"] for row in results["videos"]] == ["land", "ties"]
    assert [(failure["video_name"], "fixations" in failure["error"]) for failure in results["failed"]] == [
        ("gray", False), ("vert", True)]
    assert "no gray.*" in results["failed"][0]["error"]


@needs_ffmpeg
def test_a_frame_without_fixations_is_left_out_and_counted(copied, tmp_path):
    path = copied["gt_fixations"] / "land" / "fixations.json"
    entries = json.loads(path.read_text())
    entries[4] = []
    path.write_text(json.dumps(entries))
    expected = organisers_submission.score_submission(
        copied["predictions"], copied["gt_saliency"], copied["gt_fixations"], copied["split_json"], "public_test",
        tmp_path / "frames")
    results = score(copied, tmp_path / "results.json", num_workers=1)
    land = next(row for row in results["videos"] if row["video_name"] == "land")
    assert land["excluded_frames"] == 1 and land["frames"] == 12
    for metric in submission.SCORED:  # the means of the other frames
        assert abs(land[metric] - expected["land"][metric]) <= TOLERANCE
    record = json.loads((tmp_path / "results_videos" / "land.json").read_text())
    assert record["per_frame"]["nss"][4] is None and record["per_frame"]["cc"][4] is not None


# ------------------------------------------------------------------------------------------ resume, CLI


def test_a_rerun_after_kill_9_rescores_nothing_already_done(tmp_path):
    videos = {f"clip{index}": (48, (270, 480), (54, 96), "video") for index in range(6)}
    layout = write_layout(tmp_path / "avimos", videos, seed=2)
    out = tmp_path / "results.json"
    records = tmp_path / "results_videos"
    command = [sys.executable, "-m", "salax.evaluate", "--predictions", str(layout["predictions"]),
               "--gt_saliency", str(layout["gt_saliency"]), "--gt_fixations", str(layout["gt_fixations"]),
               "--split_json", str(layout["split_json"]), "--out", str(out), "--num_workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if records.is_dir() and len(list(records.glob("*.json"))) >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in records.glob("*.json")}
    assert 2 <= len(done) < 6 and not out.exists(), "the run should have been killed part-way"
    results = score(layout, out, num_workers=1)
    assert len(results["videos"]) == 6
    for name, (data, modified) in done.items():  # reused as they were: not rescored, not rewritten
        assert (records / name).read_bytes() == data and (records / name).stat().st_mtime_ns == modified
    again = {path.name: path.stat().st_mtime_ns for path in records.glob("*.json")}
    score(layout, out, num_workers=1)
    assert {path.name: path.stat().st_mtime_ns for path in records.glob("*.json")} == again


def test_changed_rules_or_inputs_are_rescored(layout, tmp_path):
    out = tmp_path / "results.json"
    score(layout, out, num_workers=1)
    record = tmp_path / "results_videos" / "land.json"
    first = record.stat().st_mtime_ns
    score(layout, out, num_workers=1, corrected=True)
    assert record.stat().st_mtime_ns != first and json.loads(record.read_text())["inputs"]["corrected"] is True


@needs_ffmpeg
def test_the_organisers_flag_names_work_and_the_table_is_printed(layout, tmp_path, capsys):
    from salax.evaluate.__main__ import main

    out = tmp_path / "theirs.json"
    code = main(["--model_video_predictions", str(layout["predictions"]),
                 "--gt_video_predictions", str(layout["gt_saliency"]),
                 "--gt_fixations_path", str(layout["gt_fixations"]), "--split_json", str(layout["split_json"]),
                 "--results_json", str(out), "--mode", "public_test", "--num_workers", "1"])
    printed = capsys.readouterr().out
    assert code == 0 and json.loads(out.read_text())["corrected"] is False
    assert "AIM-compatible rules" in printed and "AIM 2024 final leaderboard" in printed and "CV_MM" in printed
    assert main(["--predictions", str(layout["predictions"]), "--gt_saliency", str(layout["gt_saliency"]),
                 "--gt_fixations", str(layout["gt_fixations"]), "--split_json", str(layout["split_json"]),
                 "--out", str(tmp_path / "ours.json"), "--corrected", "--num_workers", "1"]) == 0
    assert "corrected rules" in capsys.readouterr().out


def test_given_lists_only_the_submission_flags():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--predictions")
    parser.add_argument("--corrected", action="store_true")
    submission.add_arguments(parser)
    args = parser.parse_args(["--predictions", "p", "--corrected", "--results_json", "r.json", "--keep_going"])
    assert submission.given(args) == ["--out", "--keep_going"] and args.out == "r.json"
    assert submission.given(parser.parse_args(["--model_video_predictions", "p"])) == []


def test_missing_inputs_and_an_empty_split_are_named_by_the_cli(layout, tmp_path, capsys):
    from salax.evaluate.__main__ import main

    assert main(["--predictions", str(tmp_path / "nowhere"), "--gt_saliency", str(layout["gt_saliency"]),
                 "--out", str(tmp_path / "r.json")]) == 1
    error = capsys.readouterr().err
    assert "--predictions" in error and "nowhere" in error
    assert "--gt_fixations ./FixationsTest/Test (the default)" in error
    assert main(["--predictions", str(layout["predictions"]), "--gt_saliency", str(layout["gt_saliency"]),
                 "--gt_fixations", str(layout["gt_fixations"]), "--split_json", str(layout["split_json"]),
                 "--mode", "private_test", "--out", str(tmp_path / "r.json")]) == 1
    assert "lists no videos under 'private_test'" in capsys.readouterr().err
