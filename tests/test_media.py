"""Round trips and failure modes of salax.data.media on small videos made in tmp_path."""

import os
import shutil
import subprocess

import av
import numpy as np
import pytest
from video_testdata import write_video

from salax import batch
from salax.data import media

FPS = 20
SAMPLE_RATE = batch.AUDIO_SAMPLE_RATE


def numbered_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Flat grey frames whose level encodes the frame index (10 * i), so order survives the codec."""
    return np.stack([np.full((height, width, 3), 10 * i, np.uint8) for i in range(count)])


def textured_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        red = 128 + 80 * np.sin((cols + 2 * i) / 12.0)
        green = 128 + 80 * np.cos(rows / 10.0)
        blue = np.full_like(red, 40 + 5 * i)
        frames.append(np.stack([red, green, blue], -1).astype(np.uint8))
    return np.stack(frames)


@pytest.fixture
def clip(tmp_path):
    frames = textured_frames(20)
    path = tmp_path / "clip.mp4"
    audio = np.zeros(SAMPLE_RATE, np.float32)
    media.write_video(path, frames, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE)
    return path, frames


def test_probe_reports_what_was_written(clip):
    path, frames = clip
    info = media.probe(path)
    assert (info.num_frames, info.height, info.width) == frames.shape[:3]
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(len(frames) / FPS)
    assert info.has_audio and info.rotation == 0


def test_frames_round_trip_within_codec_tolerance(clip):
    path, frames = clip
    decoded = media.read_frames(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 4.0


def test_frames_stream_in_chunks_and_resize(clip):
    path, frames = clip
    chunks = list(media.iter_frames(path, size=(24, 40), chunk=7))
    assert [len(c) for c in chunks] == [7, 7, 6]
    assert chunks[0].shape[1:] == (24, 40, 3)


@pytest.mark.parametrize("target_fps, expected_indices", [
    (FPS / 2, list(range(0, 20, 2))),
    (FPS * 2, [i // 2 for i in range(40)]),
])
def test_fps_resampling_picks_the_frame_on_screen(tmp_path, target_fps, expected_indices):
    path = tmp_path / "numbered.mp4"
    media.write_video(path, numbered_frames(20), fps=FPS)
    decoded = media.read_frames(path, fps=target_fps)
    indices = np.rint(decoded.reshape(len(decoded), -1).mean(axis=1) / 10).astype(int)
    assert indices.tolist() == expected_indices


def write_rotated(path, degrees: int) -> None:
    """A landscape 64x32 clip whose display matrix says 'turn by `degrees`', white stripe on the left."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(degrees)
        image = np.zeros((32, 64, 3), np.uint8)
        image[:, :8] = 255
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("degrees, stripe_rows", [(90, slice(-8, None)), (-90, slice(0, 8))])
def test_rotation_metadata_gives_upright_frames(tmp_path, degrees, stripe_rows):
    path = tmp_path / "phone.mp4"
    write_rotated(path, degrees)
    info = media.probe(path)
    assert (info.width, info.height, info.rotation) == (32, 64, degrees % 360)
    frames = media.read_frames(path)
    assert frames.shape == (3, 64, 32, 3)
    assert frames[0, stripe_rows].mean() > 200 and frames[0, 16:48].mean() < 30
    assert media.read_frames(path, size=(40, 20)).shape == (3, 40, 20, 3)


def test_ten_bit_maps_keep_full_precision(tmp_path):
    ramp = np.linspace(0.0, 1.0, 36 * 64, dtype=np.float32).reshape(36, 64)
    maps = np.stack([np.roll(ramp, shift, axis=1) for shift in range(4)])
    path = tmp_path / "gt.mp4"
    media.write_map_video(path, maps, fps=FPS, bit_depth=10)
    decoded = media.read_maps(path)
    assert decoded.shape == maps.shape and decoded.dtype == np.float32
    assert np.abs(decoded - maps).max() <= 0.5 / 1023 + 1e-6
    assert len(np.unique(decoded)) >= 1000


def test_eight_bit_and_odd_sized_maps_round_trip(tmp_path):
    maps = np.random.default_rng(0).random((3, 27, 35)).astype(np.float32)
    path = tmp_path / "submission.mp4"
    media.write_map_video(path, iter(maps), fps=FPS, bit_depth=8)
    chunks = list(media.iter_maps(path, chunk=2))
    assert [c.shape for c in chunks] == [(2, 27, 35), (1, 27, 35)]
    assert np.abs(np.concatenate(chunks) - maps).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("fps, click_frame", [(25, 0), (25, 13), (30, 19)])
