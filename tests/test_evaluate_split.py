"""A model on a built split (salax.evaluate.split): a small built synthetic AViMoS, with known predictors."""

from avimos_testdata import built_avimos
import numpy as np
import pytest

from salax.data import media, pipeline
from salax.evaluate import split as split_eval
from salax.evaluate import videos


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
