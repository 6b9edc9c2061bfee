#!/usr/bin/env bash
# Train the full-data bundle (data/checkpoints/full/) with the CPU recipe of data/checkpoints/README.md, in one
# single-threaded lane per core.  Safe to stop at any moment and to re-run on a fresh clone: a run with final.json
# is skipped, a run with last.pt is resumed (--resume), any other is (re)started.  Run from anywhere:
#   bash data/checkpoints/retrain.sh            # one lane per free core (LANES=N to choose), then the manifest
#   bash data/checkpoints/retrain.sh lane       # one lane (start one per core; lane1 and lane2 are the same)
#   bash data/checkpoints/retrain.sh queue      # the runs in order, and which are done
#   bash data/checkpoints/retrain.sh stop       # stop this checkout's lanes: each run saves last.pt (SIGTERM)
#   bash data/checkpoints/retrain.sh manifest   # rewrite MANIFEST.sha256 (before committing)
#   bash data/checkpoints/retrain.sh snapshot [CHECKOUT [MESSAGE]]  # commit the runs as they stand, lanes training
#                                                 or not, in this checkout or in CHECKOUT (see snapshot below)
#   bash data/checkpoints/retrain.sh snapshots MINUTES [CHECKOUT]  # snapshot now and every MINUTES, until a signal
#   bash data/checkpoints/retrain.sh small      # one lane over the small-data grid only
#   bash data/checkpoints/retrain.sh control    # one lane over the σ control run only
#   bash data/checkpoints/retrain.sh rejudge    # re-judge the paper on the finished bundle, one analysis lane per
#                                                 core (LANES=N), resumable
# Every lane walks one queue (QUEUE below, in the order the runs should finish) and trains each run that is
# neither finished nor claimed by another lane: a lane claims a run with flock(1) on a file outside the repository
# for as long as the run trains, so lanes share the work whatever their number and none idles while a run waits.
# The σ learning-rate control set (full-sigma-lr10/: the same recipe with --sigma-lr-scale 10, never replacing a
# paper-recipe run) follows the paper-recipe σ_ji and ODE runs.  The small-data grid (full/small-data/<model>/
# n<size>/seed<S>/: dcn-ode, odenet, resnet-blocks × 10/20/50/100 images per class × seeds 1-3) trains with
# `dcnbio grid --recipe plateau` (the recipe lives in dcnbio/train/grid.py), one queue entry per run.
# Stop the lanes with `retrain.sh stop` (or SIGTERM to them): each run writes last.pt and exits; commit what is there.
set -euo pipefail
CALLED_FROM=$PWD
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
ROOT=data/checkpoints/full
CONTROL_ROOT=data/checkpoints/full-sigma-lr10
# The recipe (README: "The full-data recipe"): paper optimizer, first drop at the measured plateau.
RECIPE=(--dataset fashion-mnist --width 0.25 --val-size 1000 --epochs 30 --plateau-patience 2
        --plateau-delta 0.005 --no-adjoint --integrator dcnbio --formulation auto)

run() {  # run MODEL SEED [extra dcnbio-train arguments]; OUT_ROOT overrides the bundle's root.  Jobs run only
    # through walk, which has checked that the run is not finished (no final.json) while holding its claim
    local model=$1 seed=$2; shift 2
    local root=${OUT_ROOT:-$ROOT}
    local dir="$root/$model/seed$seed" mode=()
    if [ -f "$dir/last.pt" ]; then mode=(--resume); else mode=(--overwrite); fi
    local save=20; [ "$model" = resnet-blocks ] && save=200
    echo "$(date -u +%FT%TZ) start ${mode[*]} $dir"
    "$PY" -m dcnbio.train --model "$model" --seeds "$seed" --out "$root/$model" "${RECIPE[@]}" \
        --save-every "$save" "${mode[@]}" "$@"
}

