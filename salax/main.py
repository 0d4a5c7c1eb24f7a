"""Train and evaluate a saliency model from one config file.

    python -m salax.main --config=configs/umt.py:demo --workdir=runs/demo
    python -m salax.main --config=configs/umt.py:b16 --workdir=runs/b16 --config.data.batch_size=32

Multi-host (a TPU pod, or GPU nodes under SLURM/Kubernetes): add `--distributed` to let JAX find
its peers, or give `--coordinator_address`, `--num_processes` and `--process_id` explicitly.
"""

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from salax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file with a variant after ':', e.g. configs/umt.py:b16.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, evaluation and predictions.")
flags.DEFINE_bool("overwrite", False, "Discard a run of a different config found in --workdir.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detected peers.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-host runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-host run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-host run.")
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed() -> None:
    explicit = FLAGS.coordinator_address is not None
    if not (FLAGS.distributed or explicit):
        return
    # CPU hosts exchange collectives through gloo; GPU and TPU backends ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )
    logging.info("process %d of %d, %d local devices of %d", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # orbax and tfds log every step of their work at INFO; -v 0 shows it
        logging.set_verbosity(logging.WARNING)
    _initialize_distributed()
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir, overwrite=FLAGS.overwrite)


if __name__ == "__main__":
    app.run(main)
