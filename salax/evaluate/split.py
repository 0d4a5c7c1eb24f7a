"""A model on a built split, scored exactly by the AIM 2024 rules beside the centre prior.

Every frame of every video is predicted from the causal clip that ends on it and scored against
the source ground-truth map video and the native-grid fixations (`videos.score_video`: per frame,
mean per video, mean over videos). Two score sets can come out:

- "model": the model's float maps, as validation during training scores them (and `best` selects on);
- "as_submitted" (on request; `python -m salax.evaluate --workdir` asks for it): the 8-bit frames
  `salax.predict` would write for each video (`salax.evaluate.map_encoding`: resized to the video's size,
  stretched, rounded), scored as `--predictions` scores a submission folder
  (`salax.evaluate.submission`). They differ from "model" mainly in AUC-Judd: 8 bits turn a map's
  near-zero tail into ties at level 0.

Optionally the predicted maps are written as `<name>.mp4` (exactly those 8-bit frames) and
`<name>_overlay.mp4` (heat colours on the source video, with its sound), to a local or remote
(``gs://``) folder: each is encoded locally and put in place when complete (`salax.paths.staged`).

On several processes every process predicts every batch (the prediction is one sharded call), but
each video is decoded, scored and written by one process only (videos are dealt round-robin);
the per-frame scores are then gathered, so every process returns the same summary as one would.
"""

from collections.abc import Callable, Iterator, Mapping
import dataclasses
import itertools
import os
import pathlib
from typing import Any

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from tqdm import tqdm

from salax import batch as batch_contract
from salax import metrics, paths
from salax.data import avimos, media, pipeline
from salax.evaluate import map_encoding, submission, videos

# `(batch of clips) -> saliency maps [B, h, w] in [0, 1]` on the model grid.
Predictor = Callable[[Mapping[str, np.ndarray]], np.ndarray]
# `(params, batch) -> maps`: what `salax.inference.ShardedModel.predict_fn` gives.
ParamsPredictor = Callable[[Any, Mapping[str, np.ndarray]], np.ndarray]
RESIZE_CHUNK = 32  # predicted frames resized to the video's size at a time (as submitted, written videos)


@dataclasses.dataclass(frozen=True)
class EvalData:
    """Where the validation videos are: the built split (model inputs) and the source files (truth)."""

    data_dir: str
    builder_config: Any  # a builder config name ("s224") or an AvimosConfig
    split: str
    manual_dir: str  # the unpacked AViMoS folder: its ground-truth map videos are what is scored
    clip_frames: int
    stride: int
    image_size: tuple[int, int]
    batch_size: int
    audio: bool
    max_videos: int = 0  # 0 = all
    videos: tuple[str, ...] = ()  # only these names (all when empty)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, split: str | None = None) -> "EvalData":
        """The evaluation data of a run's config: its `eval_split`, or `split`."""
        return cls(
            data_dir=str(pathlib.Path(config.data.data_dir).expanduser()),
            builder_config=config.data.builder_config,
            split=split or config.data.eval_split,
            manual_dir=str(pathlib.Path(config.data.manual_dir).expanduser()),
            clip_frames=config.model.num_frames,
            stride=config.data.clip_stride,
            image_size=tuple(config.model.image_size),
            batch_size=config.data.eval_batch_size,
            audio=config.model.audio,
            max_videos=config.data.eval_max_videos,
        )


def _submitted_frames(source: avimos.VideoSource, maps: np.ndarray) -> Iterator[np.ndarray]:
    """The uint8 [H, W] frames `salax.predict` writes for `source.video` from these model-grid maps."""
    info = media.probe(source.video)
    return map_encoding.encode(maps, (info.height, info.width), batch=RESIZE_CHUNK)


def write_predictions(source: avimos.VideoSource, maps: np.ndarray, directory: str | os.PathLike) -> None:
    """`<name>.mp4`: the video's predicted maps as submitted; `<name>_overlay.mp4`: on the video, with sound.

    `directory` is local or remote (``gs://...``, anything epath opens).
    """
    info = media.probe(source.video)
    directory = paths.as_path(directory)
    with paths.staged(directory / f"{source.name}.mp4") as staging:
        map_encoding.write_video(staging, _submitted_frames(source, maps), fps=info.fps)
    with paths.staged(directory / f"{source.name}_overlay.mp4") as staging:
        frames = (frame for chunk in media.iter_frames(source.video) for frame in chunk)
        media.write_overlay_video(staging, frames, maps, fps=info.fps, audio=media.read_audio(source.video))


