"""A run's checkpoints: the train state and the grain position, orbax, async, atomic, last N + best.

Each step directory holds the train-state pytree (params, optimiser state, step, rng) as item
``state`` and every process's grain iterator position as item ``data``, so a restart continues on
the very next batch. Saves are async and written to a temporary directory renamed on commit: a
save killed half-way is never listed. Restores go into whatever shardings the caller's abstract
state carries, so a run saved on 8 devices resumes on 4 or 1 (orbax reshards on read).

Released UMT weights (the ``.pth`` conversion) are not run checkpoints: see salax.models.umt_weights.
"""

from collections.abc import Mapping
import copy
import math
import os
import re
from typing import Any
import warnings

from etils import epath
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from salax.paths import as_path

_STATE, _DATA = "state", "data"
# grain writes one position file per process: data/process_<index>-of-<count>.json
_POSITION_FILE = re.compile(r"process_\d+-of-(\d+)\.json")


class CheckpointSaveError(OSError):
    """A save failed (disk full, permissions, a lost bucket): the run must stop, not train on unsaved."""


class MissingCheckpointError(FileNotFoundError):
    """The asked-for checkpoint is not there (no checkpoints at all, or not that step)."""


class DataOrderRestartWarning(UserWarning):
    """A resume with another process count: the train state is resumed, the data order starts afresh."""


class _Position(grain.DatasetIterator):
    """A frozen copy of a grain iterator's position.

    Orbax writes the data item in a background thread; reading the live iterator there would
    record batches consumed after the save was requested.
    """

    def __init__(self, state: Any):
        super().__init__()
        self._state = copy.deepcopy(state)

    def __next__(self):
        raise TypeError("a saved iterator position yields no elements")

    def get_state(self) -> Any:
        return self._state

    def set_state(self, state: Any) -> None:
        self._state = state


