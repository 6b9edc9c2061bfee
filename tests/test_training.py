"""The training core: data splits, augmentation, checkpoints, exact resume, torchrun, bad input."""
import csv
import gzip
import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

import dcnbio
from dcnbio.train import data
from dcnbio.train.checkpoint import read_checkpoint
from dcnbio.io.atomic import FAULT_ENV
from dcnbio.errors import ConfigError, DataError
from dcnbio.train.config import TrainConfig, small_data_epoch_factor

FMNIST = data.DEBIAN_FASHION_MNIST
needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST),
                                  reason="Fashion-MNIST (Debian package dataset-fashion-mnist) not installed")

# A tiny but real run: 10 images per class, width 0.125, 5 steps per epoch.
TINY = ["--model", "dcn-ode", "--width", "0.125", "--dataset", "fashion-mnist", "--subset", "10",
        "--val-size", "50", "--batch-size", "20", "--eval-batch-size", "50", "--no-adjoint", "--no-test"]


def run_cli(args, env=None, **kw):
    env = dict(os.environ, **(env or {}))
    env.setdefault("OMP_NUM_THREADS", "1")  # identical thread counts keep CPU reductions bit-identical
    return subprocess.run([sys.executable, "-m", "dcnbio.train", *args], capture_output=True, text=True,
                          env=env, timeout=600, **kw)


def state_of(path):
    return read_checkpoint(path)["model_state"]