small() {  # small MODEL SIZE SEED: a run of the small-data grid, trained until its training loss plateaus
    local model=$1 size=$2 seed=$3 dir="$ROOT/small-data/$1/n$2/seed$3"
    echo "$(date -u +%FT%TZ) small-data grid: $dir"
    "$PY" -m dcnbio.train.grid_cli --recipe plateau --runs-dir "$ROOT/small-data" --models "$model" \
        --sizes "$size" --seeds "$seed" --save-every 20 || return
    rm -f "$dir/best.pt"  # no hold-out: best.pt is the last epoch's weights; last.pt (the result) and init.pt stay
}
control() {  # σ moved < 0.05 octaves (median) in dcn-sigma-ji at the paper's rate: the labelled control
    OUT_ROOT=$CONTROL_ROOT run dcn-sigma-ji 1 --sigma-lr-scale 10
}

# The queue: what each lane walks, in the order the runs should finish (paper-recipe seeds, the σ control, the
# meta-parametrized DCNs, the small-data grid, then the optional seeds 2-3 of dcn-sigma-t).
QUEUE=()
for s in 1 2 3; do QUEUE+=("run resnet-blocks $s"); done
QUEUE+=("run dcn-ode 1" "run odenet 1" "run dcn-sigma-ji 1" "run dcn-ode 2" "run dcn-sigma-ji 2" "run dcn-sigma-ji 3"
        "run dcn-ode 3" "run odenet 2" "run odenet 3" "control"
        "run dcn-sigma-t 1" "run dcn-sigma-t2 1" "run dcn-sigma-alpha-t 1")
for m in resnet-blocks odenet dcn-ode; do for s in 1 2 3; do for n in 10 20 50 100; do
    QUEUE+=("small $m $n $s")
done; done; done
QUEUE+=("run dcn-sigma-t 2" "run dcn-sigma-t 3")

# The analyses of `rejudge`, longest first (so that the lanes finish together): analyses/reproduce.py --only each.
ANALYSES=(contrast solver_audit physiology pattern_completion reconstruction small_data meta_parametrization
          sigma_distribution)

analyse() {  # analyse NAME: one analysis of reproduce.py on this bundle into results/full/, resumable
    "$PY" analyses/reproduce.py --bundle full --resume --results results/full --overwrite \
        --out "results/full/lanes/$1" --only "$1"
}

job_key() {  # job_key JOB...: what a queue entry makes (a run's directory, or an analysis)
    case $1 in
        run) echo "$ROOT/$2/seed$3" ;;
        control) echo "$CONTROL_ROOT/dcn-sigma-ji/seed1" ;;
        small) echo "$ROOT/small-data/$2/n$3/seed$4" ;;
        analyse) echo "results/full/$2" ;;
    esac
}

# Where lanes claim their jobs (and `stop` raises its flag): outside the repository, one folder per checkout.
CLAIMS="${TMPDIR:-/tmp}/dcnbio-claims-$(printf %s "$PWD" | sha256sum | cut -c1-16)"
begin() {  # before the lanes of an invocation start: its marks of jobs done or failed, shared by its lanes and
    # removed when it ends (lanes are subshells, which do not inherit the trap); a folder of its own, so no later
    # invocation can mistake them for its own
    mkdir -p "$CLAIMS"
    MARKS=$(mktemp -d "$CLAIMS/marks.XXXXXX")
    trap 'rm -rf "$MARKS"' EXIT
    BEGAN=$(date +%s%N)
}

finished() {  # finished KEY MARK: a run's final.json, or this invocation's mark of a finished job (an analysis)
    [ -f "$1/final.json" ] || [ -f "$MARKS/$2.done" ]
}
stopped() {  # whether `retrain.sh stop` ran after this invocation began (its flag holds the stop's time, in ns)
    local at=0
    [ -f "$CLAIMS/stop" ] && read -r at < "$CLAIMS/stop"
    [[ $at =~ ^[0-9]+$ ]] && [ "$at" -gt "$BEGAN" ]
}

