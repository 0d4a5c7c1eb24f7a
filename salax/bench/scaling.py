"""Per-device memory and step time of the train step across mesh shapes (data x fsdp x tensor).

    python -m salax.bench.scaling --config=configs/umt.py:b16 --devices=8 --meshes=8x1x1,1x8x1,1x4x2
    python -m salax.bench.scaling --config=configs/umt.py:l16 --devices=32 --meshes=1x32x1,4x8x1 --global_batch=32,64
    python -m salax.bench.scaling --config=configs/umt.py:demo --devices=8 --time_steps=5    # step time too
    python -m salax.bench.scaling --config=configs/umt.py:l16 --tpu=v5p-64 --meshes=1x32x1   # TPU compiler, no TPU

What it measures, per mesh and batch: the very step training runs (salax.train.TrainSetup: its
parameter and optimiser shardings, its donated jitted step, the config's model and rules), lowered
and compiled for the mesh on forced CPU host devices, never run for the memory columns:
- params, optimiser state, batch: bytes of one device's shards, from the shardings (exact on any
  backend);
- activations: the compiled step's temporary buffers (XLA's memory analysis, `temp_size_in_bytes`).
  It comes from the CPU compiler's buffer assignment; TPU and GPU compilers fuse and schedule
  differently, so read it as an estimate of what the step keeps alive, not a device measurement;
- GFLOP: XLA's cost analysis of one device's program (backend independent up to fusion).
With --tpu=SLICE (e.g. v5p-64; needs libtpu: `pip install "jax[tpu]"`, no TPU) the step is compiled
ahead of time by the TPU compiler for that slice's topology on this CPU machine instead: the
activation column is then the TPU compiler's own buffer assignment, and the table adds its
roofline time (`optimal_seconds` of XLA's TPU cost analysis: a lower bound, not a measurement).
With --time_steps N the state is also initialised and N steps are timed after a warm-up (ms/step
and the ratio to the first mesh, in the same run). On a CPU the forced devices share the machine's
cores: that measures the cost of a layout's communication and partitioning there, not a speed-up,
and full-size B/16 or L/16 steps take minutes each on a small CPU, so time small configs only.

The batch is split over data x fsdp shards (the tensor axis splits a clip's work, not the batch),
so at one global batch a mesh with a tensor axis holds more clips per device. Rows go to stdout as
a markdown table and, with --out, as JSON lines.
"""

import json
import os
import sys
import time

from absl import app, flags, logging
from flax import nnx
import jax
from jax.experimental import topologies
import ml_collections
from ml_collections import config_flags
import numpy as np

from salax import batch as batch_contract
from salax import sharding, train
from salax.data import clips, pipeline

MIB = 2**20
FORCED_DEVICES = "--xla_force_host_platform_device_count"
# Slice name -> (topology, chips per host) of slices whose chips are each one JAX device (megacore).
TPU_SLICES = {"v5p-8": ("v5p:2x2x1", (2, 2, 1)), "v5p-16": ("v5p:2x2x2", (2, 2, 1)),
              "v5p-32": ("v5p:2x2x4", (2, 2, 1)), "v5p-64": ("v5p:2x4x4", (2, 2, 1)),
              "v5p-128": ("v5p:4x4x4", (2, 2, 1)), "v4-32": ("v4:2x2x4", (2, 2, 1))}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file with a variant after ':', as for salax.main "
                                "(e.g. configs/umt.py:b16); --config.FIELD=VALUE overrides work too.")
flags.DEFINE_integer("devices", 8, "Devices the meshes span (the first N of the forced host devices).")
flags.DEFINE_list("meshes", ["8x1x1", "1x8x1", "2x4x1", "1x4x2", "4x1x2"],
                  "Mesh shapes DATAxFSDPxTENSOR, each multiplying to --devices.")
flags.DEFINE_list("global_batch", ["8"], "Global batch sizes (clips per step over all devices); each must be a "
                  "multiple of every mesh's data x fsdp batch shards.")
flags.DEFINE_integer("time_steps", 0, "Also time this many steps per mesh (0: memory only).")
flags.DEFINE_bool("compile", True, "Compile the step for the activation and GFLOP columns; --nocompile gives the "
                  "exact state and batch bytes of big meshes in seconds.")
flags.DEFINE_string("out", None, "Append one JSON line per row to this file.")
flags.DEFINE_string("tpu", None, "Compile for this TPU slice's topology instead of the CPU (AOT, no TPU needed; "
                    f"needs libtpu): one of {', '.join(sorted(TPU_SLICES))}.")
flags.mark_flags_as_required(["config"])


