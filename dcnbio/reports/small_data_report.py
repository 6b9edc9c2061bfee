"""The evaluation, results and report of ``analyses/small_data.py`` (models and tensors in; xarray, pandas and a
:class:`~dcnbio.reports.report.Report` out; the statistics are in :mod:`dcnbio.stats.small_data`).

* :func:`evaluate_runs` — one record per run: its correct images among the evaluation images every run shares
  (one count per run is the unit of the fit), its forward NFE and what its checkpoint says;
* :func:`compute_small_data` — the ``(model, size, seed)`` table, mean ± SD per cell, the GLM/OLS fit and the
  verdict, as one :class:`SmallDataStudy` whose ``results`` is the script's netCDF;
* :func:`small_data_report` — the whole report; :func:`summary_lines` — the script's closing lines.

Finding, loading and training the runs is the script layer's (:mod:`dcnbio.script`, :mod:`dcnbio.train.grid`).
"""
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError
from ..extract.common import evaluate
from .report import Report
from ..stats.small_data import (DCN, FORMULA, PAPER_SIZES, PAPER_TABLE_2A, assess_small_data_advantage, fit_small_data,
                         format_summary, summarize_accuracy, tabulate_runs)

__all__ = ["SmallDataStudy", "compute_small_data", "epochs_text", "evaluate_runs", "runs_table",
           "small_data_report", "summary_lines"]


def evaluate_runs(runs, images, labels, *, batch_size=128, log=None):
    """Score every run on the same images: the counts :func:`~dcnbio.stats.small_data.tabulate_runs` takes.

    Every run sees the same images in the same batches, so differences between runs are differences of training
    (seed, size, model), not of the test images drawn; the NFE are per batch (dopri5's steps depend on which
    images share a batch).

    Parameters
    ----------
    runs : sequence of (model, run)
        ``run`` from :func:`~dcnbio.stats.small_data.describe_run`, with ``checkpoint`` (the text naming it).
    images : Tensor ``(N, C, H, W)``
        Normalised evaluation images.
    labels : Tensor ``(N,)``
    batch_size : int
        Images per evaluation batch.
    log : callable, optional
        Called with one line per run (its accuracy, epochs, steps, NFE and evaluation time).

    Returns
    -------
    list of dict
        Per run: ``model``, ``size``, ``seed``, ``n_correct``, ``n_images`` (N), ``epochs`` (reached), ``steps``,
        ``train_acc`` (last epoch), ``nfe`` (forward NFE per batch summed over ODE blocks, mean over batches; 0
        without ODE blocks), ``checkpoint`` and ``width``.
    """
    n_eval = int(images.shape[0])
    records = []
    for model, run in runs:
        t0 = time.time()
        res = evaluate(model, images, labels, batch_size=batch_size)
        n_correct = int(res["correct"].sum())
        nfe = float(res["nfe"].sum("block").mean()) if res.sizes["block"] else 0.0
        records.append({"model": run["model"], "size": run["size"], "seed": run["seed"], "n_correct": n_correct,
                        "n_images": n_eval, "epochs": run["epoch"], "steps": run["steps"],
                        "train_acc": run["train_acc"], "nfe": nfe, "checkpoint": run["checkpoint"],
                        "width": run["width"]})
        if log is not None:
            log(f"{run['model']:>13s} n{run['size']:<4d} seed{run['seed']}: {100 * n_correct / n_eval:5.1f} % "
                f"({run['epoch']} epochs, {run['steps']} steps; NFE {nfe:.0f}/batch) in {time.time() - t0:.1f} s")
    return records


@dataclass(frozen=True)
class SmallDataStudy:
    """Result of :func:`compute_small_data`.

    Attributes
    ----------
    table : xarray.Dataset
        :func:`~dcnbio.stats.small_data.tabulate_runs` of the records, with the evaluation's attrs.
    summary : xarray.Dataset
        :func:`~dcnbio.stats.small_data.summarize_accuracy` of ``table``.
    results : xarray.Dataset
        ``table`` with the summary (``accuracy_mean``, ``accuracy_sd``, ``n_seeds``), the fitted coefficients
        (``glm_coef``, ``glm_se``, ``ols_coef``, ``ols_se`` over ``term``) and the verdict in attrs: what is saved.
    fit : SmallDataFit or None
        None when the runs cannot be fitted (``problem`` says why).
    verdict : dict or None
        :func:`~dcnbio.stats.small_data.assess_small_data_advantage`; None when there is none (``problem``).
    problem : str or None
        Why there is no fit or no verdict.
    """

    table: object
    summary: object
    results: object
    fit: object = None
    verdict: dict = None
    problem: str = None


