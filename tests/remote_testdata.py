"""A remote folder for tests: ``gs://bucket/...`` served from a local folder through epath's own test hook.

Everything salax does to such a path goes through etils epath; code that hands the path to a
local-only library (PyAV, Pillow, numpy, `pathlib`) instead finds no such file, or writes into a
local folder named ``gs:``, and never reaches the bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import dataclasses
import os
import pathlib

from etils.epath import testing

BUCKET = "gs://bucket"


@dataclasses.dataclass
class Bucket:
    root: pathlib.Path  # where the bucket's objects are kept
    written: list[str] = dataclasses.field(default_factory=list)  # bucket paths opened for writing, in order
    renamed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (from, to) of rename/replace

    def local(self, path) -> str:
        text = os.fspath(path) if isinstance(path, os.PathLike) else path
        if isinstance(text, str) and text.startswith(BUCKET):
            return str(self.root) + text[len(BUCKET):]
        return text

    def remote(self, path) -> str:
        text = os.fspath(path)
        return BUCKET + text[len(str(self.root)):] if text.startswith(str(self.root)) else text


@contextlib.contextmanager
def fake_bucket(root: pathlib.Path) -> Iterator[Bucket]:
    """While active, epath paths under BUCKET read and write files under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    bucket = Bucket(root)

    def translated(function, path, *args, **kwargs):
        return function(bucket.local(path), *(bucket.local(arg) for arg in args), **kwargs)

    def opened(function, path, mode):
        if "w" in mode or "a" in mode:
            bucket.written.append(os.fspath(path))
        return function(bucket.local(path), mode)

    def moved(function, path, destination):
        bucket.renamed.append((os.fspath(path), os.fspath(destination)))
        return function(bucket.local(path), bucket.local(destination))

    names = ("copy", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "remove", "rmtree", "stat", "walk")
    with testing.mock_epath(open=opened, rename=moved, replace=moved, **dict.fromkeys(names, translated)):
        yield bucket