def parse_mesh(text: str, devices: int) -> dict[str, int]:
    """'2x4x1' -> {'data': 2, 'fsdp': 4, 'tensor': 1}, checked against the device count."""
    try:
        sizes = [int(part) for part in text.lower().split("x")]
    except ValueError:
        sizes = []
    if len(sizes) != 3 or min(sizes) < 1:
        raise app.UsageError(f"--meshes: {text!r} is not DATAxFSDPxTENSOR (three positive sizes, e.g. 2x4x1)")
    if np.prod(sizes) != devices:
        raise app.UsageError(f"--meshes: {text} uses {np.prod(sizes)} devices, --devices is {devices}")
    return dict(zip(sharding.MESH_AXES, sizes))


def _bytes_per_device(tree, shardings) -> int:
    """Bytes of one device's shard of every leaf (the largest shard where a split is uneven)."""
    leaves = jax.tree.leaves(jax.tree.map(
        lambda leaf, s: int(np.prod(s.shard_shape(leaf.shape))) * np.dtype(leaf.dtype).itemsize, tree, shardings))
    return sum(leaves)


def _abstract_batch(config: ml_collections.ConfigDict, global_batch: int, batch_sharding) -> dict:
    shapes = batch_contract.train_shapes(
        global_batch, clip_frames=config.model.num_frames, image_size=tuple(config.model.image_size),
        audio_samples=clips.default_audio_samples(config.model.num_frames, config.data.clip_stride, None),
        max_fixations=config.data.max_fixations, target=config.model.target)
    return {key: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding) for key, (shape, dtype) in shapes.items()}


def _synthetic_batch(abstract: dict) -> dict:
    """Host arrays of the batch's shapes (values do not matter for timing)."""
    rng = np.random.default_rng(0)
    out = {}
    for key, spec in abstract.items():
        if spec.dtype == np.bool_:
            out[key] = np.ones(spec.shape, bool)
        elif np.issubdtype(spec.dtype, np.integer):
            out[key] = np.ones(spec.shape, spec.dtype)
        else:
            out[key] = rng.random(spec.shape, dtype=np.float32).astype(spec.dtype)
    return out


def tpu_devices(name: str) -> list:
    """The devices of a TPU slice's topology, for ahead-of-time compilation on a machine without TPUs."""
    topology, chips_per_host = TPU_SLICES[name]
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", name)  # quiets libtpu's probing for a real slice
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology, chip_config_name="megacore",
                                                 chips_per_host_bounds=chips_per_host, num_slices=1).devices)
    except Exception as error:
        raise app.UsageError(f"--tpu={name} needs the TPU compiler: pip install 'jax[tpu]' ({error})") from None


def _on(tree, mesh: jax.sharding.Mesh):
    """The same partitioning on another mesh of the same shape (CPU -> a TPU slice)."""
    return jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s.spec), tree)


def measure(config: ml_collections.ConfigDict, mesh_sizes: dict[str, int], global_batch: int,
            devices: list, time_steps: int = 0, compile_step: bool = True, target: list | None = None) -> dict:
    """One row: per-device memory (and step time) of the config's train step on this mesh.

    The setup (shapes, shardings, RNG streams) is built on `devices`; with `target` (a TPU
    topology's devices) the step is compiled for those instead, with the same partitioning.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    config.mesh = mesh_sizes
    mesh = sharding.make_mesh(config.mesh, devices)
    shards = mesh_sizes["data"] * mesh_sizes["fsdp"]
    if global_batch % shards:
        raise ValueError(f"global batch {global_batch} is not a multiple of the {shards} batch shards")
    config.data.batch_size = global_batch
    setup = train.TrainSetup.create(config, mesh)
    abstract_state = setup.abstract_state()
    batch_sharding = setup.model.batch_sharding
    abstract_batch = _abstract_batch(config, config.data.batch_size, batch_sharding)
    row = {
        "variant": config.model.variant, "frames": config.model.num_frames, "size": list(config.model.image_size),
        "remat": bool(config.model.remat), "dtype": config.model.dtype, "devices": len(devices),
        "mesh": "x".join(str(mesh_sizes[a]) for a in sharding.MESH_AXES), "global_batch": global_batch,
        "clips_per_shard": global_batch // shards,
        "params_mib": _bytes_per_device(abstract_state["params"], setup.state_sharding["params"]) / MIB,
        "opt_state_mib": _bytes_per_device(abstract_state["opt_state"], setup.state_sharding["opt_state"]) / MIB,
        "batch_mib": _bytes_per_device(abstract_batch, {k: batch_sharding for k in abstract_batch}) / MIB,
    }
    if compile_step:
        target_mesh = sharding.make_mesh(config.mesh, target) if target else mesh
        row.update(_compiled_memory(setup, target_mesh))
        row["compiled_for"] = target[0].device_kind if target else devices[0].platform
    if time_steps:
        state = setup.init_state()
        batch = pipeline.to_global_batch(_synthetic_batch(abstract_batch), batch_sharding)
        run = setup.jit_train_step()
        state, metrics = run(state, batch)  # warm-up (compiles the run path once)
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(time_steps):
            state, metrics = run(state, batch)
        jax.block_until_ready(metrics)
        row["step_ms"] = (time.perf_counter() - start) / time_steps * 1e3
    return row


def _compiled_memory(setup: "train.TrainSetup", mesh: jax.sharding.Mesh) -> dict:
    """XLA's memory and cost analysis of the donated, sharded train step on `mesh`, compiled and not run."""
    state_sharding, batch_sharding = _on(setup.state_sharding, mesh), _on(setup.model.batch_sharding, mesh)
    abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  setup.abstract_state(), state_sharding)
    abstract_batch = _abstract_batch(setup.config, setup.config.data.batch_size, batch_sharding)
    step = jax.jit(setup.train_step, in_shardings=(state_sharding, batch_sharding),
                   out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)
    start = time.perf_counter()
    with jax.set_mesh(mesh), nnx.logical_axis_rules(setup.model.rules):
        compiled = step.lower(abstract_state, abstract_batch).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    activations = memory.temp_size_in_bytes / MIB
    arguments = memory.argument_size_in_bytes / MIB
    row = {"activations_mib": activations, "arguments_mib": arguments, "total_mib": arguments + activations,
           "gflop": float(cost.get("flops", float("nan"))) / 1e9, "compile_s": seconds}
    if cost.get("optimal_seconds", -1) > 0:  # the TPU compiler's roofline estimate (negative: none)
        row["roofline_ms"] = float(cost["optimal_seconds"]) * 1e3
    return row


