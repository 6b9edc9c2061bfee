"""``data/checkpoints/retrain.sh``: lanes share one queue of jobs, each job run once, by one lane.

The script is run as it is, in a copy of its folder layout, with ``PYTHON`` a stand-in for the trainer and for
``analyses/reproduce.py`` that records which lane ran which job, writes a run's ``final.json`` (what a finished
``dcnbio train`` leaves) and, on request, fails, is stopped by a signal, waits for ``retrain.sh stop`` or finishes
just as a stop comes: the queue, the claims, the re-judge and the stop are the script's, nothing of them is
re-implemented here.
"""
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "retrain.sh"

# The stand-in trainer: `-m dcnbio.train --seeds S --out OUT ...` trains OUT/seedS; `-m dcnbio.train.grid_cli
# --runs-dir R --models M --sizes N --seeds S ...` trains R/M/nN/seedS (and leaves a best.pt, as the grid does).
# Each "training" takes a while, so that lanes overlap; FAIL_ON names a run that fails, SIGNAL_ON one that is
# stopped by a signal.
FAKE = r"""#!/usr/bin/env bash
set -eu
if [ "$1" = analyses/reproduce.py ]; then  # rejudge: one analysis (--only NAME), or the judge (--no-run)
    shift; what=judge; key=""
    for w in "$@"; do [ "$key" = --only ] && what=$w; key=$w; done
    read -r _ _ _ lane _ < "/proc/$PPID/stat"
    echo "analysis:$what $lane $*" >> "$TRAINED"
    [ "$what" = "${FAIL_ON:-}" ] && { echo "stand-in: $what failed" >&2; exit 2; }
    sleep "${TRAIN_SECONDS:-0.4}"; exit 0
fi
module=$2; shift 2
declare -A a; key=""
for w in "$@"; do case $w in --*) key=$w ;; *) [ -n "$key" ] && a[$key]=$w; key="" ;; esac; done
if [ "$module" = dcnbio.train ]; then dir=${a[--out]}/seed${a[--seeds]}
else dir=${a[--runs-dir]}/${a[--models]}/n${a[--sizes]}/seed${a[--seeds]}; fi
mkdir -p "$dir"
read -r _ _ _ lane _ < "/proc/$PPID/stat"  # the lane: the parent of the subshell that holds the claim
echo "$dir $lane $*" >> "$TRAINED"
[ "$dir" = "${FAIL_ON:-}" ] && { echo "stand-in: $dir failed" >&2; exit 3; }
[ "$dir" = "${SIGNAL_ON:-}" ] && exit 143  # what dcnbio train does on SIGTERM, after writing last.pt
if [ "$dir" = "${STOP_AFTER:-}" ]; then  # finishes, and `retrain.sh stop` raises its flag before the lane goes on
    echo '{}' > "$dir/final.json"; flag=$(echo "$TMPDIR"/dcnbio-claims-*/stop); date +%s%N > "$flag"; exit 0
fi
if [ "$dir" = "${BLOCK_ON:-}" ]; then  # trains until SIGTERM, then "writes last.pt" and exits 143
    trap 'sleep 0.5; echo "$dir" > "$TRAINED.saved"; exit 143' TERM
    sleep 300 & wait $!
fi
sleep "${TRAIN_SECONDS:-0.4}"
[ "$module" = dcnbio.train ] || : > "$dir/best.pt"
echo '{}' > "$dir/final.json"
"""


@pytest.fixture
def tree(tmp_path):
    """A repository layout holding retrain.sh, a stand-in trainer, and the first two runs already finished."""
    bundle = tmp_path / "repo" / "data" / "checkpoints"
    bundle.mkdir(parents=True)
    shutil.copy(SCRIPT, bundle / "retrain.sh")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    for done in ("resnet-blocks/seed1", "resnet-blocks/seed2"):
        (bundle / "full" / done).mkdir(parents=True)
        (bundle / "full" / done / "final.json").write_text("{}")
    env = dict(os.environ, PYTHON=str(fake), TRAINED=str(tmp_path / "trained.log"), TMPDIR=str(tmp_path))
    return bundle, env, tmp_path / "trained.log"


