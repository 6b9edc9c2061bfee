"""Figures: σ histograms per block (Fig. 3b), σ vs depth (Fig. 3a), and tuning of model units (gratings).

Figures are built on :class:`matplotlib.figure.Figure` objects, which render with the Agg backend without
touching pyplot or the user's backend; pass ``ax``/``axes`` to draw into your own figure instead.

Histograms use seaborn's ``histplot(log_scale=True, stat="density")``: bins are equal on a log10 axis and the
bar heights are a density *per log10 unit*.  A fitted log-normal must be drawn in the same units,
``x · ln 10 · pdf(x)`` (:func:`lognormal_log10_density`), not ``pdf(x)``.
"""
import math

import numpy as np
import scipy.stats as st
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .errors import DataError
from .stats.sigmas import filter_mask, select
from .stats.distribution import block_order, fit_lognormal

TRAINED_COLOR = "C0"
INIT_COLOR = "0.55"
#: Fewest values for which a histogram gets a fitted density overlay.
MIN_FIT = 8


def lognormal_log10_density(x, fit):
    """Density of a fitted log-normal per unit of log10 x, for overlays on log-scaled histograms.

    If X is log-normal with density p(x), then u = log10 X has density p(x) · dx/du = x · ln 10 · p(x).

    Parameters
    ----------
    x : array-like
        Points (> 0) on the σ axis.
    fit : pandas.Series or dict
        From :func:`~dcnbio.stats.distribution.fit_lognormal` (``shape``, ``scale``).
    """
    x = np.asarray(x, dtype=float)
    return x * math.log(10.0) * st.lognorm.pdf(x, fit["shape"], loc=0.0, scale=fit["scale"])


def _new_axes(n, width=3.2, height=2.8):
    fig = Figure(figsize=(width * n, height), layout="constrained")
    return fig, fig.subplots(1, n, squeeze=False)[0]


def _states(ds):
    if "state" not in ds.coords:
        return {"trained": ds}
    present = set(ds["state"].values.astype(str))
    return {s: select(ds, state=s) for s in ("trained", "init") if s in present}


def _draw_hist(ax, values, color, label, fill, bins):
    sns.histplot(x=values, log_scale=True, stat="density", bins=bins, ax=ax, color=color, label=label,
                 element="bars" if fill else "step", fill=fill, alpha=0.45 if fill else 1.0)
    if values.size >= MIN_FIT:
        fit = fit_lognormal(values)
        xs = np.geomspace(values.min() / 1.5, values.max() * 1.5, 300)
        ax.plot(xs, lognormal_log10_density(xs, fit), color=color, lw=1.5, ls="-" if fill else "--",
                label=f"{label} log-normal fit")


