"""One video scored frame by frame (salax.evaluate.videos): alignment, chunking, counts, the centre prior."""

import numpy as np
import pytest

from salax.data import media
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


def _grey_frames(data: np.ndarray, shift: int) -> list[media.GreyFrame]:
    """10-bit maps as a decoder leaves them: rows padded beyond the width, read in place."""
    padded = np.zeros((*data.shape[:2], data.shape[2] + 8), np.uint16)
    padded[..., : data.shape[2]] = data
    return [media.GreyFrame(frame[:, : data.shape[2], None], shift) for frame in padded]


def test_grey_frames_read_in_place_score_as_their_shifted_values():
    predicted, _, fixations = _video(8)
    data = np.random.default_rng(3).integers(0, 1024, (8, 12, 20), dtype=np.uint16)
    shifted = [np.left_shift(frame, 6)[..., None] for frame in data]  # the CLI's 16-bit PNG of a 10-bit map
    ours = videos.score_video("v", predicted, _grey_frames(data, 6), fixations, chunk_size=3)
    theirs = videos.score_video("v", predicted, shifted, fixations, chunk_size=3)
    for metric in theirs.frames:
        np.testing.assert_array_equal(ours.frames[metric], theirs.frames[metric])
        np.testing.assert_array_equal(ours.prior[metric], theirs.prior[metric])
    # A colour frame among them (a chunk cannot mix one and three channels): that chunk is scored in three.
    colour = np.random.default_rng(4).integers(0, 2**16, (12, 20, 3), dtype=np.uint16)
    mixed = videos.score_video("v", predicted, [*_grey_frames(data, 6)[:2], colour, *_grey_frames(data, 6)[3:]],
                               fixations, chunk_size=4, prior=False)
    alone = [np.broadcast_to(frame, (12, 20, 3)) for frame in shifted[:4]]
    alone[2] = colour
    expected = videos.score_video("v", predicted[:4], alone, fixations[:4], chunk_size=1, prior=False)
    for metric in theirs.frames:
        np.testing.assert_array_equal(mixed.frames[metric][:4], expected.frames[metric])
        np.testing.assert_array_equal(mixed.frames[metric][4:], theirs.frames[metric][4:])
    # The shift reaches the scoring (its effect on the scores is below float32 but for ties): values it pushes
    # past 16 bits are refused.
    with pytest.raises(ValueError, match="16 bits"):
        videos.score_video("v", predicted[:1], _grey_frames(np.full((1, 12, 20), 1024, np.uint16), 6), fixations[:1])


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
