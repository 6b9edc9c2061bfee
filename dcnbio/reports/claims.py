"""Every claim of the paper judged from the analyses' results (pandas and xarray in, claim rows and a report out).

``analyses/reproduce.py`` runs the analyses, loads their results and the bundled checkpoints (the script layer,
:mod:`dcnbio.reproduce_run`) and hands them to the ``*_claims`` functions here; each returns rows made by
:func:`claim` — the result as mean ± SD over training runs, the test across runs, a verdict and what it rests on —
and :func:`claims_report` lays them out.

Verdicts
--------
Each claim gets *holds*, *does not hold* or *undecided at this scale*, by rules fixed here before looking at any
number (two-sided tests at :data:`ALPHA`, the training run as the unit, :mod:`dcnbio.stats.runs`):

* a claim about σ is *undecided* while training has not moved σ: the median per-filter change of log2 σ from the
  run's own ``init.pt`` is below :data:`MOVED_OCTAVES` (the distribution is still its initialisation's,
  log-normal by construction);
* a direction (D falls, NFE falls, σ grows with depth, DCN-ODE reconstructs best) *holds* when every DCN's mean
  over runs has the claimed sign with p < ALPHA, *does not hold* when every DCN's has the opposite sign with
  p < ALPHA, and is *undecided* otherwise (mixed, or a test without power: fewer than two runs);
* "keeps accuracy" *holds* when, for every DCN, the 95 % t-interval over runs of the accuracy change lies above
  −:data:`ACCURACY_MARGIN_PP`, and *does not hold* when one lies entirely below it;
* the meta-parametrized DCNs "match DCN-ODE's accuracy and learn depth profiles" *holds* when, for each of them
  (two runs or more), the 95 % Welch interval over runs of (its test accuracy − DCN-ODE's) lies above
  −:data:`ACCURACY_MARGIN_PP` and every run's σ(t) moved from its ``init.pt`` (:data:`MOVED_OCTAVES`), and *does
  not hold* when one interval lies entirely below it;
* "the NFE saving survives the atol control" *does not hold* when every DCN keeps at least
  :data:`NFE_EQUIVALENCE` of its c = 1 NFE under ``atol·c`` (a saving of at most 5 %);
* the small-data advantage takes :func:`dcnbio.stats.small_data.assess_small_data_advantage` (supported /
  contradicted / not resolved → holds / does not hold / undecided); the solver audit, a control rather than a
  claim, takes :func:`dcnbio.extract.solver_audit.assess_solver_independence`.

The rows say what they rest on (how many runs, images, steps of training); ``REPRODUCTION.md`` discusses them.
"""
import numpy as np
import pandas as pd
import scipy.stats as st

from ..errors import DataError
from ..core.models import create_model
from ..stats import runs as runstats
from ..extract import solver_audit
from ..extract.meta import META_MODELS
from ..stats import distribution as stats, small_data, tuning_study
from .contrast_report import run_values as contrast_run_values
from .reconstruction_report import run_values as reconstruction_run_values
from .report import Report
from .sigma_report import paired_arrays
from ..extract.sigmas import extract_sigmas
from ..stats.sigmas import select
from ..stats.v1 import compare_with_v1

__all__ = ["ACCURACY_MARGIN_PP", "ALPHA", "DCNS", "FAILS", "HOLDS", "META_MODELS", "MOVED_OCTAVES", "NFE_EQUIVALENCE",
           "PARAMETER_MODELS", "UNDECIDED", "by_model", "claim", "claim_table", "claims_report", "completion_claims",
           "contrast_claims", "dcn_differences", "depth_claims", "describe", "direction_verdict", "meta_claims",
           "parameter_claims", "physiology_claims", "reconstruction_claims", "runs_text", "sigma_change",
           "sigma_ji_claims", "small_data_claims", "solver_claims", "t_interval"]

#: Significance level of every test across runs.
ALPHA = 0.05
#: σ has "moved" when the median |Δ log2 σ| from init reaches this (octaves).
MOVED_OCTAVES = 0.05
#: Largest accuracy loss (percentage points) that still counts as "keeps accuracy".
ACCURACY_MARGIN_PP = 2.0
#: NFE ratio (atol-control / c = 1) at or above which the saving counts as gone.
NFE_EQUIVALENCE = 0.95
#: The continuous networks whose claims are judged; the other models are baselines.
DCNS = ("dcn-ode", "dcn-sigma-ji")
#: The models of the parameter-count claim (Table 1): the DCN and its two baselines.
PARAMETER_MODELS = ("dcn-ode", "odenet", "resnet-blocks")
HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "undecided at this scale"


# --- statistics across runs ------------------------------------------------------------------------------------

