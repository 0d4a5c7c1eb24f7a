"""Paths of runs, datasets and checkpoints: local or ``gs://``, through etils epath (what orbax and TFDS use).

At the bottom of the house so that every layer (models' weight loaders, checkpoints, the workdir)
resolves a user's path the same way.
"""

import os
import pathlib

from etils import epath


def as_path(path: str | os.PathLike) -> epath.Path:
    """A local path with `~` expanded and made absolute (orbax wants absolute paths), or a `gs://...` path as it is."""
    text = os.fspath(path)
    if "://" in text:
        return epath.Path(text)
    return epath.Path(pathlib.Path(text).expanduser().absolute())
