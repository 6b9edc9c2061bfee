"""Figures of in-silico electrophysiology: tuning curves of example units, tuning-property histograms against
V1, response latency against contrast."""
import math

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .common import INIT_COLOR, TRAINED_COLOR, new_axes


def plot_tuning_examples(props, units, axes=None):
    """Tuning curves of example units: SF (log axis), orientation, contrast response with its Naka–Rushton fit,
    and the evoked time course per contrast — one row per unit.

    Parameters
    ----------
    props : xarray.Dataset
        One network's :func:`~dcnbio.stats.physiology.tuning_properties` (dim ``unit``).
    units : sequence of int
        ``unit`` coordinate values to draw.
    axes : array of Axes ``(len(units), 4)``, optional
    """
    from ..stats.physiology import naka_rushton

    if axes is None:
        fig = Figure(figsize=(12, 2.6 * len(units)), layout="constrained")
        axes = fig.subplots(len(units), 4, squeeze=False)
    for row, u in zip(axes, units):
        p = props.sel(unit=u)
        name = f"{p.block.item()} ch {int(p.channel)}" if "block" in p.coords else f"unit {u}"
        row[0].plot(p.sf.values, p.sf_curve.values, "o-", ms=3)
        row[0].set(xscale="log", xlabel="spatial frequency (cycles/pixel)", ylabel="evoked response")
        row[0].set_title(f"{name}: pref {float(p.preferred_sf):.3g} c/px, bw {float(p.sf_bandwidth):.2g} oct",
                         fontsize=8)
        row[1].plot(p.orientation.values, p.orientation_curve.values, "o-", ms=3)
        row[1].set(xlabel="orientation (degree)")
        row[1].set_title(f"HWHH {float(p.orientation_hwhh):.3g}°, CV {float(p.circular_variance):.2f}", fontsize=8)
        c = p.contrast.values
        row[2].plot(c, p.contrast_curve.values, "o", ms=4)
        if np.isfinite(float(p.r_max)):
            cc = np.geomspace(c.min(), c.max(), 100)
            row[2].plot(cc, naka_rushton(cc, float(p.r_max), float(p.c50), float(p.n)), "-",
                        label=f"c50 {float(p.c50):.2g}, n {float(p.n):.2g}")
            row[2].legend(fontsize=7)
        row[2].set(xscale="log", xlabel="Michelson contrast")
        row[2].set_title(f"F1/F0 {float(p.f1_f0):.2f}", fontsize=8)
        row[2].set_xticks(c, [f"{v:g}" for v in c])
        for ax in row[:3:2]:
            ax.xaxis.set_minor_formatter(NullFormatter())
        for k, ci in enumerate(c):
            row[3].plot(p.time.values, p.time_course.isel(contrast=k).values, color=sns.color_palette(
                "viridis", len(c))[k], label=f"c={ci:g}")
        row[3].set(xlabel="ODE time t")
        row[3].set_title("evoked h(t) − h_blank(t)", fontsize=8)
        row[3].legend(fontsize=6)
    return axes[0][0].figure


def plot_property_histograms(values, references=None, axes=None):
    """Distributions of tuning properties, trained vs init, on the reference's bins, with V1 overlaid.

    Parameters
    ----------
    values : dict of str → (trained, init or None, label)
        Property name → pooled unit values (1-d arrays, NaN dropped here) and the axis label with units.
    references : dict of str → xarray.DataArray, optional
        Property name → binned V1 counts (``bin`` with ``bin_low``/``bin_high``), drawn as a step density;
        without one the model histogram uses 20 bins over its range.
    axes : array of Axes, optional
    """
    references = references or {}
    if axes is None:
        rows = math.ceil(len(values) / 3)
        fig = Figure(figsize=(12, 3.2 * rows), layout="constrained")
        axes = fig.subplots(rows, 3, squeeze=False).ravel()
        for ax in axes[len(values):]:
            ax.set_visible(False)
    for ax, (name, (trained, init, label)) in zip(axes, values.items()):
        trained = np.asarray(trained, float)[np.isfinite(trained)]
        ref = references.get(name)
        if ref is not None:
            bins = np.append(ref.bin_low.values, ref.bin_high.values[-1]).astype(float)
            counts = np.asarray(ref.values, float)
            ax.stairs(counts / counts.sum() / np.diff(bins), bins, color="k", lw=1.5,
                      label=f"V1 (n={int(counts.sum())})")
            lo, hi = bins[0], bins[-1]
        else:
            lo, hi = (np.min(trained), np.max(trained)) if trained.size else (0.0, 1.0)
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 21)
        clip = lambda v: np.clip(v, bins[0], bins[-1])  # noqa: E731  (out-of-range units in the end bins)
        if trained.size:
            ax.hist(clip(trained), bins=bins, density=True, color=TRAINED_COLOR, alpha=0.6,
                    label=f"trained (n={trained.size})")
        if init is not None:
            init = np.asarray(init, float)[np.isfinite(init)]
            if init.size:
                ax.hist(clip(init), bins=bins, density=True, histtype="step", color=INIT_COLOR, lw=1.5,
                        label=f"init (n={init.size})")
        ax.set(xlabel=label, ylabel="density", xlim=(lo, hi))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no unit with a defined value", ha="center", va="center", transform=ax.transAxes)
    return axes[0].figure


def plot_latency_contrast(latency, ax=None):
    """Median half-rise time against contrast, one line per seed and model (V1: latency grows as contrast falls).

    Parameters
    ----------
    latency : dict of str → xarray.DataArray
        Model name → ``latency (seed, unit, contrast)``.
    """
    if ax is None:
        _, (ax,) = new_axes(1, width=4.5, height=3.2)
    for k, (name, lat) in enumerate(latency.items()):
        med = lat.median("unit", skipna=True)
        for j, s in enumerate(med.seed.values):
            ax.plot(med.contrast.values, med.sel(seed=s).values, "o-", ms=3, color=f"C{k}",
                    label=name if j == 0 else None)
    ax.set(xscale="log", xlabel="Michelson contrast", ylabel="median time to half rise (ODE time)")
    if latency:
        c = next(iter(latency.values())).contrast.values
        ax.set_xticks(c, [f"{v:g}" for v in c])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)
    return ax.figure
