"""Figures of reconstruction: originals against each model's decoded image."""
import numpy as np
from matplotlib.figure import Figure

from ..errors import DataError


def _display(img, lo, hi):
    """``(C, y, x)`` → an image for imshow, scaled by the column's original range."""
    x = np.clip((np.asarray(img, dtype=float) - lo) / max(hi - lo, 1e-12), 0, 1)
    return x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)


def plot_reconstructions(results, *, n_examples=6, fig=None):
    """Originals (top row) and each model's reconstruction (one row per model) of the same images.

    Parameters
    ----------
    results : dict of str → xarray.Dataset
        From :func:`compute_reconstruction`; all must hold the same ``example_image`` labels.
    n_examples : int
        Columns (at most the number of examples stored).

    Every image of a column is shown on the grey (or colour) scale spanned by that column's original, so
    intensity errors of a reconstruction stay visible.
    """
    if not results:
        raise DataError("no reconstruction results to plot")
    names = list(results)
    first = results[names[0]]
    for name in names[1:]:
        if not np.array_equal(results[name]["example_image"].values, first["example_image"].values):
            raise DataError(f"{name} holds reconstructions of other images than {names[0]}; plot them separately")
    k = min(int(n_examples), first.sizes["example"])
    if k < 1:
        raise DataError("no example reconstructions stored (n_examples = 0)")
    fig = fig or Figure(figsize=(1.3 * k + 1.2, 1.35 * (len(names) + 1)), layout="constrained")
    axes = fig.subplots(len(names) + 1, k, squeeze=False)
    originals = first["original"].values
    for j in range(k):
        lo, hi = float(originals[j].min()), float(originals[j].max())
        rows = [("original", originals[j])] + [(n, results[n]["reconstruction"].values[j]) for n in names]
        for i, (label, img) in enumerate(rows):
            ax = axes[i, j]
            ax.imshow(_display(img, lo, hi), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
            if i > 0:
                err = float(((np.asarray(img, float) - originals[j]) ** 2).mean())
                ax.set_title(f"MSE {err:.3g}", fontsize=6)
            elif i == 0:
                ax.set_title(f"image {int(first['example_image'].values[j])}", fontsize=6)
    return fig
