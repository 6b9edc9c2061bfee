"""The tables and report of ``analyses/sigma_distribution.py``: learned scales σ per layer, their distribution,
their change from initialisation, their trend with depth and their shape against macaque V1.

Input is the stacked σ dataset of :func:`dcnbio.extract.sigmas.stack_sigmas` with a ``state`` coordinate
(``trained`` / ``init``) and a ``seed`` coordinate; output is pandas tables and one :class:`Report`.

Why trained vs init: σ = 2^s with s ~ N(0, 2/3) is log-normal at initialisation by construction, so only what
training changed says anything about the paper's "approximately log-normal" claim (Fig. 3b).

* :func:`layer_table` — median σ per SRF layer, trained and init, and the median per-filter change (octaves);
* :func:`distribution_tables` — log-normal fit, goodness of fit and AIC weights of families, per block;
* :func:`paired_arrays`, :func:`trained_init_table` — trained vs init, paired by filter, seeds as clusters;
* :func:`seed_slopes` — the depth trend training added (Δ log2 σ on depth), per seed and across seeds;
* :func:`sigma_report` — the whole report, its figures and the script's closing lines.
"""
import numpy as np
import pandas as pd

from .. import plots
from ..stats import distribution as stats, runs as runstats, v1
from ..errors import DataError
from .report import Report
from ..stats.sigmas import paired_shift, paired_states, select, sigma_values

__all__ = ["MIN_DIST", "distribution_tables", "layer_table", "paired_arrays", "seed_slopes", "sigma_report",
           "trained_init_table"]

#: Fewest σ for goodness-of-fit tests and family comparisons (and for the per-block distribution tables).
MIN_DIST = 8


def blocks_of(ds):
    """The blocks of ``ds`` in network order."""
    return stats.block_order(np.unique(ds["block"].values.astype(str)))


def layer_table(ds, has_init):
    """Median σ per SRF layer (trained, init) and the median per-filter change in octaves.

    Parameters
    ----------
    ds : xr.Dataset
        Stacked σ with ``state``; the t-channel σ of ODE-block convolutions are left out.
    has_init : bool
        Whether ``ds`` holds an init state to compare with.

    Returns
    -------
    pd.DataFrame
        One row per layer depth: layer, parametrization, stride, n, median σ (px of the layer's input), and for
        time-dependent σ(t) its medians at the first and last time; with init, the init median, the median of
        log2 σ_trained − log2 σ_init per filter and the fraction of trained σ truncated by the kernel window.
    """
    trained = select(ds, state="trained", time_channel=False)
    rows = []
    for depth in np.unique(trained["depth"].values):
        t = select(trained, depth=int(depth))
        row = {"depth": int(depth), "layer": str(t["layer"].values[0]), "parametrization":
               str(t["parametrization"].values[0]), "stride": int(t["stride"].values[0]), "n": int(t.sizes["filter"]),
               "sigma (trained)": float(np.median(t["sigma"].values))}
        if np.all(np.isfinite(t["time"].values)):
            tt = t["time"].values
            row["sigma(t=0)"] = float(np.median(t["sigma"].values[tt == tt.min()]))
            row["sigma(t=T)"] = float(np.median(t["sigma"].values[tt == tt.max()]))
        if has_init:
            i = select(ds, state="init", time_channel=False, depth=int(depth))
            if i.sizes["filter"]:
                row["sigma (init)"] = float(np.median(i["sigma"].values))
                if i.sizes["filter"] == t.sizes["filter"]:
                    row["median change (octaves)"] = float(np.median(t["log2_sigma"].values - i["log2_sigma"].values))
            row["truncated (trained)"] = float(t["truncated"].values.mean())
        rows.append(row)
    return pd.DataFrame(rows).set_index("depth")


