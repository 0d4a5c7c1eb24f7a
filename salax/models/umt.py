"""The UMT video ViT encoder (the same network as VideoMAE), numerically faithful to released weights.

Tokens are ordered (time, height, width); there is no CLS token and no final norm, so the tapped
block outputs are what UMT-based saliency decoders read.
"""

import dataclasses
import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from salax.models.axes import constrain, param
from salax.models.layers import VIT_INIT, Dense, LayerNorm

# Standard sizes (width, depth, heads, default taps, drop-path); "tiny" exists for tests and demos.
VARIANTS = {
    "tiny": dict(width=64, depth=4, num_heads=4, taps=(0, 1, 2, 3), drop_path=0.0),
    "b16": dict(width=768, depth=12, num_heads=12, taps=(2, 5, 8, 11), drop_path=0.1),
    "l16": dict(width=1024, depth=24, num_heads=16, taps=(5, 11, 17, 23), drop_path=0.2),
}
HEADS_BY_WIDTH = {v["width"]: v["num_heads"] for v in VARIANTS.values()}


@dataclasses.dataclass(frozen=True)
class UMTConfig:
    """Static description of one encoder; hashable so it can live on a module."""

    width: int
    depth: int
    num_heads: int
    num_frames: int = 16
    image_size: tuple[int, int] = (224, 224)
    tubelet: int = 1
    patch_size: int = 16
    mlp_ratio: int = 4
    taps: tuple[int, ...] = ()
    drop_path: float = 0.0
    layer_norm_eps: float = 1e-6
    # "sinusoid": fixed table built for `sinusoid_grid` (None: the encoder's own grid, as VideoMAE
    # does; UMT fine-tuning uses (8, 14, 14)) and resized by UMT's rules; "learned": a trained
    # table (16-frame checkpoints carry one).
    pos_embed: str = "sinusoid"
    sinusoid_grid: tuple[int, int, int] | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    scan: bool = False

    def __post_init__(self):
        h, w = self.image_size
        if self.num_frames % self.tubelet or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"UMT: {self.num_frames} frames of {h}x{w} do not tile into tubelets of "
                f"{self.tubelet}x{self.patch_size}x{self.patch_size}"
            )
        if self.width % self.num_heads:
            raise ValueError(f"UMT: width {self.width} is not divisible by {self.num_heads} heads")
        bad = [t for t in self.taps if not 0 <= t < self.depth]
        if bad:
            raise ValueError(f"UMT: taps {bad} are outside blocks 0..{self.depth - 1}")
        if self.pos_embed not in ("sinusoid", "learned"):
            raise ValueError(f"UMT: pos_embed must be 'sinusoid' or 'learned', got {self.pos_embed!r}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (time, height, width)."""
        h, w = self.image_size
        return self.num_frames // self.tubelet, h // self.patch_size, w // self.patch_size

    @property
    def num_tokens(self) -> int:
        return int(np.prod(self.grid))


def umt_config(variant: str, **overrides) -> UMTConfig:
    """The standard sizes of `variant` ("tiny", "b16", "l16") with any field overridden."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown UMT variant {variant!r}; choose one of {sorted(VARIANTS)}")
    fields = dict(VARIANTS[variant])
    fields.update(overrides)
    fields["image_size"] = tuple(fields.get("image_size", (224, 224)))
    fields["taps"] = tuple(fields["taps"])
    return UMTConfig(**fields)


def sinusoid_table(num_positions: int, width: int) -> np.ndarray:
    """UMT/VideoMAE's 1-D table over the flattened token index: sin on even dims, cos on odd."""
    position = np.arange(num_positions, dtype=np.float64)[:, None]
    exponent = 2 * (np.arange(width) // 2) / width
    angle = position / np.power(10000.0, exponent)[None, :]
    table = np.where(np.arange(width) % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic weights for the 4 taps around a sample at fraction t (torch's bicubic, a=-0.75)."""

    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] matrix of torch ``interpolate(mode='bicubic', align_corners=False)``."""
    scale = size_in / size_out
    source = (np.arange(size_out) + 0.5) * scale - 0.5
    floor = np.floor(source)
    weights = _cubic_weights(source - floor)
    matrix = np.zeros((size_out, size_in))
    for tap in range(4):
        index = np.clip(floor.astype(int) - 1 + tap, 0, size_in - 1)
        np.add.at(matrix, (np.arange(size_out), index), weights[:, tap])
    return matrix


def linear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] matrix of torch ``interpolate(mode='linear', align_corners=False)``."""
    scale = size_in / size_out
    source = np.maximum((np.arange(size_out) + 0.5) * scale - 0.5, 0.0)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = source - low
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), low), 1 - frac)
    np.add.at(matrix, (np.arange(size_out), high), frac)
    return matrix