def plot_sigma_histograms(ds, axes=None, *, variable="sigma", group="block", init=True, time_channel=False):
    """Histograms of σ per block on a log axis, with the fitted log-normal density overlaid.

    Parameters
    ----------
    ds : xarray.Dataset
        Sigma dataset (:func:`~dcnbio.extract.sigmas.extract_sigmas` or a stack).  If it has a ``state``
        coordinate, ``trained`` is drawn filled and ``init`` (the control: log-normal by construction) as an
        outline with a dashed fit.
    axes : sequence of matplotlib Axes, optional
        One per group; default: a new figure with one panel per group.
    variable : str
        ``sigma`` (pixels of the layer's input map) or ``sigma_input`` (image pixels).
    group : str
        Coordinate whose values get a panel each (``block``).
    init : bool
        Draw the init control when present.
    time_channel : bool
        Include σ of the constant t-channel (default: excluded, as in the statistics).

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = ds.isel(filter=np.flatnonzero(filter_mask(ds, time_channel=time_channel)))
    if ds.sizes["filter"] == 0:
        raise DataError("no sigma values to plot")
    groups = block_order(np.unique(ds[group].values.astype(str)))
    own_figure = axes is None
    if own_figure:
        fig, axes = _new_axes(len(groups))
    else:
        axes = np.ravel(axes)
        if len(axes) < len(groups):
            raise DataError(f"need {len(groups)} axes (one per {group}), got {len(axes)}")
        fig = axes[0].figure
    states = _states(ds)
    if not init:
        states.pop("init", None)
    all_values = ds[variable].values
    edges = np.linspace(np.log10(all_values.min()), np.log10(all_values.max()), 31)
    for ax, g in zip(axes, groups):
        for state, part in states.items():
            values = np.asarray(part[variable].values[part[group].values.astype(str) == g], dtype=float)
            if values.size == 0:
                continue
            trained = state == "trained"
            _draw_hist(ax, values, TRAINED_COLOR if trained else INIT_COLOR, state, trained, edges)
        in_group = ds[group].values.astype(str) == g
        if "radius" in ds.coords and "parametrization" in ds.coords and \
                np.any(ds["parametrization"].values[in_group] == "per-channel"):
            # a fixed window of radius r covers ±2σ only up to σ = r/2 (1.5 px for 7×7): mark where truncation starts
            scale = ds["stride"].values[in_group] if variable == "sigma_input" else 1
            limit = np.min(ds["radius"].values[in_group] / 2 * scale)
            ax.axvline(limit, color="k", lw=0.8, ls=":", label="window truncates σ above")
        ax.set_title(f"{g} (n={int((states.get('trained', ds)[group].values.astype(str) == g).sum())})")
        ax.set_xlabel(f"{variable} ({'input-image px' if variable == 'sigma_input' else 'px'})")
        ax.set_ylabel("density per log10 unit")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks of a narrow log axis overlap
    handles, labels = axes[0].get_legend_handles_labels()
    if own_figure:  # legend beside the panels, where it hides no bars
        fig.legend(handles, labels, loc="outside right center", fontsize="small", frameon=False)
    else:
        axes[0].legend(fontsize="x-small", frameon=False)
    return fig


def _layer_label(ds, depth):
    part = ds.isel(filter=np.flatnonzero(ds["depth"].values == depth))
    block, conv = str(part["block"].values[0]), str(part["conv"].values[0])
    return f"{block}\n{conv}" if conv else block


def plot_sigma_vs_depth(ds, ax=None, *, variable="sigma", time_channel=False):
    """σ of every SRF layer against its depth (layer index in execution order).

    Shared σ: one point per layer (per seed), joined by a line.  Per-channel σ_ji: a box per layer (median,
    quartiles, 1.5 IQR whiskers).  Meta-parametrized σ(t): the curve σ(t) of each layer drawn across its slot,
    ``x = depth − 0.4 + 0.8 t / T``.  With a ``state`` coordinate the init control is drawn in grey, shifted
    slightly left.

    Parameters
    ----------
    ds : xarray.Dataset
        Sigma dataset.
    ax : matplotlib Axes, optional
    variable : str
        ``sigma`` or ``sigma_input``.
    time_channel : bool
        Include σ of the constant t-channel in the boxes (default: excluded).

    Returns
    -------
    matplotlib.figure.Figure
    """
    ds = ds.isel(filter=np.flatnonzero(filter_mask(ds, time_channel=time_channel)))
    if ds.sizes["filter"] == 0:
        raise DataError("no sigma values to plot")
    if ax is None:
        depths = np.unique(ds["depth"].values)
        fig, (ax,) = _new_axes(1, width=max(4.0, 0.9 * len(depths) + 1.5), height=3.2)
    fig = ax.figure
    states = _states(ds)
    offsets = {"trained": 0.12 if "init" in states else 0.0, "init": -0.12}
    seeds_of = (lambda part: np.unique(part["seed"].values.astype(str))) if "seed" in ds.coords else \
        (lambda part: [None])
    labelled = set()
    for state, part in states.items():
        color = TRAINED_COLOR if state == "trained" else INIT_COLOR
        shift = offsets[state]

        def label():
            if state in labelled:
                return None
            labelled.add(state)
            return state

        for seed in seeds_of(part):
            sp = part if seed is None else select(part, seed=seed)
            shared_x, shared_y = [], []
            for depth in np.unique(sp["depth"].values):
                layer = sp.isel(filter=np.flatnonzero(sp["depth"].values == depth))
                values = layer[variable].values
                times = layer["time"].values
                if np.all(np.isfinite(times)):  # σ(t): one curve per layer
                    order = np.argsort(times)
                    span = times.max() if times.max() > 0 else 1.0
                    ax.plot(depth - 0.4 + 0.8 * times[order] / span, values[order], color=color, lw=1.5,
                            label=label())
                elif values.size == 1:
                    shared_x.append(depth + shift)
                    shared_y.append(values[0])
                else:
                    ax.boxplot(values, positions=[depth + shift], widths=0.2, manage_ticks=False,
                               patch_artist=True, showfliers=True,
                               boxprops={"facecolor": color, "alpha": 0.5, "edgecolor": color},
                               medianprops={"color": "k"}, whiskerprops={"color": color},
                               capprops={"color": color}, flierprops={"markersize": 2, "markeredgecolor": color})
                    if state not in labelled:
                        ax.plot([], [], "s", color=color, alpha=0.5, label=label())
            if shared_x:
                ax.plot(shared_x, shared_y, "o-", color=color, ms=5, lw=1, label=label())
    depths = np.unique(ds["depth"].values)
    ax.set_xticks(depths, [_layer_label(ds, d) for d in depths], fontsize="small")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("SRF layer (execution order)")
    ax.set_ylabel(f"{variable} ({'input-image px' if variable == 'sigma_input' else 'px of layer input'})")
    ax.legend(fontsize="x-small", frameon=False)
    return fig


# --- in-silico electrophysiology -------------------------------------------------------------------
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
    from .stats.physiology import naka_rushton

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
        _, (ax,) = _new_axes(1, width=4.5, height=3.2)
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