def distribution_tables(ds, groups):
    """Log-normal fit, goodness of fit and AIC comparison of families per group (``"pooled"`` or a block).

    Groups with fewer than 3 σ are skipped; goodness of fit and families need :data:`MIN_DIST`.

    Returns
    -------
    fit : pd.DataFrame
        :func:`dcnbio.stats.distribution.fit_lognormal` per group.
    gof : pd.DataFrame
        :func:`dcnbio.stats.distribution.goodness_of_fit` rows indexed ``"group / test"``.
    families : pd.DataFrame
        Akaike weights per family, the best family and n, per group.
    """
    fits, gof, fam = {}, [], {}
    for name in groups:
        x = sigma_values(ds) if name == "pooled" else sigma_values(ds, block=name)
        if x.size < 3:
            continue
        fits[name] = stats.fit_lognormal(x)
        if x.size >= MIN_DIST:
            g = stats.goodness_of_fit(x).reset_index()
            g.insert(0, "group", name)
            gof.append(g)
            f = stats.compare_families(x)
            fam[name] = {**f["akaike_weight"].to_dict(), "best": f.index[0], "n": x.size}
    fit_df = pd.DataFrame(fits).T[["n", "geometric_mean", "log2_sd", "skew_log", "excess_kurtosis_log", "skew",
                                   "skew_lognormal"]] if fits else pd.DataFrame()
    fit_df.index.name = "group"
    gof_df = pd.concat(gof).set_index(["group", "test"]) if gof else pd.DataFrame()
    if len(gof_df):
        gof_df = flat_index(gof_df, "group / test")
    fam_df = pd.DataFrame(fam).T if fam else pd.DataFrame()
    if len(fam_df):
        fam_df.index.name = "group"
        fam_df = fam_df[["n", "best"] + [c for c in stats.FAMILIES if c in fam_df.columns]]
        for c in stats.FAMILIES:
            if c in fam_df.columns:
                fam_df[c] = fam_df[c].astype(float)
    return fit_df, gof_df, fam_df


def paired_arrays(ds, block=None):
    """Aligned trained and init σ, and each filter's seed, for the seeds that have an init control.

    Parameters
    ----------
    ds : xr.Dataset
        Stacked σ with ``state`` and ``seed``.
    block : str, optional
        One block only.

    Returns
    -------
    (trained, init, seeds) : three ndarrays ``(n_filters,)``, or None when no seed has a control.

    Raises
    ------
    DataError
        Trained and init σ of a seed are not the same filters in the same order.
    """
    pair = paired_states(ds, **({} if block is None else {"block": block}))
    if pair is None:
        return None
    trained, init = pair
    return trained["sigma"].values, init["sigma"].values, trained["seed"].values.astype(str)


def trained_init_table(ds, groups, n_boot, seed):
    """Trained minus init per group: :func:`dcnbio.stats.distribution.compare_trained_init`, paired by filter,
    bootstrap resampling seeds as clusters; rows ``"group / quantity"``, column ``resampled`` says what was."""
    rows = []
    for name in groups:
        arrays = paired_arrays(ds, None if name == "pooled" else name)
        if arrays is None or arrays[0].size < 3:
            continue
        t, i, cl = arrays
        res = stats.compare_trained_init(t, i, paired=True, clusters=cl, n_resamples=n_boot, seed=seed)
        res = res.reset_index()
        res.insert(0, "group", name)
        res["resampled"] = res.attrs.get("resampled", "")
        rows.append(res)
    if not rows:
        return pd.DataFrame()
    return flat_index(pd.concat(rows).set_index(["group", "quantity"]), "group / quantity")


def seed_slopes(shift, model_name):
    """Per seed, the OLS slope of Δ log2 σ (:func:`dcnbio.stats.sigmas.paired_shift`) on layer depth, and a
    one-sample t-test of the slopes against 0 over seeds (:func:`dcnbio.stats.runs.against_reference`).

    Returns
    -------
    pandas.DataFrame
        Rows ``seed <S>`` (``estimate``) and, with two seeds or more, ``across seeds`` (``estimate`` the mean,
        ``sd``, ``t``, ``df``, ``pvalue``; NaN tests where the slopes do not spread).
    """
    slopes = {}
    for seed in np.unique(shift["seed"].values.astype(str)):
        part = select(shift, seed=seed)
        depth = part["depth"].values.astype(float)
        if np.unique(depth).size >= 2:
            slopes[(model_name, f"seed {seed}")] = float(np.polyfit(depth, part["delta_log2_sigma"].values, 1)[0])
    rows = {run: {"estimate": value} for (_, run), value in slopes.items()}
    if len(slopes) >= 2:
        test = runstats.against_reference(slopes, 0.0).iloc[0]
        rows["across seeds"] = {"estimate": test["mean"], "sd": test["sd"], "t": test["t"], "df": test["df"],
                                "pvalue": test["p"]}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "sd", "t", "df", "pvalue"]
                                  ).rename_axis("run")


def flat_index(df, name):
    """``df`` with its two-level index joined as ``"a / b"`` under the name ``name``."""
    df = df.copy()
    df.index = [f"{a} / {b}" for a, b in df.index]
    df.index.name = name
    return df


def inputs_table(inputs):
    """The report's table of checkpoints: one row per seed (``inputs``: ``(seed, info, control)`` triples)."""
    return pd.DataFrame([{"seed": s, "checkpoint": info["path"], "kind": info.get("kind", ""),
                          "epoch": info.get("epoch", ""), "step": info.get("step", ""), "control": c}
                         for s, info, c in inputs]).set_index("seed")


