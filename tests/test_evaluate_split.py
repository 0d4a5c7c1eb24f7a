"""A model on a built split (salax.evaluate.split): a small built synthetic AViMoS, with known predictors."""

import concurrent.futures
import json
import shutil
import threading

from avimos_testdata import built_avimos
import numpy as np
import pytest
from remote_testdata import BUCKET, fake_bucket

from salax import metrics
from salax.data import avimos, media, pipeline
from salax.evaluate import map_encoding, submission, videos
from salax.evaluate import split as split_eval


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_avimos(tmp_path_factory)


def _data(built, split: str, **fields) -> split_eval.EvalData:
    return split_eval.EvalData(data_dir=str(built.data_dir), builder_config=built.config, split=split,
                             manual_dir=str(built.manual_dir), clip_frames=2, stride=1, image_size=(32, 32),
                             batch_size=8, audio=True, **fields)


def _frames_on(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rows = np.arange(size[0]) * maps.shape[1] // size[0]
    cols = np.arange(size[1]) * maps.shape[2] // size[1]
    return maps[:, rows][:, :, cols]


def test_truth_scores_high_and_centre_prior_scores_as_itself(built, tmp_path):
    split = "public_test"
    truth = split_eval.evaluate(lambda batch: _frames_on(np.asarray(batch["saliency"]), (32, 32)), _data(built, split),
                              predictions_dir=tmp_path)
    prior = split_eval.evaluate(lambda batch: np.broadcast_to(videos.centre_prior(32, 32), (8, 32, 32)),
                              _data(built, split))
    names = pipeline.list_videos(built.data_dir, builder_config=built.config, split=split)
    assert truth["videos"] == len(names) and truth["frames"] == sum(names.values())
    assert truth["model"]["cc"] > 0.9 and truth["model"]["cc"] > truth["centre_prior"]["cc"] + 0.3
    assert truth["model"]["nss"] > truth["centre_prior"]["nss"] + 1.0
    # The centre prior as "the model" scores what the built-in baseline scores (up to its resizing).
    np.testing.assert_allclose(prior["model"]["cc"], prior["centre_prior"]["cc"], atol=0.02)
    for name in names:
        written = media.probe(tmp_path / f"{name}.mp4")
        source = media.probe(built.manual_dir / "SaliencyTest" / "Test" / f"{name}.mp4")
        assert (written.num_frames, written.height, written.width) == (source.num_frames, source.height, source.width)
        assert (tmp_path / f"{name}_overlay.mp4").is_file()


def test_videos_can_be_chosen_by_name_or_count(built):
    names = list(pipeline.list_videos(built.data_dir, builder_config=built.config, split="private_test"))
    flat = lambda batch: np.ones((8, 32, 32), np.float32)  # noqa: E731
    assert split_eval.evaluate(flat, _data(built, "private_test", videos=(names[-1],)))["videos"] == 1
    assert split_eval.evaluate(flat, _data(built, "private_test", max_videos=1))["videos"] == 1


def test_missing_ground_truth_is_named(built, tmp_path):
    data = _data(built, "public_test")
    data = type(data)(**{**data.__dict__, "manual_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="ground truth for evaluation is missing"):
        split_eval.evaluate(lambda batch: None, data)


def _noisy_truth(batch):
    """The truth on the model grid plus noise: a map with tails and near-ties, like a model's."""
    truth = _frames_on(np.asarray(batch["saliency"]), (32, 32))
    noise = np.random.default_rng(0).random(truth.shape)
    return (0.7 * truth + 0.3 * noise * truth.mean()).astype(np.float32)


def test_as_submitted_is_what_the_submission_scorer_gives_for_the_written_videos(built, tmp_path):
    split = "public_test"
    manual = tmp_path / "manual"  # the truth, with frames 2-4 of a video left without fixations
    shutil.copytree(built.manual_dir, manual)
    name = next(iter(pipeline.list_videos(built.data_dir, builder_config=built.config, split=split)))
    fixations = manual / avimos.FIXATION_DIRS[1] / name / "fixations.json"
    entries = json.loads(fixations.read_text())
    fixations.write_text(json.dumps([[] if 2 <= index <= 4 else points for index, points in enumerate(entries)]))
    data = _data(built, split)
    data = type(data)(**{**data.__dict__, "manual_dir": str(manual)})
    summary = split_eval.evaluate(_noisy_truth, data, predictions_dir=tmp_path / "written", as_submitted=True)
    assert set(summary["as_submitted"]) == {"auc_judd", "cc", "nss", "sim"}
    results = submission.score_submission(tmp_path / "written", manual / avimos.SALIENCY_DIRS[1],
                                          manual / avimos.FIXATION_DIRS[1], manual / avimos.SPLIT_FILE, mode=split,
                                          out=tmp_path / "results.json", progress=False)
    assert sum(video["excluded_frames"] for video in results["videos"]) == 3
    assert len(results["videos"]) == summary["videos"] and not results["failed"]
    for metric, value in results["mean"].items():
        assert summary["as_submitted"][metric] == pytest.approx(value, abs=1e-9), metric
    # The float maps score apart from their 8-bit frames, mostly in AUC-Judd (ties at level 0).
    assert summary["as_submitted"]["auc_judd"] < summary["model"]["auc_judd"]
    assert "as_submitted" not in split_eval.evaluate(_noisy_truth, _data(built, split, max_videos=1))


def test_written_videos_are_the_frames_predict_writes(built, tmp_path):
    seen = []

    def recorded(batch):
        maps = _noisy_truth(batch)
        seen.append(maps[np.asarray(batch["valid"], bool)])
        return maps

    data = _data(built, "public_test", max_videos=1)
    split_eval.evaluate(recorded, data, predictions_dir=tmp_path)
    name = next(iter(pipeline.list_videos(built.data_dir, builder_config=built.config, split="public_test")))
    source = avimos.find_sources(built.manual_dir, [name])[0][0]
    info = media.probe(source.video)
    expected = np.stack(list(map_encoding.encode(np.concatenate(seen), (info.height, info.width))))
    written = np.rint(media.read_maps(tmp_path / f"{name}.mp4") * 255)
    np.testing.assert_array_equal(written, expected)  # at the video's size, stretched per frame, 8 bits
    assert written.min(axis=(1, 2)).max() == 0 and written.max(axis=(1, 2)).min() == 255


def test_predicted_videos_go_to_a_remote_folder(built, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a local-only writer would make a folder "gs:" here
    with fake_bucket(tmp_path / "bucket") as bucket:
        split_eval.evaluate(_noisy_truth, _data(built, "public_test", max_videos=1),
                            predictions_dir=f"{BUCKET}/run/predictions")
    name = next(iter(pipeline.list_videos(built.data_dir, builder_config=built.config, split="public_test")))
    landed = tmp_path / "bucket" / "run" / "predictions"
    assert sorted(p.name for p in landed.iterdir()) == [f"{name}.mp4", f"{name}_overlay.mp4"]
    assert media.probe(landed / f"{name}.mp4").num_frames == media.probe(landed / f"{name}_overlay.mp4").num_frames
    assert not (tmp_path / "gs:").exists()
    # Uploaded under hidden names, then renamed: the final names never hold half a file.
    assert all("/." in path and ".partial-" in path for path in bucket.written)
    assert sorted(target for _, target in bucket.renamed) == [f"{BUCKET}/run/predictions/{name}.mp4",
                                                              f"{BUCKET}/run/predictions/{name}_overlay.mp4"]


def test_several_processes_gather_both_score_sets(monkeypatch):
    """Two processes, one video each: each ends with both videos' float and as-submitted scores, exactly."""
    rng = np.random.default_rng(0)

    def scored(name, frames):
        model = {metric: rng.random(frames).astype(np.float32) for metric in metrics.METRIC_NAMES}
        prior = {metric: rng.random(frames).astype(np.float32) for metric in metrics.METRIC_NAMES}
        submitted = {metric: rng.random(frames).astype(np.float32) for metric in metrics.RANKING_METRICS}
        return split_eval._Scored(videos.VideoScores(name, model, prior), videos.VideoScores(name, submitted))

    own = [{"a": scored("a", 5)}, {"b": scored("b", 3)}]  # what process 0 and process 1 scored
    slots, barrier, local = {}, threading.Barrier(2, timeout=30), threading.local()

    def allgather(value):  # both "processes" (threads) meet here, as in multihost_utils
        call = local.calls = getattr(local, "calls", -1) + 1
        slots[call, local.process] = np.asarray(value)
        barrier.wait()
        stacked = np.stack([slots[call, 0], slots[call, 1]])
        barrier.wait()
        return stacked

    def gathered_on(process):
        local.process = process
        return split_eval._gathered(own[process], ["a", "b"], {"a": 0, "b": 1}, as_submitted=True)

    monkeypatch.setattr(split_eval.jax, "process_count", lambda: 2)
    monkeypatch.setattr(split_eval.multihost_utils, "process_allgather", allgather)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(gathered_on, (0, 1)))
    for result in results:
        for video, expected in zip(result, (own[0]["a"], own[1]["b"])):
            for part in ("frames", "prior"):
                for metric in metrics.METRIC_NAMES:
                    np.testing.assert_array_equal(getattr(video.model, part)[metric],
                                                  getattr(expected.model, part)[metric])
            assert set(video.submitted.frames) == set(metrics.RANKING_METRICS)
            for metric in metrics.RANKING_METRICS:
                np.testing.assert_array_equal(video.submitted.frames[metric], expected.submitted.frames[metric])
