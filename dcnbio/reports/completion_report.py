"""The tables and report of ``analyses/pattern_completion.py`` (pandas out; the computation is in
:mod:`dcnbio.extract.completion`).

* :func:`run_values` — one value per training run (block D(end)/D(0) per normaliser, accuracies), the unit of the
  tests across runs;
* :func:`across_runs` — mean ± SD per model, the one-sample test of ln D-ratio = 0 and Welch comparisons;
* :func:`completion_report` — the whole report; :func:`summary_lines` — the script's closing lines.
"""
import numpy as np
import pandas as pd

from ..extract.completion import NORMALIZER_LABELS, NORMALIZERS
from .report import Report
from ..stats.runs import against_reference, compare_models, pool_runs, run_model, run_series

__all__ = ["accuracy_table", "across_runs", "completion_report", "d_table", "ratio_vs_mask", "run_values",
           "summary_lines"]


def accuracy_table(results):
    """Accuracy (%) intact and under each mask size, one row per model."""
    rows = {}
    for label, ds in results.items():
        row = {"intact": 100 * float(ds["accuracy_intact"])}
        row.update({f"n={int(n)}": 100 * float(a) for n, a in zip(ds["mask"].values, ds["accuracy"].values)})
        rows[label] = row
    df = pd.DataFrame(rows).T
    df.index.name = "model"
    return df


def d_table(results, mask):
    """Mean D at block input and output, the ratio of means, and the share of images whose D decreased."""
    rows = []
    for label, ds in results.items():
        for b in ds["block"].values:
            row = {"model / block": f"{label} / {b}"}
            for norm in NORMALIZERS:
                d = ds["D"].sel(mask=mask, block=b, normalizer=norm)
                first, last = d.isel(time=0).values.astype(float), d.isel(time=-1).values.astype(float)
                row[f"{norm}: D(0)"] = float(np.mean(first))
                row[f"{norm}: D(end)"] = float(np.mean(last))
                row[f"{norm}: ratio"] = float(np.mean(last) / np.mean(first)) if np.mean(first) else np.nan
                if norm != "per_element":  # amplitude_0 and per_element decrease for the same images
                    row[f"{norm}: share decreased"] = float(np.mean(last < first))
            rows.append(row)
    return pd.DataFrame(rows).set_index("model / block")


def ratio_vs_mask(results, block="block1"):
    """Mean D(end) / mean D(0) of a block against mask size, for the two amplitude normalisers."""
    rows = {}
    for label, ds in results.items():
        for norm in ("amplitude_t", "amplitude_0"):
            m = ds["D_mean"].sel(block=block, normalizer=norm)
            ratio = (m.isel(time=-1) / m.isel(time=0)).values
            rows[f"{label} / {norm}"] = {f"n={int(n)}": float(r) for n, r in zip(ds["mask"].values, ratio)}
    df = pd.DataFrame(rows).T
    df.index.name = "model / normaliser"
    return df


def run_values(results, mask, block="block1"):
    """One value per training run: block D(end)/D(0) (ratio of image means) per normaliser and accuracies (%).

    ``{quantity: Series keyed by (model, run label)}``.
    """
    values = {}
    for label, ds in results.items():
        run = (run_model(ds.attrs), label)
        d = ds["D_mean"].sel(mask=mask, block=block)
        for norm in ("amplitude_t", "amplitude_0"):
            first, last = float(d.sel(normalizer=norm)[0]), float(d.sel(normalizer=norm)[-1])
            values.setdefault(f"{block} D(end)/D(0), {norm}", {})[run] = last / first if first else np.nan
        values.setdefault("accuracy intact (%)", {})[run] = 100 * float(ds["accuracy_intact"])
        values.setdefault(f"accuracy n={mask} (%)", {})[run] = 100 * float(ds["accuracy"].sel(mask=mask))
    return {name: run_series(v) for name, v in values.items()}


def across_runs(results, mask, block="block1"):
    """Tables over training runs: mean ± SD per model, the one-sample test of log D-ratio = 0, Welch comparisons."""
    values = run_values(results, mask, block)
    pooled = pd.DataFrame({name: pool_runs(v).apply(
        lambda r: f"{r['mean']:.3g} ± {r['sd']:.2g}" if r["n_runs"] > 1 else f"{r['mean']:.3g}", axis=1)
        for name, v in values.items()})
    pooled.insert(0, "runs", pool_runs(next(iter(values.values())))["n_runs"])
    pooled.index.name = "model"
    tests = []
    for norm in ("amplitude_t", "amplitude_0"):
        logs = np.log(values[f"{block} D(end)/D(0), {norm}"])
        res = against_reference(logs, 0.0)
        res.insert(0, "normaliser", norm)
        tests.append(res)
    tests = pd.concat(tests).rename(columns={"mean": "mean log ratio", "sd": "SD log ratio"})
    comparisons = pd.concat({name: compare_models(values[name]) for name in
                             (f"{block} D(end)/D(0), amplitude_0", f"accuracy n={mask} (%)")},
                            names=["quantity"]).reset_index(level="quantity")
    return pooled, tests, comparisons


