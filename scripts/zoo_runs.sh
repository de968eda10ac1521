#!/usr/bin/env bash
# The zoo's 20-cell runs on a 2-core CPU (docs/training.md, "The 20-cell runs on this CPU"): the exact
# commands, each resumable, and a queue that runs them one after another on one core.
#
#   bash scripts/zoo_runs.sh train arnas_c16 [ROOT]       # one training (resumes if its state exists)
#   bash scripts/zoo_runs.sh aa arnas_c16 [ROOT]          # AutoAttack on its reporting rows (sharded, resumable)
#   bash scripts/zoo_runs.sh queue ROOT arnas_c16 aa:arnas_c16 darts_v2_c15 ...   # in order; skips done steps
#   bash scripts/zoo_runs.sh pool ROOT arnas_c16 aa:arnas_c16 arnas_cpu_s0_c15 ... compare  # one per core
#   bash scripts/zoo_runs.sh compare ROOT arnas_c16 resnet18_w27 ...  # merge each model's reports, compare them
#   bash scripts/zoo_runs.sh stop ROOT       # stop a pool: workers, steps (states saved), park (ZOO_PARK), status
#   ZOO_PARK=DEST bash scripts/zoo_runs.sh park ROOT   # snapshot ROOT to DEST now (arnas-zoo park)
#
# ROOT holds one folder per run (default runs/zoo). Every step runs on one thread at nice 10. A step that
# exits 0 leaves ROOT/NAME.done (or ROOT/NAME.aa.done) and is skipped from then on; a step stopped by
# SIGTERM (its state saved) stops the queue, and the same queue command continues it later.
# A pool is a queue that several workers (one per core) share: each takes the first step of the list that
# is not done, not held by another worker (a flock on ROOT/.STEP.lock, released when its process ends) and
# ready (an AutoAttack step waits for its training), and waits (ZOO_POOL_POLL_S, default 120 s) while every
# step left is running elsewhere or waiting, so a core that finishes early takes the next step instead of idling.
# A pool's `compare` step waits for every AutoAttack step of its list, then compares those models. An
# AutoAttack another worker runs (its PGD rows written) is helped before any step later in the list is
# started (`eval --join`: this worker runs the shards the other has not taken, then moves on down the list),
# and a training listed after it yields to it (stopped with its state saved, resumed after the help;
# checked every ZOO_POOL_YIELD_S, default 60 s). ZOO_POOL_JOIN=0 turns helping and yielding off.
# ZOO_PARK=DEST (a folder on a volume that outlives the machine, or hf://ORG/NAME with HF_TOKEN) keeps ROOT
# there: a worker starting on an empty ROOT first unparks it (`arnas-zoo unpark`), one worker parks it every
# ZOO_PARK_EVERY_S (default 1800 s) and when the list is done; `bash scripts/zoo_runs.sh park ROOT` parks
# it now (after stopping the pool, so that the states the stop saved go with it). `bash scripts/zoo_runs.sh stop
# ROOT` stops a pool at the end of a session: workers, then each step with SIGTERM (states saved), then a park
# (with ZOO_PARK), then `arnas-zoo status ROOT`.
set -u
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
ZOO=${ARNAS_ZOO_CLI:-.venv/bin/arnas-zoo}
export OMP_NUM_THREADS=1 ARNAS_ZOO_SAVE_EVERY_S=${ARNAS_ZOO_SAVE_EVERY_S:-600}

# name -> architecture and width (each within 10% of ARNAS C=16's 101.4 M multiply-adds)
declare -A ARCH=([arnas_c16]=arnas [resnet18_w27]=resnet18 [darts_v2_c15]=darts_v2 [arnas_cpu_s0_c15]=arnas_cpu_s0)
declare -A SIZE=(
  [arnas_c16]="--model-set init_channels=16 --model-set layers=20"
  [resnet18_w27]="--model-set init_channels=27"
  [darts_v2_c15]="--model-set init_channels=15 --model-set layers=20"
  [arnas_cpu_s0_c15]="--model-set init_channels=15 --model-set layers=20"
)
declare -A MODEL=(
  [arnas_c16]=arnas.cifar10_linf_cpu_c16l20_mix
  [resnet18_w27]=resnet18.cifar10_linf_cpu_w27_mix
  [darts_v2_c15]=darts_v2.cifar10_linf_cpu_c15l20_mix
  [arnas_cpu_s0_c15]=arnas_cpu_s0.cifar10_linf_cpu_c15l20_mix
)

known() { [ -n "${ARCH[$1]:-}" ] || { echo "unknown run '$1'; one of: ${!ARCH[*]}" >&2; exit 2; }; }

