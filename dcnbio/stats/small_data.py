"""Small data (paper Table 2a): is the DCN more accurate than its baselines when training images are few?

The paper (Table 2a, CIFAR-10, 3 runs) trains on 52 / 103 / 512 / 1024 images per class and reports
DCN-ODE 44.5 / 54.2 / 75.5 / 79.7 % against ODE-Net 41.7 / 48.6 / 71.7 / 77.4 % and ResNet-blocks
39.8 / 49.0 / 70.4 / 76.8 % (:data:`PAPER_TABLE_2A`).  The claim is the DCN's *advantage at small sizes*: its
accuracy exceeds both baselines', by 3–6 percentage points (pp) below 1000 images per class.

Pieces, each there because the claim needs it:

:func:`tabulate_runs`
    One number per run — ``n_correct`` of ``n_images`` evaluation images — in a labelled ``(model, size, seed)``
    table (``size`` = training images *per class*); a missing run is a NaN accuracy with ``n_images = 0``.
:func:`summarize_accuracy`
    Mean ± SD over seeds per model and size: the paper's table.  SDs are sample SDs (``ddof = 1``; NaN with one
    seed).
:func:`fit_small_data`
    ``accuracy ~ C(model) * np.log(size)``: a line in log size per model (learning curves are close to linear in
    log data), so the coefficients say how far apart the models are and whether the gap closes as data grow.
    The DCN is the reference level (treatment coding), so ``C(model)[T.b]`` is baseline ``b`` minus the DCN at
    one image per class and ``C(model)[T.b]:np.log(size)`` is how much faster ``b`` gains per e-fold of data.
    Two fits of the same formula:

    * **binomial GLM** (logit link) of the fraction correct, each run weighted by its ``n_images`` (the same
      likelihood as counts of correct and wrong images), with the dispersion estimated from Pearson's χ²
      (quasi-binomial; ``scale="X2"``, t-based inference with the residual degrees of freedom).
      *This is the model the verdict uses*, because an accuracy is a count of correct images out of a known
      number: its variance is tied to its level (p(1 − p)/n, largest near 50 %, where small-data runs sit) and
      the logit keeps fitted accuracies inside (0, 1) across the size range.  A plain binomial (scale 1) would
      treat every evaluation image as independent replication, but what varies between runs of one model and
      size is the *seed* (training images and initialisation) — training noise, often larger than the binomial
      SD of one run (1.6 pp at 50 % on 1000 images) — so its standard errors would be too small
      (pseudo-replication).  The Pearson scale measures the actual run-to-run spread and inflates (or deflates)
      the binomial variance to it.  It is not floored at 1: every run is scored on the same images, so
      differences between runs carry less than binomial noise.  (The fraction-with-weights form is used, not
      statsmodels' two-column ``(correct, wrong)`` endog: with the latter, statsmodels 0.15 divides the Pearson
      scale by the number of trials and every standard error comes out far too small.)
    * **OLS** on the accuracy in percent: coefficients in pp, directly comparable with the paper's table, and its
      residual variance is the seed-to-seed variance pooled over cells.  It ignores that the variance changes
      with the accuracy level; far from 0 and 100 % the two fits agree, and the report says when their verdicts
      differ.

    A lack-of-fit F test (OLS against one mean per model and size; needs a model with ≥ 3 sizes) says whether
    the straight line in log size is adequate; if it is rejected, contrasts at a size lean on a trend the data do
    not follow.
:func:`assess_small_data_advantage`
    The verdict at the smallest size (default): DCN minus each baseline from the GLM, with 95 % intervals.
    **supported** — the DCN is ahead of *every* baseline with an interval above 0 (an intersection–union test:
    no multiplicity correction is needed for "better than all"); **contradicted** — some baseline is ahead with
    an interval above 0; **not resolved** — otherwise.

The run layout (``<root>/<model>/n<size>/seed<S>/``), the CPU-scale recipe of the bundled set and training the
runs of a grid that are not there yet belong to the training side (:mod:`dcnbio.train.grid`; see
``data/checkpoints/small-data/README.md``); :func:`describe_run` reads what a checkpoint says about its run.
Evaluation images are the caller's (``analyses/small_data.py`` uses the first N test images for every run).
"""
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.stats as st
import xarray as xr
from scipy.special import expit

