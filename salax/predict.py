"""Saliency maps for any video: a trained run (or an exported folder) on the user's own files.

    python -m salax.predict --checkpoint RUN_OR_DIR --input VIDEO_OR_DIR [--out DIR] [--overlay]
        [--step best|latest|N] [--batch_size N] [--format mp4|png|npy] [--keep_going]
    python -m salax.predict export --workdir RUN --out DIR [--step best|latest|N]

Each input frame gets one map, predicted from the causal clip that ends on it, exactly as evaluation
clips are made (`salax.data.clips`): clip frame indices before the start of the video repeat the
first frame, so a video shorter than the clip works, and sound before the video is silence. Frames
are decoded upright (rotation metadata applied), brought to the build's storage size and then to the
model input as in training, batched through the jitted model on the default device, and each map is
resized once to the video's own size with the scorer's bilinear (`salax.evaluate.map_encoding`, the
rule `salax.evaluate --workdir` scores "as submitted" by). Output has the input's frame count, frame rate
and upright size: `<stem>.mp4` (8-bit grey, the organisers' submission layout), `<stem>/001.png...`
(8-bit, named as `ffmpeg -i V %03d.png` names frames), both min-max normalised per frame, or
`<stem>.npy` (float32 [T, H, W], the model's probabilities); `--overlay` adds `<stem>_overlay.mp4`,
the heat map over the video with its own sound track (copied as it is when an mp4 can carry its
codec, else re-encoded in mono).

Everything streams: a few clips of frames at model size are held, never the video, so a 10-minute 4K
video takes the memory of a batch (plus its audio track). Outputs are written under a hidden
temporary name and renamed when complete, so an interrupted run leaves nothing that looks finished,
and outputs of other videos are kept whatever happens to one. `--out` may be remote (``gs://...``):
each output is then written locally and uploaded when complete (`salax.paths.staged`).
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable, Iterator, Sequence
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Any
import uuid

from etils import epath
import jax
import ml_collections
import numpy as np
from PIL import Image
from tqdm import tqdm

from salax import inference, paths, sharding
from salax.checkpoint import RunCheckpoints
from salax.data import avimos_builder, clips, media
from salax.evaluate import map_encoding
from salax.workdir import CONFIG_FILE, UserError, Workdir, read_config

__all__ = [
    "FORMATS",
    "Predictor",
    "Stopwatch",
    "VideoError",
    "export",
    "from_params",
    "input_videos",
    "load",
    "main",
    "native_maps",
    "predict_video",
    "write_export",
]

FORMATS = ("mp4", "png", "npy")
EXPORT_FILE = "export.json"  # marks a folder written by `export`: config.json + params.npz
PARAMS_FILE = "params.npz"
_NPY_HEADER = 118  # bytes of the .npy header dict: 10 + 118 = 128, aligned as the format asks


class VideoError(Exception):
    """One video cannot be predicted; the message names the file and the problem (and the frame)."""


# ----------------------------------------------------------------------------------------- the model


@dataclasses.dataclass
class Stopwatch:
    """Seconds spent per stage (decode, prepare, model, resize), for the throughput benchmark."""

    seconds: dict[str, float] = dataclasses.field(default_factory=lambda: collections.defaultdict(float))

    def timed(self, stage: str, function: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.seconds[stage] += time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A restored model and the clip rules of its run: what turns frames into maps."""

    config: ml_collections.ConfigDict
    step: int
    source: str  # the workdir or exported folder it came from
    params: Any
    predict: inference.Predict

    @property
    def clip_frames(self) -> int:
        return int(self.config.model.num_frames)

    @property
    def stride(self) -> int:
        return int(self.config.data.clip_stride)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(int(side) for side in self.config.model.image_size)

    @property
    def audio(self) -> bool:
        return bool(self.config.model.audio)

    @property
    def _build(self) -> avimos_builder.AvimosConfig | None:
        return avimos_builder.Avimos.builder_configs.get(str(self.config.data.builder_config))

    @property
    def audio_samples(self) -> int:
        """The audio window training used: the clip's span at the build's frame rate."""
        build = self._build
        return clips.default_audio_samples(self.clip_frames, self.stride, build.fps if build else None)

    def storage_size(self, height: int, width: int) -> tuple[int, int]:
        """The size training frames were stored at (the build's short side), before the model resize."""
        build = self._build
        return (height, width) if build is None else avimos_builder.storage_size(height, width, build.short_side)


