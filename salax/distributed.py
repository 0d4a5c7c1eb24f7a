"""Joining the processes of a multi-host job (TPU pods, GPU nodes under SLURM or Kubernetes).

Every CLI that runs the model on many hosts (`salax.main`, `salax.evaluate --workdir`) takes the
same four options and calls `initialize` before JAX touches a device.
"""

import argparse

import jax

HELP = {
    "distributed": "Call jax.distributed.initialize() with peers found from the environment (TPU pods, SLURM).",
    "coordinator_address": "host:port of process 0, for multi-host runs.",
    "num_processes": "Number of processes in a multi-host run.",
    "process_id": "This process's index in a multi-host run.",
}


def initialize(*, auto: bool = False, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the job when asked (`auto`) or when a coordinator is given; a single process otherwise."""
    if not (auto or coordinator_address is not None):
        return
    # CPU hosts exchange collectives through gloo; GPU and TPU backends ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The four options, for an argparse CLI (absl CLIs define them from `HELP`)."""
    parser.add_argument("--distributed", action="store_true", help=HELP["distributed"])
    parser.add_argument("--coordinator_address", default=None, help=HELP["coordinator_address"])
    parser.add_argument("--num_processes", type=int, default=None, help=HELP["num_processes"])
    parser.add_argument("--process_id", type=int, default=None, help=HELP["process_id"])


def initialize_from_args(args: argparse.Namespace) -> None:
    initialize(auto=args.distributed, coordinator_address=args.coordinator_address,
               num_processes=args.num_processes, process_id=args.process_id)
