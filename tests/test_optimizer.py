"""The optimiser: layer-wise lr decay, the weight-decay mask, the warmup + cosine schedule."""

import ml_collections
import numpy as np
import pytest

from salax import optimizer


def test_optimiser_decays_encoder_layers_and_only_weight_matrices():
    params = {
        "encoder": {"patch_embed": {"kernel": np.zeros((2, 3))},
                    "blocks": {0: {"mlp": {"kernel": np.zeros((3, 3)), "bias": np.zeros(3)}},
                               1: {"norm1": {"scale": np.zeros(3)}}}},
        "decoder": {"head": {"kernel": np.zeros((3, 1))}},
    }
    scales = optimizer.layer_lr_scales(params, 0.5)
    assert scales["encoder"]["blocks"][1]["norm1"]["scale"] == 0.5  # last block: decay^1
    assert scales["encoder"]["blocks"][0]["mlp"]["kernel"] == 0.25
    assert scales["encoder"]["patch_embed"]["kernel"] == 0.125  # embeddings: decay^(depth + 1)
    assert scales["decoder"]["head"]["kernel"] == 1.0
    stacked = {"encoder": {"blocks": {"mlp": {"kernel": np.zeros((3, 4, 4))}}}}
    np.testing.assert_allclose(optimizer.layer_lr_scales(stacked, 0.5)["encoder"]["blocks"]["mlp"]["kernel"].ravel(),
                               [0.125, 0.25, 0.5])
    mask = optimizer.weight_decay_mask(params)
    assert mask["encoder"]["blocks"][0]["mlp"] == {"kernel": True, "bias": False}
    assert mask["encoder"]["blocks"][1]["norm1"]["scale"] is False


def test_schedule_warms_up_linearly_then_decays_to_the_end_fraction():
    config = ml_collections.ConfigDict(dict(num_steps=100, optimizer=dict(peak_lr=1e-3, warmup_steps=10,
                                                                          end_lr_fraction=0.01)))
    schedule = optimizer.learning_rate_schedule(config)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(100)) == pytest.approx(1e-5)
    # cosine: halfway through the decay the rate is halfway between peak and end
    assert float(schedule(55)) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-5)