def resize_pos_embed(
    table: np.ndarray, grid_in: tuple[int, int, int], grid_out: tuple[int, int, int]
) -> np.ndarray:
    """UMT's rules for another token grid: linear along time, bicubic over (height, width).

    `table` is [T*H*W, D] in (time, height, width) order; the result is [T'*H'*W', D].
    """
    table = np.asarray(table, dtype=np.float64)
    if table.shape[0] != int(np.prod(grid_in)):
        raise ValueError(f"position table has {table.shape[0]} rows, grid {grid_in} needs {np.prod(grid_in)}")
    if tuple(grid_in) == tuple(grid_out):
        return table.astype(np.float32)
    (t0, h0, w0), (t1, h1, w1) = grid_in, grid_out
    grid = table.reshape(t0, h0, w0, -1)
    grid = np.einsum("st,thwd->shwd", linear_matrix(t0, t1), grid)
    grid = np.einsum("ih,thwd->tiwd", bicubic_matrix(h0, h1), grid)
    grid = np.einsum("jw,thwd->thjd", bicubic_matrix(w0, w1), grid)
    return grid.reshape(t1 * h1 * w1, -1).astype(np.float32)


@functools.lru_cache(maxsize=16)
def initial_pos_embed(config: UMTConfig) -> np.ndarray:
    """The sinusoid table for the encoder's grid, built on `sinusoid_grid` and resized by UMT's rules."""
    source_grid = config.sinusoid_grid or config.grid
    return resize_pos_embed(sinusoid_table(int(np.prod(source_grid)), config.width), source_grid, config.grid)


def drop_path(x: jax.Array, key: jax.Array, rate: jax.Array, deterministic: bool) -> jax.Array:
    """Stochastic depth: drop a sample's whole residual branch with probability `rate`."""
    if deterministic:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


class PatchEmbed(nnx.Module):
    """Conv3d with kernel = stride = (tubelet, patch, patch), written as a patchify + matmul."""

    def __init__(self, config: UMTConfig, *, rngs: nnx.Rngs):
        t, p = config.tubelet, config.patch_size
        self.kernel = param(
            VIT_INIT, rngs.params(), (t, p, p, 3, config.width), config.param_dtype, (None, None, None, None, "embed")
        )
        self.bias = param(nnx.initializers.zeros, rngs.params(), (config.width,), config.param_dtype, ("embed",))
        self.config = config

    def __call__(self, video: jax.Array) -> jax.Array:
        c = self.config
        b = video.shape[0]
        (gt, gh, gw), t, p = c.grid, c.tubelet, c.patch_size
        x = video.astype(c.dtype).reshape(b, gt, t, gh, p, gw, p, 3)
        x = jnp.einsum("bTtHpWqc,tpqcd->bTHWd", x, self.kernel[...].astype(c.dtype))
        return x.reshape(b, gt * gh * gw, c.width) + self.bias[...].astype(c.dtype)


