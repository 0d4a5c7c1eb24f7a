"""One video scored frame by frame (salax.evaluate.videos): alignment, chunking, counts, the centre prior."""

import numpy as np
import pytest

from salax.evaluate import videos


def _video(frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 256, (frames, 12, 20), dtype=np.uint8)
    predicted = rng.random((frames, 6, 10)).astype(np.float32)  # model grid, half the truth size
    fixations = [rng.integers(0, (12, 20), (int(rng.integers(1, 6)), 2)) for _ in range(frames)]
    return predicted, truth, fixations


def _nss(pred: np.ndarray, points: np.ndarray) -> float:
    """NSS of a map already on the truth grid, in float64 (the formula, not salax's code)."""
    pred = pred.astype(np.float64)
    pred = (pred - pred.min()) / (pred.max() - pred.min() + np.finfo(np.float32).eps)
    z = (pred - pred.mean()) / (pred.std(ddof=0) + 1e-7)
    return float(np.mean(z[points[:, 0], points[:, 1]]))


def test_frames_are_scored_in_order_across_chunks():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 256, (21, 12, 20), dtype=np.uint8)
    predicted = rng.random((21, 12, 20)).astype(np.float32)  # on the truth grid: no resizing in the oracle
    fixations = [rng.integers(0, (12, 20), (int(rng.integers(1, 9)), 2)) for _ in range(21)]
    scores = videos.score_video("v", iter(predicted), iter(truth), iter(fixations), chunk_size=8, prior=False)
    expected = [_nss(p, f) for p, f in zip(predicted, fixations)]
    np.testing.assert_allclose(scores.frames["nss"], expected, rtol=1e-5)
    cc = [np.corrcoef(p.astype(np.float64).ravel(), t.astype(np.float64).ravel())[0, 1]
          for p, t in zip(predicted, truth)]
    np.testing.assert_allclose(scores.frames["cc"], cc, rtol=1e-5, atol=1e-6)
    assert scores.prior is None and scores.num_frames == 21


def test_chunk_size_does_not_change_scores_and_the_prior_is_scored_beside():
    predicted, truth, fixations = _video(19)
    one = videos.score_video("v", predicted, truth, fixations, chunk_size=19)
    many = videos.score_video("v", predicted, truth, fixations, chunk_size=4)
    for name in one.frames:
        np.testing.assert_array_equal(one.frames[name], many.frames[name])
        np.testing.assert_array_equal(one.prior[name], many.prior[name])
    prior = np.broadcast_to(videos.centre_prior(12, 20), truth.shape)
    as_model = videos.score_video("v", prior, truth, fixations, prior=False)
    np.testing.assert_allclose(as_model.frames["cc"], one.prior["cc"], rtol=1e-6)
    assert set(one.means().means) == {"auc_judd", "cc", "nss", "sim", "kld"}


def test_a_frame_without_fixations_is_left_out_of_the_means():
    predicted, truth, fixations = _video(5)
    fixations[2] = np.zeros((0, 2), np.int64)
    scores = videos.score_video("v", predicted, truth, fixations)
    assert np.isnan(scores.frames["nss"][2]) and np.isfinite(scores.frames["cc"][2])
    means = scores.means()
    assert means.excluded_frames["nss"] == 1 and means.excluded_frames["cc"] == 0
    np.testing.assert_allclose(means.means["nss"], np.delete(scores.frames["nss"], 2).astype(np.float64).mean())


@pytest.mark.parametrize("lengths, message", [
    ((7, 9, 9), "clip_3: the frame counts differ: 7 predicted frames, 9 ground-truth frames, 9 frames of fixations"),
    ((9, 8, 9), "8 ground-truth frames"),
    ((9, 9, 20), "9 predicted frames, 9 ground-truth frames, 20 frames of fixations"),
])
def test_frame_counts_that_differ_name_the_video_and_the_counts(lengths, message):
    predicted, truth, fixations = _video(20)
    streams = (predicted[: lengths[0]], truth[: lengths[1]], fixations[: lengths[2]])
    with pytest.raises(ValueError, match=message):
        videos.score_video("clip_3", *streams, chunk_size=4)


def test_centre_prior_peaks_in_the_middle():
    prior = videos.centre_prior(9, 15)
    assert prior.shape == (9, 15) and np.unravel_index(prior.argmax(), prior.shape) == (4, 7)
    np.testing.assert_allclose(prior, prior[::-1, ::-1])
