#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: the same command on every host, JAX finds its peers itself.
#
#   launch/tpu_pod.sh --tpu NAME --zone ZONE --workdir /mnt/shared/runs/b16 [--dry-run] [-- FLAGS...]
#
# Every host needs the repository at ~/salax with `pip install -e .` done, and the workdir and
# data_dir on storage all hosts share (Filestore/NFS or a gcsfuse mount). FLAGS after `--` go to
# salax.main, e.g. -- --config.data.batch_size=256 --config.mesh.fsdp=8.
set -euo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
tpu="" zone="" workdir="" config="configs/umt.py:l16" dry_run=0 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tpu) tpu="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[ -n "$tpu" ] && [ -n "$zone" ] && [ -n "$workdir" ] || { echo "--tpu, --zone and --workdir are required" >&2; usage 2; }

train="cd ~/salax && python -m salax.main --config=$config --workdir=$workdir --distributed ${extra[*]:-}"
command=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$train")
if [ "$dry_run" -eq 1 ]; then
  printf '%q ' "${command[@]}"; echo
else
  "${command[@]}"
fi
