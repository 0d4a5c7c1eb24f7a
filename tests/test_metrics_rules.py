"""salax.metrics.rules, the per-frame rules on prepared maps, against float64 oracles, NumPy and SciPy."""

from hypothesis import given, settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import metrics_reference as reference
import numpy as np
import pytest
import scipy.special

from salax import metrics

RTOL = 1e-5

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


def test_mit_auc_judd_is_seeded_and_counts_pixels_once():
    rng = np.random.default_rng(9)
    saliency = jnp.asarray(rng.random((8, 11)), jnp.float32)  # no ties: the jitter changes no order
    fixations = np.array([[1, 2], [1, 2], [5, 7], [0, 0], [9, 9]], np.int32)
    count = jnp.int32(4)
    mit = jax.jit(metrics.auc_judd_mit)
    with jax.enable_x64(True):  # its jitter is float64
        first = mit(saliency, fixations, count, jax.random.key(0))
        assert first == mit(saliency, fixations, count, jax.random.key(0))
    unique = np.array([[1, 2], [5, 7], [0, 0]])
    expected = reference.auc_judd(np.asarray(saliency, np.float64), unique, corrected=True)
    np.testing.assert_allclose(first, expected, rtol=1e-5)


def test_mit_auc_judd_breaks_ties_with_the_seed():
    saliency = jnp.full((6, 6), 0.5, jnp.float32)
    fixations = np.array([[1, 1], [2, 3]], np.int32)
    mit = jax.jit(metrics.auc_judd_mit)
    with jax.enable_x64(True):
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


def test_nss_and_cc_of_a_constant_map_are_zero():
    """The mean of a constant map rounds off the constant; standardising that noise by 1e-7 once gave
    NSS of order 0.1. By the formulas both are 0."""
    saliency = jnp.full((37, 53), 0.3, jnp.float32)
    truth = jnp.asarray(np.random.default_rng(4).random((37, 53)), jnp.float32)
    fixations = np.array([[3, 4], [20, 50], [36, 0]], np.int32)
    assert float(jax.jit(metrics.nss)(saliency, fixations, jnp.int32(3))) == 0.0
    assert float(jax.jit(metrics.cc)(saliency, truth)) == 0.0
