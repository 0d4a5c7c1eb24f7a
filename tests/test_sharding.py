"""Mesh sizes, logical rules and the parameter/optimiser shardings derived from them.

Multi-device layouts are checked for real in tests/test_train_distributed.py (8 CPU devices);
here the arithmetic and the rule plumbing run on this process's single device.
"""

from flax import nnx
import jax
from jax.sharding import PartitionSpec
import numpy as np
import optax
import pytest

from salax import sharding
from salax.models.axes import LOGICAL_AXES, param
from salax.models.layers import Conv


@pytest.mark.parametrize("axes, devices, expected", [
    (dict(data=-1, fsdp=1, tensor=1), 8, (8, 1, 1)),
    (dict(data=2, fsdp=-1, tensor=2), 8, (2, 2, 2)),
    (dict(data=1, fsdp=4), 4, (1, 4, 1)),
    (dict(data=-1, tensor=3), 6, (2, 1, 3)),
])
def test_mesh_shape_fills_the_minus_one(axes, devices, expected):
    assert sharding.mesh_shape(axes, devices) == expected


@pytest.mark.parametrize("axes, devices, message", [
    (dict(data=-1, fsdp=-1), 8, "at most one axis"),
    (dict(data=3, fsdp=1, tensor=1), 8, "needs 3 devices, but 8"),
    (dict(data=-1, tensor=3), 8, "not a multiple of 3"),
    (dict(data=1, model=2), 2, "'model'"),
    (dict(data=0), 1, "positive or -1"),
])
def test_bad_meshes_are_explained(axes, devices, message):
    with pytest.raises(ValueError, match=message):
        sharding.mesh_shape(axes, devices)


def test_default_rules_name_every_logical_axis_of_the_model():
    assert sorted(name for name, _ in sharding.DEFAULT_LOGICAL_RULES) == sorted(LOGICAL_AXES)
    assert sharding.DEFAULT_LOGICAL_RULES[0][0] == "batch"


def test_rules_from_config_lists_become_tuples():
    rules = sharding.logical_rules([["batch", ["data", "fsdp"]], ["embed", "fsdp"], ["kv", None]])
    assert rules[:3] == (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("kv", None))
    assert dict(rules[3:]) == {name: None for name in LOGICAL_AXES if name not in ("batch", "embed", "kv")}
    assert sharding.batch_axes(rules) == ("data", "fsdp")
    assert sharding.batch_axes((("embed", "fsdp"),)) == ()


class _Toy(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.kernel = param(init, rngs.params(), (4, 6), "float32", ("embed", "mlp"))
        self.odd = param(init, rngs.params(), (3, 6), "float32", ("embed", "mlp"))
        self.bias = param(init, rngs.params(), (6,), "float32", ("mlp",))


def test_param_shardings_follow_rules_and_replicate_what_does_not_divide():
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1))
    abstract = nnx.state(nnx.eval_shape(lambda: _Toy(nnx.Rngs(0))), nnx.Param)
    rules = (("embed", "fsdp"), ("mlp", "tensor"))
    specs = jax.tree.map(lambda s: s.spec, sharding.param_shardings(abstract, mesh, rules))
    assert specs == {"kernel": PartitionSpec("fsdp", "tensor"), "odd": PartitionSpec("fsdp", "tensor"),
                     "bias": PartitionSpec("tensor")}
    # On a 2-way fsdp axis a dimension of 3 cannot be split: that dimension is replicated.
    fake_mesh = type("FakeMesh", (), {"shape": {"data": 1, "fsdp": 2, "tensor": 3}})()
    assert sharding._fits(PartitionSpec("fsdp", "tensor"), (3, 6), fake_mesh) == PartitionSpec(None, "tensor")
    assert sharding._fits(PartitionSpec(("fsdp", "tensor")), (12,), fake_mesh) == PartitionSpec(("fsdp", "tensor"))


def test_optimiser_moments_mirror_the_parameter_shardings():
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1))
    params = {"a": np.zeros((4, 6), np.float32), "b": np.zeros(6, np.float32)}
    param_sharding = {"a": jax.sharding.NamedSharding(mesh, PartitionSpec("fsdp", "tensor")),
                      "b": jax.sharding.NamedSharding(mesh, PartitionSpec("tensor"))}
    opt_state = jax.eval_shape(optax.adamw(1e-3).init, params)
    mirrored = sharding.mirror_param_shardings(opt_state, param_sharding, mesh)
    adam = mirrored[0]
    assert adam.mu == param_sharding and adam.nu == param_sharding
    assert adam.count.spec == PartitionSpec()


def test_rules_recorded_before_the_model_named_an_axis_replicate_it():
    # A run's config.json from before `channels_out` existed: its rules do not name it.
    recorded = [[name, axes] for name, axes in sharding.DEFAULT_LOGICAL_RULES if name != "channels_out"]
    rules = sharding.logical_rules(recorded)
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1))
    conv = nnx.eval_shape(lambda: Conv(4, 8, (3, 3, 3), out_name="channels_out", rngs=nnx.Rngs(0)))
    specs = jax.tree.map(lambda s: s.spec, sharding.param_shardings(nnx.state(conv, nnx.Param), mesh, rules))
    assert specs == {"kernel": PartitionSpec(None, None, None, None, None), "bias": PartitionSpec("tensor")}
    current = jax.tree.map(lambda s: s.spec, sharding.param_shardings(
        nnx.state(conv, nnx.Param), mesh, sharding.logical_rules(sharding.DEFAULT_LOGICAL_RULES)))
    assert current["kernel"] == PartitionSpec(None, None, None, None, ("tensor", "fsdp"))
