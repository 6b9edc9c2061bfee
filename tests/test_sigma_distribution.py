"""analyses/sigma_distribution.py end to end, and the figures and report it is built from."""
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import torch
from matplotlib.figure import Figure

from dcnbio import create_model, srf_layers
from dcnbio import plots
from dcnbio.reports.report import Report, format_value, latex_escape, markdown_table
from dcnbio.extract.sigmas import extract_sigmas, stack_sigmas
from dcnbio.stats.distribution import fit_lognormal
from dcnbio.train.checkpoint import make_checkpoint, save_checkpoint
from dcnbio.io import open_results, write_report
from helpers import load_analysis

SCRIPT = Path(__file__).resolve().parents[1] / "analyses" / "sigma_distribution.py"
#: Deterministic change that makes a 'trained' copy of an init model: log2 σ -> SPREAD·s + SHIFT·depth.
SPREAD, SHIFT = 1.5, 0.1


def shifted_copy(model):
    """The init model with every static log2 scale moved deterministically (a stand-in for training)."""
    trained = create_model(model.config.name, in_channels=model.config.in_channels, width=model.config.width)
    trained.load_state_dict(model.state_dict())
    with torch.no_grad():
        for depth, layer in enumerate(srf_layers(trained).values()):
            for p in layer.scale.parameters():
                p.mul_(SPREAD).add_(SHIFT * depth)
    return trained


def write_run(directory, name, seed, *, init=True, width=0.125):
    torch.manual_seed(seed)
    model = create_model(name, in_channels=1, width=width)
    directory.mkdir(parents=True)
    if init:
        save_checkpoint(make_checkpoint(model, kind="init", train_config={"seed": seed}), directory / "init.pt")
    trained = shifted_copy(model)
    save_checkpoint(make_checkpoint(trained, kind="last", train_config={"seed": seed}, epoch=2, step=8,
                                    metrics=[{"epoch": 2, "val_acc": 0.4}]), directory / "last.pt")
    return model, trained


@pytest.fixture(scope="module")
def script():
    return load_analysis("sigma_distribution")


# --- the script ------------------------------------------------------------------------------------------------

