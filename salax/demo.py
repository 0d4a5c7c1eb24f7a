"""The demo's data: a synthetic AViMoS generated and built where the config points (`data.synthetic_videos`).

Apart from the training job so that data generation stays a step before training, not inside it.
"""

import pathlib

import jax
from jax.experimental import multihost_utils
import ml_collections

from salax.data import build_avimos, pipeline, synthetic
from salax.data.avimos import SPLIT_FILE
from salax.workdir import say


def prepare_synthetic_data(config: ml_collections.ConfigDict) -> None:
    """Generate and build a synthetic AViMoS where the config points, unless already there."""
    manual_dir = pathlib.Path(config.data.manual_dir).expanduser()
    data_dir = pathlib.Path(config.data.data_dir).expanduser()
    if jax.process_index() == 0:
        if not (manual_dir / SPLIT_FILE).is_file():
            say(f"generating {config.data.synthetic_videos} synthetic AViMoS videos in {manual_dir}")
            synthetic.generate(manual_dir, config.data.synthetic_videos, config.seed)
        try:
            pipeline.list_videos(data_dir, builder_config=config.data.builder_config, split=config.data.train_split)
        except FileNotFoundError:
            say(f"building the synthetic dataset into {data_dir}")
            build_avimos.build(manual_dir, data_dir, config=config.data.builder_config)
    multihost_utils.sync_global_devices("synthetic data ready")
