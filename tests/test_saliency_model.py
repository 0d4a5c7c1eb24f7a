"""The assembled model through the shared contract: config, build, call, shapes, gradients, sharding names."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salax.models.axes import LOGICAL_AXES
from salax.models.saliency import SaliencyModel, abstract_param_count, build_model, count_params, model_config
from salax.models.umt import umt_config

BATCH, SAMPLES = 2, 3_200


def tiny(**fields):
    config = model_config("tiny")
    config.update(num_frames=4, image_size=(32, 32), decoder_widths=(16, 16, 16, 16), temporal_heads=2, audio_width=16)
    config.update(fields)
    return config


def batch(config, seed=0):
    keys = jax.random.split(jax.random.key(seed), 2)
    video = jax.random.normal(keys[0], (BATCH, config.num_frames, *config.image_size, 3))
    wave = jax.random.normal(keys[1], (BATCH, SAMPLES))
    return video, wave, jnp.array([True, False])


def pure_apply(model: SaliencyModel):
    """The training engineer's pattern: split once, jit a pure function of the state."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def apply(state, video, wave, has_audio):
        return nnx.merge(graphdef, state)(video, wave, has_audio, deterministic=True)

    return apply, state


@pytest.mark.parametrize("target, audio", [("last", True), ("all", False)])
def test_call_gives_float32_logits_per_target_frame(target, audio):
    config = tiny(target=target, audio=audio)
    apply, state = pure_apply(build_model(config, rngs=nnx.Rngs(0)))
    logits = apply(state, *batch(config))
    expected = (BATCH, 32, 32) if target == "last" else (BATCH, 4, 32, 32)
    assert logits.shape == expected and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_training_step_gradients_are_finite_with_audio_present_and_absent():
    config = tiny(drop_path=0.2, scan=True, remat=True)
    model = build_model(config, rngs=nnx.Rngs(params=0, dropout=1))
    video, wave, _ = batch(config)

    @nnx.jit
    def step(model, has_audio):
        def loss(m):
            logits = m(video, wave, has_audio, deterministic=False)
            return jnp.mean(jax.nn.sigmoid(logits) ** 2)

        return nnx.value_and_grad(loss)(model)

    for has_audio in (jnp.array([True, False]), jnp.array([False, False])):
        value, grads = step(model, has_audio)
        assert np.isfinite(float(value))
        leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
        assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    # FiLM starts at zero (identity), so the audio enters the gradient through its projections
    assert float(jnp.abs(grads["decoder"]["film"][0]["proj"]["kernel"][...]).sum()) > 0


def test_every_parameter_maps_to_a_partition_spec_under_the_rules():
    model = nnx.eval_shape(lambda: build_model(tiny(scan=True), rngs=nnx.Rngs(0)))
    rules = [(name, None) for name in LOGICAL_AXES]
    rules[LOGICAL_AXES.index("embed")] = ("embed", "fsdp")
    rules[LOGICAL_AXES.index("mlp")] = ("mlp", "tensor")
    rules[LOGICAL_AXES.index("heads")] = ("heads", "tensor")
    with nnx.logical_axis_rules(rules):
        specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    flat = nnx.to_flat_state(specs)
    used = {axis for _, spec in flat for axis in spec.get_value() if axis is not None}
    assert used == {"fsdp", "tensor"}
    assert flat and all(isinstance(spec.get_value(), jax.sharding.PartitionSpec) for _, spec in flat)


def test_variant_defaults_and_parameter_counts():
    for variant, encoder_width in (("tiny", 64), ("b16", 768), ("l16", 1024)):
        config = model_config(variant)
        assert len(config.taps) == len(config.decoder_widths)
        assert config.target == "last" and config.param_dtype == "float32"
        assert umt_config(config.variant).width == encoder_width
    b16 = model_config("b16")
    with_audio = abstract_param_count(b16)
    b16.audio = False
    assert 86e6 < abstract_param_count(b16) < with_audio < 130e6


def test_count_params_counts_what_eval_shape_counts():
    config = tiny()
    assert count_params(build_model(config, rngs=nnx.Rngs(0))) == abstract_param_count(config)


def test_config_errors_are_explained():
    with pytest.raises(ValueError, match="unknown model variant"):
        model_config("xl")
    with pytest.raises(ValueError, match="taps but"):
        build_model(tiny(taps=(0, 1)), rngs=nnx.Rngs(0))
