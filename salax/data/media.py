"""Video, audio and saliency-map I/O on PyAV, streamed in chunks and without temporary files.

Frames come out upright (the container's display matrix is applied), resized inside libswscale and
optionally resampled in time; saliency maps are read from the luma plane at the codec's full precision
(8- or 10-bit); audio is mono float32 whose sample 0 sits at the first video frame's timestamp.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import contextlib
import dataclasses
from fractions import Fraction
import functools
import os
import sys

import av
import numpy as np

from salax import batch
from salax.data import clips

__all__ = [
    "MediaError",
    "VideoInfo",
    "probe",
    "iter_frames",
    "read_frames",
    "TimedFrame",
    "iter_timed_frames",
    "iter_maps",
    "read_maps",
    "read_audio",
    "write_map_video",
    "write_video",
    "write_overlay_video",
    "colorize",
]

_FULL_RANGE = 2  # AVCOL_RANGE_JPEG: levels use the whole 0..2^bits-1 span.
_TIME_EPS = 1e-6  # seconds; absorbs float rounding when matching frame times.


class MediaError(ValueError):
    """A media file is missing, unreadable, empty or corrupt; the message names the file."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a caller needs to plan decoding; width/height are upright (after rotation)."""

    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int  # counter-clockwise degrees the display matrix asks for: 0, 90, 180 or 270
    has_audio: bool
    duration: float
    audio_rate: int = 0  # samples per second of the first audio track (0 without audio)


# ----------------------------------------------------------------------------------------- reading


@contextlib.contextmanager
def _open_input(path: str | os.PathLike, *, decode_first: bool = True,
                probe: bool = True) -> Iterator[av.container.InputContainer]:
    """Open a media file, turning every PyAV/FFmpeg failure into a MediaError naming the file.

    decode_first=False: probing decodes no frame (FFmpeg's stream probing otherwise decodes the first one, which
    for a 1080p 10-bit video costs as much as decoding it: measured 17-25 ms against 2.5 ms), so the streams'
    decoder parameters (pixel format, size) may be unknown; for reading the container's index, or for decoding
    with the decoder's skip_frame set back. probe=False: no packet is read to probe the streams either (only
    what the container's header says is known).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MediaError(f"{path}: no such file")
    options = None if decode_first else {"skip_frame": "all"}
    if not probe:
        options = {**(options or {}), "probesize": "32", "analyzeduration": "0"}
    try:
        container = av.open(path, mode="r", options=options)
    except av.FFmpegError as error:
        raise MediaError(f"{path}: not a readable media file ({error})") from error
    try:
        yield container
    except av.FFmpegError as error:
        raise MediaError(f"{path}: corrupt or truncated media ({error})") from error
    finally:
        container.close()


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike):
    if not container.streams.video:
        raise MediaError(f"{os.fspath(path)}: has no video stream (or one without frames)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: the largest single decoding speed-up
    return stream


def _stream_fps(stream, path: str | os.PathLike) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise MediaError(f"{os.fspath(path)}: the video stream has no frame rate")
    return float(rate)


def _quarter_turns(rotation: float) -> int:
    """Counter-clockwise display rotation in degrees -> number of 90-degree turns in 0..3."""
    return round(rotation / 90.0) % 4


def _decoded_frames(container, stream, path: str | os.PathLike) -> Iterator[av.VideoFrame]:
    """Decode every frame; fail loudly when the file ends before the frames its index promises."""
    expected = stream.frames
    decoded = 0
    for frame in container.decode(stream):
        decoded += 1
        yield frame
    if decoded == 0:
        raise MediaError(f"{os.fspath(path)}: the video stream holds no decodable frames")
    if expected and decoded < expected:
        raise MediaError(
            f"{os.fspath(path)}: truncated or corrupt: the index lists {expected} frames but only "
            f"{decoded} could be decoded"
        )


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's frame count, rate, upright size, rotation and whether it carries audio."""
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        fps = _stream_fps(stream, path)
        first = next(container.decode(stream), None)
        if first is None:
            raise MediaError(f"{os.fspath(path)}: the video stream holds no decodable frames")
        turns = _quarter_turns(first.rotation)
        num_frames = stream.frames or _count_packets(container, stream)
        width, height = first.width, first.height
        if turns % 2:
            width, height = height, width
        return VideoInfo(
            num_frames=num_frames,
            fps=fps,
            width=width,
            height=height,
            rotation=90 * turns,
            has_audio=bool(container.streams.audio),
            duration=num_frames / fps,
            audio_rate=int(container.streams.audio[0].rate or 0) if container.streams.audio else 0,
        )


def _count_packets(container, stream) -> int:
    """Frame count for containers without an index (e.g. raw or some mkv): demux, don't decode."""
    container.seek(0)
    return sum(1 for packet in container.demux(stream) if packet.size)


