"""Statistics of learned scales: is the σ distribution log-normal, did training change it, does σ grow with depth?

The paper (§3.2, Fig. 3b) reports that trained σ_ji are "positively skewed, approximately log-normal".  Each
function below exists because that claim needs it:

:func:`fit_lognormal`
    Location and shape of a log-normal fit (geometric mean, log-SD, skew of log σ): the quantities that describe
    the distribution and that carry over to spatial frequency (σ ↦ √n / (2πσ) only shifts and mirrors log σ).
:func:`goodness_of_fit`
    Whether log-normality is rejected, with tests that stay valid when the parameters are estimated from the
    same data.
:func:`compare_families`
    Whether log-normal describes σ better than other positive skewed families (AIC, Akaike weights).
:func:`compare_trained_init`
    The control that gives the claim meaning: σ = 2^s with s ~ N(0, 2/3) is log-normal *at initialisation by
    construction*, so "log-normal after training" alone proves nothing; the question is what training changed.
:func:`bootstrap_summary`
    Uncertainty of the shape statistics; σ values cluster by seed, so with several seeds the seeds are resampled.
:func:`depth_trend`
    Fig. 3a's "σ rises with depth", as a rank correlation and as a regression of log2 σ on layer depth.

Conventions.  Logarithms: the fit works in natural logs (scipy's ``lognorm``), shapes are also reported in
octaves (log2).  SDs are maximum-likelihood (``ddof=0``, what ``lognorm.fit`` returns); skewness is the moment
estimator g1 of log σ (0 for an exact log-normal).  Every function takes plain 1-D arrays of σ (> 0); use
:func:`dcnbio.stats.sigmas.sigma_values` to get them from a dataset.
"""
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.stats as st
import xarray as xr

from ..errors import ConfigError, DataError

LN2 = math.log(2.0)

#: Shape statistics of log σ computed by :func:`bootstrap_summary` (and their meaning).
SHAPE_STATISTICS = {
    "geometric_mean": "exp(mean ln x): the median of a log-normal",
    "log2_sd": "SD of log2 x (octaves; ddof=0)",
    "skew_log": "skewness g1 of ln x (0 for a log-normal)",
}


def _positive(x, name="x", min_n=3):
    x = np.asarray(x, dtype=float).ravel()
    if x.size < min_n:
        raise DataError(f"{name} has {x.size} values; need at least {min_n}")
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise DataError(f"{name} must hold finite values > 0 (scales or frequencies)")
    return x


