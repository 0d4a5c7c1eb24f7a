"""Evaluate a model on validation videos exactly by the AIM 2024 rules, beside the centre prior.

Every frame of every video is predicted from the causal clip that ends on it, resized to the
ground-truth grid and scored against the source ground-truth map video and the native-grid
fixations (`salax.metrics`: per frame, mean per video, mean over videos). A centre prior is
scored on the same frames, as the reference any model must beat. Optionally the predicted maps
are written as `<name>.mp4` (8-bit grey, the submission format, at the ground-truth size) and
`<name>_overlay.mp4` (heat colours on the source video, with its sound).
"""

from collections.abc import Callable, Iterator, Mapping
import dataclasses
import functools
import itertools
import pathlib
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from salax import metrics
from salax.data import avimos_builder, media, pipeline

# `(batch of clips) -> saliency maps [B, h, w] in [0, 1]` on the model grid.
Predictor = Callable[[Mapping[str, np.ndarray]], np.ndarray]
CENTRE_SIGMA = 0.25  # centre prior: Gaussian with sigma = this fraction of the height and width
RESIZE_CHUNK = 32  # predicted frames resized to the ground-truth size at a time, when writing videos


def centre_prior(height: int, width: int) -> np.ndarray:
    """An anisotropic Gaussian in the middle of the frame: where people look when nothing stands out."""
    rows = (np.arange(height) + 0.5 - height / 2) / (CENTRE_SIGMA * height)
    cols = (np.arange(width) + 0.5 - width / 2) / (CENTRE_SIGMA * width)
    return np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class EvalData:
    """Where the validation videos are: the built split (model inputs) and the source files (truth)."""

    data_dir: str
    builder_config: str | avimos_builder.AvimosConfig
    split: str
    manual_dir: str  # the unpacked AViMoS folder: its ground-truth map videos are what is scored
    clip_frames: int
    stride: int
    image_size: tuple[int, int]
    batch_size: int
    audio: bool
    max_videos: int = 0  # 0 = all
    videos: tuple[str, ...] = ()  # only these names (all when empty)


def _ground_truth_frames(path: pathlib.Path) -> Iterator[np.ndarray]:
    for chunk in media.iter_maps(path):
        yield from chunk