def _check_size(size: tuple[int, int] | None) -> None:
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (height, width) of positive ints, got {size!r}")


class _FrameTimeline:
    """Decides how often each decoded frame appears in an output sampled at `fps`.

    Output frame j shows the source frame whose display interval [t_i, t_i+1) contains j / fps,
    so the decision for a frame is known once the next frame's time is (or the stream ends).
    """

    def __init__(self, fps: float | None):
        self.fps = fps
        self.next_index = 0

    def repeats_until(self, end_time: float) -> int:
        """How many outputs fall before `end_time` (seconds since the first frame), consuming them."""
        if self.fps is None:
            return 1
        count = 0
        while self.next_index / self.fps < end_time - _TIME_EPS:
            self.next_index += 1
            count += 1
        return count


def _frame_ends(frames: Iterable[av.VideoFrame], source_fps: float):
    """Yield (frame, when it leaves the screen in seconds since the first frame): the next frame's
    time, or one source frame period after the last."""
    start = None
    previous = None
    for index, frame in enumerate(frames):
        time = frame.time if frame.time is not None else index / source_fps
        if start is None:
            start = time
        time -= start
        if previous is not None:
            yield previous[0], time
        previous = (frame, time)
    if previous is not None:
        yield previous[0], previous[1] + 1.0 / source_fps


