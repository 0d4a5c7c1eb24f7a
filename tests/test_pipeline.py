"""The grain pipeline: clip contents checked against the source files, flips, audio, resume, shards, eval."""

import dataclasses
import itertools
import json
import sys

from absl import flags
from avimos_testdata import built_avimos
import jax
import numpy as np
from PIL import Image
import pytest

from salax import batch as batch_contract
from salax.data import avimos_builder, clips, media, pipeline

IMAGE_SIZE = (40, 56)
ONE_SHARD = dict(seed=0, shard_index=0, shard_count=1, videos_per_block=4)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_avimos(tmp_path_factory)


@pytest.fixture(scope="module")
def train_source(built):
    builder = avimos_builder.Avimos(data_dir=str(built.data_dir), config=built.config)
    return builder.as_data_source(split="train")


@pytest.fixture(scope="module")
def examples(built):
    """Every example of every split: the synthetic kinds (silent, short) are spread over the splits."""
    builder = avimos_builder.Avimos(data_dir=str(built.data_dir), config=built.config)
    return [source[i] for source in builder.as_data_source().values() for i in range(len(source))]


def _train(built, **overrides):
    options = dict(
        builder_config=built.config, split="train", clip_frames=4, stride=2, image_size=IMAGE_SIZE,
        max_fixations=32, batch_size=3, seed=7, num_threads=2,
    )
    return pipeline.train_dataset(built.data_dir, **(options | overrides))


def _pixels(video: np.ndarray) -> np.ndarray:
    """Undo the ImageNet normalisation."""
    return (video * batch_contract.IMAGENET_STD + batch_contract.IMAGENET_MEAN) * 255


