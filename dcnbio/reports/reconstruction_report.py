"""The tables and report of ``analyses/reconstruction.py`` (pandas out; the computation is in
:mod:`dcnbio.extract.reconstruction`): one value per training run (:func:`run_values`), plain sentences about the
paired tests (:func:`describe_pair`) and the whole report (:func:`reconstruction_report`).
"""
import numpy as np
import pandas as pd

from .report import Report
from ..stats.runs import compare_models as compare_runs, pool_runs, run_model, run_series

__all__ = ["ALPHA", "CLAIM", "describe_pair", "fmt_p", "reconstruction_report", "run_values", "split_attrs",
           "summary_lines"]

#: The paper's Table 2b (CIFAR-10, 3 runs, the paper's units): (model, display name, mean, SD).
CLAIM = (("dcn-ode", "DCN-ODE", 17.1, 0.3), ("odenet", "ODE-Net", 20.2, 1.3),
         ("resnet-blocks", "ResNet-blocks", 21.0, 0.4))
#: Significance level of the paired tests' sentences.
ALPHA = 0.05


def fmt_p(p):
    """A p-value for a report: two significant digits, scientific below 1e-4, ``n/a`` if not finite."""
    return "n/a" if not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")


def describe_pair(row):
    """One plain sentence about a paired comparison."""
    a, b, n = row["a"], row["b"], int(row["n"])
    if n < 2 or not np.isfinite(row["p_value"]):
        return f"{a} vs {b}: {n} shared image(s), no test possible."
    lower, higher, frac = (a, b, row["fraction_a_lower"]) if row["median_difference"] <= 0 else \
        (b, a, 1 - row["fraction_a_lower"])
    verdict = (f"p = {fmt_p(row['p_value'])} < {ALPHA:g}: on these images the difference is systematic, not "
               "image-to-image noise" if row["p_value"] < ALPHA else
               f"p = {fmt_p(row['p_value'])} ≥ {ALPHA:g}: these images show no systematic difference")
    return (f"**{lower}** reconstructs with lower MSE than **{higher}** on {100 * frac:.0f} % of {n} shared images "
            f"(mean {row['mean_a']:.4g} vs {row['mean_b']:.4g} for {a} vs {b}; median difference "
            f"{row['median_difference']:+.3g}); Wilcoxon signed-rank {verdict}.")


def run_values(results):
    """One value per training run: its mean per-image MSE, keyed by ``(model, run label)`` (pooled by model)."""
    return run_series({(run_model(ds.attrs), label): float(ds["mse"].mean()) for label, ds in results.items()})


