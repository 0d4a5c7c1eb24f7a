"""The training losses agree with plain NumPy formulas and behave as objectives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salax import losses

WEIGHTS = {"kl": 1.0, "cc": 0.5, "nss": 0.1}


def _numpy_cc(p, g):
    a = (p - p.mean()) / (p.std() + 1e-7)
    b = (g - g.mean()) / (g.std() + 1e-7)
    return (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-7)


def _numpy_kl(p, g):
    p, g = p / (p.sum() + 1e-7), g / (g.sum() + 1e-7)
    return (g * np.log(1e-7 + g / (p + 1e-7))).sum()


def _numpy_nss(p, fixations):
    z = (p - p.mean()) / (p.std() + 1e-7)
    return np.mean([z[r, c] for r, c in fixations])


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    return rng.random((3, 12, 16), dtype=np.float32), rng.random((3, 12, 16), dtype=np.float32)


def test_per_frame_values_match_numpy(maps):
    pred, target = maps
    fixations = np.array([[[1, 2], [5, 7], [5, 7], [0, 0]]] * 3, dtype=np.int32)
    num = np.array([3, 2, 1], dtype=np.int32)
    cc = losses.correlation(pred, target)
    kl = losses.kl_divergence(pred, target)
    nss = losses.normalised_scanpath_saliency(pred, fixations, num)
    for f in range(3):
        np.testing.assert_allclose(cc[f], _numpy_cc(pred[f], target[f]), rtol=1e-4)
        np.testing.assert_allclose(kl[f], _numpy_kl(pred[f], target[f]), rtol=1e-4)
        np.testing.assert_allclose(nss[f], _numpy_nss(pred[f], fixations[f, : num[f]]), rtol=1e-4)


def test_padding_and_empty_frames_are_ignored(maps):
    pred, _ = maps
    fixations = np.zeros((3, 5, 2), np.int32)
    fixations[:, 0] = [4, 4]
    garbage = fixations.copy()
    garbage[:, 1:] = [11, 15]
    num = np.array([1, 1, 0], np.int32)
    a = losses.normalised_scanpath_saliency(pred, fixations, num)
    b = losses.normalised_scanpath_saliency(pred, garbage, num)
    np.testing.assert_array_equal(a, b)
    assert a[2] == 0.0


def test_perfect_prediction_scores_best():
    rng = np.random.default_rng(1)
    target = rng.random((2, 4, 8, 8), dtype=np.float32)
    logits_good = jnp.log(target) - jnp.log1p(-target)  # sigmoid(logits) == target
    logits_bad = jnp.asarray(rng.normal(size=target.shape), jnp.float32)
    fixations = np.stack(np.unravel_index(target.reshape(8, 64).argmax(-1), (8, 8)), -1)
    fixations = fixations.reshape(2, 4, 1, 2).astype(np.int32)
    num = np.ones((2, 4), np.int32)
    good, parts = losses.saliency_loss(logits_good, target, fixations, num, WEIGHTS)
    bad, _ = losses.saliency_loss(logits_bad, target, fixations, num, WEIGHTS)
    assert float(good) < float(bad)
    np.testing.assert_allclose(parts["cc"], 1.0, atol=1e-4)
    assert abs(float(parts["kl"])) < 1e-4


def test_gradient_is_finite_on_flat_maps():
    logits = jnp.zeros((2, 8, 8))
    target = jnp.zeros((2, 8, 8))
    grads = jax.grad(lambda x: losses.saliency_loss(x, target, jnp.zeros((2, 1, 2), jnp.int32),
                                                    jnp.zeros((2,), jnp.int32), WEIGHTS)[0])(logits)
    assert bool(jnp.all(jnp.isfinite(grads)))


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="differ in shape"):
        losses.saliency_loss(jnp.zeros((2, 8, 8)), jnp.zeros((2, 4, 8)), jnp.zeros((2, 1, 2), jnp.int32),
                             jnp.zeros((2,), jnp.int32), WEIGHTS)
