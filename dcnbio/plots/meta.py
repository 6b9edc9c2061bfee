"""Figures of meta-parametrized DCNs: σ(t) and α(t) curves over depth."""
import numpy as np
from matplotlib.figure import Figure



def plot_meta_curves(results, axes=None):
    """σ(t) per layer (top) and the mean α_rms(t) per derivative order (bottom) for each model.

    Parameters
    ----------
    results : dict of str → xarray.Dataset or (Dataset, Dataset or None)
        Model label → :func:`compute_meta_curves` result, or (trained, init) to draw the init curves dashed.
    axes : 2-D array of Axes ``(2, len(results))``, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if axes is None:
        fig = Figure(figsize=(4.2 * len(results), 6.0), layout="constrained")
        axes = fig.subplots(2, len(results), squeeze=False)
    fig = axes[0, 0].figure
    for col, (label, value) in enumerate(results.items()):
        trained, init = value if isinstance(value, tuple) else (value, None)
        for state, ds, ls in (("trained", trained, "-"), ("init", init, "--")):
            if ds is None:
                continue
            for k, name in enumerate(ds["layer"].values):
                b = str(ds["block"].values[k])
                color = f"C{int(b[-1]) - 1}" if b.startswith("block") and b[-1].isdigit() else "k"
                lw = 1.6 if str(ds["conv"].values[k]) == "conv1" else 0.9
                axes[0, col].plot(ds["time"].values, ds["sigma"].values[k], ls=ls, color=color, lw=lw,
                                  label=f"{b} {ds['conv'].values[k]}" if state == "trained" else None)
                axes[0, col].set_yscale("log", base=2)
            for o in np.unique(ds["basis_order"].values):
                m = ds["alpha_rms"].isel(basis=np.flatnonzero(ds["basis_order"].values == o)).mean(("layer", "basis"))
                axes[1, col].plot(ds["time"].values, m.values, ls=ls, color=f"C{int(o)}",
                                  label=f"order {int(o)}" if state == "trained" else None)
        axes[0, col].set_title(label + (" (dashed: init)" if init is not None else ""), fontsize="medium")
        axes[0, col].set_ylabel("σ(t) (px of layer input)")
        axes[1, col].set_ylabel("mean RMS α(t)")
        axes[1, col].set_xlabel("integration time t")
        axes[0, col].legend(fontsize="xx-small", frameon=False)
        axes[1, col].legend(fontsize="x-small", frameon=False)
    return fig
