"""Tuning properties of model units from their grating responses (xarray in, xarray out).

Input: the Dataset of :func:`dcnbio.extract.responses.grating_responses`.  Every function works along
one named dimension and keeps all others (units, times, seeds …), so a property is computed for every
unit at once and stays labelled.

The protocol of :func:`tuning_properties` follows the standard one for V1 neurons (De Valois, Albrecht &
Thorell 1982; De Valois, Yund & Hepler 1982; Ringach, Shapley & Hawken 2002), as Brain-Score's V1
benchmarks do for static networks (Marques, Schrimpf & DiCarlo 2021):

1. **Evoked rate** ``r = [h(stimulus) - h(blank)]_+``: the change from the unit's response to the
   mean-luminance image, half-wave rectified.  A model state can be negative and has no spontaneous rate;
   rectifying the change makes it a firing-rate-like quantity on which F0, F1 and half-heights are
   defined (``rectify=False`` keeps the signed change, for which F1/F0 is not meaningful).
2. **Tuning response** at each (sf, orientation, contrast, time): the maximum over phase (the response
   at the optimal phase, which is F1-like for a simple unit and F0-like for a complex one).
3. **Preferred stimulus**: the (sf, orientation) grid point of largest tuning response at the highest
   contrast and the last time.  The SF tuning curve is taken at the preferred orientation, the
   orientation tuning curve at the preferred SF, the contrast-response curve and the time courses at both.
4. Properties (definitions in each function):  preferred SF and SF bandwidth (octaves, full width at half
   height), preferred orientation, orientation bandwidth (half width at half height), circular variance,
   modulation ratio F1/F0, Naka–Rushton fit of the contrast response, time to half rise per contrast.

Units that do not respond (tuning response 0 at every grid point after rectification) get NaN
properties and ``responsive = False``; a bandwidth whose half-height crossing lies outside the sampled
range is NaN too (the curve is not closed there), and ``*_status`` says which.
"""
import numpy as np
import scipy.optimize as opt
import scipy.stats as st
import xarray as xr

from ..errors import ConfigError, DataError

__all__ = ["circular_variance", "compare_trained_init", "compare_with_reference", "evoked", "fit_naka_rushton",
           "half_rise_time", "histogram_cdf", "histogram_quantile", "latency_contrast_test", "modulation_ratio",
           "naka_rushton", "one_sample_t", "orientation_tuning", "phase_harmonics", "sf_selectivity", "sf_tuning",
           "tuning_properties"]


def _need(da, dim):
    if dim not in da.dims:
        raise DataError(f"expected a dimension {dim!r}, got dims {da.dims}")
    return da


def evoked(responses, *, readout="centre", rectify=True):
    """Evoked response ``response - blank`` of one readout, half-wave rectified by default.

    Parameters
    ----------
    responses : xarray.Dataset
        From :func:`~dcnbio.extract.responses.grating_responses`.
    readout : str
    rectify : bool

    Returns
    -------
    xarray.DataArray ``(sf, orientation, phase, contrast, time, unit)`` float64
    """
    if readout not in responses.readout.values:
        raise ConfigError(f"readout {readout!r} not in the responses (have {list(responses.readout.values)})")
    r = (responses.response.sel(readout=readout) - responses.blank.sel(readout=readout)).astype(np.float64)
    r = r.clip(min=0.0) if rectify else r
    r.attrs = {"long_name": "evoked response [h - h(blank)]+" if rectify else "evoked response h - h(blank)",
               "rectified": int(bool(rectify)), "readout": readout}
    return r.drop_vars("readout", errors="ignore")


