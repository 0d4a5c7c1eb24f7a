"""`python -m salax.evaluate`: score a trained run on a split, or a folder of predicted videos.

    python -m salax.evaluate --workdir runs/b16 --step best --split public_test --predictions DIR
    python -m salax.evaluate --predictions SUBMISSION --gt_saliency ... --gt_fixations ...

With `--workdir` (a run's folder) the checkpoint's parameters are restored (no optimiser state),
every frame of the split is predicted and scored by the AIM rules twice: "model", the float maps, as
validation during training scores them (beside the centre prior), and "as_submitted", the 8-bit
frames `python -m salax.predict` writes for the split's videos, scored as `--predictions` scores
them (8 bits tie a map's near-zero tail at level 0, which lowers AUC-Judd). The summary is printed
as JSON on stdout and as a table on stderr; `--predictions` is then where the predicted videos are
written (a local folder or gs://...).
Without `--workdir`, `--predictions` is a folder of predicted map videos scored against the AViMoS
ground truth (salax.evaluate.submission).
"""

import argparse
import json
import sys
from typing import Any

import jax

from salax import distributed, inference, metrics, paths
from salax.data import pipeline
from salax.evaluate import split, submission
from salax.workdir import UserError, read_config

PROG = "python -m salax.evaluate"


def build_parser() -> argparse.ArgumentParser:
    """The one parser of both modes: the run's flags here, the submission scorer's from its module."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("a trained run (with --workdir)")
    run.add_argument("--workdir", default=None, help="the run's --workdir (its config.json and checkpoints)")
    run.add_argument("--step", default="best", help="'best' (by validation CC), 'latest', or a step number")
    run.add_argument("--split", default=None, help="split of the build (default: the run's eval_split)")
    parser.add_argument("--predictions", default=None,
                        help="with --workdir: folder the predicted <video>.mp4 and <video>_overlay.mp4 are written "
                             "to; without: the folder of predicted videos to score")
    parser.add_argument("--corrected", action="store_true", help="AUC-Judd with distinct fixated pixels "
                        "instead of the AIM script's unique-columns quirk")
    distributed.add_arguments(run)
    submission.add_arguments(parser)
    return parser


def _check_split(data: split.EvalData) -> None:
    try:
        pipeline.list_videos(data.data_dir, builder_config=data.builder_config, split=data.split)
    except FileNotFoundError as error:
        raise UserError(f"the run's dataset is not built: {error}") from None
    except (KeyError, ValueError) as error:
        raise UserError(f"--split {data.split!r} is not a split of the build in {data.data_dir} ({error})") from None


def evaluate_run(args: argparse.Namespace) -> dict[str, Any]:
    """The summary of checkpoint `args.step` of the run in `args.workdir` on `args.split`."""
    data = split.EvalData.from_config(read_config(args.workdir), args.split)
    step = inference.resolve_step(args.workdir, args.step)  # the checks first: nothing is compiled for a mistake
    _check_split(data)
    restored = inference.restore(args.workdir, step)
    evaluator = split.ValidationEvaluator(data, restored.model.predict_fn())
    predictions = paths.as_path(args.predictions) if args.predictions else None
    result = evaluator(restored.params, predictions_dir=predictions, corrected=args.corrected, as_submitted=True)
    return {"step": restored.step, **result.summary}


ROWS = (("model", "float maps (validation's scores)"), ("as_submitted", "as submitted (8-bit frames)"),
        ("centre_prior", "centre prior"))


def summary_table(summary: dict[str, Any]) -> str:
    """The score sets of a run's summary side by side, for the terminal."""
    lines = [f"step {summary['step']} on {summary['split']}: {summary['videos']} videos, {summary['frames']} frames",
             f"{'':34}" + "".join(f"{metric:>10}" for metric in metrics.RANKING_METRICS)]
    for key, label in ROWS:
        if key in summary:
            values = summary[key]
            lines.append(f"{label:34}" + "".join(
                f"{values[metric]:>10.4f}" if values[metric] is not None else f"{'-':>10}"
                for metric in metrics.RANKING_METRICS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workdir is None:
        return submission.run(args)
    given = submission.given(args)
    if given:
        parser.error(f"{', '.join(given)} score a folder of predicted videos, not a run: drop them or --workdir")
    try:
        distributed.initialize_from_args(args)
        summary = evaluate_run(args)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        print(summary_table(summary), file=sys.stderr)
        print(json.dumps(summary, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