def reconstruction_report(results, comparisons, inputs, seconds, *, steps, lr, batch_size, seed, n_train, n_images,
                          n_examples, figure_note=None, missing=()):
    """The report: inputs, reconstruction error, the paper's ordering, across runs, paired tests on shared images.

    Parameters
    ----------
    results : dict of str → xarray.Dataset
        Label → :func:`~dcnbio.extract.reconstruction.compute_reconstruction`.
    comparisons : xarray.Dataset
        :func:`~dcnbio.extract.reconstruction.compare_models` of ``results``.
    inputs : list of (label, info, data)
        ``data``: ``dataset``, ``val_size``, ``split_seed`` of the run.
    seconds : dict of str → float
        Wall time of each run's decoder.
    steps, lr, batch_size, seed, n_train, n_images, n_examples
        The decoder recipe and the image counts.
    figure_note : str, optional
        Why there is no figure.
    missing : sequence of str
    """
    report = Report("Image reconstruction from frozen block-3 features")
    report.section("Inputs")
    report.table(pd.DataFrame([{
        "model": label, "checkpoint": info["path"], "epoch": info.get("epoch", ""), "step": info.get("step", ""),
        "dataset": d["dataset"], "val_size / split_seed": f"{d['val_size']} / "
                                                                   f"{d['split_seed']}",
        "train images": results[label].attrs["n_train"], "val images": results[label].attrs["n_images"],
        "encoder params": results[label].attrs["encoder_parameters"],
        "decoder params": results[label].attrs["decoder_parameters"]}
        for label, info, d in inputs]).set_index("model"), "Checkpoints, images and networks")
    if missing:
        report.text("Default checkpoints not found (skipped): " + ", ".join(f"`{m}`" for m in missing) + ".")
    first = next(iter(results.values()))
    report.text(
        f"Encoder: the trained classifier up to and including block 3, frozen (eval mode, no gradient; its "
        f"block-3 features are computed once and every encoder parameter was checked to be bit-identical after "
        f"decoder training). Decoder: block(C3) → bilinear ×2 → 1×1 conv C3→C2 → block(C2) → bilinear ×2 → GN → "
        f"act → 1×1 conv, with fresh (untied) blocks of the classifier's own kind and width. Its output "
        f"({first.attrs['crop']}×{first.attrs['crop']} px for {first.attrs['image_size']}×"
        f"{first.attrs['image_size']} px inputs) is compared with the central crop of the image. Training: SGD, lr "
        f"{lr:g}, momentum 0.9, ×0.1 after 50 % and 80 % of {steps} steps of {batch_size} images, "
        f"seed {seed}, on the first {n_train} images of each checkpoint's training split; evaluation on "
        f"the first {n_images} images of its validation split (images the classifier never trained on).")
    report.text("**Units.** MSE is the mean over pixels and channels of the squared difference in the normalised "
                "input space (images standardised per channel with the dataset's mean and SD): an MSE of 1 is an "
                "error of one training-set SD per pixel. *Mean image* is the MSE of the trivial decoder that "
                "always outputs the mean training image; *ratio* = MSE / mean-image MSE (0 is perfect, 1 is no "
                "better than the mean). The ± is the SD over images (the paper's ± is over 3 training runs).")

    report.section("Reconstruction error")
    rows = []
    for label, ds in results.items():
        loss = ds["loss"].values
        tenth = max(1, len(loss) // 10)
        rows.append({"model": label, "MSE mean": float(ds["mse"].mean()), "MSE SD": float(ds["mse"].std(ddof=1))
                     if ds.sizes["image"] > 1 else float("nan"), "MSE median": float(ds["mse"].median()),
                     "mean image": float(ds["mse_mean_image"].mean()),
                     "ratio": float(ds["mse"].mean() / ds["mse_mean_image"].mean()),
                     "train loss, first 10 %": float(loss[:tenth].mean()),
                     "train loss, last 10 %": float(loss[-tenth:].mean()),
                     "decoder NFE/step": float(ds["nfe"].mean()), "time (s)": seconds[label]})
    report.table(pd.DataFrame(rows).set_index("model"), "Per-image MSE on validation images (normalised units)")
    if figure_note:
        report.text(figure_note)
    elif n_examples:
        report.figure("reconstructions.png", "Validation images (centre crop, top) and each model's reconstruction; "
                                             "each column on the grey scale of its original")

    report.section("The paper's claim")
    report.text("Claim (Table 2b, CIFAR-10, 3 runs, the paper's units): " + " < ".join(
        f"{disp} {m:g} ± {s:g}" for _, disp, m, s in CLAIM) + " — DCN-ODE features reconstruct best. The paper's "
        "units come from min-max rescaled outputs compared with unnormalised images, so only the ordering can be "
        "compared with the numbers here.")
    by_model = {}
    for ds in results.values():
        by_model.setdefault(ds.attrs["model_name"], []).append(float(ds["mse"].mean()))
    present = [(name, disp) for name, disp, _, _ in CLAIM if name in by_model]
    if len(present) >= 2:
        means = {name: float(np.mean(by_model[name])) for name, _ in present}
        observed = sorted(present, key=lambda p: means[p[0]])
        same = [p[0] for p in observed] == [p[0] for p in present]
        report.text("Observed (mean over images, and over checkpoints of the same model): " + " < ".join(
            f"{disp} {means[name]:.4g}" for name, disp in observed) + f". **The paper's ordering is "
            f"{'reproduced' if same else 'not reproduced'}** on these checkpoints"
            f"{'' if len(present) == len(CLAIM) else ' (only ' + ', '.join(d for _, d in present) + ' present)'}.")
        report.text("Checkpoints far from the paper's training (100 epochs on CIFAR-10 at full width; see the step "
                    "column above) make this a statement about these checkpoints, not a test of the claim at "
                    "scale.")
    else:
        report.text("Fewer than two of the paper's models are present: the ordering cannot be checked.")

    report.section("Across training runs")
    per_run = run_values(results)
    pooled = pool_runs(per_run).drop(columns="runs")
    report.table(pooled, "Mean per-image MSE of each run, pooled per model: mean ± SD over runs (seeds), as the "
                         "paper's ± (NaN SD: one run)")
    if pooled.shape[0] > 1:
        report.table(compare_runs(per_run), "Differences of the model means over runs (Welch's t-test; NaN: "
                                              "fewer than two runs of a model)")

    report.section("Paired tests on the same images")
    if comparisons.sizes["pair"]:
        table = comparisons.drop_vars(["a", "b"]).to_dataframe()
        table = table.rename(columns={"n": "images", "mean_a": "mean MSE a", "mean_b": "mean MSE b",
                                      "median_difference": "median (a − b)", "fraction_a_lower": "share a lower",
                                      "statistic": "W", "p_value": "p"})
        report.table(table, "Two-sided Wilcoxon signed-rank tests of per-image MSE differences (a − b) on shared "
                            "validation images")
        report.bullets([describe_pair(r) for _, r in comparisons.to_dataframe().iterrows()])
        report.text("The tests take images as the sampling units for one trained classifier and one trained decoder "
                    "per model. They say whether the difference is consistent across images, not whether another "
                    "training run (classifier or decoder seed) would give the same order; that needs several seeds "
                    "per model.")
    else:
        report.text("Only one checkpoint: nothing to compare.")
    return report


def summary_lines(comparisons):
    """One line per paired comparison: median difference, share of images where a is lower, Wilcoxon p."""
    return [f"  {r['a']} vs {r['b']}: median difference {r['median_difference']:+.4f}, share a lower "
            f"{100 * r['fraction_a_lower']:.0f} %, Wilcoxon p = {fmt_p(r['p_value'])}"
            for _, r in comparisons.to_dataframe().iterrows()]


def split_attrs(data):
    """Provenance attrs of a run's images (``data`` from :func:`dcnbio.script.held_out_splits`)."""
    return {"dataset": data["dataset"], "val_size": data["val_size"], "split_seed": data["split_seed"],
            "image_index": "index in the official training file",
            "train_split": "first n_train images of the checkpoint's training split",
            "eval_split": "first n_images images of the checkpoint's validation split"}
