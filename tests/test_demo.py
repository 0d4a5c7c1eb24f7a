"""The demo job end to end, and that what it learns is real (slow: minutes each).

    python -m pytest -m slow tests/test_demo.py
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from run_testdata import ROOT, load_config

from salax import demo, train
from salax.data import media, pipeline
from salax.evaluate import split

DEMO_LIMIT_S = 600


@pytest.mark.slow
def test_demo_runs_in_time_and_beats_the_centre_prior(tmp_path):
    raw, built, workdir = tmp_path / "avimos", tmp_path / "tfds", tmp_path / "run"
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "salax.main", "--config=configs/umt.py:demo", f"--workdir={workdir}",
         f"--config.data.manual_dir={raw}", f"--config.data.data_dir={built}"],
        cwd=ROOT, capture_output=True, text=True, timeout=2 * DEMO_LIMIT_S,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    assert seconds < DEMO_LIMIT_S, f"the demo took {seconds:.0f} s"
    assert str(workdir / "eval" / "summary.json") in result.stdout

    summary = json.loads((workdir / "eval" / "summary.json").read_text())
    model, prior = summary["model"], summary["centre_prior"]
    # Measured on 2 CPU cores: CC 0.77 vs 0.05, NSS 5.7 vs 0.24 after 400 steps. Synthetic saliency
    # follows moving objects, so the centre prior is weak; a model that learned nothing scores
    # about as low as it. The margins are a third of the measured gaps.
    assert model["cc"] > prior["cc"] + 0.25, summary
    assert model["nss"] > prior["nss"] + 1.8, summary
    assert model["auc_judd"] > prior["auc_judd"], summary

    videos = pipeline.list_videos(built, builder_config="s224", split="validation")
    assert summary["videos"] == len(videos) > 0 and summary["frames"] == sum(videos.values())
    for name in videos:
        truth = media.probe(raw / "SaliencyTrain" / "Train" / f"{name}.mp4")
        predicted = media.probe(workdir / "predictions" / f"{name}.mp4")
        overlay = media.probe(workdir / "predictions" / f"{name}_overlay.mp4")
        source = media.probe(raw / "Videos" / f"{name}.mp4")
        assert (predicted.num_frames, predicted.height, predicted.width) == (
            truth.num_frames, truth.height, truth.width)
        assert overlay.num_frames == source.num_frames and overlay.has_audio == source.has_audio


def _scores_on(config, workdir: pathlib.Path, names: tuple[str, ...]) -> dict[str, float]:
    """Train `config` in `workdir`, then its mean CC and NSS over the held-out videos `names`."""
    result = train.train(config, workdir, train.train_batches(config))
    evaluator = split.ValidationEvaluator(split.EvalData.from_config(config), result.setup.model.predict_fn())
    videos, totals = 0, {}
    for name in ("validation", "public_test", "private_test"):
        evaluator.data = dataclasses.replace(evaluator.data, split=name, videos=names)
        summary = evaluator(result.state["params"]).summary
        if not summary["videos"]:
            continue
        for metric in ("cc", "nss"):
            totals[metric] = totals.get(metric, 0.0) + summary["model"][metric] * summary["videos"]
        videos += summary["videos"]
    return {metric: total / videos for metric, total in totals.items()}


@pytest.mark.slow
def test_audio_helps_on_sound_linked_videos(tmp_path):
    config = load_config("demo")
    config.data.manual_dir, config.data.data_dir = str(tmp_path / "avimos"), str(tmp_path / "tfds")
    config.write_predictions = False
    demo.prepare_synthetic_data(config)
    info = json.loads((tmp_path / "avimos" / "VideoInfo.json").read_text())
    held_out = set(pipeline.list_videos(config.data.data_dir, builder_config="s224", split="validation"))
    held_out |= {name for name, facts in info.items() if facts["split"] != "train"}
    linked = tuple(sorted(name for name in held_out if info[name]["sound_linked"]))
    assert len(linked) >= 3

    with_audio = _scores_on(config, tmp_path / "audio", linked)
    config.model.audio = False
    without_audio = _scores_on(config, tmp_path / "silent", linked)
    # In sound-linked scenes observers look at the object that flashes while its tone plays; only
    # the audio model can know when. Measured on the 5 held-out sound-linked videos: CC 0.688 vs
    # 0.620, NSS 4.94 vs 4.39; on the 8 other held-out videos the two models are level (CC 0.76
    # vs 0.72, driven by one video). The margins are under half the measured gains.
    assert with_audio["cc"] > without_audio["cc"] + 0.03, (with_audio, without_audio)
    assert with_audio["nss"] > without_audio["nss"] + 0.2, (with_audio, without_audio)