def retrain(bundle, env, *args, **extra):
    return subprocess.run(["bash", str(bundle / "retrain.sh"), *args], env=dict(env, **extra), capture_output=True,
                          text=True, timeout=600)


def queue_of(bundle, env):
    out = retrain(bundle, env, "queue")
    assert out.returncode == 0, out.stderr
    return [line.split() for line in out.stdout.splitlines()]


def test_lanes_train_every_queued_run_once_and_share_the_work(tree):
    bundle, env, log = tree
    before = queue_of(bundle, env)
    assert before[:3] == [["done", "data/checkpoints/full/resnet-blocks/seed1"],
                          ["done", "data/checkpoints/full/resnet-blocks/seed2"],
                          ["to", "train", "data/checkpoints/full/resnet-blocks/seed3"]]
    todo = [row[-1] for row in before if row[0] != "done"]
    assert not list(Path(env["TMPDIR"]).glob("dcnbio-claims-*"))  # listing the queue leaves nothing behind
    assert len(todo) == len(before) - 2 and len(set(todo)) == len(todo)

    out = retrain(bundle, env, LANES="3")
    assert out.returncode == 0, out.stderr
    trained = [line.split() for line in log.read_text().splitlines()]
    dirs = [row[0] for row in trained]
    assert sorted(dirs) == sorted(todo)  # every run not done, each exactly once: no two lanes trained one run
    assert len({row[1] for row in trained}) > 1  # more than one lane trained
    assert "another lane runs" in out.stdout  # a lane met a run that another lane held, and went on
    assert all(row[0] == "done" for row in queue_of(bundle, env))
    assert not list((bundle / "full" / "small-data").rglob("best.pt"))  # small-data runs keep last.pt, not best.pt
    assert (bundle / "MANIFEST.sha256").exists()
    control = [row for row in trained if row[0].startswith("data/checkpoints/full-sigma-lr10/")]
    assert len(control) == 1 and "--sigma-lr-scale 10" in " ".join(control[0])

    again = retrain(bundle, env, "lane")  # a finished bundle: nothing is trained again
    assert again.returncode == 0 and log.read_text().count("\n") == len(todo)


def test_a_failing_run_is_named_and_left_and_the_lane_goes_on_to_exit_1(tree):
    bundle, env, log = tree
    out = retrain(bundle, env, "control", FAIL_ON="data/checkpoints/full-sigma-lr10/dcn-sigma-ji/seed1")
    assert out.returncode == 1 and "dcn-sigma-ji/seed1 failed" in out.stderr
    assert "retrain.sh: failed: data/checkpoints/full-sigma-lr10/dcn-sigma-ji/seed1" in out.stderr
    failing = "data/checkpoints/full/dcn-ode/seed1"
    out = retrain(bundle, env, "lane", FAIL_ON=failing, TRAIN_SECONDS="0.02")
    assert out.returncode == 1 and f"retrain.sh: failed: {failing}" in out.stderr
    trained = [line.split()[0] for line in log.read_text().splitlines()][1:]
    assert trained[:2] == ["data/checkpoints/full/resnet-blocks/seed3", failing]
    assert not (bundle / failing / "final.json").exists()
    left = {row[-1] for row in queue_of(bundle, env) if row[0] != "done"}
    assert left == {failing}  # every other run of the queue was trained after it


def test_a_signal_stops_the_lane_where_it_is(tree):
    bundle, env, log = tree
    out = retrain(bundle, env, "lane", SIGNAL_ON="data/checkpoints/full/dcn-ode/seed1")
    assert out.returncode == 143 and "stopped by a signal during data/checkpoints/full/dcn-ode/seed1" in out.stderr
    assert [line.split()[0] for line in log.read_text().splitlines()] == [
        "data/checkpoints/full/resnet-blocks/seed3", "data/checkpoints/full/dcn-ode/seed1"]


