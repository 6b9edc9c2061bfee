"""Figures of the small-data regime: accuracy against training-set size, the fitted curves, the paper's Table 2a."""
import numpy as np
from matplotlib.figure import Figure

from ..stats.small_data import MODEL_ORDER, PAPER_SIZES, PAPER_TABLE_2A, summarize_accuracy


def plot_small_data(ds, fit=None, ax=None, *, paper=True):
    """Accuracy against training images per class (log x): mean ± SD over seeds per model, single runs as dots.

    Parameters
    ----------
    ds : xarray.Dataset
        A :func:`tabulate_runs` table.
    fit : SmallDataFit, optional
        Draws the GLM's fitted curve of each model.
    ax : matplotlib Axes, optional
        Draw the runs here (then no paper panel).
    paper : bool
        Without ``ax``: a second panel with paper Table 2a (CIFAR-10) for the shape of the claim.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if ax is None:
        fig = Figure(figsize=(9.0 if paper else 4.8, 3.6), layout="constrained")
        axes = fig.subplots(1, 2 if paper else 1, squeeze=False)[0]
        ax = axes[0]
    else:
        fig, axes = ax.figure, [ax]
    summary = summarize_accuracy(ds)
    colors = {m: f"C{k}" for k, m in enumerate(MODEL_ORDER)}
    sizes = ds["size"].values.astype(float)
    span = np.geomspace(sizes.min(), sizes.max(), 50) if sizes.size else sizes
    n_models = ds.sizes["model"]
    for k, model in enumerate(ds["model"].values):
        model = str(model)
        color = colors.get(model, f"C{3 + k}")
        x = sizes * 1.04 ** (k - (n_models - 1) / 2)  # side by side, so the error bars do not overlap
        acc = 100 * ds["accuracy"].sel(model=model)
        for seed in ds["seed"].values:
            ax.plot(x, acc.sel(seed=seed).values, "o", ms=3, color=color, alpha=0.35, lw=0)
        s = summary.sel(model=model)
        have = s["n_seeds"].values > 0
        ax.errorbar(x[have], 100 * s["mean"].values[have], yerr=100 * np.nan_to_num(s["sd"].values[have]),
                    fmt="-" if fit is None else "s", color=color, capsize=3, ms=4, label=model)
        if fit is not None and model in fit.models:
            ax.plot(span, fit.predict(model, span)[0], "-", color=color, lw=1, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(int(s)) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training images per class")
    ax.set_ylabel("test accuracy (%)")
    title = ds.attrs.get("dataset", "")
    ax.set_title(f"these runs{f' ({title})' if title else ''}: mean ± SD" + ("; lines: GLM" if fit else ""),
                 fontsize=9)
    ax.legend(fontsize=8)
    if len(axes) > 1:
        pax = axes[1]
        for model, values in PAPER_TABLE_2A.items():
            pax.plot(PAPER_SIZES, values, "o-", color=colors[model], label=model, ms=4)
        pax.set_xscale("log")
        pax.set_xticks(PAPER_SIZES)
        pax.set_xticklabels([str(s) for s in PAPER_SIZES])
        pax.minorticks_off()
        pax.set_xlabel("training images per class")
        pax.set_ylabel("test accuracy (%)")
        pax.set_title("paper Table 2a (CIFAR-10, mean of 3)", fontsize=9)
        pax.legend(fontsize=8)
    return fig
