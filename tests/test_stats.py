"""dcnbio.stats.distribution and .v1 on seeded synthetic samples with known parameters, and the V1 reference."""
import math

import numpy as np
import pytest
import scipy.stats as st
from scipy import special
import xarray as xr

from dcnbio.core import filters
from dcnbio.reports.sigma_report import seed_slopes
from dcnbio.stats import distribution as stats, sigmas, v1
from dcnbio.errors import ConfigError, DataError
from dcnbio.io import load_v1_reference

N = 4000


def lognormal(n=N, median=1.5, ln_sd=0.6, seed=0):
    return np.exp(np.random.default_rng(seed).normal(math.log(median), ln_sd, n))


def gamma(n=N, k=3.0, scale=0.5, seed=1):
    return np.random.default_rng(seed).gamma(k, scale, n)


# --- fit_lognormal ------------------------------------------------------------------------------------------

def test_fit_lognormal_is_the_normal_mle_of_logs():
    x = lognormal()
    fit = stats.fit_lognormal(x)
    logx = np.log(x)
    # closed form of the MLE (scipy solves it analytically with floc=0): exact up to rounding
    assert fit["geometric_mean"] == pytest.approx(np.exp(logx.mean()), rel=1e-12)
    assert fit["ln_sd"] == pytest.approx(logx.std(ddof=0), rel=1e-12)
    assert fit["log2_sd"] == pytest.approx(np.log2(x).std(ddof=0), rel=1e-12)
    assert fit["skew_log"] == pytest.approx(st.skew(logx), rel=1e-12)


def test_fit_lognormal_recovers_parameters():
    x = lognormal(median=1.5, ln_sd=0.6)
    fit = stats.fit_lognormal(x)
    # sampling error: SE(mean ln x) = 0.6/sqrt(4000) = 0.0095, SE(ln_sd) = 0.6/sqrt(8000) = 0.0067,
    # SE(skew) = sqrt(6/4000) = 0.039; tolerances are 4 SE
    assert math.log(fit["geometric_mean"]) == pytest.approx(math.log(1.5), abs=0.038)
    assert fit["ln_sd"] == pytest.approx(0.6, abs=0.027)
    assert fit["log2_sd"] == pytest.approx(0.6 / math.log(2), abs=0.027 / math.log(2))
    assert abs(fit["skew_log"]) < 0.16
    # the paper's "positive skew": a log-normal with s = 0.6 has skew (e^s²+2)sqrt(e^s²-1) = 2.0
    assert fit["skew_lognormal"] == pytest.approx((math.exp(0.36) + 2) * math.sqrt(math.exp(0.36) - 1), rel=0.05)
    assert fit["skew"] > 1


def test_fit_lognormal_rejects_bad_input():
    with pytest.raises(DataError):
        stats.fit_lognormal([1.0, -2.0, 3.0])
    with pytest.raises(DataError):
        stats.fit_lognormal([1.0, np.nan, 3.0])
    with pytest.raises(DataError):
        stats.fit_lognormal([1.0, 2.0])


# --- compare_families -----------------------------------------------------------------------------------------

def test_aic_picks_lognormal_for_lognormal_data():
    df = stats.compare_families(lognormal(n=2000))
    assert df.index[0] == "lognormal"
    assert df["akaike_weight"].sum() == pytest.approx(1.0, abs=1e-12)
    assert df["delta_aic"].iloc[0] == 0 and np.all(np.diff(df["aic"]) >= 0)
    assert set(df.index) == set(stats.FAMILIES) and set(df["k"]) == {2}