def _key(path: Sequence[Any]) -> str:
    return "/".join(str(getattr(entry, "key", getattr(entry, "idx", entry))) for entry in path)


def _flat(tree: Any) -> dict[str, Any]:
    """A parameter tree as {"encoder/blocks/0/...": leaf}: the same names for saved and expected trees."""
    return {_key(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _placed(model: inference.ShardedModel, saved: dict[str, np.ndarray], where: str) -> Any:
    """Saved arrays checked against the config's model, parameter by parameter, then put on the device."""
    expected = _flat(model.param_shapes)
    problems = [f"{key} is missing" for key in expected if key not in saved]
    problems += [f"{key} is not in the model" for key in saved if key not in expected]
    problems += [f"{key} has shape {tuple(saved[key].shape)}, the model {tuple(spec.shape)}"
                 for key, spec in expected.items() if key in saved and tuple(saved[key].shape) != tuple(spec.shape)]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise UserError(f"{where} holds another model than its {CONFIG_FILE} describes "
                        f"({len(problems)} parameter(s) differ: {shown})")
    leaves, treedef = jax.tree_util.tree_flatten(model.param_shapes)
    keys = [_key(path) for path, _ in jax.tree_util.tree_flatten_with_path(model.param_shapes)[0]]
    tree = jax.tree_util.tree_unflatten(treedef, [np.asarray(saved[k], leaf.dtype) for k, leaf in zip(keys, leaves)])
    return jax.device_put(tree, model.params_sharding)


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def _run_params(workdir: pathlib.Path, config: ml_collections.ConfigDict, step: str | int):
    """(step, {name: numpy array}) of one checkpoint of a run: parameters only, no optimiser state."""
    run = Workdir.at(workdir)
    checkpoints = RunCheckpoints(run.checkpoints, keep=config.keep_checkpoints, create=False)
    try:
        number = inference.checkpoint_step(run, checkpoints, step)
        try:
            saved = checkpoints.restore_params(number, None)
        except Exception as error:  # noqa: BLE001 - orbax raises many types for a damaged checkpoint
            raise UserError(f"{workdir}/checkpoints/{number}: unreadable checkpoint ({_first_line(error)})") from error
    finally:
        checkpoints.close()
    return number, {key: np.asarray(value) for key, value in _flat(saved).items()}


def _export_params(folder: pathlib.Path) -> tuple[int, dict[str, np.ndarray]]:
    try:
        step = int(json.loads((folder / EXPORT_FILE).read_text())["step"])
        with np.load(folder / PARAMS_FILE, allow_pickle=False) as archive:
            return step, {key: archive[key] for key in archive.files}
    except Exception as error:  # noqa: BLE001 - zip, JSON and numpy errors all mean the same here
        raise UserError(f"{folder}: unreadable exported checkpoint ({_first_line(error)})") from error


def load(checkpoint: str | os.PathLike, step: str | int = "best") -> Predictor:
    """The model of a run's workdir (checkpoint `step`) or of an exported folder, on the default device."""
    folder = pathlib.Path(checkpoint).expanduser()
    if not folder.is_dir():
        raise UserError(f"--checkpoint {folder}: no such folder (give a run's workdir or an exported folder)")
    exported = (folder / EXPORT_FILE).is_file()
    if not exported and not (folder / "checkpoints").is_dir():
        raise UserError(f"--checkpoint {folder}: neither a run's workdir (no checkpoints/) nor a folder written by "
                        f"`python -m salax.predict export` (no {EXPORT_FILE})")
    config = read_config(folder)
    number, saved = _export_params(folder) if exported else _run_params(folder, config, step)
    where = str(folder) if exported else f"{folder}/checkpoints/{number}"
    return from_params(config, saved, step=number, source=where)


def from_params(config: ml_collections.ConfigDict, params: Any, *, step: int = 0, source: str = "") -> Predictor:
    """A Predictor of `config`'s model with `params` (any tree whose leaf paths name the model's
    parameters: a restored checkpoint, an export, or `nnx.to_pure_dict` of a fresh model's params)."""
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    try:
        model = inference.ShardedModel.create(config, mesh)
    except (KeyError, AttributeError, TypeError, ValueError) as error:
        raise UserError(f"{source}: {CONFIG_FILE} is not a salax model config ({_first_line(error)})") from error
    saved = {key: np.asarray(value) for key, value in _flat(params).items()}
    return Predictor(config, step, source, _placed(model, saved, source), model.predict_fn())


def write_export(out: str | os.PathLike, config: ml_collections.ConfigDict, params: Any, *, step: int,
                 origin: str = "") -> pathlib.Path:
    """Write `out/` for `load`: config.json, params.npz (one array per parameter path), export.json.

    Written to a hidden temporary folder beside `out` and renamed when complete.
    """
    out = pathlib.Path(out).expanduser()
    if out.exists():
        raise UserError(f"--out {out} exists already; give a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        (temporary / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n")
        np.savez(temporary / PARAMS_FILE, **{key: np.asarray(value) for key, value in _flat(params).items()})
        (temporary / EXPORT_FILE).write_text(json.dumps({"step": step, "workdir": origin}) + "\n")
        temporary.rename(out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return out


def export(workdir: str | os.PathLike, out: str | os.PathLike, step: str | int = "best") -> pathlib.Path:
    """Export checkpoint `step` of the run in `workdir` for inference: its config and parameters only
    (no optimiser state, no data position), small, and enough for `load`."""
    workdir = pathlib.Path(workdir).expanduser()
    if pathlib.Path(out).expanduser().exists():
        raise UserError(f"--out {out} exists already; give a new folder")
    config = read_config(workdir)
    number, saved = _run_params(workdir, config, step)
    return write_export(out, config, saved, step=number, origin=str(workdir.resolve()))


# ----------------------------------------------------------------------------------------- one video


def _probe(path: pathlib.Path) -> media.VideoInfo:
    try:
        return media.probe(path)
    except media.MediaError as error:
        raise VideoError(str(error)) from error


def native_maps(
    predictor: Predictor,
    path: str | os.PathLike,
    *,
    batch_size: int = 8,
    progress: bool = True,
    stopwatch: Stopwatch | None = None,
) -> Iterator[np.ndarray]:
    """float32 [H, W] maps in [0, 1] at the video's upright size, one per frame, in order, streamed."""
    path = pathlib.Path(path)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    clock = stopwatch or Stopwatch()
    info = _probe(path)
    native = (info.height, info.width)
    storage = predictor.storage_size(*native)
    span = clips.clip_span(predictor.clip_frames, predictor.stride)
    try:
        audio = media.read_audio(path) if predictor.audio else None
    except media.MediaError as error:
        raise VideoError(str(error)) from error
    samples = predictor.audio_samples
    silence = np.zeros(samples, np.float32)
    history: collections.deque[np.ndarray] = collections.deque(maxlen=span)  # model-size frames
    videos: list[np.ndarray] = []
    windows: list[np.ndarray] = []

    def run() -> Iterator[np.ndarray]:
        count = len(videos)
        pad = batch_size - count  # the last batch is padded, so the model compiles once
        batch = {
            "video": clock.timed("prepare", clips.normalise, np.stack(videos + videos[-1:] * pad)),
            "audio": np.stack(windows + windows[-1:] * pad),
            "has_audio": np.full(batch_size, audio is not None),
        }
        maps = clock.timed("model", predictor.predict, predictor.params, batch)[:count]
        if maps.ndim == 4:  # target "all": the clip's last frame is the causal map
            maps = maps[:, -1]
        videos.clear()
        windows.clear()
        resized = map_encoding.resized(maps, native, batch=batch_size)
        while (values := clock.timed("resize", next, resized, None)) is not None:
            bar.update(1)
            yield values

    bar = tqdm(total=info.num_frames or None, desc=path.name, unit="frame", disable=not progress, leave=True)
    frames = media.iter_timed_frames(path, sizes=(storage,))
    decoded = 0
    try:
        while True:
            try:
                frame = clock.timed("decode", next, frames, None)
            except media.MediaError as error:
                where = f"after frame {decoded - 1} ({decoded} frames decoded)" if decoded else "before its first frame"
                raise VideoError(f"{path}: the video stream breaks {where}: {error}") from error
            if frame is None:
                break
            decoded += 1
            history.append(clock.timed("prepare", clips.resize_antialiased, frame.images[0], predictor.image_size))
            first = frame.index - len(history) + 1  # the index of history[0]
            indices = clips.frame_indices(frame.index, predictor.clip_frames, predictor.stride)
            videos.append(np.stack([history[i - first] for i in indices]))
            windows.append(silence if audio is None else clips.audio_window_until(audio, frame.end, samples))
            if len(videos) == batch_size:
                yield from run()
        if videos:
            yield from run()
    finally:
        frames.close()
        bar.close()


class _NpyWriter:
    """float32 maps streamed into a .npy whose frame count is written into the header at the end."""

    def __init__(self, path: pathlib.Path):
        self.path, self.count, self.shape = path, 0, None
        self.file = open(path, "wb")
        self.file.write(self._header((0, 0, 0)))

    @staticmethod
    def _header(shape: tuple[int, ...]) -> bytes:
        text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
        return b"\x93NUMPY\x01\x00" + _NPY_HEADER.to_bytes(2, "little") + (text.ljust(_NPY_HEADER - 1) + "\n").encode()

    def write(self, values: np.ndarray) -> None:
        self.shape = values.shape
        self.file.write(np.ascontiguousarray(values, "<f4").tobytes())
        self.count += 1

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(self._header((self.count, *self.shape)))
        self.file.close()


def _write_maps(maps: Iterator[np.ndarray], target: pathlib.Path, fmt: str, fps: float) -> None:
    """Maps at the output size into `target`: mp4 and png hold `map_encoding.levels`, npy the floats."""
    if fmt == "mp4":
        map_encoding.write_video(target, map(map_encoding.levels, maps), fps=fps)
    elif fmt == "png":
        target.mkdir()
        for index, values in enumerate(maps, start=1):
            Image.fromarray(map_encoding.levels(values)).save(target / f"{index:03d}.png")
    else:
        writer = _NpyWriter(target)
        try:
            for values in maps:
                writer.write(values)
        finally:
            writer.close()


def _written_maps(target: pathlib.Path, fmt: str) -> Iterator[np.ndarray]:
    """The maps just written, streamed back (for the overlay)."""
    if fmt == "mp4":
        for chunk in media.iter_maps(target):
            yield from chunk
    elif fmt == "png":
        for png in sorted(target.glob("*.png"), key=lambda p: int(p.stem)):
            yield np.asarray(Image.open(png), np.float32) / map_encoding.LEVELS
    else:
        yield from np.load(target, mmap_mode="r")


def _outputs(out_dir: epath.Path, stem: str, fmt: str) -> tuple[epath.Path, epath.Path]:
    return out_dir / (stem if fmt == "png" else f"{stem}.{fmt}"), out_dir / f"{stem}_overlay.mp4"


def predict_video(
    predictor: Predictor,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fmt: str = "mp4",
    overlay: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    stopwatch: Stopwatch | None = None,
) -> list[epath.Path]:
    """Predict one video into `out_dir` (local or remote); returns the outputs. VideoError names a bad input.

    Each output is written to a local staging path and put in place only when complete (the maps first,
    then the overlay), so an interrupted or failed video leaves neither.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    path, out_dir = pathlib.Path(path), paths.as_path(out_dir)
    info = _probe(path)
    target, overlay_target = _outputs(out_dir, path.stem, fmt)
    with contextlib.ExitStack() as stack:  # unwound last in, first out: the maps land before the overlay
        overlay_staging = stack.enter_context(paths.staged(overlay_target)) if overlay else None
        staging = stack.enter_context(paths.staged(target))
        maps = native_maps(predictor, path, batch_size=batch_size, progress=progress, stopwatch=stopwatch)
        _write_maps(maps, staging, fmt, info.fps)
        if overlay_staging is not None:
            frames = (frame for chunk in media.iter_frames(path) for frame in chunk)
            try:
                media.write_overlay_video(overlay_staging, frames, _written_maps(staging, fmt), fps=info.fps,
                                          audio_from=path)
            except media.MediaError as error:
                raise VideoError(str(error)) from error
    return [target, overlay_target] if overlay else [target]


# ----------------------------------------------------------------------------------------- the CLI


def input_videos(source: str | os.PathLike) -> list[pathlib.Path]:
    """A file, or every visible file of a folder (not recursive), in name order."""
    source = pathlib.Path(source).expanduser()
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise UserError(f"--input {source}: no such file or folder")
    videos = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    if not videos:
        raise UserError(f"--input {source}: the folder holds no files")
    return videos


def _check_outputs(videos: Sequence[pathlib.Path], out_dir: epath.Path, fmt: str, overlay: bool) -> None:
    """Refuse before any work when two inputs share a stem or an output would replace an input."""
    stems = collections.defaultdict(list)
    for video in videos:
        stems[video.stem].append(video.name)
    clashes = [names for names in stems.values() if len(names) > 1]
    if clashes:
        raise UserError(f"inputs share a name, their outputs would collide: {clashes}")
    inputs = {video.resolve() for video in videos}
    for video in videos:
        for output in _outputs(out_dir, video.stem, fmt)[: 2 if overlay else 1]:
            if output.resolve() in inputs:
                raise UserError(f"the output {output} would replace an input; give another --out")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m salax.predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Saliency maps for any video (or a folder of them): one map per frame, the input's frame "
                    "count, fps and upright size, each from the causal clip ending on its frame (clip frames "
                    "before the video's start repeat its first frame, as in training). Outputs keep the input's "
                    "stem and appear only when complete.\n\nTo export a run for inference (config + parameters "
                    "only):\n  python -m salax.predict export --workdir RUN --out DIR [--step best|latest|N]",
        epilog="Exit status: 0 all written, 1 a video failed (named; with --keep_going all failures are listed at "
               "the end), 2 a usage or checkpoint problem.")
    parser.add_argument("--checkpoint", required=True, help="a run's workdir, or a folder written by `export`")
    parser.add_argument("--input", required=True, help="a video file, or a folder: every file in it")
    parser.add_argument("--out", default="predictions", help="output folder (default %(default)s)")
    parser.add_argument("--overlay", action="store_true", help="also write <name>_overlay.mp4 (heat map, sound)")
    parser.add_argument("--step", default="best", help="best (by validation CC), latest or a step (workdir only)")
    parser.add_argument("--batch_size", type=int, default=8, help="clips per model call (default %(default)s)")
    parser.add_argument("--format", choices=FORMATS, default="mp4",
                        help="mp4: 8-bit grey video (submission layout); png: <name>/001.png...; npy: float32 [T,H,W]")
    parser.add_argument("--keep_going", action="store_true", help="skip a bad video, list the failures at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m salax.predict export",
        description="Write a run's config and the parameters of one checkpoint (no optimiser state) to a new folder "
                    "that `python -m salax.predict --checkpoint DIR` reads.")
    parser.add_argument("--workdir", required=True, help="the run's workdir")
    parser.add_argument("--out", required=True, help="a new folder")
    parser.add_argument("--step", default="best", help="best (by validation CC), latest or a step number")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    videos = input_videos(args.input)
    out_dir = paths.as_path(args.out)
    _check_outputs(videos, out_dir, args.format, args.overlay)
    predictor = load(args.checkpoint, args.step)
    print(f"model: {predictor.source} step {predictor.step}; {len(videos)} video(s) -> {out_dir}", file=sys.stderr)
    failed = []
    for video in videos:
        try:
            written = predict_video(predictor, video, out_dir, fmt=args.format, overlay=args.overlay,
                                    batch_size=args.batch_size, progress=not args.quiet)
        except VideoError as error:
            if not args.keep_going:
                print(f"error: {error}", file=sys.stderr)
                return 1
            failed.append(str(error))
            continue
        for path in written:
            print(path)
    if failed:
        print(f"{len(failed)} of {len(videos)} video(s) failed:", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["export"]:
            args = _export_parser().parse_args(argv[1:])
            print(export(args.workdir, args.out, args.step))
            return 0
        return _run(_parser().parse_args(argv))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, the one being written was removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
