"""Training configs for UMT saliency models on AViMoS.

Pick a variant after the colon and override any field by flag:

    python -m salax.main --config=configs/umt.py:b16 --workdir=runs/b16 --config.optimizer.peak_lr=3e-5

Variants: `b16` (UMT-B/16), `l16` (UMT-L/16, the challenge winners' encoder) and `demo` (a tiny
UMT with audio that trains on synthetic AViMoS-format data on a CPU in minutes).
The config is locked: a misspelt field fails and lists the valid names.
"""

import ml_collections

from salax.models.saliency import model_config
from salax.sharding import DEFAULT_LOGICAL_RULES


def get_config(variant: str = "b16") -> ml_collections.ConfigDict:
    """The full config of one run; `variant` is `b16`, `l16` or `demo`."""
    if variant not in ("b16", "l16", "demo"):
        raise ValueError(f"configs/umt.py: unknown variant {variant!r}; choose b16, l16 or demo")
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.seed = 0
    # PRNG of dropout/drop-path noise: "rbg" compiles and runs faster than "threefry2x32", whose
    # bits do not depend on the mesh (pick it to compare runs across device layouts bit for bit).
    config.rng_impl = "rbg"

    # Model: encoder size, taps, decoder widths, frames, input size, causal target, audio, dtypes.
    config.model = model_config("tiny" if variant == "demo" else variant)
    # A converted UMT checkpoint (salax.models.umt_weights) to start the encoder from; "" = random init.
    config.init_from = ""

    config.data = ml_collections.ConfigDict()
    config.data.manual_dir = "~/avimos"  # the unpacked AViMoS archives: evaluation scores their maps
    config.data.data_dir = "~/tensorflow_datasets"  # where `python -m salax.data.build_avimos` wrote it
    config.data.builder_config = "s224"  # storage size and frame rate of the build (native fps to score)
    config.data.train_split = "train"
    config.data.eval_split = "validation"  # carved out of AViMoS's train split by the builder
    config.data.synthetic_videos = 0  # > 0: generate and build a synthetic AViMoS there if absent
    config.data.clip_stride = 1  # frames between consecutive clip frames (1 = native frame rate)
    config.data.max_fixations = 128  # per frame in training batches (evaluation keeps all)
    config.data.flip = True  # random horizontal flips in training
    config.data.batch_size = 16  # global batch, over all processes
    config.data.eval_batch_size = 16
    config.data.eval_max_videos = 0  # 0 = every validation video
    config.data.num_workers = 0  # grain worker processes per host (0: threads of the main process)
    config.data.num_threads = 8  # clip-decoding threads per process

    config.loss = ml_collections.ConfigDict(dict(kl=1.0, cc=0.5, nss=0.1))

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.peak_lr = 1e-4
    config.optimizer.end_lr_fraction = 0.01  # cosine decays to peak_lr * this
    config.optimizer.warmup_steps = 1000
    config.optimizer.weight_decay = 0.05  # AdamW, not applied to biases, norms and tables
    config.optimizer.layer_decay = 0.75  # encoder block i trains at lr * decay^(depth - i)
    config.optimizer.clip_norm = 1.0
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999

    # Devices: sizes of the (data, fsdp, tensor) mesh; -1 takes the devices left.
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.logical_rules = DEFAULT_LOGICAL_RULES  # logical axis name -> mesh axes

    config.num_steps = 30_000
    config.log_every = 50
    config.eval_every = 2_000
    config.checkpoint_every = 1_000
    config.keep_checkpoints = 3  # the last N, plus the best by validation CC
    config.write_predictions = False  # predicted-map and overlay mp4s of the validation videos at the end

    if variant == "l16":
        config.data.batch_size = 8
        config.optimizer.peak_lr = 5e-5
        config.optimizer.layer_decay = 0.85
    if variant == "demo":
        _demo(config)
    config.lock()
    return config


def _demo(config: ml_collections.ConfigDict) -> None:
    """A tiny audio-visual UMT on synthetic data: minutes on two CPU cores."""
    config.data.manual_dir = "~/.cache/salax/demo/avimos"
    config.data.data_dir = "~/.cache/salax/demo/tensorflow_datasets"
    config.data.synthetic_videos = 24
    config.data.batch_size = 8
    config.data.eval_batch_size = 16
    config.data.num_threads = 2
    config.optimizer.peak_lr = 1e-3
    config.optimizer.warmup_steps = 50
    config.optimizer.weight_decay = 0.01
    config.optimizer.layer_decay = 1.0
    config.num_steps = 400
    config.log_every = 20
    config.eval_every = 400
    config.checkpoint_every = 200
    config.keep_checkpoints = 2
    config.write_predictions = True