@pytest.mark.parametrize("target", ["last", "all"])
def test_batches_follow_the_batch_contract(built, target):
    batch = next(iter(_train(built, target=target)))
    frames = (4,) if target == "all" else ()
    expected = {
        "video": ((3, 4, *IMAGE_SIZE, 3), np.float32),
        "audio": ((3, clips.default_audio_samples(4, 2, None)), np.float32),
        "has_audio": ((3,), np.bool_),
        "saliency": ((3, *frames, *IMAGE_SIZE), np.float32),
        "fixations": ((3, *frames, 32, 2), np.int32),
        "num_fixations": ((3, *frames), np.int32),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    batch_contract.check_batch(batch, batch_contract.train_shapes(
        3, clip_frames=4, image_size=IMAGE_SIZE, audio_samples=expected["audio"][0][1], max_fixations=32,
        target=target))
    assert 0 <= batch["saliency"].min() and batch["saliency"].max() <= 1
    assert (batch["fixations"] < np.array(IMAGE_SIZE)).all() and (batch["fixations"] >= 0).all()


def test_a_clip_shows_the_source_frames(built, train_source):
    example = train_source[0]
    name = example["name"].decode()
    spec = pipeline.ClipSpec(clip_frames=3, stride=2, image_size=IMAGE_SIZE, audio_samples=100)
    clip = pipeline.load_clip(example, 10, spec, flip=False)
    source_frames = media.read_frames(built.manual_dir / "Videos" / f"{name}.mp4", size=IMAGE_SIZE)
    for position, frame in enumerate([6, 8, 10]):
        stored = avimos_builder.decode_jpeg(example["frames"][frame])
        resized = np.asarray(Image.fromarray(stored).resize(IMAGE_SIZE[::-1], Image.Resampling.BILINEAR))
        np.testing.assert_allclose(_pixels(clip["video"][position]), resized, atol=1e-3)
        error = np.abs(_pixels(clip["video"][position]) - source_frames[frame]).mean()
        assert error < 6.0, f"clip frame {position} should show source frame {frame} (mean error {error:.1f})"


def test_the_target_is_the_last_frame_and_its_fixations(built, train_source):
    example = train_source[0]
    name = example["name"].decode()
    spec = pipeline.ClipSpec(clip_frames=2, stride=1, image_size=IMAGE_SIZE, max_fixations=64, audio_samples=10)
    clip = pipeline.load_clip(example, 5, spec, flip=False)
    fixations = json.loads((built.manual_dir / "FixationsTrain" / "Train" / name / "fixations.json").read_text())
    native = tuple(example["native_size"])
    expected = clips.rescale_points(np.array(fixations[5], np.int32), native, IMAGE_SIZE)
    count = clip["num_fixations"]
    assert count == len(fixations[5])
    np.testing.assert_array_equal(clip["fixations"][:count], expected)
    assert not clip["fixations"][count:].any()
    maps = media.read_maps(built.manual_dir / "SaliencyTrain" / "Train" / f"{name}.mp4")
    peak = np.unravel_index(clip["saliency"].argmax(), IMAGE_SIZE)
    scale = np.array(native) / np.array(IMAGE_SIZE)
    assert maps[5][int(peak[0] * scale[0]), int(peak[1] * scale[1])] > 0.7 * maps[5].max()


def test_flip_mirrors_frames_maps_and_fixations_together(train_source):
    spec = pipeline.ClipSpec(clip_frames=2, stride=1, image_size=IMAGE_SIZE, target="all", audio_samples=10)
    plain = pipeline.load_clip(train_source[1], 6, spec, flip=False)
    flipped = pipeline.load_clip(train_source[1], 6, spec, flip=True)
    np.testing.assert_array_equal(flipped["video"], plain["video"][:, :, ::-1])
    np.testing.assert_array_equal(flipped["saliency"], plain["saliency"][:, :, ::-1])
    np.testing.assert_array_equal(flipped["num_fixations"], plain["num_fixations"])
    for t, count in enumerate(plain["num_fixations"]):
        rows, cols = plain["fixations"][t, :count].T
        np.testing.assert_array_equal(flipped["fixations"][t, :count], np.stack([rows, IMAGE_SIZE[1] - 1 - cols], 1))


def test_audio_window_ends_with_the_clips_last_frame(built, train_source):
    example = next(train_source[i] for i in range(len(train_source)) if train_source[i]["has_audio"])
    name = example["name"].decode()
    audio = media.read_audio(built.manual_dir / "Videos" / f"{name}.mp4")
    fps = float(example["fps"])
    spec = pipeline.ClipSpec(clip_frames=4, stride=2, image_size=IMAGE_SIZE, audio_samples=3000)
    clip = pipeline.load_clip(example, 20, spec, flip=False)
    stop = round(21 * 16000 / fps)
    assert clip["has_audio"]
    np.testing.assert_array_equal(clip["audio"], audio[stop - 3000 : stop])
    early = pipeline.load_clip(example, 0, spec, flip=False)["audio"]
    first = round(16000 / fps)
    assert not early[:-first].any()  # before the video starts: silence
    np.testing.assert_array_equal(early[-first:], audio[:first])


def test_silent_videos_and_audio_off_get_zeros_and_the_flag(examples):
    silent = next(e for e in examples if not e["has_audio"])
    sound = next(e for e in examples if e["has_audio"])
    spec = pipeline.ClipSpec(clip_frames=2, stride=1, image_size=IMAGE_SIZE, audio_samples=500)
    muted = dataclasses.replace(spec, audio=False)
    for example, clip_spec in [(silent, spec), (sound, muted)]:
        clip = pipeline.load_clip(example, 3, clip_spec, flip=False)
        assert not clip["has_audio"] and clip["audio"].shape == (500,) and not clip["audio"].any()
    assert pipeline.load_clip(sound, 3, spec, flip=False)["audio"].any()


def test_short_videos_are_padded_with_their_first_frame(examples):
    short = next(e for e in examples if e["num_frames"] < 16)
    spec = pipeline.ClipSpec(clip_frames=16, stride=1, image_size=IMAGE_SIZE, audio_samples=10)
    order = pipeline.ClipOrder([short["num_frames"]], spec.span, **ONE_SHARD)
    assert len(order) == 1 and order(0) == (0, short["num_frames"] - 1)
    clip = pipeline.load_clip(short, short["num_frames"] - 1, spec, flip=False)
    padding = 16 - short["num_frames"]
    for t in range(padding + 1):
        np.testing.assert_array_equal(clip["video"][t], clip["video"][0])
    assert not np.array_equal(clip["video"][padding + 1], clip["video"][0])


def test_every_clip_position_is_visited_once_per_epoch():
    order = pipeline.ClipOrder([10, 3, 7], span=5, **ONE_SHARD)
    expected = [(0, e) for e in range(4, 10)] + [(1, 2)] + [(2, e) for e in range(4, 7)]
    first, second = ([order(epoch * len(order) + i) for i in range(len(order))] for epoch in (0, 1))
    assert len(order) == len(expected)
    assert sorted(first) == sorted(second) == expected
    assert first != second  # reshuffled per epoch


def test_clips_are_shuffled_within_blocks_of_videos():
    order = pipeline.ClipOrder([20] * 6, span=5, seed=0, shard_index=0, shard_count=1, videos_per_block=2)
    videos = [order(i)[0] for i in range(len(order))]
    blocks = [set(videos[i : i + 32]) for i in range(0, len(videos), 32)]  # 16 clips per video
    assert [len(b) for b in blocks] == [2, 2, 2]
    assert set().union(*blocks) == set(range(6))
    assert videos[:32] != sorted(videos[:32])


def test_shards_are_disjoint_and_complete_every_epoch():
    num_frames = [10, 3, 7, 12, 9, 30, 5]
    whole = pipeline.ClipOrder(num_frames, span=5, **ONE_SHARD)
    everything = sorted(whole(i) for i in range(len(whole)))
    for epoch in (0, 1):
        shards = []
        for index in range(3):
            order = pipeline.ClipOrder(num_frames, span=5, seed=3, shard_index=index, shard_count=3, videos_per_block=2)
            shards.append({order(epoch * len(order) + i) for i in range(len(order))})
        assert sum(map(len, shards)) == len(everything)
        assert sorted(set().union(*shards)) == everything


def test_the_iterator_resumes_exactly(built):
    dataset = _train(built)
    iterator = iter(dataset)
    for _ in range(2):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    resumed = iter(_train(built))
    resumed.set_state(state)
    for want, got in zip(expected, (next(resumed) for _ in range(3))):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_the_seed_decides_order_and_flips(built):
    first = next(iter(_train(built, seed=1)))["video"]
    again = next(iter(_train(built, seed=1)))["video"]
    other = next(iter(_train(built, seed=2)))["video"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_to_global_batch_places_arrays_on_the_sharding(built):
    batch = next(iter(_train(built)))
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    placed = pipeline.to_global_batch(batch, sharding)
    assert set(placed) == set(batch)
    for key, value in placed.items():
        assert value.sharding == sharding
        np.testing.assert_array_equal(np.asarray(value), batch[key])


def test_eval_covers_every_frame_once_in_order(built):
    videos = pipeline.list_videos(built.data_dir, builder_config=built.config, split="public_test")
    fixations = {
        name: json.loads((built.manual_dir / "FixationsTest" / "Test" / name / "fixations.json").read_text())
        for name in videos
    }
    seen = {name: [] for name in videos}
    batches = pipeline.eval_clips(
        built.data_dir, builder_config=built.config, split="public_test", clip_frames=4, stride=2,
        image_size=IMAGE_SIZE, batch_size=8, max_fixations=64,
    )
    order = []
    for batch in batches:
        name = batch["name"]
        order.append(name)
        assert batch["video"].shape == (8, 4, *IMAGE_SIZE, 3)
        info = media.probe(built.manual_dir / "SaliencyTest" / "Test" / f"{name}.mp4")
        assert tuple(batch["native_size"]) == (info.height, info.width)
        for i in np.flatnonzero(batch["valid"]):
            frame = int(batch["frame_index"][i])
            seen[name].append(frame)
            count = batch["num_fixations"][i]
            assert batch["fixations_native"][i, :count].tolist() == fixations[name][frame]
    assert [name for name, _ in itertools.groupby(order)] == list(videos)
    assert seen == {name: list(range(count)) for name, count in videos.items()}


def test_eval_pads_the_first_clips_with_the_first_frame(built):
    batch = next(pipeline.eval_clips(
        built.data_dir, builder_config=built.config, split="validation", clip_frames=3, stride=1,
        image_size=IMAGE_SIZE, batch_size=4,
    ))
    np.testing.assert_array_equal(batch["video"][0, 0], batch["video"][0, 2])  # clip at frame 0: all frame 0
    np.testing.assert_array_equal(batch["video"][1, 1], batch["video"][0, 2])  # clip at frame 1: 0, 0, 1
    np.testing.assert_array_equal(batch["video"][2, 2], batch["video"][3, 1])


def test_eval_shards_split_the_videos(built):
    def names(index):
        return {b["name"] for b in pipeline.eval_clips(
            built.data_dir, builder_config=built.config, split="train", clip_frames=1, image_size=(8, 8),
            batch_size=64, shard_index=index, shard_count=2,
        )}

    first, second = names(0), names(1)
    assert not first & second
    assert first | second == set(pipeline.list_videos(built.data_dir, builder_config=built.config, split="train"))


def test_the_input_benchmark_compares_the_same_clips(built, train_source):
    """salax.bench.input's mp4 route must make what the pipeline makes, or its ratio means nothing."""
    from salax.bench import input as bench

    example = train_source[0]
    name = example["name"].decode()
    spec = pipeline.ClipSpec(clip_frames=4, stride=2, image_size=IMAGE_SIZE, audio=False)
    from_build = pipeline.load_clip(example, 12, spec, flip=False)
    from_mp4 = bench.clip_from_mp4(
        built.manual_dir / "Videos" / f"{name}.mp4", built.manual_dir / "SaliencyTrain" / "Train" / f"{name}.mp4",
        12, spec,
    )
    assert from_mp4["video"].shape == from_build["video"].shape
    assert np.abs(_pixels(from_mp4["video"]) - _pixels(from_build["video"])).mean() < 6.0
    assert np.abs(from_mp4["saliency"] - from_build["saliency"]).mean() < 0.05


def test_reading_never_imports_tensorflow(built):
    next(iter(_train(built)))
    assert not [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]


def test_bad_arguments_fail_clearly(built, tmp_path):
    with pytest.raises(ValueError, match="target"):
        _train(built, target="middle")
    with pytest.raises(FileNotFoundError, match="not built"):
        pipeline.train_dataset(tmp_path, clip_frames=2, image_size=(8, 8), batch_size=1)
    with pytest.raises(ValueError, match="shard_index"):
        _train(built, shard_index=2, shard_count=2)


@pytest.mark.slow
def test_worker_processes_are_deterministic_and_resume(built):
    """grain mp_prefetch: with worker processes the stream is still deterministic and resumes exactly."""
    flags.FLAGS.mark_as_parsed()  # grain reads absl flags; salax.main parses them, pytest does not
    expected = list(itertools.islice(iter(_train(built, worker_count=2)), 4))
    iterator = iter(_train(built, worker_count=2))
    got = [next(iterator) for _ in range(2)]
    state = iterator.get_state()
    resumed = iter(_train(built, worker_count=2))
    resumed.set_state(state)
    got += [next(resumed) for _ in range(2)]
    for want, have in zip(expected, got):
        for key in want:
            np.testing.assert_array_equal(have[key], want[key], err_msg=key)
