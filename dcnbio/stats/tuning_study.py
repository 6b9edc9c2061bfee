"""The tuning study of ``analyses/physiology.py``: tuning properties of every unit of several networks, trained
and at initialisation, summarised against macaque V1 with seeds as clusters.

Data layout: one Dataset per model name (dims ``state`` = trained/init, ``seed``, ``unit``, and the curves'
own dims), stacked from :func:`~dcnbio.stats.physiology.tuning_properties` by :func:`stack_runs`; the
summaries are :class:`pandas.DataFrame` tables for the report.
"""
import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError
from . import physiology as ph

__all__ = ["CARDINAL", "PROPERTIES", "cardinal_fraction", "check_unique_runs", "example_units", "histogram_values",
           "property_values", "stack_runs", "summarize"]

#: Property → (axis label with units, the bundled V1 histogram on its scale, or None).  Two of the digitised V1
#: histograms that ship are on a property's own scale (``data/reference/README.md``): the SF selectivity of
#: Schiller et al. (1976) and the circular variance of Ringach et al. (2002, a secondary digitisation); orientation
#: bandwidth, SF bandwidth and F1/F0 have no bundled V1 distribution, so they are described and controlled
#: (trained vs init), and compared only with a histogram the user passes (``references[name]``;
#: ``analyses/physiology.py --reference NAME=CSV``).
PROPERTIES = {
    "preferred_sf": ("preferred spatial frequency (cycles/pixel)", None),
    "sf_bandwidth": ("SF bandwidth (octaves, full width at half height)", None),
    "sf_selectivity": ("SF selectivity 100 f_low/f_high at 0.707 (%)", "schiller1976_sf_bandwidth"),
    "orientation_hwhh": ("orientation bandwidth (degree, half width at half height)", None),
    "circular_variance": ("circular variance", "ringach2002_circular_variance"),
    "f1_f0": ("modulation ratio F1/F0", None),
    "c50": ("semi-saturation contrast c50", None),
}
#: Cardinal bins of the preferred-orientation histogram (De Valois, Yund & Hepler 1982): 0 ± 22.5 and 90 ± 22.5
#: degrees; the fraction of cardinal preferences does not depend on whether orientation names the bars or
#: the wave vector (they differ by 90°).
CARDINAL = ((-22.5, 22.5), (67.5, 112.5))


def check_unique_runs(keys):
    """Refuse two runs of one ``(model, seed, state)``: they would be indistinguishable in :func:`stack_runs`.

    Raises
    ------
    DataError
    """
    seen = set()
    for model, seed, state in keys:
        if (model, int(seed), state) in seen:
            raise DataError(f"two {state} runs of {model} seed {seed}: give one checkpoint per model and seed "
                            f"(e.g. last.pt or best.pt, not both)")
        seen.add((model, int(seed), state))


def stack_runs(runs):
    """Stack per-run tuning properties into one Dataset per model.

    Parameters
    ----------
    runs : iterable of (model, seed, state, props)
        ``state`` is ``"trained"`` or ``"init"``; ``props`` from
        :func:`~dcnbio.stats.physiology.tuning_properties`.

    Returns
    -------
    dict of str → xarray.Dataset
        Dims ``(state, seed, unit, …)``; a missing (state, seed) is NaN.  Attrs: the first run's, minus the
        checkpoint-specific ones.

    Raises
    ------
    DataError
        Two runs of one model, seed and state (:func:`check_unique_runs`).
    """
    runs = list(runs)
    check_unique_runs([r[:3] for r in runs])
    by_model = {}
    for model, seed, state, props in runs:
        by_model.setdefault(model, {}).setdefault(state, {})[int(seed)] = props
    out = {}
    for model, states in by_model.items():
        parts = []
        for state, seeds in states.items():
            ds = xr.concat([seeds[s].drop_attrs() for s in sorted(seeds)], dim="seed", join="outer")
            parts.append(ds.assign_coords(seed=sorted(seeds)).expand_dims(state=[state]))
        ds = xr.concat(parts, dim="state", join="outer")
        first = next(iter(next(iter(states.values())).values()))
        ds.attrs = {k: v for k, v in first.attrs.items() if not k.startswith("checkpoint_") and k != "created"}
        ds.attrs["model"] = model
        out[model] = ds
    return out


def property_values(ds, name, state="trained"):
    """``(seed, unit)`` values of one property, NaN where the unit does not respond or is undefined."""
    if state not in ds.state.values:
        return None
    da = ds[name].sel(state=state).drop_vars("state")
    return da.where(ds.responsive.sel(state=state).drop_vars("state").astype(bool))


