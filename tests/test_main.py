"""`python -m salax.main`: config mistakes are one line and exit 2, before anything compiles; a recorded
config.json is a config file."""

import json
import subprocess
import sys

import pytest
from run_testdata import ROOT, child_env


def _main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "salax.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env=child_env())


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("override, names", [
    ("--config.optimizer.peak_lrr=1", "config.optimizer has no field 'peak_lrr'; its fields: b1, b2, clip_norm"),
    ("--config.foo=1", "config has no field 'foo'; its fields: checkpoint_every, data, eval_every"),
])
def test_a_misspelt_field_names_the_valid_ones(tmp_path, override, names):
    line = _one_line_error(_main("--config=configs/umt.py:demo", f"--workdir={tmp_path / 'run'}", override))
    assert names in line
    assert not (tmp_path / "run").exists()


def test_bad_values_and_another_runs_workdir_stop_before_anything_is_written(tmp_path):
    line = _one_line_error(_main("--config=configs/umt.py:demo", f"--workdir={tmp_path / 'run'}",
                                 "--config.num_steps=-5", "--config.checkpoint_every=0"))
    assert "num_steps=-5 must be a positive" in line and "checkpoint_every=0" in line
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"seed": 5}))
    line = _one_line_error(_main("--config=configs/umt.py:demo", f"--workdir={tmp_path / 'run'}"))
    assert "holds a run of another config" in line and "--overwrite" in line
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]


def test_a_recorded_config_json_is_read_with_overrides(tmp_path):
    recorded = tmp_path / "old" / "config.json"
    recorded.parent.mkdir()
    recorded.write_text(json.dumps({"num_steps": 10, "checkpoint_every": 5, "log_every": 1, "eval_every": 5,
                                    "keep_checkpoints": 1, "mesh": {"data": -1}, "logical_rules": [["batch", "data"]],
                                    "data": {"batch_size": 1, "eval_batch_size": 1}}))
    line = _one_line_error(_main(f"--config={recorded}", f"--workdir={tmp_path / 'new'}", "--config.num_steps=-1"))
    assert "num_steps=-1 must be a positive" in line  # the JSON was loaded and the override applied
    line = _one_line_error(_main(f"--config={recorded}", f"--workdir={tmp_path / 'new'}", "--config.num_stepz=3"))
    assert "config has no field 'num_stepz'" in line
