"""Maps as submitted (salax.evaluate.map_encoding): hand-worked levels, OpenCV's resize, the ffmpeg CLI's decode."""

import shutil
import subprocess

import jax
import numpy as np
import pytest

from salax import metrics
from salax.evaluate import map_encoding


def test_levels_stretch_each_frame_and_round_to_the_nearest_level():
    values = np.array([[0.25, 0.5], [0.75, 1.25]], np.float32)  # stretched: 0, 1/4, 1/2, 1 -> 0, 63.75, 127.5, 255
    assert map_encoding.levels(values).tolist() == [[0, 64], [128, 255]]  # 127.5: to even, as np.rint
    assert map_encoding.levels(values).dtype == np.uint8
    assert map_encoding.levels(values * 1e-3 + 7).tolist() == [[0, 64], [128, 255]]  # offset and scale: same
    assert not map_encoding.levels(np.full((3, 4), 0.3, np.float32)).any()  # a flat map is level 0


def test_resized_is_opencv_bilinear_clipped_in_any_batch():
    cv2 = pytest.importorskip("cv2")
    maps = np.random.default_rng(0).normal(0.5, 0.4, (7, 9, 13)).astype(np.float32)  # beyond [0, 1] too
    expected = np.stack([np.clip(cv2.resize(m, (40, 23), interpolation=cv2.INTER_LINEAR), 0, 1) for m in maps])
    for batch in (1, 3, 7, 16):  # chunks padded to one shape: the same maps whatever the padding
        got = np.stack(list(map_encoding.resized(maps, (23, 40), batch=batch)))
        assert got.shape == (7, 23, 40) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=2e-6)
        np.testing.assert_array_equal(got, np.stack(list(map_encoding.resized(maps, (23, 40), batch=1))))
    with jax.enable_x64(True):  # the scorer's resize, as scoring runs it: bit for bit
        exact = np.clip(np.asarray(metrics.resize_bilinear(maps[0], (23, 40))), 0, 1)
    np.testing.assert_array_equal(next(map_encoding.resized(maps, (23, 40), batch=4)), exact)


def test_encode_streams_and_holds_one_batch():
    taken = []

    def maps():
        for index in range(10):
            taken.append(index)
            yield np.random.default_rng(index).random((6, 8), dtype=np.float32)

    frames = map_encoding.encode(maps(), (12, 16), batch=4)
    first = next(frames)
    assert len(taken) == 4 and first.shape == (12, 16) and first.dtype == np.uint8
    assert len([first, *frames]) == 10 and len(taken) == 10
    values = np.random.default_rng(3).random((6, 8), dtype=np.float32)
    resized = next(map_encoding.resized(values[None], (12, 16), batch=1))
    np.testing.assert_array_equal(list(map_encoding.encode([values], (12, 16)))[0], map_encoding.levels(resized))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")
@pytest.mark.parametrize("size", [(24, 32), (55, 97)])  # 4:2:0, and 4:4:4 for odd sides
def test_the_written_video_decodes_to_the_same_levels(tmp_path, size):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, *size), dtype=np.uint8)
    frames[0].flat[:256] = np.arange(256)  # every level
    path = tmp_path / "maps.mp4"
    map_encoding.write_video(path, iter(frames), fps=25.0)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         check=True, capture_output=True).stdout
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(frames.shape), frames)
