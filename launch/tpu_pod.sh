#!/usr/bin/env bash
# Train salax on a Cloud TPU VM slice, from nothing: create it, install salax on every worker,
# start the same training command on all workers, follow worker 0's log, delete the slice.
#
#   launch/tpu_pod.sh [STEP] --name NAME --zone ZONE [OPTIONS] [-- SALAX_MAIN_FLAGS...]
#
# With no STEP it runs create, install, train, logs in order (and delete at the end, success or
# failure, with --delete). One STEP runs only that step:
#   create    needs --accelerator (e.g. v4-32, v5litepod-64, v5p-128); --version defaults by family
#             (v4: tpu-ubuntu2204-base, v5litepod: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5,
#             v6e: v2-alpha-tpuv6e); --spot for spot capacity; --queued to ask through a queued
#             resource and wait until it is ACTIVE.
#   install   on every worker (--worker=all): salax from this checkout (its tracked files, copied)
#             or, with --repo URL [--ref REF], a git clone; Python 3.11 through uv, then
#             `pip install -e . jax[tpu]`. --data gs://... and --manual gs://... copy the built
#             dataset and the AViMoS source maps to ~/tensorflow_datasets and ~/avimos on every
#             worker (the config's defaults for data.data_dir and data.manual_dir).
#   train     needs --workdir (gs://BUCKET/runs/NAME, or a path all workers share); starts, on
#             every worker, python -m salax.main --config=CONFIG --workdir=W --distributed FLAGS
#             in the background (log ~/salax_train.log, exit code ~/salax_train.rc).
#   logs      follows worker 0's log until its training process ends, then checks that every
#             worker's training exited 0.
#   delete    deletes the slice (and its queued resource with --queued).
# Options:
#   --name NAME  --zone ZONE  (always)      --project PROJECT (default: gcloud's)
#   --accelerator TYPE  --version VERSION  --spot  --queued
#   --repo URL  --ref REF  --data GS_PATH  --manual GS_PATH
#   --config CONFIG (default configs/umt.py:l16)  --workdir W
#   --delete     with no STEP: delete the slice when the sequence ends or fails
#   --dry-run    print every command, in order, instead of running it
#   -h, --help   this text
# FLAGS after `--` go to salax.main, e.g. -- --config.mesh.fsdp=8 --config.data.batch_size=256.
set -euo pipefail

usage() { sed -n '2,/^# FLAGS after/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
fail() { echo "tpu_pod.sh: $*" >&2; echo "run launch/tpu_pod.sh --help for what each step needs" >&2; exit 2; }
needs_value() { [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || fail "$1 needs a value"; }

step="" name="" zone="" project="" accelerator="" version="" spot=0 queued=0 repo="" ref="" data="" manual=""
config="configs/umt.py:l16" workdir="" delete=0 dry_run=0 flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name|--zone|--project|--accelerator|--version|--repo|--ref|--data|--manual|--config|--workdir)
      needs_value "$@"; option="${1#--}"; printf -v "$option" '%s' "$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --queued) queued=1; shift ;;
    --delete) delete=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; flags=("$@"); break ;;
    create|install|train|logs|delete) [ -z "$step" ] || fail "one step at a time: $step and $1 given"; step="$1"; shift ;;
    *) fail "unknown argument: $1" ;;
  esac
done

[ -n "$name" ] || fail "--name is required (the TPU VM slice's name)"
[ -n "$zone" ] || fail "--zone is required (e.g. us-east5-a)"
if [ -z "$step" ] || [ "$step" = create ]; then
  [ -n "$accelerator" ] || fail "create needs --accelerator (e.g. v4-32, v5litepod-64, v5p-128)"
  if [ -z "$version" ]; then
    case "$accelerator" in
      v4-*) version=tpu-ubuntu2204-base ;;
      v5litepod-*|v5e-*) version=v2-alpha-tpuv5-lite ;;
      v5p-*) version=v2-alpha-tpuv5 ;;
      v6e-*) version=v2-alpha-tpuv6e ;;
      *) fail "no default runtime version for accelerator $accelerator: pass --version" ;;
    esac
  fi
fi
if [ -z "$step" ] || [ "$step" = train ]; then
  [ -n "$workdir" ] || fail "train needs --workdir (gs://BUCKET/runs/NAME or a path all workers share)"
fi
case "$data$manual" in ""|gs://*) ;; *) fail "--data and --manual take gs:// paths (they are copied to every worker)" ;; esac
[ "$delete" -eq 0 ] || [ -z "$step" ] || fail "--delete belongs to the whole sequence; to delete now: tpu_pod.sh delete ..."

