"""salax.data.media's CLI-PNG frames against the oracle: the ffmpeg CLI's PNGs read by OpenCV.

The organisers extract frames with `ffmpeg -v error -i VIDEO DIR/%03d.png` and read them with
`cv2.imread(path, cv2.IMREAD_UNCHANGED)`; `iter_cli_frames` must give the same arrays, bit for bit,
for every kind of video a submission or the ground truth can be.
"""

from fractions import Fraction
import shutil
import subprocess

import av
import cv2
import numpy as np
import pytest

from salax.data import media

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")


def write_video(path, height, width, pix_fmt, *, codec="libx264", frames=4, full_range=False, options=None):
    """A short video with sharp colour edges and noise (chroma that differs from pixel to pixel is what
    separates one conversion from another)."""
    rng = np.random.default_rng(height * width)
    rows, cols = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.options = options or ({"crf": "20"} if codec == "libx264" else {})
        if full_range:
            stream.codec_context.color_range = 2
        for index in range(frames):
            rgb = np.stack([(cols * 7 + 31 * index) % 256, (rows * 5) % 256,
                            rng.integers(0, 256, (height, width))], axis=-1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            encode(container, stream, frame, index, full_range)
        encode(container, stream, None)


def encode(container, stream, frame, index=0, full_range=False):
    """Encode `frame` as frame number `index` (None: flush the encoder) and mux what comes out."""
    if frame is not None:
        frame.pts = index
        if full_range:
            frame.color_range = 2
    container.mux(stream.encode(frame))


def cli_pngs(video, folder) -> list[np.ndarray]:
    folder.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), f"{folder}/%03d.png"], check=True)
    return [cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted(folder.iterdir())]


CASES = {  # name: (height, width, pixel format, codec, full range, expected PNG shape suffix and dtype)
    "8-bit 4:2:0": (54, 96, "yuv420p", "libx264", False, (3,), np.uint8),
    "8-bit 4:2:0 full range": (54, 96, "yuv420p", "libx264", True, (3,), np.uint8),
    "8-bit vertical": (96, 54, "yuv420p", "libx264", False, (3,), np.uint8),
    "8-bit odd size 4:4:4": (55, 97, "yuv444p", "libx264", False, (3,), np.uint8),
    "8-bit 4:2:2": (54, 96, "yuv422p", "libx264", False, (3,), np.uint8),
    "10-bit 4:2:0 (AViMoS truth)": (54, 96, "yuv420p10le", "libx264", True, (3,), np.uint16),
    "10-bit 4:2:0 limited range": (54, 96, "yuv420p10le", "libx264", False, (3,), np.uint16),
    "10-bit vertical": (96, 54, "yuv420p10le", "libx264", True, (3,), np.uint16),
    "10-bit odd size 4:4:4": (37, 51, "yuv444p10le", "libx264", True, (3,), np.uint16),
    "gray 8-bit": (55, 97, "gray", "ffv1", False, (), np.uint8),
    "gray 10-bit": (54, 96, "gray10le", "ffv1", False, (), np.uint16),
}


@needs_ffmpeg
@pytest.mark.parametrize("case", sorted(CASES))
def test_frames_equal_the_cli_pngs_read_by_opencv(tmp_path, case):
    height, width, pix_fmt, codec, full_range, channels, dtype = CASES[case]
    video = tmp_path / ("video.mkv" if codec == "ffv1" else "video.mp4")
    options = {"qp": "0"} if full_range and pix_fmt.endswith("10le") else None
    write_video(video, height, width, pix_fmt, codec=codec, full_range=full_range, options=options)
    theirs = cli_pngs(video, tmp_path / "frames")
    ours = np.concatenate(list(media.iter_cli_frames(video, chunk=3)))
    assert len(theirs) == len(ours) == 4 == media.count_frames(video)  # mkv: no index, so counted by demuxing
    assert ours.shape[1:] == (height, width, *channels) and ours.dtype == dtype
    for frame, (mine, png) in enumerate(zip(ours, theirs)):
        assert png.dtype == dtype and png.shape == mine.shape, (frame, png.dtype, png.shape)
        np.testing.assert_array_equal(mine, png, err_msg=f"frame {frame}")
        np.testing.assert_array_equal(media.read_png(tmp_path / "frames" / f"{frame + 1:03d}.png"), png)


