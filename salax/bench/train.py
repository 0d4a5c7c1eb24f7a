"""Step time of the sharded train step (salax.train) per device count, against one device.

    python -m salax.bench.train                          # CPU: the demo model on 1, 2, 4, 8 host devices
    python -m salax.bench.train --config=configs/umt.py:b16 --config.data.batch_size=32 --devices=1,8 --mesh=fsdp

The same global batch (`data.batch_size` of the config) is split over the first N devices (strong
scaling), on a mesh of N along `data` or `fsdp`, through exactly the code training runs
(TrainSetup: sharded init, donated jitted step). On a CPU the devices are host devices forced by
XLA_FLAGS; they share the machine's cores, so this measures the sharding overhead there, not a
speed-up. Prints ms/step, clips/s and the ratio to one device, measured in the same run.
"""

import os
import time

from absl import flags
import jax
import ml_collections
import numpy as np

from salax import sharding, train
from salax.bench import flags as bench_flags
from salax.data import clips, pipeline

_FORCED = "--xla_force_host_platform_device_count"


def _batch(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    b, t, (h, w) = config.data.batch_size, config.model.num_frames, config.model.image_size
    return {
        "video": rng.normal(size=(b, t, h, w, 3)).astype(np.float32),
        "audio": rng.normal(size=(b, clips.default_audio_samples(t, config.data.clip_stride, None))).astype(np.float32),
        "has_audio": np.ones(b, bool),
        "saliency": rng.random((b, h, w), dtype=np.float32),
        "fixations": rng.integers(0, min(h, w), (b, config.data.max_fixations, 2)).astype(np.int32),
        "num_fixations": np.full(b, 32, np.int32),
    }


def step_time(config: ml_collections.ConfigDict, devices: list, axis: str, steps: int) -> float:
    """Seconds per train step on `devices` (a mesh of them along `axis`), after two warm-up steps."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.mesh = {"data": 1, "fsdp": 1, "tensor": 1, axis: len(devices)}
    setup = train.TrainSetup.create(config, sharding.make_mesh(config.mesh, devices))
    state, step = setup.init_state(), setup.jit_train_step()
    batch = pipeline.to_global_batch(_batch(config), setup.model.batch_sharding)
    for _ in range(2):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps


def _define(values: flags.FlagValues) -> None:
    flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Device counts to time.", flag_values=values)
    flags.DEFINE_enum("mesh", "data", ["data", "fsdp"], "Mesh axis the devices go on.", flag_values=values)
    flags.DEFINE_integer("steps", 10, "Timed steps per device count.", flag_values=values)


def main(argv: list[str] | None = None) -> None:
    prog = "python -m salax.bench.train"
    values = bench_flags.parse(prog, __doc__, argv, _define)
    config, available = values.config, jax.devices()
    batch = config.data.batch_size
    try:
        counts = [int(count) for count in values.devices]
    except ValueError:
        raise SystemExit(f"{prog}: error: --devices takes device counts, got {values.devices}") from None
    if max(counts) > len(available) or any(batch % count for count in counts):
        raise SystemExit(f"{prog}: error: --devices must be <= {len(available)} and divide data.batch_size {batch}")
    print(f"{available[0].platform}: {config.model.variant}, global batch {batch}, mesh along {values.mesh}")
    print("| devices | ms/step | clips/s | vs 1 device |\n|---|---|---|---|")
    baseline = None
    for count in counts:
        seconds = step_time(config, available[:count], values.mesh, values.steps)
        baseline = baseline or seconds
        print(f"| {count} | {seconds * 1e3:.1f} | {batch / seconds:.1f} | {baseline / seconds:.2f}x |", flush=True)


if __name__ == "__main__":
    # Eight CPU devices unless told otherwise: set before JAX starts its backend (at the first jax.devices()),
    # here rather than on import, so importing this module changes nothing. GPUs and TPUs ignore it.
    if _FORCED not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FORCED}=8".strip()
    main()
