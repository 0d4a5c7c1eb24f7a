"""Training on one process: exact resume after kill -9 or SIGTERM, stops, config checks, the whole job.

Runs on random in-memory batches that follow the batch contract, with a small UMT. Compiled
programs go to a persistent cache per test module, so processes after the first skip XLA compiles.
Also runnable as a script (`python tests/test_train.py train|preempt WORKDIR`): the runs that get
killed or signalled.
"""

import json
import pathlib
import signal
import subprocess
import sys
import time

from flax import nnx
import jax
import numpy as np
import pytest
from run_testdata import child_env, log_rows, logged_losses, random_batches, small_config, xla_cache

from salax import checkpoint, preemption, sharding, train, workdir
from salax.data import pipeline
from salax.evaluate.__main__ import main as evaluate_main
from salax.models.saliency import build_model
from salax.models.umt_weights import save_umt_checkpoint
from salax.workdir import UserError

compile_cache = pytest.fixture(scope="module")(xla_cache)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, compile_cache):
    """step -> loss of the small config trained in one go."""
    config = small_config()
    workdir = tmp_path_factory.mktemp("straight")
    train.train(config, workdir, random_batches(config))
    losses = logged_losses(workdir)
    assert sorted(losses) == list(range(1, 9))
    return losses


def _train_steps(workdir: pathlib.Path) -> list[int]:
    return [row["step"] for row in log_rows(workdir) if row["split"] == "train"]


def _child(mode: str, workdir: pathlib.Path, cache: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, mode, str(workdir)], env=child_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, child: subprocess.Popen, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert child.poll() is None, f"training child died: {child.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.2)


def test_kill_and_resume_gives_the_same_losses(tmp_path, compile_cache, straight):
    config = small_config()
    killed = tmp_path / "killed"
    child = _child("train", killed, compile_cache)
    _wait_for(lambda: (killed / "checkpoints" / "4" / "state").is_dir(), child, "checkpoint at step 4")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 6 not in logged_losses(killed)

    train.train(config, killed, random_batches(config))
    assert logged_losses(killed) == straight  # bitwise: same batches, same noise, same updates
    assert _train_steps(killed) == list(range(1, 9))  # the replayed step 5 has one row


def test_sigterm_saves_at_the_current_step_and_the_resume_matches(tmp_path, compile_cache, straight):
    config = small_config()
    stopped = tmp_path / "stopped"
    child = _child("preempt", stopped, compile_cache)
    _wait_for(lambda: (stopped / "log.jsonl").is_file() and len(_train_steps(stopped)) >= 2, child, "step 2")
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=240)
    assert child.returncode == preemption.EXIT_CODE, err[-3000:]
    step = json.loads(out.strip().splitlines()[-1])["preempted_at"]
    assert 2 <= step < 8
    assert checkpoint.RunCheckpoints(stopped / "checkpoints", keep=2).latest_step() == step
    assert _train_steps(stopped)[-1] == step  # logged up to the saved step, nothing after it

    train.train(config, stopped, random_batches(config))
    assert logged_losses(stopped) == straight
    assert _train_steps(stopped) == list(range(1, 9))


def test_a_failed_save_stops_the_run_with_one_message(tmp_path, compile_cache, monkeypatch):
    config = small_config(checkpoint_every=2)
    original = checkpoint.RunCheckpoints.save

    def save(self, step, *args, **kwargs):
        if step == 4:
            raise checkpoint.CheckpointSaveError(f"saving the checkpoint of step 4 to {self.directory} failed: "
                                                 "[Errno 28] No space left on device")
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(checkpoint.RunCheckpoints, "save", save)
    with pytest.raises(checkpoint.CheckpointSaveError, match="No space left"):
        train.train(config, tmp_path, random_batches(config))
    assert _train_steps(tmp_path) == [1, 2, 3, 4]  # no step after the failed save
    assert checkpoint.RunCheckpoints(tmp_path / "checkpoints", keep=2).latest_step() == 2


def test_the_final_checkpoint_is_saved_before_the_final_evaluation(tmp_path, compile_cache, monkeypatch):
    config = small_config(num_steps=2, checkpoint_every=10)

    def failing(self, params, step):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(train._Validation, "__call__", failing)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        train.train(config, tmp_path, random_batches(config), validation=object())
    assert checkpoint.RunCheckpoints(tmp_path / "checkpoints", keep=2).latest_step() == 2


