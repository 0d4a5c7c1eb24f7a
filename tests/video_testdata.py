"""Small test videos of every kind a user may bring: sizes, rotation, bit depth, frame timing, audio layouts."""

from __future__ import annotations

from fractions import Fraction
import pathlib

import av
import numpy as np


def moving_scene(index: int, height: int, width: int) -> np.ndarray:
    """A textured frame with a bright disc that moves: something a model's maps can follow."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([96 + 40 * np.sin(cols / 7.0), 96 + 40 * np.cos(rows / 5.0),
                      np.full_like(rows, 60.0)], axis=-1)
    centre = (height * (0.3 + 0.4 * (index % 7) / 6), width * (0.2 + 0.6 * (index % 5) / 4))
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= (0.15 * min(height, width)) ** 2
    image[disc] = (250, 240, 40)
    return image.astype(np.uint8)


def write_video(
    path: pathlib.Path,
    *,
    width: int,
    height: int,
    frames: int,
    fps: float = 25.0,
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    frame_times: list[float] | None = None,
    audio_channels: int = 0,
    audio_rate: int = 48_000,
) -> pathlib.Path:
    """H.264 in mp4. `rotation`: display-matrix degrees; `frame_times` (seconds): variable frame rate;
    `audio_channels` > 0: an AAC track of a tone with that many channels (6 = 5.1)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if frame_times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        sound = None
        if audio_channels:
            layout = {1: "mono", 2: "stereo", 6: "5.1"}[audio_channels]
            sound = container.add_stream("aac", rate=audio_rate, layout=layout)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(moving_scene(index, height, width), format="rgb24")
            if frame_times is not None:
                frame.pts, frame.time_base = round(frame_times[index] * 1000), Fraction(1, 1000)
            else:
                frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            duration = frame_times[-1] + 0.1 if frame_times is not None else frames / fps
            count = int(duration * audio_rate)
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(count) / audio_rate).astype(np.float32)
            samples = np.ascontiguousarray(np.repeat(tone[None], audio_channels, axis=0))
            audio = av.AudioFrame.from_ndarray(samples, format="fltp", layout=sound.layout.name)
            audio.sample_rate, audio.pts = audio_rate, 0
            for packet in list(sound.encode(audio)) + list(sound.encode(None)):
                container.mux(packet)
    return path