@needs_ffmpeg
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_videos_are_turned_like_the_cli(tmp_path, degrees):
    plain, rotated = tmp_path / "plain.mp4", tmp_path / "rotated.mp4"
    write_video(plain, 54, 96, "yuv420p10le")
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(plain), "-c", "copy", "-metadata:s:v:0",
                    f"rotate={degrees}", str(rotated)], check=True)
    theirs = cli_pngs(rotated, tmp_path / "frames")
    ours = np.concatenate(list(media.iter_cli_frames(rotated)))
    assert ours.shape[1:3] == ((54, 96) if degrees == 180 else (96, 54))
    np.testing.assert_array_equal(ours, np.stack(theirs))


def test_the_cli_png_format_follows_the_source_depth_and_channels():
    assert media.cli_png_format("yuv420p") == "rgb24"
    assert media.cli_png_format("yuv420p10le") == "rgb48be"
    assert media.cli_png_format("gray") == "gray"
    assert media.cli_png_format("gray10le") == "gray16be"
    assert media.cli_png_format("yuva420p") == "rgba"
    with pytest.raises(media.MediaError, match="pal8"):
        media.cli_png_format("pal8")


def test_unreadable_inputs_are_named(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(media.MediaError, match="broken.mp4"):
        next(media.iter_cli_frames(broken))
    with pytest.raises(media.MediaError, match="missing.png"):
        media.read_png(tmp_path / "missing.png")
    with pytest.raises(media.MediaError, match="no such file"):
        media.count_frames(tmp_path / "missing.mp4")


def write_grey_video(path, maps, *, bit_depth=10, full_range=True):
    """A map video with neutral chroma, as the AViMoS truth (full range) or a TV-range submission."""
    top = 2**bit_depth - 1
    pix_fmt = "yuv420p10le" if bit_depth == 10 else "yuv420p"
    dtype = np.uint16 if bit_depth == 10 else np.uint8
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.height, stream.width = maps.shape[1:3]
        stream.pix_fmt = pix_fmt
        stream.codec_context.options = {"qp": "0"}
        if full_range:
            stream.codec_context.color_range = 2
        for index, values in enumerate(maps):
            frame = av.VideoFrame(values.shape[1], values.shape[0], pix_fmt)
            levels = np.rint(values * (top if full_range else 219 * (top + 1) // 256) +
                             (0 if full_range else 16 * (top + 1) // 256)).astype(dtype)
            for plane_index, plane in enumerate(frame.planes):
                rows = np.frombuffer(memoryview(plane), dtype).reshape(plane.height, -1)[:, : plane.width]
                rows[...] = levels if plane_index == 0 else (top + 1) // 2
            encode(container, stream, frame, index, full_range)
        encode(container, stream, None)


GREY_CASES = {  # name: (height, width, bit depth, full range)
    "10-bit full range (AViMoS truth)": (72, 128, 10, True),
    "10-bit limited range": (72, 128, 10, False),
    "8-bit full range": (54, 96, 8, True),
    "8-bit limited range, vertical": (96, 54, 8, False),
}


@needs_ffmpeg
@pytest.mark.parametrize("case", sorted(GREY_CASES))
def test_grey_frames_collapse_to_one_channel_with_the_cli_values(tmp_path, case):
    height, width, bit_depth, full_range = GREY_CASES[case]
    rows, cols = np.mgrid[0:height, 0:width]
    maps = np.stack([np.exp(-((rows - height / 2) ** 2 + (cols - width * (0.3 + 0.1 * t)) ** 2) / 400.0)
                     for t in range(4)])
    video = tmp_path / "grey.mp4"
    write_grey_video(video, maps, bit_depth=bit_depth, full_range=full_range)
    theirs = np.stack(cli_pngs(video, tmp_path / "frames"))
    collapsed = np.concatenate(list(media.iter_cli_frames(video, collapse_grey=True)))
    assert collapsed.shape == (4, height, width, 1) and collapsed.dtype == theirs.dtype
    np.testing.assert_array_equal(np.broadcast_to(collapsed, theirs.shape), theirs)
    np.testing.assert_array_equal(np.concatenate(list(media.iter_cli_frames(video))), theirs)
    # One frame at a time, the output arrays are reused once the caller lets go of them: frames it keeps, and
    # copies of frames it drops at once, are all the CLI's.
    kept = [chunk[0] for chunk in media.iter_cli_frames(video, chunk=1, collapse_grey=True)]
    dropped = [chunk[0].copy() for chunk in media.iter_cli_frames(video, chunk=1, collapse_grey=True)]
    for frames in (kept, dropped):
        np.testing.assert_array_equal(np.broadcast_to(np.stack(frames), theirs.shape), theirs)
    # In place, full-range maps come as the decoded luma and the shift that gives the PNG (10-bit: 6, 8-bit: 0).
    in_place = list(media.iter_cli_frames_in_place(video))
    assert all(isinstance(frame, media.GreyFrame) == full_range for frame in in_place)
    if full_range:
        assert {frame.shift for frame in in_place} == {16 - bit_depth if bit_depth > 8 else 0}
        shifted = np.stack([np.left_shift(frame.samples, frame.shift) for frame in in_place])
        np.testing.assert_array_equal(np.broadcast_to(shifted, theirs.shape), theirs)
    np.testing.assert_array_equal(np.broadcast_to(np.stack([np.asarray(f) for f in in_place]), theirs.shape), theirs)


@needs_ffmpeg
@pytest.mark.parametrize("height, width, bit_depth, full_range", [
    (1080, 1920, 10, True), (1920, 1080, 10, True), (1080, 1920, 10, False), (1080, 1920, 8, True)])
def test_grey_tables_from_a_short_probe_hold_on_every_pixel_of_full_hd_frames(tmp_path, height, width, bit_depth,
                                                                              full_range):
    # Noise: every level at thousands of positions in every row band, against the CLI's own PNGs.
    video = tmp_path / "noise.mp4"
    write_grey_video(video, np.random.default_rng(height + bit_depth).random((2, height, width)),
                     bit_depth=bit_depth, full_range=full_range)
    theirs = np.stack(cli_pngs(video, tmp_path / "frames"))
    collapsed = np.concatenate(list(media.iter_cli_frames(video, collapse_grey=True)))
    assert collapsed.shape == (2, height, width, 1)
    np.testing.assert_array_equal(np.broadcast_to(collapsed, theirs.shape), theirs)


@needs_ffmpeg
def test_rotated_grey_frames_collapse_like_the_cli(tmp_path):
    plain, rotated = tmp_path / "plain.mp4", tmp_path / "rotated.mp4"
    write_grey_video(plain, np.random.default_rng(0).random((3, 72, 128)))
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(rotated)], check=True)
    theirs = np.stack(cli_pngs(rotated, tmp_path / "frames"))
    collapsed = np.concatenate(list(media.iter_cli_frames(rotated, collapse_grey=True)))
    assert collapsed.shape == (3, 128, 72, 1)
    np.testing.assert_array_equal(np.broadcast_to(collapsed, theirs.shape), theirs)
    in_place = np.stack([np.asarray(frame) for frame in media.iter_cli_frames_in_place(rotated)])
    np.testing.assert_array_equal(np.broadcast_to(in_place, theirs.shape), theirs)


@pytest.mark.parametrize("full_range", [False, True])
def test_colour_frames_are_never_collapsed_and_chunks_do_not_mix_shapes(tmp_path, full_range):
    video = tmp_path / "mixed.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        stream.codec_context.options = {"qp": "0"}
        if full_range:
            stream.codec_context.color_range = 2
        for index in range(5):
            frame = av.VideoFrame(64, 48, "yuv444p")
            for plane_index, plane in enumerate(frame.planes):
                rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, -1)[:, : plane.width]
                rows[...] = 60 + 10 * index if plane_index == 0 else (128 if index != 2 else 90)  # frame 2 in colour
            encode(container, stream, frame, index, full_range)
        encode(container, stream, None)
    chunks = list(media.iter_cli_frames(video, chunk=4, collapse_grey=True))
    assert [chunk.shape[0] for chunk in chunks] == [2, 1, 2]
    assert [chunk.shape[-1] for chunk in chunks] == [1, 3, 1]
    full = np.concatenate(list(media.iter_cli_frames(video)))
    np.testing.assert_array_equal(np.broadcast_to(chunks[0], (2, 48, 64, 3)), full[:2])
    np.testing.assert_array_equal(chunks[1][0], full[2])
    in_place = list(media.iter_cli_frames_in_place(video))
    grey = media.GreyFrame if full_range else np.ndarray  # only full-range grey is a shift of the luma
    assert [type(frame) for frame in in_place] == [grey] * 2 + [np.ndarray] + [grey] * 2
    np.testing.assert_array_equal(np.stack([np.broadcast_to(frame, (48, 64, 3)) for frame in in_place]), full)
