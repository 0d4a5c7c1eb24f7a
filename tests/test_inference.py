"""Inference: a run's parameters restored without its optimiser, and the sharded predict function."""

import json

import jax
import numpy as np
import pytest
from run_testdata import random_batch, random_batches, small_config, xla_cache

from salax import inference, train
from salax.evaluate.__main__ import main as evaluate_main
from salax.workdir import UserError

compile_cache = pytest.fixture(scope="module")(xla_cache)


@pytest.fixture(scope="module")
def run(tmp_path_factory, compile_cache):
    """A two-step run with a checkpoint after each step."""
    workdir = tmp_path_factory.mktemp("run")
    config = small_config(num_steps=2, checkpoint_every=1)
    result = train.train(config, workdir, random_batches(config))
    return workdir, config, result


def test_restore_gives_the_trained_parameters_and_nothing_else(run):
    workdir, config, result = run
    restored = inference.restore(workdir, "latest")
    assert restored.step == 2 and restored.config.to_dict() == config.to_dict()
    trained = jax.tree.map(np.asarray, result.state["params"])
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored.params), trained)
    earlier = inference.restore(workdir, 1).params
    assert not np.array_equal(np.asarray(earlier["decoder"]["head"]["kernel"]),
                              np.asarray(restored.params["decoder"]["head"]["kernel"]))


def test_predict_gives_maps_in_the_unit_interval_as_the_trained_model_does(run):
    workdir, config, result = run
    restored = inference.restore(workdir, "latest")
    batch = random_batch(0, config)
    maps = restored.model.predict_fn()(restored.params, batch)
    h, w = config.model.image_size
    assert maps.shape == (config.data.batch_size, h, w) and maps.dtype == np.float32
    assert 0.0 <= maps.min() and maps.max() <= 1.0 and maps.std() > 0
    direct = result.setup.model.predict_fn()(result.state["params"], batch)
    np.testing.assert_array_equal(maps, direct)


def test_best_is_the_checkpoint_with_the_highest_validation_cc(run):
    workdir, _, _ = run
    (workdir / "eval").mkdir(exist_ok=True)
    for step, cc in ((1, 0.9), (2, 0.1)):
        (workdir / "eval" / f"step_{step}.json").write_text(json.dumps({"step": step, "model": {"cc": cc}}))
    try:
        assert inference.restore(workdir, "best").step == 1
    finally:
        for step in (1, 2):
            (workdir / "eval" / f"step_{step}.json").unlink()
    assert inference.restore(workdir, "best").step == 2  # no evaluation: the latest


@pytest.mark.parametrize("step, message", [(7, r"no checkpoint of step 7 \(it holds \[1, 2\]\)"),
                                           ("first", "give best, latest or a step number")])
def test_a_step_that_is_not_there_is_a_clear_error(run, step, message):
    with pytest.raises(UserError, match=message):
        inference.restore(run[0], step)


def test_a_run_without_checkpoints_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(small_config().to_dict()))
    with pytest.raises(UserError, match="holds no checkpoint"):
        inference.restore(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    with pytest.raises(UserError, match="holds no run"):
        inference.restore(tmp_path / "nothing")


def test_the_evaluate_cli_names_a_run_without_checkpoints_in_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(small_config().to_dict()))
    assert evaluate_main(["--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no checkpoint" in err and len(err.strip().splitlines()) == 1
    assert evaluate_main(["--workdir", str(tmp_path / "nothing")]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    with pytest.raises(SystemExit) as usage:  # a submission flag does not go with --workdir
        evaluate_main(["--workdir", str(tmp_path), "--mode", "public_test"])
    assert usage.value.code == 2 and "--mode" in capsys.readouterr().err
