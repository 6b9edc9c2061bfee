"""Snapshots of runs in training: ``dcnbio.train.snapshot`` and ``retrain.sh snapshot``.

The runs are real (tiny ``dcnbio train`` runs): one finished, one killed by SIGKILL in the middle of writing its
second ``last.pt`` (so it holds the first, a temporary of the second and a stale lock, as a lane killed with its
machine does).  The states that are not a whole run are made from them as the trainer passes through them: before
the first ``last.pt`` (config.json and init.pt only) and between the last epoch and ``final.json``.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcnbio.errors import CheckpointError
from dcnbio.io.atomic import FAULT_ENV
from dcnbio.train import snapshot
from dcnbio.train.checkpoint import read_checkpoint

from test_training import TINY, needs_fmnist, run_cli

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "retrain.sh"
ARGS = [*TINY, "--epochs", "2", "--save-every", "2", "--seed", "5"]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs: ``finished``, ``training`` (killed in its second write of last.pt) and ``later`` (in its third)."""
    root = tmp_path_factory.mktemp("runs")
    done = run_cli([*ARGS, "--out", str(root / "finished")])
    assert done.returncode == 0, done.stderr
    for name, write in (("training", 2), ("later", 3)):
        killed = run_cli([*ARGS, "--out", str(root / name)], env={FAULT_ENV: f"kill-before-rename:last.pt:{write}"})
        assert killed.returncode < 0  # SIGKILL
    return {name: root / name / "seed5" for name in ("finished", "training", "later")}


def files_of(directory):
    return {p.name: p.read_bytes() for p in Path(directory).iterdir()}


@needs_fmnist
def test_a_finished_and_a_training_run_are_copied_whole_without_lock_or_temporaries(runs, tmp_path):
    stands = snapshot.freeze_run(runs["finished"], tmp_path / "f")
    assert stands == "done (2 epochs, 10 steps)"
    assert files_of(tmp_path / "f") == {n: (runs["finished"] / n).read_bytes()
                                        for n in ("config.json", "init.pt", "last.pt", "best.pt", "metrics.csv",
                                                  "final.json")}
    training = runs["training"]
    assert any(p.name.startswith(".tmp-last.pt") for p in training.iterdir())  # what the kill left
    stands = snapshot.freeze_run(training, tmp_path / "t")
    assert stands == "training: epoch 0 + 2 batches (step 2)"
    assert sorted(files_of(tmp_path / "t")) == ["config.json", "init.pt", "last.pt"]
    assert (tmp_path / "t" / "last.pt").read_bytes() == (training / "last.pt").read_bytes()


@needs_fmnist
def test_runs_that_are_not_whole_at_this_moment_are_refused_with_the_reason(runs, tmp_path):
    started = tmp_path / "started"
    shutil.copytree(runs["training"], started)
    (started / "last.pt").unlink()
    with pytest.raises(CheckpointError, match="no last.pt yet"):
        snapshot.freeze_run(started, tmp_path / "s")
    assert not (tmp_path / "s").exists()
    finishing = tmp_path / "finishing"
    shutil.copytree(runs["finished"], finishing)
    (finishing / "final.json").unlink()
    with pytest.raises(CheckpointError, match="finishing: its 2 epochs are done"):
        snapshot.freeze_run(finishing, tmp_path / "g")
    wrong = tmp_path / "wrong"
    shutil.copytree(runs["finished"], wrong)
    final = json.loads((wrong / "final.json").read_text())
    (wrong / "final.json").write_text(json.dumps(dict(final, steps=final["steps"] - 1)))
    with pytest.raises(CheckpointError, match="disagree"):
        snapshot.freeze_run(wrong, tmp_path / "w")