def compute_small_data(records, *, dataset, indices, eval_batch_size, differences):
    """The table, its summary, the fit ``accuracy ~ C(model) * np.log(size)`` and the verdict.

    A grid that cannot be fitted (one model, one size) or gives no verdict (no DCN) is not an error: the table
    and the summary still stand, and :attr:`SmallDataStudy.problem` says what is missing.

    Parameters
    ----------
    records : list of dict
        :func:`evaluate_runs`.
    dataset : str
        Dataset of the runs and of the evaluation images.
    indices : ndarray ``(N,)``
        Index of each evaluation image in its official test file (the first N: the same for every run).
    eval_batch_size : int
    differences : dict of str → list
        Training-configuration fields in which the runs differ beyond the grid's own
        (:func:`dcnbio.train.grid.recipe_differences`); recorded in the attrs.

    Returns
    -------
    SmallDataStudy
    """
    n_eval = int(len(indices))
    attrs = {"dataset": dataset, "split": "test", "n_images": n_eval, "first_image": int(indices[0]),
             "last_image": int(indices[-1]), "eval_batch_size": eval_batch_size,
             "eval_images": f"the first {n_eval} test images of {dataset} (the same for every run)",
             "sd": "sample SD over seeds (ddof=1)", "recipe_differences": differences}
    ds = tabulate_runs(records, attrs=attrs)
    summary = summarize_accuracy(ds)
    results = ds.assign(accuracy_mean=summary["mean"], accuracy_sd=summary["sd"], n_seeds=summary["n_seeds"])

    fit, verdict, fit_problem = None, None, None
    try:
        fit = fit_small_data(ds)
    except DataError as exc:
        fit_problem = str(exc)
    if fit is not None:
        coef = fit.coefficients()
        results = results.assign_coords(term=np.asarray(coef.index, dtype=str))
        for col, name in (("GLM log-odds", "glm_coef"), ("GLM se", "glm_se"), ("OLS pp", "ols_coef"),
                          ("OLS se", "ols_se")):
            results[name] = ("term", coef[col].to_numpy())
        results.attrs.update({"formula": f"accuracy ~ {FORMULA}", "glm_dispersion": fit.dispersion,
                              "reference_model": fit.reference})
        if fit.lack_of_fit:
            results.attrs["lack_of_fit_pvalue"] = fit.lack_of_fit["pvalue"]
        try:
            verdict = assess_small_data_advantage(fit)
        except DataError as exc:
            fit_problem = str(exc)
    if verdict is not None:
        results.attrs.update({"verdict": verdict["verdict"], "verdict_size": verdict["size"],
                              "ols_verdict": verdict["ols_verdict"], "verdict_text": verdict["text"]})
    return SmallDataStudy(ds, summary, results, fit, verdict, fit_problem)


def runs_table(records):
    """Every run, one row each (accuracies in %), for the report."""
    return pd.DataFrame([{"model": r["model"], "size": r["size"], "seed": r["seed"], "epochs": r["epochs"],
                          "steps": r["steps"], "train acc last epoch (%)": 100 * r["train_acc"],
                          "test acc (%)": 100 * r["n_correct"] / r["n_images"], "NFE per batch": r["nfe"],
                          "checkpoint": r["checkpoint"]} for r in records]).set_index("model")


def epochs_text(records):
    """The training length of the runs in SGD steps (one number, or the range).

    >>> epochs_text([{"steps": 90}, {"steps": 90}]), epochs_text([{"steps": 90}, {"steps": 40}])
    ('90 SGD steps per run', '40–90 SGD steps per run')
    """
    steps = sorted({int(r["steps"]) for r in records})
    return (f"{steps[0]} SGD steps per run" if len(steps) == 1 else
            f"{steps[0]}–{steps[-1]} SGD steps per run")


