"""``dcnbio extract``: shards, manifest, resume, refusal of foreign directories, bad inputs, SIGKILL mid-run."""
import glob
import json
import re
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import xarray as xr

from dcnbio import create_model, load_checkpoint
from dcnbio.extract.trajectories import extract_trajectories
from dcnbio.train.checkpoint import make_checkpoint, save_checkpoint
from dcnbio.extract.cli import main
from dcnbio.io import TIMESTAMP_ATTR, assert_same_results, open_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    model = create_model("dcn-ode", in_channels=1, width=0.125)
    save_checkpoint(make_checkpoint(model, kind="init"), d / "ckpt.pt")
    g = torch.Generator().manual_seed(1)
    torch.save(torch.randn(8, 1, 28, 28, generator=g), d / "images.pt")
    return {"ckpt": str(d / "ckpt.pt"), "images": str(d / "images.pt"), "dir": d}


def run(files, out, *extra, images=4):
    argv = ["--checkpoint", files["ckpt"], "--images-file", files["images"], "--images", str(images),
            "--out", str(out), "--batch-size", "2", "--shard-size", "2", "--quiet", *extra]
    return main(argv)


def loaded(path):
    """The extraction at ``path`` read fully into memory (and its files closed)."""
    res = open_results(path)
    out = {name: ds.load() for name, ds in res.items()}
    for ds in res.values():
        ds.close()
    return out


def shard_mtimes(out):
    return {p: os.stat(p).st_mtime_ns for p in sorted(glob.glob(os.path.join(out, "block*", "shard-*.nc")))}