from ..datasets import check_sizes
from ..errors import CheckpointError, DataError

__all__ = ["DCN", "MODEL_ORDER", "PAPER_SIZES", "PAPER_TABLE_2A", "SmallDataFit", "assess_small_data_advantage",
           "describe_run", "fit_small_data", "format_summary", "runs_frame", "summarize_accuracy",
           "tabulate_runs"]

#: The DCN whose advantage Table 2a claims, and the order models are shown in (the DCN first: the reference).
DCN = "dcn-ode"
MODEL_ORDER = ("dcn-ode", "odenet", "resnet-blocks")
#: Paper Table 2a (CIFAR-10, mean of 3 runs): test accuracy (%) at these training images per class.
PAPER_SIZES = (52, 103, 512, 1024)
PAPER_TABLE_2A = {"dcn-ode": (44.5, 54.2, 75.5, 79.7), "odenet": (41.7, 48.6, 71.7, 77.4),
                  "resnet-blocks": (39.8, 49.0, 70.4, 76.8)}


# --- inputs --------------------------------------------------------------------------------------------------------

def describe_run(info, path=None):
    """What a checkpoint says about its small-data run.

    Parameters
    ----------
    info : dict
        From :func:`dcnbio.load_checkpoint` (``train_config``, ``model_config``, ``epoch``, ``step``, ``metrics``).
    path : str, optional
        Named in errors (default ``info['path']``).

    Returns
    -------
    dict
        ``model``, ``size`` (``train_config['subset']``), ``seed``, ``dataset``, ``width``, ``epochs`` (planned:
        the training loop's schedule, shorter than ``train_config['epochs']`` where a plateau cut it), ``epoch``
        (reached), ``steps``, ``finished`` (``epoch == epochs``), ``train_acc`` and ``wall_seconds`` of the last
        epoch (NaN if not recorded), ``train_config``.

    Raises
    ------
    CheckpointError
        The checkpoint does not record its training configuration, its subset (not a small-data run) or seed.
    """
    path = path or info.get("path", "checkpoint")
    tc = info.get("train_config") or {}
    name = (info.get("model_config") or {}).get("name") or tc.get("model")
    if not tc or not name:
        raise CheckpointError(f"{path} does not record its training configuration; it cannot be placed in a "
                              "small-data grid")
    if not tc.get("subset"):
        raise CheckpointError(f"{path} does not record a subset (train_config['subset']): it was not trained on "
                              "images per class, so it has no size in a small-data grid")
    if tc.get("seed") is None:
        raise CheckpointError(f"{path} does not record its seed (train_config['seed'])")
    metrics = info.get("metrics") or [{}]
    # planned epochs: the schedule the training loop settled on (a plateau-scheduled run ends before its cap)
    loop = (info.get("optimizer_state") or {}).get("loop") or {}
    epochs = loop.get("epochs", tc.get("epochs"))
    epoch = int(info.get("epoch", -1))
    return {"model": str(name), "size": int(tc["subset"]), "seed": int(tc["seed"]), "dataset": tc.get("dataset"),
            "width": tc.get("width"), "epochs": epochs, "epoch": epoch, "steps": int(info.get("step", -1)),
            "finished": epochs is not None and epoch == int(epochs),
            "train_acc": float(metrics[-1].get("train_acc", math.nan)),
            "wall_seconds": float(metrics[-1].get("elapsed_seconds", math.nan)), "train_config": dict(tc)}




# --- the table -----------------------------------------------------------------------------------------------------

