"""The multi-scale saliency decoder (the AIM 2024 winner's recipe made concrete).

Per tapped encoder block: LayerNorm and a projection of its tokens to a grid [B, T', h, w, C],
attention along time at each location, 3D convolutions that reduce time (to one step for the
causal "last" target; kept for "all"), and a resampling to that tap's scale: the deepest tap at
stride 32, then 16, 8, 4 going shallower. A top-down path fuses them (x2 upsampling, 1x1
projection, sum, two 3x3 convolutions), optional audio FiLM at every scale, and a head gives one
logit map per target frame, resized bilinearly to the input resolution.
"""

import dataclasses
import math

from flax import nnx
import jax
import jax.numpy as jnp

from salax.models.audio import FiLM
from salax.models.axes import constrain
from salax.models.layers import Conv, Dense, DType, LayerNorm

FEATURE_AXES = ("batch", "time", "height", "width", "channels")
CONV_OUT = "channels_out"  # the output channels of convolution kernels: rules split them over fsdp too


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Static description of the decoder; `widths` are per tap, shallowest first."""

    encoder_width: int
    grid: tuple[int, int, int]  # encoder token grid (T', h, w)
    tubelet: int
    patch_size: int
    widths: tuple[int, ...]
    temporal_heads: int = 4
    target: str = "last"
    audio_width: int | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.target not in ("last", "all"):
            raise ValueError(f"decoder target must be 'last' or 'all', got {self.target!r}")
        if not 1 <= len(self.widths) <= 4:
            raise ValueError(f"decoder needs 1 to 4 taps (strides 32..4), got {len(self.widths)} widths")
        _, h, w = self.grid
        if h % 2 or w % 2:
            raise ValueError(f"decoder: token grid {h}x{w} must be even (the deepest tap is at stride 32)")
        bad = [c for c in self.widths if c % self.temporal_heads]
        if bad:
            raise ValueError(f"decoder widths {bad} are not divisible by {self.temporal_heads} temporal heads")

    def stride(self, tap: int) -> int:
        """Output stride of tap `tap` (0 = shallowest): deepest 32, halving towards the shallowest."""
        return 32 // 2 ** (len(self.widths) - 1 - tap)


class TemporalAttention(nnx.Module):
    """Pre-norm self-attention along time at every spatial location, with a residual."""

    def __init__(self, channels: int, heads: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = LayerNorm(channels, name="channels", **kw)
        self.qkv = Dense(channels, 3 * channels, names=("channels", None), **kw)
        self.out = Dense(channels, channels, names=(None, "channels"), **kw)
        self.heads = heads

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        seq = x.transpose(0, 2, 3, 1, 4).reshape(b * h * w, t, c)
        q, k, v = jnp.split(self.qkv(self.norm(seq)).reshape(b * h * w, t, 3 * self.heads, c // self.heads), 3, axis=2)
        attended = jax.nn.dot_product_attention(q, k, v).reshape(b * h * w, t, c)
        seq = seq + self.out(attended)
        return seq.reshape(b, h, w, t, c).transpose(0, 3, 1, 2, 4)


class TapBranch(nnx.Module):
    """One tap's tokens [B, N, D] -> features [B, T'', h_s, w_s, C] at the tap's stride."""

    def __init__(self, config: DecoderConfig, tap: int, *, rngs: nnx.Rngs):
        c, width = config, config.widths[tap]
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
        self.norm = LayerNorm(c.encoder_width, name="embed", **kw)
        self.proj = Dense(c.encoder_width, width, names=("embed", "channels"), **kw)
        self.temporal = TemporalAttention(width, c.temporal_heads, **kw)
        if c.target == "last":  # halve time until one step is left
            halvings = math.ceil(math.log2(c.grid[0]))
            self.time_convs = nnx.List(
                [Conv(width, width, (3, 3, 3), strides=(2, 1, 1), out_name=CONV_OUT, **kw) for _ in range(halvings)])
        else:
            self.time_convs = nnx.List([Conv(width, width, (3, 3, 3), out_name=CONV_OUT, **kw)])
        self.scale = c.patch_size / c.stride(tap)  # resampling factor from the token grid
        if self.scale < 1:
            self.resample = Conv(width, width, (3, 3), strides=(2, 2), out_name=CONV_OUT, **kw)
        else:
            self.resample = Conv(width, width, (3, 3), out_name=CONV_OUT, **kw)
        self.grid = c.grid

    def __call__(self, tokens: jax.Array) -> jax.Array:
        t, h, w = self.grid
        x = self.proj(self.norm(tokens)).reshape(tokens.shape[0], t, h, w, -1)
        x = constrain(self.temporal(constrain(x, FEATURE_AXES)), FEATURE_AXES)
        for conv in self.time_convs:
            x = jax.nn.gelu(conv(x), approximate=False)
        b, t, h, w, ch = x.shape
        frames = x.reshape(b * t, h, w, ch)
        if self.scale > 1:
            size = int(h * self.scale), int(w * self.scale)
            frames = jax.image.resize(frames, (b * t, *size, ch), method="nearest")
        frames = jax.nn.gelu(self.resample(frames), approximate=False)
        return frames.reshape(b, t, *frames.shape[1:])


class FuseStage(nnx.Module):
    """Top-down step: upsample the coarser map x2, project to this width, add the tap, two 3x3 convs."""

    def __init__(self, coarse: int, fine: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.lateral = Dense(coarse, fine, names=("channels", None), **kw)
        self.conv1 = Conv(fine, fine, (3, 3), out_name=CONV_OUT, **kw)
        self.conv2 = Conv(fine, fine, (3, 3), out_name=CONV_OUT, **kw)

    def __call__(self, coarse: jax.Array, fine: jax.Array) -> jax.Array:
        n, h, w, c = coarse.shape
        up = jax.image.resize(coarse, (n, 2 * h, 2 * w, c), method="bilinear")
        x = self.lateral(up) + fine
        x = jax.nn.gelu(self.conv1(x), approximate=False)
        return x + jax.nn.gelu(self.conv2(x), approximate=False)


class SaliencyDecoder(nnx.Module):
    """Tapped tokens (shallowest first) and an optional audio embedding -> logits at input size."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        c = config
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, rngs=rngs)
        n = len(c.widths)
        self.config = config
        self.branches = nnx.List([TapBranch(c, i, rngs=rngs) for i in range(n)])
        self.fuse = nnx.List([FuseStage(c.widths[i + 1], c.widths[i], **kw) for i in range(n - 1)])
        if c.audio_width is not None:
            self.film = nnx.List([FiLM(c.audio_width, width, **kw) for width in c.widths])
        self.head = Conv(c.widths[0], c.widths[0], (3, 3), out_name=CONV_OUT, **kw)
        self.logit = Dense(c.widths[0], 1, names=("channels", None), **kw)

    def __call__(self, taps: list[jax.Array], audio: jax.Array | None = None) -> jax.Array:
        """taps: [B, N, D] each, shallowest first; audio: [B, E] or None. Returns float32 logits."""
        c = self.config
        if len(taps) != len(self.branches):
            raise ValueError(f"decoder built for {len(self.branches)} taps, got {len(taps)}")
        if (audio is None) != (c.audio_width is None):
            raise ValueError("decoder: pass an audio embedding exactly when it was built with audio_width")
        b = taps[0].shape[0]
        features = [branch(tokens) for branch, tokens in zip(self.branches, taps)]
        steps = features[0].shape[1]
        audio_per_frame = None if audio is None else jnp.repeat(audio, steps, axis=0)

        def modulate(x: jax.Array, i: int) -> jax.Array:
            return x if audio is None else self.film[i](x, audio_per_frame)

        frames = [f.reshape(b * steps, *f.shape[2:]) for f in features]
        x = modulate(frames[-1], len(frames) - 1)
        for i in reversed(range(len(frames) - 1)):
            x = modulate(self.fuse[i](x, frames[i]), i)
        x = jax.nn.gelu(self.head(x), approximate=False)
        logits = self.logit(x)[..., 0].astype(jnp.float32)
        (_, h, w), p = c.grid, c.patch_size
        logits = jax.image.resize(logits, (b * steps, h * p, w * p), method="bilinear")
        logits = logits.reshape(b, steps, h * p, w * p)
        if c.target == "last":
            return logits[:, 0]
        return jnp.repeat(logits, c.tubelet, axis=1)  # one map per input frame
