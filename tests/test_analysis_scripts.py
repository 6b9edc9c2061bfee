"""The analysis scripts end to end on tiny checkpoints and real Fashion-MNIST test images, and their one-line errors."""
import importlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dcnbio import create_model
from dcnbio.extract.completion import mask_fill
from dcnbio.train.checkpoint import make_checkpoint, save_checkpoint
from dcnbio.train.data import DATASETS, load_dataset
from dcnbio.reports.completion_report import run_values
from dcnbio.reports.contrast_report import run_values as contrast_run_values
from dcnbio.io import open_results
from helpers import load_analysis

SCRIPTS = Path(__file__).resolve().parents[1] / "analyses"
N = 4  # images per run: enough for batches of 2 and a non-trivial accuracy


@pytest.fixture(scope="module")
def scripts():
    return {n: load_analysis(n) for n in ("pattern_completion", "contrast", "solver_audit", "meta_parametrization")}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Tiny checkpoints, each in its own seed directory (meta-parametrized one with an init.pt beside it)."""
    root = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for k, name in enumerate(("dcn-ode", "odenet", "resnet-blocks", "dcn-sigma-alpha-t")):
        torch.manual_seed(10 + k)
        model = create_model(name, in_channels=1, width=0.125)
        d = root / name / "seed1"
        d.mkdir(parents=True)
        config = {"dataset": "fashion-mnist", "seed": 1}
        if name == "dcn-sigma-alpha-t":
            save_checkpoint(make_checkpoint(model, kind="init", train_config=config), d / "init.pt")
            with torch.no_grad():  # a deterministic stand-in for training: every σ slope grows
                for layer in model.modules():
                    if hasattr(layer, "scale") and hasattr(layer.scale, "a"):
                        layer.scale.a.add_(0.5)
        save_checkpoint(make_checkpoint(model, kind="last", train_config=config, epoch=1), d / "last.pt")
        paths[name] = str(d / "last.pt")
    nodata = root / "nodata.pt"
    save_checkpoint(make_checkpoint(create_model("dcn-ode", in_channels=1, width=0.125), kind="last"), nodata)
    paths["nodata"] = str(nodata)
    return paths


@pytest.fixture(scope="module")
def fmnist():
    data = load_dataset("fashion-mnist", "test", download=False)
    return data.batch(np.arange(N))


def run(script, argv, capsys):
    rc = script.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def accuracy_of(path, images, labels, batch_size=2):
    """Accuracy from plain forward passes over the same batches the scripts use (NFE and states are per batch)."""
    from dcnbio import load_checkpoint

    model, _ = load_checkpoint(path)
    with torch.no_grad():
        pred = torch.cat([model(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    return float((pred == labels).float().mean())


# --- end to end -------------------------------------------------------------------------------------------------------

def test_pattern_completion(scripts, ckpts, fmnist, tmp_path, capsys):
    out = tmp_path / "pc"
    rc, printed, err = run(scripts["pattern_completion"], ["--checkpoint", ckpts["dcn-ode"], ckpts["resnet-blocks"],
                                                           "--n-images", N, "--batch-size", 2, "--masks", 0, 6,
                                                           "--example-mask", 6, "--n-times", 3, "--out", out], capsys)
    assert rc == 0, err
    for f in ("completion.nc", "completion_D.png", "masked_accuracy.png", "examples_dcn-ode-seed1.png",
              "examples_resnet-blocks-seed1.png", "report.md", "report.tex"):
        assert (out / f).stat().st_size > 0, f
    results = {k: v.load() for k, v in open_results(out / "completion.nc").items()}
    assert set(results) == {"dcn-ode-seed1", "resnet-blocks-seed1"}
    images, labels = fmnist
    for label, name in (("dcn-ode-seed1", "dcn-ode"), ("resnet-blocks-seed1", "resnet-blocks")):
        ds = results[label]
        assert float(np.abs(ds["D"].sel(mask=0)).max()) == 0.0
        assert list(ds["image"].values) == list(range(N))  # official test indices
        # accuracy from the block-3 state at T equals plain forward passes on the same batches
        assert float(ds["accuracy_intact"]) == accuracy_of(ckpts[name], images, labels)
    info = DATASETS["fashion-mnist"]
    assert np.allclose(float(results["dcn-ode-seed1"].attrs["fill"].strip("[]")), -info.mean[0] / info.std[0])
    assert mask_fill(info, "mean") == [0.0]
    assert list(results["dcn-ode-seed1"]["time"].values) == [0.0, 1.0, 2.0]
    values = run_values(results, 6)  # one value per run, pooled by model
    d = results["dcn-ode-seed1"]["D_mean"].sel(mask=6, block="block1", normalizer="amplitude_0").values
    assert values["block1 D(end)/D(0), amplitude_0"][("dcn-ode", "dcn-ode-seed1")] == pytest.approx(d[-1] / d[0])
    assert values["accuracy n=6 (%)"][("resnet-blocks", "resnet-blocks-seed1")] == pytest.approx(
        100 * float(results["resnet-blocks-seed1"]["accuracy"].sel(mask=6)))
    report = (out / "report.md").read_text()
    assert "Accuracy (%) against mask size n" in report and "| dcn-ode-seed1 / block1 |" in report
    assert "## Across training runs" in report and "| dcn-ode | 1 |" in report
    assert "\\begin{tabular}" in (out / "report.tex").read_text()
    assert "dcn-ode-seed1: accuracy intact" in printed and "wrote completion.nc" in printed


def test_compute_path_changes_the_provenance_not_the_results(scripts, ckpts, tmp_path, capsys):
    """``--compute fast`` (the default: dcnbio's dopri5, the ``auto`` formulation) and ``--compute recorded`` (the
    checkpoint's torchdiffeq and dense): the same D(t), NFE and accuracies to float32 rounding; the provenance
    names the path that computed them."""
    found = {}
    for compute in ("fast", "recorded"):
        out = tmp_path / compute
        argv = ["--checkpoint", ckpts["dcn-ode"], "--n-images", N, "--batch-size", 2, "--masks", 0, 6,
                "--example-mask", 6, "--n-times", 3, "--out", out] + (["--compute", compute] if compute != "fast"
                                                                      else [])
        rc, _, err = run(scripts["pattern_completion"], argv, capsys)
        assert rc == 0, err
        found[compute] = open_results(out / "completion.nc")["dcn-ode-seed1"].load()
    fast, recorded = found["fast"], found["recorded"]
    assert json.loads(fast.attrs["model_config"])["integrator"] == "dcnbio"
    assert json.loads(fast.attrs["model_config"])["formulation"] == "auto"
    assert json.loads(recorded.attrs["model_config"])["integrator"] == "torchdiffeq"
    assert json.loads(recorded.attrs["model_config"])["formulation"] == "dense"
    assert fast.attrs["checkpoint_sha256"] == recorded.attrs["checkpoint_sha256"]
    for name in ("D", "accuracy"):
        np.testing.assert_allclose(fast[name].values, recorded[name].values, rtol=1e-4, atol=1e-6)
    for name in ("nfe_intact", "nfe_masked"):
        np.testing.assert_array_equal(fast[name].values, recorded[name].values)


def test_contrast(scripts, ckpts, fmnist, tmp_path, capsys):
    out = tmp_path / "ct"
    rc, printed, err = run(scripts["contrast"], ["--checkpoint", ckpts["dcn-ode"], ckpts["odenet"], "--n-images", N,
                                                 "--batch-size", 2, "--contrast", 0.25, 1, "--conditions", "naive",
                                                 "all-blocks", "--n-check", 2, "--out", out], capsys)
    assert rc == 0, err
    for f in ("contrast.nc", "contrast.png", "report.md", "report.tex"):
        assert (out / f).stat().st_size > 0, f
    results = {k: v.load() for k, v in open_results(out / "contrast.nc").items()}
    images, labels = fmnist
    for label, name in (("dcn-ode-seed1", "dcn-ode"), ("odenet-seed1", "odenet")):
        ds = results[label]
        assert list(ds["contrast"].values) == [1.0, 0.25] and list(ds["condition"].values) == ["naive", "all-blocks"]
        assert float(ds["accuracy"].sel(condition="naive", contrast=1.0)) == ds.attrs["accuracy_unchanged"]
        assert ds.attrs["accuracy_unchanged"] == accuracy_of(ckpts[name], images, labels)
        assert ds["identity_error"].dims == ("contrast", "block")
        assert float(ds["identity_error"].sel(contrast=1.0).max()) == 0.0
    report = (out / "report.md").read_text()
    assert "The paper's claim" in report and "identity_error" in report and "heuristic" in report
    values = contrast_run_values(results)  # one value per run: NFE ratio to c = 1, accuracy change
    nfe = results["odenet-seed1"]["nfe_total"].sel(condition="all-blocks")
    assert values[("NFE ratio", "all-blocks", 0.25)][("odenet", "odenet-seed1")] == pytest.approx(
        float(nfe.sel(contrast=0.25)) / float(nfe.sel(contrast=1.0)))
    ds = results["dcn-ode-seed1"]
    assert values[("accuracy change (pp)", "naive", 0.25)][("dcn-ode", "dcn-ode-seed1")] == pytest.approx(
        100 * (float(ds["accuracy"].sel(condition="naive", contrast=0.25)) - ds.attrs["accuracy_unchanged"]))
    assert "## Across training runs" in report and "| all-blocks / odenet | NFE ratio | 0.25 | 1 |" in report
    assert "dcn-ode-seed1: c=1" in printed and "at c=0.25: naive" in printed


def test_solver_audit(scripts, ckpts, tmp_path, capsys):
    out = tmp_path / "sa"
    rc, printed, err = run(scripts["solver_audit"], ["--checkpoint", ckpts["odenet"], "--n-images", N,
                                                     "--batch-size", 2, "--tolerances", 1e-3, 1e-4, "--rk4-steps", 2,
                                                     "--euler-steps",
                                                     "--out", out], capsys)
    assert rc == 0, err
    for f in ("solver_audit.nc", "solver_audit.png", "report.md", "report.tex"):
        assert (out / f).stat().st_size > 0, f
    ds = open_results(out / "solver_audit.nc")["odenet-seed1"].load()
    assert list(ds["setting"].values) == ["own: dopri5 rtol=0.001 atol=0.001", "dopri5 tol=0.001", "dopri5 tol=0.0001",
                                          "rk4 2 steps"]
    np.testing.assert_array_equal(ds["nfe_mean"].sel(setting="rk4 2 steps").values, [8.0, 8.0, 8.0])
    assert ds.attrs["solver_independent"] in (0, 1)
    assert "Solver independence at a threshold of 1 pp" in (out / "report.md").read_text()
    assert "odenet-seed1: own" in printed and "solver-independent" in printed


def test_meta_parametrization(scripts, ckpts, fmnist, tmp_path, capsys):
    out = tmp_path / "meta"
    rc, printed, err = run(scripts["meta_parametrization"], ["--checkpoint", ckpts["dcn-sigma-alpha-t"],
                                                             "--n-images", N, "--batch-size", 2, "--n-times", 5,
                                                             "--out", out], capsys)
    assert rc == 0, err
    for f in ("meta.nc", "meta_curves.png", "report.md", "report.tex"):
        assert (out / f).stat().st_size > 0, f
    groups = {k: v.load() for k, v in open_results(out / "meta.nc").items()}
    assert set(groups) == {"dcn-sigma-alpha-t-seed1", "dcn-sigma-alpha-t-seed1-init"}
    trained, init = groups["dcn-sigma-alpha-t-seed1"], groups["dcn-sigma-alpha-t-seed1-init"]
    # the stand-in training added 0.5 to every slope a: log2 σ(T) − log2 σ(0) grows by 0.5 · (t'(2) − t'(0)) = 0.5
    change = lambda ds: (ds["log2_sigma"].isel(time=-1) - ds["log2_sigma"].isel(time=0)).values  # noqa: E731
    np.testing.assert_allclose(change(trained) - change(init), 0.5, rtol=1e-5)  # tolerance: float32 storage
    images, labels = fmnist
    assert trained.attrs["accuracy"] == accuracy_of(ckpts["dcn-sigma-alpha-t"], images, labels)
    report = (out / "report.md").read_text()
    assert "Mean RMS α per derivative order" in report and "89.88 ± 0.25" in report
    assert "log2 σ(T)/σ(0) per layer" in printed


def test_default_checkpoints(scripts, ckpts, tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    target = repo / "data" / "checkpoints" / "odenet" / "seed1"
    target.mkdir(parents=True)
    shutil.copy(ckpts["odenet"], target / "last.pt")
    (target / "final.json").write_text("{}")
    unfinished = repo / "data" / "checkpoints" / "odenet" / "seed2"  # a run still training: no final.json
    unfinished.mkdir()
    shutil.copy(ckpts["odenet"], unfinished / "last.pt")
    script = scripts["contrast"]
    monkeypatch.setattr(script, "REPO", repo)
    out = tmp_path / "ct"
    rc, printed, err = run(script, ["--n-images", 2, "--batch-size", 2, "--contrast", 1, 0.5, "--conditions",
                                    "naive", "--n-check", 0, "--out", out], capsys)
    assert rc == 0, err
    assert set(open_results(out / "contrast.nc")) == {"odenet-seed1"}
    report = (out / "report.md").read_text()
    assert "not found (skipped): `data/checkpoints/dcn-ode/seed*/last.pt`" in report
    assert "`data/checkpoints/odenet/seed2/last.pt (unfinished run: no final.json)`" in report


def test_a_bundle_whose_runs_are_all_still_training_is_named_with_its_trainer(scripts, ckpts, tmp_path,
                                                                               monkeypatch, capsys):
    repo = tmp_path / "repo"
    training = repo / "data" / "checkpoints" / "full" / "odenet" / "seed2"  # last.pt, no final.json
    training.mkdir(parents=True)
    shutil.copy(ckpts["odenet"], training / "last.pt")
    script = scripts["contrast"]
    monkeypatch.setattr(script, "REPO", repo)
    out = tmp_path / "ct"
    rc, _, err = run(script, ["--bundle", "full", "--n-images", 2, "--out", out], capsys)
    assert rc == 2 and err.strip().count("\n") == 0, err
    assert "no finished bundled checkpoints for the contrast analysis" in err
    assert "still training, no final.json: data/checkpoints/full/odenet/seed2/last.pt" in err
    assert "make them with `bash data/checkpoints/retrain.sh`" in err and not out.exists()


BUNDLED = SCRIPTS.parent / "data" / "checkpoints"


def bundled_labels(models):
    """``<model>-seed<S>`` of the finished bundled runs of ``models`` (what a default run must analyse)."""
    return {f"{m}-{d.parent.name}" for m in models for d in BUNDLED.glob(f"{m}/seed*/final.json")}


@pytest.mark.parametrize("name, models, result, extra", [
    ("pattern_completion", ("dcn-ode", "dcn-sigma-ji", "odenet", "resnet-blocks"), "completion.nc", []),
    ("contrast", ("dcn-ode", "dcn-sigma-ji", "odenet"), "contrast.nc", []),
    ("solver_audit", ("dcn-ode", "dcn-sigma-ji", "odenet"), "solver_audit.nc", []),
    ("meta_parametrization", ("dcn-sigma-t", "dcn-sigma-t2", "dcn-sigma-alpha-t"), "meta.nc", []),
])
def test_default_run_on_the_bundled_checkpoints(scripts, name, models, result, extra, tmp_path, capsys):
    """Each script without --checkpoint: every finished bundled run of its models, all its default settings, small N."""
    out = tmp_path / name
    rc, printed, err = run(scripts[name], ["--n-images", 2, "--out", out] + extra, capsys)
    assert rc == 0, err
    expected = bundled_labels(models)
    assert len(expected) >= len(models)  # at least one seed of each model is bundled
    groups = set(open_results(out / result))
    assert {g for g in groups if not g.endswith("-init")} == expected
    assert (out / "report.md").stat().st_size > 0 and (out / "report.tex").stat().st_size > 0
    if name == "solver_audit":  # 2 images: one changed prediction is 50 pp, so the report says the verdict is a screen
        assert "With 2 images one image is 50 pp" in (out / "report.md").read_text()
    if name == "pattern_completion":  # seeds pooled per model: one row per model with its number of runs
        report = (out / "report.md").read_text()
        assert "## Across training runs" in report
        for m in models:
            assert f"| {m} | {sum(label.startswith(m + '-seed') for label in expected)} |" in report


# --- errors -----------------------------------------------------------------------------------------------------------

def assert_one_line_error(rc, err, match):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err


@pytest.mark.parametrize("name", ["pattern_completion", "contrast", "solver_audit", "meta_parametrization"])
def test_no_bundled_checkpoints(scripts, name, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scripts[name], "REPO", tmp_path)
    rc, _, err = run(scripts[name], ["--out", tmp_path / "out"], capsys)
    assert_one_line_error(rc, err, "pass --checkpoint PATH")
    if name == "meta_parametrization":
        assert "dcnbio train --model dcn-sigma-t" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,argv,match", [
    ("contrast", ["--checkpoint", "dcn-ode", "--contrast", 1, 0], "contrast must be > 0"),
    ("contrast", ["--checkpoint", "dcn-ode", "--contrast", -0.5], "contrast must be > 0"),
    ("contrast", ["--checkpoint", "dcn-ode", "--contrast", "x"], "invalid float value"),
    ("contrast", ["--checkpoint", "resnet-blocks"], "without ODE blocks"),
    ("solver_audit", ["--checkpoint", "resnet-blocks"], "without ODE blocks"),
    ("solver_audit", ["--checkpoint", "odenet", "--threshold", 2], "--threshold"),
    ("pattern_completion", ["--checkpoint", "dcn-ode", "--masks", 4, 29, "--example-mask", 4],
     "larger than the 28x28 image"),
    ("pattern_completion", ["--checkpoint", "dcn-ode", "--masks", 4, 8], "--example-mask 6"),
    ("pattern_completion", ["--checkpoint", "nodata"], "does not record its training dataset"),
    ("meta_parametrization", ["--checkpoint", "dcn-ode"], "is not meta-parametrized"),
    ("meta_parametrization", ["--checkpoint", "missing"], "no checkpoint file"),
    ("solver_audit", ["--checkpoint", "odenet", "--n-images", 0], "--n-images"),
])
def test_bad_inputs_exit_2_with_one_line(scripts, ckpts, tmp_path, capsys, name, argv, match):
    argv = [ckpts.get(a, str(tmp_path / "missing.pt")) if a in ckpts or a == "missing" else a for a in argv]
    rc, _, err = run(scripts[name], argv + ["--out", tmp_path / "out"], capsys)
    assert_one_line_error(rc, err, match)
    assert not (tmp_path / "out").exists()  # nothing written for a rejected input


@pytest.mark.parametrize("name,argv,match", [
    ("physiology", ["--n-times", 0], "--n-times: must be an integer >= 1, got 0"),
    ("physiology", ["--sf-per-shard", 0], "--sf-per-shard: must be an integer >= 1, got 0"),
    ("physiology", ["--batch-size", 0], "--batch-size: must be an integer >= 1, got 0"),
    ("physiology", ["--n-sf", 2], "--n-sf: must be an integer >= 3, got 2"),
    ("sigma_distribution", ["--seed", -1], "--seed: must be an integer >= 0, got -1"),
    ("sigma_distribution", ["--n-boot", 0], "--n-boot: must be an integer >= 1, got 0"),
    ("meta_parametrization", ["--n-times", 1], "--n-times: must be an integer >= 2, got 1"),
    ("contrast", ["--n-check", -1], "--n-check: must be an integer >= 0, got -1"),
    ("contrast", ["--batch-size", "2.5"], "--batch-size: must be an integer >= 1, got '2.5'"),
    ("solver_audit", ["--rk4-steps", 4, 0], "--rk4-steps: must be an integer >= 1, got 0"),
    ("pattern_completion", ["--n-times", 1], "--n-times: must be an integer >= 2, got 1"),
    ("pattern_completion", ["--masks", -2], "--masks: must be an integer >= 0, got -2"),
    ("small_data", ["--n-images", 0], "--n-images: must be an integer >= 1, got 0"),
    ("reconstruction", ["--eval-batch-size", 0], "--eval-batch-size: must be an integer >= 1, got 0"),
])
def test_counts_are_checked_before_anything_is_loaded_or_written(tmp_path, capsys, name, argv, match):
    """A bad count is a usage error of the parser: one line, exit 2, no output directory (physiology used to
    write params.json and responses/ before its solver rejected --n-times 0 or --batch-size 0, and
    sigma_distribution wrote sigma.nc before the bootstrap rejected --seed -1 with a traceback)."""
    rc, _, err = run(load_analysis(name), argv + ["--out", tmp_path / "out"], capsys)
    assert_one_line_error(rc, err, "argument " + match)
    assert not (tmp_path / "out").exists()


def test_existing_output_directory_needs_overwrite(scripts, ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.txt").write_text("keep")
    rc, _, err = run(scripts["meta_parametrization"], ["--checkpoint", ckpts["dcn-sigma-alpha-t"], "--out", out],
                     capsys)
    assert_one_line_error(rc, err, "--overwrite")
    assert [f.name for f in out.iterdir()] == ["other.txt"] and (out / "other.txt").read_text() == "keep"


# --- the meta-parametrization library (only the script uses it) ----------------------------------------------------

def test_meta_curves_closed_form():
    from dcnbio.extract.meta import compute_meta_curves
    from dcnbio.errors import DataError
    from dcnbio.core.models import srf_layers

    torch.manual_seed(3)
    model = create_model("dcn-sigma-alpha-t", in_channels=1, width=0.125)
    times = np.array([-1.0, 0.0, 0.7, 2.0, 3.0])  # outside [-0.5, 2.5] t' is clipped
    ds = compute_meta_curves(model, times)
    layers = {n: m for n, m in srf_layers(model).items() if m.depends_on_t}
    assert list(ds["layer"].values) == list(layers)
    tp = 0.5 * np.clip(times, -0.5, 2.5)
    for k, layer in enumerate(layers.values()):
        a, b = layer.scale.a.item(), layer.scale.b.item()
        # tolerance: σ passes through float32 parameters and float64 evaluation
        np.testing.assert_allclose(ds["sigma"].values[k], 2.0 ** (a * tp + b), rtol=1e-6)
        aa, bb = layer.alpha.a.detach().double().numpy(), layer.alpha.b.detach().double().numpy()
        alpha = aa[None] * tp[:, None, None, None] + bb[None]  # (time, out, in, basis)
        np.testing.assert_allclose(ds["alpha_rms"].values[k], np.sqrt((alpha ** 2).mean(axis=(1, 2))), rtol=1e-6)
    assert list(ds["basis_order"].values) == [0, 1, 1, 2, 2, 2]
    with pytest.raises(DataError, match="not meta-parametrized"):
        compute_meta_curves(create_model("dcn-sigma-ji", in_channels=1, width=0.125))


COMMANDS = [f"analyses/{p.stem}" for p in sorted(SCRIPTS.glob("*.py"))] + [
    "dcnbio.train.cli", "dcnbio.train.grid_cli", "dcnbio.extract.cli", "dcnbio.train.snapshot"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_states_what_a_flag_does_when_it_is_not_given(command, capsys):
    """``--help`` shows each default; an on/off flag reads ``(default: off)`` or leaves it to its own text, never
    the value argparse stores for it (``--no-download … (default: True)`` would say the opposite of the truth),
    and an option whose absence is decided further down leaves that to its help, not ``(default: None)``."""
    if command.startswith("analyses/"):
        main = load_analysis(command.split("/")[1]).main
    else:
        main = importlib.import_module(command).main
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert stop.value.code == 0 and text.startswith("usage:")
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "(default: None)" not in text  # an option's absence is said by its help ("default: every run …")
    if "(default:" in text and re.search(r"--overwrite [a-z]", text):  # a command that shows defaults
        assert re.search(r"--overwrite [a-z][^()]*\(default: off\)", text)