def phase_harmonics(rate, dim="phase"):
    """Mean (F0) and first-harmonic amplitude (F1) over phase.

    ``F0 = mean_k r_k``, ``F1 = |(2 / K) sum_k r_k exp(-i φ_k)|`` for ``K`` phases evenly spaced over 360°
    (the discrete Fourier coefficients of the response as a function of the grating's phase, which for a
    drifting grating is its temporal modulation; Skottun et al. 1991).

    Raises
    ------
    DataError
        Phases not evenly spaced over a full cycle (F1 would be biased), or fewer than 3.
    """
    _need(rate, dim)
    ph = np.asarray(rate[dim].values, dtype=np.float64)
    k = ph.size
    if k < 3:
        raise DataError(f"F1/F0 needs at least 3 phases evenly spaced over 360 degrees, got {ph.tolist()}")
    steps = np.diff(np.sort(np.mod(ph, 360.0)))
    if not np.allclose(steps, 360.0 / k, atol=1e-6):
        raise DataError(f"F1/F0 needs phases evenly spaced over 360 degrees, got {ph.tolist()}")
    w = xr.DataArray(np.exp(-1j * np.radians(ph)), dims=[dim], coords={dim: rate[dim]})
    f0 = rate.mean(dim)
    f1 = np.abs((rate * w).sum(dim)) * (2.0 / k)
    return xr.Dataset({"f0": f0, "f1": f1})


def modulation_ratio(rate, dim="phase"):
    """F1/F0 over phase (simple cells > 1, complex < 1; Skottun et al. 1991).  NaN where F0 is 0.

    A half-wave rectified linear unit has F1/F0 = π/2 exactly in the limit of many phases.
    """
    h = phase_harmonics(rate, dim)
    return xr.where(h.f0 > 0, h.f1 / h.f0.where(h.f0 > 0), np.nan).rename("f1_f0")


def _half_crossing(x, y, i_peak, step, level=0.5):
    """First ``x`` from the peak in direction ``step`` where ``y`` falls to ``level`` × the peak (linear in x)."""
    half = level * y[i_peak]
    i = i_peak
    while 0 <= i + step < y.size:
        j = i + step
        if y[j] <= half:
            return x[i] + (half - y[i]) * (x[j] - x[i]) / (y[j] - y[i])
        i = j
    return np.nan


def _refine_peak(logx, y, i):
    """Vertex of the parabola through the peak and its neighbours (in log frequency); the grid point at an edge."""
    if i == 0 or i == y.size - 1:
        return logx[i]
    x0, x1, x2 = logx[i - 1:i + 2]
    y0, y1, y2 = y[i - 1:i + 2]
    den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    b = (x2 ** 2 * (y0 - y1) + x1 ** 2 * (y2 - y0) + x0 ** 2 * (y1 - y2)) / den
    return logx[i] if a >= 0 else float(np.clip(-b / (2 * a), x0, x2))


def _sf_one(y, logf, level=0.5):
    if not np.isfinite(y).all() or y.max() <= 0:
        return np.nan, np.nan, 0.0
    i = int(np.argmax(y))
    lo = _half_crossing(logf, y, i, -1, level)
    hi = _half_crossing(logf, y, i, +1, level)
    status = 0.0 if np.isfinite(lo) and np.isfinite(hi) else (1.0 if np.isnan(lo) else 2.0)
    return float(2 ** _refine_peak(logf, y, i)), float(hi - lo), status


def sf_tuning(curve, dim="sf"):
    """Preferred spatial frequency and SF bandwidth of tuning curves.

    Parameters
    ----------
    curve : xarray.DataArray
        Non-negative responses along ``dim`` (cycles/pixel, increasing).

    Returns
    -------
    xarray.Dataset
        ``preferred_sf`` (cycles/pixel; the peak refined by a parabola in log2 f through the three grid
        points around the maximum), ``sf_bandwidth`` (octaves: ``log2(f_high / f_low)`` between the
        half-height crossings, interpolated linearly in log2 f — the full bandwidth at half height of
        De Valois, Albrecht & Thorell 1982), ``sf_status`` (0 closed; 1 open at low, 2 open at high
        frequencies: bandwidth NaN; NaN unresponsive).
    """
    _need(curve, dim)
    f = np.asarray(curve[dim].values, dtype=np.float64)
    if (f <= 0).any() or (np.diff(f) <= 0).any():
        raise DataError(f"{dim} must be positive and increasing, got {f.tolist()}")
    pref, bw, status = xr.apply_ufunc(_sf_one, curve, kwargs={"logf": np.log2(f)}, input_core_dims=[[dim]],
                                      output_core_dims=[[], [], []], vectorize=True)
    status = status.where(np.isfinite(pref))
    return xr.Dataset({"preferred_sf": pref.assign_attrs(units="cycles/pixel"),
                       "sf_bandwidth": bw.where(status == 0).assign_attrs(units="octave"),
                       "sf_status": status})


