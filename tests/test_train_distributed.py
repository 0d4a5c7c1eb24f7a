"""Training on many devices: 8 CPU devices match one device; two processes train through gloo.

JAX fixes its device count when it starts, so each case runs in fresh processes (this file is
also their script: `python tests/test_train_distributed.py eight_devices|process ...`).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_train import compile_cache, logged_losses, random_batch, random_batches, small_config  # noqa: E402,F401

STEPS = 3


def _run(args: list[str], env: dict) -> subprocess.Popen:
    env = dict(os.environ, **env, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, __file__, *args], env=env, stdout=subprocess.PIPE,
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_and_write_one_checkpoint(tmp_path, compile_cache):
    address = f"127.0.0.1:{_free_port()}"
    processes = [_run(["process", address, str(index), str(tmp_path)], compile_cache) for index in range(2)]
    for process in processes:
        _finish(process)
    step = tmp_path / "checkpoints" / str(STEPS)
    assert (step / "state").is_dir()
    assert sorted(p.name for p in (step / "data").glob("process_*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    losses = logged_losses(tmp_path)
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(np.isfinite(list(losses.values())))


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
        trainer = train.Trainer.create(config, sharding.make_mesh(axes, devices))
        state, step, losses = trainer.init_state(), trainer.jit_train_step(), []
        for index in range(STEPS):
            state, metrics = step(state, pipeline.to_global_batch(random_batch(index, config), trainer.batch_sharding))
            losses.append(float(metrics["loss"]))
        results[name] = (state, losses)
    (state_1, losses_1), (state_8, losses_8) = results["1"], results["8"]
    difference = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                              state_1["params"], state_8["params"])
    block = state_8["params"]["encoder"]["blocks"][0]
    spec = lambda array: list(array.sharding.spec) + [None] * (array.ndim - len(array.sharding.spec))  # noqa: E731
    mu = state_8["opt_state"][1].mu["encoder"]["blocks"][0]["mlp"]["fc1"]["kernel"]
    print(json.dumps({
        "losses_1": losses_1, "losses_8": losses_8,
        "max_param_difference": max(jax.tree.leaves(difference)),
        "fc1_spec": spec(block["mlp"]["fc1"]["kernel"]),
        "fc1_shard": list(block["mlp"]["fc1"]["kernel"].addressable_shards[0].data.shape),
        "qkv_spec": spec(block["attn"]["qkv"]),
        "adam_mu_fc1_spec": spec(mu),
    }))
    assert isinstance(block["attn"]["qkv"].sharding.spec, PartitionSpec)


def _process(address: str, index: int, workdir: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=2, process_id=index)
    from salax import train

    config = small_config(num_steps=STEPS, checkpoint_every=STEPS)
    batches = random_batches(config, offset=1000 * index, process_count=2)
    train.train(config, pathlib.Path(workdir), batches)


if __name__ == "__main__":
    if sys.argv[1] == "eight_devices":
        _eight_devices()
    elif sys.argv[1] == "process":
        _process(sys.argv[2], int(sys.argv[3]), sys.argv[4])
