"""The AViMoS archive layout: paths, the split file, finding a video's files, reading fixations."""

import json
import subprocess
import sys

import numpy as np
import pytest

from salax.data import avimos, synthetic


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("avimos_layout")
    synthetic.generate(root, num_videos=4, seed=3)
    return root


def test_paths_are_the_archives_layout(tmp_path):
    # The layout as the organisers ship it (shared/reference/avimos.md), spelt out independently.
    assert avimos.video_path(tmp_path, "v1") == tmp_path / "Videos/v1.mp4"
    assert avimos.saliency_path(tmp_path, "v1", "train") == tmp_path / "SaliencyTrain/Train/v1.mp4"
    assert avimos.saliency_path(tmp_path, "v1", "private_test") == tmp_path / "SaliencyTest/Test/v1.mp4"
    assert avimos.fixations_path(tmp_path, "v1", "train") == tmp_path / "FixationsTrain/Train/v1/fixations.json"
    assert avimos.fixations_path(tmp_path, "v1", "public_test") == tmp_path / "FixationsTest/Test/v1/fixations.json"
    with pytest.raises(ValueError, match="split"):
        avimos.saliency_path(tmp_path, "v1", "validation")


@pytest.mark.parametrize("train_key", ["train", "Train"])
def test_the_split_file_accepts_either_train_key_and_drops_extensions(tmp_path, train_key):
    table = {train_key: ["b.mp4", "a"], "public_test": ["c"], "private_test": []}
    (tmp_path / "TrainTestSplit.json").write_text(json.dumps(table))
    assert avimos.read_splits(tmp_path) == {"train": ["a", "b"], "public_test": ["c"], "private_test": []}
    (tmp_path / "TrainTestSplit.json").rename(tmp_path / "splits_v2.json")  # the file itself, by any name
    assert avimos.read_splits(tmp_path / "splits_v2.json")["train"] == ["a", "b"]


def test_a_bad_split_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="TrainTestSplit.json"):
        avimos.read_splits(tmp_path)
    (tmp_path / "TrainTestSplit.json").write_text(json.dumps({"train": [], "public_test": []}))
    with pytest.raises(ValueError, match="'private_test'"):
        avimos.read_splits(tmp_path)
    (tmp_path / "TrainTestSplit.json").write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        avimos.read_splits(tmp_path)


def test_sources_of_every_split_are_found_with_their_licence(manual_dir):
    splits = avimos.read_splits(manual_dir)
    info = json.loads((manual_dir / "VideoInfo.json").read_text())
    for split, names in splits.items():
        sources, problems = avimos.find_sources(manual_dir, names)
        assert not problems and [s.name for s in sources] == names
        for source in sources:
            assert source.video == avimos.video_path(manual_dir, source.name)
            assert source.saliency == avimos.saliency_path(manual_dir, source.name, split)
            assert source.fixations == avimos.fixations_path(manual_dir, source.name, split)
            assert source.licence == info[source.name]["licence"]


def test_missing_folders_are_listed(tmp_path):
    (tmp_path / "Videos").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        avimos.check_manual_dir(tmp_path)
    for missing in ("TrainTestSplit.json", "SaliencyTrain/Train", "SaliencyTest/Test", "FixationsTest/Test"):
        assert missing in str(error.value)
    assert "Videos," not in str(error.value)


def test_missing_files_are_listed_per_video(manual_dir):
    name = avimos.read_splits(manual_dir)["public_test"][0]
    saliency = avimos.saliency_path(manual_dir, name, "public_test")
    kept = saliency.read_bytes()
    saliency.unlink()
    try:
        sources, problems = avimos.find_sources(manual_dir, [name])
    finally:
        saliency.write_bytes(kept)
    assert sources == []
    train_place, test_place = (manual_dir / d / f"{name}.mp4" for d in ("SaliencyTrain/Train", "SaliencyTest/Test"))
    assert problems == [f"video {name!r}: missing saliency maps ({train_place} or {test_place})"]


def test_fixations_are_read_per_frame_with_duplicates(tmp_path):
    path = tmp_path / "fixations.json"
    path.write_text(json.dumps([[[1, 2], [1, 2], [3, 4]], [], [[0, 0]]]))
    frames = avimos.read_fixations(path)
    assert [f.tolist() for f in frames] == [[[1, 2], [1, 2], [3, 4]], [], [[0, 0]]]
    assert all(f.dtype == np.int32 and f.shape[1:] == (2,) for f in frames)
    for text in ("{}", "[[[1, 2, 3]]]", "not json"):
        path.write_text(text)
        with pytest.raises(ValueError, match="fixations.json: unreadable fixations"):
            avimos.read_fixations(path)


def test_the_layout_and_clip_modules_need_neither_tfds_nor_grain():
    code = ("import sys; import salax.data.avimos, salax.data.clips, salax.batch; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow_datasets', 'tensorflow', 'grain', 'jax', 'flax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
