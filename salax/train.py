"""The training job: sharded state, the jitted step, the loop with evaluation, checkpoints and logs.

The step is a pure function of a train-state pytree (`step`, `params`, `opt_state`, `rng`) and a
batch; the model is rebuilt inside it with `nnx.merge`. State is created directly sharded
(`jax.jit` with `out_shardings`), the step donates it, and the same code runs on one device, N
devices or many hosts: only the mesh in the config changes.
"""

from collections.abc import Callable, Iterator, Mapping
import dataclasses
import json
import pathlib
import shutil
import subprocess
import time
from typing import Any

from flax import nnx
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from salax import losses, sharding
from salax.checkpoint import RunCheckpoints, restore_umt_checkpoint
from salax.data import pipeline
from salax.models.saliency import build_model

TrainState = dict[str, Any]  # {"step", "params", "opt_state", "rng"}: what checkpoints hold
Batch = Mapping[str, np.ndarray]

# Fields that may change when a run is resumed; any other difference means another run.
RESUMABLE_FIELDS = ("data.num_workers", "data.num_threads", "log_every", "write_predictions")
CONFIG_FILE = "config.json"
# Initialisation runs once: unoptimised code compiles several times faster (minutes on big models).
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


# ----------------------------------------------------------------------------------- optimiser


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


# ------------------------------------------------------------------------------- state and step


def _is_variable(node: Any) -> bool:
    return isinstance(node, nnx.Variable)


@dataclasses.dataclass
class Trainer:
    """Everything the jitted functions close over: the model's structure, optimiser and shardings."""

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    rules: sharding.LogicalRules
    graphdef: nnx.GraphDef
    rest: nnx.State  # non-parameter model state (RNG streams), reseeded every step
    tx: optax.GradientTransformation
    state_sharding: Any
    batch_sharding: jax.sharding.NamedSharding

    @classmethod
    def create(cls, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> "Trainer":
        """Shapes and shardings of everything, from the config; allocates only the RNG streams."""
        rules = sharding.logical_rules(config.logical_rules)
        with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
            abstract_model = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(config.seed)))
            graphdef, abstract_params, _ = nnx.split(abstract_model, nnx.Param, ...)
        params_sharding = sharding.param_shardings(abstract_params, mesh, rules)
        pure_params = nnx.to_pure_dict(abstract_params)
        tx = make_optimizer(config, pure_params)
        abstract_opt_state = jax.eval_shape(tx.init, pure_params)
        replicated = sharding.replicated(mesh)
        state_sharding = {
            "step": replicated,
            "params": params_sharding,
            "opt_state": sharding.mirror_param_shardings(abstract_opt_state, params_sharding, mesh),
            "rng": replicated,
        }
        with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
            # Only the RNG streams are outputs, so XLA drops the parameter initialisers.
            rest = jax.jit(lambda: nnx.split(build_model(config.model, rngs=nnx.Rngs(config.seed)), nnx.Param, ...)[2],
                           out_shardings=replicated).lower().compile(RUN_ONCE_COMPILER_OPTIONS)()
        return cls(config, mesh, rules, graphdef, rest, tx, state_sharding, sharding.batch_sharding(mesh, rules))

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
        with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
            lowered = jax.jit(self._init, out_shardings=self.state_sharding).lower()
            state = lowered.compile(RUN_ONCE_COMPILER_OPTIONS)()
        if self.config.init_from:
            state["params"] = self._load_encoder(state["params"])
        return state

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the state: the target checkpoints are restored into."""
        with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
            shapes = jax.eval_shape(self._init)
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                            self.state_sharding)

    def _load_encoder(self, params: Any) -> Any:
        """Replace the encoder's weights by a converted UMT checkpoint (`config.init_from`)."""
        model = nnx.merge(self.graphdef, jax.device_get(params), self.rest)
        restore_umt_checkpoint(pathlib.Path(self.config.init_from).expanduser(), model.encoder)
        loaded = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return jax.device_put(loaded, self.state_sharding["params"])

    def model(self, params: Any) -> nnx.Module:
        """The model carrying `params` (inside jitted functions: traced values)."""
        return nnx.merge(self.graphdef, params, self.rest)

    def _reseeded_model(self, params: Any, rng: jax.Array, step: jax.Array) -> nnx.Module:
        """The model with every RNG stream seeded from (run rng, step): resumes draw the same noise."""
        key = jax.random.fold_in(jax.random.wrap_key_data(rng, impl=self.config.rng_impl), step)
        streams = sorted({var.tag for var in jax.tree.leaves(self.rest, is_leaf=_is_variable)
                          if isinstance(var, nnx.RngKey)})

        def reseed(var: nnx.Variable) -> nnx.Variable:
            if isinstance(var, nnx.RngKey):
                return var.replace(jax.random.fold_in(key, streams.index(var.tag)))
            if isinstance(var, nnx.RngCount):
                return var.replace(jnp.zeros_like(var.get_value()))
            return var

        return nnx.merge(self.graphdef, params, jax.tree.map(reseed, self.rest, is_leaf=_is_variable))

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

    def jit_train_step(self) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
        """The step compiled for the mesh: state in and out in its shardings, donated; metrics replicated."""
        step = jax.jit(self.train_step, in_shardings=(self.state_sharding, self.batch_sharding),
                       out_shardings=(self.state_sharding, sharding.replicated(self.mesh)), donate_argnums=0)

        def run(state: TrainState, batch: Batch):
            with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
                return step(state, batch)

        return run

    def jit_predict(self) -> Callable[[Any, Batch], jax.Array]:
        """`(params, batch) -> saliency maps in [0, 1]`, deterministic, for evaluation."""
        def predict(params, batch):
            logits = self.model(params)(batch["video"], batch["audio"], batch["has_audio"], deterministic=True)
            return jax.nn.sigmoid(logits.astype(jnp.float32))

        compiled = jax.jit(predict, in_shardings=(self.state_sharding["params"], self.batch_sharding),
                           out_shardings=sharding.replicated(self.mesh))

        def run(params, batch):
            with jax.set_mesh(self.mesh), nnx.logical_axis_rules(self.rules):
                return compiled(params, batch)

        return run


