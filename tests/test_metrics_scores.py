"""salax.metrics.aim_frame_scores (salax.metrics.scores), both implementations, against the float64
oracle of the AIM rules: random layouts, edge cases, input checks, chunking, 1080p frames."""

from hypothesis import given, settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import metrics_reference as reference
import numpy as np
import pytest

from salax import metrics
from salax.metrics import scores as scoring

RTOL, ATOL = 1e-5, 1e-6
MAX_FIXATIONS = 8
IMPLEMENTATIONS = ["native", "xla"]  # the C++ CPU kernel, and the pure-JAX code of every backend

LAYOUTS = [
    ((6, 5), np.uint8, (6, 5), np.uint8, 4),  # same size, many ties
    ((6, 5, 3), np.uint8, (6, 5, 3), np.uint8, 5),  # colour channels averaged
    ((3, 8), np.uint16, (2, 3), np.float32, None),  # enlarge, odd sizes, 10-bit style ground truth
    ((9, 4), np.float32, (13, 7), np.float32, None),  # shrink, vertical, odd sizes
]


def make_frames(layout, seed: int, batch: int, num_fixations: list[int], duplicates: bool):
    gt_shape, gt_dtype, pred_shape, pred_dtype, levels = layout
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 7, size=(batch, *gt_shape)).astype(gt_dtype)
    if levels is None:
        pred = rng.random((batch, *pred_shape)).astype(pred_dtype)
    else:
        pred = rng.integers(0, levels, size=(batch, *pred_shape)).astype(pred_dtype)
    height, width = gt_shape[:2]
    fixations = np.full((batch, MAX_FIXATIONS, 2), -1, np.int32)
    for frame, count in enumerate(num_fixations):
        if duplicates:  # at most two distinct pixels, each fixated many times
            pixels = rng.integers(0, 2, size=count)
        else:
            pixels = rng.permutation(height * width)[:count]
        fixations[frame, :count] = np.stack([pixels // width, pixels % width], axis=1)
    return pred, gt, fixations, np.asarray(num_fixations)


def assert_scores_match(scores, pred, gt, fixations, counts, corrected):
    for frame in range(len(counts)):
        expected = reference.frame_scores(pred[frame], gt[frame], fixations[frame, :counts[frame]],
                                          corrected)
        for name, value in expected.items():
            np.testing.assert_allclose(scores[name][frame], value, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name}, frame {frame}")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@settings(max_examples=30, deadline=None)
@given(layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**32 - 1),
       counts=st.lists(st.integers(1, MAX_FIXATIONS), min_size=2, max_size=2),
       duplicates=st.booleans())
def test_frame_scores_match_the_float64_reference(implementation, layout, seed, counts, duplicates):
    pred, gt, fixations, counts = make_frames(layout, seed, 2, counts, duplicates)
    scores = metrics.aim_frame_scores(pred, gt, fixations, counts, implementation=implementation)
    assert all(scores[name].dtype == np.float32 and scores[name].shape == (2,) for name in scores)
    assert_scores_match(scores, pred, gt, fixations, counts, corrected=False)


def smooth_map(rng, shape, blobs=6):
    """A saliency-like uint8 map: a few Gaussian blobs."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    field = np.zeros(shape)
    for _ in range(blobs):
        centre = rng.random(2) * shape
        field += np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * (shape[0] / 8) ** 2))
    return np.round(255 * field / field.max()).astype(np.uint8)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("pred_shape", [(1080, 1920), (224, 384)])
def test_float32_holds_the_tolerance_at_1080p(pred_shape, implementation):
    """Sums over two million pixels: blocked float32 reductions stay within 1e-5 of float64."""
    rng = np.random.default_rng(4)
    gt = smooth_map(rng, (1080, 1920))[None]
    pred = smooth_map(rng, pred_shape)[None]
    if pred_shape != (1080, 1920):
        pred = pred.astype(np.float32) + rng.random(pred.shape, dtype=np.float32)  # no interpolation ties
    count = 70
    fixations = np.stack([rng.integers(0, 1080, count), rng.integers(0, 1920, count)], axis=1)[None]
    scores = metrics.aim_frame_scores(pred, gt, fixations, [count], implementation=implementation)
    assert_scores_match(scores, pred, gt, fixations, [count], corrected=False)


def test_benchmark_baseline_is_the_reference():
    """salax.bench.metrics times its own copy of the organisers' algorithm: it must be this oracle."""
    from salax.bench.metrics import organisers_frame

    rng = np.random.default_rng(5)
    pred, gt = rng.integers(0, 9, (7, 6, 3)), rng.integers(0, 200, (11, 13)).astype(np.uint8)
    fixations = np.stack([rng.integers(0, 11, 9), rng.integers(0, 13, 9)], axis=1)
    expected = reference.frame_scores(pred, gt, fixations)
    for name, value in organisers_frame(pred, gt, fixations).items():  # read_sm prepares uint8 in float32
        assert value == pytest.approx(expected[name], rel=1e-6), name


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
    compiled = scoring._batch_scores._cache_size()
    chunked = metrics.aim_frame_scores(pred, gt, fixations, counts, chunk_size=3, progress=True,
                                       implementation=implementation)
    assert scoring._batch_scores._cache_size() == compiled + (implementation == "xla")
    on_device = metrics.aim_frame_scores(jnp.asarray(pred), jnp.asarray(gt), fixations, counts,
                                         chunk_size=3, implementation=implementation)
    for name in metrics.METRIC_NAMES:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-6)
        np.testing.assert_allclose(on_device[name], whole[name], rtol=1e-6)
    assert chunked["cc"].shape == (7,)


