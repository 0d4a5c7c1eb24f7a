"""salax.checkpoint: a run's orbax checkpoints (keep/best, read-only use, params-only restore, failed saves,
resharded resume on another device count, the data position across process counts).

JAX fixes its device count when it starts, so the resharding cases run in fresh processes (this file is
also their script: `python tests/test_checkpoint.py save|resume DIR [DEVICES]`).
"""

import json
import logging
import os
import pathlib
import re
import subprocess
import sys

from etils import epath
import grain
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import pytest

from salax.checkpoint import CheckpointSaveError, DataOrderRestartWarning, MissingCheckpointError, RunCheckpoints

ROOT = pathlib.Path(__file__).resolve().parents[1]


def batches():
    """A grain iterator with a position (what the training loop's batches are)."""
    return iter(grain.MapDataset.range(1000).to_iter_dataset())


def small_state(step: int = 3) -> dict:
    rng = np.random.default_rng(step)
    params = {"w": rng.normal(size=(16, 4)).astype(np.float32), "b": np.arange(4, dtype=np.float32)}
    return {"step": np.int32(step), "params": params,
            "opt_state": {"mu": jax.tree.map(np.zeros_like, params), "count": np.int32(step)}}


def test_saves_without_an_evaluation_raise_no_tracked_metric_warning(tmp_path, caplog):
    manager = RunCheckpoints(tmp_path, keep=2)
    with caplog.at_level(logging.WARNING):
        manager.save(1, small_state(1), batches())
        manager.save(2, small_state(2), batches(), metrics={"cc": 0.5})
        manager.wait()
    assert not [r for r in caplog.records if "tracked_metric" in r.getMessage()]
    assert manager.all_steps() == [1, 2]


def test_best_is_none_until_an_evaluated_save_then_kept_beside_the_last(tmp_path):
    manager = RunCheckpoints(tmp_path, keep=1)
    manager.save(1, small_state(1), batches())
    manager.wait()
    assert manager.best_step() is None
    for step, cc in ((2, 0.7), (3, None), (4, 0.4), (5, None)):
        manager.save(step, small_state(step), batches(), metrics={"cc": cc} if cc else None)
        manager.wait()
    assert manager.best_step() == 2
    assert manager.all_steps() == [2, 5]
    manager.close()


def test_read_only_use_creates_nothing_and_names_the_saved_steps(tmp_path):
    missing = tmp_path / "run" / "checkpoints"
    reader = RunCheckpoints(missing, create=False)
    assert reader.all_steps() == [] and reader.latest_step() is None
    with pytest.raises(MissingCheckpointError, match=r"no checkpoint at step 7 in .*checkpoints \(saved steps: none\)"):
        reader.restore_params(7)
    assert not (tmp_path / "run").exists()
    writer = RunCheckpoints(missing, keep=3)
    for step in (2, 4):
        writer.save(step, small_state(step), batches())
    writer.close()
    with pytest.raises(MissingCheckpointError, match=r"saved steps: 2, 4\)"):
        RunCheckpoints(missing, create=False).restore_params(999)


def test_restore_params_reads_only_the_parameters(tmp_path):
    state = small_state(3)
    writer = RunCheckpoints(tmp_path, keep=1)
    writer.save(3, state, batches())
    writer.close()
    reader = RunCheckpoints(tmp_path, create=False)
    host = reader.restore_params(3)
    assert set(host) == {"w", "b"} and isinstance(host["w"], np.ndarray)
    np.testing.assert_array_equal(host["w"], state["params"]["w"])
    device = jax.devices()[0]
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                           sharding=jax.sharding.SingleDeviceSharding(device)),
                            state["params"])
    placed = reader.restore_params(3, abstract)
    assert isinstance(placed["b"], jax.Array) and placed["b"].sharding == abstract["b"].sharding
    np.testing.assert_array_equal(np.asarray(placed["b"]), state["params"]["b"])


def test_resume_keeps_the_data_position(tmp_path):
    data = batches()
    consumed = [next(data) for _ in range(5)]
    manager = RunCheckpoints(tmp_path, keep=1)
    manager.save(5, small_state(5), data)
    after_save = next(data)  # consumed after the save was requested: not part of the position
    manager.close()
    resumed = batches()
    state = RunCheckpoints(tmp_path, keep=1).restore(5, jax.tree.map(np.asarray, small_state(0)), resumed)
    assert int(state["step"]) == 5 and consumed == list(range(5))
    assert next(resumed) == after_save == 5


def test_another_process_count_restarts_the_data_order_and_says_so(tmp_path):
    manager = RunCheckpoints(tmp_path, keep=1)
    data = batches()
    for _ in range(5):
        next(data)
    manager.save(5, small_state(5), data)
    manager.close()
    # What two processes leave: one position file each (this process wrote the one of 1).
    positions = tmp_path / "5" / "data"
    text = (positions / "process_0-of-1.json").read_text()
    (positions / "process_0-of-1.json").unlink()
    for index in range(2):
        (positions / f"process_{index}-of-2.json").write_text(text)
    assert manager.saved_process_count(5) == 2
    fresh = batches()
    with pytest.warns(DataOrderRestartWarning, match="written by 2 processes, this run has 1.*restarts"):
        state = RunCheckpoints(tmp_path, keep=1).restore(5, jax.tree.map(np.asarray, small_state(0)), fresh)
    np.testing.assert_array_equal(state["params"]["w"], small_state(5)["params"]["w"])
    assert next(fresh) == 0