def test_end_to_end_sigma_ji_two_seeds_and_a_missing_control(script, tmp_path, capsys):
    models = {s: write_run(tmp_path / f"seed{s}", "dcn-sigma-ji", s) for s in (1, 2)}
    write_run(tmp_path / "seed3", "dcn-sigma-ji", 3, init=False)
    out = tmp_path / "out"
    ckpts = [str(tmp_path / f"seed{s}" / "last.pt") for s in (1, 2, 3)]
    assert script.main(["--checkpoint", *ckpts, "--out", str(out), "--n-boot", "50"]) == 0
    for f in ("sigma.nc", "sigma_histograms.png", "sigma_vs_depth.png", "report.md", "report.tex"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    printed = capsys.readouterr().out
    assert "dcn-sigma-ji: 3 seed(s)" in printed and "trained - init log2-SD" in printed

    with open_results(out / "sigma.nc") as ds:
        ds = ds.load()
    assert list(ds.sizes) == ["filter"]
    per_seed = extract_sigmas(models[1][0]).sizes["filter"]
    assert ds.sizes["filter"] == 5 * per_seed  # trained × 3 seeds + init × 2 seeds
    states = pd.Series(list(zip(ds["state"].values.astype(str), ds["seed"].values.astype(str)))).value_counts()
    assert states.to_dict() == {(st_, sd): per_seed for st_, sd in
                                [("trained", "1"), ("trained", "2"), ("trained", "3"), ("init", "1"), ("init", "2")]}
    for coord in ("layer", "block", "conv", "depth", "out_channel", "in_channel", "is_time_channel", "time",
                  "stride", "order"):
        assert coord in ds.coords
    # stored σ of seed 2 are the checkpoint's own parameters (float32 storage: rtol 1e-6)
    init_model, trained_model = models[2]
    for state, model in (("init", init_model), ("trained", trained_model)):
        layer_name, layer = next(iter(srf_layers(model).items()))
        mask = (ds["state"].values == state) & (ds["seed"].values == "2") & (ds["layer"].values == layer_name)
        got = np.empty(tuple(layer.scale.log2_scale.shape))
        got[ds["out_channel"].values[mask], ds["in_channel"].values[mask]] = ds["sigma"].values[mask]
        np.testing.assert_allclose(got, 2.0 ** layer.scale.log2_scale.detach().double().numpy(), rtol=1e-6)

    md = (out / "report.md").read_text()
    tex = (out / "report.tex").read_text()
    for block in ("block1", "block2", "block3"):
        assert block in md and block in tex
    assert "missing: no init.pt" in md
    assert "Lilliefors".lower() in md.lower() and "V1 (De Valois 1982)" in md
    assert r"\begin{document}" in tex and r"\end{document}" in tex and r"\toprule" in tex
    assert tex.count(r"\begin{table}") >= 5 and "\\begin{tabular}" in tex
    # the planted change: log2 σ scaled by 1.5 about 0 and shifted by 0.1 per layer, so trained log2-SD grows
    row = [line for line in md.splitlines() if line.startswith("| pooled / delta_log2_sd")][0]
    assert float(row.split("|")[2]) > 0.1
    # the depth trend training added, per seed with a control: the least-squares slope of each filter's change
    assert "depth, trained - init:" in printed
    rows = {line.split("|")[1].strip(): line.split("|") for line in md.splitlines() if re.match(r"\| seed \d", line)}
    assert set(rows) == {"seed 1", "seed 2"}  # seed 3 has no init.pt
    for s, (init_model, trained_model) in models.items():
        t, i = (extract_sigmas(m).where(lambda d: ~d["is_time_channel"], drop=True)
                for m in (trained_model, init_model))
        slope = np.polyfit(t["depth"].values, t["log2_sigma"].values - i["log2_sigma"].values, 1)[0]
        assert float(rows[f"seed {s}"][2]) == pytest.approx(slope, rel=1e-3)  # the report prints 4 digits


@pytest.mark.parametrize("name", ["dcn-ode", "dcn-sigma-t"])
def test_end_to_end_shared_and_time_dependent_sigma(script, tmp_path, name):
    write_run(tmp_path / "seed1", name, 1)
    out = tmp_path / "out"
    assert script.main(["--checkpoint", str(tmp_path / "seed1" / "last.pt"), "--out", str(out),
                        "--n-boot", "20"]) == 0
    assert (out / "sigma_vs_depth.png").is_file() and (out / "report.md").is_file()
    assert not (out / "sigma_histograms.png").exists()  # no per-channel sample to histogram
    md = (out / "report.md").read_text()
    assert "Depth trend" in md and "per-channel σ_ji models only" in md
    with open_results(out / "sigma.nc") as ds:
        times = ds["time"].values
    assert np.isfinite(times).all() == (name == "dcn-sigma-t")


def _run_error(script, argv, capsys):
    code = script.main(argv)
    err = capsys.readouterr().err
    return code, err


def test_bad_inputs_exit_2_with_one_line(script, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    code, err = _run_error(script, ["--checkpoint", str(corrupt), "--out", str(tmp_path / "o1")], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "o1").exists()  # nothing written for a bad input

    code, err = _run_error(script, ["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o2")], capsys)
    assert code == 2 and "no checkpoint file" in err and err.count("\n") == 1

    pixel = tmp_path / "odenet.pt"
    save_checkpoint(make_checkpoint(create_model("odenet", in_channels=1, width=0.125), kind="last"), pixel)
    code, err = _run_error(script, ["--checkpoint", str(pixel), "--out", str(tmp_path / "o3")], capsys)
    assert code == 2 and "no SRF layers" in err and err.count("\n") == 1

    write_run(tmp_path / "seed1", "dcn-ode", 1)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    code, err = _run_error(script, ["--checkpoint", str(tmp_path / "seed1" / "last.pt"), "--out", str(busy)], capsys)
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1

    code, err = _run_error(script, ["--checkpoint", str(tmp_path / "seed1" / "last.pt"),
                                    str(tmp_path / "seed1" / "last.pt"), "--out", str(tmp_path / "o4")], capsys)
    assert code == 2 and "both have seed 1" in err


def test_default_checkpoints_missing_is_a_clear_error(script, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(script, "REPO", tmp_path)
    code, err = _run_error(script, ["--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "dcn-sigma-ji/seed*/last.pt" in err and "--checkpoint" in err


def test_default_checkpoints_are_found_by_glob(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script, "REPO", tmp_path)
    for s in (3, 2, 1):
        (tmp_path / "data/checkpoints/full/dcn-sigma-ji" / f"seed{s}").mkdir(parents=True)
        (tmp_path / "data/checkpoints/full/dcn-sigma-ji" / f"seed{s}" / "last.pt").write_bytes(b"")
        if s != 3:  # seed 3 is still training: last.pt but no final.json
            (tmp_path / "data/checkpoints/full/dcn-sigma-ji" / f"seed{s}" / "final.json").write_text("{}")
    found = script.resolve_checkpoints(None, "full")
    assert [Path(p).parent.name for p in found] == ["seed1", "seed2"]
    skipped = "skipping data/checkpoints/full/dcn-sigma-ji/seed3/last.pt (unfinished run: no final.json)"
    assert skipped in capsys.readouterr().err


# --- figures ---------------------------------------------------------------------------------------------------

def test_overlay_density_integrates_to_one_over_log10():
    fit = fit_lognormal(np.exp(np.random.default_rng(0).normal(0.2, 0.7, 500)))
    u = np.linspace(-8, 8, 200001)  # log10 x; the log-normal's mass outside ±8 decades is < 1e-100
    density = plots.lognormal_log10_density(10.0 ** u, fit)
    # trapezoid rule on a smooth density with step 8e-5: error far below 1e-8
    assert np.trapezoid(density, u) == pytest.approx(1.0, abs=1e-8)
    # and it is not the untransformed pdf (which does not integrate to 1 over log10 x)
    raw = st.lognorm.pdf(10.0 ** u, fit["shape"], scale=fit["scale"])
    assert abs(np.trapezoid(raw, u) - 1) > 0.1


def test_overlay_matches_seaborn_histogram_units():
    rng = np.random.default_rng(1)
    model = create_model("dcn-sigma-ji", in_channels=1, width=0.125)
    ds = extract_sigmas(model)
    sigma = np.exp(rng.normal(0.1, 0.5, ds.sizes["filter"] * 16))
    big = stack_sigmas([(ds.assign(sigma=("filter", s)), {"seed": str(i)})
                        for i, s in enumerate(np.split(sigma, 16))])
    fig = plots.plot_sigma_histograms(big, init=False, time_channel=True)
    ax = fig.axes[-1]  # block3: the largest sample
    x = big["sigma"].values[big["block"].values == "block3"]
    fit = fit_lognormal(x)
    bars = [p for p in ax.patches if p.get_height() > 0]
    checked = 0
    for bar in bars:
        lo, hi = bar.get_x(), bar.get_x() + bar.get_width()
        count = np.sum((x >= lo) & (x < hi))
        if count < 200:
            continue
        u = np.linspace(np.log10(lo), np.log10(hi), 201)
        mean_density = np.trapezoid(plots.lognormal_log10_density(10 ** u, fit), u) / (u[-1] - u[0])
        # bar height = count / (n · bin width in log10): Poisson error 1/sqrt(count) ≤ 7%; allow 4 SE
        assert bar.get_height() == pytest.approx(mean_density, rel=4 / math.sqrt(count))
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("name", ["dcn-sigma-ji", "dcn-full", "dcn-sigma-t2"])
def test_sigma_vs_depth_one_tick_per_layer(name):
    model = create_model(name, in_channels=1, width=0.125)
    ds = stack_sigmas([(extract_sigmas(shifted_copy(model)), {"state": "trained", "seed": "1"}),
                       (extract_sigmas(model), {"state": "init", "seed": "1"})])
    fig = plots.plot_sigma_vs_depth(ds)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.get_xticks()) == len(srf_layers(model))
    assert ax.get_yscale() == "log"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"trained", "init"}


# --- report ----------------------------------------------------------------------------------------------------

def test_report_tables_and_escaping(tmp_path):
    df = pd.DataFrame({"log2_sd": [0.123456, np.nan], "n": [10, 20], "best": ["gamma", "a_b"]},
                      index=pd.Index(["pooled", "block1"], name="group"))
    md = markdown_table(df)
    assert md.splitlines()[0] == "| group | log2_sd | n | best |"
    assert md.splitlines()[2] == "| pooled | 0.1235 | 10 | gamma |"
    assert md.splitlines()[3] == "| block1 |  | 20 | a_b |"
    assert latex_escape("a_b & 5% σ") == r"a\_b \& 5\% $\sigma$"
    assert format_value(np.float64(3.0)) == "3" and format_value(1e-9) == "1e-09"
    report = Report("T").section("S").text("`code` and **bold**").table(df, "cap").latex(r"\fbox{x}", "x")
    md_path, tex_path = write_report(report, tmp_path)
    tex = Path(tex_path).read_text()
    assert r"\texttt{code} and \textbf{bold}" in tex and r"\fbox{x}" in tex and r"a\_b" in tex
    assert "```\nx\n```" in Path(md_path).read_text()


def test_main_job_on_the_bundled_checkpoints(script, tmp_path, capsys):
    """The README's first command: no arguments, the finished full-data σ_ji runs and their init states."""
    runs = (SCRIPT.parents[1] / "data" / "checkpoints" / "full" / "dcn-sigma-ji").glob("seed*/last.pt")
    bundled = sorted(p for p in runs if (p.parent / "final.json").is_file())
    assert bundled, "a finished full-data dcn-sigma-ji run is part of the repository"
    out = tmp_path / "main"
    assert script.main(["--out", str(out)]) == 0
    ds = open_results(out / "sigma.nc")
    assert set(ds["state"].values.astype(str)) == {"trained", "init"}
    trained = ds.where(ds["state"] == "trained", drop=True)
    model, _ = __import__("dcnbio").load_checkpoint(bundled[0])
    expected = sum(layer.sigma().numel() for layer in srf_layers(model).values()) * len(bundled)
    assert trained.sizes["filter"] == expected  # every σ_ji of every bundled seed, none lost
    report = (out / "report.md").read_text()
    for block in ("block1", "block2", "block3"):
        assert block in report
    assert "dcn-sigma-ji" in capsys.readouterr().out


def test_same_command_gives_identical_results(script, tmp_path):
    from dcnbio.io import assert_same_results

    write_run(tmp_path / "ck" / "seed1", "dcn-sigma-ji", 1)
    for name in ("a", "b"):
        assert script.main(["--checkpoint", str(tmp_path / "ck/seed1/last.pt"), "--out", str(tmp_path / name),
                            "--n-boot", "50"]) == 0
    assert_same_results(tmp_path / "a/sigma.nc", tmp_path / "b/sigma.nc")  # all but the creation time
    # timestamps are the only allowed difference: statsmodels' "Date:"/"Time:" summary lines
    strip = lambda text: "\n".join(l for l in text.splitlines() if "Date:" not in l and "Time:" not in l)
    assert strip((tmp_path / "a/report.md").read_text()) == strip((tmp_path / "b/report.md").read_text())