def sigma_report(ds, inputs, *, n_boot=1000, seed=0, reference=None):
    """The σ-distribution study of one model over seeds: its report, its figures and its summary lines.

    Parameters
    ----------
    ds : xr.Dataset
        Stacked σ (``state`` trained/init, ``seed``) of one model.
    inputs : list of (seed, info, control)
        Each seed's checkpoint info (``path``, ``kind``, ``epoch``, ``step``, ``metrics``) and what its control
        is (``"init.pt"`` or why it is missing).
    n_boot, seed : int
        Bootstrap resamples and the bootstrap's seed.
    reference : xr.Dataset, optional
        The V1 peak-frequency reference (:func:`dcnbio.io.load_v1_reference`); needed for per-channel models.

    Returns
    -------
    report : Report
    figures : dict of str to matplotlib Figure
        ``sigma_vs_depth.png`` always, ``sigma_histograms.png`` for per-channel models (the report names them).
    lines : list of str
        What the script prints at the end.
    """
    model_name = ds.attrs.get("model_name", "model")
    has_init = "init" in set(ds["state"].values.astype(str))
    trained = select(ds, state="trained")
    per_channel = "per-channel" in set(trained["parametrization"].values.astype(str))
    time_dependent = bool(np.any(np.isfinite(trained["time"].values)))
    groups = ["pooled"] + blocks_of(trained)
    figures = {}

    report = Report(f"Learned scales of {model_name}: distribution, depth and V1")
    report.section("Inputs").text(
        f"{len(inputs)} checkpoint(s) of `{model_name}`; σ in pixels of each layer's input map. The σ_ji of the "
        "constant t-channel of ODE-block convolutions are excluded from every statistic (a filter on a constant "
        "map only scales it: not a receptive field); they stay in `sigma.nc` (`is_time_channel`).")
    report.table(inputs_table(inputs), "Checkpoints and their init controls")
    last_metrics = {s: {k: v for k, v in info["metrics"][-1].items() if isinstance(v, (int, float))}
                    for s, info, _ in inputs if info.get("metrics")}
    if last_metrics:
        report.table(pd.DataFrame(last_metrics).T.rename_axis("seed"), "Last recorded training metrics")
    if per_channel:
        report.text("Per-channel layers use fixed 7×7 kernels: σ above ≈1.5 px is truncated by the window, so such "
                    "σ are not true bandwidths (column `truncated`).")
    if not has_init:
        report.text("**No init control was found**: without it a log-normal shape says nothing about training "
                    "(σ is log-normal at init by construction).")

    report.section("σ per layer").table(layer_table(ds, has_init), "Median σ per SRF layer (px of the layer's input)")
    figures["sigma_vs_depth.png"] = plots.plot_sigma_vs_depth(ds)
    report.figure("sigma_vs_depth.png", "σ of every SRF layer against depth (grey: init)")

    report.section("Depth trend")
    trend = learned = per_seed = None
    if len(np.unique(trained["depth"].values)) >= 2:
        trend = stats.depth_trend(trained)
        report.table(trend.table(), f"log2 σ against layer depth (trained; model: {trend.kind})")
        if has_init:
            report.table(stats.depth_trend(select(ds, state="init")).table(),
                         "The same at init (control: no trend expected)")
            shift = paired_shift(ds)  # the trained filters of the seeds with a control: the same layers, depths
            if shift is not None:
                learned = stats.depth_trend(shift, variable="delta_log2_sigma")
                report.text("Trained and init slopes above each carry the random initial draw; the change of each "
                            "filter from its own init removes it, so the slope of Δ log2 σ = log2 σ_trained − "
                            "log2 σ_init on depth is the depth trend that training added (0: none).")
                report.table(learned.table(), f"Δ log2 σ against layer depth (trained − init, paired by filter; "
                                              f"model: {learned.kind})")
                if learned.notes:
                    report.bullets([f"Δ log2 σ fit — {note}" for note in learned.notes])
                report.text("Filters of one network are not independent samples, so the run is the unit: the same "
                            "slope fitted per seed (OLS), tested against 0 across seeds.")
                per_seed = seed_slopes(shift, model_name)
                report.table(per_seed, "Slope of Δ log2 σ on depth per seed (octaves per layer)")
        if trend.notes:
            report.bullets(trend.notes)
        report.latex(trend.summary_latex(), trend.summary_text())
    else:
        report.text("Only one SRF layer depth: no depth trend.")

    report.section("Distribution of σ")
    fit_df = pd.DataFrame()
    if not per_channel:
        report.text("This model has " + ("σ(t) curves" if time_dependent else "one σ per layer") +
                    ", not a sample of σ per layer: distribution statistics (log-normal fits, goodness of fit, V1 "
                    "shapes) apply to per-channel σ_ji models only; σ vs depth above is the analysis here.")
    else:
        fit_df, gof_df, fam_df = distribution_tables(trained, groups)
        report.table(fit_df, "Log-normal fit of trained σ (MLE, loc 0): geometric mean (px), SD of log2 σ "
                             "(octaves), skewness of log σ, excess kurtosis of log σ, skewness of σ (sample, fit)")
        boot = stats.bootstrap_summary(trained, groups="block", n_resamples=n_boot, seed=seed)
        report.table(flat_index(boot.set_index(["group", "statistic"]), "group / statistic"),
                     "Bootstrap 95% CIs of the shape statistics (trained)")
        if len(gof_df):
            report.table(gof_df, "Goodness of fit of log-normality (tests valid with estimated parameters)")
        if len(fam_df):
            report.table(fam_df, "Akaike weights of distribution families (fits to σ; loc 0 for positive families)")
        if has_init:
            init_fit, _, init_fam = distribution_tables(select(ds, state="init"), groups)
            report.table(init_fit, "Log-normal fit of init σ (control)")
            if len(init_fam):
                report.table(init_fam, "Akaike weights at init (control)")
        figures["sigma_histograms.png"] = plots.plot_sigma_histograms(ds)
        report.figure("sigma_histograms.png", "σ per block, density per log10 unit, with fitted log-normal "
                                              "(outline, dashed: init)")

    report.section("Trained vs init")
    ti = trained_init_table(ds, groups, n_boot, seed) if has_init else pd.DataFrame()
    if len(ti):
        report.text(f"Paired by filter; bootstrap CIs resample {ti['resampled'].iloc[0]} "
                    f"({n_boot} resamples). KS and Anderson–Darling assume independent samples, so with "
                    "paired σ their p-values are conservative.")
        report.table(ti.drop(columns="resampled"),
                     "Trained minus init (ratio for the geometric mean); changes in octaves")
    else:
        report.text("No init control: nothing to compare.")

    if per_channel:
        if reference is None:
            raise DataError("a per-channel σ model needs the V1 reference (dcnbio.io.load_v1_reference())")
        report.section("Against macaque V1 (shapes only)")
        report.text("Peak spatial frequency √n/(2πσ) with n the layer's derivative order, σ in input-image pixels. "
                    "log f = const − log σ: the log-SD carries over and the skew of log f is minus that of log σ. "
                    "Locations are not compared (cycles/pixel vs cycles/degree). V1: " + reference.attrs["citation"]
                    + ".")
        cmp = v1.compare_with_v1(trained, n_resamples=n_boot, seed=seed, reference=reference)
        if has_init:
            ci = v1.compare_with_v1(select(ds, state="init"), n_resamples=n_boot, seed=seed, reference=reference)
            ci = ci[ci["source"] == "model"].assign(source="model (init)")
            cmp = pd.concat([cmp[cmp["source"] == "model"], ci, cmp[cmp["source"] != "model"]])
        cmp.index = [f"{src}: {g}" for src, g in zip(cmp["source"], cmp["group"])]
        cmp.index.name = "source: group"
        report.table(cmp.drop(columns=["source", "group"]),
                     "SD of log2 peak frequency (octaves) and skewness of log frequency, with bootstrap CIs")

    lines = [f"{model_name}: {len(inputs)} seed(s), {int(sigma_values(trained).size)} trained σ "
             f"({'with' if has_init else 'without'} init control)"]
    if len(fit_df):
        r = fit_df.loc["pooled"]
        lines.append(f"  trained: geometric mean {r['geometric_mean']:.3g} px, log2-SD {r['log2_sd']:.3g} oct, "
                     f"skew of log σ {r['skew_log']:.3g}")
    if len(ti):
        row = ti.loc["pooled / delta_log2_sd"]
        lines.append(f"  trained - init log2-SD: {row['estimate']:+.3g} oct [{row['ci_low']:+.3g}, "
                     f"{row['ci_high']:+.3g}]")
    if trend is not None:
        lines.append(f"  depth: {trend.slope:+.3g} oct/layer [{trend.slope_ci[0]:+.3g}, {trend.slope_ci[1]:+.3g}] "
                     f"({trend.kind}); Spearman over layer medians {trend.layer_spearman['rho']:.2f}")
    if learned is not None:
        line = (f"  depth, trained - init: {learned.slope:+.3g} oct/layer [{learned.slope_ci[0]:+.3g}, "
                f"{learned.slope_ci[1]:+.3g}] ({learned.kind}, paired by filter)")
        across = per_seed.loc["across seeds"] if "across seeds" in per_seed.index else None
        if across is not None and np.isfinite(across["t"]):
            line += f"; over seeds t({across['df']:.0f}) = {across['t']:.2f}, p = {across['pvalue']:.2g}"
        lines.append(line)
    return report, figures, lines
