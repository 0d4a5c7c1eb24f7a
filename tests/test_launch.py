"""launch/tpu_pod.sh and launch/gpu_slurm.sh: complete dry runs, the commands really run (through stand-in
gcloud / sbatch programs that record their arguments), deletion on failure, clear argument errors."""

import json
import os
import pathlib
import shlex
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU, SLURM = ROOT / "launch" / "tpu_pod.sh", ROOT / "launch" / "gpu_slurm.sh"
POD = ["--name", "pod1", "--zone", "us-east5-a", "--accelerator", "v4-32", "--workdir", "gs://bucket/runs/l16"]
FLAGS = ["--", "--config.mesh.fsdp=8", "--config.data.batch_size=64", "--config.note=it's a test"]


@pytest.fixture(autouse=True)
def no_real_cloud(tmp_path_factory, monkeypatch):
    """gcloud and sbatch stand-ins that fail first on PATH: no test can reach a real cloud or cluster."""
    bin_dir = tmp_path_factory.mktemp("guard")
    for name in ("gcloud", "sbatch"):
        (bin_dir / name).write_text(f"#!/bin/sh\necho 'a test ran the real {name}' >&2\nexit 99\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def launch(script: pathlib.Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def dry_run(*args: str) -> list[list[str]]:
    done = launch(TPU, "--dry-run", *args)  # before any `--`: after it, words go to salax.main
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines()]


def remote(command: list[str]) -> list[str]:
    """The words of the command a `gcloud ... ssh --command C` runs on the workers."""
    return shlex.split(command[command.index("--command") + 1])


def test_tpu_dry_run_prints_the_whole_sequence_in_order():
    commands = dry_run(*POD, "--delete", *FLAGS)
    create, pack, copy, install, train, logs, status, delete = commands
    assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and "pod1" in create
    assert create[create.index("--accelerator-type") + 1] == "v4-32"
    assert create[create.index("--version") + 1] == "tpu-ubuntu2204-base"
    assert "git ls-files" in pack[-1]
    assert copy[4] == "scp" and "--worker=all" in copy and copy[6] == "pod1:salax.tar.gz"
    assert install[4] == "ssh" and "--worker=all" in install
    assert "tar -xzf ~/salax.tar.gz -C ~/salax" in install[-1] and "pip install" in install[-1]
    assert "--worker=all" in train
    words = remote(train)
    main = words.index("salax.main")
    assert words[main - 2:main + 4] == ["~/salax-venv/bin/python", "-m", "salax.main", "--config=configs/umt.py:l16",
                                        "--workdir=gs://bucket/runs/l16", "--distributed"]
    assert words[main + 4:main + 7] == FLAGS[1:]  # the flags reach salax.main word for word
    assert "--worker=0" in logs and "tail" in remote(logs)
    assert "--worker=all" in status and "salax_train.rc" in status[-1]
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod1"] and "--quiet" in delete


def test_tpu_spot_queued_resource_waits_until_active_and_is_deleted_with_its_node():
    commands = dry_run(*POD[:4], "--accelerator", "v5p-128", "--workdir", "/mnt/runs/x", "--spot", "--queued",
                       "--delete")
    create, wait = commands[0], commands[1]
    assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
    assert create[create.index("--runtime-version") + 1] == "v2-alpha-tpuv5" and "--spot" in create
    assert create[create.index("--node-id") + 1] == "pod1"
    assert wait[0] == "until" and "ACTIVE" in wait and "describe" in " ".join(wait)
    assert commands[-1][:5] == ["gcloud", "compute", "tpus", "queued-resources", "delete"] and "--force" in commands[-1]


def test_tpu_without_delete_keeps_the_slice_and_a_repo_is_cloned_on_every_worker():
    commands = dry_run(*POD, "--repo", "https://github.com/example/salax", "--ref", "v1",
                       "--data", "gs://bucket/tensorflow_datasets", "--manual", "gs://bucket/avimos")
    assert not any("delete" in command for command in commands)
    assert not any("scp" in command for command in commands)
    install = next(c for c in commands if "--command" in c and "clone" in c[-1])
    assert "--worker=all" in install
    assert "git clone --depth 1 --branch v1 https://github.com/example/salax ~/salax" in install[-1]
    assert "gcloud storage rsync -r gs://bucket/tensorflow_datasets ~/tensorflow_datasets" in install[-1]
    assert "gcloud storage rsync -r gs://bucket/avimos ~/avimos" in install[-1]


@pytest.mark.parametrize("step, first", [("create", "create"), ("train", "ssh"), ("delete", "delete")])
def test_tpu_one_step_prints_only_that_step(step, first):
    commands = dry_run(step, *POD)
    assert len(commands) == 1 and commands[0][4] == first


