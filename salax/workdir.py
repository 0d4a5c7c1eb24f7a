"""A run's folder: every output path, the config guard, what the run was, and the run log.

One place names what a run writes, so training, evaluation and the CLIs agree on it:

    config.json       the resolved config (rerun with `python -m salax.main --config=config.json`)
    run.json          commit and dirty flag, package versions, devices, processes, mesh, seeds
    git_commit.txt    the commit (with " dirty" if the tree had changes)
    checkpoints/      orbax checkpoints (salax.checkpoint)
    log.jsonl         one JSON row per logged step and evaluation
    tensorboard/      the same scalars, and evaluation images
    eval/step_N.json  the validation summary at step N; eval/summary.json the final one
    predictions/      predicted map videos and overlays (write_predictions)

Paths go through etils epath, so a workdir may be local or on `gs://`.
"""

from collections.abc import Mapping
import dataclasses
import importlib.metadata
import json
import pathlib
import subprocess
import time
from typing import Any

from etils import epath
import jax
import ml_collections
from tqdm import tqdm

from salax.paths import as_path, write_atomically, write_json

CONFIG_FILE = "config.json"
# Fields that may change when a run is resumed; any other difference means another run. The layout
# (mesh, logical rules) is among them: checkpoints restore into the shardings of the run that resumes.
RESUMABLE_FIELDS = ("data.num_workers", "data.num_threads", "log_every", "write_predictions",
                    "mesh.data", "mesh.fsdp", "mesh.tensor", "logical_rules")
# Packages whose versions decide a run's numbers, recorded in run.json.
RECORDED_PACKAGES = ("salax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy",
                     "tensorflow-datasets", "ml_collections")


class UserError(ValueError):
    """An expected mistake of the person running salax (a bad value, a wrong folder): the CLIs print
    its message as one line and exit with status 2, without a traceback."""


@dataclasses.dataclass(frozen=True)
class Workdir:
    """The output paths of the run in `root` (nothing is created by naming them)."""

    root: epath.Path

    @classmethod
    def at(cls, root: str | pathlib.PurePath) -> "Workdir":
        return cls(as_path(root))

    @property
    def config_file(self) -> epath.Path:
        return self.root / CONFIG_FILE

    @property
    def run_file(self) -> epath.Path:
        return self.root / "run.json"

    @property
    def git_commit_file(self) -> epath.Path:
        return self.root / "git_commit.txt"

    @property
    def checkpoints(self) -> epath.Path:
        return self.root / "checkpoints"

    @property
    def log_file(self) -> epath.Path:
        return self.root / "log.jsonl"

    @property
    def tensorboard(self) -> epath.Path:
        return self.root / "tensorboard"

    @property
    def eval_dir(self) -> epath.Path:
        return self.root / "eval"

    def eval_step(self, step: int) -> epath.Path:
        return self.eval_dir / f"step_{step}.json"

    def evaluations(self) -> dict[int, dict[str, Any]]:
        """step -> the validation summary written at that step (eval/step_N.json), for every step evaluated."""
        found = {}
        for path in self.eval_dir.glob("step_*.json") if self.eval_dir.is_dir() else ():
            number = path.stem.removeprefix("step_")
            if number.isdigit():
                found[int(number)] = json.loads(path.read_text())
        return found

    @property
    def summary(self) -> epath.Path:
        return self.eval_dir / "summary.json"

    @property
    def predictions(self) -> epath.Path:
        return self.root / "predictions"

    def run_outputs(self) -> tuple[epath.Path, ...]:
        """What a run produced, discarded by `--overwrite` (config.json and run.json are rewritten)."""
        return (self.checkpoints, self.tensorboard, self.log_file, self.eval_dir, self.predictions)


def say(text: str) -> None:
    """A line for the person at the terminal (process 0 only)."""
    if jax.process_index() == 0:
        print(text, flush=True)