def test_aic_picks_gamma_for_gamma_data_and_recovers_its_parameters():
    df = stats.compare_families(gamma(n=2000, k=3.0, scale=0.5))
    assert df.index[0] == "gamma"
    k, loc, scale = (float(v) for v in df.loc["gamma", "params"].split(","))
    # MLE of the gamma shape: var(k) ≈ k / (n (k ψ'(k) - 1)) = 3 / (2000 · 0.1847) → SE 0.09; tolerance 4 SE.
    # The scale estimate is tied to k through mean = k·scale (SE of the mean 0.0194): scale within 4 SE too.
    se_k = math.sqrt(3.0 / (2000 * (3.0 * float(special.polygamma(1, 3.0)) - 1)))
    assert k == pytest.approx(3.0, abs=4 * se_k)
    assert k * scale == pytest.approx(1.5, abs=4 * math.sqrt(3.0) * 0.5 / math.sqrt(2000))
    assert loc == 0


def test_compare_families_unknown_family():
    with pytest.raises(ConfigError):
        stats.compare_families(lognormal(n=50), families=["cauchy"])


# --- goodness_of_fit --------------------------------------------------------------------------------------------

def test_gof_does_not_reject_lognormal_data():
    df = stats.goodness_of_fit(lognormal(n=500, seed=3), n_mc_samples=199, seed=0)
    assert list(df.index) == ["lilliefors", "anderson_darling", "anderson_darling_mc"]
    # seeded case; under the null each p-value is uniform, so this fails for ~5% of seeds, not for this one
    assert (df["pvalue"] > 0.05).all()


def test_gof_rejects_clearly_non_lognormal_data():
    # exponential σ: ln x has a Gumbel-like, left-skewed density, far from normal at n = 500
    x = np.random.default_rng(4).exponential(1.0, 500)
    df = stats.goodness_of_fit(x, n_mc_samples=199, seed=0)
    assert (df["pvalue"] < 0.01).all()


def test_lilliefors_is_ks_with_the_right_null():
    # same statistic as a plain KS against the fitted normal, but a smaller (correct) p-value: plain KS with
    # fitted parameters is too lenient, which is why goodness_of_fit does not offer it
    x = gamma(n=300, k=4.0, seed=5)
    logx = np.log(x)
    lil = stats.goodness_of_fit(x).loc["lilliefors"]
    ks = st.kstest(logx, "norm", args=(logx.mean(), logx.std(ddof=1)))
    assert lil["statistic"] == pytest.approx(ks.statistic, rel=1e-12)
    assert lil["pvalue"] < ks.pvalue


# --- bootstrap_summary --------------------------------------------------------------------------------------------

def test_bootstrap_iid_ci_covers_truth_and_matches_estimates():
    x = lognormal(n=2000, median=2.0, ln_sd=0.5, seed=6)
    df = stats.bootstrap_summary(x, n_resamples=1000, seed=0).set_index("statistic")
    fit = stats.fit_lognormal(x)
    assert df.loc["geometric_mean", "estimate"] == pytest.approx(fit["geometric_mean"], rel=1e-12)
    assert df.loc["log2_sd", "estimate"] == pytest.approx(fit["log2_sd"], rel=1e-12)
    # seeded case: the 95% intervals contain the true values (median 2, log2-SD 0.5/ln2, skew 0)
    assert df.loc["geometric_mean", "ci_low"] < 2.0 < df.loc["geometric_mean", "ci_high"]
    assert df.loc["log2_sd", "ci_low"] < 0.5 / math.log(2) < df.loc["log2_sd", "ci_high"]
    assert df.loc["skew_log", "ci_low"] < 0 < df.loc["skew_log", "ci_high"]
    assert (df["resampled"] == "filters").all()


def two_seed_sample(seed=7):
    rng = np.random.default_rng(seed)
    a = np.exp(rng.normal(0.0, 0.1, 200))           # seed "a": σ around 1
    b = np.exp(rng.normal(math.log(4.0), 0.1, 200))  # seed "b": σ around 4
    return np.concatenate([a, b]), np.repeat(["a", "b"], 200), a, b


