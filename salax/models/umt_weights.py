"""Released UMT weights: a PyTorch ``.pth`` -> our encoder, directly or through a converted orbax checkpoint.

A released ``.pth`` is read into a *canonical* dict of numpy arrays whose block parameters are
stacked along a leading depth axis; from there it goes into any encoder layout (scanned or not, any
frame count or image size) and into an orbax checkpoint that configs start from (``init_from``).
This sits beside the encoder, not with a run's checkpoints: it knows the UMT key layout and nothing
of training. torch is imported only to read the ``.pth`` (the optional ``convert`` extra).

CLI: ``python -m salax.models.umt_weights convert-umt --pth umt_b16.pth --out ~/umt_b16``.
"""

import argparse
from collections.abc import Mapping
import json
import os
import re
import warnings

from flax import nnx
import jax
import numpy as np
import orbax.checkpoint as ocp

from salax.models.umt import HEADS_BY_WIDTH, VARIANTS, UMTConfig, UMTEncoder, resize_pos_embed
from salax.paths import as_path

# Keys of UMT checkpoints that are not the encoder: pretraining heads, classifier, final norms.
_DROPPED_PREFIXES = ("clip_decoder.", "head.", "fc_norm.", "norm.")
_KEY_PREFIXES = ("module.", "encoder.", "backbone.")
# The 224 px and 384 px grids released UMT checkpoints were trained at.
_RELEASED_SPATIAL = (14, 24)
_CONFIG_FILE = "umt_config.json"
_PARAMS_DIR = "params"

PathLike = str | os.PathLike


def read_umt_state(path: PathLike) -> dict[str, np.ndarray]:
    """The encoder tensors of a UMT ``.pth`` as numpy, with prefixes stripped and heads dropped."""
    try:
        import torch  # the optional `convert` extra: only reading a .pth needs torch
    except ImportError as error:
        raise ImportError("reading a UMT .pth needs torch: pip install -e '.[convert]'") from error

    path = as_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UMT checkpoint {path} does not exist")
    with path.open("rb") as file, torch.serialization.safe_globals([argparse.Namespace]):
        blob = torch.load(file, map_location="cpu", weights_only=True)
    for top in ("model", "module"):
        if isinstance(blob, Mapping) and top in blob:
            blob = blob[top]
            break
    if not isinstance(blob, Mapping):
        raise ValueError(f"{path}: expected a state dict (or one under 'model'/'module'), got {type(blob)}")
    state = {}
    for key, tensor in blob.items():
        for prefix in _KEY_PREFIXES:
            key = key.removeprefix(prefix)
        if key.startswith(_DROPPED_PREFIXES) or not hasattr(tensor, "numpy"):
            continue
        state[key] = tensor.detach().float().numpy()
    return state


def _num_blocks(state: Mapping[str, np.ndarray]) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not indices or indices != set(range(max(indices) + 1)):
        raise ValueError(f"UMT state has blocks {sorted(indices)}: expected 0..depth-1")
    return max(indices) + 1


def _pos_embed_grid(num_tokens: int, config: UMTConfig, source: str) -> tuple[int, int, int]:
    """Token grid a checkpoint's learned table was trained on.

    Same grid as the encoder if the count matches; else a released spatial grid (14 or 24 per
    side) with whatever frame count fits; else UMT's own rule (same frames, square spatial grid).
    """
    if num_tokens == config.num_tokens:
        return config.grid
    for side in _RELEASED_SPATIAL:
        if num_tokens % (side * side) == 0:
            return num_tokens // (side * side), side, side
    frames = config.grid[0]
    side = round((num_tokens / frames) ** 0.5)
    if frames * side * side == num_tokens:
        return frames, side, side
    raise ValueError(f"{source}: cannot tell the token grid of a pos_embed with {num_tokens} tokens")


def umt_config_from_state(
    state: Mapping[str, np.ndarray],
    *,
    num_frames: int = 16,
    image_size: int | tuple[int, int] = 224,
    num_heads: int | None = None,
    **overrides,
) -> UMTConfig:
    """Encoder config from the weights: width, depth, tubelet and patch read off the tensors."""
    if "patch_embed.proj.weight" not in state:
        raise ValueError("UMT state lacks patch_embed.proj.weight: not a UMT encoder checkpoint")
    width, _, tubelet, patch, _ = state["patch_embed.proj.weight"].shape
    depth = _num_blocks(state)
    if num_heads is None:
        if width not in HEADS_BY_WIDTH:
            raise ValueError(f"UMT width {width} is not a standard variant: pass num_heads")
        num_heads = HEADS_BY_WIDTH[width]
    standard = [v for v in VARIANTS.values() if (v["width"], v["depth"]) == (width, depth)]
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    fields = dict(
        width=width,
        depth=depth,
        num_heads=num_heads,
        num_frames=num_frames,
        image_size=size,
        tubelet=tubelet,
        patch_size=patch,
        taps=standard[0]["taps"] if standard else (),
        pos_embed="learned" if "pos_embed" in state else "sinusoid",
    )
    fields.update(overrides)
    return UMTConfig(**fields)


