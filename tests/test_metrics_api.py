"""salax.metrics: edge cases, input checks, chunking, the options and the aggregation helpers."""

import jax
import jax.numpy as jnp
import metrics_reference as reference
import numpy as np
import pytest

from salax import metrics


def one_frame(pred, gt, fixations, pad_to=6):
    """Batch of one frame with fixations padded by junk (-5) up to `pad_to` rows."""
    fixations = np.asarray(fixations, np.int32).reshape(-1, 2)
    padded = np.full((1, pad_to, 2), -5, np.int32)
    padded[0, :len(fixations)] = fixations
    return np.asarray(pred)[None], np.asarray(gt)[None], padded, np.array([len(fixations)])


def scores_and_reference(pred, gt, fixations, corrected=False):
    scores = metrics.aim_frame_scores(*one_frame(pred, gt, fixations), corrected=corrected)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = reference.frame_scores(np.asarray(pred), np.asarray(gt),
                                          np.asarray(fixations).reshape(-1, 2), corrected)
    return {name: float(value[0]) for name, value in scores.items()}, expected


RNG = np.random.default_rng(7)
GT = RNG.integers(0, 255, (5, 6)).astype(np.uint8)
PRED = RNG.integers(0, 255, (5, 6)).astype(np.uint8)


@pytest.mark.parametrize("case", ["constant pred", "constant gt", "single fixation",
                                  "one pixel fixated often", "diagonal fixations", "1x1 maps"])