def _chunked(arrays: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    buffer: list[np.ndarray] = []
    for array in arrays:
        buffer.append(array)
        if len(buffer) == chunk:
            yield np.stack(buffer)
            buffer = []
    if buffer:
        yield np.stack(buffer)


def iter_frames(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    chunk: int = 32,
) -> Iterator[np.ndarray]:
    """Stream upright uint8 RGB chunks [n, H, W, 3], resized to `size` (height, width) by libswscale.

    With `fps`, frames are repeated or dropped so that output frame j is the one on screen at j / fps.
    Only `chunk` frames are held at a time, so long FullHD videos stream in bounded memory.
    """
    _check_size(size)
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")

    def upright_rgb() -> Iterator[np.ndarray]:
        with _open_input(path) as container:
            stream = _video_stream(container, path)
            timeline = _FrameTimeline(fps)
            frames = _decoded_frames(container, stream, path)
            for frame, end in _frame_ends(frames, _stream_fps(stream, path)):
                repeats = timeline.repeats_until(end)
                if repeats == 0:
                    continue  # dropped by the rate change: skip the colour conversion too
                rgb = _upright_rgb(frame, size)
                for _ in range(repeats):
                    yield rgb

    return _chunked(upright_rgb(), chunk)


def _upright_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 RGB [H, W, 3] as displayed (rotation applied), scaled to upright `size` by libswscale."""
    turns = _quarter_turns(frame.rotation)
    width, height = (None, None) if size is None else (size[1], size[0])
    if turns % 2 and size is not None:
        width, height = height, width
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24")
    return np.rot90(rgb, turns) if turns else rgb


def read_frames(path: str | os.PathLike, **kwargs) -> np.ndarray:
    """All frames as one array [T, H, W, 3]; same options as iter_frames. For short videos."""
    return np.concatenate(list(iter_frames(path, **kwargs)))


@dataclasses.dataclass(frozen=True)
class TimedFrame:
    """One decoded frame, upright, at each requested size, and when it leaves the screen."""

    index: int
    end: float  # seconds after the first frame's timestamp: the next frame's time (or one period)
    images: tuple[np.ndarray, ...]  # uint8 RGB [H, W, 3], one per size asked for


def iter_timed_frames(
    path: str | os.PathLike, *, sizes: tuple[tuple[int, int] | None, ...] = (None,)
) -> Iterator[TimedFrame]:
    """Every frame once, in order, with its real timing (variable frame rates too), at several sizes.

    Each of `sizes` is an upright (height, width) for libswscale, or None for the native size; all come
    from the same decoded frame. A stream that breaks part-way raises MediaError after the frames that
    decoded (the caller knows how many it got).
    """
    for size in sizes:
        _check_size(size)
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        frames = _decoded_frames(container, stream, path)
        for index, (frame, end) in enumerate(_frame_ends(frames, _stream_fps(stream, path))):
            yield TimedFrame(index, end, tuple(_upright_rgb(frame, size) for size in sizes))


def _plane_array(plane, dtype: np.dtype) -> np.ndarray:
    """A view of one image plane without the alignment padding at the end of its rows."""
    rows = np.frombuffer(memoryview(plane), dtype=dtype)
    return rows.reshape(plane.height, plane.line_size // np.dtype(dtype).itemsize)[:, : plane.width]


def _luma_map(frame: av.VideoFrame) -> np.ndarray:
    """A map frame's values in [0, 1] at full codec precision (luma plane, range-aware)."""
    pix = frame.format
    if pix.is_rgb:
        # Colour maps: the AIM scorer averages the RGB channels.
        return (frame.to_ndarray(format="rgb48le").mean(axis=-1) / 65535.0).astype(np.float32)
    bits = pix.components[0].bits
    dtype = np.dtype(np.uint8 if bits <= 8 else (">u2" if pix.is_big_endian else "<u2"))
    luma = _plane_array(frame.planes[0], dtype).astype(np.float32)
    full_range = frame.color_range == _FULL_RANGE or pix.name.startswith(("yuvj", "gray"))
    if full_range:
        return luma / float(2**bits - 1)
    scale = 2 ** (bits - 8)
    return np.clip((luma - 16 * scale) / (219 * scale), 0.0, 1.0)


def iter_maps(path: str | os.PathLike, *, chunk: int = 32) -> Iterator[np.ndarray]:
    """Stream a saliency-map video as float32 chunks [n, H, W] in [0, 1], 8- or 10-bit exact."""

    def maps() -> Iterator[np.ndarray]:
        with _open_input(path) as container:
            stream = _video_stream(container, path)
            for frame in _decoded_frames(container, stream, path):
                values = _luma_map(frame)
                turns = _quarter_turns(frame.rotation)
                yield np.rot90(values, turns) if turns else values

    return _chunked(maps(), chunk)


def read_maps(path: str | os.PathLike) -> np.ndarray:
    """All maps of a saliency-map video as one float32 array [T, H, W]."""
    return np.concatenate(list(iter_maps(path)))


def _first_time(frames: Iterable[av.VideoFrame]) -> float | None:
    return next((frame.time for frame in frames if frame.time is not None), None)


def read_audio(path: str | os.PathLike, *, sample_rate: int = batch.AUDIO_SAMPLE_RATE) -> np.ndarray | None:
    """Mono float32 audio at `sample_rate`, sample 0 at the first video frame's timestamp.

    Audio that starts later than the video is preceded by silence, audio that starts earlier is cut,
    so sample n is heard at video time n / sample_rate. Returns None when there is no audio track.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    with _open_input(path) as container:
        if not container.streams.audio:
            return None
        audio_stream = container.streams.audio[0]
        video_stream = container.streams.video[0] if container.streams.video else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        pieces: list[np.ndarray] = []
        audio_start = video_start = None
        streams = [audio_stream] + ([video_stream] if video_stream is not None else [])
        for packet in container.demux(streams):
            if packet.stream.type == "video":
                if video_start is None:
                    video_start = _first_time(packet.decode())
                continue
            for frame in packet.decode():
                if audio_start is None and frame.time is not None:
                    audio_start = frame.time
                pieces.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
        pieces.extend(f.to_ndarray()[0] for f in resampler.resample(None))
        if video_start is None and video_stream is not None:
            video_start = _first_time(video_stream.decode(None))  # frames held back by reordering
    samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    offset = 0
    if audio_start is not None and video_start is not None:
        offset = round((audio_start - video_start) * sample_rate)
    if offset > 0:
        samples = np.concatenate([np.zeros(offset, np.float32), samples])
    elif offset < 0:
        samples = samples[-offset:]
    return samples.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------- writing


def _rate(fps: float) -> Fraction:
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


@contextlib.contextmanager
def _output(path: str | os.PathLike) -> Iterator[av.container.OutputContainer]:
    """An output container whose half-written file is removed if writing fails."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    container = av.open(path, mode="w")
    try:
        yield container
    except BaseException:
        container.close()
        with contextlib.suppress(OSError):
            os.remove(path)
        raise
    container.close()


def _add_h264(container, *, fps: float, height: int, width: int, bit_depth: int, lossless: bool,
              preset: str | None = None):
    """An x264 stream; 4:2:0 when the size allows it (even sides), else 4:4:4."""
    chroma = "420" if height % 2 == 0 and width % 2 == 0 else "444"
    stream = container.add_stream("libx264", rate=_rate(fps))
    stream.width, stream.height = width, height
    stream.pix_fmt = f"yuv{chroma}p" + ("10le" if bit_depth == 10 else "")
    if lossless:
        stream.codec_context.options = {"qp": "0"}
        stream.codec_context.color_range = _FULL_RANGE
    else:
        # crf 18: visually lossless, still small. x264's macroblock-tree rate control reads
        # uninitialised memory in its assembly, so with it the bytes vary from run to run.
        stream.codec_context.options = {"crf": "18", "x264-params": "mbtree=0"}
    if preset is not None:
        stream.codec_context.options = {**stream.codec_context.options, "preset": preset}
    return stream


def _encode(container, stream, frame) -> None:
    for packet in stream.encode(frame):
        container.mux(packet)


def _as_map(values, path: str, index: int, shape: tuple[int, ...] | None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise MediaError(f"{path}: map {index} must be 2-D [H, W], got shape {values.shape}")
    if shape is not None and values.shape != shape:
        raise MediaError(f"{path}: map {index} has shape {values.shape}, earlier maps {shape}")
    if not np.isfinite(values).all():
        raise MediaError(f"{path}: map {index} holds NaN or infinite values")
    return values


def _as_frame(frame, path: str, index: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise MediaError(f"{path}: frame {index} must be uint8 [H, W, 3], got {frame.dtype} "
                         f"{frame.shape}")
    return frame


def _map_frame(levels: np.ndarray, pix_fmt: str, mid: int) -> av.VideoFrame:
    """A full-range YUV frame whose luma carries the map and whose chroma is neutral grey."""
    frame = av.VideoFrame(levels.shape[1], levels.shape[0], pix_fmt)
    for index, plane in enumerate(frame.planes):
        _plane_array(plane, levels.dtype)[...] = levels if index == 0 else mid
    frame.color_range = _FULL_RANGE
    return frame


def write_map_video(
    path: str | os.PathLike,
    maps: Iterable[np.ndarray] | np.ndarray,
    *,
    fps: float,
    bit_depth: int = 10,
    preset: str | None = None,
) -> None:
    """Write saliency maps (each [H, W] in [0, 1]) as a lossless full-range grey H.264 video.

    10-bit (yuv420p10le, qp 0) is how AViMoS ships its ground truth; 8-bit is the submission format.
    Maps stream in: an iterator of frames is never held whole. `preset` (an x264 preset) trades file
    size for speed; every preset is lossless here (x264's default, medium, when None).
    """
    if bit_depth not in (8, 10):
        raise ValueError(f"bit_depth must be 8 or 10, got {bit_depth}")
    path = os.fspath(path)
    top = 2**bit_depth - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    shape = stream = None
    with _output(path) as container:
        for index, values in enumerate(maps):
            values = _as_map(values, path, index, shape)
            if stream is None:
                shape = values.shape
                stream = _add_h264(container, fps=fps, height=shape[0], width=shape[1],
                                   bit_depth=bit_depth, lossless=True, preset=preset)
            levels = np.rint(np.clip(values, 0.0, 1.0) * top).astype(dtype)
            frame = _map_frame(levels, stream.pix_fmt, mid=(top + 1) // 2)
            frame.pts = index
            _encode(container, stream, frame)
        if stream is None:
            raise MediaError(f"{path}: no maps to write")
        _encode(container, stream, None)


_HEAT_ANCHORS = np.array(  # a jet-like ramp: dark blue -> cyan -> yellow -> red
    [[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], np.float32
)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] of any shape to uint8 RGB heat colours (shape + (3,))."""
    positions = np.linspace(0.0, 1.0, len(_HEAT_ANCHORS))
    flat = np.clip(np.asarray(values, np.float32), 0.0, 1.0).ravel()
    rgb = np.stack([np.interp(flat, positions, _HEAT_ANCHORS[:, c]) for c in range(3)], axis=-1)
    return rgb.reshape(*np.shape(values), 3).astype(np.uint8)


def _blend(frame: np.ndarray, values: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Heat colours over the frame, opaque where saliency is high, clear where it is zero."""
    values = clips.resize_antialiased(values, frame.shape[:2])
    span = values.max() - values.min()
    values = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    weight = (alpha * values)[..., None]
    return (frame * (1 - weight) + colorize(values) * weight).astype(np.uint8)


_COPYABLE_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}  # audio codecs an mp4 carries


def _copyable_audio(source: av.container.InputContainer):
    """The source's first audio stream when its packets can go into an mp4 as they are, else None."""
    streams = source.streams.audio
    return streams[0] if streams and streams[0].codec_context.name in _COPYABLE_AUDIO else None


def _copy_packets(container, stream, source: av.container.InputContainer, template) -> None:
    """Mux `template`'s packets into `stream`, shifted so the source's first video frame time is 0."""
    video = source.streams.video[0] if source.streams.video else None
    start = float(video.start_time * video.time_base) if video is not None and video.start_time is not None else 0.0
    offset = round(start / template.time_base)
    source.seek(0)
    for packet in source.demux(template):
        if packet.dts is None:  # the demuxer's end-of-stream marker
            continue
        packet.pts, packet.dts = packet.pts - offset, packet.dts - offset
        packet.stream = stream
        container.mux(packet)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | np.ndarray,
    *,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = batch.AUDIO_SAMPLE_RATE,
    audio_from: str | os.PathLike | None = None,
) -> None:
    """Write uint8 RGB frames [H, W, 3] as H.264 (+ AAC mono audio whose sample 0 plays with frame 0).

    Frames stream in; 4:2:0 chroma for even sizes, 4:4:4 otherwise. `audio_from` (instead of `audio`)
    names a video whose first audio track is copied packet by packet (codec, channels and rate kept,
    aligned to its first video frame) when an mp4 can carry it, else re-encoded, mixed to mono at its
    own rate.
    """
    path = os.fspath(path)
    stream = copied = None
    with contextlib.ExitStack() as stack, _output(path) as container:
        source = template = None
        if audio_from is not None:
            source = stack.enter_context(_open_input(audio_from))
            template = _copyable_audio(source)
            if template is None and source.streams.audio:
                sample_rate = source.streams.audio[0].rate
                audio = read_audio(audio_from, sample_rate=sample_rate)
        audio_stream = None
        if audio is not None and template is None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono"
        for index, frame in enumerate(frames):
            frame = _as_frame(frame, path, index)
            if stream is None:
                stream = _add_h264(container, fps=fps, height=frame.shape[0],
                                   width=frame.shape[1], bit_depth=8, lossless=False)
                if template is not None:
                    copied = container.add_stream_from_template(template)
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = index
            _encode(container, stream, video_frame)
        if stream is None:
            raise MediaError(f"{path}: no frames to write")
        _encode(container, stream, None)
        if copied is not None:
            _copy_packets(container, copied, source, template)
        if audio_stream is not None:
            samples = np.ascontiguousarray(np.asarray(audio, np.float32).reshape(1, -1))
            audio_frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            audio_frame.sample_rate = sample_rate
            audio_frame.pts = 0
            _encode(container, audio_stream, audio_frame)
            _encode(container, audio_stream, None)


def write_overlay_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | np.ndarray,
    maps: Iterable[np.ndarray] | np.ndarray,
    *,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = batch.AUDIO_SAMPLE_RATE,
    audio_from: str | os.PathLike | None = None,
) -> None:
    """Write frames with their saliency maps blended on as heat colours, keeping the audio.

    Maps may be smaller than the frames (model resolution); they are resized bilinearly and min-max
    normalised per frame. Frames and maps must be equally many. Audio as in `write_video`.
    """
    path = os.fspath(path)

    def blended() -> Iterator[np.ndarray]:
        map_iter = iter(maps)
        for index, frame in enumerate(frames):
            values = next(map_iter, None)
            if values is None:
                raise MediaError(f"{path}: more frames than maps (no map for frame {index})")
            yield _blend(_as_frame(frame, path, index), _as_map(values, path, index, None))
        if next(map_iter, None) is not None:
            raise MediaError(f"{path}: more maps than frames")

    write_video(path, blended(), fps=fps, audio=audio, sample_rate=sample_rate, audio_from=audio_from)


# ------------------------------------------------------------ frames as the ffmpeg CLI's PNGs read by OpenCV
# The AIM organisers extract frames with `ffmpeg -v error -i VIDEO DIR/%03d.png` and read each one with
# `cv2.imread(path, cv2.IMREAD_UNCHANGED)`. The CLI rotates by the display matrix, then converts each frame to the
# PNG encoder's closest pixel format in a libavfilter `scale` filter with the CLI's swscale flags ("bicubic");
# OpenCV returns colour as BGR. Running the same filters in-process gives the same arrays with no file written.
# (PyAV's `reformat` drives swscale differently: measured, it moves 10-bit 4:2:0 colour by up to a third of the
# range, so it is not used here.) Like the CLI on constant-rate videos, every decoded frame gives one array; for
# variable-rate videos the CLI's constant-rate output may repeat or drop frames, which this does not.

_CLI_SWS_FLAGS = "flags=bicubic"  # the ffmpeg CLI's default swscale flags for automatically inserted scalers
# Display rotation (counter-clockwise quarter turns) -> the filters the CLI's autorotation inserts before scaling.
_CLI_ROTATION_FILTERS = {1: (("transpose", "cclock"),), 2: (("hflip", ""), ("vflip", "")), 3: (("transpose", "clock"),)}


def cli_png_format(pixel_format: str) -> str:
    """The PNG pixel format `ffmpeg -i VIDEO %03d.png` writes for decoded frames of `pixel_format`.

    Gray sources give 1-channel PNGs, everything else RGB(A); 8 bits or less stay 8-bit, deeper ones become 16-bit.
    Palette, 1-bit and gray+alpha sources raise MediaError: OpenCV expands those PNGs in ways not reproduced here.
    """
    source = av.VideoFormat(pixel_format)
    colour = [c for c in source.components if not c.is_alpha]
    alpha = len(colour) < len(source.components)
    bits = max(c.bits for c in colour)
    if source.has_palette or bits < 8 or (len(colour) == 1 and alpha):
        raise MediaError(f"frames in {pixel_format} are not supported (palette, 1-bit or gray with alpha)")
    if len(colour) == 1:
        return "gray" if bits <= 8 else "gray16be"
    if alpha:
        return "rgba" if bits <= 8 else "rgba64be"
    return "rgb24" if bits <= 8 else "rgb48be"


def _opencv_order(frame: av.VideoFrame) -> np.ndarray:
    """A decoded RGB(A) or gray frame as OpenCV's IMREAD_UNCHANGED array: BGR(A), native-endian, contiguous."""
    array = frame.to_ndarray()
    if array.ndim == 3:
        array = array[..., [2, 1, 0, 3][: array.shape[2]]]  # fancy indexing: a contiguous copy
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))