class Attention(nnx.Module):
    """Multi-head self-attention with one bias-free qkv projection plus q and v biases (UMT)."""

    def __init__(self, config: UMTConfig, *, rngs: nnx.Rngs):
        d, h = config.width, config.num_heads
        pd = config.param_dtype
        self.qkv = param(VIT_INIT, rngs.params(), (d, 3, h, d // h), pd, ("embed", None, "heads", "kv"))
        self.q_bias = param(nnx.initializers.zeros, rngs.params(), (h, d // h), pd, ("heads", "kv"))
        self.v_bias = param(nnx.initializers.zeros, rngs.params(), (h, d // h), pd, ("heads", "kv"))
        self.proj = param(VIT_INIT, rngs.params(), (h, d // h, d), pd, ("heads", "kv", "embed"))
        self.proj_bias = param(nnx.initializers.zeros, rngs.params(), (d,), pd, ("embed",))
        self.dtype = config.dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        qkv = jnp.einsum("bnd,dthk->tbnhk", x.astype(dt), self.qkv[...].astype(dt))
        q = qkv[0] + self.q_bias[...].astype(dt)
        k = qkv[1]
        v = qkv[2] + self.v_bias[...].astype(dt)
        q, k, v = (constrain(a, ("batch", "length", "heads", "kv")) for a in (q, k, v))
        # implementation=None: cuDNN flash attention where supported, XLA otherwise.
        out = jax.nn.dot_product_attention(q, k, v, implementation=None)
        out = constrain(out, ("batch", "length", "heads", "kv"))
        return jnp.einsum("bnhk,hkd->bnd", out, self.proj[...].astype(dt)) + self.proj_bias[...].astype(dt)


class Mlp(nnx.Module):
    """fc1, exact (erf) GELU, fc2."""

    def __init__(self, config: UMTConfig, *, rngs: nnx.Rngs):
        d, m = config.width, config.width * config.mlp_ratio
        kw = dict(kernel_init=VIT_INIT, dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
        self.fc1 = Dense(d, m, names=("embed", "mlp"), **kw)
        self.fc2 = Dense(m, d, names=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.gelu(self.fc1(x), approximate=False)
        return self.fc2(constrain(h, ("batch", "length", "mlp")))


class Block(nnx.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)), with drop-path."""

    def __init__(self, config: UMTConfig, *, rngs: nnx.Rngs):
        norm = dict(name="embed", eps=config.layer_norm_eps, dtype=config.dtype, param_dtype=config.param_dtype)
        self.norm1 = LayerNorm(config.width, rngs=rngs, **norm)
        self.attn = Attention(config, rngs=rngs)
        self.norm2 = LayerNorm(config.width, rngs=rngs, **norm)
        self.mlp = Mlp(config, rngs=rngs)

    def __call__(self, x: jax.Array, key: jax.Array, rate: jax.Array, deterministic: bool) -> jax.Array:
        attn_key, mlp_key = jax.random.split(key)
        x = x + drop_path(self.attn(self.norm1(x)), attn_key, rate, deterministic)
        x = x + drop_path(self.mlp(self.norm2(x)), mlp_key, rate, deterministic)
        return constrain(x, ("batch", "length", "embed"))


def _run_block(block: Block, x: jax.Array, key: jax.Array, rate: jax.Array, deterministic: bool) -> jax.Array:
    return block(x, key, rate, deterministic)


class UMTEncoder(nnx.Module):
    """Video [B, T, H, W, 3] (normalised pixels) -> {"last": [B, N, D], "block{i}": [B, N, D] per tap}.

    With ``config.scan`` the blocks are one stacked module run by ``nnx.scan`` (fast compiles for
    deep models); otherwise a Python loop over separate blocks. Both give the same numbers.
    """

    def __init__(self, config: UMTConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.dropout_rng = rngs.dropout.fork()  # first, so block layout cannot change the stream
        self.patch_embed = PatchEmbed(config, rngs=rngs)
        if config.pos_embed == "learned":
            table = initial_pos_embed(config)
            self.pos_embed = param(
                lambda _, shape, dtype: jnp.asarray(table, dtype),
                None,
                table.shape,
                config.param_dtype,
                ("length", "embed"),
            )
        if config.scan:

            @nnx.split_rngs(splits=config.depth)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: None})
            def stacked(rngs: nnx.Rngs) -> Block:
                return Block(config, rngs=rngs)

            self.blocks = stacked(rngs)
        else:
            self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.depth)])

    def __call__(self, video: jax.Array, *, deterministic: bool = True) -> dict[str, jax.Array]:
        c = self.config
        expected = (c.num_frames, *c.image_size, 3)
        if tuple(video.shape[1:]) != expected:
            raise ValueError(f"UMT expects video [B, {', '.join(map(str, expected))}], got {tuple(video.shape)}")
        table = self.pos_embed[...] if c.pos_embed == "learned" else initial_pos_embed(c)
        x = self.patch_embed(video) + jnp.asarray(table).astype(c.dtype)
        x = constrain(x, ("batch", "length", "embed"))
        key = jax.random.key(0) if deterministic else self.dropout_rng()
        keys = jax.random.split(key, c.depth)
        rates = jnp.linspace(0.0, c.drop_path, c.depth, dtype=jnp.float32)  # linear in depth
        run = nnx.remat(_run_block, static_argnums=(4,)) if c.remat else _run_block
        if c.scan:

            @nnx.scan(in_axes=(0, nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0))
            def body(block: Block, h: jax.Array, block_key: jax.Array, rate: jax.Array):
                h = run(block, h, block_key, rate, deterministic)
                return h, h

            x, per_block = body(self.blocks, x, keys, rates)
            outputs = {f"block{i}": per_block[i] for i in c.taps}
        else:
            outputs = {}
            for i, block in enumerate(self.blocks):
                x = run(block, x, keys[i], rates[i], deterministic)
                if i in c.taps:
                    outputs[f"block{i}"] = x
        outputs["last"] = x
        return outputs
