"""Small layers whose parameters carry logical axis names; shared by the encoder, decoder and audio."""

from collections.abc import Sequence
import math

from flax import nnx
import jax
import jax.numpy as jnp

from salax.models.axes import Axes, param

DType = jax.typing.DTypeLike


def _normal(key: jax.Array, shape: Sequence[int], dtype: DType, stddev: float) -> jax.Array:
    """Normal draws taken from a power-of-two sized buffer.

    On CPU, compiling the random-bit generator costs about half a second per distinct shape; with
    a few buffer sizes shared by all parameters a model builds in seconds instead of a minute.
    """
    size = math.prod(shape)
    buffer = jax.random.normal(key, (1 << max(size - 1, 1).bit_length(),), jnp.float32)
    return (buffer[:size].reshape(shape) * stddev).astype(dtype)


def normal_init(stddev: float) -> nnx.initializers.Initializer:
    """N(0, stddev^2); UMT's trunc_normal(std=0.02) cuts at +-2 (100 std), so it is this."""
    return lambda key, shape, dtype=jnp.float32: _normal(key, shape, dtype, stddev)


def fan_in_init() -> nnx.initializers.Initializer:
    """N(0, 1 / fan_in) with fan_in = product of all but the last axis (LeCun normal)."""
    return lambda key, shape, dtype=jnp.float32: _normal(key, shape, dtype, math.prod(shape[:-1]) ** -0.5)


VIT_INIT = normal_init(0.02)


class Dense(nnx.Module):
    """``y = x @ W + b`` over the last axis, with named kernel axes (in_name, out_name)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        names: tuple[str | None, str | None],
        use_bias: bool = True,
        kernel_init: nnx.initializers.Initializer = fan_in_init(),
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.kernel = param(kernel_init, rngs.params(), (in_features, out_features), param_dtype, names)
        self.bias = (
            param(nnx.initializers.zeros, rngs.params(), (out_features,), param_dtype, names[1:])
            if use_bias
            else nnx.data(None)
        )
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis, statistics in float32, output in the compute dtype."""

    def __init__(
        self,
        features: int,
        *,
        name: str,
        eps: float = 1e-6,
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.scale = param(nnx.initializers.ones, rngs.params(), (features,), param_dtype, (name,))
        self.bias = param(nnx.initializers.zeros, rngs.params(), (features,), param_dtype, (name,))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(self.dtype)


class Conv(nnx.Module):
    """N-d convolution over channels-last input with SAME padding (2D: [B,H,W,C], 3D: [B,T,H,W,C])."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        *,
        strides: Sequence[int] | None = None,
        out_name: str = "channels",
        dtype: DType = jnp.float32,
        param_dtype: DType = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kernel_size = tuple(kernel_size)
        # The kernel's output channels are named `out_name` (the bias's stay `channels`), so rules can split a
        # model's largest kernels over more mesh axes than its activations' channels.
        names: Axes = (None,) * (len(kernel_size) + 1) + (out_name,)
        self.kernel = param(
            fan_in_init(),
            rngs.params(),
            kernel_size + (in_features, out_features),
            param_dtype,
            names,
        )
        self.bias = param(nnx.initializers.zeros, rngs.params(), (out_features,), param_dtype, ("channels",))
        self.strides = tuple(strides) if strides is not None else (1,) * len(kernel_size)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        spatial = "DHW"[-(x.ndim - 2) :]
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            window_strides=self.strides,
            padding="SAME",
            dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
        )
        return y + self.bias[...].astype(self.dtype)