def test_cluster_bootstrap_resamples_whole_seeds():
    x, seeds, a, b = two_seed_sample()
    df = stats.bootstrap_summary(x, clusters=seeds, n_resamples=2000, seed=0, two_stage=False)
    gm = df.set_index("statistic").loc["geometric_mean"]
    assert gm["resampled"] == "seeds" and gm["n_clusters"] == 2
    # resampling whole seeds: each replicate is a, b or a+b, so the 2.5% / 97.5% quantiles fall on the atoms
    # "both draws a" and "both draws b" (probability 1/4 each): exactly the per-seed geometric means
    assert gm["ci_low"] == pytest.approx(np.exp(np.log(a).mean()), rel=1e-12)
    assert gm["ci_high"] == pytest.approx(np.exp(np.log(b).mean()), rel=1e-12)
    # the same values resampled as independent filters give a narrow interval around the pooled estimate
    iid = stats.bootstrap_summary(x, n_resamples=2000, seed=0).set_index("statistic").loc["geometric_mean"]
    assert iid["ci_high"] - iid["ci_low"] < 0.1 * (gm["ci_high"] - gm["ci_low"])


def test_two_stage_bootstrap_is_the_default_below_five_seeds():
    x, seeds, a, b = two_seed_sample()
    gm = stats.bootstrap_summary(x, clusters=seeds, n_resamples=500, seed=0).set_index("statistic")
    assert (gm["resampled"] == "seeds+filters").all()
    # within-seed resampling moves the atoms off the exact per-seed means but keeps the seed-level spread
    g = gm.loc["geometric_mean"]
    assert g["ci_low"] < 1.2 and g["ci_high"] > 3.3


def sigma_dataset():
    """A sigma-like dataset: 3 blocks × 2 seeds, with one t-channel entry per block and seed."""
    rng = np.random.default_rng(8)
    rows = []
    for seed in ("1", "2"):
        for depth, block in enumerate(("block1", "block2", "block3")):
            for i in range(60):
                rows.append((block, depth, seed, i == 0, float(np.exp(rng.normal(0.3 * depth, 0.4)))))
    block, depth, seed, is_t, sigma = map(np.array, zip(*rows))
    return xr.Dataset({"sigma": ("filter", sigma), "log2_sigma": ("filter", np.log2(sigma))},
                      coords={"block": ("filter", block), "depth": ("filter", depth), "seed": ("filter", seed),
                              "is_time_channel": ("filter", is_t), "layer": ("filter", block)})


def test_bootstrap_from_dataset_groups_and_excludes_time_channel():
    ds = sigma_dataset()
    df = stats.bootstrap_summary(ds, groups="block", n_resamples=200, seed=0)
    assert list(dict.fromkeys(df["group"])) == ["pooled", "block1", "block2", "block3"]
    n = df.groupby("group")["n"].first()
    assert n["pooled"] == 2 * 3 * 59 and n["block1"] == 2 * 59  # t-channel entries dropped
    assert (df["n_clusters"] == 2).all() and (df["resampled"] == "seeds+filters").all()
    x = ds["sigma"].values[(ds["block"].values == "block2") & ~ds["is_time_channel"].values]
    est = df[(df["group"] == "block2") & (df["statistic"] == "log2_sd")]["estimate"].item()
    assert est == pytest.approx(np.log2(x).std(), rel=1e-12)


# --- compare_trained_init -----------------------------------------------------------------------------------------

def test_trained_init_detects_a_planted_shift():
    s = np.random.default_rng(9).normal(0.0, 2 / 3, 1500)  # init: s ~ N(0, 2/3), σ = 2^s (App. A.2)
    init = 2.0 ** s
    trained = 2.0 ** (1.5 * s + 0.25)  # every filter: widened spread, larger σ
    df = stats.compare_trained_init(trained, init, n_resamples=500, seed=0)
    # exact: log2-SD scales by 1.5, so the difference is 0.5 SD(s); mean shift is 0.25 + 0.5 mean(s)
    assert df.loc["delta_log2_sd", "estimate"] == pytest.approx(0.5 * s.std(), rel=1e-10)
    assert df.loc["mean_delta_log2", "estimate"] == pytest.approx(0.25 + 0.5 * s.mean(), rel=1e-10)
    assert df.loc["delta_log2_sd", "ci_low"] > 0.25
    assert df.loc["geometric_mean_ratio", "ci_low"] > 1.1
    assert df.loc["ks_2samp", "pvalue"] < 1e-6 and df.loc["anderson_ksamp", "pvalue"] <= 0.001
    assert df.loc["spearman_init_trained", "estimate"] == pytest.approx(1.0)
    assert df.attrs["resampled"] == "pairs"