# ------------------------------------------------------------------------------------ run log


class RunLog:
    """Scalars to TensorBoard and `<workdir>/log.jsonl`, and a progress bar with ETA (process 0 only)."""

    def __init__(self, workdir: pathlib.Path, *, start_step: int, num_steps: int):
        from tensorboardX import SummaryWriter
        from tqdm import tqdm

        self.active = jax.process_index() == 0
        if not self.active:
            return
        self._writer = SummaryWriter(str(workdir / "tensorboard"))
        self._jsonl = open(workdir / "log.jsonl", "a")
        self._progress = tqdm(total=num_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def scalars(self, step: int, values: Mapping[str, float], *, prefix: str = "train") -> None:
        if not self.active:
            return
        row = {"step": step, "split": prefix, **{k: float(v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}/{name}", float(value), step)
        if prefix == "train":
            self._progress.set_postfix(loss=f"{row['loss']:.4f}", cc=f"{row['cc']:.3f}")

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """An [H, W, 3] uint8 image (frames / ground truth / prediction side by side)."""
        if self.active:
            self._writer.add_image(name, image, step, dataformats="HWC")

    def advance(self, steps: int) -> None:
        if self.active:
            self._progress.update(steps)

    def message(self, text: str) -> None:
        if self.active:
            self._progress.write(text)

    def close(self) -> None:
        if self.active:
            self._progress.close()
            self._writer.close()
            self._jsonl.close()


# ------------------------------------------------------------------------------------ workdir


def _say(text: str) -> None:
    """A line for the person at the terminal (process 0 only)."""
    if jax.process_index() == 0:
        print(text, flush=True)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=pathlib.Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    names = sorted(set(old) | set(new))
    diffs = []
    for name in names:
        path = f"{prefix}{name}"
        a, b = old.get(name), new.get(name)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += _differences(a, b, path + ".")
        elif a != b and path not in RESUMABLE_FIELDS:
            diffs.append(f"{path}: {a!r} -> {b!r}")
    return diffs


def prepare_workdir(config: ml_collections.ConfigDict, workdir: pathlib.Path, *, overwrite: bool) -> None:
    """Create `workdir`, refusing one that holds a run of a different config unless `overwrite`.

    Writes the resolved config and the git commit, so every run says what it was.
    """
    resolved = json.loads(config.to_json_best_effort())
    config_file = workdir / CONFIG_FILE
    if config_file.exists():
        diffs = _differences(json.loads(config_file.read_text()), resolved)
        if diffs and not overwrite:
            raise ValueError(f"{workdir} holds a run of another config ({'; '.join(diffs[:5])}). "
                             "Use another --workdir, or --overwrite to discard that run.")
        if diffs and jax.process_index() == 0:
            for name in ("checkpoints", "tensorboard", "log.jsonl", "eval", "predictions"):
                target = workdir / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(resolved, indent=2) + "\n")
        (workdir / "git_commit.txt").write_text(_git_commit() + "\n")


# ------------------------------------------------------------------------------------ the loop

# `(params, step) -> (validation scalars, an image for TensorBoard or None)`.
Evaluator = Callable[[Any, int], tuple[dict[str, float], np.ndarray | None]]


def _check_batch_size(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                      rules: sharding.LogicalRules) -> None:
    shards, processes = sharding.data_shards(mesh, rules), jax.process_count()
    for field in ("batch_size", "eval_batch_size"):
        size = config.data[field]
        if size % shards or size % processes:
            raise ValueError(f"data.{field}={size} must be a multiple of the {shards} data shards of the mesh "
                             f"and of the {processes} processes")


def _flush(pending: list[tuple[int, dict]], log: RunLog, schedule: optax.Schedule, batch_size: int,
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


def train(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    train_batches: Iterator[Batch],
    *,
    make_evaluator: Callable[[Trainer], Evaluator] | None = None,
    overwrite: bool = False,
) -> tuple[Trainer, TrainState]:
    """Train to `config.num_steps`, resuming from the latest checkpoint in `workdir` if any.

    `train_batches` yields this process's slice of each global batch (the batch contract) and has
    grain's `get_state`/`set_state`, so checkpoints hold its position. `make_evaluator(trainer)`
    gives the validation scorer run every `eval_every` steps and at the end.
    """
    workdir = pathlib.Path(workdir).expanduser().absolute()
    prepare_workdir(config, workdir, overwrite=overwrite)
    multihost_utils.sync_global_devices("workdir ready")
    mesh = sharding.make_mesh(config.mesh)
    trainer = Trainer.create(config, mesh)
    _check_batch_size(config, mesh, trainer.rules)
    evaluator = make_evaluator(trainer) if make_evaluator else None
    checkpoints = RunCheckpoints(workdir / "checkpoints", keep=config.keep_checkpoints)
    start = checkpoints.latest_step()
    if start is None:
        start, state = 0, trainer.init_state()
    else:
        state = checkpoints.restore(start, trainer.abstract_state(), train_batches)
        _say(f"resuming from step {start} in {checkpoints.directory}")
    step_fn = trainer.jit_train_step()
    schedule = learning_rate_schedule(config)
    log = RunLog(workdir, start_step=start, num_steps=config.num_steps)
    pending: list[tuple[int, dict]] = []
    tick = time.perf_counter()
    try:
        for step in range(start + 1, config.num_steps + 1):
            batch = pipeline.to_global_batch(next(train_batches), trainer.batch_sharding)
            state, metrics = step_fn(state, batch)
            pending.append((step, metrics))
            log.advance(1)
            last = step == config.num_steps
            evaluate = evaluator is not None and (step % config.eval_every == 0 or last)
            save = step % config.checkpoint_every == 0 or last
            if step % config.log_every == 0 or evaluate or save:
                _flush(pending, log, schedule, config.data.batch_size, tick, checkpoints)
                tick = time.perf_counter()
            scores = None
            if evaluate:
                scores, image = evaluator(state["params"], step)
                log.scalars(step, scores, prefix="eval")
                if image is not None:
                    log.image(step, "eval/frames_truth_prediction", image)
                tick = time.perf_counter()
            if save:
                checkpoints.save(step, state, train_batches, metrics=scores)
        checkpoints.wait()
    finally:
        log.close()
        checkpoints.close()
    return trainer, state


# ------------------------------------------------------------------------------ the whole job


def prepare_synthetic_data(config: ml_collections.ConfigDict) -> None:
    """Generate and build a synthetic AViMoS where the config points, unless already there (demo)."""
    from salax.data import build_avimos, synthetic

    manual_dir = pathlib.Path(config.data.manual_dir).expanduser()
    data_dir = pathlib.Path(config.data.data_dir).expanduser()
    if jax.process_index() == 0:
        if not (manual_dir / "TrainTestSplit.json").is_file():
            _say(f"generating {config.data.synthetic_videos} synthetic AViMoS videos in {manual_dir}")
            synthetic.generate(manual_dir, config.data.synthetic_videos, config.seed)
        try:
            pipeline.list_videos(data_dir, builder_config=config.data.builder_config, split=config.data.train_split)
        except FileNotFoundError:
            _say(f"building the synthetic dataset into {data_dir}")
            build_avimos.build(manual_dir, data_dir, config=config.data.builder_config)
    multihost_utils.sync_global_devices("synthetic data ready")


def train_batches(config: ml_collections.ConfigDict) -> Iterator[Batch]:
    """This process's shard of the training clips, as a checkpointable grain iterator."""
    model, data_dir = config.model, pathlib.Path(config.data.data_dir).expanduser()
    try:
        pipeline.list_videos(data_dir, builder_config=config.data.builder_config, split=config.data.train_split)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}\nWith this config: python -m salax.data.build_avimos --manual_dir {config.data.manual_dir} "
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


class ValidationEvaluator:
    """Scores the model on the validation videos (AIM rules) and keeps the latest full summary.

    Every process predicts every batch (its rows of it, assembled into one global batch), so the
    same code serves one host or many; process 0 writes the summaries and predicted videos.
    """

    def __init__(self, config: ml_collections.ConfigDict, trainer: Trainer, workdir: pathlib.Path):
        from salax import evaluate

        self._evaluate = evaluate
        self._config = config
        self._trainer = trainer
        self._predict = trainer.jit_predict()
        self._workdir = workdir
        self.data = evaluate.EvalData(
            data_dir=str(pathlib.Path(config.data.data_dir).expanduser()),
            builder_config=config.data.builder_config,
            split=config.data.eval_split,
            manual_dir=str(pathlib.Path(config.data.manual_dir).expanduser()),
            clip_frames=config.model.num_frames,
            stride=config.data.clip_stride,
            image_size=tuple(config.model.image_size),
            batch_size=config.data.eval_batch_size,
            audio=config.model.audio,
            max_videos=config.data.eval_max_videos,
        )
        self.summary: dict[str, Any] | None = None

    def _local_rows(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        inputs = self._evaluate.model_inputs(batch)
        rows = len(inputs["video"]) // jax.process_count()
        start = jax.process_index() * rows
        local = {key: value[start : start + rows] for key, value in inputs.items()}
        return pipeline.to_global_batch(local, self._trainer.batch_sharding)

    def score(self, params: Any, *, predictions_dir: pathlib.Path | None = None,
              corrected: bool = False) -> tuple[dict[str, Any], np.ndarray | None]:
        """The evaluation summary of `params` on `self.data`, and the TensorBoard image."""
        image = []

        def predict(batch: Mapping[str, Any]) -> np.ndarray:
            maps = np.asarray(jax.device_get(self._predict(params, self._local_rows(batch))))
            if not image:
                image.append(self._evaluate.side_by_side(batch, maps))
            return maps

        if jax.process_index() != 0:
            predictions_dir = None  # every process predicts, process 0 writes
        summary = self._evaluate.evaluate(predict, self.data, predictions_dir=predictions_dir, corrected=corrected)
        return summary, image[0] if image else None

    def __call__(self, params: Any, step: int) -> tuple[dict[str, float], np.ndarray | None]:
        write = self._config.write_predictions and step == self._config.num_steps
        summary, image = self.score(params, predictions_dir=self._workdir / "predictions" if write else None)
        self.summary = {"step": step, **summary}
        if jax.process_index() == 0:
            (self._workdir / "eval").mkdir(exist_ok=True)
            (self._workdir / "eval" / f"step_{step}.json").write_text(json.dumps(self.summary, indent=2) + "\n")
        scalars = {**summary["model"], **{f"centre_prior_{k}": v for k, v in summary["centre_prior"].items()}}
        return scalars, image


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       overwrite: bool = False) -> dict[str, Any]:
    """The job behind `python -m salax.main`: data, training, evaluation, predictions, summary.

    Returns the final evaluation summary, also written to `<workdir>/eval/summary.json`.
    """
    workdir = pathlib.Path(workdir).expanduser().absolute()
    if config.data.synthetic_videos:
        prepare_synthetic_data(config)
    evaluators: list[ValidationEvaluator] = []

    def make_evaluator(trainer: Trainer) -> Evaluator:
        evaluators.append(ValidationEvaluator(config, trainer, workdir))
        return evaluators[0]

    _, state = train(config, workdir, train_batches(config), make_evaluator=make_evaluator, overwrite=overwrite)
    evaluator = evaluators[0]
    if evaluator.summary is None or evaluator.summary["step"] != config.num_steps:
        evaluator(state["params"], config.num_steps)  # the run had finished before this start
    summary = evaluator.summary
    if jax.process_index() == 0:
        (workdir / "eval" / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _print_where_everything_is(workdir, summary)
    return summary


def _print_where_everything_is(workdir: pathlib.Path, summary: Mapping[str, Any]) -> None:
    model, prior = summary["model"], summary["centre_prior"]
    lines = [
        f"\nDone: {summary['videos']} {summary['split']} videos, {summary['frames']} frames, step {summary['step']}.",
        f"{'':14s}" + "".join(f"{name:>10s}" for name in model),
        f"{'model':14s}" + "".join(f"{value:10.4f}" for value in model.values()),
        f"{'centre prior':14s}" + "".join(f"{value:10.4f}" for value in prior.values()),
        f"summary      {workdir / 'eval' / 'summary.json'}",
        f"checkpoints  {workdir / 'checkpoints'}",
        f"logs         {workdir / 'log.jsonl'}  (tensorboard --logdir {workdir / 'tensorboard'})",
    ]
    if (workdir / "predictions").is_dir():
        lines.append(f"predictions  {workdir / 'predictions'}  (<video>.mp4 maps, <video>_overlay.mp4)")
    print("\n".join(lines), flush=True)
