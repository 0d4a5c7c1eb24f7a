"""Helpers for the tests of training runs: a small config, random batches, the run log, a compile cache."""

import importlib.util
import json
import os
import pathlib
import time

import grain
import jax
import ml_collections
import numpy as np

from salax.data import clips

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE_ENV = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")


def load_config(variant: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("umt_config", ROOT / "configs" / "umt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def small_config(**fields) -> ml_collections.ConfigDict:
    """The demo config shrunk to compile and run fast: 4 frames of 32x32, narrow decoder."""
    config = load_config("demo")
    config.model.update(num_frames=4, image_size=(32, 32), decoder_widths=(16, 16, 16, 16), audio_width=16)
    config.data.batch_size = 8
    config.optimizer.warmup_steps = 2
    config.update(num_steps=8, log_every=1, checkpoint_every=4, eval_every=1000, keep_checkpoints=2)
    config.update_from_flattened_dict(fields)
    return config


def random_batch(index: int, config: ml_collections.ConfigDict, *, process_count: int = 1) -> dict:
    """Batch `index` of a deterministic stream (this process's slice of the global batch)."""
    rng = np.random.default_rng(index)
    b = config.data.batch_size // process_count
    t, (h, w) = config.model.num_frames, config.model.image_size
    samples = clips.default_audio_samples(t, config.data.clip_stride, None)
    return {
        "video": rng.normal(size=(b, t, h, w, 3)).astype(np.float32),
        "audio": rng.normal(size=(b, samples)).astype(np.float32),
        "has_audio": rng.random(b) < 0.5,
        "saliency": rng.random((b, h, w), dtype=np.float32),
        "fixations": rng.integers(0, h, (b, config.data.max_fixations, 2)).astype(np.int32),
        "num_fixations": rng.integers(0, 7, b).astype(np.int32),
    }


def random_batches(config: ml_collections.ConfigDict, *, first_nan: int | None = None, offset: int = 0,
                   process_count: int = 1, stall_at: int | None = None, delay: float = 0.0) -> grain.DatasetIterator:
    """A checkpointable iterator of random batches; batches from `first_nan` on carry a NaN pixel,
    batch `stall_at` never comes (a run to kill), each batch takes `delay` seconds more."""
    def make(index: int) -> dict:
        if stall_at is not None and index >= stall_at:
            time.sleep(3600)
        time.sleep(delay)
        batch = random_batch(offset + index, config, process_count=process_count)
        if first_nan is not None and index >= first_nan:
            batch["video"][0, 0, 0, 0, 0] = np.nan
        return batch

    # grain reads ahead on 16 threads by default, which would hide the delay: one thread, one batch ahead.
    options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=1) if delay else None
    return iter(grain.MapDataset.range(10**6).map(make).to_iter_dataset(options))


def log_rows(workdir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]


def logged_losses(workdir: pathlib.Path) -> dict[int, float]:
    """step -> loss from log.jsonl (a step logged twice would keep the last)."""
    return {row["step"]: row["loss"] for row in log_rows(workdir) if row["split"] == "train"}


def xla_cache(tmp_path_factory):
    """A persistent XLA cache shared by the processes of one test module; off again afterwards.

    A module makes it its fixture with `compile_cache = pytest.fixture(scope="module")(xla_cache)`.
    """
    directory = str(tmp_path_factory.mktemp("jax_cache"))
    env = dict(zip(CACHE_ENV, (directory, "0", "0")))
    options = {"jax_compilation_cache_dir": directory, "jax_persistent_cache_min_compile_time_secs": 0,
               "jax_persistent_cache_min_entry_size_bytes": 0}
    previous = {name: getattr(jax.config, name) for name in options}
    for name, value in options.items():
        jax.config.update(name, value)
    yield env
    for name, value in previous.items():
        jax.config.update(name, value)


def child_env(cache_env: dict | None = None, **extra: str) -> dict:
    """The environment of a child Python process: this checkout importable, JAX on the CPU."""
    env = dict(os.environ, **(cache_env or {}), JAX_PLATFORMS="cpu", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")]))
    return env