def assert_identical_states(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- data -----------------------------------------------------------------------------------------

def test_the_runs_index_reads_each_finished_seed_and_names_a_damaged_final_json(tmp_path):
    from dcnbio.errors import CheckpointError
    from dcnbio.train.cli import collect_runs

    for name, final in (("seed2", {"epochs": 3, "steps": 30}), ("seed10", {"epochs": 4, "steps": 40}),
                        ("seed3", None), ("other", {"epochs": 1})):
        (tmp_path / name).mkdir()
        if final is not None:
            (tmp_path / name / "final.json").write_text(json.dumps(final))
    rows = collect_runs(str(tmp_path))  # seed3 is unfinished (no final.json); "other" is not a seed directory
    assert rows == [{"epochs": 4, "steps": 40, "seed": 10, "dir": "seed10"},
                    {"epochs": 3, "steps": 30, "seed": 2, "dir": "seed2"}]
    (tmp_path / "seed2" / "final.json").write_text('{"epochs": 3, "ste')
    with pytest.raises(CheckpointError, match=r"seed2/final\.json is not readable JSON.*restore it"):
        collect_runs(str(tmp_path))


def test_stratified_choice_without_replacement_and_deterministic():
    labels = np.repeat(np.arange(4), [30, 20, 25, 40])
    a = data.stratified_choice(labels, 20, seed=3)
    b = data.stratified_choice(labels, 20, seed=3)
    c = data.stratified_choice(labels, 20, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) == len(a) == 80  # no repeats: drawn without replacement
    assert np.array_equal(np.bincount(labels[a]), [20] * 4)
    with pytest.raises(DataError, match="class 1 has 20 images"):
        data.stratified_choice(labels, 21, seed=0)


def test_small_data_epoch_factor_matches_appendix():
    # App. A.2: training set sizes 520, 1030, 5120 train for 10x, 5x, 2x the epochs.
    assert [small_data_epoch_factor(n) for n in (520, 1030, 5120, 50000)] == [10, 5, 2, 1]
    assert TrainConfig("dcn-ode", dataset="cifar10", subset=52).resolved().epochs == 1000
    cfg = TrainConfig("dcn-ode", dataset="cifar10", epochs=10)
    assert cfg.milestone_epochs() == [4, 7]  # 40 and 70 % of the epochs


@needs_fmnist
def test_fashion_mnist_splits_are_disjoint_stratified_and_match_idx_reader(tmp_path):
    train = data.load_dataset("fashion-mnist", "train", val_size=1000, subset=30, seed=1)
    val = data.load_dataset("fashion-mnist", "val", val_size=1000)
    test = data.load_dataset("fashion-mnist", "test")
    assert len(train) == 300 and len(val) == 1000 and len(test) == 10000
    assert not set(train.indices.tolist()) & set(val.indices.tolist())
    assert torch.equal(val.labels.bincount(), torch.full((10,), 100))
    # independent reader: torchvision's IDX parser on the decompressed test files
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(os.path.join(FMNIST, stem + ".gz")) as src:
            (tmp_path / stem).write_bytes(src.read())
    assert torch.equal(read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")), test.images[:, 0])
    assert torch.equal(read_label_file(str(tmp_path / "t10k-labels-idx1-ubyte")), test.labels)


def test_missing_fashion_mnist_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    with pytest.raises(DataError) as err:
        data.load_dataset("fashion-mnist", "test", root=str(tmp_path / "mine"), download=False)
    msg = str(err.value)
    assert str(tmp_path / "mine") in msg and str(tmp_path / "debian") in msg and "\n" not in msg


def test_cifar10_code_path_on_generated_batches(tmp_path, monkeypatch):
    """CIFAR-10 through torchvision's reader, on files we generate (never the network)."""
    import torchvision.datasets.cifar as tv_cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names, md5s = [], {}

    def dump(name, obj):
        raw = pickle.dumps(obj)
        (folder / name).write_bytes(raw)
        md5s[name] = hashlib.md5(raw).hexdigest()

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        dump(name, {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                    "labels": list(np.tile(np.arange(10), 2))})
        names.append(name)
    dump("batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    monkeypatch.setattr(tv_cifar.CIFAR10, "train_list", [[n, md5s[n]] for n in names[:5]])
    monkeypatch.setattr(tv_cifar.CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setattr(tv_cifar.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                                    "md5": md5s["batches.meta"]})
    train = data.load_dataset("cifar10", "train", root=str(tmp_path), val_size=20, download=False)
    test = data.load_dataset("cifar10", "test", root=str(tmp_path), download=False)
    assert len(train) == 80 and len(test) == 20 and train.images.shape[1:] == (3, 32, 32)
    x, y = test.batch([0])
    raw = pickle.loads((folder / "test_batch").read_bytes())["data"][0].reshape(3, 32, 32)
    mean, std = data.DATASETS["cifar10"].mean, data.DATASETS["cifar10"].std
    expect = (torch.tensor(raw).float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(x[0], expect)
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        data.load_dataset("cifar10", "test", root=str(tmp_path / "empty"), download=False)


def test_augment_is_a_shift_and_flip_of_the_zero_padded_image():
    x = torch.randn(64, 1, 6, 6, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    out = data.augment(x, g, max_shift=2)
    assert torch.equal(out, data.augment(x, torch.Generator().manual_seed(5), max_shift=2))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):  # every output is one of the 25 shifts, possibly flipped
        candidates = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in candidates)
    flipped = sum(not any(torch.equal(out[i], c) for c in
                          [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)])
                  for i in range(len(x)))
    assert 10 < flipped < 54  # about half are flipped (binomial(64, 0.5): 32 ± 4)


# --- the loop, checkpoints, resume ------------------------------------------------------------------

@needs_fmnist
def test_run_writes_self_describing_checkpoints(tmp_path):
    out = tmp_path / "run"
    res = run_cli([*TINY, "--epochs", "2", "--seeds", "1", "2", "--out", str(out)])
    assert res.returncode == 0, res.stderr
    for seed in (1, 2):
        d = out / f"seed{seed}"
        assert {p.name for p in d.iterdir()} >= {"config.json", "init.pt", "last.pt", "best.pt", "metrics.csv",
                                                  "final.json"}
        model, info = dcnbio.load_checkpoint(d / "last.pt")
        assert info["kind"] == "last" and info["epoch"] == 2 and info["step"] == 10
        assert info["train_config"]["seed"] == seed and info["model_config"]["name"] == "dcn-ode"
        assert len(info["data_hash"]) == 64 and len(info["metrics"]) == 2
        init, init_info = dcnbio.load_checkpoint(d / "init.pt")
        assert init_info["step"] == 0
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, init.state_dict()[k])]
        assert changed  # training moved the weights away from the initial state
        header = (d / "metrics.csv").read_text().splitlines()[0].split(",")
        assert {"train_loss", "val_acc", "nfe_forward_block1", "nfe_backward_block3", "epoch_seconds"} <= set(header)
    runs = json.loads((out / "runs.json").read_text())
    assert [r["seed"] for r in runs] == [1, 2]
    # different seeds draw different subsets
    assert read_checkpoint(out / "seed1/last.pt")["data_hash"] != read_checkpoint(out / "seed2/last.pt")["data_hash"]