def test_small_and_control_walk_their_part_of_the_queue_only(tree):
    bundle, env, log = tree
    env = dict(env, TRAIN_SECONDS="0.05")
    assert retrain(bundle, env, "control").returncode == 0
    assert [line.split()[0] for line in log.read_text().splitlines()] == [
        "data/checkpoints/full-sigma-lr10/dcn-sigma-ji/seed1"]
    assert retrain(bundle, env, "small").returncode == 0
    small = [line.split()[0] for line in log.read_text().splitlines()[1:]]
    assert len(small) == 36 and all(d.startswith("data/checkpoints/full/small-data/") for d in small)
    assert retrain(bundle, env, "bogus").returncode == 2
    for lanes in ("0", "two", "-1"):
        out = retrain(bundle, env, LANES=lanes)
        assert out.returncode == 2 and "LANES must be a whole number" in out.stderr
        assert out.stderr.count("\n") == 1 and not (bundle / "MANIFEST.sha256").exists()
    assert log.read_text().count("\n") == 1 + 36  # nothing more was trained


def wait_for_first_job(log):
    for _ in range(300):
        if log.exists() and log.read_text():
            return log.read_text().split()[0]
        time.sleep(0.1)
    raise AssertionError("the lane started no job in 30 s")


def test_without_lanes_one_lane_per_core_that_no_running_job_takes(tree):
    """The default is one lane per core whatever OMP_NUM_THREADS says (the lanes' own setting is 1, and nproc
    obeys it), less the cores that jobs of lanes already running take; none when they take every core."""
    bundle, env, log = tree
    cores = len(os.sched_getaffinity(0))
    env = dict(env, OMP_NUM_THREADS="1", TRAIN_SECONDS="0.05")
    out = retrain(bundle, env, "rejudge", TRAIN_SECONDS="0.4")  # 8 analyses: 3.2 s, lanes start a second apart
    assert out.returncode == 0, out.stderr
    assert f"retrain.sh: starting {cores} lanes ({cores} cores; 0 taken by jobs of lanes already running)" \
        in out.stdout
    lanes = {line.split()[1] for line in log.read_text().splitlines()[:-1]}  # the judge runs in none
    assert (len(lanes) > 1) == (cores > 1)  # nproc under OMP_NUM_THREADS=1 would say 1
    log.unlink()

    first = "data/checkpoints/full/resnet-blocks/seed3"
    lane = subprocess.Popen(["bash", str(bundle / "retrain.sh"), "lane"], env=dict(env, BLOCK_ON=first),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_first_job(log) == first
        one_core = subprocess.run(["taskset", "-c", str(min(os.sched_getaffinity(0))), "bash",
                                   str(bundle / "retrain.sh")], env=env, capture_output=True, text=True, timeout=60)
        assert one_core.returncode == 2 and one_core.stderr.count("\n") == 1, one_core.stderr
        assert "already run on all 1 cores of this machine; none started (LANES=N" in one_core.stderr
        assert log.read_text().count("\n") == 1 and not (bundle / "MANIFEST.sha256").exists()  # nothing ran
        if cores > 1:
            out = retrain(bundle, env, "rejudge")
            assert out.returncode == 0, out.stderr
            assert f"starting {cores - 1} lanes ({cores} cores; 1 taken by jobs of lanes already running)" \
                in out.stdout
        out = retrain(bundle, env, "rejudge", LANES="1")  # a number given is a number started, busy cores or not
        assert out.returncode == 0 and "starting" not in out.stdout, out.stderr
    finally:
        retrain(bundle, env, "stop")
        lane.communicate(timeout=60)
    assert lane.returncode == 143


def test_rejudge_runs_every_analysis_once_across_lanes_then_the_judge(tree):
    bundle, env, log = tree
    out = retrain(bundle, env, "rejudge", LANES="3", TRAIN_SECONDS="0.3")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in log.read_text().splitlines()]
    analyses = [r[0].split(":")[1] for r in rows[:-1]]
    assert sorted(analyses) == sorted(["contrast", "solver_audit", "physiology", "pattern_completion",
                                       "reconstruction", "small_data", "meta_parametrization", "sigma_distribution"])
    assert len({r[1] for r in rows[:-1]}) > 1  # shared between lanes
    for r in rows[:-1]:
        name = r[0].split(":")[1]
        assert " ".join(r[2:]) == (f"--bundle full --resume --results results/full --overwrite "
                                   f"--out results/full/lanes/{name} --only {name}")
    assert rows[-1][0] == "analysis:judge" and "--no-run" in rows[-1]  # judged last, once
    claims = list(Path(env["TMPDIR"]).glob("dcnbio-claims-*/*"))
    assert claims and all(p.suffix == ".claim" for p in claims)  # this invocation's marks are gone