def test_trained_init_null_is_not_detected():
    # 40 seeded replicates of "training changed nothing" (independent draws of the init distribution): each
    # test / interval should flag about 5% of them.  Binomial(40, 0.05): P(X >= 7) = 0.004, so "at most 6"
    # fails only for a miscalibrated procedure, while a single replicate would fail by chance 1 time in 20.
    flagged = dict.fromkeys(["ks", "ad", "sd", "gm", "skew"], 0)
    for i in range(40):
        rng = np.random.default_rng(100 + i)
        init, trained = 2.0 ** rng.normal(0, 2 / 3, 400), 2.0 ** rng.normal(0, 2 / 3, 300)
        df = stats.compare_trained_init(trained, init, n_resamples=200, seed=i)
        flagged["ks"] += df.loc["ks_2samp", "pvalue"] < 0.05
        flagged["ad"] += df.loc["anderson_ksamp", "pvalue"] < 0.05
        flagged["sd"] += not df.loc["delta_log2_sd", "ci_low"] < 0 < df.loc["delta_log2_sd", "ci_high"]
        flagged["gm"] += not df.loc["geometric_mean_ratio", "ci_low"] < 1 < df.loc["geometric_mean_ratio", "ci_high"]
        flagged["skew"] += not df.loc["delta_skew_log", "ci_low"] < 0 < df.loc["delta_skew_log", "ci_high"]
    assert df.attrs["resampled"] == "each sample" and "mean_delta_log2" not in df.index
    assert max(flagged.values()) <= 6, flagged


def test_trained_init_paired_needs_aligned_arrays():
    with pytest.raises(DataError):
        stats.compare_trained_init(np.ones(5) * 2, np.ones(6), paired=True)
    with pytest.raises(ConfigError):
        stats.compare_trained_init(np.arange(1, 6.0), np.arange(1, 7.0), clusters=np.zeros(5))


def test_trained_init_cluster_bootstrap():
    x, seeds, a, b = two_seed_sample()
    df = stats.compare_trained_init(x * 1.2, x, clusters=seeds, n_resamples=200, seed=0)
    assert df.attrs["resampled"] == "seeds+pairs"
    # every filter grew by exactly log2(1.2) octaves, so every resample agrees
    assert df.loc["mean_delta_log2", "ci_low"] == pytest.approx(math.log2(1.2), rel=1e-9)
    assert df.loc["mean_delta_log2", "ci_high"] == pytest.approx(math.log2(1.2), rel=1e-9)


# --- depth_trend --------------------------------------------------------------------------------------------------

def depth_dataset(slope, seeds=("0",), seed_offsets=(0.0,), n=200, noise=0.5, rng_seed=11):
    rng = np.random.default_rng(rng_seed)
    cols = {"log2_sigma": [], "depth": [], "seed": [], "layer": []}
    for s, off in zip(seeds, seed_offsets):
        for d in range(6):
            cols["log2_sigma"].append(slope * d + off + rng.normal(0, noise, n))
            cols["depth"].append(np.full(n, d))
            cols["seed"].append(np.full(n, s))
            cols["layer"].append(np.full(n, f"layer{d}"))
    c = {k: np.concatenate(v) for k, v in cols.items()}
    return xr.Dataset({"log2_sigma": ("filter", c["log2_sigma"]), "sigma": ("filter", 2.0 ** c["log2_sigma"])},
                      coords={k: ("filter", c[k]) for k in ("depth", "seed", "layer")})


