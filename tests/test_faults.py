"""Real faults on real processes: a filesystem that fills up mid-run, one turned read-only, two writers on one
directory, SIGTERM/SIGINT, damaged checkpoints.

The full disk is a small tmpfs mounted for the test (the suite runs as root, like CI); each process is paused
(SIGSTOP) at an arbitrary point after its first checkpoint or shard, the filesystem is filled to the last byte,
and the process continues into the full disk.
"""
import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcnbio.train.checkpoint import load_checkpoint, make_checkpoint, read_checkpoint, save_checkpoint
from dcnbio.errors import CheckpointError
from dcnbio.io import LOCK_NAME, TMP_PREFIX, assert_same_results, open_results

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_ODE = ROOT / "data" / "checkpoints" / "dcn-ode" / "seed1" / "last.pt"
SIGMA_JI = ROOT / "data" / "checkpoints" / "dcn-sigma-ji" / "seed1" / "last.pt"
TRAIN = ["--model", "resnet-blocks", "--width", "0.25", "--dataset", "fashion-mnist", "--subset", "20",
         "--val-size", "100", "--epochs", "6", "--batch-size", "32", "--no-test", "--seeds", "1", "--save-every", "1"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


# --- helpers -------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(mount, options):
    """A tmpfs of the test's own at ``mount`` (mount(8) ``-o options``), unmounted afterwards."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True, capture_output=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 32 MiB tmpfs, to be filled."""
    with tmpfs(tmp_path / "fs", "size=32m") as mount:
        yield mount


def fill(fs):
    """Fill filesystem ``fs`` to its last byte with a ballast file; return the ballast's path."""
    ballast = fs / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    assert os.statvfs(fs).f_bavail == 0
    return ballast


def start(module, args, **kw):
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def run(module, args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=600)


def wait_for(predicate, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"process ended early ({proc.returncode}): {proc.stderr.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def digests(directory):
    return {p.relative_to(directory): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in Path(directory).rglob("*") if p.is_file() and p.name not in ("ballast", LOCK_NAME)}


def temporaries(directory):
    return [p for p in Path(directory).rglob("*") if p.name.startswith(TMP_PREFIX)]


def one_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def assert_same_weights(a, b):
    sa, sb = read_checkpoint(a)["model_state"], read_checkpoint(b)["model_state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted training run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("reference")
    done = run("dcnbio.train", [*TRAIN, "--out", out])
    assert done.returncode == 0, done.stderr
    return out / "seed1"


@pytest.fixture(scope="module")
def images_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "images.pt"
    torch.save(torch.rand(48, 1, 28, 28, generator=torch.Generator().manual_seed(0)), path)
    return path


def extract_args(images_file, out):
    return ["--checkpoint", BUNDLED_ODE, "--images-file", images_file, "--batch-size", "8", "--shard-size", "8",
            "--times", "0", "1", "2", "--quiet", "--out", out]


@pytest.fixture(scope="module")
def reference_extraction(tmp_path_factory, images_file):
    out = tmp_path_factory.mktemp("extraction") / "ref"
    done = run("dcnbio.extract", extract_args(images_file, out))
    assert done.returncode == 0, done.stderr
    return out


# --- a full disk ---------------------------------------------------------------------------------------------------
def test_training_into_a_disk_that_fills_mid_run_stops_cleanly_and_resumes_to_the_same_weights(
        small_fs, reference_run):
    out = small_fs / "run"
    proc = start("dcnbio.train", [*TRAIN, "--out", out])
    wait_for(lambda: (out / "seed1" / "last.pt").exists(), proc)
    proc.send_signal(signal.SIGSTOP)
    ballast = fill(small_fs)
    before = digests(out)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, stderr
    line = one_line(stderr)
    assert "No space left on device" in line and str(out / "seed1") in line, line
    assert temporaries(small_fs) == []
    after = digests(out)
    assert {k: after.get(k) for k in before} == before  # every complete file untouched
    read_checkpoint(out / "seed1" / "last.pt")  # still a complete checkpoint

    ballast.unlink()
    done = run("dcnbio.train", [*TRAIN, "--out", out, "--resume"])
    assert done.returncode == 0, done.stderr
    assert_same_weights(out / "seed1" / "last.pt", reference_run / "last.pt")
    final = json.loads((out / "seed1" / "final.json").read_text())
    assert final["steps"] == json.loads((reference_run / "final.json").read_text())["steps"]
    assert [s["start_step"] for s in final["segments"]][0] == 0 and len(final["segments"]) == 2


def test_extraction_into_a_disk_that_fills_mid_run_exits_2_without_a_crash_and_resumes(
        small_fs, images_file, reference_extraction):
    out = small_fs / "traj"
    proc = start("dcnbio.extract", extract_args(images_file, out))
    wait_for(lambda: (out / "block1" / "shard-00000.nc").exists(), proc)
    proc.send_signal(signal.SIGSTOP)
    ballast = fill(small_fs)
    before = digests(out)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, stderr  # not -11: HDF5 never holds a half-written file
    line = one_line(stderr)
    assert "No space left on device" in line and str(out) in line, line
    assert temporaries(small_fs) == []
    after = digests(out)
    assert {k: after.get(k) for k in before} == before
    for shard in out.glob("block*/shard-*.nc"):
        open_results(shard).load()  # every shard under a final name is complete

    ballast.unlink()
    done = run("dcnbio.extract", extract_args(images_file, out))
    assert done.returncode == 0, done.stderr
    assert_same_results(out, reference_extraction)


@pytest.fixture
def read_only_fs(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        yield mount


@pytest.mark.parametrize("command", ["train", "extract", "script"])
def test_a_read_only_filesystem_is_one_line_and_exit_2(read_only_fs, images_file, command):
    out = read_only_fs / "out"
    if command == "train":
        done = run("dcnbio.train", [*TRAIN, "--out", out])
    elif command == "extract":
        done = run("dcnbio.extract", extract_args(images_file, out))
    else:
        done = subprocess.run([sys.executable, str(ROOT / "analyses" / "sigma_distribution.py"), "--out", str(out),
                               "--checkpoint", str(SIGMA_JI), "--n-boot", "50"], capture_output=True, text=True,
                              env=ENV, timeout=600)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "Read-only file system" in line and str(out) in line, line


def test_an_analysis_script_into_a_full_disk_exits_2_and_leaves_no_partial_file(small_fs):
    out = small_fs / "sigma"
    out.mkdir()
    fill(small_fs)
    done = subprocess.run([sys.executable, str(ROOT / "analyses" / "sigma_distribution.py"), "--out", str(out),
                           "--overwrite", "--checkpoint", str(SIGMA_JI), "--n-boot", "50"],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "No space left on device" in line and str(out) in line, line
    assert temporaries(small_fs) == []
    assert {p.name for p in out.iterdir()} <= {LOCK_NAME}  # nothing fit, so nothing is there


# --- two writers ---------------------------------------------------------------------------------------------------
def test_a_second_training_process_on_one_run_directory_is_refused_and_a_dead_holder_does_not_block(
        tmp_path, reference_run):
    out = tmp_path / "run"
    first = start("dcnbio.train", [*TRAIN, "--out", out])
    wait_for(lambda: (out / "seed1" / "last.pt").exists(), first)
    first.send_signal(signal.SIGSTOP)
    second = run("dcnbio.train", [*TRAIN, "--out", out, "--resume"])
    assert second.returncode == 2
    line = one_line(second.stderr)
    assert f"pid {first.pid} on host {socket.gethostname()}" in line and "in use" in line, line
    third = run("dcnbio.train", [*TRAIN, "--out", out, "--overwrite"])
    assert third.returncode == 2 and f"pid {first.pid}" in one_line(third.stderr)

    first.kill()  # SIGKILL: the lock dies with its holder
    first.communicate()
    done = run("dcnbio.train", [*TRAIN, "--out", out, "--resume"])
    assert done.returncode == 0, done.stderr
    assert_same_weights(out / "seed1" / "last.pt", reference_run / "last.pt")


def test_a_second_extraction_into_one_directory_is_refused(tmp_path, images_file):
    out = tmp_path / "traj"
    first = start("dcnbio.extract", extract_args(images_file, out))
    wait_for(lambda: (out / LOCK_NAME).exists() and (out / LOCK_NAME).read_text().strip(), first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = run("dcnbio.extract", extract_args(images_file, out))
        assert second.returncode == 2
        assert f"pid {first.pid}" in one_line(second.stderr)
    finally:
        first.send_signal(signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr


def test_an_analysis_output_directory_has_one_writer(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dcnbio.io import prepare_output_dir; "
                               f"prepare_output_dir({str(out)!r}); print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run([sys.executable, str(ROOT / "analyses" / "sigma_distribution.py"), "--out", str(out),
                               "--overwrite", "--checkpoint", str(SIGMA_JI), "--n-boot", "50"],
                              capture_output=True, text=True, env=ENV, timeout=600)
        assert done.returncode == 2
        assert f"pid {holder.pid}" in one_line(done.stderr)
    finally:
        holder.kill()
        holder.communicate()


# --- preemption ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_training_writes_last_pt_and_resume_is_bit_identical(tmp_path, reference_run, signum,
                                                                              status):
    out = tmp_path / "run"
    proc = start("dcnbio.train", [*TRAIN, "--out", out, "--save-every", "1000"])
    wait_for(lambda: (out / "seed1" / "init.pt").exists(), proc)
    time.sleep(0.3)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == status, stderr
    line = one_line(stderr)
    assert line.startswith(f"stopped by {signal.Signals(signum).name}") and "--resume" in line, line
    stopped = read_checkpoint(out / "seed1" / "last.pt")
    assert 0 < stopped["step"] < json.loads((reference_run / "final.json").read_text())["steps"]
    assert temporaries(out) == []
    done = run("dcnbio.train", [*TRAIN, "--out", out, "--save-every", "1000", "--resume"])
    assert done.returncode == 0, done.stderr
    assert_same_weights(out / "seed1" / "last.pt", reference_run / "last.pt")


def test_sigterm_during_extraction_leaves_only_complete_shards(tmp_path, images_file, reference_extraction):
    out = tmp_path / "traj"
    proc = start("dcnbio.extract", extract_args(images_file, out))
    wait_for(lambda: (out / "block1" / "shard-00000.nc").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert "run the same command again" in one_line(stderr)
    assert temporaries(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    shards = sorted(out.glob("block*/shard-*.nc"))
    assert 0 < len(shards) < 3 * 6 and not manifest["complete"]
    for shard in shards:
        open_results(shard).load()
    done = run("dcnbio.extract", extract_args(images_file, out))
    assert done.returncode == 0, done.stderr
    assert_same_results(out, reference_extraction)


# --- damaged models ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, value, word", [("block1.func.conv1.conv.scale.log2_scale", float("nan"), "NaN"),
                                               ("block2.func.conv2.conv.alpha.alpha", float("inf"), "infinity")])
def test_a_checkpoint_with_non_finite_weights_is_refused_naming_file_and_parameter(tmp_path, name, value, word):
    model, info = load_checkpoint(BUNDLED_ODE)
    with torch.no_grad():
        model.state_dict()[name].view(-1)[0] = value
    path = tmp_path / "damaged.pt"
    save_checkpoint(make_checkpoint(model, kind="last", train_config=info["train_config"]), path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and f"parameter {name} holds {word}" in message and "\n" not in message
    done = run("dcnbio.extract", ["--checkpoint", path, "--images", "8", "--out", tmp_path / "x"])
    assert done.returncode == 2 and f"parameter {name} holds {word}" in one_line(done.stderr)
