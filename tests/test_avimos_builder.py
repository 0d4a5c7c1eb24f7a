"""The AViMoS builder and its CLI (salax.data.avimos_builder, build_avimos): examples, codecs, bad input, reruns."""

import json
import shutil
import sys

from avimos_testdata import built_avimos
import numpy as np
import pytest
import tensorflow_datasets as tfds

from salax.data import avimos, avimos_builder, build_avimos, media


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_avimos(tmp_path_factory)


@pytest.fixture(scope="module")
def builder(built):
    return avimos_builder.Avimos(data_dir=str(built.data_dir), config=built.config)


def _split_table(manual_dir):
    return json.loads((manual_dir / "TrainTestSplit.json").read_text())


def test_splits_follow_the_split_file_with_a_validation_carve_out(built, builder):
    table = _split_table(built.manual_dir)
    train_names, _ = avimos_builder.split_metadata(builder, "train")
    validation_names, _ = avimos_builder.split_metadata(builder, "validation")
    assert len(validation_names) == 1
    assert sorted(train_names + validation_names) == sorted(table["train"])
    for split in ("public_test", "private_test"):
        assert avimos_builder.split_metadata(builder, split)[0] == sorted(table[split])
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
        "train": len(train_names), "validation": 1,
        "public_test": len(table["public_test"]), "private_test": len(table["private_test"]),
    }


def test_examples_are_stored_in_metadata_order(builder):
    names, num_frames = avimos_builder.split_metadata(builder, "train")
    source = builder.as_data_source(split="train")
    assert names == sorted(names)
    assert [source[i]["name"].decode() for i in range(len(source))] == names
    assert [int(source[i]["num_frames"]) for i in range(len(source))] == num_frames


def _example(builder, split, index=0):
    source = builder.as_data_source(split=split)
    return source[index]


def test_an_example_matches_its_source_files(built, builder):
    example = _example(builder, "train")
    name = example["name"].decode()
    video = built.manual_dir / "Videos" / f"{name}.mp4"
    info = media.probe(video)
    height, width = avimos_builder.storage_size(info.height, info.width, built.config.short_side)
    assert min(height, width) == 48

    assert example["num_frames"] == info.num_frames == len(example["frames"]) == len(example["saliency"])
    assert example["fps"] == pytest.approx(info.fps)
    frame = avimos_builder.decode_jpeg(example["frames"][3])
    expected = media.read_frames(video, size=(height, width))[3]
    assert frame.shape == (height, width, 3)
    assert np.abs(frame.astype(int) - expected).mean() < 3.0  # JPEG at quality 95

    fixations = json.loads((built.manual_dir / "FixationsTrain" / "Train" / name / "fixations.json").read_text())
    assert example["fixation_counts"].tolist() == [len(points) for points in fixations]
    assert example["fixations_native"].tolist() == [p for points in fixations for p in points]
    assert tuple(example["native_size"]) == (info.height, info.width)
    stored = example["fixations"]
    assert (stored >= 0).all() and (stored < np.array([height, width])).all()
    scale = np.array([height / info.height, width / info.width])
    assert np.abs((stored + 0.5) - (example["fixations_native"] + 0.5) * scale).max() <= 1.0

    maps = media.read_maps(built.manual_dir / "SaliencyTrain" / "Train" / f"{name}.mp4")
    stored_map = avimos_builder.decode_map_png(example["saliency"][3])
    assert stored_map.shape == (height, width)
    # The stored map is the source map shrunk: the peaks agree and the mass sits in the same place.
    peak = np.unravel_index(stored_map.argmax(), stored_map.shape)
    assert maps[3][int(peak[0] / scale[0]), int(peak[1] / scale[1])] > 0.8 * maps[3].max()

    assert example["licence"].decode() == built.info[name]["licence"]
    assert bool(example["has_audio"]) == built.info[name]["has_audio"]


def _all_examples(builder):
    for source in builder.as_data_source().values():
        yield from (source[index] for index in range(len(source)))


def test_audio_is_stored_at_16k_from_the_first_frame(built, builder):
    examples = list(_all_examples(builder))
    assert {bool(e["has_audio"]) for e in examples} == {True, False}, "synthetic data mixes sound and silence"
    for example in examples:
        name = example["name"].decode()
        if example["has_audio"]:
            expected = media.read_audio(built.manual_dir / "Videos" / f"{name}.mp4")
            np.testing.assert_array_equal(example["audio"], expected)
            assert len(expected) == pytest.approx(built.info[name]["duration"] * 16000, abs=1600)
        else:
            assert example["audio"].shape == (0,)


def test_building_and_reading_never_import_tensorflow(builder):
    _example(builder, "validation")
    assert not [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]


def test_map_png_is_lossless_to_a_sixteen_bit_step():
    values = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    decoded = avimos_builder.decode_map_png(avimos_builder.encode_map_png(values))
    assert decoded.dtype == np.float32 and decoded.shape == values.shape
    assert np.abs(decoded - values).max() <= 0.5 / 65535 + 1e-7


def test_storage_size_keeps_aspect_and_never_upscales():
    assert avimos_builder.storage_size(1080, 1920, 224) == (224, 398)
    assert avimos_builder.storage_size(1920, 1080, 360) == (640, 360)
    assert avimos_builder.storage_size(72, 128, 224) == (72, 128)


def test_lower_frame_rate_keeps_frames_maps_and_fixations_together():
    kept = avimos_builder.kept_frames(30, source_fps=30.0, fps=15.0)
    assert kept.tolist() == list(range(0, 30, 2))
    assert avimos_builder.kept_frames(10, source_fps=25.0, fps=None).tolist() == list(range(10))