def completion_report(results, inputs, *, example_mask, fill, split, n_times, n_examples, missing=()):
    """The report: inputs, masked accuracy, D(t) at the example mask, tests across runs, D-ratio vs mask size.

    Parameters
    ----------
    results : dict of str → xarray.Dataset
        Label → :func:`~dcnbio.extract.completion.compute_pattern_completion`.
    inputs : list of (label, info, model, dataset name, number of images)
    example_mask : int
    fill : ``"black"`` or ``"mean"``
    split : str
    n_times, n_examples : int
    missing : sequence of str
    """
    report = Report("Pattern completion in block feature maps")
    report.section("Inputs")
    inputs = pd.DataFrame([{"model": label, "checkpoint": info["path"], "kind": info.get("kind", ""),
                            "epoch": info.get("epoch", ""), "dataset": dataset, "split": split, "images": n,
                            "solver": model.config.solver,
                            "T": model.config.T if results[label].attrs["block_type"] == "ode" else np.nan}
                           for label, info, model, dataset, n in inputs]).set_index("model")
    report.table(inputs, "Checkpoints and evaluation images")
    if missing:
        report.text("Default checkpoints not found (skipped): " + ", ".join(f"`{m}`" for m in missing) + ".")
    fill_text = ("a zero pixel value, i.e. −mean/std in normalised units (the paper's zero masks)"
                 if fill == "black" else "the dataset mean, 0 in normalised units")
    report.text(f"Centred n×n masks (rows/columns (H − n)//2 …) filled with {fill_text}. States h(t) are read from "
                f"the solve at {n_times} times over [0, T] (ResNet blocks: 0 = input, 1 = output). Masked "
                "images are solved in the same batches as their intact versions (so n = 0 gives D = 0 exactly); "
                "for n > 0 the adaptive solver steps differently for the two batches, so D carries the solver error "
                "(≈ the tolerance, 1e-3 relative) as a floor.")
    report.bullets([f"`{k}`: {v}" for k, v in NORMALIZER_LABELS.items()] +
                   ["`amplitude_0` and `per_element` differ by a constant per image, so their D(end)/D(0) per "
                    "image are equal; `amplitude_t` divides by an amplitude that grows with t under GroupNorm "
                    "dynamics, so a falling `amplitude_t` D alone is no evidence of completion."])
    report.section("Masked accuracy").table(accuracy_table(results), "Accuracy (%) against mask size n")
    report.figure("masked_accuracy.png", "Accuracy against mask size (n = 0: intact)")
    report.section(f"D(t) for the {example_mask}×{example_mask} mask")
    report.table(d_table(results, example_mask),
                 f"Mean D at the block input (t = 0) and output (t = T; ResNet: 1), ratio of the means, and the share "
                 f"of images whose D decreased (n = {example_mask})")
    report.figure("completion_D.png", "Mean D(t) ± SD over images per block; rows: normaliser")
    report.section("Across training runs")
    pooled, tests, comparisons = across_runs(results, example_mask)
    report.text("Each training run contributes one value (its mean over images); the ± here is the SD over runs "
                "(seeds) of a model, which is what a claim about the model needs, unlike the SD over images above. "
                "With three runs a t-test needs |t| > 4.30 for p < 0.05.")
    report.table(pooled, f"Mean ± SD over runs (n = {example_mask} mask)")
    report.table(tests, "Does D change within block 1 across runs? Two-sided one-sample t-test of "
                        "ln(D(end)/D(0)) = 0 (a negative mean: D falls, as the paper claims; NaN: fewer than two runs)")
    report.table(comparisons, "Differences between models across runs (Welch's t-test)")
    report.section("Completion against mask size")
    report.table(ratio_vs_mask(results), "Block 1: mean D(end) / mean D(0) against mask size")
    if n_examples:
        report.section("Example feature maps")
        for label in results:
            report.figure(f"examples_{label}.png", f"{label}: block 1, the channel the mask changes most at t = 0")
    return report


def summary_lines(results, mask):
    """One line per model: accuracy intact and at the largest mask, block-1 D(end)/D(0) at ``mask``."""
    lines = []
    for label, ds in results.items():
        d = ds["D_mean"].sel(mask=mask, block="block1")
        ratios = ", ".join(f"{norm} {float(d.sel(normalizer=norm)[-1] / d.sel(normalizer=norm)[0]):.3g}"
                           for norm in ("amplitude_t", "amplitude_0"))
        lines.append(f"  {label}: accuracy intact {100 * float(ds['accuracy_intact']):.1f}%, "
                     f"n={int(ds['mask'].values[-1])} {100 * float(ds['accuracy'].values[-1]):.1f}%; "
                     f"block1 D(end)/D(0) at n={mask}: {ratios}")
    return lines