def _log_shape(logx, axis=-1):
    """Mean, SD (ddof=0) and skewness g1 of natural-log values along ``axis`` (vectorised for the bootstrap)."""
    mean = logx.mean(axis=axis, keepdims=True)
    dev = logx - mean
    dev2 = dev * dev  # products, not float powers: this runs on (resamples × n) arrays in the bootstrap
    m2 = dev2.mean(axis=axis)
    m3 = (dev2 * dev).mean(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = np.where(m2 > 0, m3 / np.where(m2 > 0, m2, 1.0) ** 1.5, np.nan)
    return np.squeeze(mean, axis=axis), np.sqrt(m2), skew


def shape_from_logs(logx, axis=-1):
    """Geometric mean, SD of log2 (octaves) and skewness of natural logs along ``axis`` of ``logx`` (natural logs of
    σ)."""
    mean, sd, skew = _log_shape(logx, axis)
    return {"geometric_mean": np.exp(mean), "log2_sd": sd / LN2, "skew_log": skew}


def fit_lognormal(x):
    """Maximum-likelihood log-normal fit with location fixed at 0.

    ``scipy.stats.lognorm.fit(x, floc=0)`` is the normal MLE of ``ln x``: ``scale = exp(mean ln x)`` and
    ``s = SD(ln x)`` with ``ddof=0``.

    Parameters
    ----------
    x : array-like, shape (n,)
        Positive values (σ in pixels, or frequencies), n ≥ 3.

    Returns
    -------
    pandas.Series
        ``n``; ``shape`` (s), ``scale`` (scipy's parameters; ``loc`` = 0); ``geometric_mean`` (= scale, the
        median); ``ln_sd`` (= s); ``log2_sd`` (s / ln 2, octaves); ``skew_log`` (g1 of ln x: the sample check of
        log-normal symmetry); ``excess_kurtosis_log``; ``skew`` (g1 of x itself: the "positive skew" of the
        paper) and ``skew_lognormal`` (the skew of x implied by the fit, (e^{s²}+2)·√(e^{s²}−1)).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.exp(np.random.default_rng(0).normal(0.0, 0.5, 20000))
    >>> fit = fit_lognormal(x)
    >>> round(float(fit.geometric_mean), 2), round(float(fit.ln_sd), 2)
    (1.0, 0.5)
    """
    x = _positive(x)
    s, loc, scale = st.lognorm.fit(x, floc=0)
    logx = np.log(x)
    es2 = math.exp(s * s)
    return pd.Series({
        "n": x.size, "shape": s, "scale": scale, "geometric_mean": scale, "ln_sd": s, "log2_sd": s / LN2,
        "skew_log": float(st.skew(logx)), "excess_kurtosis_log": float(st.kurtosis(logx)),
        "skew": float(st.skew(x)), "skew_lognormal": (es2 + 2) * math.sqrt(es2 - 1),
    })


def goodness_of_fit(x, *, n_mc_samples=0, seed=0):
    """Tests of log-normality of ``x`` (normality of ``ln x``) that are valid with estimated parameters.

    A plain Kolmogorov–Smirnov test against a normal whose mean and SD were fitted to the same data is *wrong*:
    the fit pulls the reference toward the sample, so the KS p-values are far too large (the test almost never
    rejects).  These tests account for the estimation:

    ``lilliefors``
        KS statistic with the null distribution of estimated mean and SD (statsmodels, tabulated p-values,
        reported within [0.001, 0.2]).
    ``anderson_darling``
        Anderson–Darling statistic for normality with estimated parameters (statsmodels ``normal_ad``); weighs
        the tails, where log-normal and gamma differ most.
    ``anderson_darling_mc``
        Only if ``n_mc_samples > 0``: the same statistic with a parametric-bootstrap (Monte Carlo) p-value,
        ``scipy.stats.goodness_of_fit`` (refits every simulated sample).

    With thousands of σ any small departure is "significant": read the p-values together with the effect sizes
    of :func:`fit_lognormal` (skew and excess kurtosis of log σ) and with :func:`compare_families`.

    Parameters
    ----------
    x : array-like, shape (n,)
        Positive values, n ≥ 8.
    n_mc_samples : int
        Monte Carlo samples of the parametric bootstrap (0: skip it; 999 takes ≈ 1 s for n = 3000).
    seed : int

    Returns
    -------
    pandas.DataFrame
        Index ``test``; columns ``statistic``, ``pvalue``, ``n``.
    """
    from statsmodels.stats.diagnostic import lilliefors, normal_ad

    x = _positive(x, min_n=8)
    logx = np.log(x)
    rows = {}
    stat, p = lilliefors(logx, dist="norm", pvalmethod="table")
    rows["lilliefors"] = (stat, p)
    stat, p = normal_ad(logx)
    rows["anderson_darling"] = (stat, p)
    if n_mc_samples:
        res = st.goodness_of_fit(st.norm, logx, statistic="ad", n_mc_samples=int(n_mc_samples),
                                 rng=np.random.default_rng(seed))
        rows["anderson_darling_mc"] = (res.statistic, res.pvalue)
    df = pd.DataFrame.from_dict(rows, orient="index", columns=["statistic", "pvalue"])
    df.index.name = "test"
    df["n"] = x.size
    return df


#: Candidate families of :func:`compare_families`: scipy distribution and the fixed location (None: free).
FAMILIES = {
    "lognormal": (st.lognorm, 0.0),
    "gamma": (st.gamma, 0.0),
    "weibull": (st.weibull_min, 0.0),
    "inverse_gaussian": (st.invgauss, 0.0),
    "normal": (st.norm, None),
}


def compare_families(x, families=None):
    """Rank distribution families for ``x`` by AIC, with Akaike weights.

    Each family is fitted by maximum likelihood to the same values ``x`` (not to logs), the positive families
    with location fixed at 0, so all have two free parameters and their AICs are comparable.  The Akaike weight
    ``exp(-Δ/2) / Σ exp(-Δ/2)`` is the relative likelihood of each family among those compared; it says which
    candidate is best, not that the best one fits (see :func:`goodness_of_fit`).

    Parameters
    ----------
    x : array-like, shape (n,)
        Positive values, n ≥ 8.
    families : sequence of str, optional
        Keys of :data:`FAMILIES` (default: all: lognormal, gamma, weibull, inverse_gaussian, normal).

    Returns
    -------
    pandas.DataFrame
        Index ``family`` sorted by AIC; columns ``params`` (scipy's fitted parameters, text), ``k``,
        ``loglik``, ``aic``, ``delta_aic``, ``akaike_weight``.
    """
    x = _positive(x, min_n=8)
    names = list(FAMILIES) if families is None else list(families)
    unknown = set(names) - set(FAMILIES)
    if unknown:
        raise ConfigError(f"unknown families {sorted(unknown)}; choose from {list(FAMILIES)}")
    rows = []
    for name in names:
        dist, loc = FAMILIES[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # optimiser probes outside the support
            params = dist.fit(x) if loc is None else dist.fit(x, floc=loc)
        loglik = float(np.sum(dist.logpdf(x, *params)))
        k = len(params) - (0 if loc is None else 1)
        rows.append({"family": name, "params": ", ".join(f"{p:.4g}" for p in params), "k": k,
                     "loglik": loglik, "aic": 2 * k - 2 * loglik})
    df = pd.DataFrame(rows).set_index("family").sort_values("aic")
    df["delta_aic"] = df["aic"] - df["aic"].min()
    w = np.exp(-0.5 * df["delta_aic"].to_numpy())
    df["akaike_weight"] = w / w.sum()
    return df


# --- bootstrap --------------------------------------------------------------------------------------------

def _percentile_ci(samples, confidence):
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return np.nan, np.nan
    a = (1 - confidence) / 2
    return tuple(np.quantile(samples, [a, 1 - a]))


#: Below this many seeds the cluster bootstrap also resamples filters within each drawn seed (two-stage).
TWO_STAGE_BELOW = 5


def _cluster_indices(members, rng, two_stage):
    """One cluster-bootstrap resample: draw clusters with replacement, then (two-stage) members within each."""
    pick = rng.integers(0, len(members), size=len(members))
    if two_stage:
        return np.concatenate([members[i][rng.integers(0, members[i].size, members[i].size)] for i in pick])
    return np.concatenate([members[i] for i in pick])


def _resample_shapes(logx, clusters, n_resamples, rng, two_stage):
    """Bootstrap replicates of the shape statistics of ``logx`` (natural logs).

    Without clusters: filters are resampled (vectorised).  With clusters: whole clusters (seeds) are resampled
    with replacement and their values pooled; ``two_stage`` also resamples values within each drawn cluster.
    """
    if clusters is None:
        chunks = []
        n = logx.size
        step = max(1, int(4e6 // max(n, 1)))  # bound memory of the index matrix
        for start in range(0, n_resamples, step):
            idx = rng.integers(0, n, size=(min(step, n_resamples - start), n))
            chunks.append(shape_from_logs(logx[idx], axis=1))
        return {k: np.concatenate([c[k] for c in chunks]) for k in SHAPE_STATISTICS}
    labels, inverse = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(labels.size)]
    out = {k: np.empty(n_resamples) for k in SHAPE_STATISTICS}
    for b in range(n_resamples):
        stats = shape_from_logs(logx[_cluster_indices(members, rng, two_stage)])
        for k in out:
            out[k][b] = stats[k]
    return out


def _two_stage(two_stage, n_clusters):
    return n_clusters < TWO_STAGE_BELOW if two_stage is None else bool(two_stage)


def _data_columns(data, groups, clusters, variable, time_channel):
    """``(values, group labels or None, cluster labels or None)`` from a Dataset or arrays."""
    if isinstance(data, xr.Dataset):
        from .sigmas import filter_mask

        mask = filter_mask(data, time_channel=time_channel)
        values = np.asarray(data[variable].values[mask], dtype=float)
        if isinstance(groups, str):
            groups = [groups]
        group_labels = None
        if groups:
            for g in groups:
                if g not in data.coords:
                    raise ConfigError(f"no coordinate {g!r} to group by; have {sorted(data.coords)}")
            cols = [data[g].values[mask].astype(str) for g in groups]
            group_labels = np.array(["/".join(parts) for parts in zip(*cols)], dtype=object)
        if clusters is None and "seed" in data.coords:
            clusters = "seed"
        cluster_labels = None
        if clusters is not None:
            if clusters not in data.coords:
                raise ConfigError(f"no coordinate {clusters!r} to resample by; have {sorted(data.coords)}")
            cluster_labels = data[clusters].values[mask].astype(str)
        return values, group_labels, cluster_labels
    values = np.asarray(data, dtype=float).ravel()
    for name, labels in (("groups", groups), ("clusters", clusters)):
        if labels is not None and np.asarray(labels).shape != values.shape:
            raise DataError(f"{name} must have one label per value ({values.size}), got shape "
                            f"{np.asarray(labels).shape}")
    return (values, None if groups is None else np.asarray(groups).astype(str),
            None if clusters is None else np.asarray(clusters).astype(str))


def bootstrap_summary(data, *, groups=None, clusters=None, n_resamples=2000, confidence=0.95, seed=0,
                      variable="sigma", time_channel=False, min_n=3, two_stage=None):
    """Bootstrap confidence intervals of the geometric mean, log2-SD and skew of log values.

    Why: the shape statistics are what is compared with init and with V1; their uncertainty decides whether a
    difference means anything.  σ of one seed share a training run, so when the data hold several seeds the
    *seeds* are resampled with replacement (cluster bootstrap) and their σ pooled; with one seed the filters are
    resampled (this treats filters as independent and understates the uncertainty across training runs).  With
    few seeds, resampling seeds alone has few distinct resamples (3 for 2 seeds) and ignores the sampling of
    filters within a seed, so below :data:`TWO_STAGE_BELOW` seeds the bootstrap is two-stage: seeds with
    replacement, then filters with replacement within each drawn seed (conservative: within-seed variance
    enters twice).  Percentile intervals throughout.

    Parameters
    ----------
    data : xarray.Dataset or array-like of shape (n,)
        A sigma dataset (:func:`~dcnbio.extract.sigmas.extract_sigmas`, :func:`~dcnbio.extract.sigmas.stack_sigmas`)
        or positive values.
    groups : str, list of str or array-like, optional
        Dataset: coordinate name(s) to summarise separately (e.g. ``"block"``); array: one label per value.
        A ``pooled`` row over all values is always included.
    clusters : str or array-like, optional
        Dataset: coordinate of the resampling unit (default ``"seed"`` when present); array: one label per
        value.  Used when a group has at least 2 distinct clusters.
    n_resamples : int
    confidence : float
    seed : int
    variable : str
        Dataset variable to summarise (``sigma`` or ``sigma_input``).
    time_channel : bool
        Keep the σ of the constant t-channel (default: excluded).
    min_n : int
        Groups with fewer values are reported with NaN intervals.
    two_stage : bool, optional
        Also resample filters within drawn seeds; default: when fewer than :data:`TWO_STAGE_BELOW` seeds.

    Returns
    -------
    pandas.DataFrame
        One row per (group, statistic) with columns ``group``, ``statistic`` (``geometric_mean``, ``log2_sd``,
        ``skew_log``), ``estimate``, ``ci_low``, ``ci_high``, ``n``, ``n_clusters``, ``resampled``
        (``"seeds"``, ``"seeds+filters"`` (two-stage) or ``"filters"``).
    """
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ConfigError("n_resamples must be >= 1 and confidence in (0, 1)")
    values, group_labels, cluster_labels = _data_columns(data, groups, clusters, variable, time_channel)
    _positive(values, name=variable if isinstance(data, xr.Dataset) else "values", min_n=1)
    rng = np.random.default_rng(seed)
    selections = [("pooled", np.ones(values.size, bool))]
    if group_labels is not None:
        selections += [(g, group_labels == g) for g in block_order(np.unique(group_labels))]
    rows = []
    for name, mask in selections:
        logx = np.log(values[mask])
        cl = None if cluster_labels is None else cluster_labels[mask]
        n_clusters = 1 if cl is None else np.unique(cl).size
        use_clusters = cl if n_clusters >= 2 else None
        stage2 = _two_stage(two_stage, n_clusters)
        est = shape_from_logs(logx) if logx.size else {k: np.nan for k in SHAPE_STATISTICS}
        boots = _resample_shapes(logx, use_clusters, n_resamples, rng, stage2) if logx.size >= min_n else None
        for stat in SHAPE_STATISTICS:
            lo, hi = _percentile_ci(boots[stat], confidence) if boots is not None else (np.nan, np.nan)
            rows.append({"group": name, "statistic": stat, "estimate": float(est[stat]), "ci_low": lo,
                         "ci_high": hi, "n": int(logx.size), "n_clusters": int(n_clusters),
                         "resampled": ("seeds+filters" if stage2 else "seeds") if use_clusters is not None
                         else "filters"})
    return pd.DataFrame(rows)


def block_order(labels):
    """Labels sorted by execution order of their block (stem, block1, down1, …), then alphabetically.

    >>> block_order(["block3", "down1", "pooled", "block1"])
    ['block1', 'down1', 'block3', 'pooled']
    """
    rank = {name: i for i, name in enumerate(("stem", "block1", "down1", "block2", "down2", "block3"))}
    return sorted(labels, key=lambda s: (rank.get(str(s).split("/")[0], len(rank)), str(s)))


# --- trained vs init ---------------------------------------------------------------------------------------

def compare_trained_init(trained, init, *, paired=None, clusters=None, n_resamples=2000, confidence=0.95,
                         seed=0, two_stage=None):
    """What training did to a σ distribution, against its initialisation.

    Why: σ = 2^s with s ~ N(0, 2/3) is log-normal at init by construction (median 1 px, ln-SD 0.462), so a
    log-normal fit after training only says something if the distribution *moved*.

    Reported quantities (rows):

    ``ks_2samp``
        Two-sample Kolmogorov–Smirnov test of the σ distributions (invariant to the log transform).
    ``anderson_ksamp``
        k-sample Anderson–Darling test (midrank variant), more sensitive in the tails; scipy interpolates its
        p-value from a table and clips it to [0.001, 0.25].
    ``geometric_mean_ratio``, ``delta_log2_sd``, ``delta_skew_log``
        Trained minus init (ratio for the geometric mean) of the shape statistics, with bootstrap percentile CIs.
    ``mean_delta_log2``, ``median_abs_delta_log2``, ``max_abs_delta_log2``, ``spearman_init_trained``
        Only when paired: per-filter change of log2 σ (octaves) and the rank correlation of each filter's σ
        before and after (how much of the initial σ training kept).

    Both tests assume independent samples.  Trained and init σ of the same filters are *paired* and positively
    correlated, which makes the two-sample p-values conservative; the paired rows and the bootstrap intervals
    (which resample pairs jointly) are the sharper evidence.

    Parameters
    ----------
    trained, init : array-like, shape (n,) and (m,)
        Positive σ.  When ``paired`` the arrays must be aligned filter by filter.
    paired : bool, optional
        Default: ``True`` when both have the same length.
    clusters : array-like, shape (n,), optional
        Seed label per value (paired data only): with ≥ 2 seeds the bootstrap resamples seeds (two-stage, pairs
        within seeds too, below :data:`TWO_STAGE_BELOW` seeds; see :func:`bootstrap_summary`).
    two_stage : bool, optional
    n_resamples : int
    confidence : float
    seed : int

    Returns
    -------
    pandas.DataFrame
        Index ``quantity``; columns ``estimate``, ``ci_low``, ``ci_high``, ``pvalue`` (NaN where not a test).
    """
    trained = _positive(trained, "trained")
    init = _positive(init, "init")
    if paired is None:
        paired = trained.size == init.size
    if paired and trained.size != init.size:
        raise DataError(f"paired comparison needs aligned arrays; got {trained.size} trained and {init.size} init")
    if clusters is not None:
        if not paired:
            raise ConfigError("clusters need paired trained/init arrays")
        clusters = np.asarray(clusters).astype(str)
        if clusters.shape != trained.shape:
            raise DataError("clusters must have one label per value")
    lt, li = np.log(trained), np.log(init)
    rows = {}
    ks = st.ks_2samp(trained, init)
    rows["ks_2samp"] = (ks.statistic, np.nan, np.nan, ks.pvalue)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "p-value capped/floored" is documented above
        ad = st.anderson_ksamp([trained, init], variant="midrank")
    rows["anderson_ksamp"] = (ad.statistic, np.nan, np.nan, ad.pvalue)

    def shape_deltas(a, b, axis=-1):
        sa, sb = shape_from_logs(a, axis), shape_from_logs(b, axis)
        return {"geometric_mean_ratio": sa["geometric_mean"] / sb["geometric_mean"],
                "delta_log2_sd": sa["log2_sd"] - sb["log2_sd"],
                "delta_skew_log": sa["skew_log"] - sb["skew_log"]}

    est = shape_deltas(lt, li)
    rng = np.random.default_rng(seed)
    boots = {k: np.empty(n_resamples) for k in est}
    n_clusters = 0 if clusters is None else np.unique(clusters).size
    if paired:
        d = (lt - li) / LN2
        est.update({"mean_delta_log2": d.mean(), "median_abs_delta_log2": np.median(np.abs(d)),
                    "max_abs_delta_log2": np.abs(d).max()})
        boots["mean_delta_log2"] = np.empty(n_resamples)
        stage2 = _two_stage(two_stage, n_clusters)
        if n_clusters >= 2:
            labels, inverse = np.unique(clusters, return_inverse=True)
            members = [np.flatnonzero(inverse == i) for i in range(labels.size)]
            for b in range(n_resamples):
                idx = _cluster_indices(members, rng, stage2)
                for k, v in shape_deltas(lt[idx], li[idx]).items():
                    boots[k][b] = v
                boots["mean_delta_log2"][b] = d[idx].mean()
        else:  # pairs resampled jointly, vectorised in chunks of resamples
            step = max(1, int(2e6 // lt.size))
            for start in range(0, n_resamples, step):
                stop = min(start + step, n_resamples)
                idx = rng.integers(0, lt.size, size=(stop - start, lt.size))
                for k, v in shape_deltas(lt[idx], li[idx], axis=1).items():
                    boots[k][start:stop] = v
                boots["mean_delta_log2"][start:stop] = d[idx].mean(axis=1)
    else:
        for b in range(n_resamples):
            it, ii = rng.integers(0, lt.size, lt.size), rng.integers(0, li.size, li.size)
            for k, v in shape_deltas(lt[it], li[ii]).items():
                boots[k][b] = v
    for k, v in est.items():
        lo, hi = _percentile_ci(boots[k], confidence) if k in boots else (np.nan, np.nan)
        rows[k] = (float(v), lo, hi, np.nan)
    if paired:
        rho = st.spearmanr(trained, init)
        rows["spearman_init_trained"] = (rho.statistic, np.nan, np.nan, rho.pvalue)
    df = pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "ci_low", "ci_high", "pvalue"])
    df.index.name = "quantity"
    if n_clusters >= 2:
        df.attrs["resampled"] = "seeds+pairs" if _two_stage(two_stage, n_clusters) else "seeds"
    else:
        df.attrs["resampled"] = "pairs" if paired else "each sample"
    return df


# --- depth -------------------------------------------------------------------------------------------------

@dataclass
class DepthTrend:
    """Result of :func:`depth_trend`.

    Attributes
    ----------
    spearman : dict
        ``rho``, ``pvalue``, ``n`` over all σ values vs layer depth (treats σ as independent: optimistic).
    layer_spearman : dict
        The same over one median log2 σ per (seed, layer): the conservative check, n = layers × seeds.
    kind : str
        ``"mixedlm"`` (random intercept per seed) or ``"ols"``.
    model : statsmodels results
        The fitted model of ``response ~ depth`` (+ seed random intercept for ``mixedlm``).
    ols : statsmodels results
        Fixed-effects OLS ``response ~ depth (+ C(seed))``: always reported, because mixed models with few
        seeds are fragile.
    slope, slope_ci : float, (float, float)
        Octaves of σ per layer from ``model``, with its 95 % confidence interval.
    notes : list of str
        Fallbacks and warnings (non-convergence, boundary variance).
    response : str
        What was regressed on depth: ``log2_sigma`` or ``delta_log2_sigma`` (trained − init, paired by filter).
    """

    spearman: dict
    layer_spearman: dict
    kind: str
    model: object
    ols: object
    slope: float
    slope_ci: tuple
    notes: list = field(default_factory=list)
    response: str = "log2_sigma"

    def table(self):
        """One-row-per-quantity summary (pandas.DataFrame)."""
        what = self.response.replace("_", " ")
        rows = [
            ("spearman_rho (all sigma)", self.spearman["rho"], np.nan, np.nan, self.spearman["pvalue"],
             self.spearman["n"]),
            ("spearman_rho (layer medians)", self.layer_spearman["rho"], np.nan, np.nan,
             self.layer_spearman["pvalue"], self.layer_spearman["n"]),
            (f"slope {what} / layer ({self.kind})", self.slope, *self.slope_ci,
             float(self.model.pvalues["depth"]), int(self.model.nobs)),
        ]
        if self.ols is not self.model:
            ci = self.ols.conf_int().loc["depth"]
            rows.append((f"slope {what} / layer (ols, seed fixed effects)", float(self.ols.params["depth"]),
                         float(ci.iloc[0]), float(ci.iloc[1]), float(self.ols.pvalues["depth"]), int(self.ols.nobs)))
        return pd.DataFrame(rows, columns=["quantity", "estimate", "ci_low", "ci_high", "pvalue", "n"]
                            ).set_index("quantity")

    def summary_latex(self):
        """LaTeX of the statsmodels summaries (``summary().as_latex()``), the model first, then OLS."""
        return "\n\n".join(summary.as_latex() for summary in self._summaries())

    def summary_text(self):
        """The statsmodels summaries of the depth-trend fits, as text."""
        return "\n\n".join(str(summary) for summary in self._summaries())

    def _summaries(self):
        models = [self.model] if self.ols is self.model else [self.model, self.ols]
        with warnings.catch_warnings():
            # the residual normality tests of the summary warn below 8 observations (a shared-σ model has 6-9)
            warnings.filterwarnings("ignore", message="omni_normtest")
            warnings.filterwarnings("ignore", message="kurtosistest")
            return [m.summary() for m in models]


def depth_trend(ds, *, variable="log2_sigma", time_channel=False, group="seed"):
    """Does σ grow with layer depth (paper Fig. 3a)?

    Why each piece: the Spearman correlation over all σ makes no shape assumption but treats σ of one layer as
    independent (optimistic: depth takes only as many values as there are layers); the Spearman over layer
    medians is the conservative version; the regression gives the size of the effect in octaves per layer.
    With ≥ 2 seeds the regression is ``statsmodels.formula.api.mixedlm`` with a random intercept per seed; since
    mixed models with fewer than ~5 groups are fragile, a fixed-effects OLS (``+ C(seed)``) is always fitted too,
    and used as the model if the mixed model fails.  With one seed the model is plain OLS.

    For σ(t) layers every time point of the grid enters as one value at its layer's depth.

    With ``variable="delta_log2_sigma"`` (:func:`dcnbio.stats.sigmas.paired_shift`) the response is each filter's
    change from its own initial σ: the slope is then the depth trend that training added, free of the random
    initial draw, which the trend of trained σ alone carries along.

    Parameters
    ----------
    ds : xarray.Dataset
        A sigma dataset; must have a ``depth`` coordinate (and ``seed`` for the mixed model).
    variable : str
        ``log2_sigma`` (default), ``delta_log2_sigma`` (octaves, modelled as they are) or ``sigma`` /
        ``sigma_input`` (then log2 of it is modelled).
    time_channel : bool
        Keep σ of the constant t-channel (default: excluded).
    group : str
        Coordinate of the random-effect groups.

    Returns
    -------
    DepthTrend
    """
    import statsmodels.formula.api as smf

    from .sigmas import filter_mask

    mask = filter_mask(ds, time_channel=time_channel)
    y = np.asarray(ds[variable].values[mask], dtype=float)
    response = "delta_log2_sigma" if variable == "delta_log2_sigma" else "log2_sigma"
    if variable not in ("log2_sigma", "delta_log2_sigma"):
        y = np.log2(_positive(y, variable))
    df = pd.DataFrame({response: y, "depth": ds["depth"].values[mask].astype(float),
                       "layer": ds["layer"].values[mask].astype(str)})
    df["seed"] = ds[group].values[mask].astype(str) if group in ds.coords else "0"
    if df["depth"].nunique() < 2:
        raise DataError("sigma at fewer than 2 depths: no depth trend to estimate")
    if len(df) < 3:
        raise DataError("fewer than 3 sigma values: no depth trend to estimate")
    rho = st.spearmanr(df["depth"], df[response])
    spearman = {"rho": float(rho.statistic), "pvalue": float(rho.pvalue), "n": len(df)}
    med = df.groupby(["seed", "layer"], sort=False).agg(y=(response, "median"), depth=("depth", "first"))
    if len(med) >= 3:
        r = st.spearmanr(med["depth"], med["y"])
        layer_spearman = {"rho": float(r.statistic), "pvalue": float(r.pvalue), "n": len(med)}
    else:
        layer_spearman = {"rho": np.nan, "pvalue": np.nan, "n": len(med)}
    notes = []
    n_seeds = df["seed"].nunique()
    if n_seeds >= 2:
        ols = smf.ols(f"{response} ~ depth + C(seed)", df).fit()
        if n_seeds < 5:
            notes.append(f"only {n_seeds} seeds: the mixed model's seed variance is poorly determined; "
                         "compare with the fixed-effects OLS")
        model, kind = ols, "ols"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mixed = smf.mixedlm(f"{response} ~ depth", df, groups=df["seed"]).fit()
            messages = sorted({str(w.message).splitlines()[0] for w in caught
                               if "Convergence" in w.category.__name__ or "boundary" in str(w.message)})
            notes += [f"mixedlm: {m}" for m in messages]
            if mixed.converged and np.isfinite(mixed.params["depth"]) and np.isfinite(mixed.bse["depth"]):
                model, kind = mixed, "mixedlm"
            else:
                notes.append("mixedlm did not converge: the OLS with seed fixed effects is the model")
        except (np.linalg.LinAlgError, ValueError) as exc:
            notes.append(f"mixedlm failed ({type(exc).__name__}: {exc}); the OLS with seed fixed effects is the model")
    else:
        ols = model = smf.ols(f"{response} ~ depth", df).fit()
        kind = "ols"
    ci = model.conf_int().loc["depth"]
    return DepthTrend(spearman=spearman, layer_spearman=layer_spearman, kind=kind, model=model, ols=ols,
                      slope=float(model.params["depth"]), slope_ci=(float(ci.iloc[0]), float(ci.iloc[1])),
                      notes=notes, response=response)