def sf_selectivity(curve, dim="sf", level=0.707):
    """Schiller, Finlay & Volman's (1976) SF selectivity ``100 · f_low / f_high`` at ``level`` of the peak.

    ``f_low``, ``f_high``: the frequencies either side of the peak where the response falls to ``level``
    (0.707, as the Brain-Score digitisation of their histograms defines it; see ``data/reference/README.md``)
    × its maximum, interpolated linearly in log2 f.  100 is infinitely narrow; 50 is one octave.  NaN where
    the curve does not fall to ``level`` on both sides within the sampled range.

    Returns
    -------
    xarray.DataArray ``sf_selectivity`` (percent)
    """
    _need(curve, dim)
    f = np.asarray(curve[dim].values, dtype=np.float64)
    _, bw, status = xr.apply_ufunc(_sf_one, curve, kwargs={"logf": np.log2(f), "level": level},
                                   input_core_dims=[[dim]], output_core_dims=[[], [], []], vectorize=True)
    return (100.0 * 2.0 ** -bw.where(status == 0)).rename("sf_selectivity").assign_attrs(
        units="percent", long_name=f"100 f_low / f_high at {level:g} of the peak")


def circular_variance(curve, dim="orientation"):
    """Circular variance ``1 - |Σ r_k exp(2iθ_k)| / Σ r_k`` (Ringach, Shapley & Hawken 2002): 0 for a
    unit that responds at one orientation only, 1 for an untuned one.  Orientations evenly spaced over 180°."""
    _need(curve, dim)
    th = np.radians(np.asarray(curve[dim].values, dtype=np.float64))
    w = xr.DataArray(np.exp(2j * th), dims=[dim], coords={dim: curve[dim]})
    total = curve.sum(dim)
    return (1.0 - np.abs((curve * w).sum(dim)) / total.where(total > 0)).rename("circular_variance")


