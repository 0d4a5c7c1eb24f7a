"""Many devices and processes: 8 CPU devices match one; two processes train, stop together on a
signal and resume exactly, and evaluate each video once with the summary of one process; two
`python -m salax.main` processes run the whole job, stop on a signal and resume as an uninterrupted run.

JAX fixes its device count when it starts, so each case runs in fresh processes (this file is
also their script: `python tests/test_train_distributed.py eight_devices|process ...`).
"""

import json
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from run_testdata import ROOT, child_env, log_rows, logged_losses, random_batch, random_batches, small_config, xla_cache
from tensorboard_events import shown_scalars

from salax import checkpoint, demo, preemption, workdir
from salax.data import pipeline
from salax.evaluate.__main__ import main as evaluate_main

compile_cache = pytest.fixture(scope="module")(xla_cache)

STEPS = 3
PREEMPT_STEPS = 16
CLI_STEPS = 48  # a step takes about 0.1 s: enough of them that a signal lands before the end


def _run(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], env=child_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: int = 400) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def test_eight_devices_match_one_device(compile_cache):
    flags = "--xla_force_host_platform_device_count=8"
    out = _finish(_run(["eight_devices"], {**compile_cache, "XLA_FLAGS": flags}))
    result = json.loads(out.strip().splitlines()[-1])
    np.testing.assert_allclose(result["losses_8"], result["losses_1"], rtol=2e-5)
    # Adam divides by sqrt(v): on parameters whose gradients are tiny, float reordering across
    # shards moves an update by a fraction of the learning rate (1e-3), so allow a tenth of it.
    assert result["max_param_difference"] < 1e-4, result["max_param_difference"]
    # The rules of configs/umt.py: embed -> fsdp, mlp/heads -> tensor, batch -> (data, fsdp).
    assert result["fc1_spec"] == ["fsdp", "tensor"]
    assert result["fc1_shard"] == [32, 128]  # [64, 256] split two ways each
    assert result["qkv_spec"] == ["fsdp", None, "tensor", None]
    assert result["adam_mu_fc1_spec"] == ["fsdp", "tensor"]
    # Every decoder convolution kernel (3-D over time, 2-D over space): output channels over tensor and fsdp.
    convs = result["decoder_conv_specs"]
    assert len(convs) == 4 * 2 + 3 * 2 + 1  # per tap a time conv and a resample, two per fusion, the head
    assert all(spec[-1] == ["tensor", "fsdp"] and not any(spec[:-1]) for spec in convs.values()), convs
    assert result["time_conv_shard"] == [3, 3, 3, 16, 4]  # [3, 3, 3, 16, 16] split four ways


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two(mode: str, workdir: pathlib.Path, cache: dict, *extra: str) -> list[subprocess.Popen]:
    address = f"127.0.0.1:{_free_port()}"
    return [_run([mode, address, str(index), str(workdir), *extra], cache) for index in range(2)]


def _train_steps(workdir: pathlib.Path) -> list[int]:
    return [row["step"] for row in log_rows(workdir) if row["split"] == "train"]