train() {  # NAME ROOT
  known "$1"
  local out="$2/$1" resume=""
  [ -f "$out/train_state.safetensors" ] && resume="--resume"
  # shellcheck disable=SC2086  # SIZE holds several options
  nice -n 10 "$ZOO" train "${ARCH[$1]}" --dataset cifar10 --train-split train_mix \
    --val-rows 1000 --selection-rows 1000 --recipe cpu_cifar10 --set epochs=10 ${SIZE[$1]} \
    --name "${MODEL[$1]}" --eval-n 1000 --out "$out" $resume
}

aa() {  # NAME ROOT: on the 1,000 reporting rows ("test" offline: the held-out genuine rows the training's
  # final evaluation reads), first clean, FGSM and PGD-20 with per-point outcomes (minutes; the rows a card
  # shows and `arnas-zoo eval` reproduces), then standard AutoAttack (reference code) in 64-point shards a
  # rerun skips. `arnas-zoo merge` joins the two reports for the model's card.
  known "$1"
  local out="$2/$1"
  [ -f "$2/$1.done" ] || { echo "$1: training not finished (no $2/$1.done)" >&2; return 1; }
  if [ ! -f "$out/best.eval1000.json" ]; then
    nice -n 10 "$ZOO" eval "$out/best" --dataset cifar10 --split test --n 1000 --attacks fgsm,pgd20 \
      --batch-size 128 --json "$out/best.eval1000.json" || return
  fi
  aa_shards "$1" "$2"
}

aa_shards() {  # NAME ROOT [--join]: aa()'s AutoAttack. With --join, another core's help: it runs the shards
  # the run has not taken (one at a time, each claimed with a lock) and exits; the run writes the report
  local out="$2/$1"
  nice -n 10 "$ZOO" eval "$out/best" --dataset cifar10 --split test --n 1000 --attacks aa \
    --batch-size 64 --shard-size 64 --run-dir "$out-aa" --json "$out/best.aa1000.json" "${@:3}"
}

compare() {  # ROOT NAME...: each model's two reporting-row reports merged (`arnas-zoo merge`, verified against
  # its checkpoint) into NAME/best.all1000.json, then the models compared on those points (`arnas-zoo compare`:
  # 95% intervals, paired tests): ROOT/comparison.json and ROOT/comparison.txt
  local root=$1 name out
  local -a merged=() labels=()
  shift
  for name in "$@"; do
    known "$name"
    out="$root/$name"
    [ -f "$root/$name.aa.done" ] || { echo "$name: AutoAttack not finished (no $root/$name.aa.done)" >&2; return 1; }
    nice -n 10 "$ZOO" merge "$out/best.eval1000.json" "$out/best.aa1000.json" --model "$out/best" \
      --json "$out/best.all1000.json" || return
    merged+=("$out/best.all1000.json")
    labels+=("${MODEL[$name]}")
  done
  nice -n 10 "$ZOO" compare "${merged[@]}" --names "$(IFS=,; echo "${labels[*]}")" --json "$root/comparison.json" \
    > "$root/comparison.txt" || return
  cat "$root/comparison.txt"
}

queue() {  # ROOT STEP...: a step is NAME (train) or aa:NAME
  local root=$1 step marker
  shift
  mkdir -p "$root"
  for step in "$@"; do
    case $step in
      aa:*) marker="$root/${step#aa:}.aa.done" ;;
      *) marker="$root/$step.done" ;;
    esac
    [ -f "$marker" ] && continue
    echo "$(date -u '+%F %T') queue: $step"
    case $step in
      aa:*) aa "${step#aa:}" "$root" ;;
      *) train "$step" "$root" ;;
    esac || {
      local rc=$?
      echo "$(date -u '+%F %T') queue: $step stopped (exit $rc); rerun the same queue to continue"
      return 1
    }
    date -u '+%F %T' > "$marker"
  done
}

marker() {  # STEP ROOT: the file that says STEP is done
  case $1 in
    compare) echo "$2/compare.done" ;;
    aa:*) echo "$2/${1#aa:}.aa.done" ;;
    *) echo "$2/$1.done" ;;
  esac
}

all_attacked() {  # ROOT NAME...: every NAME's AutoAttack is done
  local root=$1 name
  shift
  for name in "$@"; do [ -f "$root/$name.aa.done" ] || return 1; done
}

helpable() {  # ROOT STEP: an AutoAttack step under way (its PGD rows written) that another worker may share
  [ "${ZOO_POOL_JOIN:-1}" = 1 ] && [ "${2#aa:}" != "$2" ] && [ -f "$1/${2#aa:}/best.eval1000.json" ]
}