walk() {  # walk PATTERN JOB...: run each JOB (matching the glob PATTERN) that is not done and that no other lane
    # runs; a job that fails is named and left (the lane goes on and exits 1 at the end), a signal stops the lane
    local pattern=$1 job words key mark rc failed=()
    shift
    command -v flock > /dev/null || { echo "retrain.sh: lanes need flock(1) (util-linux)" >&2; return 2; }
    for job in "$@"; do
        # shellcheck disable=SC2053  # PATTERN is a glob
        [[ $job == $pattern ]] || continue
        read -r -a words <<< "$job"
        key=$(job_key "${words[@]}")
        mark=$(printf %s "$key" | tr / _)
        # done: a run's final.json, or a job that a lane of this invocation finished (an analysis); a job that
        # failed in one lane is not tried again by another.  Both, and a `retrain.sh stop` since this invocation
        # began, are checked again once the claim is held: another lane may have finished the job meanwhile, and a
        # lane between two jobs when the stop came takes no further job.
        if finished "$key" "$mark"; then echo "done: $key"; continue; fi
        if [ -f "$MARKS/$mark.failed" ]; then echo "failed in another lane: $key"; continue; fi
        rc=0
        if stopped; then rc=76
        else
            ( flock -n 9 || exit 75; stopped && exit 76; finished "$key" "$mark" && exit 77
              "${words[@]}" && : > "$MARKS/$mark.done" ) 9> "$CLAIMS/$mark.claim" || rc=$?
        fi
        case $rc in
            0) ;;
            75) echo "another lane runs $key" ;;
            76) echo "retrain.sh: stopped (retrain.sh stop) before $key; run it again to resume" >&2; return 143 ;;
            77) echo "done: $key" ;;
            130|143) echo "retrain.sh: stopped by a signal during $key; run it again to resume" >&2; return "$rc" ;;
            *) echo "retrain.sh: $key failed (exit $rc, message above); the lane goes on" >&2
               : > "$MARKS/$mark.failed"; failed+=("$key") ;;
        esac
    done
    [ "${#failed[@]}" = 0 ] || { echo "retrain.sh: failed: ${failed[*]}" >&2; return 1; }
}
lane() { walk "${1:-*}" "${QUEUE[@]}"; }  # lane [PATTERN]: train the queue's runs that no other lane trains

queue() {  # the queue, one run a line: its directory and whether it is done, in training or not started
    local job words dir
    for job in "${QUEUE[@]}"; do
        read -r -a words <<< "$job"
        dir=$(job_key "${words[@]}")
        if [ -f "$dir/final.json" ]; then echo "done      $dir"
        elif [ -f "$dir/last.pt" ]; then echo "training  $dir"
        else echo "to train  $dir"; fi
    done
}

