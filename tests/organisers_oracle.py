"""The organisers' route run in their pinned environment: numpy 1.24.2 + OpenCV 4.7.0.72, in a venv of its own.

Bit-exact ties need their OpenCV: 4.7.0.72 resizes float maps through Intel IPP (see
salax/metrics/prepare.py) and newer OpenCV rounds some pixels differently; it needs numpy < 2, so it
cannot live in the project's venv. `organisers_route(cases)` creates (once) a venv under
~/.cache/salax/organisers-venv/<key> (the key names the pins and the Python version), installs the pins
from PyPI as wheels, and runs tests/metrics_reference.py there on arrays passed as .npy files.

The organisers pinned opencv-python 4.7.0.72; the venv takes opencv-python-headless 4.7.0.72, built from
the same sources at the same version (the same imgproc code and bundled IPP, without the GUI modules),
so that it installs on machines without X libraries. If pip cannot install the pins (no network to PyPI,
no wheel for this Python) `OrganisersUnavailable` says so: the tests that need the route fail with it.
"""

from __future__ import annotations

from collections.abc import Sequence
import fcntl
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile

import numpy as np

PINS = ("numpy==1.24.2", "opencv-python-headless==4.7.0.72")
REFERENCE = Path(__file__).with_name("metrics_reference.py")
TIMEOUT_S = 900


class OrganisersUnavailable(RuntimeError):
    """The pinned venv could not be created (the message says why)."""


def venv_dir() -> Path:
    key = "-".join(pin.replace("==", "_") for pin in PINS) + f"-py{sys.version_info.major}{sys.version_info.minor}"
    root = Path(os.environ.get("SALAX_CACHE", Path.home() / ".cache" / "salax"))
    return root / "organisers-venv" / key


def _python(directory: Path) -> Path:
    return directory / "bin" / "python"


def ensure_venv() -> Path:
    """The pinned venv's python, created on first use (a lock keeps concurrent test runs apart)."""
    directory = venv_dir()
    if _python(directory).exists():
        return _python(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _python(directory).exists():
            return _python(directory)
        staging = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
        try:
            for command in ([sys.executable, "-m", "venv", str(staging)],
                            [str(_python(staging)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                             "--only-binary=:all:", *PINS]):
                result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
                if result.returncode != 0:
                    raise OrganisersUnavailable(
                        f"could not build the organisers' pinned venv ({' '.join(PINS)}) for {directory}: "
                        f"`{' '.join(command)}` failed:\n{result.stderr[-2000:]}")
            staging.rename(directory)  # atomic: a venv runs from any path through bin/python -m
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _python(directory)


def organisers_route(cases: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], corrected: bool = False) -> list[dict]:
    """Each (pred, gt, fixations [N, 2]) through the organisers' route in the pinned venv.

    Returns per case {"prepared": their read_sm of pred, "truth": of gt, "resized": the prepared prediction
    resized to gt's grid, "scores": their five metrics (empty without fixations)}.
    """
    python = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="salax-organisers-") as directory:
        listing = []
        for index, (pred, gt, fixations) in enumerate(cases):
            names = {}
            for role, array in (("pred", pred), ("gt", gt), ("fixations", np.asarray(fixations, np.int64))):
                names[role] = f"{role}{index}"
                np.save(f"{directory}/{names[role]}.npy", np.ascontiguousarray(array))
            listing.append({**names, "corrected": corrected})
        with open(f"{directory}/cases.json", "w") as handle:
            json.dump(listing, handle)
        result = subprocess.run([str(python), str(REFERENCE), directory], capture_output=True, text=True,
                                timeout=TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(f"the organisers' route failed in {python}:\n{result.stderr[-3000:]}")
        with open(f"{directory}/scores.json") as handle:
            report = json.load(handle)
        if report["versions"] != {"numpy": "1.24.2", "cv2": "4.7.0"}:
            raise OrganisersUnavailable(f"the pinned venv at {python} runs {report['versions']}")
        return [{"prepared": np.load(f"{directory}/{i}.prepared.npy"), "truth": np.load(f"{directory}/{i}.truth.npy"),
                 "resized": np.load(f"{directory}/{i}.resized.npy"), "scores": scores}
                for i, scores in enumerate(report["scores"])]