@pytest.fixture
def fake_gcloud(tmp_path):
    """A gcloud on PATH that records each call; it fails on calls containing $GCLOUD_FAIL."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "gcloud"
    program.write_text("#!/usr/bin/env python3\nimport json, os, sys\n"
                       "open(os.environ['GCLOUD_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                       "fail = os.environ.get('GCLOUD_FAIL')\n"
                       "sys.exit(1 if fail and fail in ' '.join(sys.argv) else 0)\n")
    program.chmod(0o755)
    log = tmp_path / "gcloud.jsonl"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GCLOUD_LOG": str(log), "TMPDIR": str(tmp_path)}

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return env, calls


def test_tpu_sequence_runs_its_commands_and_deletes_the_slice_when_training_fails(fake_gcloud):
    env, calls = fake_gcloud
    args = [*POD, "--repo", "https://github.com/example/salax", "--delete"]
    done = launch(TPU, *args, env=env)
    assert done.returncode == 0, done.stderr
    assert [c[3] for c in calls()] == ["create", "ssh", "ssh", "ssh", "ssh", "delete"]
    assert [c[3] for c in calls()] == [c[4] for c in dry_run(*args) if c[0] == "gcloud"]  # the dry run is the run
    failed = launch(TPU, *args, env={**env, "GCLOUD_FAIL": "salax.main"})
    assert failed.returncode != 0
    assert calls()[-1][3] == "delete" and "deleting pod1" in failed.stderr
    assert [c[3] for c in calls()[6:]] == ["create", "ssh", "ssh", "delete"]  # stopped at training, then deleted


@pytest.mark.parametrize("args, message", [
    ([], "--name is required"),
    (["--name", "p"], "--zone is required"),
    (["--name", "p", "--zone", "z"], "create needs --accelerator"),
    (["--name", "p", "--zone", "z", "--accelerator", "v3-8"], "no default runtime version for accelerator v3-8"),
    (["--name", "p", "--zone", "z", "--accelerator", "v4-8"], "train needs --workdir"),
    (["train", "--name", "p", "--zone", "z"], "train needs --workdir"),
    (["--name", "--zone", "z"], "--name needs a value"),
    ([*POD, "--bogus"], "unknown argument: --bogus"),
    (["train", *POD, "logs"], "one step at a time: train and logs given"),
    (["delete", *POD, "--delete"], "--delete belongs to the whole sequence"),
    ([*POD, "--data", "/local/tfds"], "--data and --manual take gs:// paths"),
])
def test_tpu_argument_errors_are_one_clear_line_and_exit_2(args, message, fake_gcloud):
    env, calls = fake_gcloud
    done = launch(TPU, *args, env=env)
    assert done.returncode == 2
    assert message in done.stderr.splitlines()[0] and "--help" in done.stderr
    assert calls() == []  # nothing was started


def test_tpu_help_says_what_each_step_needs():
    done = launch(TPU, "--help")
    assert done.returncode == 0
    for needed in ("create    needs --accelerator", "train     needs --workdir", "--worker=all", "--dry-run",
                   "--delete", "--spot", "--queued", "logs", "delete"):
        assert needed in done.stdout


# --------------------------------------------------------------------------------------------- SLURM


def slurm_script(done: subprocess.CompletedProcess) -> tuple[list[str], list[str]]:
    lines = done.stdout.splitlines()
    assert lines[0] == "sbatch <<'EOF'" and lines[-1] == "EOF"
    return [line for line in lines if line.startswith("#SBATCH")], lines


def test_slurm_dry_run_prints_the_batch_script_with_one_process_per_node():
    done = launch(SLURM, "--dry-run", "--workdir", "/shared/runs/l16", "--nodes", "4", "--gpus-per-node", "8",
                  "--partition", "gpu", "--requeue", "--venv", "/shared/venv", *FLAGS)
    assert done.returncode == 0, done.stderr
    headers, lines = slurm_script(done)
    for header in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu", "--requeue",
                   "--signal=TERM@300"):
        assert f"#SBATCH {header}" in headers
    assert "source /shared/venv/bin/activate" in lines
    words = shlex.split(next(line for line in lines if line.startswith("srun")))
    assert words[:2] == ["srun", "--kill-on-bad-exit=1"]
    assert words[2:8] == ["python", "-m", "salax.main", "--config=configs/umt.py:l16", "--workdir=/shared/runs/l16",
                          "--distributed"]
    assert words[8:] == FLAGS[1:]


def test_slurm_submits_the_same_script_it_prints(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/usr/bin/env bash\ncat > {tmp_path / 'submitted'}\necho Submitted job 7\n")
    (bin_dir / "sbatch").chmod(0o755)
    args = ["--workdir", str(tmp_path / "run"), "--log-dir", str(tmp_path / "logs"), *FLAGS]
    done = launch(SLURM, *args, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": ""})
    assert done.returncode == 0, done.stderr
    assert "Submitted job 7" in done.stdout and (tmp_path / "logs").is_dir()
    printed = launch(SLURM, "--dry-run", *args, env={"VIRTUAL_ENV": ""}).stdout.splitlines()[1:-1]
    assert (tmp_path / "submitted").read_text().splitlines() == printed


@pytest.mark.parametrize("args, message", [
    ([], "--workdir is required"),
    (["--workdir", "w", "--nodes", "0"], "--nodes must be a positive whole number, got '0'"),
    (["--workdir", "w", "--gpus-per-node", "eight"], "--gpus-per-node must be a positive whole number"),
    (["--workdir", "w", "--time", "5h"], "--time takes SLURM's format"),
    (["--workdir"], "--workdir needs a value"),
    (["--workdir", "w", "--bogus"], "unknown argument: --bogus"),
])
def test_slurm_argument_errors_are_one_clear_line_and_exit_2(args, message):
    done = launch(SLURM, *args)
    assert done.returncode == 2 and message in done.stderr.splitlines()[0]


def test_slurm_help_says_why_one_process_per_node():
    done = launch(SLURM, "--help")
    assert done.returncode == 0 and "One process per node" in done.stdout and "input pipeline" in done.stdout
