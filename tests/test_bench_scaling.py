"""python -m salax.bench.scaling: per-device state bytes against a count of the model's own parameters,
activations and FLOPs that grow with the batch, the timed path, and clear flag errors.

The benchmark forces host devices when it starts, so it runs in subprocesses (JAX fixes its device
count at start)."""

import json
import os
import pathlib
import subprocess
import sys

from absl import app
from flax import nnx
import jax
import numpy as np
import pytest
from run_testdata import load_config

from salax import batch as batch_contract
from salax.bench import scaling
from salax.data import clips
from salax.models.saliency import build_model

ROOT = pathlib.Path(__file__).resolve().parents[1]

MIB = 2**20


def bench(tmp_path, *flags: str, devices: int = 4) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / f"rows-{len(list(tmp_path.iterdir()))}.jsonl"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "salax.bench.scaling", "--config=configs/umt.py:demo",
                           f"--out={out}", *flags], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return done, rows


def test_state_bytes_per_device_follow_the_mesh(tmp_path):
    done, rows = bench(tmp_path, "--devices=4", "--meshes=4x1x1,1x4x1,1x1x4", "--global_batch=8", "--nocompile")
    assert done.returncode == 0, done.stderr[-2000:]
    replicated, fsdp, tensor = rows
    # The oracle: the model's own parameter shapes, counted without any sharding code.
    config = load_config("demo")
    abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    total = sum(int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize
                for p in jax.tree.leaves(nnx.to_pure_dict(nnx.state(abstract, nnx.Param))))
    assert replicated["params_mib"] * MIB == pytest.approx(total)
    assert 2 * total <= replicated["opt_state_mib"] * MIB <= 2 * total + 4096  # Adam: mu and nu, plus counters
    for split in (fsdp, tensor):
        assert total / 4 <= split["params_mib"] * MIB < 0.9 * total
    shapes = batch_contract.train_shapes(
        8, clip_frames=config.model.num_frames, image_size=config.model.image_size,
        audio_samples=clips.default_audio_samples(config.model.num_frames, config.data.clip_stride, None),
        max_fixations=config.data.max_fixations)
    batch_bytes = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in shapes.values())
    assert replicated["batch_mib"] * MIB == pytest.approx(batch_bytes / 4)  # 4 batch shards
    assert tensor["batch_mib"] * MIB == pytest.approx(batch_bytes)  # no batch shards: every device holds it all
    assert "| 1x4x1 | 8 | 2 |" in done.stdout


@pytest.mark.slow
def test_activations_and_flops_grow_with_the_batch_and_steps_are_timed(tmp_path):
    done, rows = bench(tmp_path, "--devices=2", "--meshes=2x1x1", "--global_batch=2,4", "--time_steps=1", devices=2)
    assert done.returncode == 0, done.stderr[-2000:]
    small, large = rows
    assert large["activations_mib"] > small["activations_mib"] > 0
    assert large["gflop"] == pytest.approx(2 * small["gflop"], rel=0.15)  # twice the clips per device
    assert small["step_ms"] > 0 and "ms/step" in done.stdout


@pytest.mark.parametrize("text, message", [("2x1x1", "uses 2 devices, --devices is 4"),
                                           ("2x2", "is not DATAxFSDPxTENSOR"), ("4x1x0", "three positive sizes")])
def test_bad_meshes_are_named(text, message):
    with pytest.raises(app.UsageError, match=message):
        scaling.parse_mesh(text, 4)
    assert scaling.parse_mesh("1x2x2", 4) == {"data": 1, "fsdp": 2, "tensor": 2}


def test_more_devices_than_forced_are_refused(tmp_path):
    done, _ = bench(tmp_path, "--devices=64", "--nocompile")
    assert done.returncode != 0 and "--devices=64, but only 4 devices exist" in done.stderr