@pytest.mark.parametrize("name", [m for m in dcnbio.list_models()
                                  if dcnbio.srf_layers(dcnbio.create_model(m, in_channels=1, width=0.25))])
def test_sigma_lr_scale_multiplies_the_step_of_exactly_the_scale_parameters(name):
    """--sigma-lr-scale (the σ control set): the σ group holds every parameter of every SRF layer's scale
    parametrization (log2 σ, per pair, or the coefficients of σ(t)) and nothing else, and one plain SGD step moves
    those by ``scale`` times the step of scale 1 and every other parameter by the same step."""
    from dcnbio.train.loop import param_groups

    torch.manual_seed(0)
    model = dcnbio.create_model(name, in_channels=1, width=0.25).double()
    by_id = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: [by_id[id(p)] for p in g["params"]] for g in param_groups(model, 0.1, 10.0)}
    expected = sorted(n for n in by_id.values() if ".scale." in n)  # the parametrization's own submodule
    assert expected and sorted(groups["sigma"]) == expected
    assert sorted(groups["sigma"] + groups["weights"]) == sorted(by_id.values())
    x, y = torch.randn(2, 1, 12, 12, dtype=torch.float64), torch.tensor([0, 1])
    steps = {}
    for scale in (1.0, 10.0):
        copy = dcnbio.create_model(name, in_channels=1, width=0.25).double()
        copy.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(param_groups(copy, 0.1, scale), lr=0.1, momentum=0.0)
        torch.nn.functional.cross_entropy(copy(x), y).backward()
        opt.step()
        steps[scale] = {n: (p.detach() - model.get_parameter(n).detach()) for n, p in copy.named_parameters()}
    moved = [n for n in expected if steps[1.0][n].abs().max() > 0]
    assert moved  # σ has a gradient, so the comparison below is not vacuous
    for n in by_id.values():
        factor = 10.0 if n in expected else 1.0
        torch.testing.assert_close(steps[10.0][n], factor * steps[1.0][n], rtol=1e-9, atol=1e-15)


