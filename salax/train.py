"""The training job: sharded state, the jitted step, the loop with evaluation, checkpoints and logs.

The step is a pure function of a train-state pytree (`step`, `params`, `opt_state`, `rng`) and a
batch; the model is rebuilt inside it with `nnx.merge`. State is created directly sharded
(`jax.jit` with `out_shardings`), the step donates it, and the same code runs on one device, N
devices or many hosts: only the mesh in the config changes.
"""

from collections.abc import Callable, Iterator, Mapping
import dataclasses
import pathlib
import time
from typing import Any

from flax import nnx
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from salax import demo, losses, optimizer, sharding
from salax import workdir as run_dir
from salax.checkpoint import RunCheckpoints
from salax.data import pipeline
from salax.evaluate import split
from salax.inference import RUN_ONCE_COMPILER_OPTIONS, ShardedModel
from salax.models.saliency import build_model
from salax.models.umt_weights import restore_umt_checkpoint
from salax.preemption import Preemption
from salax.workdir import UserError, Workdir

TrainState = dict[str, Any]  # {"step", "params", "opt_state", "rng"}: what checkpoints hold
Batch = Mapping[str, np.ndarray]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]


# ----------------------------------------------------------------------------------- the config


def check_config(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """Refuse values that would fail (or silently do nothing) later, before anything compiles.

    Returns the mesh the config describes on this job's devices.
    """
    problems = [f"{name}={config[name]} must be a positive number of steps"
                for name in ("num_steps", "log_every", "eval_every", "checkpoint_every") if config[name] < 1]
    if config.keep_checkpoints < 1:
        problems.append(f"keep_checkpoints={config.keep_checkpoints} must be at least 1")
    try:
        mesh = sharding.make_mesh(config.mesh)
        shards = sharding.data_shards(mesh, sharding.logical_rules(config.logical_rules))
    except ValueError as error:
        raise UserError(f"config mesh: {error}") from None
    processes = jax.process_count()
    for field in ("batch_size", "eval_batch_size"):
        size = config.data[field]
        if size < 1 or size % shards or size % processes:
            problems.append(f"data.{field}={size} must be a positive multiple of the {shards} data shards of the "
                            f"mesh and of the {processes} processes")
    if problems:
        raise UserError("config: " + "; ".join(problems))
    return mesh


# ------------------------------------------------------------------------------- state and step


def _is_variable(node: Any) -> bool:
    return isinstance(node, nnx.Variable)


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """What the jitted train functions close over: the sharded model, the optimiser, the state's shardings.

    Named for what it is: it holds no state and runs no loop (that is `train`); it is the fixed
    setup from which the state is initialised or restored and the step is compiled.
    """

    config: ml_collections.ConfigDict
    model: ShardedModel
    tx: optax.GradientTransformation
    state_sharding: Any

    @classmethod
    def create(cls, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> "TrainSetup":
        """Shapes and shardings of everything, from the config; allocates only the RNG streams."""
        model = ShardedModel.create(config, mesh)
        tx = optimizer.make_optimizer(config, model.param_shapes)
        abstract_opt_state = jax.eval_shape(tx.init, model.param_shapes)
        replicated = sharding.replicated(mesh)
        state_sharding = {
            "step": replicated,
            "params": model.params_sharding,
            "opt_state": sharding.mirror_param_shardings(abstract_opt_state, model.params_sharding, mesh),
            "rng": replicated,
        }
        return cls(config, model, tx, state_sharding)

    def _init(self) -> TrainState:
        model = build_model(self.config.model, rngs=nnx.Rngs(self.config.seed))
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": self.tx.init(params),
            "rng": jax.random.key_data(jax.random.key(self.config.seed + 1, impl=self.config.rng_impl)),
        }

    def init_state(self) -> TrainState:
        """Fresh parameters and optimiser state, created directly in their shardings."""
        with self.model.context():
            lowered = jax.jit(self._init, out_shardings=self.state_sharding).lower()
            state = lowered.compile(RUN_ONCE_COMPILER_OPTIONS)()
        if self.config.init_from:
            state["params"] = self._load_encoder(state["params"])
        return state

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the state: the target checkpoints are restored into."""
        with self.model.context():
            shapes = jax.eval_shape(self._init)
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                            self.state_sharding)

    def _load_encoder(self, params: Any) -> Any:
        """Replace the encoder's weights by a converted UMT checkpoint (`config.init_from`)."""
        model = self.model.model(jax.device_get(params))
        restore_umt_checkpoint(pathlib.Path(self.config.init_from).expanduser(), model.encoder)
        loaded = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return jax.device_put(loaded, self.state_sharding["params"])

    def _reseeded_model(self, params: Any, rng: jax.Array, step: jax.Array) -> nnx.Module:
        """The model with every RNG stream seeded from (run rng, step): resumes draw the same noise."""
        key = jax.random.fold_in(jax.random.wrap_key_data(rng, impl=self.config.rng_impl), step)
        rest = self.model.rest
        streams = sorted({var.tag for var in jax.tree.leaves(rest, is_leaf=_is_variable)
                          if isinstance(var, nnx.RngKey)})

        def reseed(var: nnx.Variable) -> nnx.Variable:
            if isinstance(var, nnx.RngKey):
                return var.replace(jax.random.fold_in(key, streams.index(var.tag)))
            if isinstance(var, nnx.RngCount):
                return var.replace(jnp.zeros_like(var.get_value()))
            return var

        return nnx.merge(self.model.graphdef, params, jax.tree.map(reseed, rest, is_leaf=_is_variable))

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        """One optimiser update; pure, so it can be jitted with donated state."""
        weights = dict(self.config.loss)

        def loss_fn(params):
            model = self._reseeded_model(params, state["rng"], state["step"])
            logits = model(batch["video"], batch["audio"], batch["has_audio"], deterministic=False)
            return losses.saliency_loss(logits, batch["saliency"], batch["fixations"], batch["num_fixations"],
                                        weights)

        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "rng": state["rng"],
        }
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **parts}

    def jit_train_step(self) -> StepFn:
        """The step compiled for the mesh: state in and out in its shardings, donated; metrics replicated."""
        mesh = self.model.mesh
        step = jax.jit(self.train_step, in_shardings=(self.state_sharding, self.model.batch_sharding),
                       out_shardings=(self.state_sharding, sharding.replicated(mesh)), donate_argnums=0)

        def run(state: TrainState, batch: Batch):
            with self.model.context():
                return step(state, batch)

        return run


