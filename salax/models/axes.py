"""Logical axis names for parameters and activations, so sharding rules alone decide the layout.

Every parameter is created through :func:`param` and every main activation passes through
:func:`constrain`; the training code maps the names to mesh axes with ``nnx.logical_axis_rules``
(for example ``embed -> fsdp``, ``mlp``/``heads`` -> ``tensor``, ``batch -> (data, fsdp)``).
Every name in :data:`LOGICAL_AXES` must appear in those rules (map it to ``None`` to replicate).
"""

from collections.abc import Sequence

from flax import linen, nnx
from flax.core import meta
import jax

LOGICAL_AXES = (
    "batch",  # clips in a batch
    "time",  # frames (or tubelets) of a clip, and audio frames
    "length",  # encoder tokens (time x height x width flattened)
    "embed",  # encoder width D
    "mlp",  # encoder MLP hidden width
    "heads",  # attention heads
    "kv",  # width of one attention head
    "height",  # rows of a feature map
    "width",  # columns of a feature map
    "channels",  # decoder and audio feature channels
    "channels_out",  # output channels of a decoder convolution kernel (tensor and fsdp split them)
    "mel",  # mel frequency bins
)

Axes = Sequence[str | None]


def param(
    initializer: nnx.initializers.Initializer,
    key: jax.Array,
    shape: Sequence[int],
    dtype: jax.typing.DTypeLike,
    names: Axes,
) -> nnx.Param:
    """A parameter carrying logical axis names (flax >= 0.12.4 stores them as ``out_sharding``).

    Sharding at creation happens only when a mesh is active; otherwise the model builds unsharded
    on one device (tests, CPU) and the names are read later by ``nnx.get_partition_spec``.
    """
    if len(names) != len(shape):
        raise ValueError(f"axis names {tuple(names)} do not match parameter shape {tuple(shape)}")
    value = initializer(key, tuple(shape), dtype)
    return nnx.Param(value, out_sharding=tuple(names), eager_sharding=meta.global_mesh_defined())


def constrain(x: jax.Array, names: Axes) -> jax.Array:
    """Pin an activation's layout by logical names; a no-op without axis rules and a mesh."""
    return linen.with_logical_constraint(x, tuple(names))