def _as_submitted(source: avimos.VideoSource, maps: np.ndarray, corrected: bool) -> videos.VideoScores:
    """The video's maps as submitted, scored by the submission scorer's rules ([H, W, 1]: its grey layout)."""
    frames = (frame[..., None] for frame in _submitted_frames(source, maps))
    return submission.score_frames(source.name, frames, source.saliency, source.fixations, corrected=corrected)


def _truth_frames(path: pathlib.Path) -> Iterator[np.ndarray]:
    for chunk in media.iter_maps(path):
        yield from chunk


def _predicted(predict: Predictor, batches: Iterator[Mapping[str, Any]],
               kept: list[np.ndarray] | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(map, fixations) per valid frame of a video's batches; the maps also go to `kept` if given."""
    for batch in batches:
        valid = np.asarray(batch["valid"], bool)
        maps = np.asarray(predict(batch), np.float32)[valid]
        if kept is not None:
            kept.append(maps)
        points, counts = np.asarray(batch["fixations_native"])[valid], np.asarray(batch["num_fixations"])[valid]
        for frame, frame_points, count in zip(maps, points, counts):
            yield frame, frame_points[:count]


@dataclasses.dataclass(frozen=True)
class _Scored:
    """One video's per-frame scores: the float maps beside the centre prior, and as submitted (or None)."""

    model: videos.VideoScores
    submitted: videos.VideoScores | None = None


def _gathered(scored: Mapping[str, _Scored], names: list[str], owner: Mapping[str, int],
              as_submitted: bool) -> list[_Scored]:
    """Every process's scored videos on every process (float32 per-frame scores, exactly)."""
    if jax.process_count() == 1:
        return [scored[name] for name in names]
    lengths = np.zeros(len(names), np.int32)
    for index, name in enumerate(names):
        if name in scored:
            lengths[index] = scored[name].model.num_frames
    lengths = np.asarray(multihost_utils.process_allgather(lengths)).sum(axis=0)
    metric_names = metrics.METRIC_NAMES
    table = np.full((len(names), 3, len(metric_names), max(1, int(lengths.max(initial=0)))), np.nan, np.float32)
    for index, name in enumerate(names):
        if name in scored:
            video = scored[name]
            parts = (video.model.frames, video.model.prior, video.submitted.frames if video.submitted else {})
            for part, scores in enumerate(parts):
                for column, metric in enumerate(metric_names):
                    if metric in scores:
                        table[index, part, column, : lengths[index]] = scores[metric]
    tables = np.asarray(multihost_utils.process_allgather(table))
    result = []
    for index, name in enumerate(names):
        rows = tables[owner[name], index, :, :, : lengths[index]]
        model, prior, submitted = ({metric: rows[part, column] for column, metric in enumerate(metric_names)}
                                   for part in range(3))
        submitted = {metric: submitted[metric] for metric in metrics.RANKING_METRICS}
        result.append(_Scored(videos.VideoScores(name, model, prior),
                              videos.VideoScores(name, submitted) if as_submitted else None))
    return result


def evaluate(
    predict: Predictor,
    data: EvalData,
    *,
    predictions_dir: str | os.PathLike | None = None,
    corrected: bool = False,
    as_submitted: bool = False,
) -> dict[str, Any]:
    """Score `predict` and the centre prior on `data`'s videos; optionally as submitted, and write videos.

    Returns {"model": means, "centre_prior": means, "videos", "frames", "excluded_frames", "split"}:
    means per metric (auc_judd, cc, nss, sim, kld) of the float maps, per video then over videos, as
    AIM ranks; with `as_submitted` also "as_submitted": the four ranked metrics of the 8-bit frames
    `salax.predict` writes, as `salax.evaluate --predictions` gives them (it drops a frame without
    fixations from all four means, "model" from AUC-Judd and NSS only). Both need every map of a
    video held at model size until the video is scored.
    """
    names = list(pipeline.list_videos(data.data_dir, builder_config=data.builder_config, split=data.split))
    if data.videos:
        names = [name for name in names if name in data.videos]
    if data.max_videos:
        names = names[: data.max_videos]
    sources, problems = avimos.find_sources(pathlib.Path(data.manual_dir).expanduser(), names)
    if problems:
        raise FileNotFoundError(f"ground truth for evaluation is missing in {data.manual_dir}: {problems[0]}")
    by_name = {source.name: source for source in sources}
    owner = {name: index % jax.process_count() for index, name in enumerate(names)}
    clips = pipeline.eval_clips(data.data_dir, builder_config=data.builder_config, split=data.split,
                                clip_frames=data.clip_frames, stride=data.stride, image_size=data.image_size,
                                batch_size=data.batch_size, audio=data.audio)
    done: list[str] = []
    scored: dict[str, _Scored] = {}
    progress = tqdm(total=len(names), desc=f"evaluate {data.split}", unit="video",
                    disable=jax.process_index() != 0)
    for name, batches in itertools.groupby(clips, key=lambda batch: str(batch["name"])):
        if len(done) == len(by_name):
            break
        if name not in by_name:
            continue
        if owner[name] == jax.process_index():
            source = by_name[name]
            kept = [] if predictions_dir is not None or as_submitted else None
            model_frames, fixation_frames = itertools.tee(_predicted(predict, batches, kept))
            model = videos.score_video(name, (frame for frame, _ in model_frames), _truth_frames(source.saliency),
                                       (points for _, points in fixation_frames), corrected=corrected)
            maps = np.concatenate(kept) if kept is not None else None
            scored[name] = _Scored(model, _as_submitted(source, maps, corrected) if as_submitted else None)
            if predictions_dir is not None:
                write_predictions(source, maps, predictions_dir)
        else:
            for batch in batches:
                predict(batch)  # the prediction is collective: every process takes part in every call
        done.append(name)
        progress.update(1)
    progress.close()
    results = _gathered(scored, done, owner, as_submitted)
    model = metrics.aim_means([video.model.frames for video in results])
    prior = metrics.aim_means([video.model.prior for video in results])
    summary = {
        "split": data.split,
        "videos": len(results),
        "frames": int(sum(video.model.num_frames for video in results)),
        "model": model.means,
        "centre_prior": prior.means,
        "excluded_frames": model.excluded_frames,
    }
    if as_submitted:
        summary["as_submitted"] = submission.mean_scores([video.submitted for video in results])
    return summary


def side_by_side(batch: Mapping[str, Any], maps: np.ndarray, index: int = 0) -> np.ndarray:
    """An image for TensorBoard: a clip's last frame | its ground truth | the prediction (model grid)."""
    frame = (batch_contract.unnormalise(batch["video"][index, -1]) * 255).astype(np.uint8)
    height, width = frame.shape[:2]
    truth = np.asarray(batch["saliency"][index], np.float32)
    rows = np.arange(height) * truth.shape[0] // height
    cols = np.arange(width) * truth.shape[1] // width
    truth = truth[rows][:, cols]
    normalise = lambda m: (m - m.min()) / (m.max() - m.min() + 1e-7)  # noqa: E731
    return np.concatenate([frame, media.colorize(normalise(truth)), media.colorize(normalise(maps[index]))], axis=1)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One validation run: the summary (see `evaluate`) and the TensorBoard image of its first batch."""

    summary: dict[str, Any]
    image: np.ndarray | None

    def scalars(self) -> dict[str, float]:
        """The summary's means as flat scalars for the run log (centre prior prefixed)."""
        prior = {f"centre_prior_{name}": value for name, value in self.summary["centre_prior"].items()}
        return {**self.summary["model"], **prior}


class ValidationEvaluator:
    """Scores parameters on the validation videos through a `(params, batch) -> maps` function.

    It knows nothing of training: any predict function of the model serves (the train loop's, or
    one from `salax.inference`).
    """

    def __init__(self, data: EvalData, predict: ParamsPredictor):
        self.data = data
        self._predict = predict

    def __call__(self, params: Any, *, predictions_dir: str | os.PathLike | None = None,
                 corrected: bool = False, as_submitted: bool = False) -> Evaluation:
        image = []

        def predict(batch: Mapping[str, Any]) -> np.ndarray:
            maps = self._predict(params, batch_contract.model_inputs(batch))
            if not image:
                image.append(side_by_side(batch, maps))
            return maps

        summary = evaluate(predict, self.data, predictions_dir=predictions_dir, corrected=corrected,
                           as_submitted=as_submitted)
        return Evaluation(summary, image[0] if image else None)
