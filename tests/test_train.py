"""Training on one process: exact resume after kill -9, NaN stop, workdir guard, optimiser, config.

Runs on random in-memory batches that follow the batch contract, with a small UMT. Compiled
programs go to a persistent cache per test module, so processes after the first skip XLA compiles.
Also runnable as a script (`python tests/test_train.py train WORKDIR`): the run that gets killed.
"""

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import grain
import jax
import ml_collections
import numpy as np
import pytest

from salax import train
from salax.data import pipeline

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


AUDIO_SAMPLES = 2133  # 4 frames at 30 fps and 16 kHz, as the pipeline would cut


def random_batch(index: int, config: ml_collections.ConfigDict, *, process_count: int = 1) -> dict:
    """Batch `index` of a deterministic stream (this process's slice of the global batch)."""
    rng = np.random.default_rng(index)
    b = config.data.batch_size // process_count
    t, (h, w) = config.model.num_frames, config.model.image_size
    return {
        "video": rng.normal(size=(b, t, h, w, 3)).astype(np.float32),
        "audio": rng.normal(size=(b, AUDIO_SAMPLES)).astype(np.float32),
        "has_audio": rng.random(b) < 0.5,
        "saliency": rng.random((b, h, w), dtype=np.float32),
        "fixations": rng.integers(0, h, (b, config.data.max_fixations, 2)).astype(np.int32),
        "num_fixations": rng.integers(0, 7, b).astype(np.int32),
    }


def random_batches(config: ml_collections.ConfigDict, *, first_nan: int | None = None, offset: int = 0,
                   process_count: int = 1, stall_at: int | None = None) -> grain.DatasetIterator:
    """A checkpointable iterator of random batches; batches from `first_nan` on carry a NaN pixel,
    batch `stall_at` never comes (a run to kill)."""
    def make(index: int) -> dict:
        if stall_at is not None and index >= stall_at:
            time.sleep(3600)
        batch = random_batch(offset + index, config, process_count=process_count)
        if first_nan is not None and index >= first_nan:
            batch["video"][0, 0, 0, 0, 0] = np.nan
        return batch

    return iter(grain.MapDataset.range(10**6).map(make).to_iter_dataset())


