"""Training losses for saliency maps: KL divergence, correlation (CC) and NSS.

These are the differentiable training objectives, computed on the model's grid from
`sigmoid(logits)`, the same map the model is scored on. The official AIM scoring (resizing to
the ground-truth grid, min-max normalisation, every frame) lives in `salax.metrics`.

Shapes: maps are `[..., H, W]` (any leading frame/batch dims), fixations `[..., N, 2]` as
(row, col) on the H x W grid, padded, with `num_fixations` `[...]` valid entries each.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp

_EPS = 1e-7


def kl_divergence(pred: jax.Array, target: jax.Array) -> jax.Array:
    """KL(target || pred) per frame, both maps normalised to sum 1 (AIM's KLD formula)."""
    pred = pred / (jnp.sum(pred, axis=(-2, -1), keepdims=True) + _EPS)
    target = target / (jnp.sum(target, axis=(-2, -1), keepdims=True) + _EPS)
    return jnp.sum(target * jnp.log(_EPS + target / (pred + _EPS)), axis=(-2, -1))


def _standardise(x: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=(-2, -1), keepdims=True)
    # sqrt(var + tiny) rather than std: finite gradients on flat maps.
    std = jnp.sqrt(jnp.mean(jnp.square(x - mean), axis=(-2, -1), keepdims=True) + 1e-12)
    return (x - mean) / (std + _EPS)


def correlation(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Pearson correlation (CC) per frame, in [-1, 1]."""
    a, b = _standardise(pred), _standardise(target)
    num = jnp.sum(a * b, axis=(-2, -1))
    return num / jnp.sqrt(jnp.sum(a * a, axis=(-2, -1)) * jnp.sum(b * b, axis=(-2, -1)) + _EPS)


def normalised_scanpath_saliency(
    pred: jax.Array, fixations: jax.Array, num_fixations: jax.Array
) -> jax.Array:
    """NSS per frame: mean standardised prediction at the valid fixations (0 where there are none)."""
    height, width = pred.shape[-2:]
    z = _standardise(pred).reshape(*pred.shape[:-2], height * width)
    rows = jnp.clip(fixations[..., 0], 0, height - 1)
    cols = jnp.clip(fixations[..., 1], 0, width - 1)
    values = jnp.take_along_axis(z, rows * width + cols, axis=-1)
    valid = jnp.arange(fixations.shape[-2]) < num_fixations[..., None]
    count = jnp.sum(valid, axis=-1)
    return jnp.sum(jnp.where(valid, values, 0.0), axis=-1) / jnp.maximum(count, 1)


def saliency_loss(
    logits: jax.Array,
    saliency: jax.Array,
    fixations: jax.Array,
    num_fixations: jax.Array,
    weights: Mapping[str, float],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted `kl * KL + cc * (1 - CC) - nss * NSS`, averaged over frames.

    `weights` has keys `kl`, `cc`, `nss`. NSS is averaged only over frames that have fixations.
    Returns the scalar loss and the mean KL, CC and NSS for logging.
    """
    if logits.shape != saliency.shape:
        raise ValueError(f"logits {logits.shape} and saliency target {saliency.shape} differ in shape")
    pred = jax.nn.sigmoid(logits.astype(jnp.float32))
    target = saliency.astype(jnp.float32)
    kl = jnp.mean(kl_divergence(pred, target))
    cc = jnp.mean(correlation(pred, target))
    has_fixations = (num_fixations > 0).astype(jnp.float32)
    nss_per_frame = normalised_scanpath_saliency(pred, fixations, num_fixations)
    nss = jnp.sum(nss_per_frame * has_fixations) / jnp.maximum(jnp.sum(has_fixations), 1.0)
    loss = weights["kl"] * kl + weights["cc"] * (1.0 - cc) - weights["nss"] * nss
    return loss, {"kl": kl, "cc": cc, "nss": nss}