def _order_models(names):
    names = list(dict.fromkeys(str(n) for n in names))
    known = [m for m in MODEL_ORDER if m in names]
    return known + sorted(n for n in names if n not in known)


def tabulate_runs(records, *, attrs=None):
    """One row per run → a labelled ``(model, size, seed)`` table.

    Parameters
    ----------
    records : iterable of dict
        Each with ``model`` (str), ``size`` (images per class), ``seed``, ``n_correct`` and ``n_images``
        (integers, ``0 <= n_correct <= n_images``, ``n_images >= 1``); optional numbers ``epochs``, ``steps``,
        ``train_acc``, ``nfe`` (forward NFE per evaluation batch, summed over ODE blocks) and text ``checkpoint``.
    attrs : dict, optional
        Dataset attributes (what was evaluated, on which images).

    Returns
    -------
    xarray.Dataset
        Dims ``model`` (DCN first, then :data:`MODEL_ORDER`, then others alphabetically), ``size`` and ``seed``
        (ascending).  ``n_correct``, ``n_images`` (int64; 0 where a grid cell has no run), ``accuracy``
        (fraction; NaN where no run), the optional numbers as float (NaN where absent) and ``checkpoint`` (text).

    Raises
    ------
    DataError
        No records, a missing key, counts out of range, or two runs in one cell.

    Examples
    --------
    >>> ds = tabulate_runs([{"model": "odenet", "size": 10, "seed": 1, "n_correct": 3, "n_images": 4},
    ...                     {"model": "dcn-ode", "size": 10, "seed": 2, "n_correct": 1, "n_images": 4}])
    >>> ds["accuracy"].sel(size=10).values.tolist()
    [[nan, 0.25], [0.75, nan]]
    """
    records = list(records)
    if not records:
        raise DataError("no runs to tabulate")
    for r in records:
        missing = [k for k in ("model", "size", "seed", "n_correct", "n_images") if k not in r]
        if missing:
            raise DataError(f"run record {r!r} lacks {', '.join(missing)}")
        n, k = r["n_images"], r["n_correct"]
        if int(n) != n or int(k) != k or n < 1 or not 0 <= k <= n:
            raise DataError(f"{r['model']} n{r['size']} seed{r['seed']}: need integers 0 <= n_correct <= n_images "
                            f"and n_images >= 1, got {k!r} of {n!r}")
        if not (isinstance(r["size"], (int, np.integer)) and not isinstance(r["size"], bool) and r["size"] >= 1):
            raise DataError(f"{r['model']} seed{r['seed']}: size must be an integer >= 1 (images per class), "
                            f"got {r['size']!r}")
    models = _order_models(r["model"] for r in records)
    sizes = sorted({int(r["size"]) for r in records})
    seeds = sorted({int(r["seed"]) for r in records})
    shape = (len(models), len(sizes), len(seeds))
    n_correct = np.zeros(shape, np.int64)
    n_images = np.zeros(shape, np.int64)
    extras = {name: np.full(shape, np.nan) for name in ("epochs", "steps", "train_acc", "nfe")
              if any(name in r for r in records)}
    checkpoint = np.full(shape, "", dtype=object)
    seen = {}
    for r in records:
        idx = (models.index(str(r["model"])), sizes.index(int(r["size"])), seeds.index(int(r["seed"])))
        key = f"{r['model']} n{int(r['size'])} seed{int(r['seed'])}"
        if idx in seen:
            raise DataError(f"two runs of {key}: {seen[idx] or '?'} and {r.get('checkpoint') or '?'}")
        seen[idx] = r.get("checkpoint", "")
        n_correct[idx], n_images[idx] = int(r["n_correct"]), int(r["n_images"])
        for name in extras:
            extras[name][idx] = float(r.get(name, np.nan))
        checkpoint[idx] = str(r.get("checkpoint", ""))
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(n_images > 0, n_correct / np.maximum(n_images, 1), np.nan)
    dims = ("model", "size", "seed")
    ds = xr.Dataset(
        {"accuracy": (dims, accuracy, {"long_name": "fraction of evaluation images classified correctly"}),
         "n_correct": (dims, n_correct, {"long_name": "evaluation images classified correctly"}),
         "n_images": (dims, n_images, {"long_name": "evaluation images (0: no run in this cell)"}),
         "checkpoint": (dims, checkpoint.astype(str))},
        coords={"model": np.asarray(models, dtype=str), "size": ("size", np.asarray(sizes, np.int64),
                                                                 {"long_name": "training images per class"}),
                "seed": np.asarray(seeds, np.int64)},
        attrs=dict(attrs or {}))
    for name, values in extras.items():
        ds[name] = (dims, values)
    return ds


