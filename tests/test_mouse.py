"""Mouse-tracking preprocessing: exact on linear tracks, shift semantics, layout and the blur."""

import numpy as np
import pytest
from scipy import ndimage

from salax.data import mouse


def irregular_times(rng: np.random.Generator, end_ms: float, mean_step: float = 16.0) -> np.ndarray:
    steps = rng.uniform(0.5 * mean_step, 1.5 * mean_step, size=int(2 * end_ms / mean_step) + 2)
    times = np.concatenate([[0.0], np.cumsum(steps)])
    return times[times <= end_ms]


def linear_track(times_ms, start_xy, velocity_per_ms):
    return np.asarray(start_xy) + np.outer(times_ms, velocity_per_ms)


def test_resampling_is_exact_on_a_linear_track():
    times = irregular_times(np.random.default_rng(0), 2000.0)
    grid, xy = mouse.resample_track(times, linear_track(times, (3.0, -1.0), (0.25, 0.1)))
    np.testing.assert_allclose(np.diff(grid), 10.0)
    assert grid[0] == times[0] and grid[-1] <= times[-1] < grid[-1] + 10.0
    np.testing.assert_allclose(xy, linear_track(grid, (3.0, -1.0), (0.25, 0.1)), atol=1e-9)


@pytest.mark.parametrize("shift_ms", [300.0, -120.0, 0.0])
def test_gaze_track_moves_time_by_the_shift(shift_ms):
    times = np.array([0.0, 500.0, 1000.0])
    grid, _ = mouse.resample_track(times, np.zeros((3, 2)))
    shifted, _ = mouse.gaze_track(times, np.zeros((3, 2)), shift_ms=shift_ms)
    np.testing.assert_allclose(shifted, grid - shift_ms)


@pytest.mark.parametrize("shift_ms", [300.0, -80.0])
def test_fixations_are_exact_on_linear_tracks(shift_ms):
    rng = np.random.default_rng(1)
    height, width, fps, num_frames = 90, 160, 25.0, 40
    tracks, starts, speeds = [], rng.uniform(0.2, 0.4, (5, 2)), rng.uniform(-1e-4, 1e-4, (5, 2))
    for start, speed in zip(starts, speeds):
        times = irregular_times(rng, 2400.0)
        tracks.append((times, linear_track(times, start, speed)))
    fixations = mouse.fixations_from_tracks(tracks, num_frames=num_frames, fps=fps,
                                            map_size=(height, width), shift_ms=shift_ms)
    assert len(fixations) == num_frames
    for frame, points in enumerate(fixations):
        t = 1000.0 * frame / fps + shift_ms  # the cursor time that shows this frame's attention
        expected = [
            [int(np.floor((start[1] + speed[1] * t) * height)),
             int(np.floor((start[0] + speed[0] * t) * width))]
            for (times, _), start, speed in zip(tracks, starts, speeds)
            if times[0] <= t <= times[0] + 10.0 * np.floor((times[-1] - times[0]) / 10.0)
        ]
        assert points == expected


def test_pixel_tracks_are_scaled_and_offscreen_points_dropped_duplicates_kept():
    times = np.array([0.0, 1000.0])
    inside = (times, np.array([[960.0, 540.0], [960.0, 540.0]]))  # FullHD centre, still
    leaving = (times, np.array([[1800.0, 100.0], [2800.0, 100.0]]))  # exits right at 120 ms
    fixations = mouse.fixations_from_tracks([inside, inside, leaving], num_frames=10, fps=10.0,
                                            map_size=(54, 96), track_size=(1920, 1080), shift_ms=0)
    assert fixations[0] == [[27, 48], [27, 48], [5, 90]]
    assert fixations[5] == [[27, 48], [27, 48]]
    assert all(isinstance(v, int) for point in fixations[0] for v in point)


def test_frames_outside_the_track_get_no_points():
    track = (np.array([0.0, 400.0]), np.full((2, 2), 0.5))
    fixations = mouse.fixations_from_tracks([track], num_frames=8, fps=10.0, map_size=(10, 10),
                                            shift_ms=300.0)
    assert [len(points) for points in fixations] == [1, 1, 0, 0, 0, 0, 0, 0]


def test_saliency_map_matches_a_gaussian_blur_of_the_counts():
    points = [[10, 20], [10, 20], [30, 5], [0, 39]]
    counts = np.zeros((40, 48))
    for row, col in points:
        counts[row, col] += 1
    expected = ndimage.gaussian_filter(counts, sigma=3.0, mode="constant", truncate=20.0)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    result = mouse.saliency_map(points, (40, 48), sigma=3.0)
    assert result.dtype == np.float32 and result.shape == (40, 48)
    np.testing.assert_allclose(result, expected, atol=1e-5)
    assert result[10, 20] == 1.0  # the duplicated fixation is the peak


def test_saliency_map_without_fixations_is_zero_and_sigma_is_checked():
    assert not mouse.saliency_map([], (8, 8), sigma=2.0).any()
    with pytest.raises(ValueError, match="sigma"):
        mouse.saliency_map([[1, 1]], (8, 8), sigma=0.0)


def test_bad_tracks_are_refused():
    with pytest.raises(ValueError, match="strictly increasing"):
        mouse.resample_track([0.0, 20.0, 10.0], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        mouse.resample_track([0.0], np.zeros((1, 2)))


def test_shift_recovers_the_lag_of_a_following_cursor():
    """A cursor that trails a moving object by 300 ms lands nearer to it once shifted back."""
    rng = np.random.default_rng(3)
    fps, num_frames, size = 25.0, 60, (100, 100)

    def object_at(ms):
        seconds = np.asarray(ms) / 1000.0
        return np.stack([0.5 + 0.35 * np.sin(2.0 * seconds), 0.5 + 0.35 * np.cos(1.5 * seconds)], -1)

    tracks = []
    for _ in range(10):
        times = irregular_times(rng, 3000.0)
        tracks.append((times, object_at(times - 300.0) + rng.normal(0, 0.01, (len(times), 2))))
    truth = object_at(mouse.frame_times_ms(num_frames, fps))[:, ::-1] * 100  # (row, col) px

    def mean_distance(shift_ms):
        fixations = mouse.fixations_from_tracks(tracks, num_frames=num_frames, fps=fps,
                                                map_size=size, shift_ms=shift_ms)
        return np.mean([np.linalg.norm(np.array(p) + 0.5 - truth[f], axis=1).mean()
                        for f, p in enumerate(fixations) if p])

    assert mean_distance(300.0) < 0.4 * mean_distance(0.0)
