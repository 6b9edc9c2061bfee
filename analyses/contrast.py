"""Contrast robustness and NFE savings of ODE blocks: inputs c·x under four conditions (paper §3.3, Fig. 4b).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/contrast.py

evaluates the bundled DCN-ODE, DCN σ_ji and ODE-Net checkpoints that exist (``data/checkpoints/<model>/seed*/last.pt``)
on the first 100 test images (every finished seed; a few minutes on 2 cores; ``--n-images 1000`` for the
paper-grade run) at contrasts c = 1, 0.5, 0.25, 0.125, 0.06 and writes ``results/contrast/``.
Other checkpoints, contrasts or conditions::

    .venv/bin/python analyses/contrast.py --checkpoint ckpt.pt --contrast 1 0.1 --conditions naive all-blocks \\
        --n-images 256 --out results/contrast_small --overwrite

Conditions (:mod:`dcnbio.analysis.contrast`): ``naive`` (T fixed), ``block1-T`` (block 1 integrates to c·T, the
paper's), ``all-blocks`` (inputs of all ODE blocks scaled by c and every T → c·T: the paper's "total NFE 102 → 60
at c = 0.06"), ``atol-control`` (``all-blocks`` with atol → c·atol: does the saving survive equal relative accuracy?).

Outputs (in ``--out``):

``contrast.nc``
    One netCDF group per model: accuracy, agreement with the unchanged model, predictions, forward NFE per batch and
    block, the settings each block ran with, and the rescaling check (``f_change``, ``identity_error``).
``contrast.png``
    Accuracy, first-block NFE and total NFE against c (Fig. 4b).
``report.md``, ``report.tex``
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcnbio.script import ScriptParser, dataset_of, load_eval_images, load_models, resolve_checkpoints
from dcnbio.analysis.contrast import (CONDITIONS, DEFAULT_CONTRASTS, check_contrasts, compute_contrast,
                                      compute_rescaling_check, plot_contrast)
from dcnbio.analysis.report import Report
from dcnbio.analysis.runs import against_reference, pool_runs
from dcnbio.cli import user_errors
from dcnbio.errors import ConfigError
from dcnbio.io import save_figure, write_report
from dcnbio.io import prepare_output_dir, save_results

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = tuple(f"data/checkpoints/{m}/seed*/last.pt" for m in ("dcn-ode", "dcn-sigma-ji", "odenet"))


def build_parser():
    p = ScriptParser(prog="analyses/contrast.py", description=__doc__.split("\n")[0],
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=None, metavar="PATH",
                   help="checkpoint(s) with ODE blocks; default: the bundled " + ", ".join(DEFAULTS))
    p.add_argument("--out", default="results/contrast", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.add_argument("--n-images", type=int, default=100,
                   help="first N images of the evaluation split (default 100; 1000 for the paper-grade run)")
    p.add_argument("--batch-size", type=int, default=128, help="images per solve (NFE are per batch)")
    p.add_argument("--contrast", type=float, nargs="+", default=list(DEFAULT_CONTRASTS), help="contrasts c > 0")
    p.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    p.add_argument("--first-step", type=float, default=None, metavar="FRACTION",
                   help="initial step of adaptive solvers as a fraction of each block's interval, in every condition "
                        "(default: torchdiffeq's heuristic, which is not scale-covariant)")
    p.add_argument("--n-check", type=int, default=32,
                   help="images for the rescaling check (f scale-freeness, h_c(cT) = c h(T)); 0 skips it")
    p.add_argument("--split", choices=("test", "val"), default="test", help="evaluation split")
    p.add_argument("--data-root", default=None, help="dataset directory (default: the standard places)")
    return p


def log(msg):
    print(msg, flush=True)


def by_condition(results, var, scale=1.0, block=None):
    rows = {}
    for label, ds in results.items():
        for cond in ds["condition"].values:
            da = ds[var].sel(condition=cond)
            if block is not None:
                da = da.sel(block=block)
            rows[f"{label} / {cond}"] = {f"c={c:g}": scale * float(v) for c, v in zip(ds["contrast"].values, da.values)}
    df = pd.DataFrame(rows).T
    df.index.name = "model / condition"
    return df


def per_block_nfe(results):
    rows = {}
    for label, ds in results.items():
        for cond in ds["condition"].values:
            for b in ds["block"].values:
                rows[f"{label} / {cond} / {b}"] = {f"c={c:g}": float(v) for c, v in
                                                   zip(ds["contrast"].values, ds["nfe_mean"].sel(condition=cond,
                                                                                                 block=b).values)}
    df = pd.DataFrame(rows).T
    df.index.name = "model / condition / block"
    return df


def claim_table(results):
    """The paper's claim, per model: total NFE and accuracy at c = 1 and at the smallest c."""
    rows = []
    for label, ds in results.items():
        c_min = float(ds["contrast"].values[-1])
        base_acc = float(ds.attrs["accuracy_unchanged"])
        base_nfe = float(ds["nfe_total"].sel(condition=ds["condition"].values[0]).sel(contrast=1.0)) \
            if 1.0 in ds["contrast"].values else np.nan
        for cond in ds["condition"].values:
            rows.append({"model / condition": f"{label} / {cond}", "c": c_min, "NFE total (c=1)": base_nfe,
                         "NFE total (c)": float(ds["nfe_total"].sel(condition=cond, contrast=c_min)),
                         "accuracy (c=1, %)": 100 * base_acc,
                         "accuracy (c, %)": 100 * float(ds["accuracy"].sel(condition=cond, contrast=c_min)),
                         "accuracy change (pp)": 100 * (float(ds["accuracy"].sel(condition=cond, contrast=c_min))
                                                        - base_acc)})
    return pd.DataFrame(rows).set_index("model / condition")


