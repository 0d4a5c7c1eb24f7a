"""salax.models.umt_weights: load_umt, pos-embed resizing by UMT's rules, the convert-umt CLI and orbax round trip."""

import argparse

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from salax.models import umt, umt_weights

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_umt import FRAMES, SIZE, WIDTH, reference_outputs, umt_state_from_videomae, videomae  # noqa: E402

CKPT_SIDE = 4  # the checkpoint's pos_embed was trained at 64 px (4 x 4 patches), we load at 32 px


def write_pth(path, model, pos_embed: np.ndarray | None = None) -> None:
    """A .pth in a UMT pretraining layout: 'model', 'encoder.' prefix, extra heads to drop, saved args."""
    state = {f"encoder.{k}": torch.from_numpy(v) for k, v in umt_state_from_videomae(model).items()}
    state["encoder.norm.weight"] = torch.ones(WIDTH)
    state["clip_decoder.0.head.weight"] = torch.zeros(3, WIDTH)
    state["head.weight"] = torch.zeros(10, WIDTH)
    state["fc_norm.bias"] = torch.zeros(WIDTH)
    if pos_embed is not None:
        state["encoder.pos_embed"] = torch.from_numpy(pos_embed)[None]
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-3)}, path)


@pytest.fixture(scope="module")
def oracle():
    return videomae(tubelet=1, seed=3)


@pytest.fixture(scope="module")
def video():
    return np.random.default_rng(1).normal(size=(2, FRAMES, SIZE, SIZE, 3)).astype(np.float32)


def test_load_umt_gives_the_oracle_outputs(tmp_path, oracle, video):
    path = tmp_path / "umt.pth"
    write_pth(path, oracle)
    encoder = umt_weights.load_umt(path, num_frames=FRAMES, image_size=SIZE, taps=(0, 1, 2))
    assert (encoder.config.width, encoder.config.depth, encoder.config.tubelet) == (WIDTH, 3, 1)
    assert encoder.config.pos_embed == "sinusoid"
    expected = reference_outputs(oracle, video)
    out = encoder(jnp.asarray(video))
    for i in range(3):
        np.testing.assert_allclose(out[f"block{i}"], expected[i + 1], atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def checkpoint_table():
    tokens = FRAMES * CKPT_SIDE * CKPT_SIDE
    return np.random.default_rng(2).normal(scale=0.5, size=(tokens, WIDTH)).astype(np.float32)


def torch_bicubic(table: np.ndarray, side_in: int, side_out: int) -> np.ndarray:
    """UMT's spatial rule, written with torch: [T*S*S, D] -> [T*S'*S', D]."""
    x = torch.from_numpy(table).reshape(FRAMES, side_in, side_in, WIDTH).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(side_out, side_out), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(-1, WIDTH).numpy()


def test_stored_pos_embed_becomes_a_learned_table_resized_bicubically(tmp_path, oracle, video, checkpoint_table):
    path = tmp_path / "umt.pth"
    write_pth(path, oracle, checkpoint_table)
    encoder = umt_weights.load_umt(path, num_frames=FRAMES, image_size=SIZE)
    assert encoder.config.pos_embed == "learned"
    resized = torch_bicubic(checkpoint_table, CKPT_SIDE, SIZE // 16)
    np.testing.assert_allclose(encoder.pos_embed[...], resized, atol=1e-5)
    # the oracle with the same table in place of its sinusoid gives the same tokens
    original = oracle.embeddings.position_embeddings
    oracle.embeddings.position_embeddings = torch.from_numpy(resized)[None]
    try:
        expected = reference_outputs(oracle, video)[-1]
    finally:
        oracle.embeddings.position_embeddings = original
    np.testing.assert_allclose(encoder(jnp.asarray(video))["last"], expected, atol=1e-4, rtol=1e-4)


def test_cli_writes_an_orbax_checkpoint_any_encoder_layout_restores(tmp_path, oracle, video, checkpoint_table, capsys):
    path, out = tmp_path / "umt.pth", tmp_path / "converted"
    write_pth(path, oracle, checkpoint_table)
    umt_weights.main(["convert-umt", "--pth", str(path), "--out", str(out)])
    assert "depth 3" in capsys.readouterr().out
    reference = umt_weights.load_umt(path, num_frames=FRAMES, image_size=SIZE)
    config = umt.UMTConfig(width=WIDTH, depth=3, num_heads=4, num_frames=FRAMES, image_size=(SIZE, SIZE),
                           pos_embed="learned", scan=True)
    scanned = umt.UMTEncoder(config, rngs=nnx.Rngs(0))
    umt_weights.restore_umt_checkpoint(out, scanned)
    np.testing.assert_allclose(scanned(jnp.asarray(video))["last"], reference(jnp.asarray(video))["last"], atol=1e-5)


def test_cli_help_explains_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        umt_weights.main(["convert-umt", "--help"])
    assert exit_info.value.code == 0
    assert "--pth" in capsys.readouterr().out


def test_bad_checkpoints_are_explained(tmp_path, oracle):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        umt_weights.load_umt(tmp_path / "missing.pth")
    state = {k: torch.from_numpy(v) for k, v in umt_state_from_videomae(oracle).items()}
    del state["blocks.1.attn.v_bias"]
    torch.save({"module": state}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="lacks blocks.1.attn.v_bias"):
        umt_weights.load_umt(tmp_path / "broken.pth", num_frames=FRAMES, image_size=SIZE)
    deeper = umt.UMTEncoder(umt.UMTConfig(width=WIDTH, depth=4, num_heads=4, num_frames=FRAMES,
                                          image_size=(SIZE, SIZE)), rngs=nnx.Rngs(0))
    write_pth(tmp_path / "umt.pth", oracle)
    umt_weights.main(["convert-umt", "--pth", str(tmp_path / "umt.pth"), "--out", str(tmp_path / "c")])
    with pytest.raises(ValueError, match="depth=3"):
        umt_weights.restore_umt_checkpoint(tmp_path / "c", deeper)


def test_cli_names_a_missing_pth_in_one_line_and_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        umt_weights.main(["convert-umt", "--pth", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "c")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "nope.pth does not exist" in error and error.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_a_relative_output_directory_is_resolved(tmp_path, oracle, monkeypatch):
    write_pth(tmp_path / "umt.pth", oracle)
    monkeypatch.chdir(tmp_path)
    umt_weights.main(["convert-umt", "--pth", "umt.pth", "--out", "converted"])  # orbax itself wants absolute paths
    assert (tmp_path / "converted" / "umt_config.json").is_file()