where=(--zone "$zone")
[ -z "$project" ] || where+=(--project "$project")
tpu=(gcloud compute tpus tpu-vm)
ssh_all=("${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --quiet --command)
ssh_0=("${tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --quiet --command)
here="$(cd "$(dirname "$0")/.." && pwd)"
archive="${TMPDIR:-/tmp}/salax-$name.tar.gz"
log='~/salax_train.log' rc='~/salax_train.rc' pid='~/salax_train.pid'

quote() {  # one argument as the shell would read it back: bare when safe, else in single quotes
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
show() { local first=1 arg; for arg in "$@"; do [ $first -eq 1 ] || printf ' '; first=0; quote "$arg"; done; echo; }
run() {  # print (dry run) or run one command
  if [ "$dry_run" -eq 1 ]; then show "$@"; else "$@"; fi
}

create() {
  local spot_flag=()
  [ "$spot" -eq 0 ] || spot_flag=(--spot)
  if [ "$queued" -eq 1 ]; then
    run gcloud compute tpus queued-resources create "$name" --node-id "$name" "${where[@]}" \
      --accelerator-type "$accelerator" --runtime-version "$version" "${spot_flag[@]}"
    wait_active
  else
    run "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type "$accelerator" --version "$version" \
      "${spot_flag[@]}"
  fi
}

wait_active() {  # a queued resource is granted when capacity frees up: poll until ACTIVE (or give up on FAILED)
  local describe=(gcloud compute tpus queued-resources describe "$name" "${where[@]}" --format='value(state.state)')
  if [ "$dry_run" -eq 1 ]; then
    echo "until [ \"\$($(show "${describe[@]}"))\" = ACTIVE ]; do sleep 60; done"
    return
  fi
  local state
  until state="$("${describe[@]}")" && [ "$state" = ACTIVE ]; do
    case "$state" in FAILED|SUSPENDED) echo "tpu_pod.sh: queued resource $name is $state" >&2; exit 1 ;; esac
    echo "queued resource $name: ${state:-unknown}; waiting" >&2; sleep 60
  done
}

install() {
  local fetch
  if [ -n "$repo" ]; then
    fetch="rm -rf ~/salax && git clone --depth 1 ${ref:+--branch $(quote "$ref") }$(quote "$repo") ~/salax"
  else  # this checkout's tracked files as they are now (uncommitted edits included)
    run bash -c "cd $(quote "$here") && git ls-files -z | tar --null -T - -czf $(quote "$archive")"
    run "${tpu[@]}" scp "$archive" "$name:salax.tar.gz" "${where[@]}" --worker=all --quiet
    fetch="rm -rf ~/salax && mkdir ~/salax && tar -xzf ~/salax.tar.gz -C ~/salax"
  fi
  local setup="python3 -m pip install -q --user uv && ~/.local/bin/uv venv -q --python 3.11 ~/salax-venv"
  setup+=" && ~/.local/bin/uv pip install -q --python ~/salax-venv/bin/python -e ~/salax 'jax[tpu]>=0.7,<0.13'"
  local copies=""
  [ -z "$data" ] || copies+=" && mkdir -p ~/tensorflow_datasets && gcloud storage rsync -r $(quote "$data") ~/tensorflow_datasets"
  [ -z "$manual" ] || copies+=" && mkdir -p ~/avimos && gcloud storage rsync -r $(quote "$manual") ~/avimos"
  run "${ssh_all[@]}" "set -e; $fetch && $setup$copies"
}

train() {
  local command="~/salax-venv/bin/python -m salax.main --config=$(quote "$config") --workdir=$(quote "$workdir") --distributed"
  local flag
  for flag in "${flags[@]}"; do command+=" $(quote "$flag")"; done
  # In the background, so that the ssh returns; the exit code lands in ~/salax_train.rc.
  run "${ssh_all[@]}" "cd ~/salax && rm -f $rc && (nohup $command > $log 2>&1; echo \$? > $rc) > /dev/null 2>&1 < /dev/null & echo \$! > $pid"
}

logs() {
  run "${ssh_0[@]}" "tail -n +1 -F $log --pid=\$(cat $pid) 2> /dev/null; true"
  run "${ssh_all[@]}" "test \"\$(cat $rc 2> /dev/null)\" = 0 || { echo \"training on \$(hostname) exited \$(cat $rc 2> /dev/null || echo '(no exit code: still running or never started)')\"; exit 1; }"
}

delete() {
  if [ "$queued" -eq 1 ]; then
    run gcloud compute tpus queued-resources delete "$name" "${where[@]}" --force --quiet
  else
    run "${tpu[@]}" delete "$name" "${where[@]}" --quiet
  fi
}

if [ -n "$step" ]; then
  "$step"
  exit 0
fi
if [ "$delete" -eq 1 ]; then
  if [ "$dry_run" -eq 1 ]; then
    create; install; train; logs; delete
    exit 0
  fi
  trap 'status=$?; echo "tpu_pod.sh: deleting $name (sequence ended with status $status)" >&2; delete' EXIT
fi
create
install
train
logs
