"""Figures of contrast: accuracy and NFE against contrast per condition."""
from matplotlib.figure import Figure



def plot_contrast(results, axes=None):
    """Accuracy, block-1 NFE and total NFE against contrast per condition and model (Fig. 4b).

    Parameters
    ----------
    results : dict of str → xarray.Dataset
        Model label → :func:`compute_contrast` result.
    axes : sequence of 3 Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if axes is None:
        fig = Figure(figsize=(11, 3.4), layout="constrained")
        axes = fig.subplots(1, 3)
    fig = axes[0].figure
    styles = {"naive": "-", "block1-T": "--", "all-blocks": ":", "atol-control": "-."}
    for k, (label, ds) in enumerate(results.items()):
        c = ds["contrast"].values
        first = str(ds["block"].values[0])
        for cond in ds["condition"].values:
            kw = dict(color=f"C{k}", ls=styles.get(str(cond), "-"), marker="o", ms=3)
            axes[0].plot(c, 100 * ds["accuracy"].sel(condition=cond).values, label=f"{label}: {cond}", **kw)
            axes[1].plot(c, ds["nfe_mean"].sel(condition=cond, block=first).values, **kw)
            axes[2].plot(c, ds["nfe_total"].sel(condition=cond).values, **kw)
    for ax, ylabel in zip(axes, ("accuracy (%)", "forward NFE, first ODE block (per batch)",
                                 "forward NFE, all ODE blocks (per batch)")):
        ax.set_xscale("log", base=2)
        ticks = sorted({float(c) for ds in results.values() for c in ds["contrast"].values})
        ax.set_xticks(ticks, [f"{c:g}" for c in ticks])
        ax.minorticks_off()
        ax.set_xlabel("contrast c")
        ax.set_ylabel(ylabel)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize="x-small", frameon=False)
    return fig
