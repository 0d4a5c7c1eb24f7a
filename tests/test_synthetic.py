"""The synthetic AViMoS: layout, agreement between its files, scene facts, determinism, CLI."""

import json

import numpy as np
import pytest

from salax import batch
from salax.data import avimos, media, mouse, synthetic

NUM_VIDEOS = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("avimos")
    info = synthetic.generate(root, num_videos=NUM_VIDEOS, seed=7)
    return root, info


def part_of(split: str) -> str:
    return "Train" if split == "train" else "Test"


def test_layout_and_split_file(dataset):
    root, info = dataset
    split = json.loads((root / "TrainTestSplit.json").read_text())
    assert set(split) == {"train", "public_test", "private_test"}
    assert all(split[key] for key in split), "every split gets videos"
    names = [name for key in split for name in split[key]]
    assert sorted(names) == sorted(info) and len(set(names)) == NUM_VIDEOS
    assert json.loads((root / "VideoInfo.json").read_text()) == info
    for name, facts in info.items():
        part = part_of(facts["split"])
        assert (root / "Videos" / f"{name}.mp4").is_file()
        assert (root / f"Saliency{part}" / part / f"{name}.mp4").is_file()
        assert (root / f"Fixations{part}" / part / name / "fixations.json").is_file()
        other = "Test" if part == "Train" else "Train"
        assert not (root / f"Saliency{other}" / other / f"{name}.mp4").exists()


def test_video_maps_and_fixations_agree(dataset):
    root, info = dataset
    for name, facts in info.items():
        part = part_of(facts["split"])
        video = media.probe(root / "Videos" / f"{name}.mp4")
        maps = media.read_maps(root / f"Saliency{part}" / part / f"{name}.mp4")
        fixations = json.loads((root / f"Fixations{part}" / part / name / "fixations.json").read_text())
        assert video.num_frames == len(maps) == len(fixations) == facts["num_frames"]
        assert maps.shape[1:] == (video.height, video.width) == (facts["height"], facts["width"])
        assert video.has_audio == facts["has_audio"]
        assert (video.height > video.width) == (facts["orientation"] == "vertical")
        assert video.width % 2 == 0 and video.height % 2 == 0
        for frame, points in enumerate(fixations):
            assert points, f"{name} frame {frame} has no fixations"
            rows, cols = np.array(points).T
            assert rows.min() >= 0 and rows.max() < video.height
            assert cols.min() >= 0 and cols.max() < video.width
            peak = np.unravel_index(np.argmax(maps[frame]), maps[frame].shape)
            nearest = np.min(np.hypot(rows - peak[0], cols - peak[1]))
            assert nearest <= 3 * facts["sigma_px"], "the map peaks where observers looked"
        assert maps.max() == 1.0 and len(np.unique(maps)) > 100  # 10-bit, min-max normalised


def test_every_run_of_four_holds_every_kind():
    specs = synthetic.scene_specs(11, seed=3)
    for start in range(len(specs) - 3):
        window = specs[start:start + 4]
        assert {s.orientation for s in window} == {"landscape", "vertical"}
        assert any(not s.has_audio for s in window)
        assert any(s.sound_linked and s.has_audio for s in window)
        assert any(s.num_frames < 16 for s in window)
        assert any(s.num_frames >= 16 for s in window)


@pytest.mark.parametrize("num_videos", [3, 4, 8, 13])
def test_every_split_gets_videos(num_videos):
    splits = [s.split for s in synthetic.scene_specs(num_videos, seed=0)]
    assert {split: splits.count(split) > 0 for split in avimos.SPLITS} == dict.fromkeys(
        avimos.SPLITS, True)
    assert splits.count("train") >= num_videos // 2


def test_audio_plays_while_the_linked_object_flashes(dataset):
    root, info = dataset
    linked = [name for name, facts in info.items() if facts["sound_linked"]]
    assert linked
    for name in linked:
        spec = next(s for s in synthetic.scene_specs(NUM_VIDEOS, 7) if s.name == name)
        scene = synthetic.Scene(spec)
        audio = media.read_audio(root / "Videos" / f"{name}.mp4", sample_rate=batch.AUDIO_SAMPLE_RATE)
        per_frame = batch.AUDIO_SAMPLE_RATE / spec.fps
        loudness = np.array([np.sqrt(np.mean(audio[int(i * per_frame):int((i + 1) * per_frame)] ** 2))
                             for i in range(spec.num_frames)])
        playing = scene.tone_playing(np.arange(spec.num_frames) / spec.fps)
        assert playing.any() and not playing.all()
        assert loudness[playing].min() > 4 * loudness[~playing].max()


def test_observers_look_at_the_sound_object_during_its_tone():
    spec = next(s for s in synthetic.scene_specs(4, seed=1) if s.sound_linked)
    scene = synthetic.Scene(spec)
    seconds = np.arange(spec.num_frames) / spec.fps
    fixations = scene.fixations()
    listening = scene.tone_playing(seconds - 0.1)
    target = scene.target.position(seconds)
    for frame in np.flatnonzero(listening):
        points = np.array(fixations[frame])[:, ::-1] + 0.5  # (x, y)
        to_sound = np.linalg.norm(points - scene.attended_position(seconds[frame:frame + 1]), axis=1)
        to_target = np.linalg.norm(points - target[frame], axis=1)
        assert np.median(to_sound) < np.median(to_target)


def test_the_300ms_shift_brings_fixations_onto_the_attended_object():
    spec = synthetic.scene_specs(1, seed=5)[0]
    scene = synthetic.Scene(spec)
    truth = scene.attended_position(np.arange(spec.num_frames) / spec.fps)

    def mean_distance(shift_ms):
        fixations = mouse.fixations_from_tracks(
            scene.observer_tracks(), num_frames=spec.num_frames, fps=spec.fps,
            map_size=(spec.height, spec.width), track_size=(spec.width, spec.height),
            shift_ms=shift_ms)
        return np.mean([np.linalg.norm(np.array(p)[:, ::-1] + 0.5 - truth[f], axis=1).mean()
                        for f, p in enumerate(fixations) if p])

    assert mean_distance(synthetic.CURSOR_LAG_MS) < 0.75 * mean_distance(0.0)


def test_generation_is_deterministic(tmp_path, dataset):
    root, info = dataset
    again = synthetic.generate(tmp_path, num_videos=NUM_VIDEOS, seed=7)
    assert again == info
    for name, facts in info.items():
        part = part_of(facts["split"])
        for relative in (f"Videos/{name}.mp4", f"Saliency{part}/{part}/{name}.mp4",
                         f"Fixations{part}/{part}/{name}/fixations.json"):
            assert (root / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative
    other = synthetic.scene_specs(NUM_VIDEOS, seed=8)
    assert [s.seed for s in other] != [s.seed for s in synthetic.scene_specs(NUM_VIDEOS, seed=7)]


def test_cli_writes_the_dataset_and_explains_itself(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--help"])
    assert exit_info.value.code == 0
    assert "--videos" in capsys.readouterr().out
    synthetic.main(["--out", str(tmp_path), "--videos", "1", "--seed", "2"])
    assert json.loads((tmp_path / "TrainTestSplit.json").read_text())["train"] == ["0000"]
