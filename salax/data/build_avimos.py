"""Build the AViMoS array_record dataset without TensorFlow (the `tfds build` CLI imports it).

    python -m salax.data.build_avimos --manual_dir ~/avimos --data_dir ~/tensorflow_datasets
"""

from __future__ import annotations

import argparse
import os
import sys

import tensorflow_datasets as tfds

from salax.data import avimos_builder


def build(
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    config: str | avimos_builder.AvimosConfig = avimos_builder.Avimos.DEFAULT_CONFIG_NAME,
    workers: int = 1,
    skip_bad: bool = False,
    rebuild: bool = False,
) -> avimos_builder.Avimos:
    """Convert every video of the manual directory; returns the builder (its `skipped` lists skips).

    An existing build of the same config and version is kept (`builder.reused`; its `skipped` are the
    videos that build left out) unless `rebuild`, which converts everything again and replaces it.
    """
    builder = avimos_builder.Avimos(
        data_dir=os.fspath(data_dir), config=config, workers=workers, skip_bad=skip_bad
    )
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if rebuild
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    download = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir), download_mode=mode)
    builder.download_and_prepare(download_config=download)
    return builder


def _parser() -> argparse.ArgumentParser:
    configs = "\n".join(
        f"  {c.name:12s} {c.description}" for c in avimos_builder.Avimos.BUILDER_CONFIGS
    )
    parser = argparse.ArgumentParser(
        prog="python -m salax.data.build_avimos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Convert AViMoS (videos, saliency maps, fixations, audio) into a TFDS array_record "
            "dataset at DATA_DIR/avimos/CONFIG/VERSION, one example per video, without TensorFlow.\n\n"
            + avimos_builder.Avimos.MANUAL_DOWNLOAD_INSTRUCTIONS
        ),
        epilog=f"configs:\n{configs}",
    )
    parser.add_argument("--manual_dir", required=True, help="folder holding the unpacked archives")
    parser.add_argument("--data_dir", required=True, help="where the built dataset goes")
    parser.add_argument(
        "--config",
        default=avimos_builder.Avimos.DEFAULT_CONFIG_NAME,
        choices=[c.name for c in avimos_builder.Avimos.BUILDER_CONFIGS],
        help="storage resolution and frame rate (default %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 1) - 1),
        help="video-converting processes; memory grows by about two videos per worker (default %(default)s)",
    )
    parser.add_argument(
        "--skip_bad",
        action="store_true",
        help="skip videos with missing files, corrupt media or disagreeing frame counts, and list them",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="convert again and replace an existing build of this config (after fixing skipped videos)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.workers < 1:
        _parser().error("--workers must be at least 1")
    try:
        builder = build(
            args.manual_dir, args.data_dir, config=args.config, workers=args.workers, skip_bad=args.skip_bad,
            rebuild=args.rebuild,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if builder.reused:
        print(f"kept the existing build {builder.data_dir} (nothing converted; --rebuild replaces it)")
    else:
        print(f"built {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} videos, {info.num_bytes / 2**20:.1f} MiB")
    if builder.skipped:
        print(f"{'that build' if builder.reused else 'this build'} skipped {len(builder.skipped)} video(s):")
        for problem in builder.skipped:
            print(f"  {problem}")
        if builder.reused:
            print("once they are fixed, convert them with the same command and --rebuild")
    return 0


if __name__ == "__main__":
    sys.exit(main())
