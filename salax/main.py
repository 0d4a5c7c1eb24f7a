"""Train and evaluate a saliency model from one config file.

    python -m salax.main --config=configs/umt.py:demo --workdir=runs/demo
    python -m salax.main --config=configs/umt.py:b16 --workdir=runs/b16 --config.data.batch_size=32
    python -m salax.main --config=runs/b16/config.json --workdir=runs/b16_again   # rerun a recorded run

Multi-host (a TPU pod, or GPU nodes under SLURM/Kubernetes): add `--distributed` to let JAX find
its peers, or give `--coordinator_address`, `--num_processes` and `--process_id` explicitly.
Expected mistakes (a misspelt field, a bad value, a workdir of another run) print one line and
exit with status 2; a checkpoint that cannot be saved stops the run with status 1; SIGTERM or
SIGINT saves a checkpoint at a step all processes agree on and exits with status 75 (EX_TEMPFAIL):
the same command resumes from there.
"""

from collections.abc import Mapping
import sys

from absl import app, flags, logging
import jax
import ml_collections
from ml_collections import config_flags

from salax import distributed, preemption, train, workdir
from salax.checkpoint import CheckpointSaveError
from salax.workdir import UserError

PROG = "python -m salax.main"
CONFIG_HELP = ("Config file with a variant after ':' (configs/umt.py:b16), or a run's recorded config.json; "
               "override any field with --config.FIELD=VALUE.")
FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, evaluation and predictions.")
flags.DEFINE_bool("overwrite", False, "Discard a run of a different config found in --workdir.")
flags.DEFINE_bool("distributed", False, distributed.HELP["distributed"])
flags.DEFINE_string("coordinator_address", None, distributed.HELP["coordinator_address"])
flags.DEFINE_integer("num_processes", None, distributed.HELP["num_processes"])
flags.DEFINE_integer("process_id", None, distributed.HELP["process_id"])


def _config_source(argv: list[str]) -> tuple[str | None, list[str]]:
    """The value of --config (`--config=X` or `--config X`), and argv without that flag."""
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:index] + argv[index + 1:]
        if arg == "--config" and index + 1 < len(argv):
            return argv[index + 1], argv[:index] + argv[index + 2:]
    return None, argv


def _base_config(source: str) -> ml_collections.ConfigDict:
    if source.endswith(".json"):
        return workdir.load_config(source)
    fresh = flags.FlagValues()
    config_flags.DEFINE_config_file("config", source, flag_values=fresh, sys_argv=[PROG])
    return fresh["config"].value


def _unknown_field(source: str, argv: list[str]) -> str | None:
    """For the first --config.A.B=V naming no field: which, and the fields that are there."""
    config = _base_config(source)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg.removeprefix("--config.").split("=", 1)[0].split(".")
        node, where = config, "config"
        for key in path:
            group = isinstance(node, (Mapping, ml_collections.ConfigDict))
            if not group or key not in node:
                fields = ", ".join(sorted(node.keys())) if group else f"none ({where} is a value, not a group)"
                return f"--config.{'.'.join(path)}: {where} has no field {key!r}; its fields: {fields}"
            node, where = node[key], f"{where}.{key}"
    return None


def define_config_flag(argv: list[str]) -> list[str]:
    """Define --config from `argv` (a config file, or a recorded config.json); returns the argv for absl."""
    source, rest = _config_source(argv)
    if source is None:
        raise UserError("--config is required, e.g. --config=configs/umt.py:demo")
    if source.endswith(".json"):
        config_flags.DEFINE_config_dict("config", workdir.load_config(source), CONFIG_HELP, sys_argv=rest)
        return rest
    config_flags.DEFINE_config_file("config", None, CONFIG_HELP, lock_config=True, sys_argv=argv)
    return argv


def _one_line(error: BaseException) -> str:
    """The gist of a flag error: config_flags puts a whole traceback of the config file in its message."""
    lines = [line.strip() for line in str(error).replace("\\n", "\n").splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    quoted = len(lines[-1]) > 1 and lines[-1][0] == lines[-1][-1] and lines[-1][0] in "'\""
    return lines[-1][1:-1] if quoted else lines[-1]


# What config_flags raises for a config file that does not load, a field that is not there, a bad value.
FLAG_ERRORS = (flags.Error, AttributeError, KeyError, TypeError, ValueError)


def _config_problem(argv: list[str], error: BaseException) -> str:
    source, _ = _config_source(argv)
    try:
        problem = _unknown_field(source, argv) if source else None
    except Exception:  # noqa: BLE001 - the config itself does not load: the flag error says why
        problem = None
    return problem or _one_line(error)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parse, with a bad config file, field or value as one line and exit status 2."""
    try:
        return FLAGS(argv)
    except FLAG_ERRORS as error:
        print(f"{PROG}: error: {_config_problem(argv, error)}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required")
    if not FLAGS["verbosity"].present:  # orbax and tfds log every step of their work at INFO; -v 0 shows it
        logging.set_verbosity(logging.WARNING)
    distributed.initialize(auto=FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                           num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    logging.info("process %d of %d, %d local devices of %d", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except CheckpointSaveError as error:  # a full disk, a lost bucket: the run cannot go on
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except train.Preempted as stopped:
        workdir.say(f"{PROG}: {stopped}")
        sys.exit(preemption.EXIT_CODE)


def run() -> None:
    """The command line: define --config from it, then hand over to absl."""
    try:
        argv = define_config_flag(sys.argv)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except FLAG_ERRORS as error:  # a recorded config's overrides are applied as the flag is defined
        print(f"{PROG}: error: {_config_problem(sys.argv, error)}", file=sys.stderr)
        sys.exit(2)
    app.run(main, argv=argv, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