def small_data_report(study, records, *, source, skipped=()):
    """The report: the paper's claim, the runs, accuracy per size, the fit and the verdict.

    Parameters
    ----------
    study : SmallDataStudy
        :func:`compute_small_data` of ``records``.
    records : list of dict
        :func:`evaluate_runs`.
    source : str
        Where the runs came from (a sentence fragment, Markdown).
    skipped : sequence of (str, int, int)
        Unfinished runs left out: checkpoint, epoch reached, epochs planned.

    Returns
    -------
    :class:`~dcnbio.reports.report.Report`
    """
    ds, fit, verdict, fit_problem = study.table, study.fit, study.verdict, study.problem
    attrs, differences = ds.attrs, ds.attrs["recipe_differences"]
    report = Report("Small data (paper Table 2a): accuracy against training images per class")
    report.section("Claim")
    paper = pd.DataFrame({m: v for m, v in PAPER_TABLE_2A.items()}, index=pd.Index(PAPER_SIZES,
                                                                                   name="images per class"))
    report.text("Paper Table 2a (CIFAR-10, full width, mean of 3 runs; test accuracy in %). The claim is the "
                f"DCN's advantage at small sizes: `{DCN}` ahead of both baselines, by 3–6 pp below 1000 images "
                "per class.").table(paper, "Paper Table 2a: test accuracy (%)")
    report.section("Runs")
    report.text(f"{len(records)} finished runs from {source}, each evaluated (its `last.pt`: no checkpoint "
                f"selection) on {attrs['eval_images']}, in batches of {attrs['eval_batch_size']}.")
    if skipped:
        report.text("Unfinished runs (skipped): " + "; ".join(f"`{p}` at epoch {e} of {n}"
                                                               for p, e, n in skipped) + ".")
    missing = [f"{m} n{int(s)} seed{int(k)}" for m in ds["model"].values for s in ds["size"].values
               for k in ds["seed"].values if int(ds["n_images"].sel(model=m, size=s, seed=k)) == 0]
    if missing:
        report.text("Cells of the model × size × seed grid without a run: " + ", ".join(missing) + ".")
    if differences:
        report.text("**The runs were not all trained with one recipe**; they differ in " +
                    "; ".join(f"{k}: {', '.join(v)}" for k, v in differences.items()) + ".")
    else:
        report.text("Apart from model, size, seed and epochs, every run has the same training configuration.")
    report.table(runs_table(records), "Every run (NFE: forward evaluations per evaluation batch, summed over ODE "
                                      "blocks)")

    report.section("Accuracy per size")
    report.table(format_summary(study.summary), "Test accuracy (%), mean ± SD over seeds (number of seeds)")
    report.figure("small_data.png", "Accuracy against training images per class (log x): mean ± SD over seeds, "
                                    "single runs as dots, GLM fit as lines; right: paper Table 2a")
    report.section(f"Fit: accuracy ~ {FORMULA}")
    if fit is None:
        report.text(f"No fit: {fit_problem}.")
    else:
        report.text(f"Reference model `{fit.reference}` (treatment coding): `C(model)[T.b]` is model b minus the "
                    f"reference at one image per class, `C(model)[T.b]:np.log(size)` the difference of their slopes "
                    f"per e-fold of data. The verdict's model is a quasi-binomial GLM (logit link) of the fraction "
                    f"correct, weighted by the images evaluated, with the dispersion estimated from Pearson's χ² "
                    f"(here {fit.dispersion:.3g}: the run-to-run spread relative to binomial); OLS on the accuracy "
                    f"in % gives the same contrasts in pp. Why the GLM: see `dcnbio.stats.small_data`.")
        report.table(fit.coefficients(), "Coefficients (GLM in log-odds, OLS in pp)")
        if fit.lack_of_fit:
            lof = fit.lack_of_fit
            report.text(f"Lack of fit of the line in log size (OLS against one mean per model and size): "
                        f"F({lof['df_num']}, {lof['df_den']}) = {lof['F']:.3g}, p = {lof['pvalue']:.3g}"
                        + (" — **the straight line is rejected**; contrasts at a size lean on it."
                           if lof["pvalue"] < 0.05 else " — not rejected."))
        for note in fit.notes:
            report.text(f"Note: {note}.")
        if fit_problem:
            report.text(f"No verdict: {fit_problem}.")
        if fit.reference == DCN and len(fit.models) > 1:
            adv = fit.advantage()
            cols = ["GLM pp", "GLM pp low", "GLM pp high", "GLM p", "OLS pp", "OLS low", "OLS high", "OLS p"]
            adv_t = adv[cols].reset_index().set_index("size")
            report.table(adv_t, f"{DCN} minus each baseline at each size (pp, 95 % intervals; GLM p from the "
                                "log-odds contrast)")
        report.latex(fit.to_latex(), fit.summary_text())
    report.section("Verdict")
    if verdict is not None:
        report.text(verdict["text"])
    else:
        report.text(f"No verdict: {fit_problem}.")
    report.text(f"Scale: {attrs['dataset']}, width {records[0]['width']}, {epochs_text(records)}; the paper's "
                "numbers are CIFAR-10 at full width with 52–1024 images per class and 100 epochs ×10/×5/×2. Compare "
                "the ordering of the models and the size of their gaps, not the accuracies.")
    return report


def summary_lines(study):
    """The script's closing lines: accuracy per size (mean ± SD over seeds) and the verdict, or why there is none."""
    lines = [format_summary(study.summary).to_string()]
    if study.verdict is not None:
        lines.append(f"verdict at n{study.verdict['size']}: {study.verdict['verdict']} "
                     f"(OLS: {study.verdict['ols_verdict']})")
        lines.append(study.verdict["text"].replace("**", ""))
    else:
        lines.append(f"no verdict: {study.problem}")
    return lines
