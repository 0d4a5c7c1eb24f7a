"""The UMT encoder against transformers' VideoMAE (the same network) with random weights copied across."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salax.models import umt
from salax.models.umt_weights import assign_umt_params, umt_canonical

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WIDTH, DEPTH, HEADS, FRAMES, SIZE = 64, 3, 4, 4, 32


def videomae(tubelet: int, seed: int = 0):
    """A random VideoMAE with UMT's settings (q/v bias, eps 1e-6, no final norm), biases made non-zero."""
    torch.manual_seed(seed)
    config = transformers.VideoMAEConfig(
        image_size=SIZE, patch_size=16, num_frames=FRAMES, tubelet_size=tubelet, hidden_size=WIDTH,
        num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=4 * WIDTH, qv_bias=True,
        layer_norm_eps=1e-6, use_mean_pooling=True, hidden_act="gelu", attn_implementation="eager",
    )
    model = transformers.VideoMAEModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def umt_state_from_videomae(model) -> dict[str, np.ndarray]:
    """VideoMAE parameters renamed into UMT's .pth key layout (qkv fused, q/v biases apart)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    state = {
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
    }
    for i in range(DEPTH):
        p, u = f"encoder.layer.{i}.", f"blocks.{i}."
        att = p + "attention.attention."
        state[u + "attn.qkv.weight"] = np.concatenate(
            [sd[att + "query.weight"], sd[att + "key.weight"], sd[att + "value.weight"]]
        )
        state[u + "attn.q_bias"] = sd[att + "query.bias"]
        state[u + "attn.v_bias"] = sd[att + "value.bias"]
        state[u + "attn.proj.weight"] = sd[p + "attention.output.dense.weight"]
        state[u + "attn.proj.bias"] = sd[p + "attention.output.dense.bias"]
        for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                             ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")):
            state[u + ours + ".weight"] = sd[p + theirs + ".weight"]
            state[u + ours + ".bias"] = sd[p + theirs + ".bias"]
    return state


def reference_outputs(model, video: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(video).permute(0, 1, 4, 2, 3), output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states]  # [embeddings, block 0, block 1, ...]


def tiny_encoder(tubelet: int, scan: bool, **overrides) -> umt.UMTEncoder:
    config = umt.UMTConfig(
        width=WIDTH, depth=DEPTH, num_heads=HEADS, num_frames=FRAMES, image_size=(SIZE, SIZE),
        tubelet=tubelet, taps=tuple(range(DEPTH)), scan=scan, **overrides,
    )
    return umt.UMTEncoder(config, rngs=nnx.Rngs(params=1, dropout=2))


@pytest.mark.parametrize("tubelet, scan", [(1, False), (2, False), (2, True)])
def test_encoder_matches_videomae(tubelet, scan):
    model = videomae(tubelet)
    video = np.random.default_rng(0).normal(size=(2, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    expected = reference_outputs(model, video)
    encoder = tiny_encoder(tubelet, scan)
    assign_umt_params(encoder, umt_canonical(umt_state_from_videomae(model), WIDTH, HEADS))
    out = encoder(jnp.asarray(video), deterministic=True)
    for i in range(DEPTH):
        np.testing.assert_allclose(out[f"block{i}"], expected[i + 1], atol=1e-4, rtol=1e-4, err_msg=f"block{i}")
    np.testing.assert_allclose(out["last"], expected[-1], atol=1e-4, rtol=1e-4)
    assert out["last"].shape == (2, (FRAMES // tubelet) * (SIZE // 16) ** 2, WIDTH)


def test_scan_and_loop_agree_with_drop_path_and_remat():
    """Same weights and dropout key: the scanned stack equals the (remat'd) loop in training mode."""
    loop = tiny_encoder(2, scan=False, drop_path=0.5, remat=True)
    scanned = tiny_encoder(2, scan=True, drop_path=0.5)
    blocks = [nnx.to_pure_dict(nnx.state(block, nnx.Param)) for block in loop.blocks]
    canonical = {
        "patch_embed": nnx.to_pure_dict(nnx.state(loop.patch_embed, nnx.Param)),
        "blocks": jax.tree.map(lambda *a: jnp.stack(a), *blocks),
    }
    assign_umt_params(scanned, canonical)
    video = jax.random.normal(jax.random.key(3), (4, FRAMES, SIZE, SIZE, 3))
    a = loop(video, deterministic=False)
    b = scanned(video, deterministic=False)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
    assert not np.allclose(a["last"], loop(video, deterministic=True)["last"]), "drop-path did nothing"


def test_gradients_are_finite_in_bfloat16():
    encoder = tiny_encoder(2, scan=True, dtype="bfloat16")
    video = jax.random.normal(jax.random.key(0), (2, FRAMES, SIZE, SIZE, 3))

    @nnx.jit
    def loss_and_grads(model):
        def loss(model):
            tokens = model(video, deterministic=True)["last"]
            return jnp.mean(jnp.square(tokens.astype(jnp.float32))), tokens.dtype == jnp.bfloat16

        return nnx.value_and_grad(loss, has_aux=True)(model)

    (_, computed_in_bfloat16), grads = loss_and_grads(encoder)
    leaves = jax.tree.leaves(grads)
    assert computed_in_bfloat16
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(encoder, nnx.Param)))


def test_every_parameter_has_logical_axis_names():
    for scan in (False, True):
        encoder = tiny_encoder(1, scan=scan, pos_embed="learned")
        for path, var in nnx.to_flat_state(nnx.state(encoder, nnx.Param)):
            names = var.get_metadata().get("out_sharding")
            assert names is not None and len(names) == var[...].ndim, path


@pytest.mark.parametrize(
    "grid_in, grid_out", [((8, 14, 14), (16, 7, 7)), ((4, 3, 5), (2, 6, 4)), ((2, 4, 4), (2, 4, 4))]
)
def test_pos_embed_resize_matches_torch_interpolate(grid_in, grid_out):
    (t0, h0, w0), (t1, h1, w1) = grid_in, grid_out
    table = np.random.default_rng(0).normal(size=(t0 * h0 * w0, 8))
    # torch reference, as UMT does it: linear along time, then bicubic over (h, w).
    x = torch.from_numpy(table).reshape(t0, h0, w0, 8)
    x = x.permute(1, 2, 3, 0).reshape(-1, 8, t0)
    x = torch.nn.functional.interpolate(x, size=t1, mode="linear", align_corners=False)
    x = x.reshape(h0, w0, 8, t1).permute(3, 2, 0, 1)
    x = torch.nn.functional.interpolate(x, size=(h1, w1), mode="bicubic", align_corners=False)
    expected = x.permute(0, 2, 3, 1).reshape(-1, 8).numpy()
    np.testing.assert_allclose(umt.resize_pos_embed(table, grid_in, grid_out), expected, atol=1e-5)


def test_sinusoid_table_matches_videomae():
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    expected = get_sinusoid_encoding_table(50, 24)[0].numpy()
    np.testing.assert_allclose(umt.sinusoid_table(50, 24), expected, atol=1e-6)


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="do not tile"):
        umt.umt_config("tiny", num_frames=5, tubelet=2)
    with pytest.raises(ValueError, match="taps"):
        umt.umt_config("tiny", taps=(7,))
    encoder = tiny_encoder(1, scan=False)
    with pytest.raises(ValueError, match="UMT expects video"):
        encoder(jnp.zeros((1, FRAMES, SIZE + 16, SIZE, 3)))