def _cli_graph(width: int, height: int, pixel_format: str, time_base, turns: int) -> av.filter.Graph:
    """The CLI's filters for one video: its autorotation, then `scale` (flags=bicubic) to the PNG format."""
    graph = av.filter.Graph()
    last = graph.add_buffer(width=width, height=height, format=pixel_format, time_base=time_base)
    filters = [*_CLI_ROTATION_FILTERS.get(turns, ()), ("scale", _CLI_SWS_FLAGS),
               ("format", f"pix_fmts={cli_png_format(pixel_format)}")]
    for name, arguments in filters:
        node = graph.add(name, arguments)
        last.link_to(node)
        last = node
    last.link_to(graph.add("buffersink"))
    graph.configure()
    return graph


def _neutral_chroma(pixel_format: str) -> int | None:
    """The chroma sample of grey in a planar little-endian YUV format without alpha (None for any other)."""
    source = av.VideoFormat(pixel_format)
    if source.is_rgb or source.is_big_endian or len(source.components) != 3 or not pixel_format.startswith("yuv"):
        return None
    return 1 << (source.components[1].bits - 1)


_PROBE_ROWS = 16


@functools.lru_cache(maxsize=16)
def _luma_table(pixel_format: str, width: int, height: int, color_range: int, colorspace: int) -> np.ndarray | None:
    """luma sample -> the value of all three channels of the CLI's PNG, for frames with neutral chroma.

    Measured on one probe frame of the same width, format, range and matrix, whose pixel i holds level
    7 i mod 2^bits (7 is odd: any 2^bits consecutive pixels hold every level once), so every level is seen
    at two positions at least; the table is read from the first 2^bits pixels, and every later pixel must
    repeat them (all three channels the value of its level), else None; None too for frames too small for
    the probe (they are cheap to convert in full). The probe has the frame's height up to `_PROBE_ROWS`
    rows (more if the levels need them): its first, middle and last rows, and any pattern over up to 8
    rows (swscale's dither matrices), each hold many levels, and a 1080p probe costs 4-10 ms instead of
    ~50 (a full-size frame's first conversion pays for its page faults). Cached: a dataset's videos
    share a few formats.
    """
    source = av.VideoFormat(pixel_format)
    bits = source.components[0].bits
    levels, dtype = 2**bits, np.dtype(np.uint8 if bits <= 8 else "<u2")
    if width * height < 2 * levels:
        return None
    if height > _PROBE_ROWS:
        height = max(_PROBE_ROWS, -(-2 * levels // width))
        height += height % 2  # whole rows of chroma in every subsampled format
    probe = av.VideoFrame(width, height, pixel_format)
    probe.color_range, probe.colorspace = color_range, colorspace
    period = (np.arange(levels) * 7 % levels).astype(dtype)  # every level once
    _plane_array(probe.planes[0], dtype)[...] = np.resize(period, (height, width))  # repeated over the frame
    for plane in probe.planes[1:]:
        _plane_array(plane, dtype)[...] = _neutral_chroma(pixel_format)
    graph = _cli_graph(width, height, pixel_format, Fraction(1, 1000), 0)
    graph.push(probe)
    # The packed RGB samples, compared in whatever byte order they are (equality does not depend on it).
    rows = np.frombuffer(memoryview(graph.pull().planes[0]), dtype).reshape(height, -1)[:, : 3 * width]
    samples = np.ascontiguousarray(rows).reshape(-1)
    first = samples[: 3 * levels]  # the pixels of one period
    whole = samples.size // first.size * first.size
    if not (np.array_equal(first[0::3], first[1::3]) and np.array_equal(first[0::3], first[2::3])
            and (samples[:whole].reshape(-1, first.size) == first).all()
            and np.array_equal(samples[whole:], first[: samples.size - whole])):
        return None
    table = np.empty(levels, dtype.newbyteorder("="))
    table[period] = first[0::3].view(np.dtype(">u2") if bits > 8 else dtype)  # rgb48be: the PNG's big-endian samples
    table.flags.writeable = False  # shared by every video of this format through the cache
    return table


class _Recycled:
    """Output arrays of one shape, handed out again once nothing but this pool refers to them (nor to a view).

    A fresh 1080p frame costs more than the conversion that fills it (first-touch page faults: measured 1.9 ms
    against 0.6 ms for shifting a 10-bit luma plane into a 4 MB uint16 array already in use). Reuse is decided
    by reference count, so a caller that keeps frames (a list of them, a view, a chunk in flight) keeps valid
    frames, and one that drops each before taking the next converts into the same few arrays.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, keep: int = 4):
        self.shape, self.dtype, self.keep = shape, dtype, keep
        self.arrays: list[np.ndarray] = [np.empty(0)]
        # What getrefcount reports for an array only the pool holds, read exactly as `take` reads it: the count
        # depends on the interpreter (3.14 borrows some references), so it is measured, not assumed.
        self.free_count = sys.getrefcount(self.arrays[0])
        self.arrays.clear()

    def take(self) -> np.ndarray:
        """An array that nobody else refers to (its old values are garbage)."""
        for index in range(len(self.arrays)):
            if sys.getrefcount(self.arrays[index]) == self.free_count:
                return self.arrays[index]
        array = np.empty(self.shape, self.dtype)
        if len(self.arrays) < self.keep:
            self.arrays.append(array)
        return array


@dataclasses.dataclass(frozen=True)
class GreyFrame:
    """A grey frame left where the decoder put it: every channel of the CLI's PNG is `samples << shift`.

    A 10-bit map's 16-bit PNG holds its luma shifted left by 6; scoring reads the luma in place and applies
    the shift in its arithmetic (`salax.metrics.aim_frame_scores(truth_shift=)`), which saves a copy of every
    1080p frame. `np.asarray` gives the PNG's array [H, W, 1] (a copy) for any other use.
    """

    samples: np.ndarray  # [H, W, 1] uint8 or uint16, a view of the decoded picture (its rows may be padded)
    shift: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.samples.shape

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = np.left_shift(self.samples, self.shift)
        return array if dtype is None else array.astype(dtype, copy=False)


class _CliConversion:
    """One video's frames through the CLI's filters, or through a table where that provably gives the same.

    With `collapse`, a planar YUV frame whose chroma is exactly neutral (a grey map, like AViMoS's truth) has
    equal B, G and R that depend on luma alone; the table from luma to that value is measured by converting a
    probe frame of the same width, format and range through the same filters (`_luma_table`, used only if every
    probe pixel agrees with it). Such frames come out as [H, W, 1]: the conversion and two thirds of
    the data skipped, the same image for any per-pixel mean over channels. `in_place`: where the table is a
    left shift, as a GreyFrame of the decoded luma instead of a copy.
    """

    def __init__(self, first: av.VideoFrame, path: str, collapse: bool, in_place: bool = False):
        self.path, self.in_place = path, in_place
        self.key = (first.format.name, first.width, first.height, _quarter_turns(first.rotation))
        self.time_base = first.time_base or Fraction(1, 1000)
        self.graph: av.filter.Graph | None = None  # made for the first frame the table cannot convert
        self.neutral = _neutral_chroma(first.format.name) if collapse else None
        self.table = None if self.neutral is None else _luma_table(
            first.format.name, first.width, first.height, int(first.color_range), int(first.colorspace))
        self.shift = None  # when the table is a left shift (full-range 10-bit -> 16-bit: v * 64), shift instead
        if self.table is not None:
            levels = np.arange(len(self.table), dtype=self.table.dtype)
            self.shift = next((bits for bits in range(8) if np.array_equal(self.table, levels << bits)), None)
            upright = (first.width, first.height) if self.key[3] % 2 else (first.height, first.width)
            self.outputs = _Recycled((*upright, 1), self.table.dtype)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        key = (frame.format.name, frame.width, frame.height, _quarter_turns(frame.rotation))
        if key != self.key:
            raise MediaError(f"{self.path}: the frames change format, size or rotation mid-stream ({self.key} -> "
                             f"{key}); the ffmpeg CLI would re-configure its filters, this reader does not")
        if self.table is not None:
            dtype = np.dtype(self.table.dtype).newbyteorder("<")
            # min and max: two passes without the temporary of `plane == neutral`, half the time
            if all(int(chroma.min()) == int(chroma.max()) == self.neutral
                   for chroma in (_plane_array(plane, dtype) for plane in frame.planes[1:])):
                luma = _plane_array(frame.planes[0], dtype)
                upright = np.rot90(luma, key[3]) if key[3] else luma
                if self.in_place and self.shift is not None:
                    return GreyFrame(upright[..., None], self.shift)
                grey = self.outputs.take()
                if self.shift is not None:
                    np.left_shift(upright, self.shift, out=grey[..., 0])
                else:
                    grey[..., 0] = self.table[upright]
                return grey
        if self.graph is None:
            self.graph = _cli_graph(frame.width, frame.height, frame.format.name, self.time_base, key[3])
        self.graph.push(frame)
        return _opencv_order(self.graph.pull())


def _chunked_by_shape(arrays: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    """Like `_chunked`, but a change of shape (collapsed or not) starts a new chunk."""
    if chunk == 1:
        yield from (array[None] for array in arrays)  # a view: no copy
        return
    buffer: list[np.ndarray] = []
    for array in arrays:
        if buffer and (len(buffer) == chunk or array.shape != buffer[0].shape):
            yield np.stack(buffer)
            buffer = []
        buffer.append(array)
    if buffer:
        yield np.stack(buffer)


def iter_cli_frames(path: str | os.PathLike, *, chunk: int = 16, collapse_grey: bool = False,
                    threads: int = 0) -> Iterator[np.ndarray]:
    """Stream a video as chunks [n, H, W, C] (or [n, H, W] for gray) equal to `cv2.imread(IMREAD_UNCHANGED)` of the
    PNGs the ffmpeg CLI writes: BGR uint8 for 8-bit colour, BGR uint16 for deeper colour, one channel for gray.

    collapse_grey: frames whose three channels are equal (see `_CliConversion`) come as [n, H, W, 1] instead,
    several times faster; chunks never mix the two shapes. threads: decoder threads (0: FFmpeg's choice; 1
    costs about 10% less CPU per frame where other videos keep the cores busy). No frame touches the disk and
    only `chunk` frames are held at a time, so 1080p videos stream in bounded memory.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return _chunked_by_shape(_cli_frames(path, collapse_grey, False, threads), chunk)


def iter_cli_frames_in_place(path: str | os.PathLike, *, threads: int = 0) -> Iterator[np.ndarray | GreyFrame]:
    """One frame at a time, as `iter_cli_frames(chunk=1, collapse_grey=True)` gives it without the chunk axis,
    except grey frames whose PNG is a left shift of the luma (full-range 8- and 10-bit maps): those come as a
    GreyFrame of the decoded luma, valid for as long as the caller keeps it."""
    return _cli_frames(path, True, True, threads)


def _cli_frames(path: str | os.PathLike, collapse: bool, in_place: bool, threads: int) -> Iterator:
    convert = None
    for frame in iter_decoded(path, threads=threads):
        convert = convert or _CliConversion(frame, os.fspath(path), collapse, in_place)
        yield convert(frame)


def iter_decoded(path: str | os.PathLike, *, threads: int = 0) -> Iterator[av.VideoFrame]:
    """Every decoded frame of a video's first video stream, as the scorer reads them (threads: decoder threads, 0:
    FFmpeg's choice). The container is probed without decoding (FFmpeg's probe otherwise decodes the first frame
    and throws it away: ~20 ms for a 1080p 10-bit video), and decoding then starts as usual."""
    with _open_input(path, decode_first=False) as container:
        stream = _video_stream(container, path)
        stream.codec_context.skip_frame = "DEFAULT"
        if threads:
            stream.thread_count = threads
        yield from _decoded_frames(container, stream, path)


def read_png(path: str | os.PathLike) -> np.ndarray:
    """One PNG as `cv2.imread(path, cv2.IMREAD_UNCHANGED)` gives it (BGR(A) or gray, 8 or 16 bits), without OpenCV.

    PNG is lossless, so the decoded samples are the file's; only the channel order and byte order are OpenCV's.
    """
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        frame = next(container.decode(stream), None)
    if frame is None:
        raise MediaError(f"{os.fspath(path)}: holds no decodable image")
    if frame.format.name not in ("gray", "gray16be", "rgb24", "rgb48be", "rgba", "rgba64be"):
        raise MediaError(f"{os.fspath(path)}: PNG pixel format {frame.format.name} is not read (only gray, RGB and "
                         "RGBA PNGs of 8 or 16 bits, which is what the ffmpeg CLI writes for videos)")
    return _opencv_order(frame)


def count_frames(path: str | os.PathLike) -> int:
    """A video's frame count from its container index, or by demuxing (not decoding) where it has none.

    The index is read first with FFmpeg's stream probing cut to nothing (an mp4's index is in its header:
    0.4-0.5 ms instead of 3-3.7 ms for a 1080p truth); a container without one is opened again and probed fully.
    """
    with contextlib.suppress(MediaError):  # the full open below names what is wrong
        with _open_input(path, decode_first=False, probe=False) as container:
            if container.streams.video and container.streams.video[0].frames:
                return container.streams.video[0].frames
    with _open_input(path, decode_first=False) as container:
        stream = _video_stream(container, path)
        return stream.frames or _count_packets(container, stream)


__all__ += ["GreyFrame", "cli_png_format", "count_frames", "iter_cli_frames", "iter_cli_frames_in_place",
            "iter_decoded", "read_png"]