def summarize(stacked, references=None):
    """The study's tables.

    Parameters
    ----------
    stacked : dict of str → xarray.Dataset
        From :func:`stack_runs`.
    references : dict, optional
        :data:`PROPERTIES` name → binned V1 counts (``bin`` with ``bin_low``/``bin_high``);
        ``"preferred_orientation"`` → the De Valois, Yund & Hepler (1982) counts; ``"peak_sf_log2_sd"`` →
        the SD of log2 peak SF of V1 (octaves; :func:`dcnbio.stats.v1.v1_shape_statistics`).

    Returns
    -------
    dict of str → pandas.DataFrame
        ``units`` (units and responsive fraction per model and state), ``properties`` (per model and property:
        trained/init medians over seeds, the control's paired test, and, where a reference exists, the V1
        median, the seed-cluster test and the KS distance), ``population`` (cardinal fraction of preferred
        orientations and spread of preferred SF against V1), ``latency`` (per model: the latency–contrast
        slope test over seeds).
    """
    references = references or {}
    units, rows, lat, extra = [], [], [], []
    for model, ds in stacked.items():
        for state in ds.state.values:
            r = ds.responsive.sel(state=state)
            units.append({"model": model, "state": str(state), "seeds": int(ds.sizes["seed"]),
                          "units per seed": int(ds.sizes["unit"]),
                          "responsive (%)": 100 * float(r.astype(float).mean())})
        for name, (label, _) in PROPERTIES.items():
            trained = property_values(ds, name)
            init = property_values(ds, name, "init")
            row = {"model": model, "property": label,
                   "trained median": float(trained.median("unit").mean()),
                   "units defined": int(np.isfinite(trained).sum())}
            if init is not None:
                ctrl = ph.compare_trained_init(trained, init)
                row.update({"init median": float(ctrl.init_median.mean()),
                            "change (trained - init)": float(ctrl.mean_median_change),
                            "control p (paired over seeds)": float(ctrl.p)})
            ref = references.get(name)
            if ref is not None:
                cmp = ph.compare_with_reference(trained, ref)
                row.update({"V1 median": float(cmp.reference_median), "V1 n": int(cmp.reference_n),
                            "V1 p (seed medians)": float(cmp.p),
                            "KS distance (mean over seeds)": float(cmp.ks_distance.mean()),
                            "in V1 range (%)": 100 * float(cmp.fraction_in_range.mean())})
            rows.append(row)
        extra.extend(_shape_rows(model, ds, references))
        if ds.sizes.get("time", 0) > 2:
            test = ph.latency_contrast_test(property_values(ds, "latency"))
            lat.append({"model": model, "mean slope (time per octave)": float(test.cluster_mean_slope.mean()),
                        "units with a slope": int(test.n_units), "negative (%)": 100 * float(test.fraction_negative),
                        "t": float(test.t), "p": float(test.p), "seeds": int(test.n_clusters)})
    return {"units": pd.DataFrame(units), "properties": pd.DataFrame(rows),
            "population": pd.DataFrame(extra), "latency": pd.DataFrame(lat)}


def cardinal_fraction(orientation):
    """Fraction of defined preferred orientations (degrees, any 180° range) in the :data:`CARDINAL` bins."""
    o = np.mod(np.asarray(orientation, float) + 22.5, 180.0) - 22.5
    o = o[np.isfinite(o)]
    if o.size == 0:
        return np.nan
    return float(np.mean([any(lo <= v < hi for lo, hi in CARDINAL) for v in o]))


def _shape_rows(model, ds, references):
    """Population statistics compared with V1, per seed: the cardinal fraction of preferred orientations and
    the spread (SD of log2, octaves) of preferred SF; seed values t-tested against the V1 value."""
    rows = []
    ori = property_values(ds, "preferred_orientation")
    per = [cardinal_fraction(ori.sel(seed=s).values) for s in ori.seed.values]
    init = property_values(ds, "preferred_orientation", "init")
    row = {"model": model, "statistic": "cardinal fraction of preferred orientations",
           "trained (mean over seeds)": float(np.nanmean(per)),
           "init (mean over seeds)": np.nan if init is None else
           float(np.nanmean([cardinal_fraction(init.sel(seed=s).values) for s in init.seed.values]))}
    ref = references.get("preferred_orientation")
    if ref is not None:
        centres = 0.5 * (ref.bin_low.values + ref.bin_high.values)
        v1 = float(np.asarray(ref.values)[[any(lo <= c < hi for lo, hi in CARDINAL) for c in centres]].sum()
                   / np.asarray(ref.values).sum())
        row.update({"V1": v1, "V1 n": int(np.asarray(ref.values).sum())})
        row["t"], row["p"] = ph.one_sample_t(per, v1)
    rows.append(row)
    sf = property_values(ds, "preferred_sf")
    per = [float(np.nanstd(np.log2(sf.sel(seed=s).values))) for s in sf.seed.values]
    init = property_values(ds, "preferred_sf", "init")
    row = {"model": model, "statistic": "SD of log2 preferred SF (octaves)",
           "trained (mean over seeds)": float(np.nanmean(per)),
           "init (mean over seeds)": np.nan if init is None else
           float(np.nanmean([np.nanstd(np.log2(init.sel(seed=s).values)) for s in init.seed.values]))}
    ref = references.get("peak_sf_log2_sd")
    if ref is not None:
        row.update({"V1": float(ref), "V1 n": np.nan})
        row["t"], row["p"] = ph.one_sample_t(per, float(ref))
    rows.append(row)
    return rows


def example_units(props):
    """The ``unit`` of each block's most responsive unit (largest evoked response at full contrast)."""
    top = props.contrast_curve.isel(contrast=-1).fillna(0)
    return [int(top.unit[top.block == b][int(np.argmax(top[top.block == b].values))])
            for b in dict.fromkeys(props.block.values)]


def histogram_values(ds):
    """One model's pooled unit values per property (except preferred SF, in cycles/pixel), trained and init, for
    :func:`~dcnbio.plots.plot_property_histograms`."""
    out = {}
    for name, (label, _) in PROPERTIES.items():
        if name == "preferred_sf":
            continue
        init = property_values(ds, name, "init")
        out[name] = (property_values(ds, name).values.ravel(), None if init is None else init.values.ravel(), label)
    return out
