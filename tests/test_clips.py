"""Clip geometry and model input, against hand-worked cases and OpenCV."""

import numpy as np
import pytest

from salax import batch
from salax.data import clips


def test_a_clip_ends_on_its_frame_and_pads_with_the_first():
    assert clips.clip_span(4, 2) == 7
    assert clips.frame_indices(10, 4, 2).tolist() == [4, 6, 8, 10]
    assert clips.frame_indices(3, 4, 2).tolist() == [0, 0, 1, 3]
    assert clips.frame_indices(0, 3, 1).tolist() == [0, 0, 0]


def test_the_default_audio_window_is_the_clip_span_at_the_build_rate():
    assert clips.default_audio_samples(16, 1, None) == round(16 * 16000 / 30)  # AViMoS's nominal 30 fps
    assert clips.default_audio_samples(8, 2, 25.0) == 16 * 640


def test_the_audio_window_ends_when_its_frame_leaves_the_screen():
    audio = np.arange(1, 16001, dtype=np.float32)  # sample n holds n + 1
    window = clips.audio_window(audio, end=1, fps=20.0, num_samples=2000)  # frame 1 ends at 0.1 s = 1600
    assert window[-1] == 1600 and window[400] == 1 and not window[:400].any()
    np.testing.assert_array_equal(clips.audio_window_until(audio, 0.1, 2000), window)
    late = clips.audio_window_until(audio, 1.05, 1600)  # past the track's end: silence
    assert late[799] == 16000 and not late[800:].any()


def test_normalise_is_the_imagenet_formula():
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    expected = (frames / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(clips.normalise(frames), expected, atol=1e-5)
    assert clips.normalise(frames).dtype == np.float32
    np.testing.assert_allclose(batch.unnormalise(clips.normalise(frames)) * 255, frames, atol=1e-3)


def test_rescaled_points_stay_on_the_grid_and_keep_duplicates():
    points = np.array([[0, 0], [1079, 1919], [540, 960], [540, 960]], np.int32)
    scaled = clips.rescale_points(points, (1080, 1920), (224, 398))
    assert scaled.tolist() == [[0, 0], [223, 397], [112, 199], [112, 199]]


def test_enlarging_is_opencv_bilinear():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    small = rng.random((9, 13)).astype(np.float32)
    for size in [(55, 97), (36, 26), (9, 40)]:
        expected = cv2.resize(small, size[::-1], interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(clips.resize_antialiased(small, size), expected, atol=2e-6)
    frame = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    expected = cv2.resize(frame, (31, 17), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(clips.resize_antialiased(frame, (17, 31)).astype(int) - expected).max() <= 1


def test_shrinking_averages_instead_of_aliasing():
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)  # 1-pixel checkerboard, mean 0.5
    shrunk = clips.resize_antialiased(checker, (16, 16))
    assert shrunk.shape == (16, 16) and np.abs(shrunk[2:-2, 2:-2] - 0.5).max() < 0.02
    same = np.zeros((5, 6, 3), np.uint8)
    assert clips.resize_antialiased(same, (5, 6)) is same