def umt_canonical(state: Mapping[str, np.ndarray], width: int, num_heads: int) -> dict:
    """UMT key layout -> canonical params (blocks stacked on a leading depth axis)."""
    d, h = width, num_heads
    used = set()

    def get(key: str) -> np.ndarray:
        if key not in state:
            raise ValueError(f"UMT state lacks {key}")
        used.add(key)
        return np.asarray(state[key], np.float32)

    def block(i: int) -> dict:
        p = f"blocks.{i}."
        qkv = get(p + "attn.qkv.weight")  # [3D, D], rows q | k | v
        return {
            "norm1": {"scale": get(p + "norm1.weight"), "bias": get(p + "norm1.bias")},
            "attn": {
                "qkv": qkv.T.reshape(d, 3, h, d // h),
                "q_bias": get(p + "attn.q_bias").reshape(h, d // h),
                "v_bias": get(p + "attn.v_bias").reshape(h, d // h),
                "proj": get(p + "attn.proj.weight").T.reshape(h, d // h, d),
                "proj_bias": get(p + "attn.proj.bias"),
            },
            "norm2": {"scale": get(p + "norm2.weight"), "bias": get(p + "norm2.bias")},
            "mlp": {
                "fc1": {"kernel": get(p + "mlp.fc1.weight").T, "bias": get(p + "mlp.fc1.bias")},
                "fc2": {"kernel": get(p + "mlp.fc2.weight").T, "bias": get(p + "mlp.fc2.bias")},
            },
        }

    blocks = [block(i) for i in range(_num_blocks(state))]
    canonical = {
        "patch_embed": {
            "kernel": get("patch_embed.proj.weight").transpose(2, 3, 4, 1, 0),  # (t, h, w, in, out)
            "bias": get("patch_embed.proj.bias"),
        },
        "blocks": jax.tree.map(lambda *a: np.stack(a), *blocks),
    }
    if "pos_embed" in state:
        canonical["pos_embed"] = get("pos_embed").reshape(-1, d)
    ignored = sorted(set(state) - used)
    if ignored:
        warnings.warn(f"UMT conversion ignores {len(ignored)} tensors that are not the encoder, e.g. {ignored[:3]}",
                      stacklevel=2)
    return canonical


def assign_umt_params(
    encoder: UMTEncoder, canonical: Mapping, pos_embed_grid: tuple[int, int, int] | None = None
) -> None:
    """Write canonical params into `encoder` (either block layout); a learned table is resized."""
    c = encoder.config
    tree = {"patch_embed": dict(canonical["patch_embed"])}
    blocks = canonical["blocks"]
    if c.scan:
        tree["blocks"] = blocks
    else:
        tree["blocks"] = {i: jax.tree.map(lambda a, i=i: a[i], blocks) for i in range(c.depth)}
    if c.pos_embed == "learned":
        if "pos_embed" not in canonical:
            raise ValueError("encoder wants a learned pos_embed but the weights carry none")
        table = np.asarray(canonical["pos_embed"])
        tree["pos_embed"] = resize_pos_embed(table, pos_embed_grid or c.grid, c.grid)
    params = nnx.state(encoder, nnx.Param)
    current = nnx.to_pure_dict(params)
    flat_now = dict(jax.tree_util.tree_flatten_with_path(current)[0])
    flat_new = dict(jax.tree_util.tree_flatten_with_path(tree)[0])
    if set(flat_now) != set(flat_new):
        raise ValueError(f"parameter names differ: {sorted(map(str, set(flat_now) ^ set(flat_new)))[:5]}")
    for path, value in flat_new.items():
        if flat_now[path].shape != np.shape(value):
            name = jax.tree_util.keystr(path)
            raise ValueError(f"parameter {name}: weights have {np.shape(value)}, encoder wants {flat_now[path].shape}")

    def like(new, old):  # keep the dtype, and the placement of arrays already on devices
        value = np.asarray(new, old.dtype)
        return jax.device_put(value, old.sharding) if isinstance(old, jax.Array) else value

    tree = jax.tree.map(like, tree, current)
    nnx.replace_by_pure_dict(params, tree)
    nnx.update(encoder, params)


def load_umt(
    path: PathLike,
    *,
    num_frames: int = 16,
    image_size: int | tuple[int, int] = 224,
    num_heads: int | None = None,
    **overrides,
) -> UMTEncoder:
    """A released UMT ``.pth`` -> an encoder for `num_frames` x `image_size` carrying its weights.

    Depth, width and tubelet come from the weights, heads from the standard variants unless given;
    a stored ``pos_embed`` becomes a learned table resized by UMT's rules. `overrides` set other
    :class:`UMTConfig` fields (dtype, scan, remat, taps, ...).
    """
    state = read_umt_state(path)
    config = umt_config_from_state(
        state, num_frames=num_frames, image_size=image_size, num_heads=num_heads, **overrides
    )
    canonical = umt_canonical(state, config.width, config.num_heads)
    grid = None
    if "pos_embed" in canonical:
        grid = _pos_embed_grid(canonical["pos_embed"].shape[0], config, str(path))
    encoder = UMTEncoder(config, rngs=nnx.Rngs(0))
    assign_umt_params(encoder, canonical, grid)
    return encoder


def save_umt_checkpoint(canonical: Mapping, config: UMTConfig, directory: PathLike) -> None:
    """Write canonical UMT params (orbax) and the facts needed to rebuild them (JSON).

    A stored pos_embed keeps its token count; its grid is inferred when restoring, against the
    frame count of the encoder it goes into (UMT's rule).
    """
    directory = as_path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    facts = dict(width=config.width, depth=config.depth, num_heads=config.num_heads, tubelet=config.tubelet,
                 patch_size=config.patch_size)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / _PARAMS_DIR, jax.tree.map(np.asarray, dict(canonical)), force=True)
    checkpointer.wait_until_finished()
    temporary = directory / f"{_CONFIG_FILE}.tmp"  # the facts file appears whole or not at all
    temporary.write_text(json.dumps(facts, indent=1))
    temporary.rename(directory / _CONFIG_FILE)


def restore_umt_checkpoint(directory: PathLike, encoder: UMTEncoder) -> None:
    """Load a converted UMT checkpoint (``convert-umt``) into `encoder`, whatever its layout and grid."""
    directory = as_path(directory)
    if not (directory / _CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a converted UMT checkpoint (no {_CONFIG_FILE})")
    facts = json.loads((directory / _CONFIG_FILE).read_text())
    c = encoder.config
    for field in ("width", "depth", "num_heads", "tubelet", "patch_size"):
        if facts[field] != getattr(c, field):
            raise ValueError(f"{directory}: checkpoint has {field}={facts[field]}, encoder {getattr(c, field)}")
    canonical = ocp.StandardCheckpointer().restore(directory / _PARAMS_DIR)
    grid = None
    if c.pos_embed == "sinusoid":
        canonical.pop("pos_embed", None)
    elif "pos_embed" in canonical:
        grid = _pos_embed_grid(canonical["pos_embed"].shape[0], c, str(directory))
    assign_umt_params(encoder, canonical, grid)


def convert_umt(pth: PathLike, out: PathLike, *, num_heads: int | None = None) -> UMTConfig:
    """Convert a released UMT ``.pth`` into an orbax checkpoint directory; returns its config."""
    state = read_umt_state(pth)
    config = umt_config_from_state(state, num_heads=num_heads)
    save_umt_checkpoint(umt_canonical(state, config.width, config.num_heads), config, out)
    return config


def main(argv: list[str] | None = None) -> None:
    """The CLI: ``convert-umt --pth X --out Y``."""
    parser = argparse.ArgumentParser(
        prog="python -m salax.models.umt_weights",
        description="Released UMT weights. convert-umt: turn a released UMT .pth into an orbax checkpoint "
        "that configs start from (--config.init_from=OUT; in Python restore_umt_checkpoint(OUT, encoder)). "
        "Needs torch: pip install -e '.[convert]'.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert-umt", help="convert a UMT PyTorch .pth to an orbax checkpoint")
    convert.add_argument("--pth", required=True, help="released UMT checkpoint (.pth, key 'model' or 'module')")
    convert.add_argument("--out", required=True, help="output directory (created; overwritten if present)")
    convert.add_argument("--num-heads", type=int, default=None, help="attention heads (default: by width)")
    args = parser.parse_args(argv)
    try:
        config = convert_umt(args.pth, args.out, num_heads=args.num_heads)
    except (FileNotFoundError, ValueError, ImportError) as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    print(f"wrote {args.out}: UMT width {config.width}, depth {config.depth}, heads {config.num_heads}, "
          f"tubelet {config.tubelet}, pos_embed {config.pos_embed}")


if __name__ == "__main__":
    main()