def runs_frame(ds):
    """The runs of a :func:`tabulate_runs` table as a tidy DataFrame (one row per run, missing cells dropped).

    Columns ``model``, ``size``, ``seed``, ``n_correct``, ``n_images``, ``accuracy`` (fraction).
    """
    df = ds[["n_correct", "n_images", "accuracy"]].to_dataframe().reset_index()
    df = df[df["n_images"] > 0].reset_index(drop=True)
    return df[["model", "size", "seed", "n_correct", "n_images", "accuracy"]]


def summarize_accuracy(ds):
    """Mean ± SD of the accuracy over seeds, per model and size (the layout of paper Table 2a).

    Returns
    -------
    xarray.Dataset
        Dims ``(model, size)``: ``mean``, ``sd`` (sample SD, ``ddof = 1``; NaN with fewer than 2 seeds), ``n_seeds``
        (runs in the cell), ``pooled`` (all correct over all images of the cell); fractions.
    """
    acc = ds["accuracy"]
    n = acc.notnull().sum("seed")
    mean = acc.mean("seed", skipna=True)
    sd = acc.std("seed", ddof=1, skipna=True).where(n >= 2)
    pooled = (ds["n_correct"].sum("seed") / ds["n_images"].sum("seed").where(lambda x: x > 0))
    return xr.Dataset({"mean": mean, "sd": sd, "n_seeds": n.astype(np.int64), "pooled": pooled},
                      attrs={"sd": "sample SD over seeds (ddof=1)"})


def format_summary(summary, *, digits=1):
    """``mean ± sd (n)`` in percent per size (rows) and model (columns), as text for a report table."""
    rows = {}
    for size in summary["size"].values:
        row = {}
        for model in summary["model"].values:
            cell = summary.sel(model=model, size=size)
            n = int(cell["n_seeds"])
            if n == 0:
                row[str(model)] = ""
            elif n == 1:
                row[str(model)] = f"{100 * float(cell['mean']):.{digits}f} (1)"
            else:
                mean, sd = 100 * float(cell["mean"]), 100 * float(cell["sd"])
                row[str(model)] = f"{mean:.{digits}f} ± {sd:.{digits}f} ({n})"
        rows[int(size)] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "images per class"
    return df


# --- the fit -------------------------------------------------------------------------------------------------------

FORMULA = "C(model) * np.log(size)"