lanes() {  # lanes COMMAND...: LANES copies of COMMAND, started a second apart; 1 if any failed.  Without LANES:
    # one per core that no job of retrain.sh lanes (of any checkout: they share the cores) runs on now, and none
    # (exit 2) when every core has one; a lane between two jobs holds no claim and is not counted
    local n=${LANES-} k pids=() rc=0 cores busy
    if [ -z "$n" ]; then
        cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc would obey OMP_NUM_THREADS=1 (above)
        busy=$(held_claims "${CLAIMS%/*}/dcnbio-claims-" "*/*.claim" | cut -d' ' -f2- | sort -u | wc -l)
        n=$((cores - busy))
        [ "$n" -ge 1 ] || { echo "retrain.sh: jobs of retrain.sh lanes already run on all $cores cores of this" \
                                 "machine; none started (LANES=N starts N more, retrain.sh stop stops them)" >&2
                            return 2; }
        echo "retrain.sh: starting $n lanes ($cores cores; $busy taken by jobs of lanes already running)"
    fi
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "retrain.sh: LANES must be a whole number ≥ 1, not '$n'" >&2; return 2; }
    for ((k = 0; k < n; k++)); do "$@" & pids+=($!); sleep 1; done
    for k in "${pids[@]}"; do wait "$k" || rc=1; done
    return "$rc"
}
all() {  # LANES training lanes, then the manifest
    local rc=0
    lanes lane || rc=$?
    [ "$rc" = 1 ] && echo "retrain.sh: a lane failed (its message is above); run retrain.sh again to continue" >&2
    [ "$rc" = 0 ] || return "$rc"
    manifest
}
rejudge() {  # every analysis of reproduce.py on this bundle in LANES lanes, then the judge when all are done
    local jobs=() a rc=0
    for a in "${ANALYSES[@]}"; do jobs+=("analyse $a"); done
    lanes walk "*" "${jobs[@]}" || rc=$?
    [ "$rc" = 1 ] && echo "retrain.sh: an analysis failed (its message is above); run retrain.sh rejudge again:" \
                          "finished analyses are kept" >&2
    [ "$rc" = 0 ] || return "$rc"
    "$PY" analyses/reproduce.py --bundle full --no-run --results results/full --out results/full/reproduction \
        --overwrite
}
held_claims() {  # held_claims PREFIX GLOB: "PID FILE" for each file open in a process whose path is PREFIX (taken
    # as it is) followed by what matches GLOB, one a line (one find(1) over /proc: a process gone meanwhile is skipped)
    local prefix=$1
    prefix=${prefix//\\/\\\\}; prefix=${prefix//\*/\\*}; prefix=${prefix//\?/\\?}; prefix=${prefix//\[/\\[}
    { find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -lname "$prefix$2" -printf '%h %l\n' 2> /dev/null || true; } |
        sed 's#^/proc/\([0-9]*\)/fd #\1 #'
}
holders() {  # the processes that hold a claim of this checkout (a job's subshell and its trainer), one pid a line
    held_claims "$CLAIMS/" "*.claim" | cut -d' ' -f1 | sort -u
}
stop() {  # SIGTERM to every job of this checkout's lanes; returns once each has saved and exited (at most 10 min).
    # The flag first: a lane between two jobs, which holds no claim, sees it and takes no further job.  A flag that
    # cannot be written does not keep the running jobs from being stopped, but makes the exit status 1.
    local pids k flagged=0
    if ! { mkdir -p "$CLAIMS" && date +%s%N > "$CLAIMS/stop.$$" && mv "$CLAIMS/stop.$$" "$CLAIMS/stop"; } 2> /dev/null
    then
        rm -f "$CLAIMS/stop.$$"; flagged=1
        echo "retrain.sh: could not write the stop flag in $CLAIMS (full disk, or no permission): running jobs are" \
             "stopped, but a lane between two jobs may start its next; run stop again once it can be written" >&2
    fi
    mapfile -t pids < <(holders)
    [ "${#pids[@]}" -gt 0 ] || { echo "retrain.sh: no lane of this checkout is running a job"; return "$flagged"; }
    kill -TERM "${pids[@]}" 2> /dev/null || true
    for ((k = SECONDS + 600; SECONDS < k; )); do
        [ -z "$(holders)" ] && { echo "retrain.sh: stopped; last.pt is written — commit what is there"
                                 return "$flagged"; }
        sleep 1
    done
    echo "retrain.sh: jobs still running after 10 min: $(holders | tr '\n' ' ')" >&2
    return 1
}
manifest_files() {  # the files MANIFEST.sha256 lists, in its order, from the ./paths under data/checkpoints on stdin
    { grep -E '\.(pt|json|csv)$' || true; } | sort  # none is an empty list, not a failure
}
manifest() {
    (cd data/checkpoints && find . -type f | manifest_files | xargs sha256sum > MANIFEST.sha256)
}

snapshot() {  # snapshot [CHECKOUT [MESSAGE]]: one commit of the bundle's runs as they stand, in CHECKOUT (a
    # path from where the script was called; default: this checkout), while lanes train.  Each run is copied as one
    # moment of it (python -m dcnbio.train.snapshot); a run that is not whole at that moment (no last.pt yet, or
    # its last epoch done and final.json not yet written) is left as committed.  The commit is built in an index of
    # its own, with the manifest of exactly the files it holds, and lands only if HEAD has not moved meanwhile;
    # nothing else staged in CHECKOUT goes into it (the index entries of the runs it commits are set to it).  A
    # CHECKOUT other than this one gets the runs' files in its working tree too, and must have no uncommitted
    # change under data/checkpoints (it would be overwritten).
    local into=${1:-$CALLED_FROM} message=${2:-} stage head kind dir what f sha tree commit
    local changed=() dirs=() runs=() small=()
    command -v git > /dev/null || { echo "retrain.sh: snapshot needs git" >&2; return 2; }
    into=$(cd "$CALLED_FROM" && cd "$into" 2> /dev/null && pwd -P) || {
        echo "retrain.sh: snapshot: no folder '$1'" >&2; return 2; }
    [ "$(git -C "$into" rev-parse --show-toplevel 2> /dev/null)" = "$into" ] || {
        echo "retrain.sh: snapshot: $into is not the top of a git checkout" >&2; return 2; }
    head=$(git -C "$into" rev-parse -q --verify HEAD) || {
        echo "retrain.sh: snapshot: $into has no commit yet" >&2; return 2; }
    if [ "$into" != "$(pwd -P)" ] && [ -n "$(git -C "$into" status --porcelain -- data/checkpoints)" ]; then
        echo "retrain.sh: snapshot: $into has uncommitted changes under data/checkpoints; commit or discard them" \
             "first" >&2; return 2
    fi
    stage=$(mktemp -d "${TMPDIR:-/tmp}/dcnbio-snapshot.XXXXXX") && stage=$(cd "$stage" && pwd -P)
    # shellcheck disable=SC2064  # the stage's name is fixed now
    trap "rm -rf '$stage'" EXIT
    mapfile -t runs < <(find "$ROOT" "$CONTROL_ROOT" -path "$ROOT/small-data" -prune -o -name config.json \
                             -printf '%h\n' 2> /dev/null | sort)
    mapfile -t small < <(find "$ROOT/small-data" -name config.json -printf '%h\n' 2> /dev/null | sort)
    {   [ "${#runs[@]}" = 0 ] || "$PY" -m dcnbio.train.snapshot --into "$stage/runs" "${runs[@]}"
        [ "${#small[@]}" = 0 ] || "$PY" -m dcnbio.train.snapshot --into "$stage/runs" --finished-without best.pt \
                                        "${small[@]}"
    } > "$stage/runs.tsv" || { echo "retrain.sh: snapshot: nothing committed (message above)" >&2; return 2; }
    local git=(env "GIT_INDEX_FILE=$stage/index" git -C "$into")
    "${git[@]}" read-tree "$head"
    while IFS=$'\t' read -r kind dir what; do
        if [ "$kind" != ok ]; then echo "left as committed: $dir ($what)"; continue; fi
        "${git[@]}" rm -r -q --cached --ignore-unmatch -- "$dir"
        for f in "$stage/runs/$dir"/*; do
            sha=$("${git[@]}" hash-object -w -- "$f")
            "${git[@]}" update-index --add --cacheinfo "100644,$sha,$dir/${f##*/}"
        done
        "${git[@]}" diff --cached --quiet "$head" -- "$dir" || { changed+=("${dir#data/checkpoints/} $what")
                                                                 dirs+=("$dir"); }
    done < "$stage/runs.tsv"
    if [ "${#changed[@]}" = 0 ]; then echo "nothing new to commit: the runs are as committed"; return 0; fi
    # The manifest, as `manifest` writes it, of the files this commit holds (sha256 of the staged blobs).
    while read -r f; do
        sha=$("${git[@]}" cat-file blob ":data/checkpoints/${f#./}" | sha256sum)
        echo "${sha%% *}  $f"
    done < <("${git[@]}" ls-files -- data/checkpoints | sed 's#^data/checkpoints/#./#' | manifest_files) \
        > "$stage/MANIFEST.sha256"
    sha=$("${git[@]}" hash-object -w -- "$stage/MANIFEST.sha256")
    "${git[@]}" update-index --add --cacheinfo "100644,$sha,data/checkpoints/MANIFEST.sha256"
    dirs+=(data/checkpoints/MANIFEST.sha256)
    [ -n "$message" ] || message="Bundle (snapshot while lanes train): $(printf '%s; ' "${changed[@]}")"
    tree=$("${git[@]}" write-tree)
    commit=$(git -C "$into" commit-tree "$tree" -p "$head" -m "${message%; }")
    git -C "$into" update-ref -m "retrain.sh snapshot" HEAD "$commit" "$head" 2> /dev/null || {
        echo "retrain.sh: snapshot: HEAD of $into moved while the snapshot was taken; nothing committed, run it" \
             "again" >&2; return 1; }
    git -C "$into" reset -q -- "${dirs[@]}"  # the checkout's own index: the committed entries of these paths
    if [ "$into" = "$(pwd -P)" ]; then
        cp "$stage/MANIFEST.sha256" data/checkpoints/.MANIFEST.sha256.new
        mv data/checkpoints/.MANIFEST.sha256.new data/checkpoints/MANIFEST.sha256
    else
        git -C "$into" checkout -q -- "${dirs[@]}" && git -C "$into" clean -f -q -- "${dirs[@]}"
    fi
    git -C "$into" log --oneline -1
}