held() {  # ROOT STEP: another process holds STEP's pool lock
  local fd
  exec {fd}>"$1/.${2/:/_}.lock"
  if flock -n "$fd"; then exec {fd}>&-; return 1; fi
  exec {fd}>&-
}

train_yielding() {  # ROOT STEP LIST...: train STEP; stop it (state saved; status 75) once an AutoAttack listed
  # before STEP runs on another worker and can be helped (and this worker has not helped it yet), so that
  # this worker helps it first. The training runs in its own process group (setsid), which is signalled and
  # waited for as a whole.
  local root=$1 step=$2 pid earlier i
  shift 2
  setsid bash "$SELF" train "$step" "$root" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for ((i = 0; i < ${ZOO_POOL_YIELD_S:-60}; i++)); do kill -0 "$pid" 2>/dev/null || break 2; sleep 1; done
    for earlier in "$@"; do
      [ "$earlier" = "$step" ] && break
      [ -f "$(marker "$earlier" "$root")" ] && continue
      case ${helped:-} in *" $earlier "*) continue ;; esac  # (pool's) helped already: its shards are all taken
      helpable "$root" "$earlier" && held "$root" "$earlier" || continue
      echo "$(date -u '+%F %T') pool: stopping $step (state saved) to help $earlier first"
      kill -TERM -- "-$pid" 2>/dev/null
      while kill -0 -- "-$pid" 2>/dev/null; do sleep 1; done  # until no process of the group is left
      wait "$pid"
      return 75
    done
  done
  wait "$pid"
}

park_now() {  # ROOT: snapshot ROOT to ZOO_PARK (verified; refused if ROOT is behind the last park there)
  [ -n "${ZOO_PARK:-}" ] || { echo "ZOO_PARK is not set: nowhere to park" >&2; return 2; }
  nice -n 10 "$ZOO" park "$1" "$ZOO_PARK"
}

unpark_empty() {  # ROOT: with ZOO_PARK set, a ROOT holding no run yet (a new machine) takes what is parked
  [ -n "${ZOO_PARK:-}" ] || return 0
  local fd rc=0
  exec {fd}>"$1/.unpark.lock"
  flock "$fd"  # the other worker waits here, then finds ROOT filled
  if ! compgen -G "$1/*.done" >/dev/null && ! compgen -G "$1/*/train_state.safetensors" >/dev/null; then
    echo "$(date -u '+%F %T') pool: no run in $1 yet; unparking $ZOO_PARK"
    "$ZOO" unpark "$ZOO_PARK" "$1" --missing-ok || rc=$?
  fi
  exec {fd}>&-
  return "$rc"
}

worker_alive() {  # PID: this subshell's parent is still the worker PID (once the worker ends, even as an
  # unreaped zombie, its children pass to another parent)
  [ "$(ps -o ppid= -p "$BASHPID" 2>/dev/null | tr -d ' ')" = "$1" ]
}

parker() {  # ROOT PID: park ROOT every ZOO_PARK_EVERY_S while the worker PID lives; one parker per ROOT
  local fd i
  exec {fd}>"$1/.parker.lock"
  flock -n "$fd" || return 0
  while worker_alive "$2"; do
    for ((i = 0; i < ${ZOO_PARK_EVERY_S:-1800}; i++)); do worker_alive "$2" || return 0; sleep 1; done
    park_now "$1" || echo "$(date -u '+%F %T') pool: parking $1 failed (exit $?); next try in ${ZOO_PARK_EVERY_S:-1800} s"
  done
}

stop_pool() {  # ROOT (as the pool was given it): stop the pool on ROOT, losing nothing. Its workers (and parker) go
  # first, so that no step starts; then every step under ROOT is resumed if paused and sent SIGTERM (a training
  # saves its state, an evaluation keeps its finished shards) and waited for; then, with ZOO_PARK set, ROOT is
  # parked; last, where each run stands
  local root=${1%/} step_re pids waited=0
  step_re="$(basename "$ZOO") (train|eval) .*$root/"
  pkill -f "zoo_runs\.sh pool $root " && echo "$(date -u '+%F %T') stop: the pool's workers on $root ended"
  pids=$(pgrep -f -- "$step_re" | tr '\n' ' ')
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086  # a list of pids
    kill -CONT $pids 2>/dev/null; kill -TERM $pids 2>/dev/null
    echo "$(date -u '+%F %T') stop: SIGTERM to the steps under $root (pids $pids); waiting for them to save and end"
    while pgrep -f -- "$step_re" >/dev/null; do
      sleep 1
      waited=$((waited + 1))
      [ "$waited" -lt "${ZOO_STOP_WAIT_S:-900}" ] || { echo "stop: steps still running after $waited s: $(pgrep -af -- "$step_re")" >&2; return 1; }
    done
  fi
  if [ -n "${ZOO_PARK:-}" ]; then park_now "$root" || return; fi
  "$ZOO" status "$root"
}