@dataclass
class SmallDataFit:
    """Result of :func:`fit_small_data`.

    Attributes
    ----------
    glm : statsmodels GLMResults
        Quasi-binomial GLM (logit link, Pearson-χ² dispersion, t inference) of the fraction correct on
        :data:`FORMULA`, each run weighted by its number of images.
    ols : statsmodels RegressionResults
        OLS of the accuracy in percent on the same formula (coefficients in pp).
    reference : str
        The reference level of ``model`` (the DCN when present).
    models, sizes : list
    data : pandas.DataFrame
        The runs fitted (``accuracy`` in percent, ``n_wrong``).
    lack_of_fit : dict or None
        ``F``, ``df_num``, ``df_den``, ``pvalue`` of OLS against one mean per (model, size) cell (None when no
        model has 3 sizes or the cell means leave no residual degrees of freedom).
    notes : list of str
    """

    glm: object
    ols: object
    reference: str
    models: list
    sizes: list
    data: pd.DataFrame
    lack_of_fit: dict = None
    notes: list = field(default_factory=list)

    @property
    def dispersion(self):
        """Pearson χ² / residual df of the GLM (1 for exactly binomial runs)."""
        return float(self.glm.scale)

    def _design(self, model, size):
        """Design row of ``model`` at ``size``, built from the coefficient names of the fitted formula."""
        row = []
        for term in self.ols.params.index:
            value = 1.0
            for factor in term.split(":"):
                if factor == "Intercept":
                    continue
                if factor == "np.log(size)":
                    value *= math.log(size)
                elif factor.startswith("C(model)[T.") and factor.endswith("]"):
                    value *= float(factor[len("C(model)[T."):-1] == model)
                else:
                    raise DataError(f"unexpected term {term!r} in the small-data fit")
            row.append(value)
        return np.asarray(row)

    def predict(self, model, sizes):
        """Fitted accuracy (%) of ``model`` at ``sizes`` from the GLM and from OLS: ``(glm, ols)`` arrays."""
        rows = np.array([self._design(model, s) for s in np.atleast_1d(sizes)])
        return 100 * expit(rows @ self.glm.params.values), rows @ self.ols.params.values

    def coefficients(self):
        """Both fits side by side: estimate, standard error and p-value per term (GLM in log-odds, OLS in pp)."""
        glm, ols = self.glm, self.ols
        df = pd.DataFrame({"GLM log-odds": glm.params, "GLM se": glm.bse, "GLM p": glm.pvalues,
                           "OLS pp": ols.params, "OLS se": ols.bse, "OLS p": ols.pvalues})
        df.index.name = "term"
        return df

    def advantage(self, sizes=None, *, confidence=0.95):
        """The DCN (reference) minus each other model at each size, from both fits.

        Returns
        -------
        pandas.DataFrame
            One row per (size, baseline): ``GLM log-odds`` difference (DCN − baseline) with its interval and
            p-value (t with the residual df, Pearson dispersion); ``GLM pp`` — the difference of fitted accuracies
            in pp with a delta-method interval; ``OLS pp`` with its interval and p-value.
        """
        sizes = self.sizes if sizes is None else check_sizes(sizes)
        alpha = 1 - confidence
        rows = []
        cov_g, cov_o = self.glm.cov_params().values, self.ols.cov_params().values
        beta_g, beta_o = self.glm.params.values, self.ols.params.values
        tg = st.t.ppf(1 - alpha / 2, self.glm.df_resid)
        to = st.t.ppf(1 - alpha / 2, self.ols.df_resid)
        for size in sizes:
            x_ref = self._design(self.reference, size)
            p_ref = expit(x_ref @ beta_g)
            for b in self.models:
                if b == self.reference:
                    continue
                x_b = self._design(b, size)
                c = x_ref - x_b
                est_g, se_g = float(c @ beta_g), float(np.sqrt(c @ cov_g @ c))
                est_o, se_o = float(c @ beta_o), float(np.sqrt(c @ cov_o @ c))
                p_b = expit(x_b @ beta_g)
                grad = p_ref * (1 - p_ref) * x_ref - p_b * (1 - p_b) * x_b
                se_pp = 100 * float(np.sqrt(grad @ cov_g @ grad))
                diff_pp = 100 * float(p_ref - p_b)
                with np.errstate(divide="ignore", invalid="ignore"):
                    p_glm = float(2 * st.t.sf(abs(est_g / se_g), self.glm.df_resid))
                    p_ols = float(2 * st.t.sf(abs(est_o / se_o), self.ols.df_resid))
                rows.append({"size": int(size), "baseline": b,
                             "GLM log-odds": est_g, "GLM low": est_g - tg * se_g, "GLM high": est_g + tg * se_g,
                             "GLM p": p_glm, "GLM pp": diff_pp, "GLM pp low": diff_pp - tg * se_pp,
                             "GLM pp high": diff_pp + tg * se_pp,
                             "OLS pp": est_o, "OLS low": est_o - to * se_o, "OLS high": est_o + to * se_o,
                             "OLS p": p_ols})
        return pd.DataFrame(rows).set_index(["size", "baseline"])

    def to_latex(self):
        """LaTeX of both statsmodels summaries (``summary().as_latex()``), GLM first."""
        return "\n\n".join(s.as_latex() for s in self._summaries())

    def summary_text(self):
        """The statsmodels summaries of the fit, as text."""
        return "\n\n".join(str(s) for s in self._summaries())

    def _summaries(self):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="omni_normtest")  # < 8 runs
            warnings.filterwarnings("ignore", message="kurtosistest")
            return [self.glm.summary(title="Quasi-binomial GLM (logit link, Pearson dispersion): correct images"),
                    self.ols.summary(title="OLS: accuracy (%)")]