def test_edge_cases_follow_the_formulas(case):
    pred, gt, fixations = PRED, GT, [[1, 2], [4, 0], [0, 5]]
    if case == "constant pred":
        pred = np.full_like(PRED, 9)
    elif case == "constant gt":
        gt = np.zeros_like(GT)
    elif case == "single fixation":
        fixations = [[3, 1]]
    elif case == "one pixel fixated often":
        fixations = [[2, 4]] * 5
    elif case == "diagonal fixations":  # the AIM quirk: unique columns of [[r, r], ...] is 1, not 2
        fixations = [[1, 1], [3, 3], [3, 3]]
    elif case == "1x1 maps":
        pred, gt, fixations = np.array([[3]]), np.array([[200]]), [[0, 0], [0, 0]]
    scores, expected = scores_and_reference(pred, gt, fixations)
    for name, value in expected.items():
        np.testing.assert_allclose(scores[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    nan_expected = {name for name, value in expected.items() if np.isnan(value)}
    if case == "1x1 maps":
        assert nan_expected == {"auc_judd", "kld"}  # 0 / 0 in the organisers' arithmetic
    elif case == "constant gt":
        assert nan_expected == {"kld"}
    elif case != "constant pred":
        assert not nan_expected


def test_corrected_counts_distinct_fixated_pixels():
    fixations = [[1, 2], [1, 2], [4, 0], [2, 4]]
    aim, expected_aim = scores_and_reference(PRED, GT, fixations)
    fixed, expected_fixed = scores_and_reference(PRED, GT, fixations, corrected=True)
    np.testing.assert_allclose(aim["auc_judd"], expected_aim["auc_judd"], rtol=1e-5)
    np.testing.assert_allclose(fixed["auc_judd"], expected_fixed["auc_judd"], rtol=1e-5)
    assert aim["auc_judd"] != fixed["auc_judd"]


def test_padding_never_changes_a_result():
    pred, gt, fixations, counts = one_frame(PRED, GT, [[1, 2], [1, 2], [4, 5]], pad_to=3)
    wide = np.concatenate([fixations, np.full((1, 9, 2), 10**6, np.int32)], axis=1)
    short = metrics.aim_frame_scores(pred, gt, fixations, counts, corrected=True)
    padded = metrics.aim_frame_scores(pred, gt, wide, counts, corrected=True)
    for name in metrics.METRIC_NAMES:
        np.testing.assert_array_equal(short[name], padded[name])


def test_frames_without_fixations_are_nan_and_excluded_from_means():
    pred, gt, fixations, _ = one_frame(PRED, GT, [[1, 2]])
    batch = [np.concatenate([array, array]) for array in (pred, gt, fixations)]
    scores = metrics.aim_frame_scores(*batch, np.array([1, 0]))
    assert np.isnan(scores["auc_judd"][1]) and np.isnan(scores["nss"][1])
    assert not np.isnan(scores["cc"][1]) and scores["cc"][1] == scores["cc"][0]
    means, excluded = metrics.video_means(scores)
    assert excluded == {"auc_judd": 1, "cc": 0, "nss": 1, "sim": 0, "kld": 0}
    assert means["auc_judd"] == pytest.approx(float(scores["auc_judd"][0]))


@pytest.mark.parametrize("mistake, message", [
    ("outside", r"frame 1: fixation \(row, col\) \[5, 0\] lies outside the 5 x 6"),
    ("negative", r"frame 0: num_fixations -1"),
    ("too many", r"frame 1: num_fixations 7"),
    ("batch", r"batch sizes differ"),
    ("shape", r"\[B, H, W\]"),
])
def test_invalid_input_is_named(mistake, message):
    pred = np.stack([PRED, PRED])
    gt = np.stack([GT, GT])
    fixations = np.zeros((2, 6, 2), np.int32)
    counts = np.array([2, 2])
    if mistake == "outside":
        fixations[1, 1] = [5, 0]
    elif mistake == "negative":
        counts[0] = -1
    elif mistake == "too many":
        counts[1] = 7
    elif mistake == "batch":
        pred = pred[:1]
    elif mistake == "shape":
        gt = gt[0]
    with pytest.raises(ValueError, match=message):
        metrics.aim_frame_scores(pred, gt, fixations, counts)


@pytest.mark.parametrize("implementation", ["xla", "native"])
def test_chunks_give_the_same_scores_with_one_compilation(implementation):
    """Chunks score like one batch; jitted chunks compile once (the last is padded), native ones
    need no compilation, nor do JAX arrays handed to the native kernel's FFI call."""
    rng = np.random.default_rng(8)
    pred = rng.integers(0, 255, (7, 4, 3, 3)).astype(np.uint8)
    gt = rng.integers(0, 1023, (7, 9, 5)).astype(np.uint16)
    fixations = np.stack([rng.integers(0, 9, (7, 4)), rng.integers(0, 5, (7, 4))], axis=-1)
    counts = rng.integers(1, 5, 7)
    whole = metrics.aim_frame_scores(pred, gt, fixations, counts, chunk_size=7,
                                     implementation=implementation)
    compiled = metrics._batch_scores._cache_size()
    chunked = metrics.aim_frame_scores(pred, gt, fixations, counts, chunk_size=3, progress=True,
                                       implementation=implementation)
    assert metrics._batch_scores._cache_size() == compiled + (implementation == "xla")
    on_device = metrics.aim_frame_scores(jnp.asarray(pred), jnp.asarray(gt), fixations, counts,
                                         chunk_size=3, implementation=implementation)
    for name in metrics.METRIC_NAMES:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-6)
        np.testing.assert_allclose(on_device[name], whole[name], rtol=1e-6)
    assert chunked["cc"].shape == (7,)


def test_mit_auc_judd_is_seeded_and_counts_pixels_once():
    rng = np.random.default_rng(9)
    saliency = jnp.asarray(rng.random((8, 11)), jnp.float32)  # no ties: the jitter changes no order
    fixations = np.array([[1, 2], [1, 2], [5, 7], [0, 0], [9, 9]], np.int32)
    count = jnp.int32(4)
    mit = jax.jit(metrics.auc_judd_mit)
    first = mit(saliency, fixations, count, jax.random.key(0))
    assert first == mit(saliency, fixations, count, jax.random.key(0))
    unique = np.array([[1, 2], [5, 7], [0, 0]])
    expected = reference.auc_judd(np.asarray(saliency, np.float64), unique, corrected=True)
    np.testing.assert_allclose(first, expected, rtol=1e-5)


def test_mit_auc_judd_breaks_ties_with_the_seed():
    saliency = jnp.full((6, 6), 0.5, jnp.float32)
    fixations = np.array([[1, 1], [2, 3]], np.int32)
    mit = jax.jit(metrics.auc_judd_mit)
    values = {float(mit(saliency, fixations, jnp.int32(2), jax.random.key(seed))) for seed in range(4)}
    assert len(values) > 1


def test_shuffled_auc_is_the_pairwise_win_rate():
    rng = np.random.default_rng(10)
    saliency = np.round(rng.random((6, 7)) * 4) / 4  # coarse levels, so ties happen
    fixations = np.stack([rng.integers(0, 6, 5), rng.integers(0, 7, 5)], axis=1).astype(np.int32)
    negatives = np.stack([rng.integers(0, 6, 9), rng.integers(0, 7, 9)], axis=1).astype(np.int32)
    value = jax.jit(metrics.auc_shuffled)(jnp.asarray(saliency, jnp.float32), fixations, jnp.int32(4),
                                 negatives, jnp.int32(8))
    positive = saliency[fixations[:4, 0], fixations[:4, 1]]
    negative = saliency[negatives[:8, 0], negatives[:8, 1]]
    expected = np.mean([(p > n) + 0.5 * (p == n) for p in positive for n in negative])
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_shuffled_negatives_come_seeded_from_other_frames():
    pool = np.arange(20).reshape(10, 2)
    frames = np.repeat(np.arange(5), 2)
    drawn = metrics.draw_shuffled_negatives(pool, frames, frame=2, count=50, seed=3)
    assert drawn.shape == (50, 2) and drawn.dtype == np.int32
    assert not np.isin(drawn[:, 0], pool[frames == 2, 0]).any()
    np.testing.assert_array_equal(drawn, metrics.draw_shuffled_negatives(pool, frames, 2, 50, 3))
    with pytest.raises(ValueError, match="frame 0: the pool holds no fixations of other frames"):
        metrics.draw_shuffled_negatives(pool[:2], frames[:2], frame=0, count=1, seed=0)


def test_aim_means_average_videos_and_pooled_means_average_frames():
    short = {"cc": np.array([1.0]), "nss": np.array([np.nan])}
    long = {"cc": np.array([0.0, 0.0, 0.0]), "nss": np.array([2.0, 4.0, np.nan])}
    aim = metrics.aim_means([short, long])
    assert aim.means["cc"] == pytest.approx(0.5)
    assert aim.means["nss"] == pytest.approx(3.0)  # the first video has no NSS frame: left out
    assert aim.excluded_frames == {"cc": 0, "nss": 2}
    pooled = metrics.pooled_means([short, long])
    assert pooled.means["cc"] == pytest.approx(0.25)
    assert pooled.excluded_frames["nss"] == 2


def test_the_vmapped_path_of_accelerators_agrees_with_the_cpu_loop(monkeypatch):
    """On CPUs frames are scored one after another; elsewhere the batch is vmapped. Same numbers."""
    rng = np.random.default_rng(11)
    pred = rng.integers(0, 255, (3, 4, 6)).astype(np.uint8)
    gt = rng.integers(0, 255, (3, 7, 5)).astype(np.uint8)
    fixations = np.stack([rng.integers(0, 7, (3, 5)), rng.integers(0, 5, (3, 5))], axis=-1)
    arrays = (pred, gt, fixations.astype(np.int32), np.array([5, 2, 0], np.int32))
    looped = metrics._batch_scores(*arrays, corrected=False, implementation="xla")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    vmapped = jax.jit(metrics._batch_scores.__wrapped__,
                      static_argnames=("corrected", "implementation"))(*arrays, corrected=False,
                                                                       implementation="xla")
    for name in metrics.METRIC_NAMES:
        np.testing.assert_allclose(vmapped[name], looped[name], rtol=1e-6)
