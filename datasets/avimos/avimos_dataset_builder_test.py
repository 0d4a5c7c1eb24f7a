"""TFDS-style test of the AViMoS builder over dummy data made by the synthetic generator."""

import pathlib

from avimos_dataset_builder import Builder
import numpy as np
import pytest
import tensorflow_datasets as tfds

from salax.data import avimos_builder, synthetic

HERE = pathlib.Path(__file__).parent
SPLITS = {"train": 3, "validation": 1, "public_test": 1, "private_test": 1}  # 6 videos: 4/1/1, 1 held out
CONFIG = avimos_builder.AvimosConfig(name="dummy", short_side=36, validation_videos=1)


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    root = tmp_path_factory.mktemp("avimos_dummy")
    synthetic.generate(root / "manual", num_videos=6, seed=1)
    builder = Builder(data_dir=str(root / "data"), config=CONFIG)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual")))
    return builder


def test_builder_is_registered_as_avimos():
    assert Builder.name == "avimos" and tfds.builder_cls("avimos") is Builder
    assert {c.name for c in Builder.BUILDER_CONFIGS} == {"s224", "s360", "s224_fps15"}


def test_splits_hold_the_expected_examples(builder):
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == SPLITS


def test_every_feature_decodes_without_tensorflow(builder):
    example = builder.as_data_source(split="train")[0]
    assert set(example) == set(builder.info.features.keys())
    frames = example["num_frames"]
    assert len(example["frames"]) == len(example["saliency"]) == len(example["fixation_counts"]) == frames
    assert example["fixations"].shape == example["fixations_native"].shape == (example["fixation_counts"].sum(), 2)
    image = avimos_builder.decode_jpeg(example["frames"][0])
    assert min(image.shape[:2]) == 36 and image.dtype == np.uint8
    assert avimos_builder.decode_map_png(example["saliency"][0]).shape == image.shape[:2]


def test_citation_file_matches_the_builder(builder):
    assert (HERE / "CITATIONS.bib").read_text().strip() == builder.info.citation.strip()
