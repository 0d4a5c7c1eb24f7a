"""Throughput of the encoder and the full model: train step (forward, backward, AdamW) and inference.

    python -m salax.bench.model                       # CPU: the demo's model, with the torch peer
    python -m salax.bench.model --variant b16 --tubelet 2 --dtype bfloat16 --batch 16 --infer-batch 64  # GPU peer

Prints clips/s and TFLOP/s per row. FLOPs are the encoder forward by the peer's formula
(``shared/anchors/torch_videomae_step.py``: 2 x multiply-adds; training = 3 x forward); decoder and
audio FLOPs are not counted, so the full-model rows understate its arithmetic. With ``--peer`` the
same encoder runs as ``transformers.VideoMAEModel`` in torch on the CPU in this same process and
the table gains the ratio; on a GPU run the anchor script in the same call instead. The model is
a run config's (`--config=configs/umt.py:VARIANT` as for salax.main; `--variant V` is short for
`--config=configs/umt.py:V`), with `--tubelet`, `--frames`, `--image-size`, `--dtype`, `--remat`,
`--scan` changing its fields. Argparse and no absl: the GPU image this runs on has only what the
model needs.
"""

import argparse
from collections.abc import Callable
import functools
import importlib.util
import pathlib
import time

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from salax.batch import AUDIO_SAMPLE_RATE
from salax.models.saliency import build_model
from salax.models.umt import UMTConfig, UMTEncoder


def encoder_flops(config: UMTConfig) -> float:
    """Forward FLOPs of one clip through the encoder (the peer's count: 2 x multiply-adds)."""
    n, d, mlp = config.num_tokens, config.width, config.width * config.mlp_ratio
    per_layer = 2 * n * (4 * d * d + 2 * d * mlp) + 2 * 2 * n * n * d
    embed = 2 * n * d * 3 * config.tubelet * config.patch_size**2
    return config.depth * per_layer + embed


def time_call(fn: Callable[[], object], steps: int, warmup: int) -> float:
    """Seconds per call after `warmup` calls (compilation included there)."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(fn())
    return (time.perf_counter() - start) / steps


def make_batch(config, batch: int, seed: int = 0) -> dict[str, jax.Array]:
    keys = jax.random.split(jax.random.key(seed), 3)
    samples = int(AUDIO_SAMPLE_RATE * config.num_frames / 30)  # the clip window at 30 fps
    h, w = config.image_size
    return {
        "video": jax.random.normal(keys[0], (batch, config.num_frames, h, w, 3), jnp.float32),
        "audio": jax.random.normal(keys[1], (batch, samples), jnp.float32),
        "has_audio": jnp.ones((batch,), bool),
        "saliency": jax.random.uniform(keys[2], (batch, h, w), jnp.float32),
    }


def encoder_loss(module: UMTEncoder, batch, deterministic: bool) -> jax.Array:
    """The peer's objective: mean square of the last hidden state."""
    return jnp.mean(jnp.square(module(batch["video"], deterministic=deterministic)["last"].astype(jnp.float32)))


def model_loss(module, batch, deterministic: bool) -> jax.Array:
    logits = module(batch["video"], batch["audio"], batch["has_audio"], deterministic=deterministic)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch["saliency"]))


def train_and_infer(module: nnx.Module, loss_fn, batch_train, batch_infer, steps: int, warmup: int):
    """Seconds per train step (jit, donated state, AdamW) and per inference call."""
    graphdef, params, other = nnx.split(module, nnx.Param, ...)
    params, other = jax.tree.map(jnp.copy, (params, other))  # the step donates them; keep the module's
    tx = optax.adamw(1e-4, weight_decay=0.05)
    opt_state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, other, opt_state, batch):
        model = nnx.merge(graphdef, params, other)
        grads = nnx.grad(lambda m: loss_fn(m, batch, deterministic=False))(model)  # w.r.t. nnx.Param
        _, params, other = nnx.split(model, nnx.Param, ...)  # `other` carries the advanced dropout RNG
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), other, opt_state

    @jax.jit
    def infer(params, other, batch):
        model = nnx.merge(graphdef, params, other)
        if isinstance(model, UMTEncoder):
            return model(batch["video"], deterministic=True)["last"]
        return model(batch["video"], batch["audio"], batch["has_audio"], deterministic=True)

    state = [params, other, opt_state]

    def one_step():
        state[:] = train_step(*state, batch_train)
        return state[0]

    train_s = time_call(one_step, steps, warmup)
    infer_s = time_call(lambda: infer(state[0], state[1], batch_infer), steps, warmup)
    return train_s, infer_s


