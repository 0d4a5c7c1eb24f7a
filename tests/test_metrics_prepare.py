"""salax.metrics.prepare's resize against the installed cv2, to float32 tolerance (any OpenCV version).

The bit-for-bit checks against the organisers' pinned OpenCV 4.7 are in tests/test_metrics_exact.py.
"""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salax import metrics


@pytest.mark.parametrize("source, target", [
    ((5, 7), (11, 13)),  # enlarge, odd
    ((11, 13), (5, 7)),  # shrink, odd
    ((8, 6), (4, 3)),  # exactly half: bilinear where IPP resizes (OpenCV's own code would switch to INTER_AREA)
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