snapshots() {  # snapshots MINUTES [CHECKOUT]: `snapshot CHECKOUT` now and every MINUTES after (decimals allowed)
    # until SIGTERM or SIGINT, which end the wait at once; a snapshot in progress ignores them and finishes, so that
    # no commit and no update of CHECKOUT's files is cut off.  A bad CHECKOUT ends it at the first (exit 2); a
    # snapshot that fails otherwise (HEAD moved meanwhile, a full disk) is named and the next is tried on time.
    local minutes=${1:-} into=${2:-$CALLED_FROM} pause="" stopped_by=0 rc
    if ! [[ $minutes =~ ^[0-9]*\.?[0-9]+$ && $minutes =~ [1-9] ]]; then
        echo "retrain.sh: snapshots MINUTES [CHECKOUT]: MINUTES must be a number > 0, not '$minutes'" >&2; return 2
    fi
    trap 'stopped_by=143; [ -z "$pause" ] || kill "$pause" 2> /dev/null || true' TERM
    trap 'stopped_by=130; [ -z "$pause" ] || kill "$pause" 2> /dev/null || true' INT
    echo "retrain.sh: a snapshot now and every $minutes min into $into (SIGTERM or Ctrl-C ends it)"
    while :; do
        echo "== $(date -u +%FT%TZ)"
        rc=0; ( trap '' TERM INT; snapshot "$into" ) || rc=$?
        [ "$rc" = 2 ] && [ -z "$pause" ] && return 2  # the first: CHECKOUT is no checkout to commit in
        [ "$rc" = 0 ] || echo "retrain.sh: that snapshot failed (message above); the next in $minutes min" >&2
        [ "$stopped_by" = 0 ] || break
        sleep "${minutes}m" & pause=$!
        wait "$pause" 2> /dev/null || true  # a trapped signal ends the wait at once
        [ "$stopped_by" = 0 ] || break
    done
    echo "retrain.sh: snapshots stopped; the last is committed as printed above"
    return "$stopped_by"
}

case "${1:-all}" in
    lane|lane1|lane2) begin; lane ;;
    queue) queue ;;
    manifest) manifest ;;
    snapshot) shift; snapshot "$@" ;;
    snapshots) shift; snapshots "$@" ;;
    control) begin; lane control ;;
    small) begin; lane "small *" ;;
    rejudge) begin; rejudge ;;
    stop) stop ;;
    all) begin; all ;;
    *) echo "usage: retrain.sh [lane|queue|control|small|stop|manifest|snapshot [CHECKOUT [MESSAGE]]|" \
            "snapshots MINUTES [CHECKOUT]|rejudge|all]" >&2; exit 2 ;;
esac