def t_interval(values, confidence=0.95):
    """Mean and two-sided t-interval of the mean over runs.

    Parameters
    ----------
    values : array_like
        One value per run; non-finite values are dropped.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    mean, low, high : float
        ``low`` and ``high`` are NaN for fewer than two runs (no spread to estimate), ``mean`` NaN for none.

    >>> t_interval([1.0])
    (1.0, nan, nan)
    >>> mean, low, high = t_interval([1.0, 2.0, 3.0])  # mean ± t(0.975, 2) · SD / √3
    >>> round(mean, 3), round(high - mean, 3)
    (2.0, 2.484)
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (float(x.mean()) if x.size else np.nan), np.nan, np.nan
    half = st.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def by_model(values):
    """Run values (:func:`dcnbio.stats.runs.run_series`, keyed by ``(model, run)``) grouped by model:
    ``{model: ndarray}`` in order of first appearance."""
    return {m: runs.to_numpy() for m, runs in runstats.group_runs(values).items()}


def direction_verdict(tests, sign, models=DCNS):
    """Whether every DCN's mean over runs has the claimed sign.

    Parameters
    ----------
    tests : pandas.DataFrame
        :func:`dcnbio.stats.runs.against_reference` rows indexed by model (``mean``, ``p``).
    sign : {-1, +1}
        The claimed sign of the mean.
    models : sequence of str
        The models that must agree (those absent from ``tests`` are ignored).

    Returns
    -------
    str
        :data:`HOLDS` when all have ``sign`` with p < :data:`ALPHA`, :data:`FAILS` when all have the opposite sign
        with p < ALPHA, :data:`UNDECIDED` otherwise (mixed signs, no power, a single run or no such model).
    """
    rows = [tests.loc[m] for m in models if m in tests.index]
    if not rows:
        return UNDECIDED
    if all(np.isfinite(r["p"]) and r["p"] < ALPHA and np.sign(r["mean"]) == sign for r in rows):
        return HOLDS
    if all(np.isfinite(r["p"]) and r["p"] < ALPHA and np.sign(r["mean"]) == -sign for r in rows):
        return FAILS
    return UNDECIDED


def describe(tests, fmt="{:.3g}", transform=None):
    """``model mean ± SD (t, p, n runs)`` for each row of an :func:`~dcnbio.stats.runs.against_reference` table."""
    parts = []
    for model, r in tests.iterrows():
        mean, sd = (r["mean"], r["sd"]) if transform is None else transform(r)
        text = f"{model} {fmt.format(mean)}" + (f" ± {fmt.replace('+', '').format(sd)}" if np.isfinite(sd) else "")
        if np.isfinite(r["p"]):
            text += f" (t = {r['t']:.2f}, p = {r['p']:.2g}, {int(r['n_runs'])} runs)"
        else:
            text += f" ({int(r['n_runs'])} run{'s' if r['n_runs'] != 1 else ''}, no test)"
        parts.append(text)
    return "; ".join(parts)


def dcn_differences(values, model="dcn-ode"):
    """``[(other, model − other, p)]``: ``model`` against every other model with runs (Welch, over runs).

    ``values`` are one value per run keyed by ``(model, run)`` (:func:`dcnbio.stats.runs.run_series`); the pairs are
    built as ``(model, other)``, so each difference is ``model``'s mean minus the other's.  Empty when ``model``
    has no run.
    """
    values = runstats.run_series(values).dropna()
    models = runstats.group_runs(values)
    others = [m for m in models if m != model]
    if model not in models or not others:
        return []
    table = runstats.compare_models(values, pairs=[(model, other) for other in others])
    return [(other, float(r["difference"]), float(r["p"])) for other, (_, r) in zip(others, table.iterrows())]


def runs_text(n_runs):
    """How many runs a pooled table rests on, from its run counts.

    >>> runs_text([3, 3]), runs_text([2, 3])
    ('3 runs', '2–3 runs')
    """
    lo, hi = int(min(n_runs)), int(max(n_runs))
    return f"{lo} runs" if lo == hi else f"{lo}–{hi} runs"


def claim(name, paper, command, result, test, verdict, basis):
    """One row of the claims table (the columns of ``claims.csv``)."""
    return {"claim": name, "paper": paper, "command": command, "result": result, "test": test, "verdict": verdict,
            "rests on": basis}


def claim_table(rows):
    """The :func:`claim` rows as a table indexed by claim."""
    return pd.DataFrame(rows).set_index("claim")


# --- the claims ------------------------------------------------------------------------------------------------

def parameter_claims(finals):
    """Table 1: DCNs need fewer parameters (exact counts) at the baselines' accuracy (test across runs).

    Parameters
    ----------
    finals : dict of (str, str) → mapping
        The ``final.json`` of each finished run of :data:`PARAMETER_MODELS`, keyed by ``(model, run label)``:
        ``test_acc_best`` (fraction) and ``steps`` (SGD steps of training).

    Returns
    -------
    list of dict
        The count claim, and the accuracy claim when there is a run.  The accuracy claim can only be
        *undecided* or *does not hold* (a DCN significantly worse): equality is not shown by a t-test.
    """
    counts = {m: sum(p.numel() for p in create_model(m, in_channels=3, num_classes=10).parameters())
              for m in PARAMETER_MODELS}
    fewer = counts["dcn-ode"] < min(counts["odenet"], counts["resnet-blocks"])
    rows = [claim("DCNs need fewer parameters", "Table 1", "pytest tests/test_models.py -k parameter_counts",
                  ", ".join(f"{m} {c:,}" for m, c in counts.items()) + " (width 1, 3 input channels, 10 classes)",
                  "exact counts", HOLDS if fewer else FAILS, "the architecture (no training)")]
    if not finals:
        return rows
    acc = runstats.run_series({run: 100 * float(final["test_acc_best"]) for run, final in finals.items()})
    pooled = runstats.pool_runs(acc)
    diffs = dcn_differences(acc)
    verdict = FAILS if any(np.isfinite(p) and p < ALPHA and d < 0 for _, d, p in diffs) else UNDECIDED
    steps = sorted({int(final["steps"]) for final in finals.values()})
    plateaus = [final.get("plateau_epoch") for final in finals.values()]
    missing = sum(p is None or not np.isfinite(float(p)) for p in plateaus)
    if not missing:
        epochs = [int(final["epochs"]) for final in finals.values()]
        schedule = (f"trained past the validation plateau (plateau rule; {min(epochs)}–{max(epochs)} epochs, "
                    f"{steps[0]:,}–{steps[-1]:,} SGD steps)")
    else:
        schedule = (f"{'/'.join(map(str, steps))} SGD steps; no validation plateau recorded for {missing} of "
                    f"{len(plateaus)} runs (fixed schedules or the epoch cap)")
    rows.append(claim("… at the accuracy of the baselines", "Table 1",
                      "data/checkpoints/<model>/seed*/final.json",
                      "test accuracy (%) " + "; ".join(f"{m} {r['mean']:.1f} ± {r['sd']:.1f}" for m, r in
                                                       pooled.iterrows()),
                      "; ".join(f"dcn-ode − {o} {d:+.1f} pp (Welch p = {p:.2g})" for o, d, p in diffs),
                      verdict, f"{runs_text(pooled['n_runs'])} per model, {schedule}"))
    return rows


def sigma_change(trained, init):
    """Median |Δ log2 σ| between aligned trained and init σ datasets (octaves; time channel excluded)."""
    t = select(trained, time_channel=False)["log2_sigma"].values
    i = select(init, time_channel=False)["log2_sigma"].values
    return float(np.median(np.abs(t - i)))


def depth_claims(runs):
    """Fig. 3a: learned σ grow with depth — per run of DCN-ODE (one σ per layer), the OLS slope of log2 σ on depth.

    The trained slope is compared with the same run's slope at initialisation (trained − init = 0 across runs),
    so a depth profile built into the initialisation does not count as learned.

    Parameters
    ----------
    runs : dict of str → ((model, info), (model, info))
        Per run label ``dcn-ode-seed<S>``: the trained checkpoint and its ``init.pt``
        (:func:`dcnbio.train.checkpoint.load_checkpoint`'s pairs).

    Returns
    -------
    list of dict
        One row, none without a run.
    """
    slopes, inits, moved = {}, {}, []
    for label, pair in runs.items():
        ds = {kind: select(extract_sigmas(model, info=info), time_channel=False)
              for kind, (model, info) in zip(("trained", "init"), pair)}
        moved.append(sigma_change(ds["trained"], ds["init"]))
        run = (pair[0][0].config.name, label)  # the init slope is the same run's control, paired with it
        for kind, target in (("trained", slopes), ("init", inits)):
            d = ds[kind]
            target[run] = float(np.polyfit(d["depth"].values.astype(float), d["log2_sigma"].values, 1)[0])
    if not slopes:
        return []
    slopes, inits = runstats.run_series(slopes), runstats.run_series(inits)
    tests = runstats.against_reference(slopes, 0.0)
    diff = runstats.against_reference(slopes - inits, 0.0)
    if max(moved) < MOVED_OCTAVES:
        verdict = UNDECIDED + f" (σ did not move: median |Δ log2 σ| ≤ {max(moved):.3f} octaves in every run)"
    else:
        verdict = direction_verdict(diff, +1, models=("dcn-ode",))
    return [claim("learned σ grow with depth", "Fig. 3a",
                  "python analyses/reproduce.py (from the dcn-ode checkpoints and their init.pt)",
                  "slope of log2 σ per layer (octaves), trained: " + describe(tests) + "; at init: "
                  + describe(runstats.against_reference(inits, 0.0)),
                  "trained − init slope = 0 across runs: " + describe(diff),
                  verdict, f"{len(slopes)} dcn-ode runs, 6 SRF layers each")]


def sigma_ji_claims(ds, v1_reference):
    """Fig. 3b: the σ_ji of DCN σ_ji are log-normal, positively skewed and V1-like, and training made them so.

    Parameters
    ----------
    ds : xarray.Dataset
        ``sigma.nc`` of ``analyses/sigma_distribution.py`` (trained σ and, where a run has one, its init control).
    v1_reference : pandas.DataFrame
        The De Valois et al. (1982) peak frequencies (:func:`dcnbio.io.load_v1_reference`).

    Returns
    -------
    list of dict
        One row: *undecided* without an init control or while σ has not moved from it (:data:`MOVED_OCTAVES`).

    Raises
    ------
    DataError
        ``ds`` holds no trained σ.
    """
    trained = select(ds, state="trained", time_channel=False)
    if trained.sizes["filter"] == 0:
        raise DataError("sigma.nc holds no trained σ")
    fit = stats.fit_lognormal(trained["sigma"].values)
    gof = stats.goodness_of_fit(trained["sigma"].values)
    arrays = paired_arrays(ds)
    model = str(ds.attrs.get("model_name", "the σ model"))
    seeds = np.unique(trained["seed"].values.astype(str))
    result = (f"{int(fit['n'])} σ of {len(seeds)} run(s): log2-SD {fit['log2_sd']:.3f} octaves, skew of σ "
              f"{fit['skew']:.2f} (a log-normal of that SD: {fit['skew_lognormal']:.2f}), skew of log σ "
              f"{fit['skew_log']:.3f}")
    test = "; ".join(f"{name}: p = {row['pvalue']:.2g}" for name, row in gof.iterrows() if "pvalue" in row)
    v1 = compare_with_v1(trained, groups=None, n_resamples=200, reference=v1_reference)
    v1_row = v1[(v1["source"] != "model") & (v1["group"] == "pooled")]
    model_row = v1[(v1["source"] == "model") & (v1["group"] == "pooled")]
    if len(v1_row) and len(model_row):
        m, v = model_row.iloc[0], v1_row.iloc[0]
        result += (f"; peak frequency: log2-SD {m['log2_sd']:.2f} [{m['log2_sd_ci_low']:.2f}, "
                   f"{m['log2_sd_ci_high']:.2f}] octaves, skew of log {m['skew_log']:+.2f} "
                   f"[{m['skew_log_ci_low']:+.2f}, {m['skew_log_ci_high']:+.2f}] vs macaque V1 {v['log2_sd']:.2f} "
                   f"octaves, {v['skew_log']:+.2f} "
                   f"(De Valois et al. 1982, n = {int(v['n'])})")
    if arrays is None:
        return [claim("σ_ji log-normal, positively skewed, like V1", "Fig. 3b", "python analyses/sigma_distribution.py",
                      result, test, UNDECIDED + " (no init control)", f"{len(seeds)} run(s) of {model}")]
    t, i, cl = arrays
    cmp = stats.compare_trained_init(t, i, paired=True, clusters=cl, n_resamples=500, seed=0)
    moved = float(cmp.loc["median_abs_delta_log2", "estimate"])
    d_sd = cmp.loc["delta_log2_sd"]
    test += (f"; trained − init log2-SD {d_sd['estimate']:+.4f} octaves [{d_sd['ci_low']:+.4f}, "
             f"{d_sd['ci_high']:+.4f}] (bootstrap over runs); median |Δ log2 σ| {moved:.4f} octaves")
    if moved < MOVED_OCTAVES:
        verdict = UNDECIDED + " (σ did not move: the distribution is the initial, log-normal-by-construction one)"
    else:
        lognormal = all(row["pvalue"] >= ALPHA for _, row in gof.iterrows() if "pvalue" in row)
        changed = d_sd["ci_low"] > 0 or d_sd["ci_high"] < 0
        verdict = HOLDS if (lognormal and fit["skew"] > 0 and changed) else (
            FAILS if not lognormal or fit["skew"] <= 0 else UNDECIDED + " (no change of shape from init)")
    return [claim("σ_ji log-normal, positively skewed, like V1", "Fig. 3b", "python analyses/sigma_distribution.py",
                  result, test, verdict, f"{len(seeds)} run(s) of {model}")]


def completion_claims(data):
    """Fig. 3c, 4a: D(t) decreases within block 1 — ln D(T)/D(0) < 0 across runs, one row per normaliser.

    Parameters
    ----------
    data : dict of str → xarray.Dataset
        ``completion.nc`` of ``analyses/pattern_completion.py`` by run label; judged at the 6×6 centre mask (or
        the middle mask size > 0 when there is none).

    Raises
    ------
    DataError
        No mask size > 0.
    """
    first = next(iter(data.values()))
    masks = [int(m) for m in first["mask"].values if int(m) > 0]
    mask = 6 if 6 in masks else (masks[len(masks) // 2] if masks else None)
    if mask is None:
        raise DataError("completion.nc has no mask size > 0")
    rows = []
    n_images = int(first.sizes.get("image", 0))
    for norm in first["normalizer"].values:
        ratios = {}
        for label, ds in data.items():
            d = ds["D_mean"].sel(mask=mask, block="block1", normalizer=norm)
            ratios[(runstats.run_model(ds.attrs), label)] = float(d[-1] / d[0]) if float(d[0]) else np.nan
        ratios = runstats.run_series(ratios)
        tests = runstats.against_reference(np.log(ratios), 0.0)
        pooled = runstats.pool_runs(ratios)
        result = "block-1 D(T)/D(0): " + "; ".join(f"{m} {r['mean']:.3g} ± {r['sd']:.2g}" if r["n_runs"] > 1 else
                                                  f"{m} {r['mean']:.3g}" for m, r in pooled.iterrows())
        rows.append(claim(f"D(t) decreases within block 1, normaliser {norm}", "Fig. 3c, 4a",
                          f"python analyses/pattern_completion.py --n-images {n_images}",
                          result, "ln D(T)/D(0) = 0 across runs: " + describe(tests),
                          direction_verdict(tests, -1), f"{mask}×{mask} centre mask, {n_images} test images"))
    return rows


def contrast_claims(data):
    """Fig. 4b: scaling T by the contrast c keeps accuracy, cuts NFE, and the saving survives ``atol·c``.

    Parameters
    ----------
    data : dict of str → xarray.Dataset
        ``contrast.nc`` of ``analyses/contrast.py`` by run label; judged at its smallest contrast against c = 1.

    Raises
    ------
    DataError
        No run has a c = 1 baseline.
    """
    values = contrast_run_values(data)
    if not values:
        raise DataError("contrast.nc has no c = 1 baseline: rerun analyses/contrast.py with the default contrasts")
    first = next(iter(data.values()))
    n_images = f"{int(first.sizes['image'])} test images in batches of {int(first.attrs.get('batch_size', 0))}"
    c_min = min(key[2] for key in values)
    command = f"python analyses/contrast.py --n-images {int(first.sizes['image'])}"
    rows = []
    acc = values.get(("accuracy change (pp)", "all-blocks", c_min))
    if acc is not None:
        groups = by_model(acc)
        intervals = {m: t_interval(v) for m, v in groups.items()}
        dcns = [m for m in DCNS if m in intervals]
        if dcns and all(np.isfinite(intervals[m][1]) and intervals[m][1] >= -ACCURACY_MARGIN_PP for m in dcns):
            verdict = HOLDS
        elif any(np.isfinite(intervals[m][2]) and intervals[m][2] < -ACCURACY_MARGIN_PP for m in dcns):
            verdict = FAILS
        else:
            verdict = UNDECIDED
        naive = values.get(("accuracy change (pp)", "naive", c_min))
        result = (f"accuracy change at c = {c_min:g}, T·c in all blocks (pp): "
                  + "; ".join(f"{m} {mean:+.1f} [{lo:+.1f}, {hi:+.1f}]" for m, (mean, lo, hi) in intervals.items()))
        if naive is not None:
            result += "; contrast alone (naive): " + "; ".join(
                f"{m} {v.mean():+.1f}" for m, v in by_model(naive).items())
        rows.append(claim("contrast scaling of T keeps accuracy", "Fig. 4b", command,
                          result, f"95 % t-interval over runs above −{ACCURACY_MARGIN_PP:g} pp", verdict,
                          f"{n_images} per run"))
    for cond, name in (("all-blocks", "… and cuts NFE"), ("atol-control", "… and the NFE saving survives atol·c")):
        ratio = values.get(("NFE ratio", cond, c_min))
        if ratio is None:
            continue
        tests = runstats.against_reference(np.log(ratio), 0.0)
        verdict = direction_verdict(tests, -1)
        if cond == "atol-control":
            groups = by_model(ratio)
            dcns = [m for m in DCNS if m in groups]
            if dcns and all(groups[m].mean() >= NFE_EQUIVALENCE for m in dcns):
                verdict = FAILS
        rows.append(claim(name, "Fig. 4b", command,
                          f"total forward NFE at c = {c_min:g} / at c = 1 ({cond}): " + "; ".join(
                              f"{m} {v.mean():.2f} ± {v.std(ddof=1) if v.size > 1 else np.nan:.2f}"
                              for m, v in by_model(ratio).items()),
                          "ln NFE ratio = 0 across runs: " + describe(tests), verdict,
                          f"{n_images} per run"))
    return rows


def small_data_claims(ds):
    """Table 2a: the small-data advantage, judged by :func:`dcnbio.stats.small_data.assess_small_data_advantage`.

    ``ds`` is ``small_data.nc`` of ``analyses/small_data.py``.
    """
    summary = small_data.summarize_accuracy(ds)
    fit = small_data.fit_small_data(ds)
    verdict = small_data.assess_small_data_advantage(fit)
    mapping = {"supported": HOLDS, "contradicted": FAILS, "not resolved": UNDECIDED}
    sizes = [int(v) for v in ds["size"].values]
    cells = small_data.format_summary(summary)
    result = "test accuracy (%), mean ± SD (runs), at " + "/".join(map(str, sizes)) + " images per class: " + "; ".join(
        f"{m} " + " / ".join(cells[m].astype(str)) for m in cells.columns)
    return [claim("small-data advantage", "Table 2a", "python analyses/small_data.py", result,
                  verdict["text"].split("\n")[0][:400], mapping.get(verdict["verdict"], UNDECIDED),
                  f"{int(summary['n_seeds'].min())} seeds per cell, grid {sizes}")]


def reconstruction_claims(data):
    """Table 2b: DCN-ODE reconstructs best — its mean per-image MSE over runs below every other model's (Welch).

    ``data`` is ``reconstruction.nc`` of ``analyses/reconstruction.py`` by run label.
    """
    mse = reconstruction_run_values(data)
    pooled = runstats.pool_runs(mse)
    comparisons = runstats.compare_models(mse)
    rel = dcn_differences(mse)
    verdict = UNDECIDED
    if rel and all(np.isfinite(p) and p < ALPHA and d < 0 for _, d, p in rel):
        verdict = HOLDS
    elif any(np.isfinite(p) and p < ALPHA and d > 0 for _, d, p in rel):
        verdict = FAILS
    n_images = int(next(iter(data.values())).sizes.get("image", 0))
    return [claim("DCN-ODE reconstructs best", "Table 2b", "python analyses/reconstruction.py",
                  "mean per-image MSE per run: " + "; ".join(f"{m} {r['mean']:.3f} ± {r['sd']:.3f}"
                                                           for m, r in pooled.sort_values("mean").iterrows()),
                  "; ".join(f"{pair} {r['difference']:+.3f} (Welch p = {r['p']:.2g})"
                            for pair, r in comparisons.iterrows()),
                  verdict, f"{n_images} validation images, one decoder per run")]


def meta_claims(data, finals=None):
    """Tables 3–4: meta-parametrized σ(t), α(t) learn depth profiles and match DCN-ODE's accuracy.

    Parameters
    ----------
    data : dict of str → xarray.Dataset
        ``meta.nc`` of ``analyses/meta_parametrization.py``: each run and its initialisation (an ``init.pt``
        result, paired with the trained one by their run's folder, :func:`dcnbio.stats.runs.run_directory`).
    finals : dict of (str, str) → mapping, optional
        The ``final.json`` of the finished runs of the meta-parametrized models and of ``dcn-ode``, keyed by
        ``(model, run label)``: ``test_acc_best`` (fraction, the whole test set; a run trained without a test has
        none and is left out of the test) for the test across runs.

    Returns
    -------
    list of dict
        One row.  *Does not hold* when a meta-parametrized model's 95 % Welch interval of (its test accuracy −
        DCN-ODE's) lies entirely below −:data:`ACCURACY_MARGIN_PP`; otherwise *undecided* without an init control,
        while the σ(t) curves are still their initialisation's (:data:`MOVED_OCTAVES`) or while a model has fewer
        than two runs (no test); *holds* when every interval lies above −:data:`ACCURACY_MARGIN_PP` and every
        run's σ(t) moved.
    """
    inits = {runstats.run_directory(ds.attrs): ds for ds in data.values()
             if ds.attrs.get("checkpoint_kind") == "init"}
    rows, moved = [], []
    for label, ds in data.items():
        if ds.attrs.get("checkpoint_kind") == "init":
            continue
        change = (ds["log2_sigma"].isel(time=-1) - ds["log2_sigma"].isel(time=0)).values
        text = (f"{label}: accuracy {100 * float(ds.attrs.get('accuracy', np.nan)):.1f} %, log2 σ(T)/σ(0) per layer "
                + ", ".join(f"{v:+.2f}" for v in change) + " octaves")
        init = inits.get(runstats.run_directory(ds.attrs))
        if init is not None:
            full = np.abs(ds["log2_sigma"].values - init["log2_sigma"].values)
            moved.append(float(np.median(full)))
            text += f" (median |Δ log2 σ(t)| from init {moved[-1]:.3f} octaves)"
        rows.append(text)
    trained = [str(ds.attrs.get("model_name", "?")) for ds in data.values()
               if ds.attrs.get("checkpoint_kind") != "init"]
    models = sorted(set(trained))
    n_curves = {m: trained.count(m) for m in models}
    acc = runstats.run_series({run: 100 * float(final.get("test_acc_best", np.nan))  # trained with --no-test: NaN
                               for run, final in (finals or {}).items()})
    pooled = runstats.pool_runs(acc)  # NaN runs left out
    n_runs = {m: int(pooled["n_runs"].get(m, 0)) for m in models + ["dcn-ode"]}
    few = [m for m in models + ["dcn-ode"] if n_runs[m] < 2]
    tests, compared = [], [m for m in models if n_runs[m] and n_runs["dcn-ode"]]
    if compared:
        table = runstats.compare_models(acc, pairs=[(m, "dcn-ode") for m in compared])
        tests = [(m, r) for m, (_, r) in zip(compared, table.iterrows())]
    if any(np.isfinite(r["ci_high"]) and r["ci_high"] < -ACCURACY_MARGIN_PP for _, r in tests):
        verdict = FAILS
    elif not moved:
        verdict = UNDECIDED + " (no init.pt beside the runs: whether σ(t) moved is unknown)"
    elif max(moved) < MOVED_OCTAVES:
        verdict = UNDECIDED + " (the σ(t) curves are still the initialisation's)"
    elif few:
        verdict = UNDECIDED + f" (fewer than two runs of {', '.join(few)}: no test across runs)"
    elif min(moved) >= MOVED_OCTAVES and all(r["ci_low"] >= -ACCURACY_MARGIN_PP for _, r in tests):
        verdict = HOLDS
    else:
        verdict = UNDECIDED
    if len(pooled):
        rows.append("test accuracy (%) over runs: " + "; ".join(
            f"{m} {r['mean']:.1f} ± {r['sd']:.1f}" for m, r in pooled.iterrows()))
    test = "; ".join(f"{m} − dcn-ode {r['difference']:+.1f} pp, " + (
        f"95 % [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}] (Welch p = {r['p']:.2g})" if np.isfinite(r["p"])
        else "no test (fewer than two runs, or no spread)") for m, r in tests) or "none: no test accuracy across runs"
    return [claim("meta-parametrized σ(t), α(t) match DCN-ODE's accuracy and learn depth profiles", "Tables 3–4",
                  "python analyses/meta_parametrization.py", "; ".join(rows), test, verdict,
                  "σ(t) of " + ", ".join(f"{runs_text([n_curves[m]])} of {m}" for m in models) + "; test accuracy of "
                  + ", ".join(f"{runs_text([n_runs[m]])} of {m}" for m in models + ["dcn-ode"]))]


def solver_claims(data):
    """The solver audit, a control rather than a claim: every run's accuracy is independent of the solver.

    ``data`` is ``solver_audit.nc`` of ``analyses/solver_audit.py`` by run label
    (:func:`dcnbio.extract.solver_audit.assess_solver_independence`).
    """
    parts, independent, threshold, n_images = [], [], np.nan, 0
    for label, ds in data.items():
        _, v = solver_audit.assess_solver_independence(ds)
        threshold, n_images = v["threshold"], int(ds.sizes.get("image", 0))
        independent.append(v["solver_independent"])
        parts.append(f"{label}: largest accuracy shift {100 * v['max_refinement_shift']:.2f} pp"
                     + ("" if v["solver_independent"] else " (not independent)"))
    return [claim("control: classifiers are solver-independent (not a paper claim)", "SPEC pitfalls",
                  f"python analyses/solver_audit.py --n-images {n_images}", "; ".join(parts),
                  f"accuracy shift ≤ {100 * threshold:g} pp under every refinement of the solver",
                  HOLDS if all(independent) else FAILS, f"{len(parts)} runs, {n_images} test images")]


def physiology_claims(stacked, sf_reference):
    """Two questions of in-silico electrophysiology (not paper claims): V1-like latency and SF selectivity.

    Parameters
    ----------
    stacked : dict of str → xarray.Dataset
        ``properties.nc`` of ``analyses/physiology.py`` by model (:func:`dcnbio.stats.tuning_study.stack_runs`).
    sf_reference : xarray.DataArray
        The Schiller et al. (1976) SF-bandwidth counts, summed over populations (``bin``).

    Returns
    -------
    list of dict
        The latency row (V1's latency grows as contrast falls, Albrecht 1995) and the SF-selectivity row; the
        latter can only be *does not hold* or *undecided*: no difference detected is no proof of equality.
    """
    tables = tuning_study.summarize(stacked, {"sf_selectivity": sf_reference})
    cmd = "python analyses/physiology.py"
    rows = []
    lat = tables["latency"].set_index("model") if len(tables["latency"]) else None
    if lat is not None:
        dcn = lat.loc[[m for m in lat.index if m in DCNS]]
        slopes = "; ".join(f"{m}: {r['mean slope (time per octave)']:.3g} per octave, p = {r['p']:.3g}, "
                           f"{r['seeds']} seeds" for m, r in dcn.iterrows())
        ok = [r["p"] < ALPHA and r["mean slope (time per octave)"] < 0 for _, r in dcn.iterrows()]
        bad = [r["p"] < ALPHA and r["mean slope (time per octave)"] > 0 for _, r in dcn.iterrows()]
        verdict = HOLDS if ok and all(ok) else FAILS if any(bad) else UNDECIDED
        rows.append(claim("DCN units' latency grows as contrast falls, as in V1 (not a paper claim)",
                          "Albrecht 1995; issue 25", cmd, slopes or "no DCN recorded",
                          "t-test over seeds of the units' mean slope of half-rise time on log2 contrast",
                          verdict, f"{len(dcn)} DCN models"))
    props = tables["properties"]
    sel = props[props["property"].str.startswith("SF selectivity") & props["model"].isin(DCNS)]
    if len(sel):
        text = "; ".join(f"{r['model']}: median {r['trained median']:.3g} % vs V1 {r['V1 median']:.3g} %, "
                         f"p = {r['V1 p (seed medians)']:.3g}" for _, r in sel.iterrows())
        differs = any(r["V1 p (seed medians)"] < ALPHA for _, r in sel.iterrows())
        rows.append(claim("DCN units' SF selectivity is V1-like (Schiller 1976; not a paper claim)",
                          "issue 25", cmd, text, "t-test over seeds of the units' median against the V1 median",
                          FAILS if differs else UNDECIDED + " (no difference detected; not a proof of equality)",
                          f"{len(sel)} DCN models"))
    return rows


# --- the report -------------------------------------------------------------------------------------------------

def claims_report(table, runtimes, results, bundle=None):
    """The reproduction report: the bundle judged, the verdict rules, one row per claim, the commands and each
    analysis's run time.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`claim_table`.
    runtimes : pandas.DataFrame
        Per analysis: ``seconds``, ``threads``, ``finished``, ``command`` (``results/runtimes.csv``); empty: no
        *Run time* section.
    results : str or path
        The results directory the run times refer to (named in the text).
    bundle : str, optional
        The bundle of trained runs the results come from (named in the text).

    Returns
    -------
    Report
    """
    report = Report("Reproduction of the paper's claims from the bundled checkpoints")
    if bundle is not None:
        report.text(f"Trained runs: the finished runs of the {bundle!r} bundle (analyses/reproduce.py --bundle).")
    report.text(f"Verdict rules (fixed in dcnbio/reports/claims.py): tests across training runs at α = {ALPHA}; "
                f"σ claims undecided while the median |Δ log2 σ| from init is below {MOVED_OCTAVES} octaves; 'keeps "
                f"accuracy' within {ACCURACY_MARGIN_PP} pp; the NFE saving counts as gone at a ratio ≥ "
                f"{NFE_EQUIVALENCE}.")
    report.section("Claims").table(table[["paper", "result", "test", "verdict", "rests on"]])
    report.section("Commands").table(table[["command"]])
    if len(runtimes):
        times = runtimes.assign(minutes=(runtimes["seconds"] / 60).round(1))
        report.section("Run time").text(
            f"Wall time of each analysis's last run into {results}/ (from runtimes.csv); "
            f"{times['minutes'].sum():.0f} min in all.").table(times[["minutes", "threads", "finished", "command"]])
    return report
