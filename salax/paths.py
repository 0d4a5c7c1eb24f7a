"""Paths of runs, datasets and checkpoints: local or ``gs://``, through etils epath (what orbax and TFDS use).

At the bottom of the house so that every layer (models' weight loaders, checkpoints, the workdir)
resolves a user's path the same way.
"""

import json
import os
import pathlib
from typing import Any

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
