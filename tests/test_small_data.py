"""Small data (Table 2a): the statistics on hand-made tables (means and SDs by hand, coefficients recovered exactly
from noiseless data, the GLM against an independent Newton solve, contrasts against closed forms), the verdict on
planted tables, the recipe against the ``dcnbio train`` command line, and the script end to end — on tiny runs it
trains itself, on explicit checkpoints, on the bundled runs — with its one-line errors."""
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import torch
import xarray as xr
from scipy.special import expit

from dcnbio.stats.small_data import (DCN, assess_small_data_advantage, describe_run, fit_small_data,
                                        format_summary, summarize_accuracy, tabulate_runs)
from dcnbio.datasets import check_sizes
from dcnbio.train.grid import check_models, epochs_for, recipe_differences, run_path, small_data_config
from dcnbio.errors import CheckpointError, ConfigError, DataError
from dcnbio.io import open_results, same_results
from helpers import load_analysis

REPO = Path(__file__).resolve().parents[1]
MODELS = ("dcn-ode", "odenet", "resnet-blocks")


@pytest.fixture(scope="module")
def script():
    return load_analysis("small_data")


def run(script, argv, capsys):
    rc = script.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def records(table, n=1000):
    """``{(model, size): [accuracy per seed]}`` → run records with integer counts."""
    return [{"model": m, "size": s, "seed": k + 1, "n_correct": int(round(a * n)), "n_images": n}
            for (m, s), accs in table.items() for k, a in enumerate(accs)]


def design(df, models):
    """The design matrix of ``C(model) * np.log(size)`` with the first model as reference, built by hand."""
    cols = {"Intercept": np.ones(len(df))}
    for m in models[1:]:
        cols[f"C(model)[T.{m}]"] = (df["model"] == m).to_numpy(float)
    cols["np.log(size)"] = np.log(df["size"].to_numpy(float))
    for m in models[1:]:
        cols[f"C(model)[T.{m}]:np.log(size)"] = cols[f"C(model)[T.{m}]"] * cols["np.log(size)"]
    return pd.DataFrame(cols)


# --- the table and its summary ----------------------------------------------------------------------------------

def test_table_and_mean_sd_by_hand():
    table = {("odenet", 10): [0.5, 0.6, 0.7], ("odenet", 20): [0.61, 0.65], ("dcn-ode", 10): [0.42]}
    ds = tabulate_runs(records(table, n=100))
    assert list(ds["model"].values) == ["dcn-ode", "odenet"]  # the DCN first (the reference)
    assert ds.sizes == {"model": 2, "size": 2, "seed": 3}
    assert int(ds["n_images"].sel(model="dcn-ode", size=20).sum()) == 0  # a cell without runs
    assert np.isnan(ds["accuracy"].sel(model="odenet", size=20, seed=3))
    summary = summarize_accuracy(ds)
    cell = summary.sel(model="odenet", size=10)
    assert float(cell["mean"]) == pytest.approx(0.6, abs=1e-12)
    assert float(cell["sd"]) == pytest.approx(math.sqrt((0.01 + 0 + 0.01) / 2), abs=1e-12)  # ddof = 1
    cell = summary.sel(model="odenet", size=20)
    assert (int(cell["n_seeds"]), float(cell["mean"])) == (2, pytest.approx(0.63))
    assert float(cell["sd"]) == pytest.approx(abs(0.61 - 0.65) / math.sqrt(2))
    assert float(cell["pooled"]) == pytest.approx((61 + 65) / 200)
    one = summary.sel(model="dcn-ode", size=10)
    assert int(one["n_seeds"]) == 1 and np.isnan(one["sd"])  # no SD from one seed
    assert int(summary.sel(model="dcn-ode", size=20)["n_seeds"]) == 0
    text = format_summary(summary)
    assert text.loc[10, "odenet"] == "60.0 ± 10.0 (3)" and text.loc[10, "dcn-ode"] == "42.0 (1)"
    assert text.loc[20, "dcn-ode"] == "" and text.loc[20, "odenet"] == "63.0 ± 2.8 (2)"