@needs_fmnist
def test_a_file_replaced_during_a_copy_is_copied_again_and_a_run_that_never_holds_still_is_refused(
        runs, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(runs["training"], run)
    newer = (runs["later"] / "last.pt").read_bytes()
    copy, writes = shutil.copy2, []

    def copy_while_training(src, dst, limit):
        result = copy(src, dst)
        if Path(src).name == "last.pt" and len(writes) < limit:  # the trainer writes last.pt atomically meanwhile
            writes.append(1)
            (run / ".tmp").write_bytes(newer)
            os.replace(run / ".tmp", run / "last.pt")
        return result

    monkeypatch.setattr(snapshot.shutil, "copy2", lambda s, d: copy_while_training(s, d, 1))
    assert snapshot.freeze_run(run, tmp_path / "once") == "training: epoch 0 + 4 batches (step 4)"
    assert (tmp_path / "once" / "last.pt").read_bytes() == newer and len(writes) == 1
    writes.clear()
    monkeypatch.setattr(snapshot.shutil, "copy2", lambda s, d: copy_while_training(s, d, 99))
    with pytest.raises(CheckpointError, match=f"changed during each of {snapshot.ATTEMPTS} copies"):
        snapshot.freeze_run(run, tmp_path / "never")
    assert len(writes) == snapshot.ATTEMPTS and not (tmp_path / "never").exists()


@needs_fmnist
def test_a_finished_run_can_leave_out_what_the_bundle_does_not_keep(runs, tmp_path):
    snapshot.freeze_run(runs["finished"], tmp_path / "f", finished_without=["best.pt"])
    assert "best.pt" not in files_of(tmp_path / "f") and (runs["finished"] / "best.pt").exists()
    snapshot.freeze_run(runs["training"], tmp_path / "t", finished_without=["init.pt"])  # only once finished
    assert "init.pt" in files_of(tmp_path / "t")


@needs_fmnist
def test_a_damaged_final_json_is_a_skip_line_and_the_other_runs_are_still_copied(runs, tmp_path, monkeypatch,
                                                                                  capsys):
    for name, final in (("truncated", b'{"epochs": 2, "st'), ("list", b"[2, 10]"), ("latin1", b'{"a": "\xe9"}')):
        shutil.copytree(runs["finished"], tmp_path / "runs" / name)
        (tmp_path / "runs" / name / "final.json").write_bytes(final)
    shutil.copytree(runs["finished"], tmp_path / "runs" / "whole")
    monkeypatch.chdir(tmp_path / "runs")
    assert snapshot.main(["truncated", "list", "latin1", "whole", "--into", str(tmp_path / "stage")]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[:2] for line in lines] == [["skip", "truncated"], ["skip", "list"], ["skip", "latin1"],
                                            ["ok", "whole"]]
    assert "final.json is not readable JSON" in lines[0][2] and "restore it from git" in lines[0][2]
    assert "holds a list" in lines[1][2] and "not readable JSON" in lines[2][2]
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["whole"]


# --- retrain.sh snapshot: commits in a git checkout --------------------------------------------------------------

def git(repo, *args):
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                         env=dict(os.environ, **GIT_ENV))
    assert out.returncode == 0, out.stderr
    return out.stdout


def retrain(repo, *args, cwd=None):
    return subprocess.run(["bash", str(repo / "data/checkpoints/retrain.sh"), "snapshot", *args], cwd=cwd or repo,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHON=sys.executable, **GIT_ENV))


def committed_bundle_is_intact(repo, commit="HEAD"):
    """The test of tests/test_bundled.py on a commit: its manifest lists exactly its files with their sha256."""
    clone = repo.parent / f"check-{commit}"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "checkout", "-q", commit)
    bundle = clone / "data/checkpoints"
    listed = {}
    for line in (bundle / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    on_disk = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.suffix in (".pt", ".json", ".csv")}
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest, name
    return on_disk


@pytest.fixture
def repo(runs, tmp_path):
    """A checkout with retrain.sh and a committed finished run; in its working tree a run in training, a run of the
    small-data grid that has just finished (its best.pt not yet removed) and a run that has just started."""
    repo = tmp_path / "repo"
    full = repo / "data/checkpoints/full"
    full.mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "data/checkpoints/retrain.sh")
    (repo / ".gitignore").write_text(".dcnbio.lock\n")
    shutil.copytree(runs["finished"], full / "odenet/seed1")
    subprocess.run(["bash", str(repo / "data/checkpoints/retrain.sh"), "manifest"], check=True,
                   env=dict(os.environ, PYTHON=sys.executable))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    shutil.copytree(runs["training"], full / "dcn-ode/seed2")
    shutil.copytree(runs["finished"], full / "small-data/dcn-ode/n10/seed1")
    shutil.copytree(runs["training"], full / "dcn-ode/seed3")
    (full / "dcn-ode/seed3/last.pt").unlink()
    return repo