def test_a_lower_rate_build_keeps_each_kept_frames_ground_truth(built, tmp_path):
    config = avimos_builder.AvimosConfig(name="fps10", short_side=24, fps=10.0, validation_videos=0)
    builder = avimos_builder.Avimos(data_dir=str(tmp_path), config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(built.manual_dir)))
    example = builder.as_data_source(split="train")[0]
    name = example["name"].decode()
    info = media.probe(built.manual_dir / "Videos" / f"{name}.mp4")
    kept = avimos_builder.kept_frames(info.num_frames, info.fps, 10.0)
    fixations = json.loads((built.manual_dir / "FixationsTrain" / "Train" / name / "fixations.json").read_text())
    assert example["num_frames"] == len(kept) == len(example["frames"]) < info.num_frames
    assert example["fps"] == 10.0
    assert example["fixations_native"].tolist() == [p for i in kept for p in fixations[i]]


def test_validation_carve_out_is_deterministic_and_bounded():
    names = [f"{i:04d}" for i in range(100)]
    chosen = avimos_builder.validation_names(names, 10)
    assert chosen == avimos_builder.validation_names(list(reversed(names)), 10)
    assert len(chosen) == 10 and set(chosen) <= set(names)
    assert len(avimos_builder.validation_names(names[:8], 50)) == 2  # at most a quarter of train


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def manual_copy(built, tmp_path):
    """A private copy of the synthetic manual directory, to break."""
    return shutil.copytree(built.manual_dir, tmp_path / "manual")


def _sources(manual_dir, split):
    sources, problems = avimos.find_sources(manual_dir, _split_table(manual_dir)[split])
    assert not problems
    return sources


def test_disagreeing_frame_counts_name_the_video_and_counts(manual_copy, built):
    source = _sources(manual_copy, "train")[0]
    fixations = json.loads(source.fixations.read_text())
    source.fixations.write_text(json.dumps(fixations[:-2]))
    with pytest.raises(avimos_builder.BadVideoError) as error:
        avimos_builder.convert_video(source, built.config)
    message = str(error.value)
    count = len(fixations)
    assert source.name in message
    assert f"{count} video frames" in message and f"{count} saliency maps" in message
    assert f"{count - 2} fixation frames" in message


def test_a_corrupt_video_is_named(manual_copy, built):
    source = _sources(manual_copy, "train")[0]
    data = source.video.read_bytes()
    source.video.write_bytes(data[: len(data) // 3])
    with pytest.raises(avimos_builder.BadVideoError, match=source.name):
        avimos_builder.convert_video(source, built.config)


def test_skip_bad_builds_the_rest_and_lists_the_skipped(manual_copy, tmp_path):
    table = _split_table(manual_copy)
    broken, missing = table["train"][0], table["public_test"][0]
    (manual_copy / "Videos" / f"{broken}.mp4").write_bytes(b"not a video")
    (manual_copy / "FixationsTest" / "Test" / missing / "fixations.json").unlink()
    config = avimos_builder.AvimosConfig(name="tiny", short_side=24, validation_videos=0)
    download = tfds.download.DownloadConfig(manual_dir=str(manual_copy))

    strict = avimos_builder.Avimos(data_dir=str(tmp_path / "strict"), config=config)
    with pytest.raises(FileNotFoundError, match=f"video '{missing}': missing"):
        strict.download_and_prepare(download_config=download)

    lenient = avimos_builder.Avimos(data_dir=str(tmp_path / "lenient"), config=config, skip_bad=True)
    lenient.download_and_prepare(download_config=download)
    assert len(lenient.skipped) == 2
    assert any(broken in line for line in lenient.skipped) and any(missing in line for line in lenient.skipped)
    built_names = {n for s in lenient.info.splits for n in avimos_builder.split_metadata(lenient, s)[0]}
    assert built_names == {n for names in table.values() for n in names} - {broken, missing}


def test_cli_reports_a_bad_manual_dir(tmp_path, capsys):
    assert build_avimos.main(["--manual_dir", str(tmp_path), "--data_dir", str(tmp_path / "out")]) == 1
    assert "TrainTestSplit.json" in capsys.readouterr().err


def test_cli_help_lists_configs_and_archives(capsys):
    with pytest.raises(SystemExit):
        build_avimos.main(["--help"])
    text = capsys.readouterr().out
    assert "s224" in text and "s360" in text and "SaliencyTrain.zip" in text


def test_a_rerun_names_what_the_kept_build_skipped_and_rebuild_converts_it(manual_copy, tmp_path, capsys):
    """Rerunning after a --skip_bad build must not silently keep the old build once the video is fixed."""
    broken = _split_table(manual_copy)["train"][0]
    video = manual_copy / "Videos" / f"{broken}.mp4"
    original = video.read_bytes()
    video.write_bytes(b"not a video")
    command = ["--manual_dir", str(manual_copy), "--data_dir", str(tmp_path / "data"), "--workers", "1"]
    assert build_avimos.main([*command, "--skip_bad"]) == 0
    assert f"this build skipped 1 video(s):\n  video {broken!r}" in capsys.readouterr().out

    video.write_bytes(original)  # fixed; a plain rerun keeps the build and says what it lacks
    assert build_avimos.main(command) == 0
    out = capsys.readouterr().out
    assert "kept the existing build" in out and f"that build skipped 1 video(s):\n  video {broken!r}" in out
    assert "--rebuild" in out

    assert build_avimos.main([*command, "--rebuild"]) == 0
    out = capsys.readouterr().out
    assert "\nbuilt " in f"\n{out}" and "kept the existing build" not in out and "skipped" not in out
    builder = avimos_builder.Avimos(data_dir=str(tmp_path / "data"))
    names = {n for s in builder.info.splits for n in avimos_builder.split_metadata(builder, s)[0]}
    assert broken in names and builder.info.metadata["skipped"] == []