def test_two_processes_train_and_write_one_checkpoint(tmp_path, compile_cache):
    for process in _two("process", tmp_path, compile_cache, "0", str(STEPS)):
        _finish(process)
    step = tmp_path / "checkpoints" / str(STEPS)
    assert (step / "state").is_dir()
    assert sorted(p.name for p in (step / "data").glob("process_*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    losses = logged_losses(tmp_path)
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(np.isfinite(list(losses.values())))


@pytest.mark.slow
def test_two_processes_stop_together_on_sigint_and_resume_exactly(tmp_path, compile_cache):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for process in _two("process", straight, compile_cache):
        _finish(process)
    step = straight / "checkpoints" / str(PREEMPT_STEPS)
    assert sorted(p.name for p in (step / "data").glob("process_*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    expected = logged_losses(straight)
    assert sorted(expected) == list(range(1, PREEMPT_STEPS + 1)) and all(np.isfinite(list(expected.values())))

    processes = _two("process", stopped, compile_cache, "0.5", str(PREEMPT_STEPS))  # slow batches
    deadline = time.monotonic() + 300
    while not ((stopped / "log.jsonl").is_file() and len(_train_steps(stopped)) >= 2):
        assert all(p.poll() is None for p in processes), processes[0].stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no step 2 within 300 s"
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGINT)  # one process is told; both must stop at the same step
    steps = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == preemption.EXIT_CODE, err[-3000:]
        steps.append(json.loads(out.strip().splitlines()[-1])["preempted_at"])
    assert steps[0] == steps[1] < PREEMPT_STEPS
    saved = stopped / "checkpoints" / str(steps[0])
    assert len(list((saved / "data").glob("process_*.json"))) == 2

    for process in _two("process", stopped, compile_cache):
        _finish(process)
    assert logged_losses(stopped) == expected  # bitwise, as the uninterrupted two-process run
    assert _train_steps(stopped) == list(range(1, PREEMPT_STEPS + 1))


@pytest.mark.slow
def test_two_process_evaluation_scores_each_video_once_and_equals_one_process(tmp_path, compile_cache, capsys):
    config = _eval_config(tmp_path)
    demo.prepare_synthetic_data(config)  # built once, read by every process
    capsys.readouterr()
    workdir = tmp_path / "run"
    for process in _two("validate", workdir, compile_cache, str(tmp_path)):
        _finish(process)
    validation = json.loads((workdir / "eval" / "step_2.json").read_text())
    names = pipeline.list_videos(config.data.data_dir, builder_config="s224", split="validation")
    scored = _scored(workdir, "validation")
    assert sorted(scored) == sorted(names) and len(set(scored)) == len(scored)  # each video by one process
    assert validation["videos"] == len(names) and validation["frames"] == sum(names.values())

    for process in _two("evaluate", workdir, compile_cache, str(tmp_path)):
        lines = _finish(process).splitlines()  # gloo prints its own lines too
        if "{" in lines:  # process 0 prints the summary
            two = json.loads("\n".join(lines[lines.index("{"):]))
    tests = pipeline.list_videos(config.data.data_dir, builder_config="s224", split="public_test")
    by_process = [set(names) for names in _scored_by(workdir, "public_test")]  # as_submitted scores a video again
    assert sorted(set.union(*by_process)) == sorted(tests) and not set.intersection(*by_process)

    # One process, the same checkpoint: the same summaries (the predictions are the same rows).
    for split, summary in (("validation", validation), ("public_test", two)):
        assert evaluate_main(["--workdir", str(workdir), "--step", "latest", "--split", split]) == 0
        one = json.loads(capsys.readouterr().out)
        assert (one["videos"], one["frames"], one["excluded_frames"]) == (
            summary["videos"], summary["frames"], summary["excluded_frames"])
        for part in ("model", "centre_prior", "as_submitted")[: 3 if split == "public_test" else 2]:
            for metric, value in one[part].items():
                np.testing.assert_allclose(summary[part][metric], value, rtol=1e-5, err_msg=f"{split} {metric}")


def _main_pair(config_file: pathlib.Path, run: pathlib.Path, cache: dict) -> list[subprocess.Popen]:
    """`python -m salax.main` as the two processes of a job on 127.0.0.1, as launch/ starts them."""
    address = f"127.0.0.1:{_free_port()}"
    return [subprocess.Popen([sys.executable, "-m", "salax.main", f"--config={config_file}", f"--workdir={run}",
                              "--distributed", f"--coordinator_address={address}", "--num_processes=2",
                              f"--process_id={index}"], cwd=ROOT, env=child_env(cache), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for index in range(2)]


@pytest.mark.slow
def test_two_process_cli_job_stops_on_sigint_and_resumes_as_the_uninterrupted_job(tmp_path, compile_cache):
    config = small_config(**{"data.manual_dir": str(tmp_path / "avimos"), "data.data_dir": str(tmp_path / "tfds"),
                             "data.synthetic_videos": 8, "data.eval_batch_size": 8, "num_steps": CLI_STEPS,
                             "checkpoint_every": CLI_STEPS, "write_predictions": False})
    config_file = tmp_path / "small.json"  # a config file, as a recorded run's config.json is one
    config_file.write_text(json.dumps(workdir.resolved(config)))
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for process in _main_pair(config_file, straight, compile_cache):  # process 0 builds the data first
        _finish(process, timeout=600)

    processes = _main_pair(config_file, stopped, compile_cache)
    deadline = time.monotonic() + 400
    while not ((stopped / "log.jsonl").is_file() and len(_train_steps(stopped)) >= 2):
        assert all(p.poll() is None for p in processes), processes[0].stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no step 2 within 400 s"
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGINT)  # one process is told; both save the same step and exit 75
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=400)
        assert process.returncode == preemption.EXIT_CODE, err[-3000:]
        outputs.append(out)
    said = re.search(r"stopped on SIG[A-Z]+ at step (\d+)", outputs[0])
    assert said, outputs[0][-2000:]
    step = int(said.group(1))
    assert 2 <= step < CLI_STEPS and _train_steps(stopped) == list(range(1, step + 1))
    assert checkpoint.RunCheckpoints(stopped / "checkpoints", create=False).all_steps() == [step]
    assert not (stopped / "eval").exists()

    resumed = [_finish(process, timeout=600) for process in _main_pair(config_file, stopped, compile_cache)]
    assert f"resuming from step {step}" in resumed[0]
    # One row per step, the final evaluation last; the same numbers as the job that ran in one go.
    rows = log_rows(stopped)
    assert [(row["step"], row["split"]) for row in rows] == [(s, "train") for s in range(1, CLI_STEPS + 1)] + [
        (CLI_STEPS, "eval")]
    assert logged_losses(stopped) == logged_losses(straight)
    assert json.loads((stopped / "eval" / "summary.json").read_text()) == json.loads(
        (straight / "eval" / "summary.json").read_text())
    final = [checkpoint.RunCheckpoints(run / "checkpoints", create=False).restore_params(CLI_STEPS)
             for run in (straight, stopped)]
    jax.tree.map(np.testing.assert_array_equal, *final)
    # TensorBoard shows each step once, the resumed run's values (purge_step hides what was replayed).
    shown = shown_scalars(stopped / "tensorboard", "train/loss")
    assert shown == [(s, float(np.float32(loss))) for s, loss in sorted(logged_losses(stopped).items())]


def _eval_config(root: pathlib.Path):
    return small_config(**{"data.manual_dir": str(root / "avimos"), "data.data_dir": str(root / "tfds"),
                           "data.synthetic_videos": 8, "data.eval_batch_size": 8, "num_steps": 2,
                           "checkpoint_every": 2, "eval_every": 2})


def _scored_by(workdir: pathlib.Path, split: str) -> list[list[str]]:
    """Per process, the videos it scored, from the record each kept (see _record_scoring)."""
    return [[line.split()[1] for line in path.read_text().splitlines() if line.split()[0] == split]
            for path in sorted(workdir.glob("scored_*.txt"))]


def _scored(workdir: pathlib.Path, split: str) -> list[str]:
    """The videos the processes scored, all together."""
    return [name for names in _scored_by(workdir, split) for name in names]


# ------------------------------------------------------------------------------ the processes


def _eight_devices() -> None:
    import jax
    from jax.sharding import PartitionSpec

    from salax import sharding, train
    from salax.data import pipeline

    config = small_config()
    results = {}
    for name, devices, axes in (("1", jax.devices()[:1], dict(data=1, fsdp=1, tensor=1)),
                                ("8", jax.devices(), dict(data=2, fsdp=2, tensor=2))):
        setup = train.TrainSetup.create(config, sharding.make_mesh(axes, devices))
        state, step, losses = setup.init_state(), setup.jit_train_step(), []
        for index in range(STEPS):
            batch = pipeline.to_global_batch(random_batch(index, config), setup.model.batch_sharding)
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        results[name] = (state, losses)
    (state_1, losses_1), (state_8, losses_8) = results["1"], results["8"]
    difference = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                              state_1["params"], state_8["params"])
    block = state_8["params"]["encoder"]["blocks"][0]
    spec = lambda array: list(array.sharding.spec) + [None] * (array.ndim - len(array.sharding.spec))  # noqa: E731
    mu = state_8["opt_state"][1].mu["encoder"]["blocks"][0]["mlp"]["fc1"]["kernel"]
    conv_kernels = {jax.tree_util.keystr(path): kernel for path, kernel in
                    jax.tree_util.tree_leaves_with_path(state_8["params"]["decoder"]) if kernel.ndim >= 4}
    time_conv = state_8["params"]["decoder"]["branches"][0]["time_convs"][0]["kernel"]
    print(json.dumps({
        "losses_1": losses_1, "losses_8": losses_8,
        "max_param_difference": max(jax.tree.leaves(difference)),
        "fc1_spec": spec(block["mlp"]["fc1"]["kernel"]),
        "fc1_shard": list(block["mlp"]["fc1"]["kernel"].addressable_shards[0].data.shape),
        "qkv_spec": spec(block["attn"]["qkv"]),
        "adam_mu_fc1_spec": spec(mu),
        "decoder_conv_specs": {name: spec(kernel) for name, kernel in conv_kernels.items()},
        "time_conv_shard": list(time_conv.addressable_shards[0].data.shape),
    }))
    assert isinstance(block["attn"]["qkv"].sharding.spec, PartitionSpec)


def _join(address: str, index: int) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=2, process_id=index)


