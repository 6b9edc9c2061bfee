"""The distribution of learned scales σ: per block, against initialisation, against depth and against macaque V1.

Run from the repository root::

    .venv/bin/python analyses/sigma_distribution.py

analyses the bundled σ_ji DCN (``data/checkpoints/dcn-sigma-ji/seed*/last.pt``, each seed's ``init.pt`` as the
control) and writes ``results/sigma_distribution/``.  Any SRF model works, one or several seeds::

    .venv/bin/python analyses/sigma_distribution.py \\
        --checkpoint data/checkpoints/dcn-ode/seed*/last.pt --out results/sigma_dcn_ode --n-boot 2000

Outputs (in ``--out``):

``sigma.nc``
    Every σ of every SRF layer, trained and init (:func:`dcnbio.analysis.sigmas.extract_sigmas` stacked with
    coordinates ``state`` = trained/init and ``seed``); open with :func:`dcnbio.io.open_results`.
``sigma_histograms.png``
    σ per block on a log axis with the fitted log-normal (per-channel σ_ji models; paper Fig. 3b).
``sigma_vs_depth.png``
    σ of every SRF layer against depth, trained vs init (paper Fig. 3a; every SRF model).
``report.md``, ``report.tex``
    The tables: per-layer σ, log-normal fits, goodness of fit, family comparison by AIC, trained vs init,
    depth trend (with the statsmodels summary), model vs V1 shapes.

Why trained vs init: σ = 2^s with s ~ N(0, 2/3) is log-normal at initialisation by construction, so only what
training changed says anything about the paper's "approximately log-normal" claim.
"""
import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcnbio.analysis import plots, stats, v1
from dcnbio.script import is_finished_run
from dcnbio.analysis.report import Report
from dcnbio.analysis.sigmas import extract_sigmas, select, sigma_values, stack_sigmas
from dcnbio.checkpoint import load_checkpoint
from dcnbio.cli import user_errors
from dcnbio.errors import CheckpointError, ConfigError, DataError
from dcnbio.io import load_v1_reference, save_figure, write_report
from dcnbio.io import prepare_output_dir, save_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GLOB = "data/checkpoints/dcn-sigma-ji/seed*/last.pt"
#: Fewest σ for goodness-of-fit tests and family comparisons (and for the per-block distribution tables).
MIN_DIST = 8


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=None, metavar="PATH",
                   help=f"trained checkpoint(s), one per seed; default: {DEFAULT_GLOB} in the repository")
    p.add_argument("--out", default="results/sigma_distribution", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for confidence intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    return p


def log(msg):
    print(msg, flush=True)


# --- loading ---------------------------------------------------------------------------------------------

def resolve_checkpoints(paths):
    if paths:
        return [os.fspath(p) for p in paths]
    hits = sorted(glob.glob(os.fspath(REPO / DEFAULT_GLOB)))
    found = [h for h in hits if is_finished_run(h)]
    for h in hits:
        if h not in found:
            print(f"skipping {os.path.relpath(h, REPO)}: its run has not finished (no final.json)", file=sys.stderr)
    if not found:
        raise CheckpointError(f"no checkpoints of finished runs at {REPO / DEFAULT_GLOB}; train them (see dcnbio "
                              "train --help) or pass --checkpoint PATH")
    return found


def seed_label(info):
    seed = (info.get("train_config") or {}).get("seed")
    if seed is not None:
        return str(seed)
    return os.path.basename(os.path.dirname(os.path.abspath(info["path"]))) or info["path"]


def load_runs(paths):
    """``[(seed, trained ds, init ds or None, note, info)]`` for each checkpoint, validated."""
    runs, seen, model_name = [], {}, None
    for path in paths:
        model, info = load_checkpoint(path)
        trained = extract_sigmas(model, info=info)  # DataError if the model has no SRF layers
        if model_name is None:
            model_name = model.config.name
        elif model.config.name != model_name:
            raise ConfigError(f"{path} is a {model.config.name!r} model but earlier checkpoints are {model_name!r}; "
                              "analyse one model at a time")
        seed = seed_label(info)
        if seed in seen:
            raise ConfigError(f"{path} and {seen[seed]} both have seed {seed}; pass one checkpoint per seed")
        seen[seed] = path
        init, note = None, ""
        init_path = os.path.join(os.path.dirname(os.path.abspath(path)), "init.pt")
        if os.path.abspath(path) == init_path or info.get("kind") == "init":
            note = "the checkpoint is itself the init state"
        elif not os.path.isfile(init_path):
            note = f"no init.pt beside {path}"
        else:
            init_model, init_info = load_checkpoint(init_path)
            if init_model.config != model.config:
                note = f"{init_path} has another model configuration"
            else:
                init = extract_sigmas(init_model, info=init_info)
        runs.append((seed, trained, init, note, info))
    return runs


# --- tables ------------------------------------------------------------------------------------------------

def blocks_of(ds):
    return stats.block_order(np.unique(ds["block"].values.astype(str)))


def layer_table(ds, has_init):
    """Median σ per layer (trained, init) and the median per-filter change in octaves."""
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
    """Log-normal fit, goodness of fit and AIC comparison per group (pooled first)."""
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
        gof_df.index = [f"{g} / {t}" for g, t in gof_df.index]
        gof_df.index.name = "group / test"
    fam_df = pd.DataFrame(fam).T if fam else pd.DataFrame()
    if len(fam_df):
        fam_df.index.name = "group"
        cols = ["n", "best"] + [c for c in stats.FAMILIES if c in fam_df.columns]
        fam_df = fam_df[cols]
        for c in stats.FAMILIES:
            if c in fam_df.columns:
                fam_df[c] = fam_df[c].astype(float)
    return fit_df, gof_df, fam_df


def paired_arrays(ds, block=None):
    """Aligned trained and init σ (and seed labels) for the seeds that have a control."""
    t_all, i_all, seeds = [], [], []
    sel = {} if block is None else {"block": block}
    for seed in np.unique(ds["seed"].values.astype(str)):
        t = select(ds, state="trained", seed=seed, time_channel=False, **sel)
        i = select(ds, state="init", seed=seed, time_channel=False, **sel)
        if i.sizes["filter"] == 0:
            continue
        for coord in ("layer", "out_channel", "in_channel", "time"):
            if not np.array_equal(t[coord].values, i[coord].values, equal_nan=coord == "time"):
                raise DataError(f"seed {seed}: trained and init sigma are not aligned on {coord!r}")
        t_all.append(t["sigma"].values)
        i_all.append(i["sigma"].values)
        seeds.append(np.full(t.sizes["filter"], seed))
    if not t_all:
        return None
    return np.concatenate(t_all), np.concatenate(i_all), np.concatenate(seeds)


def trained_init_table(ds, groups, n_boot, seed):
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
    df = pd.concat(rows)
    df.index = [f"{g} / {q}" for g, q in zip(df["group"], df["quantity"])]
    df.index.name = "group / quantity"
    return df.drop(columns=["group", "quantity"])


# --- main -----------------------------------------------------------------------------------------------

@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.n_boot < 1:
        raise ConfigError("--n-boot must be >= 1")
    start = time.time()
    paths = resolve_checkpoints(args.checkpoint)
    runs = load_runs(paths)  # before creating the output directory: a bad checkpoint leaves nothing behind
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))
    model_name = runs[0][1].attrs.get("model_name", "model")
    parts, controls = [], []
    for seed, trained, init, note, _ in runs:
        parts.append((trained, {"state": "trained", "seed": seed}))
        if init is not None:
            parts.append((init, {"state": "init", "seed": seed}))
        controls.append((seed, "init.pt" if init is not None else f"missing: {note}"))
    ds = stack_sigmas(parts)
    save_dataset(ds, out / "sigma.nc", overwrite=args.overwrite)
    has_init = "init" in set(ds["state"].values.astype(str))
    trained = select(ds, state="trained")
    per_channel = "per-channel" in set(trained["parametrization"].values.astype(str))
    time_dependent = bool(np.any(np.isfinite(trained["time"].values)))
    blocks = blocks_of(trained)
    groups = ["pooled"] + blocks

    report = Report(f"Learned scales of {model_name}: distribution, depth and V1")
    report.section("Inputs").text(
        f"{len(runs)} checkpoint(s) of `{model_name}`; σ in pixels of each layer's input map. The σ_ji of the "
        "constant t-channel of ODE-block convolutions are excluded from every statistic (a filter on a constant "
        "map only scales it: not a receptive field); they stay in `sigma.nc` (`is_time_channel`).")
    inputs = pd.DataFrame([{"seed": s, "checkpoint": info["path"], "kind": info.get("kind", ""),
                            "epoch": info.get("epoch", ""), "step": info.get("step", ""), "control": c}
                           for (s, _, _, _, info), (_, c) in zip(runs, controls)]).set_index("seed")
    report.table(inputs, "Checkpoints and their init controls")
    last_metrics = {s: {k: v for k, v in (info.get("metrics") or [{}])[-1].items() if isinstance(v, (int, float))}
                    for s, _, _, _, info in runs if info.get("metrics")}
    if last_metrics:
        report.table(pd.DataFrame(last_metrics).T.rename_axis("seed"), "Last recorded training metrics")
    if per_channel:
        report.text("Per-channel layers use fixed 7×7 kernels: σ above ≈1.5 px is truncated by the window, so such "
                    "σ are not true bandwidths (column `truncated`).")
    if not has_init:
        report.text("**No init control was found**: without it a log-normal shape says nothing about training "
                    "(σ is log-normal at init by construction).")

    report.section("σ per layer").table(layer_table(ds, has_init), "Median σ per SRF layer (px of the layer's input)")
    fig = plots.plot_sigma_vs_depth(ds)
    save_figure(fig, out / "sigma_vs_depth.png", dpi=120)
    report.figure("sigma_vs_depth.png", "σ of every SRF layer against depth (grey: init)")

    report.section("Depth trend")
    trend = None
    if len(np.unique(trained["depth"].values)) >= 2:
        trend = stats.depth_trend(trained)
        report.table(trend.table(), f"log2 σ against layer depth (trained; model: {trend.kind})")
        if has_init:
            init_trend = stats.depth_trend(select(ds, state="init"))
            report.table(init_trend.table(), "The same at init (control: no trend expected)")
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
        boot = stats.bootstrap_summary(trained, groups="block", n_resamples=args.n_boot, seed=args.seed)
        report.table(boot.set_index(["group", "statistic"]).pipe(_flat_index),
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
        fig = plots.plot_sigma_histograms(ds)
        save_figure(fig, out / "sigma_histograms.png", dpi=120)
        report.figure("sigma_histograms.png", "σ per block, density per log10 unit, with fitted log-normal "
                                              "(outline, dashed: init)")

    report.section("Trained vs init")
    ti = trained_init_table(ds, groups, args.n_boot, args.seed) if has_init else pd.DataFrame()
    if len(ti):
        report.text(f"Paired by filter; bootstrap CIs resample {ti['resampled'].iloc[0]} "
                    f"({args.n_boot} resamples). KS and Anderson–Darling assume independent samples, so with "
                    "paired σ their p-values are conservative.")
        report.table(ti.drop(columns="resampled"), "Trained minus init (ratio for the geometric mean); changes in octaves")
    else:
        report.text("No init control: nothing to compare.")

    if per_channel:
        reference = load_v1_reference()
        report.section("Against macaque V1 (shapes only)")
        report.text("Peak spatial frequency √n/(2πσ) with n the layer's derivative order, σ in input-image pixels. "
                    "log f = const − log σ: the log-SD carries over and the skew of log f is minus that of log σ. "
                    "Locations are not compared (cycles/pixel vs cycles/degree). V1: " + reference.attrs["citation"]
                    + ".")
        cmp = v1.compare_with_v1(trained, n_resamples=args.n_boot, seed=args.seed, reference=reference)
        if has_init:
            ci = v1.compare_with_v1(select(ds, state="init"), n_resamples=args.n_boot, seed=args.seed,
                                    reference=reference)
            ci = ci[ci["source"] == "model"].assign(source="model (init)")
            cmp = pd.concat([cmp[cmp["source"] == "model"], ci, cmp[cmp["source"] != "model"]])
        cmp.index = [f"{src}: {g}" for src, g in zip(cmp["source"], cmp["group"])]
        cmp.index.name = "source: group"
        report.table(cmp.drop(columns=["source", "group"]),
                     "SD of log2 peak frequency (octaves) and skewness of log frequency, with bootstrap CIs")
    write_report(report, out)

    log(f"{model_name}: {len(runs)} seed(s), {int(sigma_values(trained).size)} trained σ "
        f"({'with' if has_init else 'without'} init control) -> {out}")
    if len(fit_df):
        r = fit_df.loc["pooled"]
        log(f"  trained: geometric mean {r['geometric_mean']:.3g} px, log2-SD {r['log2_sd']:.3g} oct, "
            f"skew of log σ {r['skew_log']:.3g}")
    if len(ti):
        row = ti.loc["pooled / delta_log2_sd"]
        log(f"  trained - init log2-SD: {row['estimate']:+.3g} oct [{row['ci_low']:+.3g}, {row['ci_high']:+.3g}]")
    if trend is not None:
        log(f"  depth: {trend.slope:+.3g} oct/layer [{trend.slope_ci[0]:+.3g}, {trend.slope_ci[1]:+.3g}] "
            f"({trend.kind}); Spearman over layer medians {trend.layer_spearman['rho']:.2f}")
    log(f"  wrote sigma.nc, figures and report.md/.tex in {time.time() - start:.1f} s")
    return 0


def _flat_index(df):
    df = df.copy()
    df.index = [f"{g} / {s}" for g, s in df.index]
    df.index.name = "group / statistic"
    return df


if __name__ == "__main__":
    sys.exit(main())
