"""Learned scales against macaque V1: the *shape* of the spatial-frequency distribution.

The paper (§3.2) calls the σ_ji distribution "consistent with" primate V1 spatial-frequency tuning.  A Gaussian
derivative of order n has its peak spatial frequency at ``√n / (2πσ)`` cycles per pixel
(:func:`sigma_to_peak_frequency`), so ``log f = const − log σ``: the log-SD of σ carries over to frequency
unchanged and the skewness of log σ changes sign.  Model frequencies are in cycles/pixel and V1's in
cycles/degree, so only *shapes* are compared (SD of log2 f in octaves, skewness of log f), never locations.

Reference: De Valois, Albrecht & Thorell (1982), Vision Res 22:545–559, peak spatial frequency histograms of
macaque V1 cells, shipped as ``data/reference/devalois1982_peak_sf.csv`` (see the README there) and read by
:func:`dcnbio.io.reference.load_v1_reference`; the functions here take the table, never a path.
"""
import math

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from .distribution import shape_from_logs, bootstrap_summary

POPULATIONS = ("simple_foveal", "complex_foveal", "simple_parafoveal", "complex_parafoveal")


def _need(reference):
    if reference is None:
        raise ConfigError("pass the V1 reference table: reference=dcnbio.io.load_v1_reference()")
    return reference


def v1_shape_statistics(reference, populations=None):
    """Shape of the V1 peak-frequency distributions, each cell placed at its bin's log-centre.

    Binned data: every cell in a bin is given the bin's log-centre ``√(low·high)`` (the centre on the log axis,
    where the bins are equal: half an octave).  This leaves the mean of the logs unbiased for a smooth density and
    inflates the variance by about (bin width)²/12 (Sheppard), which is not corrected: the half-octave bins add
    0.02 octave² (SD 1.03 → 1.04 octaves for the pooled data).

    Parameters
    ----------
    reference : xarray.Dataset
        From :func:`dcnbio.io.load_v1_reference` (the shipped table).
    populations : sequence of str, optional
        Populations to report (default: all), plus a ``pooled`` row over them.

    Returns
    -------
    pandas.DataFrame
        Index ``population`` (each, then ``pooled``); columns ``n``, ``geometric_mean_cpd`` (c/deg),
        ``log2_sd`` (octaves, ddof=0), ``skew_log`` (skewness g1 of log frequency).

    Examples
    --------
    >>> from dcnbio.io import load_v1_reference
    >>> round(float(v1_shape_statistics(load_v1_reference()).loc["pooled", "log2_sd"]), 2)
    1.04
    """
    ref = _need(reference)
    pops = list(ref.population.values) if populations is None else list(populations)
    unknown = set(pops) - set(ref.population.values)
    if unknown:
        raise ConfigError(f"unknown V1 population(s) {sorted(unknown)}; have {list(ref.population.values)}")
    logc = np.log(ref["bin_centre"].values)
    rows = {}
    for name in pops + ["pooled"]:
        counts = ref["count"].sel(population=pops).sum("population").values if name == "pooled" else \
            ref["count"].sel(population=name).values
        logs = np.repeat(logc, counts)
        if logs.size == 0:
            raise DataError(f"V1 population {name!r} has no cells")
        s = shape_from_logs(logs)
        rows[name] = {"n": int(logs.size), "geometric_mean_cpd": float(s["geometric_mean"]),
                      "log2_sd": float(s["log2_sd"]), "skew_log": float(s["skew_log"])}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "population"
    return df


def sigma_to_peak_frequency(sigma, order):
    """Peak spatial frequency of an n-th order Gaussian derivative of scale σ.

    The Fourier magnitude of ``dⁿG/dxⁿ`` is ``|ω|ⁿ exp(−σ²ω²/2)``; it peaks at ``ω = √n / σ`` rad/pixel, i.e.
    ``f = √n / (2πσ)`` cycles/pixel.  An SRF filter mixes orders 0…N with learned α; the highest order N is
    the natural choice and the constant factor does not affect the shape statistics compared with V1.

    Parameters
    ----------
    sigma : array-like
        σ in pixels (of the map the filter acts on; σ × stride gives input-image pixels).
    order : int or array-like of int
        Derivative order n ≥ 1 (order 0 is low-pass: its peak is at 0).

    Returns
    -------
    numpy.ndarray
        Cycles per pixel (of the same map as σ).

    Examples
    --------
    >>> round(float(sigma_to_peak_frequency(1.0, 2)), 6)  # √2 / 2π
    0.225079
    """
    sigma = np.asarray(sigma, dtype=float)
    order = np.asarray(order)
    if np.any(order < 1):
        raise ConfigError("peak frequency needs derivative order >= 1 (a 0-th order Gaussian peaks at 0)")
    if np.any(~np.isfinite(sigma)) or np.any(sigma <= 0):
        raise DataError("sigma must be finite and > 0")
    return np.sqrt(order) / (2 * math.pi * sigma)


def compare_with_v1(ds, *, groups="block", variable="sigma_input", n_resamples=1000, seed=0, time_channel=False,
                    reference=None):
    """Model vs V1 *shapes* side by side: SD of log2 peak frequency (octaves) and skewness of log frequency.

    Each σ is converted to its peak frequency with the layer's derivative order (:func:`sigma_to_peak_frequency`);
    model rows carry bootstrap CIs (:func:`~dcnbio.stats.distribution.bootstrap_summary`: seeds resampled when there
    are several).  Locations are not compared (cycles/pixel vs cycles/degree).

    Parameters
    ----------
    ds : xarray.Dataset
        Sigma dataset (select one state, e.g. trained, first).
    groups : str or None
        Coordinate whose groups get their own model rows (default ``block``); a ``pooled`` row is always there.
    variable : str
        ``sigma_input`` (default: frequencies per input-image pixel, so blocks at different strides pool
        correctly) or ``sigma``.
    n_resamples, seed : int
    time_channel : bool
    reference : xarray.Dataset
        From :func:`dcnbio.io.load_v1_reference` (required).

    Returns
    -------
    pandas.DataFrame
        Columns ``source`` (``model`` or ``V1 (De Valois 1982)``), ``group``, ``n``, ``log2_sd``,
        ``log2_sd_ci_low``, ``log2_sd_ci_high``, ``skew_log``, ``skew_log_ci_low``, ``skew_log_ci_high``.
    """
    from .sigmas import filter_mask

    mask = filter_mask(ds, time_channel=time_channel)
    sub = ds.isel(filter=np.flatnonzero(mask))
    freq = sigma_to_peak_frequency(sub[variable].values, sub["order"].values)
    fds = sub.assign(frequency=("filter", freq))
    boot = bootstrap_summary(fds, groups=groups, variable="frequency", n_resamples=n_resamples, seed=seed,
                             time_channel=True)
    rows = []
    for group, part in boot.groupby("group", sort=False):
        part = part.set_index("statistic")
        row = {"source": "model", "group": group, "n": int(part["n"].iloc[0])}
        for stat in ("log2_sd", "skew_log"):
            row[stat] = part.loc[stat, "estimate"]
            row[f"{stat}_ci_low"] = part.loc[stat, "ci_low"]
            row[f"{stat}_ci_high"] = part.loc[stat, "ci_high"]
        rows.append(row)
    v1 = v1_shape_statistics(_need(reference))
    for pop, r in v1.iterrows():
        rows.append({"source": "V1 (De Valois 1982)", "group": pop, "n": int(r["n"]), "log2_sd": r["log2_sd"],
                     "skew_log": r["skew_log"]})
    return pd.DataFrame(rows)