def _process(address: str, index: int, workdir: str, delay: float, steps: int) -> None:
    _join(address, index)
    from salax import train

    config = small_config(num_steps=steps, checkpoint_every=steps)
    batches = random_batches(config, offset=1000 * index, process_count=2, delay=delay)
    try:
        train.train(config, pathlib.Path(workdir), batches)
    except train.Preempted as stopped:
        print(json.dumps({"preempted_at": stopped.step}), flush=True)
        sys.exit(preemption.EXIT_CODE)


def _record_scoring(workdir: str, index: int) -> list[str]:
    """Wrap the per-video scorer so each process writes down which videos it scored (under the split
    name held in the returned list)."""
    from salax.evaluate import videos

    score_video = videos.score_video
    record = pathlib.Path(workdir) / f"scored_{index}.txt"

    def recording(name, *args, **kwargs):
        with open(record, "a") as out:
            out.write(f"{split_name[0]} {name}\n")
        return score_video(name, *args, **kwargs)

    split_name = ["validation"]
    videos.score_video = recording
    return split_name


def _validate(address: str, index: int, workdir: str, root: str) -> None:
    _join(address, index)
    from salax import train
    from salax.evaluate import split

    _record_scoring(workdir, index)
    config = _eval_config(pathlib.Path(root))
    batches = random_batches(config, offset=1000 * index, process_count=2)
    train.train(config, pathlib.Path(workdir), batches, validation=split.EvalData.from_config(config))


def _evaluate(address: str, index: int, workdir: str) -> None:
    split_name = _record_scoring(workdir, index)
    split_name[0] = "public_test"
    code = evaluate_main(["--workdir", workdir, "--step", "latest", "--split", "public_test",
                          "--coordinator_address", address, "--num_processes", "2", "--process_id", str(index)])
    sys.exit(code)


if __name__ == "__main__":
    if sys.argv[1] == "eight_devices":
        _eight_devices()
    elif sys.argv[1] == "process":
        delay, steps = (float(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 6 else (0.0, PREEMPT_STEPS)
        _process(sys.argv[2], int(sys.argv[3]), sys.argv[4], delay, steps)
    elif sys.argv[1] == "validate":
        _validate(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif sys.argv[1] == "evaluate":
        _evaluate(sys.argv[2], int(sys.argv[3]), sys.argv[4])
