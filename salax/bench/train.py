"""Step time of the sharded train step (salax.train) per device count, against one device.

    python -m salax.bench.train                          # CPU: 1, 2, 4, 8 host devices
    python -m salax.bench.train --devices 1 8 --mesh fsdp --variant b16 --batch 32   # on a GPU/TPU host

The same global batch is split over the first N devices (strong scaling), on a mesh of N along
`data` or `fsdp`, through exactly the code training runs (Trainer: sharded init, donated jitted
step). On a CPU the devices are host devices forced by XLA_FLAGS; they share the machine's cores,
so this measures the sharding overhead there, not a speed-up. Prints ms/step, clips/s and the
ratio to one device, measured in the same run.
"""

import argparse
import os
import time

_FORCED = "--xla_force_host_platform_device_count"
if _FORCED not in os.environ.get("XLA_FLAGS", ""):  # must precede JAX's start; ignored by GPUs/TPUs
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FORCED}=8".strip()

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from salax import sharding, train  # noqa: E402
from salax.data import pipeline  # noqa: E402
from salax.models.saliency import model_config  # noqa: E402

AUDIO_SECONDS = 0.5


def _config(variant: str, batch: int) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.rng_impl = "rbg"
    config.init_from = ""
    config.model = model_config(variant)
    config.data = ml_collections.ConfigDict(dict(batch_size=batch))
    config.loss = ml_collections.ConfigDict(dict(kl=1.0, cc=0.5, nss=0.1))
    config.optimizer = ml_collections.ConfigDict(dict(peak_lr=1e-4, end_lr_fraction=0.01, warmup_steps=10,
                                                      weight_decay=0.05, layer_decay=0.75, clip_norm=1.0,
                                                      b1=0.9, b2=0.999))
    config.num_steps = 1000
    return config


def _batch(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    b, t, (h, w) = config.data.batch_size, config.model.num_frames, config.model.image_size
    return {
        "video": rng.normal(size=(b, t, h, w, 3)).astype(np.float32),
        "audio": rng.normal(size=(b, int(AUDIO_SECONDS * 16000))).astype(np.float32),
        "has_audio": np.ones(b, bool),
        "saliency": rng.random((b, h, w), dtype=np.float32),
        "fixations": rng.integers(0, min(h, w), (b, 32, 2)).astype(np.int32),
        "num_fixations": np.full(b, 32, np.int32),
    }


def step_time(config: ml_collections.ConfigDict, devices: list, axis: str, steps: int) -> float:
    """Seconds per train step on `devices` (a mesh of them along `axis`), after two warm-up steps."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.mesh = {"data": 1, "fsdp": 1, "tensor": 1, axis: len(devices)}
    config.logical_rules = sharding.DEFAULT_LOGICAL_RULES
    trainer = train.Trainer.create(config, sharding.make_mesh(config.mesh, devices))
    state, step = trainer.init_state(), trainer.jit_train_step()
    batch = pipeline.to_global_batch(_batch(config), trainer.batch_sharding)
    for _ in range(2):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m salax.bench.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tiny", choices=["tiny", "b16", "l16"], help="model (default tiny)")
    parser.add_argument("--batch", type=int, default=8, help="global batch, the same for every device count")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8], help="device counts to time")
    parser.add_argument("--mesh", default="data", choices=["data", "fsdp"], help="axis the devices go on")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per device count")
    args = parser.parse_args()
    available = jax.devices()
    if max(args.devices) > len(available) or args.batch % max(args.devices):
        parser.error(f"--devices must be <= {len(available)} and divide --batch {args.batch}")
    config = _config(args.variant, args.batch)
    print(f"{available[0].platform}: {args.variant}, global batch {args.batch}, mesh along {args.mesh}")
    print("| devices | ms/step | clips/s | vs 1 device |\n|---|---|---|---|")
    baseline = None
    for count in args.devices:
        seconds = step_time(config, available[:count], args.mesh, args.steps)
        baseline = baseline or seconds
        print(f"| {count} | {seconds * 1e3:.1f} | {args.batch / seconds:.1f} | {baseline / seconds:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