def _tuples(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def load_config(path: str | pathlib.PurePath) -> ml_collections.ConfigDict:
    """A recorded config.json as the locked config it was written from (JSON lists back to tuples)."""
    path = as_path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not a recorded config (invalid JSON: {error})") from None
    config = ml_collections.ConfigDict(_tuples(values))
    config.lock()
    return config


def read_config(root: str | pathlib.PurePath) -> ml_collections.ConfigDict:
    """The resolved config of the run in `root`; a UserError if `root` holds no run."""
    config_file = Workdir.at(root).config_file
    if not config_file.is_file():
        raise UserError(f"{config_file.parent} holds no run ({CONFIG_FILE} is missing)")
    return load_config(config_file)


def git_commit() -> tuple[str, bool]:
    """(commit of the salax source tree or "unknown", whether the tree had uncommitted changes)."""
    source = pathlib.Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=source)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=10, cwd=source)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", False
    commit = head.stdout.strip()
    return (commit, bool(status.stdout.strip())) if head.returncode == 0 and commit else ("unknown", False)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_record(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
    """What is needed to rerun this run with the same results: code, packages, hardware, seeds."""
    commit, dirty = git_commit()
    device = jax.devices()[0]
    return {
        "commit": commit,
        "dirty": dirty,
        "packages": {name: _version(name) for name in RECORDED_PACKAGES},
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "mesh": dict(mesh.shape) if mesh is not None else None,
        "seed": config.seed,
        "rng_impl": config.rng_impl,
        "rerun": f"python -m salax.main --config=WORKDIR/{CONFIG_FILE} --workdir=NEW",
    }


def _differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    diffs = []
    for name in sorted(set(old) | set(new)):
        path = f"{prefix}{name}"
        a, b = old.get(name), new.get(name)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += _differences(a, b, path + ".")
        elif a != b and path not in RESUMABLE_FIELDS:
            diffs.append(f"{path}: {a!r} -> {b!r}")
    return diffs


def resolved(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (what config.json holds)."""
    return json.loads(config.to_json_best_effort())


def prepare(config: ml_collections.ConfigDict, workdir: Workdir, *, overwrite: bool,
            mesh: jax.sharding.Mesh | None = None) -> None:
    """Create the workdir, refusing one that holds a run of a different config unless `overwrite`.

    Writes the resolved config, the commit and run.json, so every run says what it was.
    """
    config_json = resolved(config)
    if workdir.config_file.exists():
        diffs = _differences(json.loads(workdir.config_file.read_text()), config_json)
        if diffs and not overwrite:
            raise UserError(f"{workdir.root} holds a run of another config ({'; '.join(diffs[:5])}). "
                            "Use another --workdir, or --overwrite to discard that run.")
        if diffs and jax.process_index() == 0:
            for target in workdir.run_outputs():
                if target.is_dir():
                    target.rmtree()
                elif target.exists():
                    target.unlink()
    if jax.process_index() == 0:
        workdir.root.mkdir(parents=True, exist_ok=True)
        write_json(workdir.config_file, config_json)
        record = run_record(config, mesh)
        write_json(workdir.run_file, record)
        write_atomically(workdir.git_commit_file, record["commit"] + (" dirty" if record["dirty"] else "") + "\n")


def _kept_rows(log_file: epath.Path, last_step: int) -> list[str]:
    """The whole rows of `log_file` up to `last_step`: a torn last line and replayed steps are dropped."""
    if not log_file.exists():
        return []
    kept = []
    for line in log_file.read_text().split("\n"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write, or the empty tail
        if row.get("step", 0) <= last_step:
            kept.append(line)
    return kept


class RunLog:
    """Scalars to TensorBoard and `log.jsonl`, and a progress bar with ETA (process 0 only).

    On a resume from step `start_step`, rows after it (logged before a crash, replayed now) are
    dropped from `log.jsonl` and hidden in TensorBoard (`purge_step`), so each step has one row;
    each row is written with one call and flushed, so a crash tears at most the row in flight.
    """

    def __init__(self, workdir: Workdir, *, start_step: int, num_steps: int):
        from tensorboardX import SummaryWriter  # heavy (protobuf, numpy plugins): only training logs

        self.active = jax.process_index() == 0
        if not self.active:
            return
        rows = _kept_rows(workdir.log_file, start_step)
        write_atomically(workdir.log_file, "".join(row + "\n" for row in rows))
        # tensorboardX names event files by the second they were opened and truncates an existing one: the
        # suffix keeps a resume in the same second from erasing the file before it, and keeps creation order.
        self._writer = SummaryWriter(str(workdir.tensorboard), purge_step=start_step + 1 if start_step else None,
                                     filename_suffix=f".{time.time_ns()}")
        self._jsonl = workdir.log_file.open("a")
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

    def image(self, step: int, name: str, image: Any) -> None:
        """An [H, W, 3] uint8 image (frames / ground truth / prediction side by side)."""
        if self.active:
            self._writer.add_image(name, image, step, dataformats="HWC")

    def advance(self, steps: int) -> None:
        if self.active:
            self._progress.update(steps)

    def close(self) -> None:
        if self.active:
            self._progress.close()
            self._writer.close()
            self._jsonl.close()
