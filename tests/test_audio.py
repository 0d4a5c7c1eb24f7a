"""The audio branch: log-mel against librosa, the no-audio embedding, FiLM."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salax.models import audio

librosa = pytest.importorskip("librosa")


def test_filterbank_matches_librosa_slaney():
    expected = librosa.filters.mel(sr=16_000, n_fft=512, n_mels=64, htk=False, norm="slaney")
    np.testing.assert_allclose(audio.mel_filterbank(), expected, rtol=1e-4, atol=1e-7)


def test_filterbank_with_band_limits_matches_librosa():
    expected = librosa.filters.mel(sr=16_000, n_fft=512, n_mels=40, fmin=125.0, fmax=7500.0)
    np.testing.assert_allclose(audio.mel_filterbank(16_000, 512, 40, 125.0, 7500.0), expected, rtol=1e-4, atol=1e-7)


def test_log_mel_matches_librosa_melspectrogram():
    rng = np.random.default_rng(0)
    t = np.arange(5_000) / 16_000
    wave = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.normal(size=t.size)).astype(np.float32)
    expected = librosa.feature.melspectrogram(
        y=wave, sr=16_000, n_fft=512, hop_length=160, win_length=400, window="hann",
        center=True, pad_mode="constant", power=2.0, n_mels=64, htk=False, norm="slaney",
    )
    ours = np.asarray(audio.log_mel(jnp.asarray(wave[None])))[0]
    assert ours.shape == (1 + 5_000 // 160, 64)
    np.testing.assert_allclose(ours, np.log(expected.T + 1e-6), atol=2e-3)


@pytest.fixture(scope="module")
def branch():
    return audio.AudioBranch(32, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))


@nnx.jit
def embed(module, wave, has_audio):
    return module(wave, has_audio)


def test_missing_audio_uses_the_learned_embedding_and_silence_is_finite(branch):
    wave = jnp.stack([jax.random.normal(jax.random.key(0), (4_000,)), jnp.zeros(4_000), jnp.zeros(4_000)])
    has_audio = jnp.array([True, True, False])
    out = embed(branch, wave, has_audio)
    assert out.shape == (3, 32) and bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_allclose(out[2], branch.no_audio[...], atol=1e-7)
    assert not np.allclose(out[0], out[2]) and not np.allclose(out[1], out[2])


def test_gradient_through_the_branch_is_finite(branch):
    wave = jnp.stack([jax.random.normal(jax.random.key(1), (4_000,)), jnp.zeros(4_000)])

    @nnx.jit
    def grads(module):
        return nnx.grad(lambda m: jnp.sum(m(wave, jnp.array([True, False])) ** 2))(module)

    leaves = jax.tree.leaves(nnx.state(grads(branch)))
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)


def test_film_starts_as_identity():
    film = audio.FiLM(8, 6, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    features = jax.random.normal(jax.random.key(0), (2, 3, 5, 6))
    np.testing.assert_array_equal(film(features, jnp.ones((2, 8))), features)


def test_bad_audio_shape_is_explained(branch):
    with pytest.raises(ValueError, match=r"audio must be \[B, S\]"):
        branch(jnp.zeros((2, 1, 4_000)), jnp.array([True, False]))