@needs_fmnist
def test_snapshot_commits_the_whole_runs_with_their_manifest_and_nothing_else_staged(repo):
    (repo / "notes.txt").write_text("work in progress")
    git(repo, "add", "notes.txt")  # staged by the user: not the snapshot's to commit
    out = retrain(repo)
    assert out.returncode == 0, out.stderr
    assert "left as committed: data/checkpoints/full/dcn-ode/seed3 (no last.pt yet" in out.stdout
    message = git(repo, "log", "-1", "--format=%s")
    assert message.startswith("Bundle (snapshot while lanes train): full/dcn-ode/seed2 training: epoch 0 + 2 "
                              "batches (step 2); full/small-data/dcn-ode/n10/seed1 done")
    files = committed_bundle_is_intact(repo)
    assert "full/dcn-ode/seed2/last.pt" in files and not any(f.startswith("full/dcn-ode/seed3") for f in files)
    assert "full/small-data/dcn-ode/n10/seed1/final.json" in files
    assert "full/small-data/dcn-ode/n10/seed1/best.pt" not in files  # the bundle keeps none for a finished grid run
    assert not any(".tmp-" in f for f in files)
    assert git(repo, "diff", "--cached", "--name-only").split() == ["notes.txt"]  # still staged, not committed
    temporary, = (p.name for p in (repo / "data/checkpoints/full/dcn-ode/seed2").glob(".tmp-last.pt*"))
    assert set(git(repo, "status", "--porcelain", "--", "data/checkpoints").splitlines()) == {
        "?? data/checkpoints/full/dcn-ode/seed3/",  # never committed: it had no last.pt
        f"?? data/checkpoints/full/dcn-ode/seed2/{temporary}",  # the killed write's leftover, the trainer's to clear
        "?? data/checkpoints/full/small-data/dcn-ode/n10/seed1/best.pt"}  # retrain.sh's to remove
    again = retrain(repo)
    assert again.returncode == 0 and "nothing new to commit" in again.stdout
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "2"


