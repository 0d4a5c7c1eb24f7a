"""A model on a built split, scored exactly by the AIM 2024 rules beside the centre prior.

Every frame of every video is predicted from the causal clip that ends on it and scored against
the source ground-truth map video and the native-grid fixations (`videos.score_video`: per frame,
mean per video, mean over videos). Optionally the predicted maps are written as `<name>.mp4`
(8-bit grey, the submission format, at the ground-truth size) and `<name>_overlay.mp4` (heat
colours on the source video, with its sound).

On several processes every process predicts every batch (the prediction is one sharded call), but
each video is decoded, scored and written by one process only (videos are dealt round-robin);
the per-frame scores are then gathered, so every process returns the same summary as one would.
"""

from collections.abc import Callable, Iterator, Mapping
import dataclasses
import functools
import itertools
import pathlib
from typing import Any

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from tqdm import tqdm

from salax import batch as batch_contract
from salax import metrics
from salax.data import avimos, media, pipeline
from salax.evaluate import videos

# `(batch of clips) -> saliency maps [B, h, w] in [0, 1]` on the model grid.
Predictor = Callable[[Mapping[str, np.ndarray]], np.ndarray]
# `(params, batch) -> maps`: what `salax.inference.ShardedModel.predict_fn` gives.
ParamsPredictor = Callable[[Any, Mapping[str, np.ndarray]], np.ndarray]
RESIZE_CHUNK = 32  # predicted frames resized to the ground-truth size at a time, when writing videos


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


@functools.partial(jax.jit, static_argnums=1)
def _resize(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
    """[T, h, w] -> [T, *size], OpenCV's bilinear (what scoring does to a prediction)."""
    return jax.vmap(lambda m: metrics.resize_bilinear(m, size))(maps)


def write_predictions(source: avimos.VideoSource, maps: np.ndarray, directory: pathlib.Path) -> None:
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


def _gathered(scored: Mapping[str, videos.VideoScores], names: list[str],
              owner: Mapping[str, int]) -> list[videos.VideoScores]:
    """Every process's scored videos on every process (float32 per-frame scores, exactly)."""
    if jax.process_count() == 1:
        return [scored[name] for name in names]
    lengths = np.zeros(len(names), np.int32)
    for index, name in enumerate(names):
        if name in scored:
            lengths[index] = scored[name].num_frames
    lengths = np.asarray(multihost_utils.process_allgather(lengths)).sum(axis=0)
    metric_names = metrics.METRIC_NAMES
    table = np.zeros((len(names), 2, len(metric_names), max(1, int(lengths.max(initial=0)))), np.float32)
    for index, name in enumerate(names):
        if name in scored:
            for part, scores in enumerate((scored[name].frames, scored[name].prior)):
                for column, metric in enumerate(metric_names):
                    table[index, part, column, : lengths[index]] = scores[metric]
    tables = np.asarray(multihost_utils.process_allgather(table))
    result = []
    for index, name in enumerate(names):
        rows = tables[owner[name], index, :, :, : lengths[index]]
        model, prior = ({metric: rows[part, column] for column, metric in enumerate(metric_names)} for part in (0, 1))
        result.append(videos.VideoScores(name, model, prior))
    return result


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
    sources, problems = avimos.find_sources(pathlib.Path(data.manual_dir).expanduser(), names)
    if problems:
        raise FileNotFoundError(f"ground truth for evaluation is missing in {data.manual_dir}: {problems[0]}")
    by_name = {source.name: source for source in sources}
    owner = {name: index % jax.process_count() for index, name in enumerate(names)}
    clips = pipeline.eval_clips(data.data_dir, builder_config=data.builder_config, split=data.split,
                                clip_frames=data.clip_frames, stride=data.stride, image_size=data.image_size,
                                batch_size=data.batch_size, audio=data.audio)
    done: list[str] = []
    scored: dict[str, videos.VideoScores] = {}
    progress = tqdm(total=len(names), desc=f"evaluate {data.split}", unit="video",
                    disable=jax.process_index() != 0)
    for name, batches in itertools.groupby(clips, key=lambda batch: str(batch["name"])):
        if len(done) == len(by_name):
            break
        if name not in by_name:
            continue
        if owner[name] == jax.process_index():
            kept = [] if predictions_dir is not None else None
            model_frames, fixation_frames = itertools.tee(_predicted(predict, batches, kept))
            scored[name] = videos.score_video(name, (frame for frame, _ in model_frames),
                                              _truth_frames(by_name[name].saliency),
                                              (points for _, points in fixation_frames), corrected=corrected)
            if kept is not None:
                write_predictions(by_name[name], np.concatenate(kept), predictions_dir)
        else:
            for batch in batches:
                predict(batch)  # the prediction is collective: every process takes part in every call
        done.append(name)
        progress.update(1)
    progress.close()
    results = _gathered(scored, done, owner)
    model = metrics.aim_means([video.frames for video in results])
    prior = metrics.aim_means([video.prior for video in results])
    return {
        "split": data.split,
        "videos": len(results),
        "frames": int(sum(video.num_frames for video in results)),
        "model": model.means,
        "centre_prior": prior.means,
        "excluded_frames": model.excluded_frames,
    }


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

    def __call__(self, params: Any, *, predictions_dir: pathlib.Path | None = None,
                 corrected: bool = False) -> Evaluation:
        image = []

        def predict(batch: Mapping[str, Any]) -> np.ndarray:
            maps = self._predict(params, batch_contract.model_inputs(batch))
            if not image:
                image.append(side_by_side(batch, maps))
            return maps

        summary = evaluate(predict, self.data, predictions_dir=predictions_dir, corrected=corrected)
        return Evaluation(summary, image[0] if image else None)
