"""salax.metrics against the float64 oracle of the AIM rules, OpenCV, NumPy and SciPy."""

import cv2
import jax
import jax.numpy as jnp
import metrics_reference as reference
import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

from salax import metrics

RTOL, ATOL = 1e-5, 1e-6
MAX_FIXATIONS = 8
IMPLEMENTATIONS = ["native", "xla"]  # the C++ CPU kernel, and the pure-JAX code of every backend

# (gt shape, gt dtype, pred shape, pred dtype, pred levels): few layouts, so few compilations.
# Predictions that get resized take continuous values: OpenCV interpolates in float64, salax in
# float32, and interpolated values that tie in one precision need not tie in the other.
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


jitted_auc_judd = jax.jit(metrics.auc_judd, static_argnames="corrected")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), levels=st.integers(1, 6), count=st.integers(1, 12),
       corrected=st.booleans())
def test_auc_judd_counts_ties_like_the_organisers(seed, levels, count, corrected):
    """On one and the same map, ties at the thresholds included, AUC-Judd is exact."""
    rng = np.random.default_rng(seed)
    saliency = (rng.integers(0, levels, size=(7, 10)) / 7).astype(np.float32)
    fixations = np.stack([rng.integers(0, 7, count), rng.integers(0, 10, count)], axis=1)
    padded = np.concatenate([fixations, np.full((15 - count, 2), 99)]).astype(np.int32)
    value = jitted_auc_judd(jnp.asarray(saliency), padded, jnp.int32(count), corrected=corrected)
    expected = reference.auc_judd(saliency.astype(np.float64), fixations, corrected)
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("source, target", [
    ((5, 7), (11, 13)),  # enlarge, odd
    ((11, 13), (5, 7)),  # shrink, odd
    ((8, 6), (4, 3)),  # exactly half: OpenCV switches to INTER_AREA, which must agree
    ((3, 1), (7, 5)),  # a single source column
    ((10, 9), (3, 14)),  # shrink one axis, enlarge the other
    ((224, 384), (1080, 1920)),  # a model-size prediction onto FullHD ground truth
])
def test_resize_matches_opencv_inter_linear(source, target):
    image = np.random.default_rng(0).random(source).astype(np.float32)
    expected = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
    resized = metrics.resize_bilinear(jnp.asarray(image), target)
    np.testing.assert_allclose(resized, expected, rtol=0, atol=1e-6)


def test_resize_does_not_antialias_unlike_jax_image():
    """Why salax has its own resize: jax.image.resize blurs when shrinking, OpenCV does not."""
    image = np.random.default_rng(1).random((12, 12)).astype(np.float32)
    ours = np.asarray(metrics.resize_bilinear(jnp.asarray(image), (3, 3)))
    blurred = np.asarray(jax.image.resize(image, (3, 3), "bilinear"))
    np.testing.assert_allclose(ours, cv2.resize(image, (3, 3)), atol=1e-6)
    assert np.abs(blurred - ours).max() > 1e-3


def test_cc_is_pearson_correlation():
    rng = np.random.default_rng(2)
    p, g = rng.random((2, 30, 40)).astype(np.float32)
    g = g + 0.5 * p
    expected = np.corrcoef(p.ravel().astype(np.float64), g.ravel().astype(np.float64))[0, 1]
    np.testing.assert_allclose(metrics.cc(jnp.asarray(p), jnp.asarray(g)), expected, rtol=RTOL)


def test_kld_is_relative_entropy_with_the_epsilon_rule():
    rng = np.random.default_rng(3)
    p, g = (0.05 + rng.random((2, 30, 40))).astype(np.float32)
    p64, g64 = p.astype(np.float64), g.astype(np.float64)
    expected = scipy.special.rel_entr(g64 / g64.sum(), p64 / p64.sum()).sum()
    np.testing.assert_allclose(metrics.kld(jnp.asarray(p), jnp.asarray(g)), expected, rtol=RTOL)
    np.testing.assert_allclose(metrics.kld(jnp.asarray(p), jnp.asarray(g)), reference.kld(p64, g64),
                               rtol=RTOL)


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
    for name, value in organisers_frame(pred, gt, fixations).items():
        assert value == pytest.approx(expected[name], rel=1e-12), name
