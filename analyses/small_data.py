"""Small data (paper Table 2a): is the DCN more accurate than its baselines when training images are few?

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/small_data.py

evaluates every finished bundled run (``data/checkpoints/small-data/<model>/n<size>/seed<S>/last.pt``: dcn-ode,
odenet and resnet-blocks trained on 10, 20 and 50 Fashion-MNIST images per class, seeds 1–3; recipe in that
directory's README) on the first 1000 test images — the same images for every run — and writes
``results/small_data/``.  Train a grid first (only the runs that are missing, with the training core and the same
recipe) and analyse it::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/small_data.py --train --runs-dir runs/small-data \\
        --sizes 10 20 50 100 --seeds 1 2 3 4 5 --out results/small_data_more

Explicit runs: ``--checkpoint A/last.pt B/last.pt ...`` (each must record its subset, i.e. be trained with
``--subset``).  Paper (CIFAR-10, 52/103/512/1024 images per class): DCN-ODE 44.5/54.2/75.5/79.7 % vs ODE-Net
41.7/48.6/71.7/77.4 % vs ResNet-blocks 39.8/49.0/70.4/76.8 % — the claim is the DCN's advantage at small sizes.
The verdict comes from a quasi-binomial GLM ``accuracy ~ C(model) * np.log(size)`` at the smallest size; see
:mod:`dcnbio.analysis.small_data`.

Outputs (in ``--out``): ``small_data.nc`` (``(model, size, seed)``: accuracy, correct and evaluated images, epochs,
steps, NFE; ``(model, size)``: mean, SD, seeds; the fitted coefficients), ``small_data.png`` (accuracy against
images per class, log x, mean ± SD; the paper's table beside it), ``report.md``/``report.tex``.
"""
import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcnbio.analysis.common import evaluate
from dcnbio.script import ScriptParser, dataset_of, load_eval_images
from dcnbio.analysis.report import Report
from dcnbio.analysis.small_data import (DCN, MODEL_ORDER, PAPER_SIZES, PAPER_TABLE_2A, assess_small_data_advantage,
                                        describe_run, fit_small_data, format_summary, plot_small_data,
                                        summarize_accuracy, tabulate_runs)
from dcnbio.data import check_sizes
from dcnbio.training.grid import (DEFAULT_EPOCHS_BUDGET, check_models, plan_runs, recipe_differences,
                                  train_missing)
from dcnbio.cli import user_errors
from dcnbio.errors import CheckpointError, ConfigError, DataError
from dcnbio.io import save_figure, write_report
from dcnbio.io import prepare_output_dir, save_dataset

REPO = Path(__file__).resolve().parents[1]
RUNS_DIR = "data/checkpoints/small-data"
DEFAULT_PATTERN = RUNS_DIR + "/*/n*/seed*/last.pt"
DEFAULT_SIZES = (10, 20, 50)
DEFAULT_SEEDS = (1, 2, 3)


