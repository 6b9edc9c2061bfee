"""Figures of σ: histograms per block (Fig. 3b) and σ against depth (Fig. 3a).

Histograms use seaborn's ``histplot(log_scale=True, stat="density")``: bins are equal on a log10 axis and the
bar heights are a density *per log10 unit*.  A fitted log-normal must be drawn in the same units,
``x · ln 10 · pdf(x)`` (:func:`lognormal_log10_density`), not ``pdf(x)``.
"""
import math

import numpy as np
import scipy.stats as st
import seaborn as sns
from matplotlib.ticker import NullFormatter

from ..errors import DataError
from ..stats.sigmas import filter_mask, select
from ..stats.distribution import block_order, fit_lognormal
from .common import INIT_COLOR, TRAINED_COLOR, new_axes

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


def _plotted_filters(ds, time_channel):
    """The filters a σ figure draws (the t-channel's only with ``time_channel``); none is a DataError."""
    ds = ds.isel(filter=np.flatnonzero(filter_mask(ds, time_channel=time_channel)))
    if ds.sizes["filter"] == 0:
        raise DataError("no sigma values to plot")
    return ds


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
    ds = _plotted_filters(ds, time_channel)
    groups = block_order(np.unique(ds[group].values.astype(str)))
    own_figure = axes is None
    if own_figure:
        fig, axes = new_axes(len(groups))
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
    ds = _plotted_filters(ds, time_channel)
    if ax is None:
        depths = np.unique(ds["depth"].values)
        fig, (ax,) = new_axes(1, width=max(4.0, 0.9 * len(depths) + 1.5), height=3.2)
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