def test_the_vmapped_path_of_accelerators_agrees_with_the_cpu_loop(monkeypatch):
    """On CPUs frames are scored one after another; elsewhere the batch is vmapped. Same numbers."""
    rng = np.random.default_rng(11)
    pred = rng.integers(0, 255, (3, 4, 6)).astype(np.uint8)
    gt = rng.integers(0, 255, (3, 7, 5)).astype(np.uint8)
    fixations = np.stack([rng.integers(0, 7, (3, 5)), rng.integers(0, 5, (3, 5))], axis=-1)
    arrays = (pred, gt, fixations.astype(np.int32), np.array([5, 2, 0], np.int32))
    looped = scoring._batch_scores(*arrays, corrected=False, implementation="xla")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    vmapped = jax.jit(scoring._batch_scores.__wrapped__,
                      static_argnames=("corrected", "implementation"))(*arrays, corrected=False,
                                                                       implementation="xla")
    for name in metrics.METRIC_NAMES:
        np.testing.assert_allclose(vmapped[name], looped[name], rtol=1e-6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_only_the_metrics_asked_for_are_computed_and_returned(implementation):
    pred, gt, fixations, counts = make_frames(LAYOUTS[2], 3, 3, [4, 1, 6], False)
    every = metrics.aim_frame_scores(pred, gt, fixations, counts, implementation=implementation)
    ranked = metrics.aim_frame_scores(pred, gt, fixations, counts, implementation=implementation,
                                      metrics=metrics.RANKING_METRICS)
    assert tuple(ranked) == metrics.RANKING_METRICS == ("auc_judd", "cc", "nss", "sim")
    for name in ranked:
        np.testing.assert_array_equal(ranked[name], every[name], err_msg=name)
    assert tuple(metrics.aim_frame_scores(pred, gt, fixations, counts, implementation=implementation,
                                          metrics=["kld"])) == ("kld",)
    with pytest.raises(ValueError, match="metrics must be a non-empty choice"):
        metrics.aim_frame_scores(pred, gt, fixations, counts, metrics=("auc", "cc"))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("channel_axis", [False, True])
def test_a_shifted_truth_scores_as_its_shifted_copy(implementation, channel_axis):
    """truth_shift: a 10-bit plane is scored as the 16-bit PNG holding it (<< 6) in both implementations."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 1024, (3, 24, 40), dtype=np.uint16)
    data[1, :, 10:] = 517  # a plateau: ties with thresholds
    pred = rng.integers(0, 256, (3, 12, 20), dtype=np.uint8)
    fixations, counts = rng.integers(0, (24, 40), (3, 5, 2)), np.array([5, 3, 0])
    shape = (*data.shape, 1) if channel_axis else data.shape
    ours = metrics.aim_frame_scores(pred, data.reshape(shape), fixations, counts, truth_shift=6, chunk_size=2,
                                    implementation=implementation)
    theirs = metrics.aim_frame_scores(pred, (data << 6).reshape(shape), fixations, counts, chunk_size=2,
                                      implementation=implementation)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    data[2, 3, 4] = 1024  # 1024 << 6 does not fit in 16 bits
    with pytest.raises(ValueError, match="frame 2: .*16 bits"):
        metrics.aim_frame_scores(pred, data, fixations, counts, truth_shift=6, implementation=implementation)
    with pytest.raises(ValueError, match="one-channel uint16"):
        metrics.aim_frame_scores(pred, data.astype(np.float32), fixations, counts, truth_shift=6,
                                 implementation=implementation)


BAD_VALUES = [  # (which map, dtype, a value for frame 2, the message)
    ("pred", np.float32, np.nan, r"frame 2: the prediction holds NaN or infinite values"),
    ("pred", np.float32, -np.inf, r"frame 2: the prediction holds NaN or infinite values"),
    ("gt", np.float32, np.inf, r"frame 2: the ground-truth map holds NaN or infinite values"),
    ("gt", np.float16, np.nan, r"frame 2: the ground-truth map holds NaN or infinite values"),
]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("which, dtype, value, message", BAD_VALUES)
def test_non_finite_maps_are_named_by_frame_in_both_implementations(implementation, which, dtype, value,
                                                                    message):
    """NaN or inf once crashed the kernel: now each implementation refuses the frame by number (here
    the first frame of the second chunk), whether the arrays are NumPy or JAX."""
    pred, gt, fixations, counts = make_frames(LAYOUTS[3], 4, 3, [3, 3, 3], False)
    maps = {"pred": pred.astype(dtype), "gt": gt.astype(dtype)}
    maps[which][2, 1, 1] = value
    for to_array in (np.asarray, jnp.asarray):
        with pytest.raises(ValueError, match=message):
            metrics.aim_frame_scores(to_array(maps["pred"]), to_array(maps["gt"]), fixations, counts,
                                     chunk_size=2, implementation=implementation)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", ["<U3", object, "datetime64[s]", np.complex64])
def test_maps_that_are_not_numbers_are_refused(implementation, dtype):
    pred, gt, fixations, counts = make_frames(LAYOUTS[0], 5, 1, [2], False)
    with pytest.raises(ValueError, match="pred has dtype .*: maps must be bool, integer or float"):
        metrics.aim_frame_scores(pred.astype(dtype), gt, fixations, counts, implementation=implementation)
    with pytest.raises(ValueError, match="gt has dtype .*: maps must be bool, integer or float"):
        metrics.aim_frame_scores(pred, gt.astype(dtype), fixations, counts, implementation=implementation)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_zero_size_maps_are_refused(implementation):
    pred, gt, fixations, counts = make_frames(LAYOUTS[0], 6, 2, [2, 2], False)
    for bad_pred, bad_gt in ((pred[:, :0], gt), (pred, gt[:, :, :0]), (pred[..., None][..., :0], gt)):
        with pytest.raises(ValueError, match="maps must have at least one pixel and one channel"):
            metrics.aim_frame_scores(bad_pred, bad_gt, fixations[:, :, :], counts, implementation=implementation)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_an_empty_fixation_axis_means_frames_without_fixations(implementation):
    """Fixations [B, 0, 2] once raised ZeroDivisionError on XLA: they are frames without fixations."""
    pred, gt, fixations, _ = make_frames(LAYOUTS[2], 7, 2, [3, 3], False)
    empty = metrics.aim_frame_scores(pred, gt, fixations[:, :0], [0, 0], implementation=implementation)
    padded = metrics.aim_frame_scores(pred, gt, fixations, [0, 0], implementation=implementation)
    assert np.isnan(empty["auc_judd"]).all() and np.isnan(empty["nss"]).all()
    for name in metrics.METRIC_NAMES:
        np.testing.assert_array_equal(empty[name], padded[name], err_msg=name)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_subnormal_values_are_flushed_to_zero_alike(implementation):
    """XLA:CPU reads and writes float32 subnormals as 0, and the kernel computes in the same mode:
    a map's tail of tiny values is 0 in both, so they tie with the zeros (documented)."""
    rng = np.random.default_rng(8)
    pred = rng.random((1, 9, 11)).astype(np.float32)
    pred[0, :4] = 0.0
    pred[0, :2, ::2] = 1e-40  # subnormal in float32
    gt = rng.integers(0, 255, (1, 9, 11)).astype(np.uint8)
    fixations = np.array([[[0, 0], [0, 1], [1, 2], [5, 5], [7, 3]]], np.int32)
    scores = metrics.aim_frame_scores(pred, gt, fixations, [5], implementation=implementation)
    flushed = np.where(np.abs(pred) < np.finfo(np.float32).tiny, 0, pred)
    expected = reference.frame_scores(flushed[0], gt[0], fixations[0])
    for name, value in expected.items():
        np.testing.assert_allclose(scores[name][0], value, rtol=RTOL, atol=ATOL, err_msg=name)