def test_depth_trend_recovers_planted_slope_one_seed():
    res = stats.depth_trend(depth_dataset(0.3))
    # SE of the OLS slope: 0.5 / sqrt(200 · Σ(d - 2.5)²) = 0.5 / sqrt(3500) = 0.0085; tolerance 4 SE
    assert res.kind == "ols" and res.slope == pytest.approx(0.3, abs=0.034)
    assert res.slope_ci[0] < 0.3 < res.slope_ci[1]
    assert res.spearman["rho"] > 0.3 and res.spearman["pvalue"] < 1e-10
    assert res.layer_spearman["n"] == 6 and res.layer_spearman["rho"] == pytest.approx(1.0)
    assert "tabular" in res.summary_latex()
    assert list(res.table().index)[:2] == ["spearman_rho (all sigma)", "spearman_rho (layer medians)"]


def test_depth_trend_several_seeds_fits_mixed_and_fixed_effects():
    ds = depth_dataset(0.3, seeds=("1", "2", "3"), seed_offsets=(-0.5, 0.0, 0.7))
    res = stats.depth_trend(ds)
    assert res.kind in ("mixedlm", "ols")
    assert res.ols is not None and "C(seed)" in str(res.ols.model.formula)
    # 3 seeds × 1200 values: SE of the slope 0.5 / sqrt(3 · 3500) = 0.0049; tolerance 4 SE
    assert res.slope == pytest.approx(0.3, abs=0.02)
    assert float(res.ols.params["depth"]) == pytest.approx(0.3, abs=0.02)
    assert any("3 seeds" in note for note in res.notes)
    assert res.summary_latex().count("tabular") >= 2


def test_depth_trend_null_slope():
    res = stats.depth_trend(depth_dataset(0.0, rng_seed=12))
    assert res.slope_ci[0] < 0 < res.slope_ci[1]  # seeded null case


def test_depth_trend_needs_two_depths():
    ds = depth_dataset(0.3)
    with pytest.raises(DataError):
        stats.depth_trend(ds.isel(filter=np.flatnonzero(ds["depth"].values == 2)))


def paired_dataset(init_slope, learned_slopes, *, init_sd=0.8, change_sd=0.01, n=300, rng_seed=5, controls=None):
    """Stacked trained/init σ of seeds "1", "2", …: init log2 σ = init_slope · depth + N(0, init_sd²) per filter,
    trained = init + learned slope · depth + N(0, change_sd²); seeds not in ``controls`` have no init entries."""
    rng = np.random.default_rng(rng_seed)
    parts = []
    for k, slope in enumerate(learned_slopes, start=1):
        depth = np.repeat(np.arange(6), n)
        init = init_slope * depth + rng.normal(0, init_sd, depth.size)
        trained = init + slope * depth + rng.normal(0, change_sd, depth.size)
        states = [("trained", trained)] + ([("init", init)] if controls is None or str(k) in controls else [])
        for state, values in states:
            coords = {"state": state, "seed": str(k), "depth": depth, "layer": [f"layer{d}" for d in depth],
                      "out_channel": np.tile(np.arange(n), 6), "in_channel": np.zeros(depth.size, int),
                      "time": np.full(depth.size, np.nan), "block": [f"block{d // 2 + 1}" for d in depth]}
            parts.append(xr.Dataset({"log2_sigma": ("filter", values), "sigma": ("filter", 2.0 ** values)},
                                    coords={k_: ("filter", np.broadcast_to(np.asarray(v), depth.shape))
                                            for k_, v in coords.items()}))
    return xr.concat(parts, dim="filter")


def test_paired_shift_is_each_filters_change_from_its_own_init():
    ds = paired_dataset(0.3, [0.1, 0.2], controls=("1",))  # seed 2 has no init control
    shift = sigmas.paired_shift(ds)
    trained = sigmas.select(ds, state="trained", seed="1")
    init = sigmas.select(ds, state="init", seed="1")
    assert set(shift["seed"].values.astype(str)) == {"1"} and shift.sizes["filter"] == trained.sizes["filter"]
    np.testing.assert_array_equal(shift["delta_log2_sigma"].values,
                                  trained["log2_sigma"].values - init["log2_sigma"].values)
    assert list(shift["depth"].values) == list(trained["depth"].values)
    assert sigmas.paired_shift(ds, block="block2")["depth"].values.tolist() == [2] * 300 + [3] * 300
    assert sigmas.paired_shift(ds.isel(filter=np.flatnonzero(ds["state"].values == "trained"))) is None


