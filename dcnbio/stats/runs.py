"""Pooling over training runs: one number per run, mean ± SD per model, and tests across runs.

The per-image statistics of an analysis (mean D over 1000 images, a paired Wilcoxon test over images) say how
precisely *one trained network* was measured; they say nothing about how much the result varies between training
runs, which is what a claim about a model class needs.  Here each run contributes one value (e.g. its block-1
D(T)/D(0) or its accuracy), runs are grouped by model (the label ``<model>-seed<S>`` of
:func:`dcnbio.script.load_models`), and models are summarised and compared with the run as the unit.

:func:`model_of`
    The model of a run label (``"dcn-ode-seed3"`` → ``"dcn-ode"``).
:func:`pool_runs`
    Per model: number of runs, mean, sample SD (``ddof = 1``; NaN for one run), min and max.
:func:`against_reference`
    Per model: is the mean over runs different from a reference value (one-sample t-test over runs)?
:func:`compare_models`
    Pairs of models: difference of the means over runs with Welch's t-test (unequal variances).

With three seeds a test across runs has little power (a one-sample t-test needs |t| > 4.30 for p < 0.05 at 2
degrees of freedom); reports therefore give the mean ± SD and the range beside every p, and a model with fewer
than two runs gets NaN, never a test.
"""
import re

import numpy as np
import pandas as pd
import scipy.stats as st

from ..errors import ConfigError

_SEED = re.compile(r"^(?P<model>.+)-seed[^-]+$")


def model_of(label):
    """The model part of a run label: ``"<model>-seed<S>"`` → ``"<model>"``; any other label is its own model."""
    match = _SEED.match(str(label))
    return match.group("model") if match else str(label)


def _series(values):
    if isinstance(values, dict):
        values = pd.Series(values, dtype=float)
    if not isinstance(values, pd.Series):
        raise ConfigError("run values must be a dict or pandas Series indexed by run label")
    if values.index.has_duplicates:
        raise ConfigError(f"run labels repeat: {sorted(set(values.index[values.index.duplicated()]))}")
    return values.astype(float)


def pool_runs(values):
    """Mean ± SD over runs per model.

    Parameters
    ----------
    values : dict or pandas.Series
        One value per run, keyed by run label (``<model>-seed<S>``).  NaN values are dropped (a run whose
        statistic is undefined), and counted out of ``n_runs``.

    Returns
    -------
    pandas.DataFrame
        Indexed by model (in order of first appearance): ``n_runs``, ``mean``, ``sd`` (sample SD, ``ddof = 1``;
        NaN with one run), ``min``, ``max``, ``runs`` (the labels pooled).
    """
    values = _series(values).dropna()
    rows = {}
    for label, value in values.items():
        rows.setdefault(model_of(label), []).append((label, value))
    out = []
    for model, pairs in rows.items():
        x = np.array([v for _, v in pairs])
        out.append({"model": model, "n_runs": len(x), "mean": float(x.mean()),
                    "sd": float(x.std(ddof=1)) if len(x) > 1 else np.nan, "min": float(x.min()),
                    "max": float(x.max()), "runs": ", ".join(label for label, _ in pairs)})
    return pd.DataFrame(out, columns=["model", "n_runs", "mean", "sd", "min", "max", "runs"]).set_index("model")


def against_reference(values, reference=0.0):
    """One-sample t-test over runs of each model's values against ``reference``.

    Returns a DataFrame indexed by model with ``n_runs``, ``mean``, ``sd``, ``t``, ``df`` and two-sided ``p``
    (NaN where a model has fewer than two runs, or zero spread).
    """
    values = _series(values).dropna()
    pooled = pool_runs(values)
    rows = []
    for model, row in pooled.iterrows():
        x = values[[model_of(label) == model for label in values.index]].to_numpy()
        t = p = np.nan
        if len(x) > 1 and np.std(x) > 0:
            res = st.ttest_1samp(x, reference)
            t, p = float(res.statistic), float(res.pvalue)
        rows.append({"model": model, "n_runs": len(x), "mean": row["mean"], "sd": row["sd"], "t": t,
                     "df": len(x) - 1, "p": p})
    return pd.DataFrame(rows, columns=["model", "n_runs", "mean", "sd", "t", "df", "p"]).set_index("model")


def compare_models(values, pairs=None):
    """Differences of model means over runs with Welch's t-test.

    Parameters
    ----------
    values : dict or pandas.Series
        One value per run, keyed by run label.
    pairs : sequence of (model_a, model_b), optional
        Default: every pair of models in order of first appearance.

    Returns
    -------
    pandas.DataFrame
        One row per pair (``"a − b"``): ``n_a``, ``n_b``, ``difference`` (mean a − mean b), ``t``, ``df``
        (Welch–Satterthwaite) and two-sided ``p``; NaN tests where either model has fewer than two runs.
    """
    values = _series(values).dropna()
    groups = {}
    for label, value in values.items():
        groups.setdefault(model_of(label), []).append(value)
    models = list(groups)
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
    rows = []
    for a, b in pairs:
        if a not in groups or b not in groups:
            raise ConfigError(f"compare_models: no runs of {a if a not in groups else b!r} "
                              f"(models with runs: {', '.join(models)})")
        x, y = np.array(groups[a]), np.array(groups[b])
        t = df = p = np.nan
        if len(x) > 1 and len(y) > 1 and (np.var(x) > 0 or np.var(y) > 0):
            # Welch by hand: scipy warns of precision loss when one model's runs are all equal, a valid case
            vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
            t = float((x.mean() - y.mean()) / np.sqrt(vx + vy))
            df = float((vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1)))
            p = float(2 * st.t.sf(abs(t), df))
        rows.append({"pair": f"{a} − {b}", "n_a": len(x), "n_b": len(y), "difference": float(x.mean() - y.mean()),
                     "t": t, "df": df, "p": p})
    return pd.DataFrame(rows, columns=["pair", "n_a", "n_b", "difference", "t", "df", "p"]).set_index("pair")