# ---------------------------------------------------------------------------------------- failed saves


def _failing_write_text(self, *args, **kwargs):
    raise OSError(28, "No space left on device", str(self))


def test_a_failed_save_raises_one_error_naming_the_step_folder_and_last_good_checkpoint(tmp_path, monkeypatch):
    manager = RunCheckpoints(tmp_path, keep=3)
    manager.save(1, small_state(1), batches())
    manager.wait()
    # grain writes each position file with write_text, in orbax's save: the writer hits a full disk.
    monkeypatch.setattr(epath.Path, "write_text", _failing_write_text)
    with pytest.raises(CheckpointSaveError) as failure:
        manager.save(2, small_state(2), batches())
        manager.wait()
    message = str(failure.value)
    assert "checkpoint of step 2" in message and str(tmp_path) in message
    assert "No space left on device" in message and f"last good checkpoint is step 1 in {tmp_path}" in message
    with pytest.raises(CheckpointSaveError):  # and it stays failed: no training on without saves
        manager.save(3, small_state(3), batches())
    manager.close()  # the failure was reported: closing does not raise it again
    monkeypatch.undo()
    assert RunCheckpoints(tmp_path, create=False).all_steps() == [1]


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 200 KiB tmpfs (root only; skipped elsewhere): a real full disk."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_stops_saving_with_one_clear_error(tiny_filesystem):
    manager = RunCheckpoints(tiny_filesystem / "checkpoints", keep=10)
    rng = np.random.default_rng(0)
    with pytest.raises(CheckpointSaveError, match="No space left on device") as failure:
        for step in range(1, 50):  # 64 KiB of incompressible floats each
            manager.save(step, {"w": rng.normal(size=(128, 128)).astype(np.float32)}, batches())
        manager.wait()
    manager.close()
    last_good = int(re.search(r"last good checkpoint is step (\d+) in ", str(failure.value)).group(1))
    assert RunCheckpoints(tiny_filesystem / "checkpoints", create=False).latest_step() == last_good >= 1


# --------------------------------------------------------------------- another device count (subprocesses)


def _sharded_state(mesh: jax.sharding.Mesh, values: dict | None = None) -> dict:
    """The state with w (and its moment) split over fsdp, the rest replicated; abstract if no values."""
    split, whole = NamedSharding(mesh, PartitionSpec("fsdp", None)), NamedSharding(mesh, PartitionSpec())
    shardings = {"step": whole, "params": {"w": split, "b": whole}, "opt_state": {"mu": {"w": split, "b": whole},
                                                                                   "count": whole}}
    template = small_state(3)
    if values is None:
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype, sharding=s),
                            template, shardings)
    return jax.tree.map(lambda a, s: jax.device_put(a, s), values, shardings)


@jax.jit
def _update(state: dict, element: jax.Array) -> dict:
    """A stand-in for the train step: every leaf moves, depending on the batch."""
    params = jax.tree.map(lambda p: p * 0.5 + element, state["params"])
    return {"step": state["step"] + 1, "params": params,
            "opt_state": {"mu": jax.tree.map(lambda m, p: m + p, state["opt_state"]["mu"], params),
                          "count": state["opt_state"]["count"] + 1}}


def _continue(state: dict, data) -> dict:
    for _ in range(2):
        state = _update(state, jnp.float32(next(data)))
    return {"w": np.asarray(state["params"]["w"]).tolist(), "mu_b": np.asarray(state["opt_state"]["mu"]["b"]).tolist(),
            "step": int(state["step"])}


def _script_save(directory: str) -> None:
    mesh = jax.make_mesh((8,), ("fsdp",))
    state, data = _sharded_state(mesh, small_state(3)), batches()
    for _ in range(3):
        next(data)
    manager = RunCheckpoints(directory, keep=1)
    manager.save(3, state, data)
    manager.close()
    shard = state["params"]["w"].addressable_shards[0].data.shape
    print(json.dumps({"continued": _continue(state, data), "shard": list(shard)}))


def _script_resume(directory: str) -> None:
    mesh = jax.make_mesh((len(jax.devices()),), ("fsdp",))
    data = batches()
    manager = RunCheckpoints(directory, keep=1)
    state = manager.restore(3, _sharded_state(mesh), data)
    params = manager.restore_params(3, _sharded_state(mesh)["params"])
    shard = state["params"]["w"].addressable_shards[0].data.shape
    print(json.dumps({"continued": _continue(state, data), "shard": list(shard), "devices": len(jax.devices()),
                      "params_shard": list(params["w"].addressable_shards[0].data.shape)}))


def _run(args: list[str], devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_checkpoint_of_8_devices_resumes_on_4_and_on_1(tmp_path):
    saved = _run(["save", str(tmp_path / "ck")], devices=8)
    assert saved["shard"] == [2, 4]  # w [16, 4] split eight ways when saved
    for devices in (4, 1):
        resumed = _run(["resume", str(tmp_path / "ck")], devices=devices)
        assert resumed["devices"] == devices
        assert resumed["shard"] == resumed["params_shard"] == [16 // devices, 4]
        # same process count: the data position is kept, so the continued run equals the uninterrupted one
        assert resumed["continued"] == saved["continued"]


if __name__ == "__main__":
    {"save": _script_save, "resume": _script_resume}[sys.argv[1]](*sys.argv[2:])