def _frame(data):
    if isinstance(data, xr.Dataset):
        data = runs_frame(data)
    df = pd.DataFrame(data).copy()
    missing = [c for c in ("model", "size", "n_correct", "n_images") if c not in df]
    if missing:
        raise DataError(f"runs table lacks column(s) {', '.join(missing)}")
    df = df[df["n_images"] > 0].reset_index(drop=True)
    if df.empty:
        raise DataError("no runs to fit")
    if ((df["n_correct"] < 0) | (df["n_correct"] > df["n_images"])).any():
        raise DataError("n_correct must lie in [0, n_images] for every run")
    df["size"] = df["size"].astype(float)
    if (df["size"] < 1).any():
        raise DataError("sizes are training images per class >= 1")
    df["n_wrong"] = df["n_images"] - df["n_correct"]
    df["accuracy"] = 100 * df["n_correct"] / df["n_images"]
    return df


def fit_small_data(data, *, reference=DCN, lack_of_fit=True):
    """Fit ``accuracy ~ C(model) * np.log(size)`` as a quasi-binomial GLM and by OLS (see the module docstring).

    Parameters
    ----------
    data : xarray.Dataset or pandas.DataFrame
        A :func:`tabulate_runs` table, or rows with ``model``, ``size``, ``n_correct``, ``n_images`` (counts may be
        non-integer, e.g. for noiseless synthetic data).
    reference : str
        Reference level of ``model`` (treatment coding): the DCN; if absent, the first model in display order.
    lack_of_fit : bool
        Also test the line in log size against the cell-means model.

    Returns
    -------
    SmallDataFit

    Raises
    ------
    DataError
        Fewer than 2 sizes for some model (its slope is not estimable), or no residual degrees of freedom.
    """
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    df = _frame(data)
    models = _order_models(df["model"])
    if reference in models:
        models = [reference] + [m for m in models if m != reference]
    else:
        reference = models[0]
    one_size = [m for m in models if df.loc[df["model"] == m, "size"].nunique() < 2]
    if one_size:
        raise DataError(f"{', '.join(one_size)}: runs at fewer than 2 sizes; a slope in log size needs two")
    n_params = 2 * len(models)
    if len(df) <= n_params:
        raise DataError(f"{len(df)} runs for {n_params} coefficients: no residual degrees of freedom (add seeds)")
    df["model"] = pd.Categorical(df["model"], categories=models)
    sizes = sorted(int(s) for s in df["size"].unique())
    ols = smf.ols(f"accuracy ~ {FORMULA}", df).fit()
    # Proportions weighted by n_images, not a (correct, wrong) two-column endog: the same likelihood and estimates,
    # but statsmodels 0.15 divides the Pearson scale of the two-column form by the number of trials (its
    # pearson_chi2 is right, its `scale` and so every standard error are not; cf. statsmodels issue #3612).
    df["fraction_correct"] = df["n_correct"] / df["n_images"]
    glm = smf.glm(f"fraction_correct ~ {FORMULA}", df, family=sm.families.Binomial(),
                  var_weights=df["n_images"].astype(float)).fit(scale="X2", use_t=True)
    assert list(glm.params.index) == list(ols.params.index)  # one design for both fits (advantage() relies on it)
    notes = []
    if not glm.converged:
        notes.append("the GLM did not converge")
    lof = None
    if lack_of_fit and len(sizes) >= 3:
        # one mean per observed (model, size) cell: full rank also when some model lacks some size
        cells = smf.ols("accuracy ~ C(cell)", df.assign(cell=df["model"].astype(str) + "/" +
                                                          df["size"].astype(int).astype(str))).fit()
        if cells.df_resid >= 1 and cells.df_model > ols.df_model:
            f, p, dfn = cells.compare_f_test(ols)
            lof = {"F": float(f), "df_num": int(round(dfn)), "df_den": int(cells.df_resid), "pvalue": float(p)}
    return SmallDataFit(glm=glm, ols=ols, reference=reference, models=models, sizes=sizes, data=df,
                        lack_of_fit=lof, notes=notes)


