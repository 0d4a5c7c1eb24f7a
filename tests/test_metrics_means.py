"""salax.metrics.means: per-video, per-split (AIM) and pooled means of per-frame scores."""

import numpy as np
import pytest

from salax import metrics


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