# ------------------------------------------------------------------------------------ the loop


def _flush(pending: list[tuple[int, dict]], log: run_dir.RunLog, schedule: optax.Schedule, batch_size: int,
           since: float, checkpoints: RunCheckpoints) -> None:
    """Fetch the metrics of the steps since time `since`, stop on a non-finite loss, log the mean."""
    fetched = jax.device_get([metrics for _, metrics in pending])
    elapsed = time.perf_counter() - since
    for (step, _), metrics in zip(pending, fetched):
        if not np.isfinite(metrics["loss"]):
            checkpoints.wait()
            last = checkpoints.latest_step()
            kept = f"step {last} in {checkpoints.directory}" if last is not None else "none (no save yet)"
            raise FloatingPointError(f"training loss became {metrics['loss']} at step {step}; stopped. "
                                     f"The last good checkpoint is {kept}.")
    last_step = pending[-1][0]
    means = {name: float(np.mean([m[name] for m in fetched])) for name in fetched[0]}
    seconds = elapsed / len(pending)
    log.scalars(last_step, {**means, "lr": float(schedule(last_step - 1)), "step_time": seconds,
                            "clips_per_s": batch_size / seconds})
    pending.clear()


class Preempted(Exception):
    """The run stopped on a signal after saving the checkpoint of `step`; the same command resumes it."""

    def __init__(self, step: int, signal_name: str, directory: Any):
        super().__init__(f"stopped on {signal_name} at step {step}: its checkpoint is saved in {directory}; "
                         "run the same command again to resume from there")
        self.step = step


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` ends with: the setup, the final state, and the last validation summary (or None)."""

    setup: TrainSetup
    state: TrainState
    evaluation: dict[str, Any] | None


class _Validation:
    """Validation during training: score, write `eval/step_N.json`, log scalars and the image."""

    def __init__(self, config: ml_collections.ConfigDict, data: split.EvalData, setup: TrainSetup,
                 workdir: Workdir, log: run_dir.RunLog):
        self._config, self._workdir, self._log = config, workdir, log
        self._evaluator = split.ValidationEvaluator(data, setup.model.predict_fn())

    def __call__(self, params: Any, step: int) -> dict[str, Any]:
        write = self._config.write_predictions and step == self._config.num_steps
        evaluation = self._evaluator(params, predictions_dir=self._workdir.predictions if write else None)
        summary = {"step": step, **evaluation.summary}
        if jax.process_index() == 0:
            run_dir.write_json(self._workdir.eval_step(step), summary)
        self._log.scalars(step, evaluation.scalars(), prefix="eval")
        if evaluation.image is not None:
            self._log.image(step, "eval/frames_truth_prediction", evaluation.image)
        return summary


def train(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    train_batches: Iterator[Batch],
    *,
    validation: split.EvalData | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train to `config.num_steps`, resuming from the latest checkpoint in `workdir` if any.

    `train_batches` yields this process's slice of each global batch (the batch contract) and has
    grain's `get_state`/`set_state`, so checkpoints hold its position. With `validation`, the
    model is scored on it every `eval_every` steps and at the end (after the final save).
    On SIGTERM or SIGINT it saves the step every process has reached and raises `Preempted`; a
    checkpoint that cannot be saved raises `checkpoint.CheckpointSaveError` (nothing runs after it).
    """
    mesh = check_config(config)
    run = Workdir.at(workdir)
    run_dir.prepare(config, run, overwrite=overwrite, mesh=mesh)
    multihost_utils.sync_global_devices("workdir ready")
    setup = TrainSetup.create(config, mesh)
    checkpoints = RunCheckpoints(run.checkpoints, keep=config.keep_checkpoints)
    start = checkpoints.latest_step()
    if start is None:
        start, state = 0, setup.init_state()
    else:
        state = checkpoints.restore(start, setup.abstract_state(), train_batches)
        run_dir.say(f"resuming from step {start} in {checkpoints.directory}")
    step_fn = setup.jit_train_step()
    schedule = optimizer.learning_rate_schedule(config)
    log = run_dir.RunLog(run, start_step=start, num_steps=config.num_steps)
    validate = _Validation(config, validation, setup, run, log) if validation is not None else None
    summary = None
    pending: list[tuple[int, dict]] = []
    tick = time.perf_counter()
    try:
        with Preemption() as preemption:
            for step in range(start + 1, config.num_steps + 1):
                batch = pipeline.to_global_batch(next(train_batches), setup.model.batch_sharding)
                state, metrics = step_fn(state, batch)
                pending.append((step, metrics))
                log.advance(1)
                last = step == config.num_steps
                stop = preemption.reached(step) and not last
                evaluate = validate is not None and (step % config.eval_every == 0 or last) and not stop
                save = step % config.checkpoint_every == 0 or last or stop
                if step % config.log_every == 0 or evaluate or save:
                    _flush(pending, log, schedule, config.data.batch_size, tick, checkpoints)
                    tick = time.perf_counter()
                scores = None
                if evaluate and not last:  # scored first, so the save carries the metric "best" ranks by
                    summary = validate(state["params"], step)
                    scores = summary["model"]
                    tick = time.perf_counter()
                if save:
                    checkpoints.save(step, state, train_batches, metrics=scores)
                if stop:
                    checkpoints.wait()
                    raise Preempted(step, preemption.signal_name, checkpoints.directory)
                if evaluate and last:  # saved first: a failure in the final evaluation loses no step
                    checkpoints.wait()
                    summary = validate(state["params"], step)
        checkpoints.wait()
        if validate is not None and (summary is None or summary["step"] != config.num_steps):
            summary = validate(state["params"], config.num_steps)  # the run had finished before this start
    finally:
        log.close()
        checkpoints.close()
    return TrainResult(setup, state, summary)


# ------------------------------------------------------------------------------ the whole job


def train_batches(config: ml_collections.ConfigDict) -> Iterator[Batch]:
    """This process's shard of the training clips, as a checkpointable grain iterator."""
    model, data_dir = config.model, pathlib.Path(config.data.data_dir).expanduser()
    try:
        pipeline.list_videos(data_dir, builder_config=config.data.builder_config, split=config.data.train_split)
    except FileNotFoundError as error:
        problem = " ".join(str(error).split())
        raise UserError(
            f"{problem} With this config: python -m salax.data.build_avimos --manual_dir {config.data.manual_dir} "
            f"--data_dir {config.data.data_dir} --config {config.data.builder_config}") from None
    dataset = pipeline.train_dataset(
        data_dir,
        builder_config=config.data.builder_config,
        split=config.data.train_split,
        clip_frames=model.num_frames,
        stride=config.data.clip_stride,
        image_size=tuple(model.image_size),
        target=model.target,
        audio=model.audio,
        max_fixations=config.data.max_fixations,
        batch_size=config.data.batch_size // jax.process_count(),
        seed=config.seed,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        flip=config.data.flip,
        num_threads=config.data.num_threads,
        worker_count=config.data.num_workers,
    )
    return iter(dataset)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       overwrite: bool = False) -> dict[str, Any]:
    """The job behind `python -m salax.main`: data, training, evaluation, predictions, summary.

    Returns the final evaluation summary, also written to `<workdir>/eval/summary.json`.
    """
    mesh = check_config(config)
    run = Workdir.at(workdir)
    run_dir.prepare(config, run, overwrite=overwrite, mesh=mesh)  # a workdir of another run: refused before data
    if config.data.synthetic_videos:
        demo.prepare_synthetic_data(config)
    result = train(config, workdir, train_batches(config), validation=split.EvalData.from_config(config),
                   overwrite=overwrite)
    if jax.process_index() == 0:
        run_dir.write_json(run.summary, result.evaluation)
        _print_where_everything_is(run, result.evaluation)
    return result.evaluation


def _print_where_everything_is(run: Workdir, summary: Mapping[str, Any]) -> None:
    model, prior = summary["model"], summary["centre_prior"]
    lines = [
        f"\nDone: {summary['videos']} {summary['split']} videos, {summary['frames']} frames, step {summary['step']}.",
        f"{'':14s}" + "".join(f"{name:>10s}" for name in model),
        f"{'model':14s}" + "".join(f"{value:10.4f}" for value in model.values()),
        f"{'centre prior':14s}" + "".join(f"{value:10.4f}" for value in prior.values()),
        f"summary      {run.summary}",
        f"checkpoints  {run.checkpoints}",
        f"logs         {run.log_file}  (tensorboard --logdir {run.tensorboard})",
    ]
    if run.predictions.is_dir():
        lines.append(f"predictions  {run.predictions}  (<video>.mp4 maps, <video>_overlay.mp4)")
    print("\n".join(lines), flush=True)
