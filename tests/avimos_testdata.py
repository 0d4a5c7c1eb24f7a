"""One small synthetic AViMoS, generated and built once per test session, shared by the data tests."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import tensorflow_datasets as tfds

from salax.data import avimos_builder, synthetic

NUM_VIDEOS = 8
# Short side 48 < the synthetic 72: storage resizes frames, maps and fixations like a FullHD build.
CONFIG = avimos_builder.AvimosConfig(name="test48", short_side=48, validation_videos=1, jpeg_quality=95)


@dataclasses.dataclass(frozen=True)
class BuiltAvimos:
    manual_dir: pathlib.Path
    data_dir: pathlib.Path
    config: avimos_builder.AvimosConfig
    info: dict  # VideoInfo.json as the generator returned it


def built_avimos(tmp_path_factory) -> BuiltAvimos:
    """Generate and build once in the session's base temp dir; later calls reuse it."""
    root = tmp_path_factory.getbasetemp() / "avimos_synthetic"
    manual_dir, data_dir = root / "manual", root / "data"
    if not (root / "done").exists():
        synthetic.generate(manual_dir, NUM_VIDEOS, seed=0)
        builder = avimos_builder.Avimos(data_dir=str(data_dir), config=CONFIG)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
        (root / "done").touch()
    info = json.loads((manual_dir / "VideoInfo.json").read_text())
    return BuiltAvimos(manual_dir, data_dir, CONFIG, info)
