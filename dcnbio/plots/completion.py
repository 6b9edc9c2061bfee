"""Figures of pattern completion: D(t) per normaliser, accuracy under masking, example masked images."""
import numpy as np
from matplotlib.figure import Figure

from ..errors import DataError
from ..extract.completion import NORMALIZERS, NORMALIZER_LABELS


def plot_differences(results, mask, *, normalizers=NORMALIZERS, axes=None):
    """Mean D(t) ± SD over images per block, one column per model and one row per normaliser (Fig. 4a, 7).

    Parameters
    ----------
    results : dict of str → xarray.Dataset
        Model label → :func:`compute_pattern_completion` result.
    mask : int
        Mask size to show.
    normalizers : sequence of str
    axes : 2-D array of Axes ``(len(normalizers), len(results))``, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    labels = list(results)
    if axes is None:
        fig = Figure(figsize=(3.3 * len(labels), 2.6 * len(normalizers)), layout="constrained")
        axes = fig.subplots(len(normalizers), len(labels), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(len(normalizers), len(labels))
        fig = axes[0, 0].figure
    for col, label in enumerate(labels):
        ds = results[label]
        if mask not in ds["mask"].values:
            raise DataError(f"mask size {mask} was not computed for {label}")
        res = ds.attrs.get("block_type") == "res"
        for row, norm in enumerate(normalizers):
            ax = axes[row, col]
            for j, b in enumerate(ds["block"].values):
                mean = ds["D_mean"].sel(mask=mask, block=b, normalizer=norm).values
                sd = ds["D_sd"].sel(mask=mask, block=b, normalizer=norm).values
                t = ds["time"].values
                if res:
                    ax.errorbar(t + 0.03 * (j - 1), mean, yerr=sd, fmt="o-", color=f"C{j}", ms=4, capsize=3, label=b)
                else:
                    ax.plot(t, mean, color=f"C{j}", label=b)
                    ax.fill_between(t, mean - sd, mean + sd, color=f"C{j}", alpha=0.2, lw=0)
            if row == 0:
                ax.set_title(f"{label} (n = {mask})", fontsize="medium")
            if col == 0:
                ax.set_ylabel(f"D, {NORMALIZER_LABELS.get(norm, norm)}", fontsize="small")
            if row == len(normalizers) - 1:
                ax.set_xlabel("block input (0) / output (1)" if res else "integration time t")
            if res:
                ax.set_xticks([0, 1])
    axes[0, 0].legend(fontsize="x-small", frameon=False)
    return fig


def plot_masked_accuracy(results, ax=None):
    """Accuracy against mask size per model, the intact accuracy at n = 0 (Fig. 3c)."""
    if ax is None:
        fig = Figure(figsize=(4.5, 3.2), layout="constrained")
        ax = fig.subplots()
    fig = ax.figure
    for k, (label, ds) in enumerate(results.items()):
        sizes = ds["mask"].values
        acc = ds["accuracy"].values
        if 0 not in sizes:
            sizes, acc = np.r_[0, sizes], np.r_[float(ds["accuracy_intact"]), acc]
        ax.plot(sizes, 100 * acc, "o-", color=f"C{k}", ms=4, label=label)
    ax.set_xlabel("mask size n (n×n pixels, centred)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize="x-small", frameon=False)
    return fig


def plot_examples(ds, *, n_panels=5):
    """Example feature maps: intact, masked and |difference| of one channel at several times (Fig. 4a, 6).

    Parameters
    ----------
    ds : xarray.Dataset
        A :func:`compute_pattern_completion` result with examples.
    n_panels : int
        Times shown (evenly spaced over the grid; ResNets show input and output).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if "example_intact" not in ds:
        raise DataError("no example feature maps in this result (n_examples = 0)")
    times = ds["time"].values
    cols = np.unique(np.linspace(0, len(times) - 1, min(n_panels, len(times))).round().astype(int))
    n_ex = ds.sizes["example"]
    fig = Figure(figsize=(1.6 * len(cols) + 0.8, 1.6 * 3 * n_ex), layout="constrained")
    axes = fig.subplots(3 * n_ex, len(cols), squeeze=False)
    for e in range(n_ex):
        a = ds["example_intact"].isel(example=e).values
        m = ds["example_masked"].isel(example=e).values
        lim = max(np.abs(a[cols]).max(), np.abs(m[cols]).max())
        dlim = np.abs(a - m)[cols].max() or 1.0
        for r, (name, arr, kw) in enumerate((("intact", a, dict(cmap="RdBu_r", vmin=-lim, vmax=lim)),
                                             ("masked", m, dict(cmap="RdBu_r", vmin=-lim, vmax=lim)),
                                             ("|diff|", np.abs(a - m), dict(cmap="magma", vmin=0, vmax=dlim)))):
            for c, ti in enumerate(cols):
                ax = axes[3 * e + r, c]
                ax.imshow(arr[ti], **kw)
                ax.set_xticks([])
                ax.set_yticks([])
                if 3 * e + r == 0:
                    ax.set_title(f"t = {times[ti]:.3g}", fontsize="small")
                if c == 0:
                    ax.set_ylabel(f"img {int(ds['example_image'].values[e])} ch {int(ds['example_channel'].values[e])}"
                                  f"\n{name}", fontsize="x-small")
    fig.suptitle(f"{ds.attrs.get('model_name', '')}: {ds.attrs.get('example_block', '')}, "
                 f"{int(ds.attrs.get('example_mask', 0))}×{int(ds.attrs.get('example_mask', 0))} mask",
                 fontsize="small")
    return fig