def test_extract_matches_in_memory(files, tmp_path):
    out = tmp_path / "out"
    assert run(files, out) == 0
    assert sorted(os.listdir(out)) == ["block1", "block2", "block3", "manifest.json"]
    for b in ("block1", "block2", "block3"):
        assert sorted(os.listdir(out / b)) == ["shard-00000.nc", "shard-00001.nc"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["completed_shards"] == [0, 1]
    assert manifest["command"]["times"] == [0.0, 0.5, 1.0, 1.5, 2.0]  # default: 5 points from 0 to T = 2
    assert manifest["command"]["compute"] == "fast"  # the default: the fastest exact path

    model, info = load_checkpoint(files["ckpt"], compute="fast")
    images = torch.load(files["images"], weights_only=True)[:4]
    ref = extract_trajectories(model, images, np.linspace(0, 2, 5), labels=[-1] * 4, batch_size=2)
    lazy = open_results(out)
    for name, ds in ref.items():
        assert lazy[name].h.chunks is not None  # opened with dask, one chunk per shard
        xr.testing.assert_equal(lazy[name].compute(), ds)  # values and coords
        assert ds.attrs.items() <= lazy[name].attrs.items()  # the block's attrs, plus provenance:
        assert lazy[name].attrs["checkpoint_sha256"] == info["sha256"]
        assert TIMESTAMP_ATTR in lazy[name].attrs
        np.testing.assert_array_equal(lazy[name].batch, [0, 0, 1, 1])  # global batch numbers across shards


def test_resume_recomputes_only_missing_shards(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(files, out) == 0
    before = loaded(out)
    mtimes = shard_mtimes(out)
    victim = str(out / "block2" / "shard-00001.nc")
    os.unlink(victim)
    stale = out / "block3" / ".tmp-shard-00001.nc-killed"  # what a killed run leaves behind
    stale.write_bytes(b"partial")
    time.sleep(0.05)  # so that a rewritten file would get a different mtime
    capsys.readouterr()
    assert main(["--checkpoint", files["ckpt"], "--images-file", files["images"], "--images", "4", "--out",
                 str(out), "--batch-size", "2", "--shard-size", "2"]) == 0
    assert "resumed" in capsys.readouterr().out
    after = shard_mtimes(out)
    assert sorted(after) == sorted(mtimes)
    changed = [p for p in after if after[p] != mtimes.get(p)]
    assert changed == [victim]
    assert not stale.exists()
    assert_same_results(loaded(out), before)


def test_refuses_foreign_directory(files, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert run(files, foreign) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err
    assert os.listdir(foreign) == ["notes.txt"]


def test_refuses_other_command_unless_overwrite(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(files, out) == 0
    capsys.readouterr()
    assert run(files, out, "--times", "0", "1", "--shard-size", "4") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different command" in err and "times" in err
    assert run(files, out, "--times", "0", "1", "--shard-size", "4", "--overwrite") == 0
    for b in ("block1", "block2", "block3"):
        assert os.listdir(out / b) == ["shard-00000.nc"]  # the old second shard is gone
    res = loaded(out)
    np.testing.assert_array_equal(res["block1"].time, [0.0, 1.0])
    assert res["block1"].sizes["image"] == 4


@pytest.fixture(scope="module")
def bad_files(files):
    d = files["dir"]
    good = torch.load(files["images"], weights_only=True)[:2]
    torch.save(good.repeat(1, 3, 1, 1), d / "rgb.pt")
    nan = good.clone()
    nan[1, 0, 3, 3] = float("inf")
    torch.save(nan, d / "inf.pt")
    torch.save({"weights": good}, d / "dict.pt")
    (d / "garbage.pt").write_bytes(b"not a torch file")
    return d


@pytest.mark.parametrize("args, match", [
    (["--images-file", "{d}/rgb.pt"], "3 channel"),
    (["--images-file", "{d}/inf.pt"], "non-finite"),
    (["--images-file", "{d}/dict.pt"], "'images'"),
    (["--images-file", "{d}/garbage.pt"], "cannot read images file"),
    (["--images-file", "{d}/missing.pt"], "no images file"),
    (["--images-file", "{d}/images.pt", "--times", "0", "1.5", "1"], "strictly increasing"),
    (["--images-file", "{d}/images.pt", "--times", "0", "2.5"], r"\[0, 2\]"),
    (["--images-file", "{d}/images.pt", "--times", "-1", "1"], r"\[0, 2\]"),
    (["--images-file", "{d}/images.pt", "--times", "zero"], "invalid float"),
    (["--images-file", "{d}/images.pt", "--images", "100"], "only 8"),
    (["--images-file", "{d}/images.pt", "--batch-size", "2", "--shard-size", "3"], "multiple"),
    (["--images-file", "{d}/images.pt", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["--images-file", "{d}/images.pt", "--shard-size", "0"], "argument --shard-size: must be an integer >= 1, got 0"),
    (["--images-file", "{d}/images.pt", "--blocks", "block9"], "invalid choice"),
    (["--images-file", "{d}/images.pt", "--dataset", "cifar10"], "not both"),
    (["--images-file", "{d}/images.pt", "--mask-size", "29", "--mask-fill", "mean"], "larger than the 28x28 image"),
    (["--images-file", "{d}/images.pt", "--mask-size", "-1", "--mask-fill", "mean"], "mask size must be >= 0"),
    (["--images-file", "{d}/images.pt", "--mask-size", "4"], "--mask-fill black needs the dataset's mean/std"),
])
def test_rejects_bad_input(files, bad_files, tmp_path, capsys, args, match):
    out = tmp_path / "out"
    argv = ["--checkpoint", files["ckpt"], "--out", str(out), "--quiet"] + [a.format(d=bad_files) for a in args]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert not out.exists()  # nothing is written before the inputs are known to be good


def test_dataset_source(files, tmp_path, monkeypatch):
    # the --dataset path, on a stand-in for Fashion-MNIST's test split (uint8 images, official indices, labels)
    import dcnbio.train.data as data

    g = torch.Generator().manual_seed(5)
    fake = data.ArrayDataset(torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=g),
                             torch.tensor([9, 2, 1, 1, 6]), torch.arange(5), data.dataset_info("fashion-mnist"))
    calls = []

    def load_dataset(name, split, root=None, **kw):
        calls.append((name, split, root, kw.get("download")))
        return fake

    monkeypatch.setattr(data, "load_dataset", load_dataset)
    out = tmp_path / "out"
    assert main(["--checkpoint", files["ckpt"], "--images", "4", "--split", "val", "--data-root", "/nowhere",
                 "--out", str(out), "--batch-size", "2", "--blocks", "block2", "--quiet"]) == 0
    assert calls == [("fashion-mnist", "val", "/nowhere", False)]  # default dataset; never downloads
    res = loaded(out)
    assert list(res) == ["block2"]
    np.testing.assert_array_equal(res["block2"].label, [9, 2, 1, 1])
    np.testing.assert_array_equal(res["block2"].image, [0, 1, 2, 3])
    model, _ = load_checkpoint(files["ckpt"], compute="fast")
    images, _ = fake.batch(torch.arange(4))
    ref = extract_trajectories(model, images, np.linspace(0, 2, 5), blocks=["block2"], batch_size=2)
    np.testing.assert_array_equal(res["block2"].h.values, ref["block2"].h.values)
    assert json.loads(res["block2"].attrs["source"])["split"] == "val"


def test_recorded_compute_path_is_the_checkpoint_s_and_agrees_with_the_fast_one(files, tmp_path):
    """``--compute recorded`` extracts with the checkpoint's torchdiffeq and dense formulation (bit for bit the
    in-memory extraction on that path), the default with the fastest exact one: the same h(t) to rounding and the
    same NFE; the provenance says which; a resume with the other path is refused (its shards would mix)."""
    assert run(files, tmp_path / "rec", "--compute", "recorded") == 0
    assert run(files, tmp_path / "fast") == 0
    rec, fast = loaded(tmp_path / "rec"), loaded(tmp_path / "fast")
    model, _ = load_checkpoint(files["ckpt"])
    images = torch.load(files["images"], weights_only=True)[:4]
    ref = extract_trajectories(model, images, np.linspace(0, 2, 5), labels=[-1] * 4, batch_size=2)
    for name in ref:
        np.testing.assert_array_equal(rec[name].h.values, ref[name].h.values)
        scale = float(np.abs(rec[name].h.values).max())  # float32 rounding, carried through adaptive solves
        assert float(np.abs(fast[name].h.values - rec[name].h.values).max()) <= 1e-4 * scale
        np.testing.assert_array_equal(fast[name].nfe.values, rec[name].nfe.values)
        assert json.loads(rec[name].attrs["model_config"])["integrator"] == "torchdiffeq"
        assert json.loads(fast[name].attrs["model_config"])["integrator"] == "dcnbio"
    before = shard_mtimes(tmp_path / "rec")
    assert run(files, tmp_path / "rec") == 2  # same --out, another path: refused, nothing removed
    assert shard_mtimes(tmp_path / "rec") == before and len(before) == 6


def test_bad_checkpoint(files, tmp_path, capsys):
    capsys.readouterr()
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--images-file", files["images"],
                 "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoint file" in capsys.readouterr().err


def kill_test_args(files, out):
    return ["--checkpoint", files["ckpt"], "--images-file", files["images"], "--out", str(out), "--batch-size", "1",
            "--shard-size", "1", "--blocks", "block1", "block3", "--times", "0", "1", "2", "--quiet"]


def extract_process(files, out):
    # one intra-op thread, like this test process (conftest): the same arithmetic in both
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "dcnbio.extract", *kill_test_args(files, out)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_leaves_no_partial_file_and_resume_is_exact(files, tmp_path):
    # issue #7 fault injection: 8 one-image shards; kill the process as soon as the first shard file exists.
    out = tmp_path / "killed"
    proc = extract_process(files, out)
    deadline = time.monotonic() + 300
    while not glob.glob(str(out / "block*" / "shard-*.nc")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"]
    for d, _, names in os.walk(out):
        for name in names:
            path = os.path.join(d, name)
            if name.startswith(".tmp-") or name == ".dcnbio.lock":
                continue  # a temporary name, recognisable as unfinished; the dead process's (released) lock
            assert name == "manifest.json" or (name.startswith("shard-") and name.endswith(".nc")), path
            if name.endswith(".nc"):
                with open_results(path) as ds:  # every file under a final name is complete
                    assert ds.sizes["image"] == 1 and np.isfinite(ds.h.values).all()
    resumed = extract_process(files, out)
    assert resumed.wait(timeout=300) == 0, resumed.communicate()
    assert not glob.glob(str(out / "**" / ".tmp-*"), recursive=True)

    whole = tmp_path / "uninterrupted"
    assert torch.get_num_threads() == 1
    assert main(kill_test_args(files, whole)) == 0
    a, b = loaded(out), loaded(whole)
    assert sorted(a) == ["block1", "block3"] and a["block1"].sizes["image"] == 8
    assert_same_results(a, b)  # identical except for the creation time


# --- masked extraction and D(t) over shards (the README's dask.distributed example) ---------------------------------

def test_mask_size_zero_gives_identical_states_and_zero_D(files, tmp_path):
    from dcnbio.extract.completion import compute_differences

    assert run(files, tmp_path / "intact") == 0
    assert run(files, tmp_path / "m0", "--mask-size", "0", "--mask-fill", "mean") == 0
    a, b = open_results(tmp_path / "intact"), open_results(tmp_path / "m0")
    D = compute_differences(a["block1"].h, b["block1"].h)
    assert D.chunks is not None  # lazy: dask-backed until computed
    assert float(abs(D.sel(normalizer="per_element")).max().compute()) == 0.0
    manifest = json.loads((tmp_path / "m0" / "manifest.json").read_text())
    assert manifest["command"]["mask"] == {"size": 0, "fill": "mean", "value": [0.0]}


def test_masked_extraction_equals_masking_in_memory(files, tmp_path):
    from dcnbio.extract.completion import apply_center_mask

    assert run(files, tmp_path / "m6", "--mask-size", "6", "--mask-fill", "mean") == 0
    model, _ = load_checkpoint(files["ckpt"], compute="fast")
    images = torch.load(files["images"])[:4]
    masked = apply_center_mask(images, 6, 0.0)
    assert float(masked[:, :, 11:17, 11:17].abs().max()) == 0.0  # rows/columns (28 - 6)//2 = 11 … 16
    window = torch.zeros(28, 28, dtype=torch.bool)
    window[11:17, 11:17] = True
    assert torch.equal((masked != images).any(dim=0).any(dim=0), window)  # random images: nonzero everywhere
    got = loaded(tmp_path / "m6")
    for start in (0, 2):  # the CLI solves batches of 2 images
        ref = extract_trajectories(model, masked[start:start + 2], got["block1"].time.values, batch_size=2)
        np.testing.assert_array_equal(got["block1"].h.values[start:start + 2], ref["block1"].h.values)


def test_lazy_D_on_a_local_cluster_equals_eager(files, tmp_path):
    """dask.distributed LocalCluster over sharded extractions gives the same D(t) as the in-memory computation."""
    from dask.distributed import Client, LocalCluster

    from dcnbio.extract.completion import _differences, compute_differences

    assert run(files, tmp_path / "intact") == 0
    assert run(files, tmp_path / "m8", "--mask-size", "8", "--mask-fill", "mean") == 0
    intact, masked = open_results(tmp_path / "intact"), open_results(tmp_path / "m8")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster):
        lazy = {b: compute_differences(intact[b].h, masked[b].h) for b in ("block1", "block3")}
        got = {b: d.compute() for b, d in lazy.items()}
    for b in ("block1", "block3"):
        a, m = loaded(tmp_path / "intact")[b].h.values, loaded(tmp_path / "m8")[b].h.values
        np.testing.assert_allclose(got[b].values, _differences(a, m), rtol=1e-12, atol=0)
        assert list(got[b].normalizer.values) == ["amplitude_t", "amplitude_0", "per_element"]
        assert float(got[b].sel(normalizer="per_element").min()) > 0  # the masks change every image's states