def run_values(results):
    """One value per training run and condition at the smallest contrast: total-NFE ratio to c = 1, accuracy change."""
    values = {}
    for label, ds in results.items():
        if 1.0 not in ds["contrast"].values:
            continue
        c_min = float(ds["contrast"].values[-1])
        base_acc = float(ds.attrs["accuracy_unchanged"])
        for cond in ds["condition"].values:
            nfe = ds["nfe_total"].sel(condition=cond)
            ratio = float(nfe.sel(contrast=c_min)) / float(nfe.sel(contrast=1.0))
            acc = float(ds["accuracy"].sel(condition=cond, contrast=c_min))
            values.setdefault(("NFE ratio", str(cond), c_min), {})[label] = ratio
            values.setdefault(("accuracy change (pp)", str(cond), c_min), {})[label] = 100 * (acc - base_acc)
    return {key: pd.Series(v, dtype=float) for key, v in values.items()}


def across_runs(results):
    """Per model and condition over runs: mean ± SD and a one-sample t-test (ln NFE ratio = 0, accuracy change = 0)."""
    rows = []
    for (quantity, cond, c_min), v in run_values(results).items():
        x = np.log(v) if quantity == "NFE ratio" else v
        tests = against_reference(x, 0.0)
        for model, pooled in pool_runs(v).iterrows():
            rows.append({"quantity": quantity, "condition / model": f"{cond} / {model}", "c": c_min,
                         "runs": int(pooled["n_runs"]), "mean": pooled["mean"], "SD": pooled["sd"],
                         "t": tests.loc[model, "t"], "p": tests.loc[model, "p"]})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index("condition / model")


