"""The assembled saliency model: UMT encoder taps -> decoder (+ audio FiLM) -> logit maps.

Contract with the data and training code: ``model(video, audio, has_audio, *, deterministic)``
with video [B, T, H, W, 3] (ImageNet-normalised), audio [B, S] at 16 kHz (zeros when absent),
has_audio [B] bool; returns float32 logits [B, H, W] (target "last") or [B, T, H, W] ("all").
"""

import argparse

from flax import nnx
import jax
import ml_collections

from salax.models.audio import AudioBranch
from salax.models.decoder import DecoderConfig, SaliencyDecoder
from salax.models.umt import VARIANTS, UMTEncoder, umt_config

_DEFAULTS = {
    "tiny": dict(tubelet=2, num_frames=8, image_size=(64, 64), decoder_widths=(32, 32, 32, 32),
                 temporal_heads=4, audio_width=32, dtype="float32", remat=False),
    # B/16 activations fit an 80 GB card at batch 16 without recomputation; L/16 recomputes.
    "b16": dict(tubelet=1, num_frames=16, image_size=(224, 224), decoder_widths=(64, 128, 192, 256),
                temporal_heads=8, audio_width=256, dtype="bfloat16", remat=False),
    "l16": dict(tubelet=1, num_frames=16, image_size=(224, 224), decoder_widths=(96, 160, 256, 384),
                temporal_heads=8, audio_width=256, dtype="bfloat16", remat=True),
}


def model_config(variant: str) -> ml_collections.ConfigDict:
    """Default model settings of `variant` ("tiny", "b16", "l16"); override fields freely."""
    if variant not in _DEFAULTS:
        raise ValueError(f"unknown model variant {variant!r}; choose one of {sorted(_DEFAULTS)}")
    d = _DEFAULTS[variant]
    return ml_collections.ConfigDict(
        dict(
            variant=variant,  # encoder size: width, depth, heads
            tubelet=d["tubelet"],  # frames per token (released UMT weights: 1)
            num_frames=d["num_frames"],  # clip length T
            image_size=d["image_size"],  # (H, W) of the model input and output maps
            taps=VARIANTS[variant]["taps"],  # encoder blocks read by the decoder (0-based)
            drop_path=VARIANTS[variant]["drop_path"],  # stochastic depth at the last block
            pos_embed="sinusoid",  # or "learned" (checkpoints that carry a table)
            sinusoid_grid=None,  # token grid the sinusoid is built on, e.g. UMT's (8, 14, 14); None: own
            decoder_widths=d["decoder_widths"],  # per tap, shallowest first
            temporal_heads=d["temporal_heads"],
            audio=True,  # audio branch with FiLM fusion on/off
            audio_width=d["audio_width"],
            target="last",  # "last" (causal, the clip's last frame) or "all" (every frame)
            dtype=d["dtype"],  # compute dtype
            param_dtype="float32",
            remat=d["remat"],  # recompute each encoder block in the backward pass
            scan=False,  # run encoder blocks with nnx.scan (stacked parameters)
        )
    )


class SaliencyModel(nnx.Module):
    """UMT encoder, multi-scale decoder, optional audio branch; see the module docstring for the call."""

    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        if len(config.taps) != len(config.decoder_widths):
            raise ValueError(f"{len(config.taps)} taps but {len(config.decoder_widths)} decoder widths")
        encoder_config = umt_config(
            config.variant,
            tubelet=config.tubelet,
            num_frames=config.num_frames,
            image_size=tuple(config.image_size),
            taps=tuple(sorted(config.taps)),
            drop_path=config.drop_path,
            pos_embed=config.pos_embed,
            sinusoid_grid=tuple(config.sinusoid_grid) if config.sinusoid_grid else None,
            dtype=config.dtype,
            param_dtype=config.param_dtype,
            remat=config.remat,
            scan=config.scan,
        )
        self.encoder = UMTEncoder(encoder_config, rngs=rngs)
        audio_width = config.audio_width if config.audio else None
        self.audio = (
            AudioBranch(audio_width, dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
            if config.audio
            else None
        )
        self.decoder = SaliencyDecoder(
            DecoderConfig(
                encoder_width=encoder_config.width,
                grid=encoder_config.grid,
                tubelet=encoder_config.tubelet,
                patch_size=encoder_config.patch_size,
                widths=tuple(config.decoder_widths),
                temporal_heads=config.temporal_heads,
                target=config.target,
                audio_width=audio_width,
                dtype=config.dtype,
                param_dtype=config.param_dtype,
            ),
            rngs=rngs,
        )

    def __call__(
        self, video: jax.Array, audio: jax.Array, has_audio: jax.Array, *, deterministic: bool
    ) -> jax.Array:
        features = self.encoder(video, deterministic=deterministic)
        taps = [features[f"block{i}"] for i in self.encoder.config.taps]
        embedding = None if self.audio is None else self.audio(audio, has_audio)
        return self.decoder(taps, embedding)


def build_model(config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> SaliencyModel:
    """The model described by `config` (see :func:`model_config`), freshly initialised from `rngs`."""
    return SaliencyModel(config, rngs=rngs)


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameter values."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def abstract_param_count(config: ml_collections.ConfigDict) -> int:
    """Parameter count of `config` without allocating it."""
    return count_params(nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0))))


def _main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m salax.models.saliency",
        description="Print parameter counts of the model variants, with and without the audio branch "
        "(computed abstractly: nothing is allocated).",
    )
    parser.add_argument("--variants", nargs="+", default=["tiny", "b16", "l16"], choices=sorted(_DEFAULTS))
    args = parser.parse_args()
    print("| variant | encoder | with audio | without audio |\n|---|---|---|---|")
    for variant in args.variants:
        config = model_config(variant)
        with_audio = abstract_param_count(config)
        config.audio = False
        without = abstract_param_count(config)
        encoder_config = umt_config(variant)
        encoder = count_params(nnx.eval_shape(lambda: UMTEncoder(encoder_config, rngs=nnx.Rngs(0))))  # noqa: B023
        print(f"| {variant} | {encoder / 1e6:.2f} M | {with_audio / 1e6:.2f} M | {without / 1e6:.2f} M |")


if __name__ == "__main__":
    _main()