@needs_fmnist
def test_snapshot_into_another_checkout_updates_its_files_and_refuses_one_with_changes(repo, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(repo), str(other)], check=True)
    out = retrain(repo, "../../other", "Bundle: the lanes at noon", cwd=repo / "data")  # a path from the caller
    assert out.returncode == 0, out.stderr
    assert git(other, "log", "-1", "--format=%s").strip() == "Bundle: the lanes at noon"
    assert git(other, "status", "--porcelain").strip() == ""  # its working tree is the commit
    assert (other / "data/checkpoints/full/dcn-ode/seed2/last.pt").read_bytes() == \
        (repo / "data/checkpoints/full/dcn-ode/seed2/last.pt").read_bytes()
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "1"  # the lanes' own checkout is not committed
    committed_bundle_is_intact(other)
    (other / "data/checkpoints/MANIFEST.sha256").write_text("edited\n")
    refused = retrain(repo, str(other))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "uncommitted changes under data/checkpoints" in refused.stderr
    assert (other / "data/checkpoints/MANIFEST.sha256").read_text() == "edited\n"  # nothing lost
    missing = retrain(repo, str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no folder" in missing.stderr and missing.stderr.count("\n") == 1


@needs_fmnist
def test_snapshot_commits_nothing_when_head_moves_meanwhile(repo, monkeypatch):
    # A stand-in python that runs the real snapshot module and then commits in the checkout, as a second writer.
    stand_in = repo.parent / "python"
    stand_in.write_text(f"#!/usr/bin/env bash\n{sys.executable} \"$@\" || exit\n"
                        f"git -C {repo} commit -q --allow-empty -m 'meanwhile'\n")
    stand_in.chmod(0o755)
    out = subprocess.run(["bash", str(repo / "data/checkpoints/retrain.sh"), "snapshot"], cwd=repo,
                         capture_output=True, text=True, env=dict(os.environ, PYTHON=str(stand_in), **GIT_ENV))
    assert out.returncode == 1 and "moved while the snapshot was taken; nothing committed" in out.stderr
    assert git(repo, "log", "-1", "--format=%s").strip() == "meanwhile"
    committed_bundle_is_intact(repo)
    assert read_checkpoint(repo / "data/checkpoints/full/odenet/seed1/last.pt")["step"] == 10


def wait_until(condition, what, seconds=60):
    """Poll ``condition()`` every 0.1 s until it holds; fail naming ``what`` after ``seconds``."""
    for _ in range(seconds * 10):
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {seconds} s")


@needs_fmnist
def test_snapshots_commit_now_and_every_interval_until_a_signal(repo, runs):
    env = dict(os.environ, PYTHON=sys.executable, **GIT_ENV)
    command = ["bash", str(repo / "data/checkpoints/retrain.sh"), "snapshots"]
    for bad in ([], ["0"], ["-1"], ["x"], ["0.0"]):
        out = subprocess.run(command + bad, cwd=repo, capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "MINUTES must be a number > 0" in out.stderr
    nowhere = subprocess.run(command + ["1", str(repo.parent / "nowhere")], cwd=repo, capture_output=True,
                             text=True, env=env, timeout=60)
    assert nowhere.returncode == 2 and "no folder" in nowhere.stderr  # the first snapshot says so, and it ends

    def commits():
        return int(git(repo, "rev-list", "--count", "HEAD"))

    def wait_for(n):
        wait_until(lambda: commits() == n, f"{n} commits")

    loop = subprocess.Popen(command + ["0.01"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # every 0.6 s
    try:
        wait_for(2)  # the first, at once: the run in training and the grid run
        shutil.copy(runs["later"] / "last.pt", repo / "data/checkpoints/full/dcn-ode/seed2/last.pt")  # it trains on
        wait_for(3)
        assert "full/dcn-ode/seed2 training" in git(repo, "log", "-1", "--format=%s")
        committed_bundle_is_intact(repo)
        time.sleep(1.5)  # snapshots with nothing new commit nothing
        assert commits() == 3
    finally:
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=60)
    assert loop.returncode == 143, err
    assert "nothing new to commit" in out and out.rstrip().endswith("snapshots stopped; the last is committed as "
                                                                     "printed above")
    committed_bundle_is_intact(repo)


@needs_fmnist
def test_a_signal_to_the_whole_group_lets_the_snapshot_in_progress_land_and_one_during_the_wait_ends_it(repo):
    """Ctrl-C or a machine's shutdown signals every process of the group: the snapshot then in progress still
    commits (its processes ignore the signal), and the loop ends after it; a signal during the wait ends it at once."""
    flag = repo.parent / "snapshot-started"
    stand_in = repo.parent / "python"  # the real snapshot module, two seconds after it has said it started
    stand_in.write_text(f"#!/usr/bin/env bash\n: > {flag}\nsleep 2\nexec {sys.executable} \"$@\"\n")
    stand_in.chmod(0o755)
    env = dict(os.environ, PYTHON=str(stand_in), **GIT_ENV)
    command = ["bash", str(repo / "data/checkpoints/retrain.sh"), "snapshots", "10"]

    def started():
        wait_until(flag.exists, "a snapshot started")

    loop = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    started()
    os.killpg(loop.pid, signal.SIGINT)
    out, err = loop.communicate(timeout=60)
    assert loop.returncode == 130, err
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "2"  # the snapshot in progress landed
    assert "Bundle (snapshot while lanes train)" in out and "snapshots stopped" in out
    committed_bundle_is_intact(repo)

    flag.unlink()
    loop = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    started()
    time.sleep(6)  # its first snapshot (nothing new) is done: the loop waits its ten minutes
    began = time.monotonic()
    loop.send_signal(signal.SIGTERM)
    out, err = loop.communicate(timeout=60)
    assert loop.returncode == 143 and time.monotonic() - began < 30, err
    assert "nothing new to commit" in out and git(repo, "rev-list", "--count", "HEAD").strip() == "2"
