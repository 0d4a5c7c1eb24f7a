"""Read a TensorBoard log folder back as TensorBoard shows it, from the files alone.

An event file is a TFRecord stream: per record a little-endian uint64 length, the masked CRC-32C of
those 8 bytes, the payload (a serialised `Event` protobuf) and its masked CRC-32C. TensorBoard reads
a folder's event files in name order (the names start with the creation time) and, in files of
version `brain.Event:2`, a `SessionLog.START` event at step T purges every event already read whose
step is T or later: how a resumed run hides the steps it replays.
"""

import pathlib
import struct

from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c


def read_events(path: pathlib.Path) -> list[event_pb2.Event]:
    """Every event of one file, each record's two checksums checked."""
    data, events, offset = path.read_bytes(), [], 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        payload = data[offset + 12:offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
        assert header_crc == masked_crc32c(header) and payload_crc == masked_crc32c(payload), f"{path} at {offset}"
        event = event_pb2.Event()
        event.ParseFromString(payload)
        events.append(event)
        offset += 16 + length
    return events


def raw_scalars(directory: pathlib.Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every `tag` scalar written, purged or not, in reading order."""
    return [(event.step, value.simple_value) for path in sorted(directory.glob("events.out.tfevents.*"))
            for event in read_events(path) for value in event.summary.value if value.tag == tag]


def shown_scalars(directory: pathlib.Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of the `tag` scalars TensorBoard shows: purged steps left out."""
    shown: list[tuple[int, float]] = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        version = None
        for event in read_events(path):
            if event.HasField("file_version"):
                version = event.file_version
            restart = event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START
            if restart and version == "brain.Event:2":
                shown = [(step, value) for step, value in shown if step < event.step]
            shown += [(event.step, value.simple_value) for value in event.summary.value if value.tag == tag]
    return shown
