"""The audio branch: log-mel in JAX, a compact CNN encoder, and FiLM fusion into the decoder.

Log-mel: 16 kHz, 25 ms Hann window (400 samples) in a 512-point FFT, 10 ms hop, 64 bins, Slaney
mel scale and Slaney area normalisation (librosa's defaults, ``htk=False, norm="slaney"``),
centred frames with zero padding, power 2, natural log.

Fusion is FiLM (a per-channel scale and shift) at every decoder scale: the audio cue is a
clip-level vector (what is sounding, not where), FiLM costs a matmul per scale even at the finest
maps where cross-attention would be expensive, and its zero-initialised projection makes the
audio branch start as the identity so it cannot hurt a video-only start. A clip without audio
uses a learned no-audio embedding instead of its (meaningless) encoding.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from salax import batch
from salax.models.axes import constrain, param
from salax.models.layers import Conv, Dense, DType, LayerNorm, normal_init

SAMPLE_RATE = batch.AUDIO_SAMPLE_RATE
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
MEL_BINS = 64


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    linear = mel * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log, linear)


@functools.lru_cache(maxsize=8)
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = MEL_BINS,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, Slaney scale and area normalisation."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    out = weights.astype(np.float32)
    out.flags.writeable = False
    return out


def log_mel(audio: jax.Array) -> jax.Array:
    """[B, S] waveform at 16 kHz -> [B, 1 + S // 160, 64] log-mel power (float32)."""
    audio = audio.astype(jnp.float32)
    padded = jnp.pad(audio, ((0, 0), (N_FFT // 2, N_FFT // 2)))
    num_frames = 1 + audio.shape[1] // HOP
    index = np.arange(num_frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
    window = np.zeros(N_FFT, np.float32)
    start = (N_FFT - WINDOW) // 2
    window[start : start + WINDOW] = np.hanning(WINDOW + 1)[:-1]  # periodic Hann, centred in the FFT
    spectrum = jnp.abs(jnp.fft.rfft(padded[:, index] * window, axis=-1)) ** 2
    mel = jnp.einsum("bfk,mk->bfm", spectrum, mel_filterbank())
    return jnp.log(mel + 1e-6)


class AudioEncoder(nnx.Module):
    """Log-mel -> three strided 3x3 conv stages -> mean pool -> one clip vector [B, width]."""

    def __init__(self, width: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        channels = (1, width // 4, width // 2, width)
        self.stages = nnx.List(
            [Conv(a, b, (3, 3), strides=(2, 2), **kw) for a, b in zip(channels[:-1], channels[1:])]
        )
        self.out = Dense(width, width, names=(None, "channels"), **kw)
        self.norm = LayerNorm(width, name="channels", eps=1e-6, **kw)
        self.dtype = dtype

    def __call__(self, audio: jax.Array) -> jax.Array:
        mel = log_mel(audio)
        # Per-clip standardisation: loudness and recording gain vary wildly; silence maps to zeros.
        mean = mel.mean(axis=(1, 2), keepdims=True)
        std = mel.std(axis=(1, 2), keepdims=True)
        x = ((mel - mean) / (std + 1e-5))[..., None].astype(self.dtype)
        x = constrain(x, ("batch", "time", "mel", "channels"))
        for stage in self.stages:
            x = jax.nn.gelu(stage(x), approximate=False)
        return self.norm(self.out(x.mean(axis=(1, 2))))


class AudioBranch(nnx.Module):
    """Waveform and has-audio flag -> clip embedding; the learned no-audio embedding where absent."""

    def __init__(self, width: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.encoder = AudioEncoder(width, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.no_audio = param(normal_init(0.02), rngs.params(), (width,), param_dtype, ("channels",))
        self.width = width

    def __call__(self, audio: jax.Array, has_audio: jax.Array) -> jax.Array:
        if audio.ndim != 2 or has_audio.shape != audio.shape[:1]:
            raise ValueError(f"audio must be [B, S] with has_audio [B]; got {audio.shape} and {has_audio.shape}")
        encoded = self.encoder(audio)
        absent = jnp.broadcast_to(self.no_audio[...].astype(encoded.dtype), encoded.shape)
        return jnp.where(has_audio[:, None].astype(bool), encoded, absent)


class FiLM(nnx.Module):
    """Per-channel scale and shift of a feature map from the clip's audio embedding; starts as identity."""

    def __init__(self, audio_width: int, channels: int, *, dtype: DType, param_dtype: DType, rngs: nnx.Rngs):
        self.proj = Dense(
            audio_width, 2 * channels, names=("channels", None), kernel_init=nnx.initializers.zeros,
            dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )

    def __call__(self, features: jax.Array, audio: jax.Array) -> jax.Array:
        """features [B, ..., C], audio [B, E]."""
        scale, shift = jnp.split(self.proj(audio), 2, axis=-1)
        expand = (slice(None),) + (None,) * (features.ndim - 2) + (slice(None),)
        return features * (1 + scale[expand]) + shift[expand]