@functools.partial(jax.jit, static_argnums=1)
def _resize(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
    """[T, h, w] -> [T, *size], OpenCV's bilinear (what scoring does to a prediction)."""
    return jax.vmap(lambda m: metrics.resize_bilinear(m, size))(maps)


@dataclasses.dataclass
class _Video:
    """One video being scored: its truth stream, per-frame scores, and predicted maps if kept."""

    source: avimos_builder.VideoSource
    truth: Iterator[np.ndarray]
    scores: dict[str, list[np.ndarray]]
    prior_scores: dict[str, list[np.ndarray]]
    maps: list[np.ndarray]
    frames: int = 0


def _score(video: _Video, maps: np.ndarray, batch: Mapping[str, Any], corrected: bool) -> None:
    valid = np.asarray(batch["valid"], bool)
    maps = maps[valid]
    truth = [next(video.truth, None) for _ in range(len(maps))]
    if any(frame is None for frame in truth):
        raise ValueError(f"{video.source.saliency}: fewer ground-truth frames than the video's "
                         f"{video.frames + len(maps)} frames")
    truth = np.stack(truth)
    fixations, counts = batch["fixations_native"][valid], batch["num_fixations"][valid]
    for target, predicted in ((video.scores, maps),
                              (video.prior_scores, np.broadcast_to(centre_prior(*truth.shape[1:]), truth.shape))):
        for name, values in metrics.aim_frame_scores(predicted, truth, fixations, counts, corrected=corrected).items():
            target.setdefault(name, []).append(values)
    video.frames += len(maps)


def _finish(video: _Video, predictions_dir: pathlib.Path | None) -> tuple[dict, dict]:
    if next(video.truth, None) is not None:
        raise ValueError(f"{video.source.saliency}: more ground-truth frames than the video's {video.frames}")
    if predictions_dir is not None:
        write_predictions(video.source, np.concatenate(video.maps), predictions_dir)
    joined = ({name: np.concatenate(parts) for name, parts in scores.items()}
              for scores in (video.scores, video.prior_scores))
    return tuple(joined)


def write_predictions(source: avimos_builder.VideoSource, maps: np.ndarray, directory: pathlib.Path) -> None:
    """`<name>.mp4`: maps at the ground-truth size, 8-bit; `<name>_overlay.mp4`: on the video, with sound."""
    info = media.probe(source.video)
    truth = media.probe(source.saliency)
    directory.mkdir(parents=True, exist_ok=True)
    size = (truth.height, truth.width)
    native = (np.clip(frame, 0.0, 1.0) for start in range(0, len(maps), RESIZE_CHUNK)
              for frame in np.asarray(_resize(maps[start : start + RESIZE_CHUNK], size)))  # streamed: 1080p adds up
    media.write_map_video(directory / f"{source.name}.mp4", native, fps=truth.fps, bit_depth=8)
    frames = (frame for chunk in media.iter_frames(source.video) for frame in chunk)
    media.write_overlay_video(directory / f"{source.name}_overlay.mp4", frames, maps, fps=info.fps,
                              audio=media.read_audio(source.video))


def evaluate(
    predict: Predictor,
    data: EvalData,
    *,
    predictions_dir: pathlib.Path | None = None,
    corrected: bool = False,
) -> dict[str, Any]:
    """Score `predict` and the centre prior on `data`'s videos; optionally write predicted videos.

    Returns {"model": means, "centre_prior": means, "videos", "frames", "excluded_frames", "split"}:
    means per metric (auc_judd, cc, nss, sim, kld), per video then over videos, as AIM ranks.
    """
    names = list(pipeline.list_videos(data.data_dir, builder_config=data.builder_config, split=data.split))
    if data.videos:
        names = [name for name in names if name in data.videos]
    if data.max_videos:
        names = names[: data.max_videos]
    sources, problems = avimos_builder.find_sources(pathlib.Path(data.manual_dir).expanduser(), names)
    if problems:
        raise FileNotFoundError(f"ground truth for evaluation is missing in {data.manual_dir}: {problems[0]}")
    by_name = {source.name: source for source in sources}
    clips = pipeline.eval_clips(data.data_dir, builder_config=data.builder_config, split=data.split,
                                clip_frames=data.clip_frames, stride=data.stride, image_size=data.image_size,
                                batch_size=data.batch_size, audio=data.audio)
    model_videos, prior_videos = [], []
    progress = tqdm(total=len(names), desc=f"evaluate {data.split}", unit="video",
                    disable=jax.process_index() != 0)
    for name, batches in itertools.groupby(clips, key=lambda batch: str(batch["name"])):
        if len(model_videos) == len(by_name):
            break
        if name not in by_name:
            continue
        video = _Video(by_name[name], _ground_truth_frames(by_name[name].saliency), {}, {}, [])
        for batch in batches:
            maps = np.asarray(predict(batch), np.float32)
            _score(video, maps, batch, corrected)
            if predictions_dir is not None:
                video.maps.append(maps[np.asarray(batch["valid"], bool)])
        model_scores, prior_scores = _finish(video, predictions_dir)
        model_videos.append(model_scores)
        prior_videos.append(prior_scores)
        progress.update(1)
    progress.close()
    model, prior = metrics.aim_means(model_videos), metrics.aim_means(prior_videos)
    return {
        "split": data.split,
        "videos": len(model_videos),
        "frames": int(sum(len(v["cc"]) for v in model_videos)),
        "model": model.means,
        "centre_prior": prior.means,
        "excluded_frames": model.excluded_frames,
    }


def model_inputs(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of an evaluation batch that the model reads."""
    return {key: np.asarray(batch[key]) for key in ("video", "audio", "has_audio")}


def side_by_side(batch: Mapping[str, Any], maps: np.ndarray, index: int = 0) -> np.ndarray:
    """An image for TensorBoard: a clip's last frame | its ground truth | the prediction (model grid)."""
    frame = batch["video"][index, -1] * pipeline.IMAGENET_STD + pipeline.IMAGENET_MEAN
    frame = (np.clip(frame, 0.0, 1.0) * 255).astype(np.uint8)
    height, width = frame.shape[:2]
    truth = np.asarray(batch["saliency"][index], np.float32)
    rows = np.arange(height) * truth.shape[0] // height
    cols = np.arange(width) * truth.shape[1] // width
    truth = truth[rows][:, cols]
    normalise = lambda m: (m - m.min()) / (m.max() - m.min() + 1e-7)  # noqa: E731
    return np.concatenate([frame, media.colorize(normalise(truth)), media.colorize(normalise(maps[index]))], axis=1)


def _main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    import ml_collections

    from salax import sharding, train
    from salax.checkpoint import RunCheckpoints

    parser = argparse.ArgumentParser(
        prog="python -m salax.evaluate",
        description="Score a trained run's checkpoint on a split by the AIM 2024 rules, beside the centre "
                    "prior, and optionally write its predicted map videos and overlays. Prints the summary "
                    "as JSON (means per video, then over videos).")
    parser.add_argument("--workdir", required=True, help="the run's --workdir (its config.json and checkpoints)")
    parser.add_argument("--step", default="best", help="'best' (by validation CC), 'latest', or a step number")
    parser.add_argument("--split", default=None, help="split of the build (default: the run's eval_split)")
    parser.add_argument("--predictions", default=None, help="folder for <video>.mp4 and <video>_overlay.mp4")
    parser.add_argument("--corrected", action="store_true", help="AUC-Judd with distinct fixated pixels "
                        "instead of the AIM script's unique-columns quirk")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(args.workdir).expanduser().absolute()
    config_file = workdir / train.CONFIG_FILE
    if not config_file.is_file():
        parser.error(f"{workdir} holds no run ({train.CONFIG_FILE} is missing)")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    checkpoints = RunCheckpoints(workdir / "checkpoints", keep=config.keep_checkpoints)
    named = {"best": checkpoints.best_step() or checkpoints.latest_step(), "latest": checkpoints.latest_step()}
    step = named[args.step] if args.step in named else int(args.step)
    if step is None:
        parser.error(f"{checkpoints.directory} holds no checkpoint")
    trainer = train.Trainer.create(config, sharding.make_mesh(config.mesh))
    state = checkpoints.restore_state(step, trainer.abstract_state())
    evaluator = train.ValidationEvaluator(config, trainer, workdir)
    evaluator.data = dataclasses.replace(evaluator.data, split=args.split or config.data.eval_split)
    predictions = pathlib.Path(args.predictions).expanduser() if args.predictions else None
    summary, _ = evaluator.score(state["params"], predictions_dir=predictions, corrected=args.corrected)
    print(json.dumps({"step": step, **summary}, indent=2))


if __name__ == "__main__":
    _main()