@needs_fmnist
def test_sigkill_at_any_point_then_resume_is_bit_identical(tmp_path):
    args = [*TINY, "--epochs", "3", "--save-every", "2", "--seed", "7"]
    ref = run_cli([*args, "--out", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    reference = state_of(tmp_path / "ref/seed7/last.pt")

    # 1) killed mid-run, after a mid-epoch checkpoint exists
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dcnbio.train", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 300
    while not (out / "seed7/last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "seed7/last.pt").exists()
    resumed = run_cli([*args, "--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert_identical_states(state_of(out / "seed7/last.pt"), reference)

    # 2) killed *during* the second write of last.pt: the first last.pt survives intact under its name,
    #    the interrupted write exists only as a temporary, and the resumed run is still bit-identical
    out2 = tmp_path / "killed_in_write"
    first = run_cli([*args, "--out", str(out2)], env={FAULT_ENV: "kill-before-rename:last.pt:2"})
    assert first.returncode == -signal.SIGKILL
    survivor = read_checkpoint(out2 / "seed7/last.pt")
    assert survivor["step"] == 2  # the checkpoint of step 2; the write at step 4 never landed
    assert [p.name for p in (out2 / "seed7").iterdir() if p.name.startswith(".tmp-last.pt")]
    resumed2 = run_cli([*args, "--out", str(out2), "--resume"])
    assert resumed2.returncode == 0, resumed2.stderr
    assert_identical_states(state_of(out2 / "seed7/last.pt"), reference)
    assert not [p for p in (out2 / "seed7").iterdir() if p.name.startswith(".tmp-")]


@needs_fmnist
def test_a_fast_path_run_resumes_bit_identically(tmp_path):
    """A run trained with the recipe's speed options (``--integrator dcnbio --formulation auto``: entries that
    dcnbio.fast registers into the core's tables), killed during its second checkpoint write and resumed, ends
    with the weights of an uninterrupted run, which give the same logits."""
    args = [*TINY, "--epochs", "2", "--save-every", "2", "--seed", "5", "--integrator", "dcnbio",
            "--formulation", "auto"]
    ref = run_cli([*args, "--out", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "cut"
    first = run_cli([*args, "--out", str(out)], env={FAULT_ENV: "kill-before-rename:last.pt:2"})
    assert first.returncode == -signal.SIGKILL and read_checkpoint(out / "seed5/last.pt")["step"] == 2
    resumed = run_cli([*args, "--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert_identical_states(state_of(out / "seed5/last.pt"), state_of(tmp_path / "ref/seed5/last.pt"))
    a, info = dcnbio.load_checkpoint(out / "seed5/last.pt")
    b, _ = dcnbio.load_checkpoint(tmp_path / "ref/seed5/last.pt")
    assert info["model_config"]["integrator"] == "dcnbio" and info["model_config"]["formulation"] == "auto"
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def _torchrun(args, out, logs):
    """Run ``dcnbio.train`` under torchrun with 2 processes; each rank's stdout/stderr kept under ``logs``."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "--log-dir", str(logs), "--redirects", "3",
                          "-m", "dcnbio.train", *args, "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    ranks = "\n".join(f"--- {p.relative_to(logs)}:\n{p.read_text()[-1500:]}"
                       for p in sorted(logs.rglob("*.log")) if p.stat().st_size)
    return res, ranks


@needs_fmnist
def test_torchrun_two_processes_match_one_process(tmp_path):
    # A fixed-grid solver makes each image's computation independent of its batch mates, so 2 processes
    # with half batches must reproduce the single-process run up to float32 reduction order.
    args = [*TINY, "--epochs", "1", "--seed", "3", "--solver", "rk4", "--step-size", "0.5"]
    single = run_cli([*args, "--out", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr
    out = tmp_path / "two"
    multi, ranks = _torchrun(args, out, tmp_path / "logs")
    root = re.search(r"Root Cause.*?exitcode\s*:\s*(-?\d+)", multi.stderr, re.S)
    if multi.returncode != 0 and root and int(root.group(1)) < 0 and "Traceback" not in ranks:
        # A rank killed by a signal with no Python error of its own is the gloo TCP transport aborting
        # (seen once in CI on a loaded 2-core machine, not reproduced in 10 local runs); one fresh try, and
        # the first attempt's per-rank logs are kept in the warning so the abort stays on record.
        warnings.warn(f"torchrun rank killed by a signal, retrying once:\n{multi.stderr[-600:]}\n{ranks}")
        multi, ranks = _torchrun(args, tmp_path / "two-again", tmp_path / "logs-again")
        out = tmp_path / "two-again"
    assert multi.returncode == 0, f"{multi.stderr[-1500:]}\nper-rank logs:\n{ranks}"
    a, b = state_of(tmp_path / "one/seed3/last.pt"), state_of(out / "seed3/last.pt")
    for k in a:
        # 5 SGD steps from identical weights; gradients differ only by summation order (~1e-7 relative)
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k


# --- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--width", "0"], "width must be a number > 0"),
    (["--solver", "rk45"], "unknown ODE solver 'rk45'"),
    (["--subset", "0"], "subset must be at least 1"),
    (["--batch-size", "500"], "fewer than one batch"),
    (["--solver", "rk4", "--step-size", "-1"], "step_size must be a finite number > 0"),
    (["--atol", "0"], "rtol and atol must be > 0"),
])
def test_bad_arguments_fail_with_one_line(tmp_path, extra, message):
    res = run_cli([*TINY, "--epochs", "1", "--out", str(tmp_path / "x"), *extra])
    assert res.returncode == 2
    assert message in res.stderr and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


@needs_fmnist
def test_existing_output_and_resume_mismatch_are_refused_without_loss(tmp_path):
    out = tmp_path / "run"
    assert run_cli([*TINY, "--epochs", "1", "--seed", "1", "--out", str(out)]).returncode == 0
    digest = {p.name: p.read_bytes() for p in (out / "seed1").iterdir()}
    again = run_cli([*TINY, "--epochs", "1", "--seed", "1", "--out", str(out)])
    assert again.returncode == 2 and "not empty" in again.stderr and "--overwrite" in again.stderr
    mismatch = run_cli([*TINY, "--epochs", "1", "--seed", "1", "--lr", "0.05", "--out", str(out), "--resume"])
    assert mismatch.returncode == 2 and "differs from the checkpoint's in lr" in mismatch.stderr
    assert {p.name: p.read_bytes() for p in (out / "seed1").iterdir()} == digest  # nothing overwritten
    missing = run_cli([*TINY, "--epochs", "1", "--dataset", "cifar10", "--data-root", str(tmp_path / "nowhere"),
                       "--no-download", "--out", str(tmp_path / "y")])
    assert missing.returncode == 2 and "CIFAR-10 not found" in missing.stderr and "Traceback" not in missing.stderr


@needs_fmnist
def test_exploding_training_stops_naming_block_and_epoch(tmp_path):
    out = tmp_path / "boom"
    res = run_cli([*TINY, "--epochs", "2", "--seed", "1", "--lr", "1e8", "--out", str(out)])
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert line.count("\n") == 0 and "epoch 1" in line
    assert any(word in line for word in ("block", "σ", "parameter", "stem", "down", "head"))
    init = read_checkpoint(out / "seed1/init.pt")  # the last good checkpoint is intact
    assert init["kind"] == "init"
    assert not [p for p in (out / "seed1").iterdir() if p.name.startswith(".tmp-")]


def test_train_config_validates_itself():
    with pytest.raises(ConfigError, match="unknown model"):
        TrainConfig("nope")
    with pytest.raises(ConfigError, match="milestones"):
        TrainConfig("dcn-ode", milestones=(40, 70))
    cfg = TrainConfig("dcn-ode", dataset="fashion-mnist", width=0.25)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.model_config().in_channels == 1


TIMING_KEYS = {"epoch_seconds", "elapsed_seconds", "wall_seconds", "elapsed", "seconds"}


def without_timing(obj):
    """The checkpoint with every wall-clock field removed (the only legitimate difference between runs)."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, (list, tuple)):
        return [without_timing(v) for v in obj]
    return obj


def assert_same_tree(a, b, where="checkpoint"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@needs_fmnist
def test_same_command_and_seed_give_identical_files(tmp_path):
    args = [*TINY, "--epochs", "1", "--seed", "4"]
    for name in ("a", "b"):
        assert run_cli([*args, "--out", str(tmp_path / name)]).returncode == 0
    for f in ("init.pt", "last.pt", "best.pt"):
        assert_same_tree(without_timing(read_checkpoint(tmp_path / "a/seed4" / f)),
                         without_timing(read_checkpoint(tmp_path / "b/seed4" / f)), f)
    assert (tmp_path / "a/seed4/config.json").read_bytes() == (tmp_path / "b/seed4/config.json").read_bytes()


def test_output_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    res = run_cli([*TINY, "--epochs", "1", "--out", str(blocker / "run")])
    assert res.returncode == 2 and "cannot create output directory" in res.stderr
    assert res.stderr.count("\n") == 1 and blocker.read_text() == "not a directory"


@needs_fmnist
def test_integrator_option_reaches_the_model_and_trains_like_torchdiffeq(tmp_path):
    """--integrator dcnbio: the option is recorded, the first epoch takes torchdiffeq's steps (same forward NFE),
    and the weights end close to torchdiffeq's. They are not equal: torchdiffeq's direct gradient also carries
    the dependence of its first step size on the state, which dcnbio's (like the adjoint) omits; over the five
    SGD steps of this run that term is about 13 % of the update (measured), so the bound is loose but the
    direction of training must be the same."""
    runs = {}
    for integrator in ("torchdiffeq", "dcnbio"):
        out = tmp_path / integrator
        res = run_cli([*TINY, "--epochs", "1", "--seeds", "1", "--integrator", integrator, "--out", str(out)])
        assert res.returncode == 0, res.stderr
        runs[integrator] = dcnbio.load_checkpoint(out / "seed1/last.pt")
    (a, info_a), (b, info_b) = runs["torchdiffeq"], runs["dcnbio"]
    assert info_a["model_config"]["integrator"] == "torchdiffeq" and info_b["model_config"]["integrator"] == "dcnbio"
    assert info_a["metrics"][0]["nfe_forward_block1"] == info_b["metrics"][0]["nfe_forward_block1"]
    init, _ = dcnbio.load_checkpoint(tmp_path / "torchdiffeq/seed1/init.pt")
    flat = lambda m: torch.cat([v.flatten().double() for k, v in m.state_dict().items() if v.is_floating_point()])
    update_a, update_b = flat(a) - flat(init), flat(b) - flat(init)
    gap = float((update_b - update_a).norm() / update_a.norm())
    cosine = float(update_a @ update_b / (update_a.norm() * update_b.norm()))
    assert 1e-4 < gap < 0.3 and cosine > 0.95, (gap, cosine)


@needs_fmnist
def test_formulation_and_tune_options_reach_the_run(tmp_path):
    """--formulation is a model setting kept in the checkpoint; --tune is recorded in the configuration and the
    run measures its choices (it says how many). A run without --tune measures nothing: the configuration
    decides, so that it records what happened."""
    res = run_cli([*TINY, "--epochs", "1", "--seed", "2", "--formulation", "spectral", "--tune",
                   "--out", str(tmp_path / "tuned")])
    assert res.returncode == 0, res.stderr
    model, info = dcnbio.load_checkpoint(tmp_path / "tuned/seed2/last.pt")
    assert info["model_config"]["formulation"] == "spectral" and info["train_config"]["tune"] is True
    assert all(m.formulation == "spectral" for m in dcnbio.srf_layers(model).values())
    measured = [line for line in res.stdout.splitlines() if line.startswith("tuning:")]
    assert len(measured) == 1 and int(measured[0].split()[1]) > 0
    plain = run_cli([*TINY, "--epochs", "1", "--seed", "2", "--out", str(tmp_path / "plain")])
    assert plain.returncode == 0, plain.stderr
    assert "tuning:" not in plain.stdout
    _, info = dcnbio.load_checkpoint(tmp_path / "plain/seed2/last.pt")
    assert info["train_config"]["tune"] is False and info["model_config"]["formulation"] == "dense"
    bad = run_cli([*TINY, "--formulation", "fft", "--out", str(tmp_path / "bad")])
    assert bad.returncode == 2 and "invalid choice: 'fft'" in bad.stderr and not (tmp_path / "bad").exists()


@needs_fmnist
def test_plateau_schedule_drops_where_validation_stops_improving_and_resumes_identically(tmp_path):
    # --plateau-delta 0.9: no epoch can beat the first by 90 pp, so the plateau is measured after epoch 2
    # (patience 1): lr 0.1 for epochs 1-2, 0.01 for 3-4 (second drop after round(1.75·2) = 4), 0.001 for epoch 5.
    args = ["--model", "resnet-blocks", "--width", "0.25", "--dataset", "fashion-mnist", "--subset", "20",
            "--val-size", "100", "--batch-size", "32", "--epochs", "30", "--plateau-patience", "1",
            "--plateau-delta", "0.9", "--no-test", "--seeds", "1"]
    done = run_cli([*args, "--out", str(tmp_path / "ref")])
    assert done.returncode == 0, done.stderr
    assert "plateaued after epoch 2" in done.stdout
    final = json.loads((tmp_path / "ref/seed1/final.json").read_text())
    assert (final["plateau_epoch"], final["epochs"]) == (2, 5)
    with open(tmp_path / "ref/seed1/metrics.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-12)
    segment = final["segments"][0]
    assert (segment["start_step"], segment["end_step"]) == (0, final["steps"])
    assert segment["machine"]["threads"] == 1 and segment["machine"]["aten_capability"]

    # killed after epoch 3's checkpoint (past the decision), resumed: the same weights, and two segments
    killed = run_cli([*args, "--out", str(tmp_path / "cut")], env={FAULT_ENV: "kill-before-rename:metrics.csv:3"})
    assert killed.returncode == -signal.SIGKILL
    assert read_checkpoint(tmp_path / "cut/seed1/last.pt")["epoch"] == 3
    resumed = run_cli([*args, "--out", str(tmp_path / "cut"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert_identical_states(state_of(tmp_path / "cut/seed1/last.pt"), state_of(tmp_path / "ref/seed1/last.pt"))
    segments = json.loads((tmp_path / "cut/seed1/final.json").read_text())["segments"]
    assert [(s["start_step"], s["end_step"]) for s in segments] == [(0, 3 * 6), (3 * 6, 5 * 6)]


def test_plateau_rule_and_schedule_closed_forms():
    from dcnbio.train.config import plateau_reached, plateau_schedule

    assert not plateau_reached([0.5], 1, 0.0)  # nothing before the window
    assert plateau_reached([0.5, 0.5], 1, 0.0)  # no gain at all
    assert not plateau_reached([0.5, 0.51], 1, 0.005)
    assert plateau_reached([0.5, 0.504], 1, 0.005)
    assert not plateau_reached([0.7, 0.8, 0.84, 0.85, 0.843], 2, 0.005)  # epoch 4 still beat epoch 3 by 1 pp
    assert [plateau_schedule(p) for p in (1, 2, 4, 8)] == [([1, 2], 3), ([2, 4], 5), ([4, 7], 10), ([8, 14], 20)]
    from dcnbio.train.config import loss_plateau_reached

    assert loss_plateau_reached([1.0, 0.96], 1, 0.05)  # 0.04 nats lower: not 0.05
    assert not loss_plateau_reached([1.0, 0.94], 1, 0.05)
    assert loss_plateau_reached([0.05, 0.012, 0.011], 1, 0.02)  # near zero, halving is no longer progress
    assert not loss_plateau_reached([1.0], 1, 0.0)
    with pytest.raises(ConfigError, match="plateau_delta"):
        TrainConfig("dcn-ode", dataset="fashion-mnist", plateau_patience=2, plateau_delta=1.5)
    # windows of 2 epochs: means 0.8, 0.61, 0.6 — the last did not lower 0.61 by 0.02, but 2 windows of patience
    # still hold 0.61 itself, which lowered 0.8; the incomplete last window of 7 epochs waits
    losses = [0.9, 0.7, 0.6, 0.62, 0.59, 0.61]
    assert not loss_plateau_reached(losses, 2, 0.02, window=2)
    assert loss_plateau_reached(losses, 1, 0.02, window=2)
    assert loss_plateau_reached(losses + [5.0], 1, 0.02, window=2)
    assert loss_plateau_reached(losses, 2, 0.02, window=1) == loss_plateau_reached(losses, 2, 0.02)


def test_plateau_window_is_checked_counted_in_epochs_and_written_only_when_set():
    small = dict(dataset="fashion-mnist", subset=10, val_size=0, batch_size=32, plateau_patience=2)
    for steps, epochs in ((0, 1), (1, 1), (3, 1), (4, 2), (120, 40)):  # 100 images, batch 32: 3 steps an epoch
        assert TrainConfig("resnet-blocks", **small, plateau_window=steps).loss_window_epochs() == epochs
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="plateau_window is a whole number"):
            TrainConfig("resnet-blocks", **small, plateau_window=bad)
    with pytest.raises(ConfigError, match="--val-size 0 and --plateau-patience"):
        TrainConfig("resnet-blocks", **dict(small, val_size=100, subset=None), plateau_window=10)
    with pytest.raises(ConfigError, match="--val-size 0 and --plateau-patience"):
        TrainConfig("resnet-blocks", **dict(small, plateau_patience=0), plateau_window=10)
    # a run bundled before the field existed records no plateau_window; read back, it means 0, and a
    # configuration with 0 writes the same dict it was read from (so such a run resumes with the same record)
    plain = TrainConfig("resnet-blocks", **small)
    stored = plain.to_dict()
    assert "plateau_window" not in stored and TrainConfig.from_dict(stored) == plain
    assert TrainConfig.from_dict(stored).to_dict() == stored
    windowed = TrainConfig("resnet-blocks", **small, plateau_window=120)
    assert windowed.to_dict()["plateau_window"] == 120 and TrainConfig.from_dict(windowed.to_dict()) == windowed


def _end_of_schedule(config, values):
    """The loop's decision (dcnbio.train.loop._decide_plateau), epoch by epoch, written out again: the last epoch
    of a plateau-scheduled run whose epochs end with the metric ``values``; None if not decided by their end."""
    from dcnbio.train.config import loss_plateau_reached, plateau_reached, plateau_schedule

    cap = config.first_level_cap()
    for done in range(1, len(values) + 1):
        if config.val_size:
            reached = plateau_reached(values[:done], config.plateau_patience, config.plateau_delta)
        else:
            reached = loss_plateau_reached(values[:done], config.plateau_patience, config.plateau_delta,
                                           window=config.loss_window_epochs())
        if reached and done < cap:
            return plateau_schedule(done)[1]
        if done >= cap:
            return config.epochs
    return None


@pytest.mark.parametrize("kind", ["validation accuracy", "training loss in windows of 2 epochs"])
def test_steps_left_are_the_fewest_and_most_over_every_future_of_the_plateau_rule(kind):
    """From each point of a history at which the rule has not fired, every future up to the cap — each epoch a
    clear gain, a gain under the margin, no change or a collapse — run through the rule: the shortest and longest
    schedules they give are steps_left's bounds."""
    import itertools

    if kind == "validation accuracy":
        config = TrainConfig("dcn-ode", "fashion-mnist", val_size=1000, epochs=20, plateau_patience=2)
        history, key, sign = [0.60, 0.70, 0.75, 0.80, 0.803, 0.83], "val_acc", 1
    else:  # 100 images in batches of 20: 5 steps an epoch; a window of 10 steps is 2 epochs
        config = TrainConfig("dcn-ode", "fashion-mnist", subset=10, val_size=0, batch_size=20, epochs=20,
                             plateau_patience=1, plateau_delta=0.02, plateau_window=10)
        history, key, sign = [2.3, 2.1, 1.5, 1.4, 1.42, 1.41], "train_loss", -1
    cap, per_epoch, margin = config.first_level_cap(), config.steps_per_epoch(), config.plateau_delta
    steps = {"gain": 10 * margin, "small gain": margin / 2, "same": 0.0, "collapse": None}
    tested = 0
    for done in range(1, len(history) + 1):
        past = history[:done]
        if _end_of_schedule(config, past) is not None:
            continue  # decided: the loop has recorded its plateau
        ends = set()
        for future in itertools.product(steps.values(), repeat=cap - done):
            values = list(past)
            for gain in future:  # values made relative to the best so far, in the metric's direction
                best = max(values) if sign > 0 else min(values)
                values.append(-sign * 1e3 if gain is None else best + sign * gain)
            ends.add(_end_of_schedule(config, values))
        step = done * per_epoch + 3  # 3 steps into the next epoch
        fewest, most = config.steps_left([{key: v} for v in past], step, None, config.epochs)
        assert (fewest, most) == (min(ends) * per_epoch - step, max(ends) * per_epoch - step), done
        tested += 1
    assert tested >= 4 and cap == 8
    assert config.steps_left([{key: v} for v in history], 33, 4, 10) == (10 * per_epoch - 33,) * 2  # plateau known
    plain = TrainConfig("dcn-ode", "fashion-mnist", val_size=1000, epochs=20)  # no plateau rule: the fixed schedule
    assert plain.steps_left([], 100, None, 20) == (20 * plain.steps_per_epoch() - 100,) * 2


@needs_fmnist
def test_without_a_hold_out_the_plateau_is_measured_on_the_training_loss(tmp_path):
    # --plateau-delta 0.99: no early epoch of 10 images per class lowers the loss by ~1 nat (it sits near ln 10),
    # so the plateau is after epoch 2
    args = ["--model", "resnet-blocks", "--width", "0.25", "--dataset", "fashion-mnist", "--subset", "10",
            "--val-size", "0", "--batch-size", "20", "--epochs", "30", "--plateau-patience", "1",
            "--plateau-delta", "0.99", "--no-test", "--seeds", "1", "--out", str(tmp_path)]
    done = run_cli(args)
    assert done.returncode == 0, done.stderr
    assert "the training loss plateaued after epoch 2" in done.stdout
    final = json.loads((tmp_path / "seed1/final.json").read_text())
    assert (final["plateau_epoch"], final["epochs"]) == (2, 5)


@needs_fmnist
def test_a_plateau_window_averages_the_training_loss_over_steps(tmp_path):
    # 100 images in batches of 20: 5 steps an epoch, so --plateau-window 15 averages 3 epochs; with a 0.99-nat margin
    # the second window cannot beat the first, so the plateau comes when that window is complete: after epoch 6
    args = ["--model", "resnet-blocks", "--width", "0.25", "--dataset", "fashion-mnist", "--subset", "10",
            "--val-size", "0", "--batch-size", "20", "--epochs", "30", "--plateau-patience", "1",
            "--plateau-delta", "0.99", "--plateau-window", "15", "--no-test", "--seeds", "1", "--out", str(tmp_path)]
    done = run_cli(args)
    assert done.returncode == 0, done.stderr
    assert "the training loss plateaued after epoch 6" in done.stdout
    final = json.loads((tmp_path / "seed1/final.json").read_text())
    assert (final["plateau_epoch"], final["epochs"]) == (6, 15)
    with open(tmp_path / "seed1/metrics.csv") as f:
        losses = [float(row["train_loss"]) for row in csv.DictReader(f)]
    from dcnbio.train.config import loss_plateau_reached
    assert [loss_plateau_reached(losses[:k], 1, 0.99, window=3) for k in range(1, 7)] == [False] * 5 + [True]