def test_a_rerun_from_the_recorded_config_gives_the_same_run(tmp_path, compile_cache, straight):
    first = tmp_path / "first"
    train.train(small_config(num_steps=3), first, random_batches(small_config()))
    recorded = workdir.load_config(first / "config.json")
    assert recorded.to_dict() == small_config(num_steps=3).to_dict()  # tuples come back as tuples
    again = tmp_path / "again"
    train.train(recorded, again, random_batches(recorded))
    assert logged_losses(again) == logged_losses(first) == {step: straight[step] for step in (1, 2, 3)}
    assert json.loads((again / "config.json").read_text()) == json.loads((first / "config.json").read_text())


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

    # The CLI scores a run's checkpoint on another split (params only: no optimiser is built).
    assert evaluate_main(["--workdir", str(workdir), "--split", "public_test", "--step", "latest"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["step"] == 2 and scored["split"] == "public_test" and scored["videos"] >= 1
    # Expected mistakes: one line naming the problem, exit status 2, no traceback.
    for args, message in ((["--step", "999"], "no checkpoint of step 999 (it holds [2])"),
                          (["--step", "first"], "--step 'first'"),
                          (["--split", "tset"], "--split 'tset'")):
        assert evaluate_main(["--workdir", str(workdir), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_nan_loss_stops_and_names_the_last_good_checkpoint(tmp_path, compile_cache):
    config = small_config(checkpoint_every=2)
    with pytest.raises(FloatingPointError, match=r"at step 4; stopped.*last good checkpoint is step 2"):
        train.train(config, tmp_path, random_batches(config, first_nan=3))
    assert checkpoint.RunCheckpoints(tmp_path / "checkpoints", keep=2).latest_step() == 2


def test_half_written_checkpoint_is_ignored(tmp_path):
    manager = checkpoint.RunCheckpoints(tmp_path, keep=2)
    state = {"step": np.int32(3), "w": np.arange(4.0)}
    manager.save(3, state, random_batches(small_config()))
    manager.wait()
    # What kill -9 during a save leaves behind: a temporary directory that was never renamed.
    (tmp_path / "5.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)
    assert checkpoint.RunCheckpoints(tmp_path, keep=2).latest_step() == 3


def test_best_checkpoint_by_validation_cc_is_kept(tmp_path):
    manager = checkpoint.RunCheckpoints(tmp_path, keep=1)
    iterator = random_batches(small_config())
    for step, cc in ((1, 0.2), (2, 0.7), (3, 0.4), (4, None)):
        manager.save(step, {"w": np.full(2, step, np.float32)}, iterator, metrics={"cc": cc} if cc else None)
        manager.wait()
    assert manager.best_step() == 2
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [2, 4]


@pytest.mark.parametrize("fields, message", [
    ({"num_steps": -5}, "num_steps=-5 must be a positive"),
    ({"checkpoint_every": 0}, "checkpoint_every=0 must be a positive"),
    ({"eval_every": 0, "log_every": 0}, "log_every=0 must be a positive.*eval_every=0"),
    ({"data.batch_size": 0}, "data.batch_size=0 must be a positive multiple"),
    ({"data.eval_batch_size": -8}, "data.eval_batch_size=-8"),
    ({"keep_checkpoints": 0}, "keep_checkpoints=0"),
    ({"mesh.data": 3}, "config mesh: .*needs 3 devices"),
])
def test_bad_config_values_are_refused_before_anything_is_written(tmp_path, fields, message):
    with pytest.raises(UserError, match=message):
        train.train(small_config(**fields), tmp_path / "run", random_batches(small_config()))
    assert not (tmp_path / "run").exists()


def test_unbuilt_dataset_names_the_build_command(tmp_path):
    config = small_config(**{"data.data_dir": str(tmp_path / "nowhere"), "data.manual_dir": "/data/avimos"})
    with pytest.raises(UserError, match="python -m salax.data.build_avimos --manual_dir /data/avimos "
                                                 f"--data_dir {tmp_path / 'nowhere'} --config s224"):
        train.train_batches(config)


def test_init_from_starts_the_encoder_from_a_converted_umt_checkpoint(tmp_path):
    config = small_config()
    encoder = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0))).encoder
    rng = np.random.default_rng(0)
    weights = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                           nnx.to_pure_dict(nnx.state(encoder, nnx.Param)))
    blocks = [weights["blocks"][i] for i in range(encoder.config.depth)]
    canonical = {"patch_embed": weights["patch_embed"], "blocks": jax.tree.map(lambda *a: np.stack(a), *blocks)}
    save_umt_checkpoint(canonical, encoder.config, tmp_path / "umt")
    config.init_from = str(tmp_path / "umt")
    state = train.TrainSetup.create(config, sharding.make_mesh(config.mesh)).init_state()
    loaded = state["params"]["encoder"]
    np.testing.assert_array_equal(loaded["blocks"][1]["mlp"]["fc1"]["kernel"], blocks[1]["mlp"]["fc1"]["kernel"])
    np.testing.assert_array_equal(loaded["patch_embed"]["kernel"], weights["patch_embed"]["kernel"])


if __name__ == "__main__":
    _config = small_config()
    if sys.argv[1] == "train":  # the run that gets killed: it never gets batch 5
        train.train(_config, pathlib.Path(sys.argv[2]), random_batches(_config, stall_at=5))
    elif sys.argv[1] == "preempt":  # the run that gets a SIGTERM: slow batches
        try:
            train.train(_config, pathlib.Path(sys.argv[2]), random_batches(_config, delay=0.5))
        except train.Preempted as stopped:
            print(json.dumps({"preempted_at": stopped.step}), flush=True)
            sys.exit(preemption.EXIT_CODE)
