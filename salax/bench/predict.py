"""Throughput of `salax.predict`: frames/s of the whole tool on a FullHD video, and where the time goes.

    python -m salax.bench.predict                                   # the demo model (random init)
    python -m salax.bench.predict --config=configs/umt.py:b16       # UMT-B/16, 16 x 224 x 224

The model is randomly initialised (speed does not depend on the weights). The input is a 1920x1080
H.264 clip at a real-video bit rate (the one `salax.bench.media` decodes). One untimed run compiles;
the timed run is `predict_video` itself: decode (PyAV, to the build's storage size), prepare (resize
to the model input, normalise, audio window), model (the jitted forward pass), resize (to 1080p,
the scorer's bilinear) and encode (8-bit map video), the last being what remains of the wall time.
The reference measured in the same run is decoding alone, the bound no predictor beats.
"""

from __future__ import annotations

import pathlib
import tempfile
import time

from absl import flags
from flax import nnx
import jax

from salax import predict
from salax.bench import flags as bench_flags
from salax.bench.media import make_clip
from salax.data import media
from salax.models.saliency import build_model

STAGES = ("decode", "prepare", "model", "resize")


def _define(values: flags.FlagValues) -> None:
    flags.DEFINE_integer("frames", 48, "Frames of the timed 1080p clip.", flag_values=values)
    flags.DEFINE_integer("batch_size", 8, "Clips per model call, as predict's --batch_size.", flag_values=values)
    flags.DEFINE_boolean("overlay", False, "Also time the overlay video (a second decode and an RGB encode).",
                         flag_values=values)


def decode_rate(predictor: predict.Predictor, path: pathlib.Path) -> float:
    """Frames/s of decoding alone, to the size predict decodes to."""
    info = media.probe(path)
    start = time.perf_counter()
    count = sum(1 for _ in media.iter_timed_frames(path, sizes=(predictor.storage_size(info.height, info.width),)))
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    prog = "python -m salax.bench.predict"
    values = bench_flags.parse(prog, __doc__, argv, _define)
    config = values.config
    params = nnx.to_pure_dict(nnx.state(build_model(config.model, rngs=nnx.Rngs(0)), nnx.Param))
    predictor = predict.from_params(config, params, source="random init")
    model = config.model
    print(f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}): {model.variant}, "
          f"{model.num_frames}x{model.image_size[0]}x{model.image_size[1]}, batch {values.batch_size}, "
          f"audio {'on' if model.audio else 'off'}")
    with tempfile.TemporaryDirectory(prefix="salax-bench-predict-") as tmp:
        root = pathlib.Path(tmp)
        make_clip(root / "warmup.mp4", values.batch_size)
        make_clip(root / "clip.mp4", values.frames)
        options = dict(overlay=values.overlay, batch_size=values.batch_size, progress=False)
        predict.predict_video(predictor, root / "warmup.mp4", root / "warmup", **options)  # compiles
        stopwatch = predict.Stopwatch()
        start = time.perf_counter()
        predict.predict_video(predictor, root / "clip.mp4", root / "out", stopwatch=stopwatch, **options)
        wall = time.perf_counter() - start
        decoding = decode_rate(predictor, root / "clip.mp4")
    parts = {stage: stopwatch.seconds.get(stage, 0.0) for stage in STAGES}
    parts["encode" + (" + overlay" if values.overlay else "")] = wall - sum(parts.values())
    print(f"whole tool: {values.frames / wall:.2f} frames/s ({1e3 * wall / values.frames:.1f} ms/frame), "
          f"1080p in, 1080p 8-bit maps out")
    print(f"decoding alone (the reference, same run): {decoding:.1f} frames/s; the tool runs at "
          f"{values.frames / wall / decoding:.1%} of it")
    print("| stage | ms/frame | share |\n|---|---|---|")
    for stage, seconds in parts.items():
        print(f"| {stage} | {1e3 * seconds / values.frames:.1f} | {seconds / wall:.0%} |")


if __name__ == "__main__":
    main()