def test_rejudge_does_not_judge_when_an_analysis_failed(tree):
    bundle, env, log = tree
    out = retrain(bundle, env, "rejudge", LANES="2", TRAIN_SECONDS="0.05", FAIL_ON="physiology")
    assert out.returncode == 1 and "results/full/physiology failed" in out.stderr
    assert "rejudge again: finished analyses are kept" in out.stderr
    rows = [line.split()[0] for line in log.read_text().splitlines()]
    assert len(rows) == 8 and "analysis:judge" not in rows  # the other seven ran; no judge


def test_stop_signals_the_running_jobs_and_returns_once_they_have_saved(tree):
    bundle, env, log = tree
    first = "data/checkpoints/full/resnet-blocks/seed3"  # the first run of the queue not yet done
    lane = subprocess.Popen(["bash", str(bundle / "retrain.sh"), "lane"], env=dict(env, BLOCK_ON=first),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for_first_job(log) == first
    out = retrain(bundle, env, "stop")
    assert out.returncode == 0 and "stopped; last.pt is written" in out.stdout, out.stderr
    assert Path(f"{log}.saved").read_text().strip() == first  # the trainer had saved when stop returned
    _, err = lane.communicate(timeout=60)
    assert lane.returncode == 143 and f"stopped by a signal during {first}" in err
    assert log.read_text().count("\n") == 1  # the lane took no further run
    again = retrain(bundle, env, "stop")
    assert again.returncode == 0 and "no lane of this checkout is running a job" in again.stdout


def test_stop_between_two_jobs_stops_the_lane_before_its_next_and_an_older_stop_does_not(tree):
    bundle, env, log = tree
    out = retrain(bundle, env, "stop")  # no lane runs: it raises the flag that lanes read between jobs
    assert out.returncode == 0 and "no lane of this checkout is running a job" in out.stdout
    flag, = Path(env["TMPDIR"]).glob("dcnbio-claims-*/stop")
    finished = "data/checkpoints/full/resnet-blocks/seed3"  # the first run of the queue not yet done
    # a lane started after that stop trains; its first run finishes just as a new stop comes (the run holds no
    # claim any more, so the lane is between two jobs): it takes no further run
    out = retrain(bundle, env, "lane", STOP_AFTER=finished)
    assert out.returncode == 143, out.stderr
    assert "stopped (retrain.sh stop) before data/checkpoints/full/dcn-ode/seed1" in out.stderr
    assert log.read_text().split()[0] == finished and log.read_text().count("\n") == 1
    assert (bundle / "full" / "resnet-blocks" / "seed3" / "final.json").exists() and flag.exists()
    again = retrain(bundle, env, "control")  # a lane started after it trains again
    assert again.returncode == 0 and log.read_text().count("\n") == 2


def test_stop_whose_flag_cannot_be_written_says_so_in_one_line_and_exits_1(tree):
    bundle, env, _ = tree
    claims = Path(env["TMPDIR"]) / "blocked"
    claims.write_text("a file where the claims folder would be")
    out = retrain(bundle, dict(env, TMPDIR=str(claims)), "stop")  # its claims folder cannot be made
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "could not write the stop flag" in out.stderr and "run stop again" in out.stderr
