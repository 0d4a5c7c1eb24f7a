#!/usr/bin/env bash
# Train on GPU nodes under SLURM: one process per node, all its GPUs; JAX reads SLURM's variables.
#
#   launch/gpu_slurm.sh --nodes 4 --gpus-per-node 8 --workdir /shared/runs/l16 [--dry-run] [-- FLAGS...]
#
# Run it from the repository (installed with `pip install -e .` in the environment the nodes use);
# workdir and data_dir must be on a filesystem all nodes share. FLAGS after `--` go to salax.main,
# e.g. -- --config.mesh.fsdp=8 --config.data.batch_size=128.
set -euo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
nodes=1 gpus=8 workdir="" config="configs/umt.py:l16" dry_run=0 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --gpus-per-node) gpus="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[ -n "$workdir" ] || { echo "--workdir is required" >&2; usage 2; }

command=(sbatch --nodes="$nodes" --ntasks-per-node=1 --gpus-per-node="$gpus" --job-name=salax
         --output="$workdir/slurm-%j.out"
         --wrap "srun python -m salax.main --config=$config --workdir=$workdir --distributed ${extra[*]:-}")
if [ "$dry_run" -eq 1 ]; then
  printf '%q ' "${command[@]}"; echo
else
  mkdir -p "$workdir"
  "${command[@]}"
fi