def logged_losses(workdir: pathlib.Path) -> dict[int, float]:
    """step -> loss from log.jsonl; a step logged twice (before a kill and after resume) keeps the last."""
    rows = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if row["split"] == "train"}


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent XLA cache shared by the processes of one test module; off again afterwards."""
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


def _child_env(cache_env: dict) -> dict:
    env = dict(os.environ, **cache_env, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def test_kill_and_resume_gives_the_same_losses(tmp_path, compile_cache):
    config = small_config()
    straight = tmp_path / "straight"
    train.train(config, straight, random_batches(config))
    expected = logged_losses(straight)
    assert sorted(expected) == list(range(1, 9))

    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, __file__, "train", str(killed)], env=_child_env(compile_cache),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "4" / "state").is_dir():
        assert child.poll() is None, f"training child died: {child.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint at step 4 within 240 s"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 6 not in logged_losses(killed)

    train.train(config, killed, random_batches(config))
    assert logged_losses(killed) == expected  # bitwise: same batches, same noise, same updates


def test_the_whole_job_trains_evaluates_and_writes_predictions(tmp_path, compile_cache, capsys):
    config = small_config(**{"data.manual_dir": str(tmp_path / "avimos"), "data.data_dir": str(tmp_path / "tfds"),
                             "data.synthetic_videos": 8, "data.eval_batch_size": 8, "num_steps": 2,
                             "eval_every": 2, "checkpoint_every": 2})
    workdir = tmp_path / "run"
    summary = train.train_and_evaluate(config, workdir)
    assert json.loads((workdir / "eval" / "summary.json").read_text()) == summary
    assert summary["step"] == 2 and summary["videos"] >= 1 and summary["frames"] > 0
    assert set(summary["model"]) == set(summary["centre_prior"]) == {"auc_judd", "cc", "nss", "sim", "kld"}
    for name in pipeline.list_videos(config.data.data_dir, builder_config="s224", split="validation"):
        assert (workdir / "predictions" / f"{name}.mp4").is_file()
        assert (workdir / "predictions" / f"{name}_overlay.mp4").is_file()
    rows = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
    assert {"split": "eval", "step": 2}.items() <= rows[-1].items() and "centre_prior_cc" in rows[-1]
    assert list((workdir / "tensorboard").iterdir())
    assert str(workdir / "eval" / "summary.json") in capsys.readouterr().out

    from salax import evaluate  # the CLI that scores a run's checkpoint on another split
    evaluate._main(["--workdir", str(workdir), "--split", "public_test", "--step", "latest"])
    scored = json.loads(capsys.readouterr().out)
    assert scored["step"] == 2 and scored["split"] == "public_test" and scored["videos"] >= 1


def test_nan_loss_stops_and_names_the_last_good_checkpoint(tmp_path, compile_cache):
    config = small_config(checkpoint_every=2)
    with pytest.raises(FloatingPointError, match=r"at step 4; stopped.*last good checkpoint is step 2"):
        train.train(config, tmp_path, random_batches(config, first_nan=3))
    from salax.checkpoint import RunCheckpoints
    assert RunCheckpoints(tmp_path / "checkpoints", keep=2).latest_step() == 2


def test_half_written_checkpoint_is_ignored(tmp_path):
    from salax.checkpoint import RunCheckpoints

    manager = RunCheckpoints(tmp_path, keep=2)
    state = {"step": np.int32(3), "w": np.arange(4.0)}
    manager.save(3, state, random_batches(small_config()))
    manager.wait()
    # What kill -9 during a save leaves behind: a temporary directory that was never renamed.
    (tmp_path / "5.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)
    assert RunCheckpoints(tmp_path, keep=2).latest_step() == 3


def test_best_checkpoint_by_validation_cc_is_kept(tmp_path):
    from salax.checkpoint import RunCheckpoints

    manager = RunCheckpoints(tmp_path, keep=1)
    iterator = random_batches(small_config())
    for step, cc in ((1, 0.2), (2, 0.7), (3, 0.4), (4, None)):
        manager.save(step, {"w": np.full(2, step, np.float32)}, iterator, metrics={"cc": cc} if cc else None)
        manager.wait()
    assert manager.best_step() == 2
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [2, 4]


def test_workdir_of_another_config_is_refused(tmp_path):
    config = small_config()
    train.prepare_workdir(config, tmp_path, overwrite=False)
    assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == 8
    (tmp_path / "checkpoints").mkdir()
    other = small_config(**{"optimizer.peak_lr": 0.5})
    with pytest.raises(ValueError, match=r"another config \(optimizer.peak_lr: 0.001 -> 0.5\).*--overwrite"):
        train.prepare_workdir(other, tmp_path, overwrite=False)
    train.prepare_workdir(small_config(log_every=7), tmp_path, overwrite=False)  # resumable change
    assert (tmp_path / "checkpoints").is_dir()
    train.prepare_workdir(other, tmp_path, overwrite=True)
    assert not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / "config.json").read_text())["optimizer"]["peak_lr"] == 0.5


def test_unbuilt_dataset_names_the_build_command(tmp_path):
    config = small_config(**{"data.data_dir": str(tmp_path / "nowhere"), "data.manual_dir": "/data/avimos"})
    with pytest.raises(FileNotFoundError, match="python -m salax.data.build_avimos --manual_dir /data/avimos "
                                                 f"--data_dir {tmp_path / 'nowhere'} --config s224"):
        train.train_batches(config)


def test_init_from_starts_the_encoder_from_a_converted_umt_checkpoint(tmp_path):
    from flax import nnx

    from salax import sharding
    from salax.checkpoint import save_umt_checkpoint
    from salax.models.saliency import build_model

    config = small_config()
    encoder = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0))).encoder
    rng = np.random.default_rng(0)
    weights = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                           nnx.to_pure_dict(nnx.state(encoder, nnx.Param)))
    blocks = [weights["blocks"][i] for i in range(encoder.config.depth)]
    canonical = {"patch_embed": weights["patch_embed"], "blocks": jax.tree.map(lambda *a: np.stack(a), *blocks)}
    save_umt_checkpoint(canonical, encoder.config, tmp_path / "umt")
    config.init_from = str(tmp_path / "umt")
    state = train.Trainer.create(config, sharding.make_mesh(config.mesh)).init_state()
    loaded = state["params"]["encoder"]
    np.testing.assert_array_equal(loaded["blocks"][1]["mlp"]["fc1"]["kernel"], blocks[1]["mlp"]["fc1"]["kernel"])
    np.testing.assert_array_equal(loaded["patch_embed"]["kernel"], weights["patch_embed"]["kernel"])


def test_optimiser_decays_encoder_layers_and_only_weight_matrices():
    params = {
        "encoder": {"patch_embed": {"kernel": np.zeros((2, 3))},
                    "blocks": {0: {"mlp": {"kernel": np.zeros((3, 3)), "bias": np.zeros(3)}},
                               1: {"norm1": {"scale": np.zeros(3)}}}},
        "decoder": {"head": {"kernel": np.zeros((3, 1))}},
    }
    scales = train.layer_lr_scales(params, 0.5)
    assert scales["encoder"]["blocks"][1]["norm1"]["scale"] == 0.5  # last block: decay^1
    assert scales["encoder"]["blocks"][0]["mlp"]["kernel"] == 0.25
    assert scales["encoder"]["patch_embed"]["kernel"] == 0.125  # embeddings: decay^(depth + 1)
    assert scales["decoder"]["head"]["kernel"] == 1.0
    stacked = {"encoder": {"blocks": {"mlp": {"kernel": np.zeros((3, 4, 4))}}}}
    np.testing.assert_allclose(train.layer_lr_scales(stacked, 0.5)["encoder"]["blocks"]["mlp"]["kernel"].ravel(),
                               [0.125, 0.25, 0.5])
    mask = train.weight_decay_mask(params)
    assert mask["encoder"]["blocks"][0]["mlp"] == {"kernel": True, "bias": False}
    assert mask["encoder"]["blocks"][1]["norm1"]["scale"] is False


def test_config_is_locked_and_variants_differ():
    assert load_config("l16").model.variant == "l16"
    config = load_config("b16")
    with pytest.raises(AttributeError, match="peak_lr"):
        config.optimizer.peak_lrr = 1.0
    with pytest.raises(ValueError, match="choose b16, l16 or demo"):
        load_config("b32")


def test_main_reports_a_misspelt_field_with_the_valid_names(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "salax.main", "--config=configs/umt.py:demo", f"--workdir={tmp_path}",
         "--config.optimizer.peak_lrr=1"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode != 0
    assert "peak_lrr" in result.stderr and "peak_lr" in result.stderr.replace("peak_lrr", "")


if __name__ == "__main__" and sys.argv[1] == "train":
    _config = small_config()
    train.train(_config, pathlib.Path(sys.argv[2]), random_batches(_config, stall_at=5))