def _print_row(row: dict, baseline_ms: float | None) -> None:
    timed = ""
    if "step_ms" in row:
        ratio = baseline_ms / row["step_ms"] if baseline_ms else 1.0
        timed = f" {row['step_ms']:.0f} | {ratio:.2f}x |"
    compiled = "-- | -- | -- |"
    if "activations_mib" in row:
        compiled = f"{row['activations_mib'] / 1024:.2f} | {row['total_mib'] / 1024:.2f} | {row['gflop']:.0f} |"
    if "roofline_ms" in row:
        compiled += f" {row['roofline_ms']:.0f} |"
    print(f"| {row['mesh']} | {row['global_batch']} | {row['clips_per_shard']} | {row['params_mib']:.1f} | "
          f"{row['opt_state_mib']:.1f} | {row['batch_mib']:.1f} | {compiled}{timed}", flush=True)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if FORCED_DEVICES not in os.environ.get("XLA_FLAGS", ""):
        # 32 CPU devices (a v5p-64's chips) unless the caller chose; read when JAX first touches a
        # device, which is the next line (GPUs and TPUs ignore it).
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FORCED_DEVICES}=32".strip()
    if FLAGS.tpu:
        jax.config.update("jax_platforms", "cpu")  # run on the CPU, compile for the slice (before any device use)
    target = tpu_devices(FLAGS.tpu) if FLAGS.tpu else None
    devices = len(target) if target else FLAGS.devices
    available = jax.devices("cpu") if target else jax.devices()
    if devices > len(available):
        raise app.UsageError(f"--devices={devices}, but only {len(available)} devices exist "
                             f"(on a CPU, set XLA_FLAGS={FORCED_DEVICES}=N before starting)")
    meshes = [parse_mesh(text, devices) for text in FLAGS.meshes]
    try:
        batches = [int(n) for n in FLAGS.global_batch]
    except ValueError:
        raise app.UsageError(f"--global_batch takes whole numbers, got {FLAGS.global_batch}") from None
    config = FLAGS.config
    where = f"{FLAGS.tpu} ({target[0].device_kind}, compiled ahead of time)" if target else available[0].platform
    print(f"{where} x {devices}: {config.model.variant}, {config.model.num_frames}x"
          f"{config.model.image_size[0]}x{config.model.image_size[1]}, dtype {config.model.dtype}, "
          f"remat {config.model.remat}; memory per device (MiB, activations and total GiB)")
    header = ("| mesh DxFxT | global batch | clips/shard | params | opt state | batch | activations GiB | "
              "total GiB | GFLOP/dev |")
    if target:
        header += " roofline ms |"
    if FLAGS.time_steps:
        if target:
            raise app.UsageError("--time_steps runs the step: not with --tpu (compiled only)")
        header += " ms/step | vs first |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    baseline = None
    for n in batches:
        for mesh_sizes in meshes:
            try:
                row = measure(config, mesh_sizes, n, available[:devices], FLAGS.time_steps, FLAGS.compile, target)
            except Exception as error:  # a mesh the model cannot use (e.g. heads not divisible) is one row
                print(f"| {'x'.join(map(str, mesh_sizes.values()))} | {n} | failed: "
                      f"{str(error).splitlines()[0][:160]} |", flush=True)
                continue
            baseline = baseline or row.get("step_ms")
            _print_row(row, baseline)
            if FLAGS.out:
                with open(FLAGS.out, "a") as file:
                    file.write(json.dumps(row) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