def test_audio_click_lands_in_its_frame(tmp_path, fps, click_frame):
    audio = np.zeros(SAMPLE_RATE * 20 // fps, np.float32)
    start = round(click_frame * SAMPLE_RATE / fps) + 40
    audio[start:start + 20] = 0.9
    path = tmp_path / "click.mp4"
    media.write_video(path, numbered_frames(20), fps=fps, audio=audio, sample_rate=SAMPLE_RATE)
    decoded = media.read_audio(path, sample_rate=SAMPLE_RATE)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    loudest = int(np.argmax(np.abs(decoded)))
    assert int(loudest * fps // SAMPLE_RATE) == click_frame
    assert abs(loudest - start) < 40


def test_audio_is_none_without_a_track(tmp_path):
    path = tmp_path / "silent.mp4"
    media.write_video(path, numbered_frames(3), fps=FPS)
    assert media.read_audio(path) is None
    assert not media.probe(path).has_audio


def test_overlay_keeps_frames_and_audio(tmp_path, clip):
    path, frames = clip
    maps = np.zeros((len(frames), 12, 16), np.float32)
    maps[:, 6, 8] = 1.0
    out = tmp_path / "overlay.mp4"
    media.write_overlay_video(out, frames, maps, fps=FPS, audio=media.read_audio(path))
    info = media.probe(out)
    assert info.num_frames == len(frames) and info.has_audio
    overlay = media.read_frames(out)
    hot = overlay[:, 24, 32].astype(int)  # the salient spot, mapped onto the frame
    assert np.abs(hot - frames[:, 24, 32]).mean() > 30
    assert np.abs(overlay[:, 2, 2].astype(int) - frames[:, 2, 2]).mean() < 12


def test_overlay_refuses_unequal_counts(tmp_path):
    out = tmp_path / "overlay.mp4"
    with pytest.raises(media.MediaError, match="more frames than maps"):
        media.write_overlay_video(out, numbered_frames(3), np.zeros((2, 4, 4)), fps=FPS)
    assert not out.exists()


def test_bad_maps_are_refused_and_leave_no_file(tmp_path):
    out = tmp_path / "maps.mp4"
    with pytest.raises(media.MediaError, match="no maps"):
        media.write_map_video(out, [], fps=FPS)
    with pytest.raises(media.MediaError, match="NaN"):
        media.write_map_video(out, np.full((2, 8, 8), np.nan), fps=FPS)
    assert not out.exists()


def test_missing_and_non_video_files_name_the_file(tmp_path):
    with pytest.raises(media.MediaError, match="nothere.mp4: no such file"):
        media.probe(tmp_path / "nothere.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(media.MediaError, match="notes.mp4"):
        media.read_frames(text)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(media.MediaError, match="empty.mp4"):
        media.probe(empty)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=SAMPLE_RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="flt",
                                           layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    with pytest.raises(media.MediaError, match="voice.mp4: has no video stream"):
        media.probe(path)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_file_is_reported(tmp_path, faststart):
    path = tmp_path / "whole.mp4"
    with av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else {}) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height = 64, 48
        for frame in textured_frames(40):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(media.MediaError, match="cut.mp4"):
        media.read_frames(cut)


def test_video_with_zero_frames_is_reported(tmp_path):
    path = tmp_path / "zero.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = 64, 48
        container.start_encoding()  # header only, no frames
    for read in (media.probe, media.read_frames, media.read_maps):
        with pytest.raises(media.MediaError, match="zero.mp4: has no video stream"):
            read(path)


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")


def ffmpeg_raw(path, pix_fmt: str, dtype) -> np.ndarray:
    """The ffmpeg CLI's own decoding (with its autorotation) as a flat array: the oracle."""
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", pix_fmt, "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype)


@needs_ffmpeg
@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_upright_frames_agree_with_the_ffmpeg_cli(tmp_path, degrees):
    path = tmp_path / "phone.mp4"
    write_rotated(path, degrees)
    ours = media.read_frames(path)
    theirs = ffmpeg_raw(path, "rgb24", np.uint8).reshape(ours.shape)
    assert np.abs(ours.astype(int) - theirs).mean() < 2.0


@needs_ffmpeg
def test_ten_bit_maps_agree_with_the_ffmpeg_cli(tmp_path):
    maps = np.random.default_rng(1).random((3, 36, 64)).astype(np.float32)
    path = tmp_path / "gt.mp4"
    media.write_map_video(path, maps, fps=FPS)
    theirs = ffmpeg_raw(path, "gray10le", np.uint16).reshape(maps.shape)
    np.testing.assert_array_equal(np.rint(media.read_maps(path) * 1023), theirs)


@needs_ffmpeg
def test_limited_range_maps_from_the_ffmpeg_cli_are_expanded(tmp_path):
    """Submissions made by `ffmpeg -pix_fmt yuv420p` from grey frames use TV range (16..235)."""
    maps = np.random.default_rng(2).integers(0, 256, (2, 36, 64), dtype=np.uint8)
    path = tmp_path / "submission.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s",
                    "64x36", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-qp", "0", "-pix_fmt",
                    "yuv420p", str(path)], input=maps.tobytes(), check=True)
    decoded = media.read_maps(path)
    assert np.abs(decoded - maps / 255.0).max() < 1.5 / 219