def check_table(results, var):
    rows = {}
    for label, ds in results.items():
        if var not in ds:
            continue
        for b in ds["block"].values:
            rows[f"{label} / {b}"] = {f"c={c:g}": float(v) for c, v in
                                      zip(ds["contrast"].values, ds[var].sel(block=b).values)}
    df = pd.DataFrame(rows).T
    df.index.name = "model / block"
    return df


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.n_images < 1 or args.batch_size < 1 or args.n_check < 0:
        raise ConfigError("--n-images and --batch-size must be >= 1 and --n-check >= 0")
    contrasts = check_contrasts(args.contrast)
    start = time.time()
    paths, missing = resolve_checkpoints(args.checkpoint, DEFAULTS, REPO, analysis="contrast")
    runs = load_models(paths, require_ode=True, analysis="contrast")
    data, cache = {}, {}
    for label, model, info in runs:
        name = dataset_of(info, model)
        data[label] = load_eval_images(name, split=args.split, n_images=args.n_images, root=args.data_root,
                                       cache=cache) + (name,)
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))

    results = {}
    for label, model, info in runs:
        images, labels, indices, _, name = data[label]
        t0 = time.time()
        ds = compute_contrast(model, images, labels, contrasts, args.conditions, batch_size=args.batch_size,
                              first_step=args.first_step, info=info)
        if args.n_check:
            check = compute_rescaling_check(model, images[:args.n_check], contrasts, batch_size=args.batch_size)
            ds = ds.assign(f_change=check["f_change"], identity_error=check["identity_error"])
        ds = ds.assign_coords(image=indices)
        ds.attrs.update({"dataset": name, "split": args.split})
        results[label] = ds
        log(f"{label}: {images.shape[0]} images, {len(contrasts)} contrasts x {len(args.conditions)} conditions "
            f"in {time.time() - t0:.1f} s")
    save_results(results, out / "contrast.nc", overwrite=args.overwrite)
    save_figure(plot_contrast(results), out / "contrast.png", dpi=120)

    report = Report("Contrast robustness and NFE of ODE blocks")
    report.section("Inputs")
    report.table(pd.DataFrame([{"model": label, "checkpoint": info["path"], "epoch": info.get("epoch", ""),
                                "dataset": data[label][4], "images": int(data[label][0].shape[0]),
                                "batch size": args.batch_size, "solver": model.config.solver,
                                "rtol": model.config.rtol, "atol": model.config.atol, "T": model.config.T}
                               for label, model, info in runs]).set_index("model"), "Checkpoints")
    if missing:
        report.text("Default checkpoints not found (skipped): " + ", ".join(f"`{m}`" for m in missing) + ".")
    report.bullets([
        "`naive`: images c·x, nothing else changed.",
        "`block1-T`: images c·x, the first ODE block integrates over [0, c·T] (the paper's T_j = cT).",
        "`all-blocks`: images c·x, the inputs of blocks 2 and 3 multiplied by c (block 1's input scales with the "
        "image), every ODE block over [0, c·T], tolerances unchanged — the condition of the paper's claim of total "
        "forward NFE 102 → 60 at c = 0.06 with < 0.5 % accuracy loss (per evaluation batch, summed over blocks).",
        "`atol-control`: `all-blocks` with every block's atol × c (rtol unchanged): equal accuracy relative to the "
        "signal. If the NFE saving disappears here, it came from the loosened absolute tolerance, not from the "
        "dynamics.",
        "Initial step: " + ("torchdiffeq's heuristic (the model's own setting). It is not scale-covariant (its "
                            "second-derivative estimate grows as 1/c²), so even `atol-control` saves about one step "
                            "per block at small c; `--first-step` removes this." if args.first_step is None else
                            f"fixed at {args.first_step:g} × each block's integration interval in every condition "
                            "(c = 1 included), so `atol-control` is scale-covariant up to the dynamics.")])
    report.text("Mechanism tested: GroupNorm makes f nearly scale-free, f(c·h, t) ≈ f(h, t); if f did not depend on "
                "t, h_c(s) = c·h(s/c) would solve the block from c·h(0), so integrating to c·T gives c·h(T), which "
                "the next GroupNorm maps back. f sees t through its t-channel, so the identity is approximate; the "
                "rescaling check measures both parts on each block's own input: `f_change` = ‖f(c·h0, 0) − f(h0, "
                "0)‖/‖f(h0, 0)‖ and `identity_error` = ‖h_c(cT)/c − h(T)‖/‖h(T)‖ (solved at atol·c; medians over "
                f"{args.n_check} images).")
    report.section("The paper's claim").table(claim_table(results),
                                              f"Total forward NFE per batch and accuracy at c = 1 and c = {contrasts[-1]:g}")
    pooled = across_runs(results)
    if not pooled.empty:
        report.section("Across training runs").table(
            pooled, "Per model over its runs (seeds), at the smallest contrast: total forward NFE as a ratio to "
                    "c = 1 (t-test of its log against 0) and accuracy change in percentage points (t-test against "
                    "0); the SD is over runs; NaN: fewer than two runs")
    report.section("Accuracy").table(by_condition(results, "accuracy", 100), "Accuracy (%)")
    report.table(by_condition(results, "agreement", 100), "Predictions equal to the unchanged model's (%)")
    report.figure("contrast.png", "Accuracy, first-block NFE and total NFE per batch against contrast")
    report.section("NFE").table(by_condition(results, "nfe_total"), "Forward NFE per batch, all ODE blocks (mean)")
    report.table(per_block_nfe(results), "Forward NFE per batch of each ODE block (mean over batches)")
    if args.n_check:
        report.section("Rescaling check")
        report.table(check_table(results, "f_change"), "f_change: scale-freeness of f at t = 0 (median)")
        report.table(check_table(results, "identity_error"), "identity_error: ‖h_c(cT)/c − h(T)‖/‖h(T)‖ (median)")
    failed = [(label, str(cond), float(c), str(ds["failed"].sel(condition=cond, contrast=c).values))
              for label, ds in results.items() for cond in ds["condition"].values for c in ds["contrast"].values
              if str(ds["failed"].sel(condition=cond, contrast=c).values)]
    if failed:
        report.section("Failed solves").bullets([f"{m} / {cond} / c={c:g}: {msg}" for m, cond, c, msg in failed])
    write_report(report, out)

    for label, ds in results.items():
        c = float(ds["contrast"].values[-1])
        parts = []
        for cond in ds["condition"].values:
            parts.append(f"{cond} {100 * float(ds['accuracy'].sel(condition=cond, contrast=c)):.1f}% / "
                         f"NFE {float(ds['nfe_total'].sel(condition=cond, contrast=c)):.0f}")
        base = float(ds["nfe_total"].sel(condition=ds["condition"].values[0], contrast=1.0)) \
            if 1.0 in ds["contrast"].values else float("nan")
        log(f"  {label}: c=1 {100 * ds.attrs['accuracy_unchanged']:.1f}% / NFE {base:.0f}; at c={c:g}: "
            + "; ".join(parts))
    log(f"  wrote contrast.nc, contrast.png and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