pool() {  # ROOT STEP...: like queue, but shared by several workers; the list's order is the priority
  local root=$1 step lock fd pending ran waiting=""
  shift
  mkdir -p "$root"
  unpark_empty "$root" || { echo "$(date -u '+%F %T') pool: unparking $ZOO_PARK failed; nothing started" >&2; return 1; }
  [ -n "${ZOO_PARK:-}" ] && parker "$root" "$$" &
  local -a attacked=()  # the models of the list's AutoAttack steps: what its compare step compares
  for step in "$@"; do
    [ "$step" = compare ] && continue
    known "${step#aa:}"
    [ "${step#aa:}" != "$step" ] && attacked+=("${step#aa:}")
  done
  case " $* " in
    *" compare "*) [ "${#attacked[@]}" -ge 2 ] || { echo "compare needs two or more aa:NAME steps in the list" >&2; exit 2; } ;;
  esac
  local helped=" "  # AutoAttack steps this worker helped since it last waited
  while :; do
    pending=0 ran=0
    for step in "$@"; do
      [ -f "$(marker "$step" "$root")" ] && continue
      pending=1
      # an AutoAttack step is ready once its training is done; compare once every AutoAttack is
      [ "${step#aa:}" != "$step" ] && [ ! -f "$root/${step#aa:}.done" ] && continue
      [ "$step" = compare ] && ! all_attacked "$root" "${attacked[@]}" && continue
      case $helped in *" $step "*) continue ;; esac
      lock="$root/.${step/:/_}.lock"
      exec {fd}>"$lock"
      if ! flock -n "$fd"; then  # another worker runs it
        exec {fd}>&-
        helpable "$root" "$step" || continue
        # an AutoAttack under way comes before any step later in the list: share its shards first
        echo "$(date -u '+%F %T') pool: helping $step with its shards"
        aa_shards "${step#aa:}" "$root" --join || echo "$(date -u '+%F %T') pool: helping $step stopped (exit $?)"
        helped+="$step "
        ran=1
        break
      fi
      # done by another worker between the check above and the lock
      [ -f "$(marker "$step" "$root")" ] && { exec {fd}>&-; continue; }
      echo "$(date -u '+%F %T') pool: $step"
      case $step in
        compare) compare "$root" "${attacked[@]}" ;;
        aa:*) aa "${step#aa:}" "$root" ;;
        *) if [ "${ZOO_POOL_JOIN:-1}" = 1 ]; then train_yielding "$root" "$step" "$@"; else train "$step" "$root"; fi ;;
      esac || {
        local rc=$?
        exec {fd}>&-
        [ "$rc" = 75 ] && { ran=1; break; }  # yielded to an AutoAttack listed before it: help it, then resume
        echo "$(date -u '+%F %T') pool: $step stopped (exit $rc); rerun the same pool to continue"
        return 1
      }
      date -u '+%F %T' > "$(marker "$step" "$root")"
      exec {fd}>&-
      ran=1 waiting=""
      break  # from the top: an earlier step may have become ready
    done
    if [ "$pending" = 0 ]; then
      echo "$(date -u '+%F %T') pool: every step done"
      [ -z "${ZOO_PARK:-}" ] || park_now "$root"
      return
    fi
    [ "$ran" = 1 ] && continue
    # nothing else to do: after the wait, help again (shards a stopped helper left, if any)
    [ "$helped" != " " ] && helped=" " waiting=""
    [ -z "$waiting" ] && echo "$(date -u '+%F %T') pool: waiting; every step left runs elsewhere or waits for its training"
    waiting=1
    sleep "${ZOO_POOL_POLL_S:-120}"
  done
}

case "${1:-}" in
  train | aa) "$1" "${2:?run name}" "${3:-runs/zoo}" ;;
  queue) shift; queue "${1:?root folder}" "${@:2}" ;;
  compare) shift; compare "${1:?root folder}" "${@:2}" ;;
  pool) shift; pool "${1:?root folder}" "${@:2}" ;;
  park) park_now "${2:?root folder}" ;;
  stop) stop_pool "${2:?root folder}" ;;
  *) sed -n '2,28p' "$0"; exit 2 ;;
esac
