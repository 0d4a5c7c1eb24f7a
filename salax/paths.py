"""Paths of runs, datasets and checkpoints: local or ``gs://``, through etils epath (what orbax and TFDS use).

At the bottom of the house so that every layer (models' weight loaders, checkpoints, the workdir)
resolves a user's path the same way.
"""

from collections.abc import Iterator
import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any
import uuid

from etils import epath


def as_path(path: str | os.PathLike) -> epath.Path:
    """A local path with `~` expanded and made absolute (orbax wants absolute paths), or a `gs://...` path as it is."""
    text = os.fspath(path)
    if "://" in text:
        return epath.Path(text)
    return epath.Path(pathlib.Path(text).expanduser().absolute())


def write_atomically(path: epath.Path, text: str) -> None:
    """Write `text` to `path` under a temporary name, then rename: readers never see half a file."""
    temporary = path.parent / f".{path.name}.tmp"
    temporary.write_text(text)
    temporary.replace(path)


def write_json(path: epath.Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(value, indent=2) + "\n")


def is_local(path: epath.Path) -> bool:
    """Whether `path` is on this machine's filesystem (what PyAV, Pillow and numpy can open)."""
    return "://" not in os.fspath(path)


def _upload(local: pathlib.Path, remote: epath.Path) -> None:
    """Copy a local file, or a folder's files, to `remote` through epath (streamed, 1 MiB at a time)."""
    if local.is_dir():
        remote.mkdir(parents=True, exist_ok=True)
        for child in sorted(local.iterdir()):
            _upload(child, remote / child.name)
        return
    with open(local, "rb") as source, remote.open("wb") as destination:
        shutil.copyfileobj(source, destination, 2**20)


def _remove(path: epath.Path | pathlib.Path) -> None:
    path = epath.Path(path)
    with contextlib.suppress(OSError):
        if path.is_dir():
            path.rmtree()
        elif path.exists():
            path.unlink()


@contextlib.contextmanager
def staged(target: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A local path to write `target` at (a file, or a folder the writer creates), put in place when done.

    For writers that only take local paths (PyAV, Pillow, numpy), whatever `target` is. The staged name
    is hidden and keeps the extension (a container format follows it). A local target is staged beside
    it and renamed onto it (atomic on one filesystem); a remote one (``gs://...``) is staged in a local
    temporary folder, uploaded under the hidden name beside the target and then renamed onto it, so a
    reader never finds half a file under the target's name. If the block raises, nothing is left
    behind and an earlier `target` is kept.
    """
    target = as_path(target)
    hidden = f".{target.stem}.partial-{uuid.uuid4().hex[:8]}{target.suffix}"
    with contextlib.ExitStack() as stack:
        if is_local(target):
            staging = pathlib.Path(os.fspath(target)).with_name(hidden)
        else:
            staging = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="salax-"))) / hidden
        staging.parent.mkdir(parents=True, exist_ok=True)
        stack.callback(_remove, staging)
        yield staging
        target.parent.mkdir(parents=True, exist_ok=True)
        landed = target.parent / hidden
        if not is_local(target):
            stack.callback(_remove, landed)  # an upload or rename that fails part-way
            _upload(staging, landed)
        if target.is_dir():  # an earlier folder of the same output
            target.rmtree()
        landed.replace(target)
