"""The model as a sharded, jitted `(params, batch) -> saliency maps`, and a params-only restore of a run.

What training, validation, the evaluate CLI and prediction share: the model's structure and the
shardings of its parameters and batches on a mesh (`ShardedModel`), the deterministic forward
pass that turns logits into maps in [0, 1] (`ShardedModel.predict_fn`), and the parameters of one
checkpoint of a run without its optimiser state (`restore`), so nothing but training builds an
optimiser.
"""

from collections.abc import Callable, Iterator, Mapping
import contextlib
import dataclasses
import math
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from salax import sharding
from salax.batch import MODEL_INPUTS
from salax.checkpoint import RunCheckpoints
from salax.models.saliency import build_model
from salax.workdir import UserError, Workdir, read_config

# Initialisation runs once: unoptimised code compiles several times faster (minutes on big models).
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}

# `(params, batch) -> maps [B, h, w] in [0, 1]` (NumPy, the same on every process). `batch` holds
# the whole global batch of model inputs on every process, as host arrays.
Predict = Callable[[Any, Mapping[str, np.ndarray]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ShardedModel:
    """The model's structure and shardings on a mesh: what every jitted function of it closes over."""

    config: ml_collections.ConfigDict  # the run's config (its `model`, `seed`, `logical_rules`)
    mesh: jax.sharding.Mesh
    rules: sharding.LogicalRules
    graphdef: nnx.GraphDef
    rest: nnx.State  # non-parameter model state (RNG streams)
    param_shapes: Any  # pure dict of jax.ShapeDtypeStruct, without shardings
    params_sharding: Any
    batch_sharding: jax.sharding.NamedSharding

    @classmethod
    def create(cls, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> "ShardedModel":
        """Shapes and shardings of the model from the config; allocates only the RNG streams."""
        rules = sharding.logical_rules(config.logical_rules)
        with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
            abstract_model = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(config.seed)))
            graphdef, abstract_params, _ = nnx.split(abstract_model, nnx.Param, ...)
        params_sharding = sharding.param_shardings(abstract_params, mesh, rules)
        param_shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype),
                                    nnx.to_pure_dict(abstract_params))
        with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
            # Only the RNG streams are outputs, so XLA drops the parameter initialisers.
            rest = jax.jit(lambda: nnx.split(build_model(config.model, rngs=nnx.Rngs(config.seed)), nnx.Param, ...)[2],
                           out_shardings=sharding.replicated(mesh)).lower().compile(RUN_ONCE_COMPILER_OPTIONS)()
        return cls(config, mesh, rules, graphdef, rest, param_shapes, params_sharding,
                   sharding.batch_sharding(mesh, rules))

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """The mesh and logical-axis rules that tracing the model needs."""
        with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
            yield

    def abstract_params(self) -> Any:
        """Shapes, dtypes and shardings of the parameters: the target a checkpoint is restored into."""
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), self.param_shapes,
                            self.params_sharding)

    def model(self, params: Any) -> nnx.Module:
        """The model carrying `params` (inside jitted functions: traced values)."""
        return nnx.merge(self.graphdef, params, self.rest)

    def predict_fn(self) -> Predict:
        """The deterministic forward pass, compiled for the mesh: parameters in their shardings, the
        batch split over the data shards, maps replicated back to every process."""
        def predict(params, inputs):
            logits = self.model(params)(inputs["video"], inputs["audio"], inputs["has_audio"], deterministic=True)
            return jax.nn.sigmoid(logits.astype(jnp.float32))

        compiled = jax.jit(predict, in_shardings=(self.params_sharding, self.batch_sharding),
                           out_shardings=sharding.replicated(self.mesh))

        def global_array(array: np.ndarray) -> jax.Array:
            array = np.asarray(array)
            return jax.make_array_from_callback(array.shape, self.batch_sharding, lambda index: array[index])

        def run(params: Any, batch: Mapping[str, np.ndarray]) -> np.ndarray:
            inputs = {key: global_array(batch[key]) for key in MODEL_INPUTS}
            with self.context():
                return np.asarray(jax.device_get(compiled(params, inputs)))

        return run


@dataclasses.dataclass(frozen=True)
class Restored:
    """One checkpoint of a run, as inference needs it."""

    config: ml_collections.ConfigDict
    step: int
    model: ShardedModel
    params: Any


def checkpoint_step(run: Workdir, checkpoints: RunCheckpoints, step: str | int, metric: str = "cc") -> int:
    """The step that `step` names in `checkpoints`: a number, "latest", or "best": the checkpoint
    whose validation summary (eval/step_N.json) has the highest `metric`, else the latest.

    The summaries rather than orbax's saved metrics decide "best", because the final checkpoint
    is saved before its evaluation runs (so a failing evaluation loses no step).
    """
    steps = checkpoints.all_steps()
    where = checkpoints.directory
    if not steps:
        raise UserError(f"{where} holds no checkpoint")
    if step == "best":
        scored = {number: summary["model"][metric] for number, summary in run.evaluations().items()
                  if number in steps and math.isfinite(summary["model"].get(metric, math.nan))}
        return max(scored, key=scored.get) if scored else checkpoints.latest_step()
    if step == "latest":
        return checkpoints.latest_step()
    try:
        number = int(step)
    except ValueError:
        raise UserError(f"--step {step!r}: give best, latest or a step number (checkpoints: {steps})") from None
    if number not in steps:
        raise UserError(f"{where} holds no checkpoint of step {number} (it holds {steps})")
    return number


def resolve_step(workdir: str, step: str | int = "best") -> int:
    """The checkpoint step that `step` names in the run in `workdir` (a UserError if there is none)."""
    run = Workdir.at(workdir)
    config = read_config(run.root)
    checkpoints = RunCheckpoints(run.checkpoints, keep=config.keep_checkpoints, create=False)
    try:
        return checkpoint_step(run, checkpoints, step)
    finally:
        checkpoints.close()


def restore(workdir: str, step: str | int = "best", *, mesh: jax.sharding.Mesh | None = None) -> Restored:
    """The config and the parameters of checkpoint `step` of the run in `workdir` (no optimiser state).

    The parameters are placed in their shardings on `mesh` (default: the run's mesh config on the
    devices here, which need not be the devices it trained on).
    """
    run = Workdir.at(workdir)
    config = read_config(run.root)
    checkpoints = RunCheckpoints(run.checkpoints, keep=config.keep_checkpoints, create=False)
    try:
        number = checkpoint_step(run, checkpoints, step)
        model = ShardedModel.create(config, mesh if mesh is not None else sharding.make_mesh(config.mesh))
        params = checkpoints.restore_params(number, model.abstract_params())
    finally:
        checkpoints.close()
    return Restored(config, number, model, params)
