"""Pooling over training runs: one number per run, mean ± SD per model, and tests across runs.

The per-image statistics of an analysis (mean D over 1000 images, a paired Wilcoxon test over images) say how
precisely *one trained network* was measured; they say nothing about how much the result varies between training
runs, which is what a claim about a model class needs.  Here each run contributes one value (e.g. its block-1
D(T)/D(0) or its accuracy), keyed by its model and its own label — ``(model, run)``, the model taken from what
produced the run's result (:func:`run_model` of its ``attrs``), never parsed out of a label — and models are
summarised and compared with the run as the unit.

:func:`run_model`
    The model a result belongs to, from its provenance attrs (an ``init.pt`` control is a model of its own).
:func:`run_directory`
    The run a result came from: its checkpoint's folder (a run's ``init.pt`` and trained checkpoints share it).
:func:`run_series`
    One value per run as a Series indexed by ``(model, run)``: what the functions below take.
:func:`group_runs`
    The runs of each model.
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
import os

import numpy as np
import pandas as pd
import scipy.stats as st

from ..errors import ConfigError

#: The index levels of run values: the model of the run, and the run's label (unique within an analysis).
RUN_LEVELS = ("model", "run")
_KEYED = "run values are keyed by (model, run) pairs, e.g. {('dcn-ode', 'dcn-ode-seed1'): 0.5}"


def run_model(attrs):
    """The model a run's result belongs to, from its provenance attrs (:func:`dcnbio.provenance.provenance_attrs`).

    ``model_name``; a result computed from an ``init.pt`` (``checkpoint_kind == "init"``) is the control
    ``"<model> (init)"``, never pooled with the trained runs of its model.

    >>> run_model({"model_name": "dcn-ode", "checkpoint_kind": "last"}), run_model({"model_name": "dcn-ode",
    ...                                                                             "checkpoint_kind": "init"})
    ('dcn-ode', 'dcn-ode (init)')
    """
    if "model_name" not in attrs:
        raise ConfigError("a run's result has no model_name attribute: compute it with dcnbio (its provenance "
                          "names the model)")
    name = str(attrs["model_name"])
    return f"{name} (init)" if attrs.get("checkpoint_kind") == "init" else name


def run_directory(attrs):
    """The folder of the checkpoint a result was computed from: the run's identity on disk.

    A run's ``init.pt``, ``best.pt`` and ``last.pt`` lie in one folder, so a trained result and its untrained
    control share it, whatever the results are labelled.

    >>> run_directory({"checkpoint_path": "data/checkpoints/full/dcn-ode/seed1/init.pt"})
    'data/checkpoints/full/dcn-ode/seed1'
    """
    path = str(attrs.get("checkpoint_path", ""))
    if not path:
        raise ConfigError("a run's result has no checkpoint_path attribute: compute it from a checkpoint with dcnbio "
                          "(its provenance names the file)")
    return os.path.normpath(os.path.dirname(path))


def run_series(values):
    """One float per run, indexed by ``(model, run)`` (:data:`RUN_LEVELS`).

    Parameters
    ----------
    values : dict of (str, str) → float, or pandas.Series with a two-level index
        The value of each run keyed by its model and its label.

    >>> run_series({("a", "a-1"): 1, ("b", "b-1"): 2.5})
    model  run
    a      a-1    1.0
    b      b-1    2.5
    dtype: float64
    """
    if isinstance(values, dict):  # checked here: a 2-character string key would pass as a pair
        if not all(isinstance(k, tuple) and len(k) == 2 for k in values):
            raise ConfigError(_KEYED)
        values = pd.Series(list(values.values()), index=pd.MultiIndex.from_tuples(list(values), names=RUN_LEVELS),
                           dtype=float)
    if not isinstance(values, pd.Series):
        raise ConfigError("run values must be a dict or pandas Series keyed by (model, run)")
    if values.index.nlevels != 2:
        raise ConfigError(_KEYED)
    if values.index.has_duplicates:
        raise ConfigError(f"runs repeat: {sorted(set(values.index[values.index.duplicated()]))}")
    return values.astype(float).rename_axis(list(RUN_LEVELS))


def group_runs(values):
    """``{model: Series of its runs' values, indexed by run}`` in order of first appearance.

    >>> {m: list(v) for m, v in group_runs({("b", "b-1"): 2, ("a", "a-1"): 1, ("b", "b-2"): 4}).items()}
    {'b': [2.0, 4.0], 'a': [1.0]}
    """
    values = run_series(values)
    return {m: values.xs(m, level=0) for m in dict.fromkeys(values.index.get_level_values(0))}


def pool_runs(values):
    """Mean ± SD over runs per model.

    Parameters
    ----------
    values : dict or pandas.Series
        One value per run keyed by ``(model, run)`` (:func:`run_series`).  NaN values are dropped (a run whose
        statistic is undefined), and counted out of ``n_runs``.

    Returns
    -------
    pandas.DataFrame
        Indexed by model (in order of first appearance): ``n_runs``, ``mean``, ``sd`` (sample SD, ``ddof = 1``;
        NaN with one run), ``min``, ``max``, ``runs`` (the labels pooled).
    """
    out = []
    for model, runs in group_runs(run_series(values).dropna()).items():
        x = runs.to_numpy()
        out.append({"model": model, "n_runs": len(x), "mean": float(x.mean()),
                    "sd": float(x.std(ddof=1)) if len(x) > 1 else np.nan, "min": float(x.min()),
                    "max": float(x.max()), "runs": ", ".join(map(str, runs.index))})
    return pd.DataFrame(out, columns=["model", "n_runs", "mean", "sd", "min", "max", "runs"]).set_index("model")


def against_reference(values, reference=0.0):
    """One-sample t-test over runs of each model's values against ``reference``.

    Returns a DataFrame indexed by model with ``n_runs``, ``mean``, ``sd``, ``t``, ``df`` and two-sided ``p``
    (NaN where a model has fewer than two runs, or zero spread).
    """
    values = run_series(values).dropna()
    pooled = pool_runs(values)
    groups = group_runs(values)
    rows = []
    for model, row in pooled.iterrows():
        x = groups[model].to_numpy()
        t = p = np.nan
        if len(x) > 1 and np.std(x) > 0:
            res = st.ttest_1samp(x, reference)
            t, p = float(res.statistic), float(res.pvalue)
        rows.append({"model": model, "n_runs": len(x), "mean": row["mean"], "sd": row["sd"], "t": t,
                     "df": len(x) - 1, "p": p})
    return pd.DataFrame(rows, columns=["model", "n_runs", "mean", "sd", "t", "df", "p"]).set_index("model")


def compare_models(values, pairs=None, confidence=0.95):
    """Differences of model means over runs with Welch's t-test.

    Parameters
    ----------
    values : dict or pandas.Series
        One value per run keyed by ``(model, run)`` (:func:`run_series`).
    pairs : sequence of (model_a, model_b), optional
        Default: every pair of models in order of first appearance.

    Returns
    -------
    pandas.DataFrame
        One row per pair (``"a − b"``): ``n_a``, ``n_b``, ``difference`` (mean a − mean b), ``t``, ``df``
        (Welch–Satterthwaite), two-sided ``p`` and the difference's two-sided ``confidence`` interval ``ci_low``,
        ``ci_high`` (difference ± t(df) · SE); NaN tests where either model has fewer than two runs.
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"compare_models: confidence must lie in (0, 1), got {confidence!r}")
    groups = {m: runs.to_numpy() for m, runs in group_runs(run_series(values).dropna()).items()}
    models = list(groups)
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
    rows = []
    for a, b in pairs:
        if a not in groups or b not in groups:
            raise ConfigError(f"compare_models: no runs of {a if a not in groups else b!r} "
                              f"(models with runs: {', '.join(models)})")
        x, y = np.array(groups[a]), np.array(groups[b])
        difference = float(x.mean() - y.mean())
        t = df = p = low = high = np.nan
        if len(x) > 1 and len(y) > 1 and (np.var(x) > 0 or np.var(y) > 0):
            # Welch by hand: scipy warns of precision loss when one model's runs are all equal, a valid case
            vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
            se = float(np.sqrt(vx + vy))
            t = difference / se
            df = float((vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1)))
            p = float(2 * st.t.sf(abs(t), df))
            half = float(st.t.ppf(0.5 + confidence / 2, df)) * se
            low, high = difference - half, difference + half
        rows.append({"pair": f"{a} − {b}", "n_a": len(x), "n_b": len(y), "difference": difference,
                     "t": t, "df": df, "p": p, "ci_low": low, "ci_high": high})
    columns = ["pair", "n_a", "n_b", "difference", "t", "df", "p", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns).set_index("pair")
