"""The optimiser of a run: AdamW with gradient clipping, warmup + cosine, and layer-wise lr decay.

Weight decay applies to weight matrices only (not biases, norm scales or position tables); encoder
block i of depth d trains at `lr * layer_decay^(d - i)`, so pretrained early layers move least.
"""

from typing import Any

import jax
import ml_collections
import numpy as np
import optax


def _path_names(path: tuple) -> list[str]:
    return [str(getattr(key, "key", getattr(key, "idx", key))) for key in path]


def weight_decay_mask(params: Any) -> Any:
    """Decay weight matrices only: not biases, norm scales or position tables."""
    def decays(path, leaf) -> bool:
        names = _path_names(path)
        exempt = any("bias" in n or "pos_embed" in n for n in names) or names[-1] == "scale"
        return np.ndim(leaf) >= 2 and not exempt

    return jax.tree_util.tree_map_with_path(decays, params)


def layer_lr_scales(params: Any, decay: float) -> Any:
    """Per-parameter lr multipliers: encoder block i of depth d gets decay^(d - i), its embeddings
    decay^(d + 1); everything outside the encoder (decoder, audio) trains at the full rate.

    Blocks may be separate (`encoder/blocks/<i>/...`) or stacked along a leading depth axis
    (scanned); stacked parameters get a per-block vector of scales.
    """
    def block_index(names: list[str]) -> str | None:
        return names[names.index("blocks") + 1] if "blocks" in names[:-1] else None

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    encoder = [(_path_names(path), leaf) for path, leaf in flat if "encoder" in _path_names(path)]
    indices = {block_index(names) for names, _ in encoder} - {None}
    stacked = [leaf for names, leaf in encoder if block_index(names) is not None and not block_index(names).isdigit()]
    depth = stacked[0].shape[0] if stacked else len(indices)

    def scale(path, leaf):
        names = _path_names(path)
        if "encoder" not in names or decay == 1.0:
            return np.float32(1.0)
        index = block_index(names)
        if index is None:
            return np.float32(decay ** (depth + 1))
        if index.isdigit():
            return np.float32(decay ** (depth - int(index)))
        layers = decay ** (depth - np.arange(depth, dtype=np.float64))
        return layers.astype(np.float32).reshape((depth,) + (1,) * (np.ndim(leaf) - 1))

    return jax.tree_util.tree_map_with_path(scale, params)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup to the peak, then cosine decay to `peak_lr * end_lr_fraction` at the last step."""
    opt = config.optimizer
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.peak_lr,
        warmup_steps=min(opt.warmup_steps, config.num_steps),
        decay_steps=max(config.num_steps, opt.warmup_steps + 1),
        end_value=opt.peak_lr * opt.end_lr_fraction,
    )


def make_optimizer(config: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
    """AdamW with gradient clipping, warmup + cosine and layer-wise lr decay for the encoder."""
    opt = config.optimizer
    scales = layer_lr_scales(params, opt.layer_decay)
    return optax.chain(
        optax.clip_by_global_norm(opt.clip_norm),
        optax.scale_by_adam(b1=opt.b1, b2=opt.b2),
        optax.add_decayed_weights(opt.weight_decay, mask=weight_decay_mask(params)),
        optax.scale_by_learning_rate(learning_rate_schedule(config)),
        optax.stateless(lambda updates, _: jax.tree.map(lambda u, s: u * s, updates, scales)),
    )