@pytest.mark.parametrize("audio_delay, video_delay", [(0.25, 0.0), (0.0, 0.2)])
def test_audio_is_aligned_when_the_streams_start_apart(tmp_path, audio_delay, video_delay):
    """Sample 0 is the first frame's time: late audio is padded, audio before the video is cut."""
    path = tmp_path / "apart.mp4"
    click = 6000  # samples into the audio track, after both starts
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height = 64, 48
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for index, image in enumerate(numbered_frames(10)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index + round(video_delay * FPS)
            for packet in video.encode(frame):
                container.mux(packet)
        samples = np.zeros((1, SAMPLE_RATE), np.float32)
        samples[0, click:click + 20] = 0.9
        sound = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        sound.sample_rate, sound.pts = SAMPLE_RATE, round(audio_delay * SAMPLE_RATE)
        for packet in list(video.encode()) + list(audio.encode(sound)) + list(audio.encode()):
            container.mux(packet)
    decoded = media.read_audio(path)
    expected = click + round((audio_delay - video_delay) * SAMPLE_RATE)
    assert abs(int(np.argmax(np.abs(decoded))) - expected) < 40


def test_probe_counts_frames_of_containers_without_an_index(tmp_path):
    path = tmp_path / "clip.mkv"
    media.write_video(path, numbered_frames(7), fps=FPS)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska keeps no frame count
    assert media.probe(path).num_frames == 7 == len(media.read_frames(path))


def test_timed_frames_carry_real_timing_and_every_size_from_one_decode(tmp_path):
    times = [0.0, 0.05, 0.07, 0.2, 0.25, 0.4]  # a variable frame rate
    path = write_video(tmp_path / "vfr.mp4", width=64, height=48, frames=6, frame_times=times, audio_channels=6,
                       audio_rate=44_100)
    frames = list(media.iter_timed_frames(path, sizes=(None, (24, 32))))
    assert [f.index for f in frames] == list(range(6))
    info = media.probe(path)
    np.testing.assert_allclose([f.end for f in frames], times[1:] + [times[-1] + 1 / info.fps], atol=1e-6)
    np.testing.assert_array_equal(np.stack([f.images[0] for f in frames]), media.read_frames(path))
    np.testing.assert_array_equal(np.stack([f.images[1] for f in frames]), media.read_frames(path, size=(24, 32)))
    assert info.audio_rate == 44_100 and media.probe(write_video(tmp_path / "mute.mp4", width=16, height=16,
                                                                 frames=2)).audio_rate == 0


def test_every_x264_preset_writes_maps_losslessly(tmp_path):
    maps = np.random.default_rng(0).random((3, 20, 30)).astype(np.float32)
    for preset in (None, "veryfast", "ultrafast"):
        path = tmp_path / f"{preset}.mp4"
        media.write_map_video(path, maps, fps=FPS, bit_depth=8, preset=preset)
        np.testing.assert_array_equal(np.rint(media.read_maps(path) * 255), np.rint(maps * 255))


def test_an_overlay_copies_the_sound_track_or_re_encodes_what_mp4_cannot_carry(tmp_path):
    source = write_video(tmp_path / "surround.mp4", width=32, height=16, frames=10, audio_channels=6)
    maps = np.random.default_rng(0).random((10, 4, 4)).astype(np.float32)
    out = tmp_path / "overlay.mp4"
    media.write_overlay_video(out, media.read_frames(source), maps, fps=25, audio_from=source)
    with av.open(str(out)) as container:
        sound = container.streams.audio[0]
        assert (sound.codec_context.name, sound.channels, sound.rate) == ("aac", 6, 48_000)
    np.testing.assert_array_equal(media.read_audio(out), media.read_audio(source))  # the same packets

    pcm = tmp_path / "pcm.mov"  # PCM: mov carries it, mp4 cannot
    with av.open(str(pcm), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height = 32, 16
        audio = container.add_stream("pcm_s16le", rate=22_050, layout="stereo")
        for index in range(10):
            for packet in video.encode(av.VideoFrame.from_ndarray(numbered_frames(10, 16, 32)[index], format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        tone = (np.sin(np.arange(8820) / 5.0) * 8000).astype(np.int16)
        interleaved = np.ascontiguousarray(np.repeat(tone, 2).reshape(1, -1))  # s16 stereo: L R L R ...
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 22_050, 0
        for packet in list(audio.encode(frame)) + list(audio.encode(None)):
            container.mux(packet)
    media.write_overlay_video(out, media.read_frames(pcm), maps, fps=25, audio_from=pcm)
    with av.open(str(out)) as container:
        sound = container.streams.audio[0]
        assert (sound.codec_context.name, sound.channels, sound.rate) == ("aac", 1, 22_050)
    heard, played = media.read_audio(out), media.read_audio(pcm)
    assert abs(len(heard) - len(played)) < 2048 and np.corrcoef(heard[2048:6000], played[2048:6000])[0, 1] > 0.9
