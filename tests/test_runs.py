"""Pooling over training runs (dcnbio.stats.runs) against hand-computed cases and closed forms."""
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st

from dcnbio.stats.runs import against_reference, compare_models, pool_runs, run_directory, run_model, run_series
from dcnbio.errors import ConfigError


def runs(values):
    """``{label: v}`` with labels ``<model>:<k>`` → run values keyed by (model, label) (the test's own layout)."""
    return {(label.split(":")[0], label): v for label, v in values.items()}


def test_the_model_comes_from_the_provenance_and_an_init_control_is_its_own_model():
    assert run_model({"model_name": "dcn-sigma-ji", "checkpoint_kind": "best"}) == "dcn-sigma-ji"
    assert run_model({"model_name": "dcn-ode", "checkpoint_kind": "init"}) == "dcn-ode (init)"
    assert run_model({"model_name": "my-seed7-model"}) == "my-seed7-model"  # nothing is parsed out of a name
    with pytest.raises(ConfigError, match="model_name"):
        run_model({"checkpoint_kind": "last"})
    values = {("dcn-ode", "r1"): 1.0, ("dcn-ode", "r2"): 3.0, ("dcn-ode (init)", "r1-init"): 10.0}
    pooled = pool_runs(values)
    assert list(pooled.index) == ["dcn-ode", "dcn-ode (init)"] and pooled.loc["dcn-ode", "mean"] == 2.0


def test_a_run_is_its_checkpoint_folder_whatever_the_file():
    trained = run_directory({"checkpoint_path": "data/checkpoints/full/dcn-ode/seed1/best.pt"})
    assert trained == run_directory({"checkpoint_path": "data/checkpoints/full/dcn-ode/./seed1/init.pt"})
    assert trained != run_directory({"checkpoint_path": "data/checkpoints/full/dcn-ode/seed2/init.pt"})
    for attrs in ({}, {"checkpoint_path": ""}):
        with pytest.raises(ConfigError, match="checkpoint_path"):
            run_directory(attrs)


def test_pool_runs_hand_computed():
    values = runs({"a:1": 1.0, "a:2": 2.0, "a:3": 3.0, "b:1": 5.0, "b:2": np.nan})
    pooled = pool_runs(values)
    assert list(pooled.index) == ["a", "b"]
    assert pooled.loc["a", "n_runs"] == 3 and pooled.loc["a", "mean"] == 2.0 and pooled.loc["a", "sd"] == 1.0
    assert (pooled.loc["a", "min"], pooled.loc["a", "max"]) == (1.0, 3.0)
    assert pooled.loc["b", "n_runs"] == 1 and math.isnan(pooled.loc["b", "sd"])  # NaN run dropped, one left
    assert pooled.loc["b", "runs"] == "b:1"


def test_one_sample_test_matches_the_t_distribution_with_two_degrees_of_freedom():
    # x = 1, 2, 3 against 0: t = mean / (sd / sqrt n) = 2 sqrt 3; with 2 df, P(|T| > t) = 1 - t / sqrt(t^2 + 2).
    res = against_reference(run_series(runs({"a:1": 1.0, "a:2": 2.0, "a:3": 3.0, "b:1": 4.0})))
    t = 2 * math.sqrt(3)
    assert res.loc["a", "t"] == pytest.approx(t) and res.loc["a", "df"] == 2
    assert res.loc["a", "p"] == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert math.isnan(res.loc["b", "p"])  # one run: no test
    shifted = against_reference(runs({"a:1": 1.0, "a:2": 2.0, "a:3": 3.0}), reference=2.0)
    assert shifted.loc["a", "t"] == pytest.approx(0.0) and shifted.loc["a", "p"] == pytest.approx(1.0)


def test_welch_hand_computed():
    # a = 1, 2, 3 (var 1), b = 4, 6, 8 (var 4): se^2 = 1/3 + 4/3, t = -4 / sqrt(5/3),
    # df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17
    values = runs({"a:1": 1, "a:2": 2, "a:3": 3, "b:1": 4, "b:2": 6, "b:3": 8})
    res = compare_models(values)
    row = res.loc["a − b"]
    assert row["difference"] == -4.0
    assert row["t"] == pytest.approx(-4 / math.sqrt(5 / 3))
    assert row["df"] == pytest.approx(50 / 17)
    # two-sided p from the t distribution's CDF by numerical integration of its density (independent of scipy)
    nu, t = 50 / 17, abs(row["t"])
    grid = np.linspace(t, 400.0, 400001)
    const = math.gamma((nu + 1) / 2) / (math.sqrt(nu * math.pi) * math.gamma(nu / 2))
    density = const * (1 + grid ** 2 / nu) ** (-(nu + 1) / 2)
    tail = np.trapezoid(density, grid) if hasattr(np, "trapezoid") else np.trapz(density, grid)
    assert row["p"] == pytest.approx(2 * tail, rel=1e-3)
    # the 95 % interval of the difference: scipy's Welch interval (an independent implementation)
    welch = st.ttest_ind([1, 2, 3], [4, 6, 8], equal_var=False).confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((welch.low, welch.high), rel=1e-9)
    assert row["ci_low"] < row["difference"] < row["ci_high"] and row["ci_high"] > 0 > row["ci_low"]  # p > 0.05
    narrow = compare_models(values, confidence=0.5).loc["a − b"]
    assert row["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < row["ci_high"]
    assert list(compare_models(values, pairs=[("b", "a")]).index) == ["b − a"]
    single = compare_models(runs({"a:1": 1, "a:2": 2, "b:1": 4})).iloc[0]  # one run of b: no test, no interval
    assert single["difference"] == -2.5 and all(math.isnan(single[k]) for k in ("p", "ci_low", "ci_high"))
    # one model's runs all equal: Welch reduces to a one-sample test of the other, df = n_b - 1 = 2
    const = compare_models(runs({"a:1": 1, "a:2": 1, "a:3": 1, "b:1": 2, "b:2": 3, "b:3": 4}))
    t = (1 - 3) / math.sqrt(1 / 3)  # mean a - mean b over the SE of b alone
    assert const.iloc[0]["t"] == pytest.approx(t) and const.iloc[0]["df"] == pytest.approx(2.0)
    assert const.iloc[0]["p"] == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2))


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="dict or pandas Series"):
        pool_runs([1.0, 2.0])
    with pytest.raises(ConfigError, match="repeat"):
        pool_runs(pd.Series([1.0, 2.0], index=pd.MultiIndex.from_tuples([("a", "a:1"), ("a", "a:1")])))
    with pytest.raises(ConfigError, match=r"keyed by \(model, run\)"):  # a bare label is never parsed for a model
        pool_runs({"a-seed1": 1.0, "a-seed2": 2.0})
    with pytest.raises(ConfigError, match=r"keyed by \(model, run\)"):
        pool_runs(pd.Series({"a-seed1": 1.0}))
    with pytest.raises(ConfigError, match="no runs of 'c'"):
        compare_models(runs({"a:1": 1.0, "b:1": 2.0}), pairs=[("a", "c")])
    with pytest.raises(ConfigError, match=r"confidence must lie in \(0, 1\), got 95"):
        compare_models(runs({"a:1": 1.0, "b:1": 2.0}), confidence=95)