@pytest.mark.parametrize("bad,match", [
    ([{"model": "odenet", "size": 10, "seed": 1, "n_correct": 3}], "lacks n_images"),
    ([{"model": "odenet", "size": 10, "seed": 1, "n_correct": 5, "n_images": 4}], "0 <= n_correct <= n_images"),
    ([{"model": "odenet", "size": 0, "seed": 1, "n_correct": 1, "n_images": 4}], "size must be an integer >= 1"),
    ([{"model": "odenet", "size": 10, "seed": 1, "n_correct": 1, "n_images": 4, "checkpoint": "a"},
      {"model": "odenet", "size": 10, "seed": 1, "n_correct": 2, "n_images": 4, "checkpoint": "b"}],
     "two runs of odenet n10 seed1: a and b"),
    ([], "no runs"),
])
def test_table_rejects_bad_records(bad, match):
    with pytest.raises(DataError, match=match):
        tabulate_runs(bad)


# --- the fit ------------------------------------------------------------------------------------------------------

TRUE = {"dcn-ode": (30.0, 9.0), "odenet": (27.0, 8.5), "resnet-blocks": (25.0, 10.0)}  # (a, b): a + b ln(size) in %


def synthetic(f, sizes=(10, 20, 50), seeds=(1, 2), n=1000):
    """Noiseless runs: the fraction correct of model m at size s is exactly ``f(m, s)`` (non-integer counts)."""
    return pd.DataFrame([{"model": m, "size": s, "seed": k, "n_correct": n * f(m, s), "n_images": n}
                         for m in MODELS for s in sizes for k in seeds])


