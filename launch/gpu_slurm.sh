#!/usr/bin/env bash
# Train salax on GPU nodes under SLURM: writes a batch script and submits it with sbatch.
#
#   launch/gpu_slurm.sh --workdir DIR [OPTIONS] [-- SALAX_MAIN_FLAGS...]
#
# One process per node, owning all of its GPUs: srun starts `python -m salax.main --distributed`
# once on every node, and jax.distributed.initialize() reads SLURM's variables (SLURM_JOB_ID,
# SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID) for the coordinator, the process count and the
# rank. Per node rather than per GPU because the input pipeline (grain, clip-decoding threads,
# `data.num_threads`) runs per process: one pipeline per node uses the node's CPUs together instead
# of eight pipelines competing for them, and holds one copy of the host-side state.
# Run it on a login node, from the repository, in the environment the nodes use (`pip install -e .`
# and `pip install -U "jax[cuda12]"`); the workdir and data_dir must be on a filesystem all nodes share.
# Options:
#   --workdir DIR          the run's folder (required; shared filesystem)
#   --nodes N              nodes (default 1)
#   --gpus-per-node G      GPUs per node (default 8)
#   --cpus-per-node C      CPU cores per node for the input pipeline (default 32)
#   --time HH:MM:SS        wall-clock limit (default 24:00:00); SIGTERM comes 300 s before it, so the
#                          run saves a checkpoint and stops; resubmitting the same command resumes
#   --partition P  --account A  --qos Q    passed to sbatch when given
#   --requeue              let SLURM requeue the job after a preemption or node failure (it resumes)
#   --config CONFIG        default configs/umt.py:l16
#   --venv DIR             environment to activate on the nodes (default: $VIRTUAL_ENV if set)
#   --log-dir DIR          where slurm-salax-JOBID.out goes (default: the current directory)
#   --dry-run              print the batch script and the sbatch command instead of submitting
#   -h, --help             this text
# FLAGS after `--` go to salax.main, e.g. -- --config.mesh.fsdp=8 --config.data.batch_size=128.
set -euo pipefail

usage() { sed -n '2,/^# FLAGS after/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
fail() { echo "gpu_slurm.sh: $*" >&2; echo "run launch/gpu_slurm.sh --help for the options" >&2; exit 2; }
needs_value() { [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || fail "$1 needs a value"; }
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || fail "$1 must be a positive whole number, got '$2'"; }
quote() {  # one argument as the shell would read it back: bare when safe, else in single quotes
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

workdir="" nodes=1 gpus_per_node=8 cpus_per_node=32 time=24:00:00 partition="" account="" qos="" requeue=0
config="configs/umt.py:l16" venv="${VIRTUAL_ENV:-}" log_dir="." dry_run=0 flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir|--nodes|--gpus-per-node|--cpus-per-node|--time|--partition|--account|--qos|--config|--venv|--log-dir)
      needs_value "$@"; option="${1#--}"; printf -v "${option//-/_}" '%s' "$2"; shift 2 ;;
    --requeue) requeue=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; flags=("$@"); break ;;
    *) fail "unknown argument: $1" ;;
  esac
done
[ -n "$workdir" ] || fail "--workdir is required (the run's folder, on a filesystem all nodes share)"
positive --nodes "$nodes"; positive --gpus-per-node "$gpus_per_node"; positive --cpus-per-node "$cpus_per_node"
[[ "$time" =~ ^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$ ]] || fail "--time takes SLURM's format (e.g. 24:00:00 or 2-00:00:00), got '$time'"
here="$(cd "$(dirname "$0")/.." && pwd)"

train="python -m salax.main --config=$(quote "$config") --workdir=$(quote "$workdir") --distributed"
for flag in "${flags[@]}"; do train+=" $(quote "$flag")"; done

script="#!/usr/bin/env bash
#SBATCH --job-name=salax
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$gpus_per_node
#SBATCH --cpus-per-task=$cpus_per_node
#SBATCH --time=$time
#SBATCH --signal=TERM@300
#SBATCH --output=$log_dir/slurm-salax-%j.out"
[ -z "$partition" ] || script+=$'\n'"#SBATCH --partition=$partition"
[ -z "$account" ] || script+=$'\n'"#SBATCH --account=$account"
[ -z "$qos" ] || script+=$'\n'"#SBATCH --qos=$qos"
[ "$requeue" -eq 0 ] || script+=$'\n'"#SBATCH --requeue"
script+="
set -euo pipefail
cd $(quote "$here")"
[ -z "$venv" ] || script+=$'\n'"source $(quote "$venv")/bin/activate"
script+="
echo \"salax on \$SLURM_JOB_NUM_NODES nodes: \$SLURM_JOB_NODELIST\"
srun --kill-on-bad-exit=1 $train"

if [ "$dry_run" -eq 1 ]; then
  printf "sbatch <<'EOF'\n%s\nEOF\n" "$script"
else
  mkdir -p "$log_dir"
  sbatch <<< "$script"
  echo "watch it: squeue -u \$USER; tail -f $log_dir/slurm-salax-JOBID.out; tensorboard --logdir $workdir/tensorboard"
fi