def test_paired_shift_refuses_filters_out_of_order():
    ds = paired_dataset(0.0, [0.1])
    is_init = ds["state"].values == "init"
    channels = ds["out_channel"].values.copy()
    channels[np.flatnonzero(is_init)[:2]] = channels[np.flatnonzero(is_init)[:2]][::-1]
    with pytest.raises(DataError, match="out_channel"):
        sigmas.paired_shift(ds.assign_coords(out_channel=("filter", channels)))


def test_depth_trend_of_the_paired_change_removes_the_initial_draw():
    """A depth profile built into the init (0.3 oct/layer) and a noisy draw (SD 0.8 oct) hide a learned 0.1
    oct/layer in the trained σ alone; the paired change recovers it within a few of its (tiny) standard errors."""
    ds = paired_dataset(0.3, [0.1, 0.1, 0.1])
    trained = stats.depth_trend(sigmas.select(ds, state="trained"))
    learned = stats.depth_trend(sigmas.paired_shift(ds), variable="delta_log2_sigma")
    assert trained.slope == pytest.approx(0.4, abs=0.04)  # SE 0.8 / sqrt(3 · 300 · 17.5) = 0.0064
    assert learned.slope == pytest.approx(0.1, abs=0.002)  # SE 0.01 / sqrt(15750) = 0.00008
    assert learned.slope_ci[0] < 0.1 < learned.slope_ci[1]
    assert learned.response == "delta_log2_sigma" and "delta_log2_sigma ~ depth" in str(learned.ols.model.formula)
    assert "slope delta log2 sigma / layer (ols, seed fixed effects)" in learned.table().index
    # one seed: plain OLS, whose slope is the closed-form least-squares slope
    one = sigmas.paired_shift(ds, seed="2")
    fit = stats.depth_trend(one, variable="delta_log2_sigma")
    assert fit.kind == "ols"
    assert fit.slope == pytest.approx(np.polyfit(one["depth"].values, one["delta_log2_sigma"].values, 1)[0],
                                      rel=1e-9)


