"""Figures of the solver audit: accuracy and NFE against tolerance or step count."""
import numpy as np
from matplotlib.figure import Figure



def plot_solver_audit(results, axes=None):
    """Accuracy against mean total NFE per batch for every setting, one line per solver family and model.

    Parameters
    ----------
    results : dict of str → xarray.Dataset
        Model label → :func:`compute_solver_audit` result.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if axes is None:
        fig = Figure(figsize=(5.5 * len(results), 3.6), layout="constrained")
        axes = fig.subplots(1, len(results), squeeze=False)[0]
    fig = axes[0].figure
    for ax, (label, ds) in zip(axes, results.items()):
        own = ds.isel(setting=int(np.flatnonzero(ds["is_own"].values)[0]))
        for k, solver in enumerate(dict.fromkeys(ds["solver"].values[~ds["is_own"].values].astype(str))):
            part = ds.isel(setting=np.flatnonzero((ds["solver"].values == solver) & ~ds["is_own"].values))
            order = np.argsort(part["nfe_total"].values)
            ax.plot(part["nfe_total"].values[order], 100 * part["accuracy"].values[order], "o-", color=f"C{k}",
                    ms=4, label=solver)
        ax.plot(float(own["nfe_total"]), 100 * float(own["accuracy"]), "k*", ms=11, label="own setting")
        ax.set_xscale("log")
        ax.set_xlabel("forward NFE per batch, all ODE blocks")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(label, fontsize="medium")
        ax.legend(fontsize="x-small", frameon=False)
    return fig