def peer_times(config: UMTConfig, batch_train: int, batch_infer: int, steps: int, warmup: int):
    """The same encoder as transformers.VideoMAEModel in torch on the CPU: (train s/step, infer s/call)."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(0)
    peer = VideoMAEModel(VideoMAEConfig(
        image_size=config.image_size[0], patch_size=config.patch_size, num_frames=config.num_frames,
        tubelet_size=config.tubelet, hidden_size=config.width, num_hidden_layers=config.depth,
        num_attention_heads=config.num_heads, intermediate_size=config.width * config.mlp_ratio,
        use_mean_pooling=True, layer_norm_eps=1e-6, attn_implementation="sdpa",
    ))
    opt = torch.optim.AdamW(peer.parameters(), lr=1e-4, weight_decay=0.05)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.dtype == "bfloat16")
    h, w = config.image_size

    def run(batch: int, train: bool) -> float:
        x = torch.randn(batch, config.num_frames, 3, h, w)

        def step():
            with autocast:
                out = peer(pixel_values=x).last_hidden_state
            if train:
                out.float().pow(2).mean().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        with torch.enable_grad() if train else torch.inference_mode():
            return time_call(step, steps, warmup)

    return run(batch_train, True), run(batch_infer, False)


CONFIG_FILE = pathlib.Path(__file__).resolve().parents[2] / "configs" / "umt.py"
VARIANTS = ("demo", "tiny", "b16", "l16")  # "tiny": the demo's model


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`FILE:VARIANT` -> FILE's `get_config(VARIANT)`, as `salax.main --config` reads it."""
    path, _, variant = spec.partition(":")
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"--config {spec}: no config file {path}")
    module_spec = importlib.util.spec_from_file_location("salax_bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m salax.bench.model",
        description=__doc__.split("\n\n")[0] + " Measures the baseline (torch peer) in the same run with --peer.",
    )
    parser.add_argument("--config", default=f"{CONFIG_FILE}:demo", help="run config FILE:VARIANT (default: the demo)")
    parser.add_argument("--variant", choices=VARIANTS, default=None, help="short for --config=configs/umt.py:VARIANT")
    parser.add_argument("--tubelet", type=int, default=None, help="frames per token (default: the config's)")
    parser.add_argument("--frames", type=int, default=None, help="clip length (default: the config's)")
    parser.add_argument("--image-size", type=int, default=None, help="square input side (default: the config's)")
    parser.add_argument("--batch", type=int, default=4, help="clips per train step")
    parser.add_argument("--infer-batch", "--infer_batch", dest="infer_batch", type=int, default=8,
                        help="clips per inference call")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="compute dtype")
    parser.add_argument("--remat", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--scan", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--parts", nargs="+", default=["encoder", "model"], choices=["encoder", "model"])
    parser.add_argument("--steps", type=int, default=5, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per row (compilation)")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the torch VideoMAE peer on the CPU (default: on when running on CPU)")
    return parser


def model_of(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """The model config the arguments name: the run config's `model`, with the shorthand fields set."""
    variant = {"tiny": "demo"}.get(args.variant, args.variant)
    config = load_config(f"{CONFIG_FILE}:{variant}" if variant else args.config).model
    for field, value in (("tubelet", args.tubelet), ("num_frames", args.frames), ("dtype", args.dtype),
                         ("remat", args.remat), ("scan", args.scan)):
        if value is not None:
            config[field] = value
    if args.image_size:
        config.image_size = (args.image_size, args.image_size)
    return config


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = model_of(args)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    model = build_model(config, rngs=nnx.Rngs(0))
    enc_config = model.encoder.config
    flops = encoder_flops(enc_config)
    backend = jax.default_backend()
    print(f"device {jax.devices()[0].device_kind} ({backend}), jax {jax.__version__}; {config.variant} "
          f"{config.num_frames}x{config.image_size[0]}x{config.image_size[1]} tubelet {config.tubelet} "
          f"({enc_config.num_tokens} tokens), {config.dtype}, remat {config.remat}, scan {config.scan}; "
          f"encoder fwd {flops / 1e9:.2f} GFLOP/clip")
    train_batch, infer_batch = make_batch(config, args.batch), make_batch(config, args.infer_batch, seed=1)
    rows = []
    for part in args.parts:
        module, loss_fn = (model.encoder, encoder_loss) if part == "encoder" else (model, model_loss)
        train_s, infer_s = train_and_infer(module, loss_fn, train_batch, infer_batch, args.steps, args.warmup)
        rows.append((f"salax {part}", train_s, infer_s))
    if args.peer if args.peer is not None else backend == "cpu":
        train_s, infer_s = peer_times(enc_config, args.batch, args.infer_batch, args.steps, args.warmup)
        rows.append(("torch VideoMAE encoder (peer)", train_s, infer_s))

    print(f"| what | train bs {args.batch}: clips/s | TFLOP/s | infer bs {args.infer_batch}: clips/s | TFLOP/s |")
    print("|---|---|---|---|---|")
    for name, train_s, infer_s in rows:
        train_rate, infer_rate = args.batch / train_s, args.infer_batch / infer_s
        print(f"| {name} | {train_rate:.4g} | {3 * flops * train_rate / 1e12:.3g} | "
              f"{infer_rate:.4g} | {flops * infer_rate / 1e12:.3g} |")
    if rows[-1][0].endswith("(peer)") and rows[0][0] == "salax encoder":
        (_, jt, ji), (_, pt, pi) = rows[0], rows[-1]
        print(f"encoder vs peer: train {pt / jt:.2f}x, inference {pi / ji:.2f}x (above 1: salax faster)")


if __name__ == "__main__":
    main()