def build_parser():
    p = ScriptParser(prog="analyses/small_data.py", description=__doc__.split("\n")[0],
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=None, metavar="PATH",
                   help=f"run checkpoints (last.pt); default: every finished {DEFAULT_PATTERN}")
    p.add_argument("--train", action="store_true",
                   help="train the missing runs of the grid (--models x --sizes x --seeds) in --runs-dir, then "
                        "analyse exactly that grid")
    p.add_argument("--runs-dir", default=RUNS_DIR, help="grid root: <runs-dir>/<model>/n<size>/seed<S>/ (--train)")
    p.add_argument("--models", nargs="+", default=None,
                   help=f"grid models (--train; default {' '.join(MODEL_ORDER)}) or a selection of the bundled runs")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="training images per class (--train; default 10 20 50) or a selection of the bundled runs")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds (--train; default 1 2 3) or a selection of the bundled runs")
    p.add_argument("--width", type=float, default=0.25, help="width multiplier of trained runs (--train)")
    p.add_argument("--epochs-budget", type=int, default=DEFAULT_EPOCHS_BUDGET,
                   help="image passes per class of a trained run: epochs = max(1, budget // size) (--train)")
    p.add_argument("--batch-size", type=int, default=32, help="SGD batch of trained runs (--train)")
    p.add_argument("--eval-batch-size", type=int, default=128, help="images per evaluation batch")
    p.add_argument("--n-images", type=int, default=1000, help="first N test images (the same for every run)")
    p.add_argument("--out", default="results/small_data", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.add_argument("--data-root", default=None, help="dataset directory (default: the standard places)")
    return p


def log(msg):
    print(msg, flush=True)


def _check_args(args):
    if args.n_images < 1 or args.eval_batch_size < 1 or args.batch_size < 1:
        raise ConfigError("--n-images, --eval-batch-size and --batch-size must be >= 1")
    if args.train and args.checkpoint:
        raise ConfigError("--train analyses the grid it trains; give either --train or --checkpoint")
    if args.checkpoint and any(v is not None for v in (args.models, args.sizes, args.seeds)):
        raise ConfigError("--models/--sizes/--seeds select a grid (--train) or bundled runs, not --checkpoint files")
    if args.models is not None:
        check_models(args.models)
    if args.sizes is not None:
        check_sizes(args.sizes)
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds repeat: {args.seeds}")
    if args.train:
        if not args.width > 0:
            raise ConfigError(f"--width must be > 0, got {args.width:g}")
        if args.epochs_budget < 1:
            raise ConfigError(f"--epochs-budget must be >= 1, got {args.epochs_budget}")


def _load(paths, *, explicit):
    """Load every run; keep finished ones (an unfinished explicit run is an error, a bundled one is skipped)."""
    from dcnbio import load_checkpoint

    runs, skipped = [], []
    for path in paths:
        if not os.path.isfile(path):
            raise CheckpointError(f"no checkpoint file {path}")
        model, info = load_checkpoint(path)
        run = describe_run(info, path)
        if not run["finished"]:
            if explicit:
                raise CheckpointError(f"{path} is at epoch {run['epoch']} of {run['epochs']} (unfinished); finish "
                                      "it (dcnbio train --resume) or leave it out")
            skipped.append((path, run["epoch"], run["epochs"]))
            continue
        runs.append((path, model, info, run))
    order = {m: k for k, m in enumerate(MODEL_ORDER)}
    runs.sort(key=lambda r: (order.get(r[3]["model"], len(order)), r[3]["model"], r[3]["size"], r[3]["seed"]))
    return runs, skipped


def _rel(path):
    try:
        return os.path.relpath(path, REPO) if Path(path).resolve().is_relative_to(REPO) else str(path)
    except (OSError, ValueError):
        return str(path)


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    _check_args(args)
    start = time.time()
    plan = None
    if args.train:
        plan = plan_runs(args.runs_dir, args.models or MODEL_ORDER, args.sizes or DEFAULT_SIZES,
                         args.seeds or DEFAULT_SEEDS, width=args.width, epochs_budget=args.epochs_budget,
                         batch_size=args.batch_size, data_root=args.data_root)
        paths, explicit, source = None, True, f"the grid in `{args.runs_dir}`"
    elif args.checkpoint:
        paths, explicit, source = [os.fspath(p) for p in args.checkpoint], True, "the given checkpoints"
    else:
        paths = sorted(glob.glob(os.path.join(os.fspath(REPO), DEFAULT_PATTERN)))
        if not paths:
            raise CheckpointError(f"no bundled small-data runs ({DEFAULT_PATTERN} under {REPO}); train them "
                                  "(analyses/small_data.py --train, see data/checkpoints/small-data/README.md) or "
                                  "pass --checkpoint PATH")
        explicit, source = False, f"the bundled runs (`{DEFAULT_PATTERN}`)"
    if paths is not None:  # validate every given run before anything is written
        runs, skipped = _load(paths, explicit=explicit)
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))
    if plan is not None:
        t0 = time.time()
        paths = train_missing(plan, log=log)
        log(f"training done in {time.time() - t0:.0f} s")
        runs, skipped = _load(paths, explicit=True)

    if not explicit:  # selections of the bundled set
        keep = lambda r: ((args.models is None or r["model"] in args.models)  # noqa: E731
                          and (args.sizes is None or r["size"] in args.sizes)
                          and (args.seeds is None or r["seed"] in args.seeds))
        runs = [r for r in runs if keep(r[3])]
    if not runs:
        raise CheckpointError("no finished small-data runs to analyse" + (f" ({len(skipped)} unfinished)"
                                                                           if skipped else ""))
    datasets = {dataset_of(info, model) for _, model, info, _ in runs}
    if len(datasets) > 1:
        raise ConfigError(f"the runs were trained on different datasets ({', '.join(sorted(datasets))}); "
                          "analyse one dataset at a time")
    (dataset,) = datasets
    images, labels, indices, _ = load_eval_images(dataset, split="test", n_images=args.n_images,
                                                  root=args.data_root)
    n_eval = int(images.shape[0])

    records = []
    for path, model, info, run in runs:
        t0 = time.time()
        res = evaluate(model, images, labels, batch_size=args.eval_batch_size)
        n_correct = int(res["correct"].sum())
        nfe = float(res["nfe"].sum("block").mean()) if res.sizes["block"] else 0.0
        records.append({"model": run["model"], "size": run["size"], "seed": run["seed"], "n_correct": n_correct,
                        "n_images": n_eval, "epochs": run["epoch"], "steps": run["steps"],
                        "train_acc": run["train_acc"], "nfe": nfe, "checkpoint": _rel(path)})
        log(f"{run['model']:>13s} n{run['size']:<4d} seed{run['seed']}: {100 * n_correct / n_eval:5.1f} % "
            f"({run['epoch']} epochs, {run['steps']} steps; NFE {nfe:.0f}/batch) in {time.time() - t0:.1f} s")
    differences = recipe_differences([run["train_config"] for *_, run in runs])

    attrs = {"dataset": dataset, "split": "test", "n_images": n_eval, "first_image": int(indices[0]),
             "last_image": int(indices[-1]), "eval_batch_size": args.eval_batch_size,
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
        results.attrs.update({"formula": "accuracy ~ C(model) * np.log(size)", "glm_dispersion": fit.dispersion,
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
    save_dataset(results, out / "small_data.nc", overwrite=args.overwrite)
    save_figure(plot_small_data(ds, fit), out / "small_data.png", dpi=120)

    report = Report("Small data (paper Table 2a): accuracy against training images per class")
    report.section("Claim")
    paper = pd.DataFrame({m: v for m, v in PAPER_TABLE_2A.items()}, index=pd.Index(PAPER_SIZES,
                                                                                   name="images per class"))
    report.text("Paper Table 2a (CIFAR-10, full width, mean of 3 runs; test accuracy in %). The claim is the "
                f"DCN's advantage at small sizes: `{DCN}` ahead of both baselines, by 3–6 pp below 1000 images "
                "per class.").table(paper, "Paper Table 2a: test accuracy (%)")
    report.section("Runs")
    report.text(f"{len(runs)} finished runs from {source}, each evaluated (its `last.pt`: no checkpoint "
                f"selection) on {attrs['eval_images']}, in batches of {args.eval_batch_size}.")
    if skipped:
        report.text("Unfinished runs (skipped): " + "; ".join(f"`{_rel(p)}` at epoch {e} of {n}"
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
    table = pd.DataFrame([{"model": r["model"], "size": r["size"], "seed": r["seed"], "epochs": r["epochs"],
                           "steps": r["steps"], "train acc last epoch (%)": 100 * r["train_acc"],
                           "test acc (%)": 100 * r["n_correct"] / r["n_images"], "NFE per batch": r["nfe"],
                           "checkpoint": r["checkpoint"]} for r in records]).set_index("model")
    report.table(table, "Every run (NFE: forward evaluations per evaluation batch, summed over ODE blocks)")

    report.section("Accuracy per size")
    report.table(format_summary(summary), "Test accuracy (%), mean ± SD over seeds (number of seeds)")
    report.figure("small_data.png", "Accuracy against training images per class (log x): mean ± SD over seeds, "
                                    "single runs as dots, GLM fit as lines; right: paper Table 2a")
    report.section("Fit: accuracy ~ C(model) * np.log(size)")
    if fit is None:
        report.text(f"No fit: {fit_problem}.")
    else:
        report.text(f"Reference model `{fit.reference}` (treatment coding): `C(model)[T.b]` is model b minus the "
                    f"reference at one image per class, `C(model)[T.b]:np.log(size)` the difference of their slopes "
                    f"per e-fold of data. The verdict's model is a quasi-binomial GLM (logit link) of the fraction "
                    f"correct, weighted by the images evaluated, with the dispersion estimated from Pearson's χ² "
                    f"(here {fit.dispersion:.3g}: the run-to-run spread relative to binomial); OLS on the accuracy "
                    f"in % gives the same contrasts in pp. Why the GLM: see `dcnbio.analysis.small_data`.")
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
    report.text(f"Scale: {dataset}, width {runs[0][3]['width']}, {_epochs_text(records)}; the paper's numbers are "
                "CIFAR-10 at full width with 52–1024 images per class and 100 epochs ×10/×5/×2. Compare the "
                "ordering of the models and the size of their gaps, not the accuracies.")
    write_report(report, out)

    log("")
    log(format_summary(summary).to_string())
    if verdict is not None:
        log(f"verdict at n{verdict['size']}: {verdict['verdict']} (OLS: {verdict['ols_verdict']})")
        log(verdict["text"].replace("**", ""))
    else:
        log(f"no verdict: {fit_problem}")
    log(f"wrote small_data.nc, small_data.png and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


def _epochs_text(records):
    steps = sorted({int(r["steps"]) for r in records})
    return (f"{steps[0]} SGD steps per run" if len(steps) == 1 else
            f"{steps[0]}–{steps[-1]} SGD steps per run")


if __name__ == "__main__":
    sys.exit(main())