# --- the verdict ---------------------------------------------------------------------------------------------------

VERDICTS = ("supported", "not resolved", "contradicted")


def assess_small_data_advantage(fit, size=None, *, confidence=0.95):
    """Is the DCN ahead of every baseline at a small size? (the claim of Table 2a)

    Parameters
    ----------
    fit : SmallDataFit
        Its reference must be the DCN (:data:`DCN`).
    size : int, optional
        Images per class to judge at; default the smallest size of the fit.
    confidence : float

    Returns
    -------
    dict
        ``verdict`` (one of :data:`VERDICTS`, from the GLM), ``ols_verdict`` (the same rule on the OLS),
        ``size``, ``table`` (:meth:`SmallDataFit.advantage` at that size), ``text`` (a plain sentence).

    Raises
    ------
    DataError
        The fit has no DCN or no baseline.
    """
    if fit.reference != DCN or DCN not in fit.models:
        raise DataError(f"no {DCN} runs in the fit: the DCN's advantage cannot be judged")
    if len(fit.models) < 2:
        raise DataError(f"only {DCN} runs: there is no baseline to compare with")
    size = fit.sizes[0] if size is None else check_sizes([size])[0]
    table = fit.advantage([size], confidence=confidence).loc[size]

    def rule(low, high):
        if (table[low] > 0).all():
            return "supported"
        if (table[high] < 0).any():
            return "contradicted"
        return "not resolved"

    verdict = rule("GLM low", "GLM high")
    ols_verdict = rule("OLS low", "OLS high")
    level = f"{100 * confidence:g} %"
    parts = [f"{b} {row['GLM pp']:+.1f} pp [{row['GLM pp low']:+.1f}, {row['GLM pp high']:+.1f}]"
             for b, row in table.iterrows()]
    head = (f"At {size} image{'' if size == 1 else 's'} per class the {DCN} minus each baseline (quasi-binomial "
            f"GLM, {level} intervals): " + "; ".join(parts) + ". ")
    if verdict == "supported":
        tail = f"The {DCN} is ahead of every baseline: the runs **support** the DCN's small-data advantage."
    elif verdict == "contradicted":
        ahead = [b for b, row in table.iterrows() if row["GLM high"] < 0]
        tail = (f"{', '.join(ahead)} {'is' if len(ahead) == 1 else 'are'} ahead of the {DCN}: the runs "
                f"**contradict** the DCN's small-data advantage.")
    else:
        tail = ("Not every difference is clear of zero: the runs **neither support nor contradict** the DCN's "
                "small-data advantage.")
    if ols_verdict != verdict:
        tail += f" (The OLS fit, in pp, says {ols_verdict!r}.)"
    return {"verdict": verdict, "ols_verdict": ols_verdict, "size": size, "table": table, "text": head + tail}


# --- figure --------------------------------------------------------------------------------------------------------