def _ori_one(y, theta):
    """``y`` along ``theta`` sorted and evenly spaced over 180 degrees."""
    if not np.isfinite(y).all() or y.max() <= 0:
        return np.nan, np.nan
    k = y.size
    i = int(np.argmax(y))
    # the curve unwrapped around its peak (orientation is periodic with 180 degrees)
    offsets = np.arange(k) - k // 2
    yy = y[(offsets + i) % k]
    ang = theta[i] + offsets * (180.0 / k)
    lo = _half_crossing(ang, yy, k // 2, -1)
    hi = _half_crossing(ang, yy, k // 2, +1)
    return float(theta[i]), float(0.5 * (hi - lo)) if np.isfinite(lo) and np.isfinite(hi) else np.nan


def orientation_tuning(curve, dim="orientation"):
    """Preferred orientation, orientation bandwidth and circular variance of tuning curves.

    Parameters
    ----------
    curve : xarray.DataArray
        Non-negative responses along ``dim`` (degrees, evenly spaced over 180°).

    Returns
    -------
    xarray.Dataset
        ``preferred_orientation`` (degrees, the grid maximum; the convention of :mod:`dcnbio.core.stimuli`),
        ``orientation_hwhh`` (degrees: half the width between the half-height crossings on either side of
        the peak, interpolated linearly; NaN where the curve does not fall to half within ±90°;
        De Valois, Yund & Hepler 1982 report a *full* width at half amplitude, measured over direction of
        motion, so their values are not this number's), ``circular_variance``.
    """
    _need(curve, dim)
    th = np.asarray(curve[dim].values, dtype=np.float64)
    k = th.size
    if k < 3 or not np.allclose(np.diff(np.sort(np.mod(th, 180.0))), 180.0 / k, atol=1e-6):
        raise DataError(f"{dim} must hold at least 3 values evenly spaced over 180 degrees, got {th.tolist()}")
    order = np.argsort(np.mod(th, 180.0), kind="stable")
    pref, hw = xr.apply_ufunc(_ori_one, curve.isel({dim: order}), kwargs={"theta": np.mod(th, 180.0)[order]},
                              input_core_dims=[[dim]],
                              output_core_dims=[[], []], vectorize=True)
    return xr.Dataset({"preferred_orientation": pref.assign_attrs(units="degree"),
                       "orientation_hwhh": hw.assign_attrs(units="degree"),
                       "circular_variance": circular_variance(curve, dim)})


def naka_rushton(c, r_max, c50, n):
    """Contrast response ``r_max c^n / (c^n + c50^n)`` (Naka & Rushton 1966; Albrecht & Hamilton 1982)."""
    c = np.asarray(c, dtype=np.float64)
    return r_max * c ** n / (c ** n + c50 ** n)


#: Bounds of the Naka–Rushton fit (``r_max`` is bounded by 10 × the largest response).
NR_BOUNDS = {"c50": (1e-3, 10.0), "n": (0.1, 10.0)}


def _nr_one(y, c):
    if not np.isfinite(y).all() or y.max() <= 0 or y.size < 4:
        return np.nan, np.nan, np.nan, np.nan
    top = float(y.max())
    p0 = (top, float(np.median(c)), 2.0)
    try:
        p, _ = opt.curve_fit(naka_rushton, c, y, p0=p0, bounds=([0.0, NR_BOUNDS["c50"][0], NR_BOUNDS["n"][0]],
                                                                 [10 * top, NR_BOUNDS["c50"][1], NR_BOUNDS["n"][1]]),
                             maxfev=20000)
    except (RuntimeError, ValueError):
        return np.nan, np.nan, np.nan, np.nan
    ss_res = float(((y - naka_rushton(c, *p)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else np.nan
    if not (NR_BOUNDS["c50"][0] * 1.01 < p[1] < NR_BOUNDS["c50"][1] * 0.99
            and NR_BOUNDS["n"][0] * 1.01 < p[2] < NR_BOUNDS["n"][1] * 0.99 and p[0] < 10 * top * 0.99):
        return np.nan, np.nan, np.nan, r2  # on a bound: the sampled contrasts do not identify the parameters
    return float(p[0]), float(p[1]), float(p[2]), r2


def fit_naka_rushton(curve, dim="contrast"):
    """Least-squares Naka–Rushton fit of contrast-response curves (``scipy.optimize.curve_fit``, bounded:
    ``0 <= r_max <= 10 max r``, ``0.001 <= c50 <= 10``, ``0.1 <= n <= 10``).

    Returns
    -------
    xarray.Dataset
        ``r_max``, ``c50`` (Michelson contrast), ``n``, and ``r2`` (coefficient of determination of the
        fit, the goodness of fit); all NaN for an unresponsive unit, fewer than 4 contrasts or a failed fit.
        A fit that ends on a bound (within 1 %) is not identified by the sampled contrasts — e.g. a response
        that is still linear at the highest contrast has no c50 below it — so its parameters are NaN (its
        ``r2`` is kept).
    """
    _need(curve, dim)
    c = np.asarray(curve[dim].values, dtype=np.float64)
    out = xr.apply_ufunc(_nr_one, curve, kwargs={"c": c}, input_core_dims=[[dim]],
                         output_core_dims=[[], [], [], []], vectorize=True)
    return xr.Dataset(dict(zip(("r_max", "c50", "n", "r2"), out)))


def _rise_one(y, t):
    if not np.isfinite(y).all():
        return np.nan
    d = y - y[0]
    total = d[-1]
    if total == 0:
        return np.nan
    d = d * np.sign(total)
    half = 0.5 * abs(total)
    j = int(np.argmax(d >= half))
    if j == 0:
        return float(t[0])
    return float(t[j - 1] + (half - d[j - 1]) * (t[j] - t[j - 1]) / (d[j] - d[j - 1]))


def half_rise_time(course, dim="time"):
    """Time at which ``r(t) - r(t_0)`` first reaches half of ``r(t_end) - r(t_0)`` (linear interpolation
    between grid times): the latency of a unit's response inside an ODE block.  NaN where the response
    does not change.  The grid should be fine (it is the resolution of the latency)."""
    _need(course, dim)
    t = np.asarray(course[dim].values, dtype=np.float64)
    if t.size < 2:
        raise DataError(f"a time course needs at least 2 times, got {t.tolist()}")
    return xr.apply_ufunc(_rise_one, course, kwargs={"t": t}, input_core_dims=[[dim]],
                          vectorize=True).rename("latency")


def tuning_properties(responses, *, readout="centre", rectify=True):
    """Every unit's tuning properties by the protocol of the module docstring.

    Parameters
    ----------
    responses : xarray.Dataset
        From :func:`~dcnbio.extract.responses.grating_responses`; needs ≥ 3 phases evenly spaced over 360°,
        ≥ 3 orientations evenly spaced over 180°, ≥ 2 spatial frequencies.
    readout : str
    rectify : bool

    Returns
    -------
    xarray.Dataset
        Per unit: ``responsive``, ``pref_sf_index``/``pref_orientation_index`` (grid positions),
        ``preferred_sf``, ``sf_bandwidth``, ``sf_status``, ``sf_selectivity``, ``preferred_orientation``,
        ``orientation_hwhh``,
        ``circular_variance``, ``f1_f0``, ``r_max``, ``c50``, ``n``, ``r2``; per unit and contrast
        ``latency``; and the curves at the preferred stimulus: ``sf_curve (unit, sf)``,
        ``orientation_curve (unit, orientation)``, ``contrast_curve (unit, contrast)``,
        ``time_course (unit, contrast, time)``.  Attrs: the responses' attrs and the protocol.
    """
    rate = evoked(responses, readout=readout, rectify=rectify)
    tuned = rate.max("phase")                                            # (sf, ori, contrast, time, unit)
    top = tuned.isel(contrast=-1, time=-1)                               # (sf, ori, unit)
    flat = top.stack(grid=("sf", "orientation")).transpose("unit", "grid")
    best = flat.argmax("grid").reset_coords(drop=True)                  # plain indices, no scalar coords
    n_ori = top.sizes["orientation"]
    i_sf = (best // n_ori).rename("pref_sf_index")
    i_ori = (best % n_ori).rename("pref_orientation_index")
    sf_curve = tuned.isel(orientation=i_ori, contrast=-1, time=-1)       # (sf, unit)
    ori_curve = tuned.isel(sf=i_sf, contrast=-1, time=-1)
    at_pref = rate.isel(sf=i_sf, orientation=i_ori)                      # (phase, contrast, time, unit)
    i_ph = at_pref.isel(contrast=-1, time=-1).argmax("phase").reset_coords(drop=True)
    course = at_pref.isel(phase=i_ph)                                    # (contrast, time, unit)
    responsive = (top.max(("sf", "orientation")) > 0).rename("responsive")
    props = xr.merge([
        responsive, i_sf, i_ori,
        sf_tuning(sf_curve.transpose("unit", "sf")),
        sf_selectivity(sf_curve.transpose("unit", "sf")),
        orientation_tuning(ori_curve.transpose("unit", "orientation")),
        modulation_ratio(at_pref.isel(contrast=-1, time=-1)),
        fit_naka_rushton(course.isel(time=-1).transpose("unit", "contrast")),
        half_rise_time(course.transpose("unit", "contrast", "time")) if course.sizes["time"] > 1 else
        xr.full_like(course.isel(time=0), np.nan).rename("latency"),
        sf_curve.rename("sf_curve").transpose("unit", "sf"),
        ori_curve.rename("orientation_curve").transpose("unit", "orientation"),
        course.isel(time=-1).rename("contrast_curve").transpose("unit", "contrast"),
        course.rename("time_course").transpose("unit", "contrast", "time"),
    ], compat="override", combine_attrs="drop")
    props = props.drop_vars([v for v in ("sf", "orientation", "phase") if v in props.coords
                             and v not in props.dims], errors="ignore")
    props.attrs = dict(responses.attrs)
    props.attrs.update({"readout": readout, "rectified": int(bool(rectify)),
                        "protocol": "evoked = [h - h(blank)]+; tuning = max over phase; preferred (sf, "
                                    "orientation) at the highest contrast and last time; SF curve at the "
                                    "preferred orientation, orientation curve at the preferred SF"})
    return props


def latency_contrast_test(latency, *, dim="contrast", cluster="seed"):
    """Does latency grow as contrast falls?  Slope of latency against log2 contrast, over units and seeds.

    Per unit, the least-squares slope ``b`` of ``latency ~ a + b log2 c`` over the contrasts at which its
    latency is defined (≥ 3); V1-like behaviour is ``b < 0`` (Albrecht 1995; Gawne, Kjaer & Richmond 1996).
    Units of one network are not independent samples, so the test is over *clusters*: each seed's mean
    slope is one observation, and a one-sample t-test asks whether their mean differs from 0 (df = seeds
    - 1; with 3 seeds this has little power, and the result says so by its p value, not by hiding it).
    The unit-level sign counts are descriptive.

    Parameters
    ----------
    latency : xarray.DataArray
        Dims ``(cluster, unit, dim)`` (other dims are kept), e.g. ``props.latency`` stacked over seeds.

    Returns
    -------
    xarray.Dataset
        ``slope (…, cluster, unit)`` (time per octave of contrast), ``cluster_mean_slope (…, cluster)``,
        ``t``, ``p``, ``n_clusters``, ``fraction_negative`` (of units with a slope), ``n_units``.
    """
    _need(latency, dim)
    _need(latency, cluster)
    x = np.log2(np.asarray(latency[dim].values, dtype=np.float64))

    def slope(y):
        ok = np.isfinite(y)
        if ok.sum() < 3 or np.ptp(x[ok]) == 0:
            return np.nan
        return float(np.polyfit(x[ok], y[ok], 1)[0])

    b = xr.apply_ufunc(slope, latency, input_core_dims=[[dim]], vectorize=True).rename("slope")
    per = b.mean("unit", skipna=True).rename("cluster_mean_slope")

    def ttest(v):
        v = v[np.isfinite(v)]
        if v.size < 2:
            return np.nan, np.nan, float(v.size)
        r = st.ttest_1samp(v, 0.0)
        return float(r.statistic), float(r.pvalue), float(v.size)

    t, p, n = xr.apply_ufunc(ttest, per, input_core_dims=[[cluster]], output_core_dims=[[], [], []],
                             vectorize=True)
    has = np.isfinite(b)
    frac = ((b < 0) & has).sum((cluster, "unit")) / has.sum((cluster, "unit"))
    return xr.Dataset({"slope": b.assign_attrs(units="time per octave of contrast"),
                       "cluster_mean_slope": per, "t": t, "p": p, "n_clusters": n,
                       "fraction_negative": frac, "n_units": has.sum((cluster, "unit"))},
                      attrs={"test": f"one-sample t-test of the {cluster}s' mean slopes against 0 "
                                     f"(clusters: {cluster})"})


# --- against V1 and against the untrained network ------------------------------------------------
def histogram_cdf(reference, edges=None):
    """Cumulative fraction of a binned reference distribution at its bin edges.

    Parameters
    ----------
    reference : xarray.DataArray
        Counts along ``bin`` with coords ``bin_low``, ``bin_high`` (contiguous bins; :mod:`dcnbio.io.reference`).

    Returns
    -------
    edges : numpy.ndarray (n_bins + 1,)
    cdf : numpy.ndarray (n_bins + 1,)
        ``cdf[0] = 0``, ``cdf[-1] = 1``.
    """
    low, high = reference.bin_low.values.astype(float), reference.bin_high.values.astype(float)
    if np.any(low[1:] != high[:-1]):
        raise DataError("reference bins must be contiguous (each bin_low the previous bin_high)")
    counts = np.asarray(reference.values, dtype=float)
    if counts.sum() <= 0:
        raise DataError("the reference histogram is empty")
    return np.append(low, high[-1]), np.append(0.0, np.cumsum(counts) / counts.sum())


def histogram_quantile(reference, q):
    """Quantile of a binned distribution, interpolated linearly within the bin (cells uniform in their bin)."""
    edges, cdf = histogram_cdf(reference)
    return float(np.interp(q, cdf, edges))


def one_sample_t(values, reference):
    """Two-sided one-sample t-test of the finite ``values`` against ``reference``: ``(t, p)``, NaN with fewer than
    two values or none that differ (no test then, rather than a degenerate one)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2 or np.ptp(v) == 0:
        return np.nan, np.nan
    r = st.ttest_1samp(v, reference)
    return float(r.statistic), float(r.pvalue)


def compare_with_reference(values, reference, *, cluster="seed"):
    """A model property's distribution against a binned V1 distribution, seeds as clusters.

    Units of one network share their training run and are not independent samples of "a DCN", so no test
    here treats them as such.  Per cluster (seed) the units' median and the Kolmogorov–Smirnov distance
    ``D = max |F_model(e) - F_V1(e)|`` over the reference's bin edges ``e`` (binning makes the usual KS p
    value meaningless, so ``D`` is descriptive); the test is a one-sample t-test of the clusters' medians
    against the reference median (df = clusters - 1; with 3 seeds it has little power, which its p value
    states).  ``fraction_in_range``: units inside the reference's sampled range (a model unit outside it
    has no V1 counterpart in these data).

    Parameters
    ----------
    values : xarray.DataArray
        ``(cluster, unit)`` property values in the reference's units; NaN = undefined (excluded).
    reference : xarray.DataArray
        Counts along ``bin`` with ``bin_low``/``bin_high`` coords.
    cluster : str

    Returns
    -------
    xarray.Dataset
        ``n_units, median, ks_distance, fraction_in_range (cluster)``; scalars ``reference_median``,
        ``reference_n``, ``median_difference`` (mean over clusters of median - reference median), ``t``,
        ``p``, ``n_clusters``.
    """
    _need(values, cluster)
    edges, cdf = histogram_cdf(reference)
    ref_median = float(np.interp(0.5, cdf, edges))
    rows = []
    for c in values[cluster].values:
        v = np.asarray(values.sel({cluster: c}).values, dtype=float).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            rows.append((0, np.nan, np.nan, np.nan))
            continue
        f = np.searchsorted(np.sort(v), edges, side="left") / v.size
        rows.append((v.size, float(np.median(v)), float(np.max(np.abs(f - cdf))),
                     float(np.mean((v >= edges[0]) & (v < edges[-1])))))
    n, med, ks, frac = (np.array(x) for x in zip(*rows))
    ok = np.isfinite(med)
    t, p = one_sample_t(med, ref_median)
    coords = {cluster: values[cluster].values}
    return xr.Dataset(
        {"n_units": (cluster, n.astype(np.int64)), "median": (cluster, med), "ks_distance": (cluster, ks),
         "fraction_in_range": (cluster, frac), "reference_median": ref_median,
         "reference_n": int(np.asarray(reference.values).sum()),
         "median_difference": float(np.nanmean(med - ref_median)) if ok.any() else np.nan,
         "t": t, "p": p, "n_clusters": int(ok.sum())},
        coords=coords,
        attrs={"test": f"one-sample t-test of the {cluster}s' unit medians against the reference median; "
                       f"KS distance at the reference's bin edges (descriptive)"})


def compare_trained_init(trained, init, *, cluster="seed"):
    """The control: does training change a property?  Trained against the same network at ``init.pt``.

    Per cluster (seed) the difference of the units' medians, trained minus init, and the fraction of
    units (defined in both) whose value changed; the test is a paired t-test over clusters of the medians
    (df = clusters - 1).  Units are matched by position (the same channel of the same block) because a
    network's channels keep their identity through training.

    Parameters
    ----------
    trained, init : xarray.DataArray
        ``(cluster, unit)``, same coordinates; NaN = undefined.

    Returns
    -------
    xarray.Dataset
        ``trained_median, init_median, median_change, fraction_changed (cluster)``; scalars
        ``mean_median_change``, ``t``, ``p``, ``n_clusters``.
    """
    _need(trained, cluster)
    trained, init = xr.align(trained.reset_coords(drop=True), init.reset_coords(drop=True), join="exact")
    tm = trained.median("unit", skipna=True)
    im = init.median("unit", skipna=True)
    both = np.isfinite(trained) & np.isfinite(init)
    changed = (np.abs(trained - init) > 1e-6 * np.maximum(np.abs(init), 1e-12)) & both
    frac = changed.sum("unit") / both.sum("unit").where(both.sum("unit") > 0)
    d = (tm - im).values
    ok = np.isfinite(d)
    t, p = one_sample_t(d, 0.0)
    return xr.Dataset({"trained_median": tm, "init_median": im, "median_change": tm - im,
                       "fraction_changed": frac, "mean_median_change": float(np.nanmean(d)) if ok.any()
                       else np.nan, "t": t, "p": p, "n_clusters": int(ok.sum())},
                      attrs={"test": f"paired t-test over {cluster}s of the unit medians (trained - init)"})