def test_seed_slopes_are_per_seed_least_squares_and_a_t_test_over_seeds():
    ds = paired_dataset(0.2, [0.08, 0.1, 0.13], change_sd=0.05)
    shift = sigmas.paired_shift(ds)
    table = seed_slopes(shift, "m")
    expected = [np.polyfit(part["depth"].values, part["delta_log2_sigma"].values, 1)[0]
                for part in (sigmas.select(shift, seed=s) for s in "123")]
    np.testing.assert_allclose(table.loc[["seed 1", "seed 2", "seed 3"], "estimate"], expected, rtol=1e-12)
    ref = st.ttest_1samp(expected, 0.0)
    row = table.loc["across seeds"]
    assert row["estimate"] == pytest.approx(np.mean(expected), rel=1e-12)
    assert row["sd"] == pytest.approx(np.std(expected, ddof=1), rel=1e-12)
    assert row["t"] == pytest.approx(ref.statistic, rel=1e-12) and row["pvalue"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert row["df"] == 2


# --- V1 reference ---------------------------------------------------------------------------------------------------

#: SPEC §3, De Valois, Albrecht & Thorell 1982: the numbers the shipped CSV must hold.
SPEC_EDGES = [0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0, 11.2, 16.0, 22.4]
SPEC_COUNTS = {
    "simple_foveal": [0, 4, 4, 8, 25, 33, 26, 28, 12, 5, 2, 1],
    "complex_foveal": [0, 0, 0, 9, 9, 7, 10, 23, 12, 8, 3, 3],
    "simple_parafoveal": [2, 4, 10, 12, 18, 7, 18, 3, 4, 0, 0, 0],
    "complex_parafoveal": [1, 2, 1, 2, 5, 15, 13, 9, 3, 2, 0, 0],
}


def test_v1_reference_holds_the_published_bins():
    ref = load_v1_reference()
    np.testing.assert_array_equal(np.append(ref["bin_low"].values, ref["bin_high"].values[-1]), SPEC_EDGES)
    for pop, counts in SPEC_COUNTS.items():
        np.testing.assert_array_equal(ref["count"].sel(population=pop).values, counts)
    assert int(ref["count"].sum()) == 363
    assert "Vision Research 22" in ref.attrs["citation"]


def test_v1_shape_statistics_reproduce_spec():
    df = v1.v1_shape_statistics(load_v1_reference())
    pooled = df.loc["pooled"]
    assert pooled["n"] == 363
    # SPEC quotes 2 significant digits (2.8 c/deg), 3 (1.04 octaves) and 1 (-0.06): tolerances half a last digit
    assert pooled["geometric_mean_cpd"] == pytest.approx(2.8, abs=0.05)
    assert pooled["log2_sd"] == pytest.approx(1.04, abs=0.005)
    assert pooled["skew_log"] == pytest.approx(-0.06, abs=0.005)
    assert list(df.index[:4]) == list(SPEC_COUNTS)
    assert df.loc["simple_foveal", "n"] == 148


def test_v1_reference_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_v1_reference(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("bin_low_cpd,bin_high_cpd,a\n1.0,0.5,3\n")
    with pytest.raises(DataError):
        load_v1_reference(bad)
    with pytest.raises(ConfigError):
        v1.v1_shape_statistics(load_v1_reference(), populations=["purkinje"])
    with pytest.raises(ConfigError, match="load_v1_reference"):
        v1.v1_shape_statistics(None)


def test_peak_frequency_closed_form_and_sampled_filter():
    # closed form: argmax over f of f^n exp(-2π²σ²f²) (|FT| of the n-th Gaussian derivative), on a fine grid
    f = np.linspace(1e-4, 1.0, 200001)
    for n, sigma in ((1, 0.8), (2, 1.3), (3, 2.0)):
        numeric = f[np.argmax(n * np.log(f) - 2 * math.pi ** 2 * sigma ** 2 * f ** 2)]
        assert float(v1.sigma_to_peak_frequency(sigma, n)) == pytest.approx(numeric, abs=1e-5)  # grid step 5e-6
    # the model's own sampled 2nd-derivative kernel at σ = 4 (well sampled): DFT peak within one frequency bin
    g = filters.gaussian_derivatives_1d(4.0, order=2, radius=40).double().numpy()[2]
    spectrum = np.abs(np.fft.rfft(g, 8192))
    peak = np.fft.rfftfreq(8192)[np.argmax(spectrum)]
    assert peak == pytest.approx(float(v1.sigma_to_peak_frequency(4.0, 2)), abs=1 / 8192)
    with pytest.raises(ConfigError):
        v1.sigma_to_peak_frequency(1.0, 0)


def test_compare_with_v1_mirrors_log_sigma_shape():
    ds = sigma_dataset().assign_coords(order=("filter", np.full(360, 2)))
    ds = ds.assign(sigma_input=ds["sigma"] * 2)
    df = v1.compare_with_v1(ds, n_resamples=100, seed=0, reference=load_v1_reference())
    row = df[(df["source"] == "model") & (df["group"] == "block3")].iloc[0]
    x = ds["sigma_input"].values[(ds["block"].values == "block3") & ~ds["is_time_channel"].values]
    # log f = const - log σ: same log-SD, opposite skewness
    assert row["log2_sd"] == pytest.approx(np.log2(x).std(), rel=1e-12)
    assert row["skew_log"] == pytest.approx(-st.skew(np.log(x)), rel=1e-9)
    assert (df["source"] == "V1 (De Valois 1982)").sum() == 5
    assert df[df["source"] == "model"]["log2_sd_ci_low"].notna().all()
