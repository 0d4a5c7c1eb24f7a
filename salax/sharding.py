"""Device mesh, logical-axis rules, and the shardings of train state and batches.

The model names its parameter axes logically (`embed`, `mlp`, `heads`, ...); the config maps
those names to mesh axes (`data`, `fsdp`, `tensor`). Changing only the config moves a run
between data parallelism, FSDP and tensor parallelism, on one device or a pod.
"""

from collections.abc import Mapping, Sequence
import logging
import math
from typing import Any

from flax import nnx
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from salax.models.axes import LOGICAL_AXES

MESH_AXES = ("data", "fsdp", "tensor")

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Every logical name the model uses (salax.models.axes.LOGICAL_AXES). `batch` comes first: a mesh
# axis the batch already uses is not reused for another dimension of the same activation (flax
# resolves rules in order), so `embed -> fsdp` shards weights but not activations.
DEFAULT_LOGICAL_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("channels", "tensor"),
    # Not `fsdp` on a kernel's input channels: with `tensor` on its output channels, XLA's SPMD partitioner
    # (jax 0.10.2) miscomputes the input gradient of such a convolution (tests/test_train_distributed.py).
    ("channels_out", ("tensor", "fsdp")),
    ("kv", None),
    ("time", None),
    ("length", None),
    ("height", None),
    ("width", None),
    ("mel", None),
)


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Sizes of (`data`, `fsdp`, `tensor`), with at most one -1 standing for the devices left."""
    unknown = [name for name in axis_sizes if name not in MESH_AXES]
    if unknown:
        raise ValueError(f"mesh axes {unknown} are not among {MESH_AXES}")
    sizes = [int(axis_sizes.get(name, 1)) for name in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
    if any(size == 0 or size < -1 for size in sizes):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive or -1")
    known = math.prod(size for size in sizes if size != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not a multiple of {known}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                         f"but {num_devices} are available")
    return tuple(sizes)


def make_mesh(axis_sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The (`data`, `fsdp`, `tensor`) mesh over all devices of all processes."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(axis_sizes, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_rules(rules: Sequence[Sequence[Any]]) -> LogicalRules:
    """Config rules (lists, as ConfigDicts store them) as the tuples flax expects.

    A logical axis of the model that the rules do not name is replicated: a run or export recorded
    before the model named that axis (`channels_out`) keeps loading with the layout it was saved with.
    """
    def mesh_axes(value: Any) -> str | tuple[str, ...] | None:
        if value is None or isinstance(value, str):
            return value
        return tuple(value)

    named = tuple((str(name), mesh_axes(value)) for name, value in rules)
    return named + tuple((name, None) for name in LOGICAL_AXES if name not in dict(named))


def _fits(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Replicate any dimension that the mesh axes named for it do not divide evenly."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[name] for name in names)
        fitted.append(axes if dim % size == 0 else None)
    return PartitionSpec(*fitted)


def param_shardings(abstract_params: nnx.State, mesh: Mesh, rules: LogicalRules) -> dict:
    """NamedShardings for a model's parameters from their logical-axis metadata, as a pure dict."""
    with nnx.logical_axis_rules(rules):
        specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract_params))
    shapes = nnx.to_pure_dict(abstract_params)
    unfit = []

    def sharding(path, spec, leaf):
        fitted = _fits(spec, leaf.shape, mesh)
        if fitted != spec:
            unfit.append(f"{jax.tree_util.keystr(path)} {leaf.shape} {spec}")
        return NamedSharding(mesh, fitted)

    out = jax.tree_util.tree_map_with_path(sharding, specs, shapes)
    if unfit:
        logging.warning("replicating dimensions the mesh does not divide: %s", "; ".join(unfit))
    return out


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def mirror_param_shardings(tree: Any, params_sharding: Any, mesh: Mesh) -> Any:
    """Shardings for an optimiser state: subtrees shaped like the params follow the params.

    Optax states hold copies of the parameter tree (Adam's moments); everything else (counts,
    schedules) is small and replicated.
    """
    params_def = jax.tree.structure(params_sharding)

    def like_params(node: Any) -> bool:
        return jax.tree.structure(node) == params_def

    return jax.tree.map(lambda node: params_sharding if like_params(node) else replicated(mesh),
                        tree, is_leaf=like_params)


def batch_axes(rules: LogicalRules) -> tuple[str, ...]:
    """The mesh axes that the logical `batch` axis is split over."""
    mapped = dict(rules).get("batch")
    if mapped is None:
        return ()
    return (mapped,) if isinstance(mapped, str) else tuple(mapped)


def batch_sharding(mesh: Mesh, rules: LogicalRules) -> NamedSharding:
    """Leading (batch) dimension split over the batch mesh axes, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(batch_axes(rules)))


def data_shards(mesh: Mesh, rules: LogicalRules) -> int:
    """How many ways a global batch is split; the batch size must be a multiple of it."""
    return math.prod(mesh.shape[name] for name in batch_axes(rules))