class RunCheckpoints:
    """Orbax manager for a training run's checkpoint directory (``Workdir.checkpoints``).

    Kept: the last `keep` checkpoints, plus the one with the best validation `best_metric`.
    `create=False` opens an existing run read-only (evaluation, prediction): nothing is created or
    deleted, and a directory that does not exist simply holds no steps.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 1, best_metric: str = "cc", create: bool = True):
        self.directory: epath.Path = as_path(directory)
        self._best_metric = best_metric

        def best(metrics: Mapping[str, float]) -> float:
            # Saves without an evaluation record empty metrics: ranked below every evaluated one.
            return metrics.get(best_metric, -math.inf)

        if create:
            preservation = policies.AnyPreservationPolicy([
                policies.LatestN(n=keep),
                policies.BestN(get_metric_fn=best, n=1, keep_checkpoints_without_metrics=False),
            ])
            # best_fn also makes the manager write each save's metrics beside it.
            options = ocp.CheckpointManagerOptions(preservation_policy=preservation, best_fn=best, best_mode="max",
                                                   create=True, cleanup_tmp_directories=True)
        else:  # nothing saved, so nothing deleted (orbax's read_only mode only adds warnings)
            options = ocp.CheckpointManagerOptions(best_fn=best, best_mode="max", create=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(_STATE, _DATA))
        self._saving: int | None = None  # the step of the save in flight, if any
        self._failed: CheckpointSaveError | None = None

    # ------------------------------------------------------------------------------ what is there

    def all_steps(self) -> list[int]:
        """Every committed step, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best validation metric (None before any evaluated save)."""
        step = self._manager.best_step()
        if step is None or self._best_metric not in (self._manager.metrics(step) or {}):
            return None
        return step

    def _existing(self, step: int) -> int:
        steps = self.all_steps()
        if step not in steps:
            held = ", ".join(map(str, steps)) if steps else "none"
            raise MissingCheckpointError(f"no checkpoint at step {step} in {self.directory} (saved steps: {held})")
        return step

    def _step_directory(self, step: int) -> epath.Path:
        return self.directory / str(self._existing(step))  # orbax's default step names: the plain number

    def saved_process_count(self, step: int) -> int | None:
        """How many processes wrote `step` (from grain's position files); None if it holds no data item."""
        data = self._step_directory(step) / _DATA
        counts = {int(m.group(1)) for f in (data.iterdir() if data.exists() else ())
                  if (m := _POSITION_FILE.fullmatch(f.name))}
        return counts.pop() if len(counts) == 1 else None

    # ------------------------------------------------------------------------------------- saving

    def _raise_failure(self, step: int, error: BaseException) -> None:
        self._manager.reload()  # forget the step that never committed
        last = self._manager.latest_step()
        kept = f"step {last} in {self.directory}" if last is not None else "none"
        self._failed = CheckpointSaveError(f"saving the checkpoint of step {step} to {self.directory} failed: "
                                           f"{error}. The last good checkpoint is {kept}.")
        raise self._failed from error

    def _finish_pending(self) -> None:
        """Wait for the save in flight; its failure (raised by orbax's background thread) becomes ours."""
        if self._failed is not None:
            raise self._failed
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # orbax re-raises whatever the writer raised (ValueError, OSError, ...)
            self._raise_failure(self._saving, error)
        self._saving = None

    def save(self, step: int, state: Any, data_iterator: Any, metrics: Mapping[str, float] | None = None) -> None:
        """Start an async save of `state` and the iterator position at `step`.

        Raises CheckpointSaveError (what, where, the last good checkpoint) if this save or the one
        before it failed; the run must stop then.
        """
        self._finish_pending()
        self._saving = step
        try:
            position = _Position(data_iterator.get_state())
            self._manager.save(
                step,
                args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state),
                                           _DATA: grain.checkpoint.CheckpointSave(position)}),
                # An explicit empty record for a save without an evaluation ("no metric"), not a missing one:
                # orbax warns about every save that tracks a best metric and passes none.
                metrics=dict(metrics) if metrics else {},
                force=True,
            )
        except Exception as error:
            self._raise_failure(step, error)

    def wait(self) -> None:
        """Block until pending saves are committed; CheckpointSaveError if one failed."""
        self._finish_pending()

    def close(self) -> None:
        """Finish pending saves and release orbax's threads (a failure already raised is not raised again)."""
        try:
            if self._failed is None:
                self._finish_pending()
        finally:
            try:
                self._manager.close()
            except Exception:  # noqa: BLE001 - the failed save was reported by save()/wait() already
                if self._failed is None:
                    raise

    # ----------------------------------------------------------------------------------- restoring

    def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
        """The state at `step` in `abstract_state`'s shardings; moves `data_iterator` to the saved position.

        `abstract_state` is a pytree of ``jax.ShapeDtypeStruct`` with shardings for the current
        mesh, which may differ from the one saved (another device count or mesh shape). The data
        position is per process: with the same process count each process continues on its next
        batch; with another count the saved positions do not map onto the new split of the
        videos, so the iterator is left where it is (the start of its order) and a
        DataOrderRestartWarning says so.
        """
        saved = self.saved_process_count(step)
        if saved is not None and saved != jax.process_count():
            warnings.warn(f"checkpoint step {step} in {self.directory} was written by {saved} processes, this run "
                          f"has {jax.process_count()}: the train state resumes at step {step}, the data order "
                          "restarts from the beginning of an epoch", DataOrderRestartWarning, stacklevel=2)
            return self.restore_state(step, abstract_state)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract_state),
                                             _DATA: grain.checkpoint.CheckpointRestore(data_iterator)}))
        return restored[_STATE]

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Only the train state at `step`, in `abstract_state`'s shardings (no data iterator)."""
        self._existing(step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract_state)}))
        return restored[_STATE]

    def restore_params(self, step: int, abstract_params: Any = None) -> Any:
        """Only the ``params`` subtree of `step`'s train state: no optimiser state is read.

        Into `abstract_params`' shardings (a pytree of ``jax.ShapeDtypeStruct`` with shardings, e.g.
        for inference on another mesh), or, with None, as host numpy arrays in the saved structure.
        """
        # Its own checkpointer on the step's state item: the manager binds the item to StandardRestore.
        directory = self._step_directory(step) / _STATE
        if abstract_params is None:
            saved = ocp.PyTreeCheckpointHandler().metadata(directory).tree["params"]
            target = jax.tree.map(lambda meta: jax.ShapeDtypeStruct(meta.shape, meta.dtype), saved)
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        else:
            target = abstract_params
            restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_params)
        with ocp.PyTreeCheckpointer() as reader:
            restored = reader.restore(directory, args=ocp.args.PyTreeRestore(
                item={"params": target}, restore_args={"params": restore_args}, partial_restore=True))
        return restored["params"]
