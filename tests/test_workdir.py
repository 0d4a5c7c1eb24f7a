"""A run's folder: the config guard, what the run records, and a log that keeps one whole row per step."""

import json

import pytest
from run_testdata import small_config
from tensorboard_events import raw_scalars, shown_scalars

from salax import workdir
from salax.workdir import UserError, Workdir


def test_workdir_of_another_config_is_refused(tmp_path):
    run = Workdir.at(tmp_path)
    workdir.prepare(small_config(), run, overwrite=False)
    assert json.loads((tmp_path / "config.json").read_text())["num_steps"] == 8
    (tmp_path / "checkpoints").mkdir()
    other = small_config(**{"optimizer.peak_lr": 0.5})
    with pytest.raises(UserError, match=r"another config \(optimizer.peak_lr: 0.001 -> 0.5\).*--overwrite"):
        workdir.prepare(other, run, overwrite=False)
    workdir.prepare(small_config(log_every=7), run, overwrite=False)  # resumable change
    assert (tmp_path / "checkpoints").is_dir()
    # Another layout resumes too (checkpoints restore into the new shardings), old rules included.
    old_rules = tuple(rule for rule in small_config().logical_rules if rule[0] != "channels_out")
    workdir.prepare(small_config(**{"mesh.data": 1, "mesh.fsdp": -1, "logical_rules": old_rules}), run,
                    overwrite=False)
    assert (tmp_path / "checkpoints").is_dir()
    assert json.loads((tmp_path / "config.json").read_text())["mesh"]["fsdp"] == -1
    workdir.prepare(other, run, overwrite=True)
    assert not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / "config.json").read_text())["optimizer"]["peak_lr"] == 0.5


def test_the_run_records_what_reruns_it(tmp_path):
    workdir.prepare(small_config(seed=7), Workdir.at(tmp_path), overwrite=False)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["seed"] == 7 and record["rng_impl"] == "rbg"
    assert record["device_count"] >= 1 and record["process_count"] == 1 and record["device_kind"]
    assert record["packages"]["jax"] and record["packages"]["flax"]
    assert isinstance(record["dirty"], bool) and len(record["commit"]) in (40, len("unknown"))
    assert (tmp_path / "git_commit.txt").read_text().split()[0] == record["commit"]


def test_a_missing_run_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="holds no run"):
        workdir.read_config(tmp_path)


def test_resume_keeps_whole_rows_up_to_the_restored_step(tmp_path):
    run = Workdir.at(tmp_path)
    rows = [{"step": step, "split": "train", "loss": float(step), "cc": 0.0} for step in (1, 2, 3, 4)]
    # A crash mid-write (disk full, kill) leaves a torn last row.
    run.log_file.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": 5, "spl')
    log = workdir.RunLog(run, start_step=2, num_steps=6)  # resumed from the checkpoint of step 2
    log.scalars(3, {"loss": 30.0, "cc": 0.0})
    log.close()
    kept = [json.loads(line) for line in run.log_file.read_text().splitlines()]
    assert [(row["step"], row["loss"]) for row in kept] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_tensorboard_shows_each_step_once_after_a_resume(tmp_path):
    run = Workdir.at(tmp_path)
    first = workdir.RunLog(run, start_step=0, num_steps=8)
    for step in range(1, 7):  # steps 5 and 6 were logged, then the run died after the checkpoint of step 4
        first.scalars(step, {"loss": float(step), "cc": 0.0})
    first.close()
    resumed = workdir.RunLog(run, start_step=4, num_steps=8)  # within the same second, on the same host
    for step in range(5, 9):
        resumed.scalars(step, {"loss": 10.0 * step, "cc": 0.0})
    resumed.close()
    written = raw_scalars(run.tensorboard, "train/loss")
    assert [step for step, _ in written] == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8]  # both runs' rows are in the files
    assert shown_scalars(run.tensorboard, "train/loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0),
                                                             (6, 60.0), (7, 70.0), (8, 80.0)]
