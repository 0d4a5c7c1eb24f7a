"""The multi-scale decoder: output shapes per target, fusion of every tap, audio FiLM, bad configs.

Gradients are checked on the whole model (test_saliency_model.py).
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salax.models.decoder import DecoderConfig, SaliencyDecoder

WIDTH = 24


def make(target="last", grid=(4, 2, 2), widths=(16, 16, 16, 16), tubelet=1, audio_width=None) -> SaliencyDecoder:
    config = DecoderConfig(
        encoder_width=WIDTH, grid=grid, tubelet=tubelet, patch_size=16, widths=widths,
        temporal_heads=4, target=target, audio_width=audio_width,
    )
    return SaliencyDecoder(config, rngs=nnx.Rngs(0))


def taps(decoder: SaliencyDecoder, batch=2, seed=0) -> list[jax.Array]:
    t, h, w = decoder.config.grid
    keys = jax.random.split(jax.random.key(seed), len(decoder.branches))
    return [jax.random.normal(k, (batch, t * h * w, WIDTH)) for k in keys]


@nnx.jit
def run(decoder, tokens, audio=None):
    return decoder(tokens, audio)


@pytest.mark.parametrize(
    "target, grid, tubelet, widths, expected",
    [
        ("last", (4, 2, 2), 1, (16, 16, 16, 16), (2, 32, 32)),
        ("last", (3, 4, 2), 2, (8, 16), (2, 64, 32)),  # odd time steps still reduce to one
        ("all", (2, 2, 4), 2, (16,), (2, 4, 32, 64)),
    ],
)
def test_output_is_one_logit_map_per_target_frame_at_input_size(target, grid, tubelet, widths, expected):
    decoder = make(target, grid, widths, tubelet)
    logits = run(decoder, taps(decoder))
    assert logits.shape == expected and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_all_frames_within_a_tubelet_share_a_map_and_frames_differ_across_tubelets():
    decoder = make("all", grid=(2, 2, 2), widths=(16, 16), tubelet=2)
    logits = run(decoder, taps(decoder))
    np.testing.assert_array_equal(logits[:, 0], logits[:, 1])
    assert not np.allclose(logits[:, 1], logits[:, 2])


@pytest.fixture(scope="module")
def audio_decoder():
    return make(audio_width=8)


def test_audio_film_starts_as_identity_then_conditions_the_maps(audio_decoder):
    decoder = nnx.clone(audio_decoder)
    tokens = taps(decoder)
    quiet, loud = jnp.zeros((2, 8)), jnp.ones((2, 8))
    np.testing.assert_allclose(run(decoder, tokens, quiet), run(decoder, tokens, loud), atol=1e-6)
    for film in decoder.film:
        film.proj.kernel[...] = jax.random.normal(jax.random.key(1), film.proj.kernel.shape)
    assert not np.allclose(run(decoder, tokens, quiet), run(decoder, tokens, loud), atol=1e-4)


def test_taps_are_fused_so_every_tap_matters(audio_decoder):
    tokens, audio = taps(audio_decoder), jnp.zeros((2, 8))
    base = run(audio_decoder, tokens, audio)
    for i in range(len(tokens)):
        changed = list(tokens)
        changed[i] = jnp.flip(changed[i], axis=-1)  # a constant shift would vanish in LayerNorm
        assert np.abs(run(audio_decoder, changed, audio) - base).max() > 1e-3, f"tap {i} is ignored"


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(target="middle"), "target"),
        (dict(widths=(8,) * 5), "1 to 4 taps"),
        (dict(grid=(4, 3, 2)), "must be even"),
        (dict(widths=(10, 16)), "divisible"),
    ],
)
def test_bad_configs_are_explained(fields, message):
    base = dict(encoder_width=WIDTH, grid=(4, 2, 2), tubelet=1, patch_size=16, widths=(16, 16), temporal_heads=4)
    with pytest.raises(ValueError, match=message):
        DecoderConfig(**{**base, **fields})


def test_audio_must_match_how_the_decoder_was_built():
    decoder = make()
    with pytest.raises(ValueError, match="audio"):
        decoder(taps(decoder), jnp.zeros((2, 8)))