def test_ols_recovers_interaction_exactly_from_noiseless_data():
    df = synthetic(lambda m, s: (TRUE[m][0] + TRUE[m][1] * math.log(s)) / 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero residuals: t statistics divide by zero
        fit = fit_small_data(df)
    p = fit.ols.params
    a0, b0 = TRUE[DCN]
    assert p["Intercept"] == pytest.approx(a0, abs=1e-9)
    assert p["np.log(size)"] == pytest.approx(b0, abs=1e-9)
    for m in ("odenet", "resnet-blocks"):
        assert p[f"C(model)[T.{m}]"] == pytest.approx(TRUE[m][0] - a0, abs=1e-9)
        assert p[f"C(model)[T.{m}]:np.log(size)"] == pytest.approx(TRUE[m][1] - b0, abs=1e-9)
    # the OLS contrast at a size is the difference of the two lines there
    adv = fit.advantage([10, 50])
    for s in (10, 50):
        for m in ("odenet", "resnet-blocks"):
            expected = (a0 + b0 * math.log(s)) - (TRUE[m][0] + TRUE[m][1] * math.log(s))
            assert adv.loc[(s, m), "OLS pp"] == pytest.approx(expected, abs=1e-9)
    assert fit.ols.ssr < 1e-18  # the lines are exact


def test_glm_recovers_logit_coefficients_exactly_from_noiseless_data():
    true = {"dcn-ode": (-1.0, 0.5), "odenet": (-1.3, 0.55), "resnet-blocks": (-0.8, 0.3)}
    df = synthetic(lambda m, s: expit(true[m][0] + true[m][1] * math.log(s)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero residuals: statsmodels calls a perfect fit "perfect separation"
        fit = fit_small_data(df)
    p = fit.glm.params
    assert p["Intercept"] == pytest.approx(-1.0, abs=1e-7)
    assert p["np.log(size)"] == pytest.approx(0.5, abs=1e-7)
    assert p["C(model)[T.odenet]"] == pytest.approx(-0.3, abs=1e-7)
    assert p["C(model)[T.resnet-blocks]:np.log(size)"] == pytest.approx(-0.2, abs=1e-7)
    assert fit.dispersion == pytest.approx(0.0, abs=1e-12)  # no spread between runs at all
    glm_pct, _ = fit.predict("odenet", [33.0])
    assert glm_pct[0] == pytest.approx(100 * expit(-1.3 + 0.55 * math.log(33)), abs=1e-6)


@pytest.fixture(scope="module")
def noisy():
    """27 runs with seed-to-seed spread (overdispersed relative to binomial, as real runs are)."""
    rng = np.random.default_rng(7)
    true = {"dcn-ode": (-1.0, 0.5), "odenet": (-1.2, 0.5), "resnet-blocks": (-1.4, 0.55)}
    rows = []
    for m, (a, b) in true.items():
        for s in (10, 20, 50):
            for k in (1, 2, 3):
                p = expit(a + b * math.log(s) + rng.normal(0, 0.08))
                rows.append({"model": m, "size": s, "seed": k, "n_correct": int(rng.binomial(800, p)),
                             "n_images": 800})
    return tabulate_runs(rows)


def test_glm_against_independent_newton_solve(noisy):
    fit = fit_small_data(noisy)
    df = fit.data
    X = design(df, list(MODELS)).to_numpy()
    y, n = df["n_correct"].to_numpy(float), df["n_images"].to_numpy(float)
    beta = np.zeros(X.shape[1])
    for _ in range(50):  # Newton–Raphson on the binomial log-likelihood (the canonical link: IRLS = Newton)
        p = expit(X @ beta)
        beta = beta + np.linalg.solve(X.T @ (X * (n * p * (1 - p))[:, None]), X.T @ (y - n * p))
    p = expit(X @ beta)
    names = list(design(df, list(MODELS)).columns)
    assert np.allclose(fit.glm.params[names].to_numpy(), beta, rtol=0, atol=1e-8)  # IRLS tolerance 1e-8
    dof = len(df) - X.shape[1]
    phi = np.sum((y - n * p) ** 2 / (n * p * (1 - p))) / dof  # Pearson χ² / residual df
    assert fit.dispersion == pytest.approx(phi, rel=1e-6)
    assert phi > 1.5  # the planted seed spread is several times binomial: a scale-1 binomial would be wrong
    cov = phi * np.linalg.inv(X.T @ (X * (n * p * (1 - p))[:, None]))
    assert np.allclose(fit.glm.bse[names].to_numpy(), np.sqrt(np.diag(cov)), rtol=1e-6)
    # the DCN-minus-baseline contrast at 20 images per class: log-odds, t interval and p, and the delta-method pp
    adv = fit.advantage([20]).loc[20]
    ls = math.log(20)
    x_dcn = np.array([1, 0, 0, ls, 0, 0])
    for j, m in ((1, "odenet"), (2, "resnet-blocks")):
        x_b = np.array([1, j == 1, j == 2, ls, (j == 1) * ls, (j == 2) * ls], float)
        c = x_dcn - x_b
        est, se = c @ beta, math.sqrt(c @ cov @ c)
        t = st.t.ppf(0.975, dof)
        row = adv.loc[m]
        assert row["GLM log-odds"] == pytest.approx(est, abs=1e-7)
        assert (row["GLM low"], row["GLM high"]) == (pytest.approx(est - t * se, abs=1e-6),
                                                     pytest.approx(est + t * se, abs=1e-6))
        assert row["GLM p"] == pytest.approx(2 * st.t.sf(abs(est / se), dof), rel=1e-5)
        pd_, pb = expit(x_dcn @ beta), expit(x_b @ beta)
        grad = pd_ * (1 - pd_) * x_dcn - pb * (1 - pb) * x_b
        assert row["GLM pp"] == pytest.approx(100 * (pd_ - pb), abs=1e-6)
        assert row["GLM pp high"] - row["GLM pp"] == pytest.approx(100 * t * math.sqrt(grad @ cov @ grad), rel=1e-5)


def test_lack_of_fit_by_hand(noisy):
    """F = ((SSR_line - SSR_cells) / (df_line - df_cells)) / (SSR_cells / df_cells); cells: a mean per model, size."""
    fit = fit_small_data(noisy)
    acc = 100 * noisy["accuracy"]
    ssr_cells = float(((acc - acc.mean("seed")) ** 2).sum())
    df_cells = 27 - 9
    resid = fit.data["accuracy"] - fit.ols.fittedvalues
    ssr_line, df_line = float((resid ** 2).sum()), 27 - 6
    f = ((ssr_line - ssr_cells) / (df_line - df_cells)) / (ssr_cells / df_cells)
    lof = fit.lack_of_fit
    assert (lof["df_num"], lof["df_den"]) == (3, 18)
    assert lof["F"] == pytest.approx(f, rel=1e-9)
    assert lof["pvalue"] == pytest.approx(st.f.sf(f, 3, 18), rel=1e-9)
    # a missing cell (no dcn-ode runs at 50): 8 cell means against 6 line coefficients, full rank
    part = noisy.copy(deep=True)
    part["n_images"].loc[{"model": DCN, "size": 50}] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rank-deficiency warning
        lof = fit_small_data(part).lack_of_fit
    assert (lof["df_num"], lof["df_den"]) == (2, 24 - 8)


def test_design_rows_are_the_fitted_design(noisy):
    fit = fit_small_data(noisy)
    rows = np.array([fit._design(m, s) for m, s in zip(fit.data["model"], fit.data["size"])])
    assert np.array_equal(rows, fit.ols.model.exog) and np.array_equal(rows, fit.glm.model.exog)


def test_two_sizes_are_saturated_cell_means():
    """With two sizes a line per model passes through every cell: OLS contrasts are differences of cell means and
    the GLM's fitted accuracies are the pooled proportions of each cell (the binomial MLE of a saturated model)."""
    table = {("dcn-ode", 10): [0.52, 0.47, 0.50], ("dcn-ode", 40): [0.71, 0.69, 0.74],
             ("odenet", 10): [0.45, 0.49, 0.44], ("odenet", 40): [0.70, 0.66, 0.69],
             ("resnet-blocks", 10): [0.48, 0.41, 0.45], ("resnet-blocks", 40): [0.64, 0.70, 0.67]}
    ds = tabulate_runs(records(table, n=500))
    fit = fit_small_data(ds)
    assert fit.lack_of_fit is None  # needs 3 sizes
    adv = fit.advantage()
    for s in (10, 40):
        for m in ("odenet", "resnet-blocks"):
            ols = 100 * (np.mean(table[(DCN, s)]) - np.mean(table[(m, s)]))
            pooled = 100 * (np.sum(np.round(np.array(table[(DCN, s)]) * 500))
                            - np.sum(np.round(np.array(table[(m, s)]) * 500))) / 1500
            assert adv.loc[(s, m), "OLS pp"] == pytest.approx(ols, abs=1e-9)
            assert adv.loc[(s, m), "GLM pp"] == pytest.approx(pooled, abs=1e-6)


@pytest.mark.parametrize("table,match", [
    ({("dcn-ode", 10): [0.5, 0.6], ("dcn-ode", 20): [0.6, 0.7], ("odenet", 10): [0.5, 0.6]}, "odenet: runs at fewer"),
    ({("dcn-ode", 10): [0.5], ("dcn-ode", 20): [0.6]}, "no residual degrees of freedom"),
])
def test_fit_refuses_what_it_cannot_estimate(table, match):
    with pytest.raises(DataError, match=match):
        fit_small_data(tabulate_runs(records(table)))


# --- the verdict ----------------------------------------------------------------------------------------------------

def planted(dcn_shift):
    base = {"odenet": 0.0, "resnet-blocks": -0.01}
    noise = (-0.006, 0.0, 0.006)
    table = {}
    for s, level in ((10, 0.45), (20, 0.55), (50, 0.65)):
        for m in MODELS:
            shift = dcn_shift if m == DCN else base[m]
            table[(m, s)] = [level + shift + e for e in noise]
    return tabulate_runs(records(table))


@pytest.mark.parametrize("shift,verdict", [(0.05, "supported"), (-0.05, "contradicted"), (0.002, "not resolved")])
def test_verdict_on_planted_tables(shift, verdict):
    v = assess_small_data_advantage(fit_small_data(planted(shift)))
    assert v["verdict"] == verdict and v["ols_verdict"] == verdict and v["size"] == 10
    assert {"supported": "**support**", "contradicted": "**contradict**",
            "not resolved": "neither support nor contradict"}[verdict] in v["text"]
    assert list(v["table"].index) == ["odenet", "resnet-blocks"]


def test_verdict_needs_the_dcn():
    table = {(m, s): [0.5 + 0.01 * k, 0.52, 0.49] for k, m in enumerate(("odenet", "resnet-blocks"))
             for s in (10, 20)}
    fit = fit_small_data(tabulate_runs(records(table)))
    assert fit.reference == "odenet"
    with pytest.raises(DataError, match="no dcn-ode runs"):
        assess_small_data_advantage(fit)


# --- the recipe ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,size", [("resnet-blocks", 10), ("odenet", 20), ("dcn-ode", 50)])
def test_recipe_is_the_bundled_command_line(model, size):
    from dcnbio.train.cli import build_parser, config_from_args

    argv = ["--model", model, "--dataset", "fashion-mnist", "--width", "0.25", "--subset", str(size), "--val-size",
            "0", "--epochs", str(300 // size), "--batch-size", "32", "--no-adjoint", "--no-test", "--seeds", "1",
            "2", "3", "--out", "unused"]
    cli = config_from_args(build_parser().parse_args(argv), 2)
    assert small_data_config(model, size, 2) == cli


@pytest.mark.parametrize("model,size,cap", [("resnet-blocks", 10, 1000), ("odenet", 52, 1000), ("dcn-ode", 53, 500),
                                            ("dcn-ode", 100, 500)])
def test_plateau_recipe_is_its_command_line_with_the_paper_s_cap(model, size, cap):
    """The ``plateau`` recipe: the paper's small-set epochs (100 × 10 up to 520 images, × 5 up to 1030) as the cap,
    the training-loss plateau over 120-step windows, the full-data bundle's fastest exact path."""
    from dcnbio.train.cli import build_parser, config_from_args
    from dcnbio.train.config import PAPER_EPOCHS, small_data_epoch_factor

    assert PAPER_EPOCHS * small_data_epoch_factor(10 * size) == cap
    argv = ["--model", model, "--dataset", "fashion-mnist", "--width", "0.25", "--subset", str(size), "--val-size",
            "0", "--epochs", str(cap), "--batch-size", "32", "--plateau-patience", "2", "--plateau-delta", "0.02",
            "--plateau-window", "120", "--no-adjoint", "--integrator", "dcnbio", "--formulation", "auto",
            "--no-test", "--seeds", "3", "--out", "unused"]
    cli = config_from_args(build_parser().parse_args(argv), 3)
    assert small_data_config(model, size, 3, recipe="plateau") == cli
    with pytest.raises(ConfigError, match="unknown small-data recipe 'fast'; choose one of budget, plateau"):
        small_data_config(model, size, 3, recipe="fast")


def test_small_input_checks():
    assert [epochs_for(s) for s in (1, 10, 20, 50, 300, 301)] == [300, 30, 15, 6, 1, 1]
    assert check_sizes([50, 10]) == [10, 50]
    for bad in ([0], [2.5], [10, 10], [True]):
        with pytest.raises(ConfigError):
            check_sizes(bad)
    with pytest.raises(ConfigError, match="unknown model 'dcn'"):
        check_models(["dcn"])
    with pytest.raises(ConfigError, match="epochs budget"):
        epochs_for(10, 0)
    assert run_path("r", "odenet", 10, 3) == os.path.join("r", "odenet", "n10", "seed3")
    with pytest.raises(CheckpointError, match="does not record a subset"):
        describe_run({"train_config": {"model": "odenet", "seed": 1, "subset": None}, "path": "x.pt"})
    # a plateau-scheduled run ends where its measured plateau puts the end, before train_config's cap
    tc = {"model": "odenet", "seed": 1, "subset": 50, "epochs": 1000}
    cut = {"train_config": tc, "epoch": 240, "optimizer_state": {"loop": {"epochs": 240, "plateau_epoch": 96}}}
    assert describe_run(cut)["finished"] and describe_run(cut)["epochs"] == 240
    assert not describe_run(dict(cut, epoch=239))["finished"]
    assert not describe_run({"train_config": tc, "epoch": 240})["finished"]  # no loop record: the cap
    assert recipe_differences([{"model": "a", "width": 0.25, "device": "cpu"},
                               {"model": "b", "width": 0.5, "device": "cuda"}]) == {"width": ["0.25", "0.5"]}


# --- the script ---------------------------------------------------------------------------------------------------

TINY = ["--models", "resnet-blocks", "--sizes", 1, 2, "--seeds", 1, 2, "--width", 0.125, "--epochs-budget", 2,
        "--batch-size", 5, "--n-images", 20, "--eval-batch-size", 10]


def forward_accuracy(path, n):
    from dcnbio import load_checkpoint
    from dcnbio.train.data import load_dataset

    model, _ = load_checkpoint(path)
    images, labels = load_dataset("fashion-mnist", "test", download=False).batch(np.arange(n))
    with torch.no_grad():
        pred = torch.cat([model.eval()(images[i:i + 10]).argmax(1) for i in range(0, n, 10)])
    return int((pred == labels).sum())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny grid trained by the script (4 resnet-blocks runs: sizes 1 and 2, seeds 1 and 2)."""
    script = load_analysis("small_data")
    root = tmp_path_factory.mktemp("small")
    rc = script.main([str(a) for a in ["--train", "--runs-dir", root / "runs", "--out", root / "out"] + TINY])
    assert rc == 0
    return root


def test_train_then_collect(trained, script, tmp_path, capsys):
    runs = trained / "runs"
    for size, epochs in ((1, 2), (2, 1)):  # epochs = budget // size
        for seed in (1, 2):
            d = Path(run_path(runs, "resnet-blocks", size, seed))
            assert (d / "final.json").is_file()
            tc = json.loads((d / "config.json").read_text())["train_config"]
            assert (tc["subset"], tc["epochs"], tc["seed"], tc["val_size"], tc["width"]) == (size, epochs, seed, 0,
                                                                                            0.125)
    ds = open_results(trained / "out" / "small_data.nc").load()
    assert list(ds["size"].values) == [1, 2] and list(ds["seed"].values) == [1, 2]
    for size in (1, 2):
        for seed in (1, 2):
            cell = ds.sel(model="resnet-blocks", size=size, seed=seed)
            path = run_path(runs, "resnet-blocks", size, seed) + "/last.pt"
            assert int(cell["n_correct"]) == forward_accuracy(path, 20) and int(cell["n_images"]) == 20
    report = (trained / "out" / "report.md").read_text()
    assert "No verdict: no dcn-ode runs" in report and "Test accuracy (%), mean ± SD" in report
    assert (trained / "out" / "small_data.png").stat().st_size > 0
    assert "\\begin{tabular}" in (trained / "out" / "report.tex").read_text()  # the statsmodels LaTeX

    # a second call trains nothing; a run without final.json is resumed; the results do not change
    os.unlink(Path(run_path(runs, "resnet-blocks", 2, 1)) / "final.json")
    rc, printed, err = run(script, ["--train", "--runs-dir", runs, "--out", tmp_path / "again"] + TINY, capsys)
    assert rc == 0, err
    assert "4 runs, 3 finished, 1 to train" in printed and "resuming resnet-blocks n2 seed1" in printed
    assert same_results(trained / "out" / "small_data.nc", tmp_path / "again" / "small_data.nc")

    # the same runs given explicitly: the same table
    paths = sorted(str(p) for p in runs.glob("*/n*/seed*/last.pt"))
    rc, _, err = run(script, ["--checkpoint", *paths, "--n-images", 20, "--eval-batch-size", 10, "--out",
                              tmp_path / "explicit"], capsys)
    assert rc == 0, err
    a = open_results(tmp_path / "explicit" / "small_data.nc")
    xr.testing.assert_equal(a["n_correct"], open_results(trained / "out" / "small_data.nc")["n_correct"])

    # another recipe on the same runs directory is refused before anything is trained or written
    argv = ["--train", "--runs-dir", runs, "--out", tmp_path / "other"] + TINY[:-8] + ["--epochs-budget", 4] + TINY[-6:]
    rc, _, err = run(script, argv, capsys)
    assert_one_line_error(rc, err, "holds a run trained with another epochs")
    assert not (tmp_path / "other").exists()


def test_default_path_on_bundled_runs(script, tmp_path, capsys):
    finished = sorted(REPO.glob("data/checkpoints/small-data/*/n*/seed*/final.json"))
    assert len(finished) == 27  # the bundled grid: 3 models x 3 sizes x 3 seeds
    rc, printed, err = run(script, ["--n-images", 12, "--eval-batch-size", 12, "--out", tmp_path / "sd"], capsys)
    assert rc == 0, err
    ds = open_results(tmp_path / "sd" / "small_data.nc").load()
    assert int((ds["n_images"] > 0).sum()) == len(finished)
    first = finished[0].parent
    tc = json.loads((first / "config.json").read_text())["train_config"]
    cell = ds.sel(model=tc["model"], size=tc["subset"], seed=tc["seed"])
    assert int(cell["n_correct"]) == forward_accuracy(first / "last.pt", 12)
    assert "# Small data (paper Table 2a)" in (tmp_path / "sd" / "report.md").read_text()
    assert "wrote small_data.nc" in printed


def test_bundled_selection_skips_unfinished_runs(trained, odd_checkpoints, script, tmp_path, monkeypatch, capsys):
    """The default path on a stand-in repository: the tiny grid plus an unfinished run, selected by --sizes."""
    runs = tmp_path / "data" / "checkpoints" / "small-data"
    runs.parent.mkdir(parents=True)
    os.symlink(trained / "runs", runs)
    unfinished = Path(run_path(tmp_path / "unfinished", "resnet-blocks", 5, 1))
    unfinished.mkdir(parents=True)
    os.symlink(unfinished.parent.parent, trained / "runs" / "resnet-blocks-unfinished")
    os.symlink(odd_checkpoints["unfinished"], unfinished / "last.pt")
    monkeypatch.setattr(script, "REPO", tmp_path)
    try:
        rc, printed, err = run(script, ["--sizes", 2, "--n-images", 20, "--eval-batch-size", 10, "--out",
                                        tmp_path / "out"], capsys)
    finally:
        os.unlink(trained / "runs" / "resnet-blocks-unfinished")
    assert rc == 0, err
    ds = open_results(tmp_path / "out" / "small_data.nc").load()
    assert list(ds["size"].values) == [2] and list(ds["seed"].values) == [1, 2]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Unfinished runs (skipped)" in report and "n5/seed1/last.pt` at epoch 1 of 3" in report


def test_no_bundled_runs(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script, "REPO", tmp_path)
    rc, _, err = run(script, ["--out", tmp_path / "out"], capsys)
    assert_one_line_error(rc, err, "pass --checkpoint PATH")
    assert not (tmp_path / "out").exists()


def assert_one_line_error(rc, err, match):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err


@pytest.fixture(scope="module")
def odd_checkpoints(tmp_path_factory):
    from dcnbio import create_model
    from dcnbio.train.checkpoint import make_checkpoint, save_checkpoint

    root = tmp_path_factory.mktemp("odd")
    model = create_model("resnet-blocks", in_channels=1, width=0.125)
    full = {"model": "resnet-blocks", "dataset": "fashion-mnist", "seed": 1, "epochs": 3}
    paths = {"nosubset": root / "nosubset.pt", "unfinished": root / "unfinished.pt"}
    save_checkpoint(make_checkpoint(model, kind="last", train_config=full, epoch=3), paths["nosubset"])
    save_checkpoint(make_checkpoint(model, kind="last", train_config=dict(full, subset=5), epoch=1),
                    paths["unfinished"])
    return {k: str(v) for k, v in paths.items()}


@pytest.mark.parametrize("argv,match", [
    (["--train", "--sizes", 0, 10], "size is a number of training images per class >= 1, got 0"),
    (["--train", "--models", "resnet", "odenet"], "unknown model 'resnet'"),
    (["--checkpoint", "nosubset"], "does not record a subset"),
    (["--checkpoint", "unfinished"], "is at epoch 1 of 3 (unfinished)"),
    (["--checkpoint", "missing"], "no checkpoint file"),
    (["--checkpoint", "nosubset", "--sizes", 10], "not --checkpoint files"),
    (["--train", "--checkpoint", "nosubset"], "either --train or --checkpoint"),
    (["--n-images", 0], "--n-images"),
    (["--train", "--seeds", 1, 1], "--seeds repeat"),
    (["--train", "--runs-dir", "RUNS", "--models", "resnet-blocks", "--sizes", 1, "--seeds", 1],
     "fewer than one batch"),
])
def test_bad_inputs_exit_2_with_one_line(script, odd_checkpoints, tmp_path, capsys, argv, match):
    argv = [odd_checkpoints.get(a, str(tmp_path / "missing.pt")) if a in ("nosubset", "unfinished", "missing")
            else (tmp_path / "runs" if a == "RUNS" else a) for a in argv]
    rc, _, err = run(script, argv + ["--out", tmp_path / "out"], capsys)
    assert_one_line_error(rc, err, match)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


# --- dcnbio grid --------------------------------------------------------------------------------------------------

def grid_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "dcnbio.train.grid_cli", *map(str, args)], capture_output=True,
                          text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)


def test_grid_command_trains_what_is_missing_once_and_refuses_another_recipe(tmp_path):
    """``dcnbio grid`` trains every missing run of models × sizes × seeds with the recipe, keeps finished runs as
    they are when run again, and refuses (one line, status 2, nothing touched) a grid trained with another recipe."""
    grid = ["--runs-dir", tmp_path, "--models", "resnet-blocks", "--sizes", 1, 2, "--seeds", 1, "--width", 0.125,
            "--epochs-budget", 2, "--batch-size", 5, "--quiet"]
    first = grid_cli("--recipe", "budget", *grid)
    assert first.returncode == 0, first.stderr
    assert "2 runs, 0 finished, 2 to train" in first.stdout
    runs = [Path(run_path(tmp_path, "resnet-blocks", n, 1)) for n in (1, 2)]
    for run, n in zip(runs, (1, 2)):
        final = json.loads((run / "final.json").read_text())
        assert final["epochs"] == epochs_for(n, 2) and final["steps"] == epochs_for(n, 2) * (10 * n // 5)
    files = {p: p.read_bytes() for run in runs for p in run.iterdir()}
    again = grid_cli("--recipe", "budget", *grid)
    assert again.returncode == 0 and "2 runs, 2 finished, 0 to train" in again.stdout
    other = grid_cli("--recipe", "plateau", *grid)
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "holds a run trained with another" in other.stderr and "Traceback" not in other.stderr
    assert {p: p.read_bytes() for run in runs for p in run.iterdir()} == files
