"""The model and train-step benchmarks read a run config like salax.main, and print their tables; the
submission-scoring benchmark runs its three routes end to end on a tiny set."""

import re
import shutil

import pytest

from salax.bench import evaluate as bench_evaluate
from salax.bench import model as bench_model
from salax.bench import train as bench_train

# The command lines /work/shared/anchors/gpu_bench.sh runs on the GPU (parsed here, not run).
GPU_COMMANDS = [
    "--variant b16 --tubelet 2 --dtype bfloat16 --batch 16 --infer-batch 64 --steps 10 --warmup 2",
    "--variant b16 --tubelet 1 --dtype bfloat16 --batch 8 --infer-batch 32 --steps 10 --warmup 2",
]


def _row(out: str, start: str) -> list[float]:
    row = next(line for line in out.splitlines() if line.startswith(start))
    return [float(cell.strip().rstrip("x")) for cell in row.strip("|").split("|")[1:]]


@pytest.mark.parametrize("command", GPU_COMMANDS)
def test_model_benchmark_parses_the_gpu_check_command_lines(command):
    args = bench_model.build_parser().parse_args(command.split())
    model = bench_model.model_of(args)
    assert (model.variant, model.dtype, model.num_frames) == ("b16", "bfloat16", 16)
    assert model.tubelet == int(command.split()[3])
    numbers = tuple(int(command.split()[i]) for i in (7, 9, 11, 13))
    assert (args.batch, args.infer_batch, args.steps, args.warmup) == numbers


def test_model_benchmark_reads_a_config_file_and_the_variant_shorthand():
    demo = bench_model.model_of(bench_model.build_parser().parse_args([]))
    assert demo.variant == "tiny"  # the demo's model
    l16 = bench_model.model_of(bench_model.build_parser().parse_args([f"--config={bench_model.CONFIG_FILE}:l16"]))
    assert l16.to_dict() == bench_model.model_of(bench_model.build_parser().parse_args(["--variant", "l16"])).to_dict()
    with pytest.raises(SystemExit):
        bench_model.main(["--config=nowhere.py:b16"])


def test_model_benchmark_times_the_configs_model(capsys):
    bench_model.main(["--frames", "4", "--image-size", "32", "--batch", "1", "--infer-batch", "1", "--steps", "1",
                      "--warmup", "1", "--parts", "encoder", "--no-peer"])
    out = capsys.readouterr().out
    assert "tiny 4x32x32" in out
    assert all(value > 0 for value in _row(out, "| salax encoder"))


def test_train_benchmark_times_each_device_count(capsys):
    bench_train.main(["--config.model.num_frames=4", "--config.model.image_size=(32, 32)",
                      "--config.data.batch_size=2", "--devices=1", "--steps=1"])
    out = capsys.readouterr().out
    assert "global batch 2" in out
    assert _row(out, "| 1 |")[-1] == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--config.model.num_framez=4"], "num_frames"),
    (["--devicez=3"], "Unknown command line flag 'devicez'"),
])
def test_a_misspelt_flag_or_field_is_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        bench_train.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the organisers' route needs the ffmpeg CLI")
def test_evaluate_benchmark_times_three_routes_that_agree(capsys, tmp_path):
    bench_evaluate.main(["--videos", "2", "--frames", "2", "--workers", "1", "--keep", str(tmp_path)])
    out = capsys.readouterr().out
    for route in ("salax.evaluate", "organisers", "decode only"):
        assert re.search(rf"^{route}.*\s\d+\.\d\s", out, re.MULTILINE), (route, out)
    assert re.search(r"^organisers .* \d+ MB of PNG$", out, re.MULTILINE)
    assert float(re.search(r"per-video mean: (\S+)", out).group(1)) < 1e-6

