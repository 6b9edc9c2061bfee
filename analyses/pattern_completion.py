"""Pattern completion: do block states of a centre-masked image converge to those of the intact image? (paper §3.2,
Fig. 3c, 4a, 6, 7)

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/pattern_completion.py

compares the bundled DCN-ODE, DCN σ_ji, ODE-Net and ResNet-blocks checkpoints that exist
(``data/checkpoints/<model>/seed*/last.pt``, every finished seed) on the first 100 test images of the dataset each
was trained on (a few minutes on 2 cores), and writes ``results/pattern_completion/``.  The paper-grade run, D(t)
over 1000 images, is ``--n-images 1000`` (about ten times longer; ``REPRODUCTION.md``).  Any checkpoints, other
image counts, other masks::

    .venv/bin/python analyses/pattern_completion.py --checkpoint a.pt b.pt --n-images 200 --masks 0 4 8 \\
        --out results/completion_small --overwrite

Outputs (in ``--out``):

``completion.nc``
    One netCDF group per model (:func:`dcnbio.analysis.completion.compute_pattern_completion`): D(t) per image,
    block, mask size and normaliser, its mean and SD, masked and intact predictions, NFE per batch and the example
    feature maps; open with :func:`dcnbio.io.open_results`.
``completion_D.png``
    Mean D(t) ± SD per block for the example mask size; rows are the three normalisers (Fig. 4a bottom, Fig. 7).
``masked_accuracy.png``
    Accuracy against mask size (Fig. 3c).
``examples_<model>.png``
    One channel of block 1 for the first images, intact, masked and their difference over t (Fig. 4a, 6).
``report.md``, ``report.tex``
    The tables.

The paper zeroes pixels ("masks have zero pixel values"); images here are normalised, so ``--fill black`` (default)
writes the normalised value of a zero pixel, ``−mean/std``, and ``--fill mean`` writes 0 (the dataset mean).
The paper never defines D's normaliser A; see :mod:`dcnbio.analysis.completion` for the three reported here.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcnbio.script import ScriptParser, dataset_of, load_eval_images, load_models, resolve_checkpoints
from dcnbio.analysis.completion import (NORMALIZER_LABELS, NORMALIZERS, check_mask_sizes, compute_pattern_completion,
                                        mask_fill, plot_differences, plot_examples,
                                        plot_masked_accuracy)
from dcnbio.analysis.report import Report
from dcnbio.analysis.runs import against_reference, compare_models, pool_runs
from dcnbio.cli import user_errors
from dcnbio.errors import ConfigError
from dcnbio.io import save_figure, write_report
from dcnbio.io import prepare_output_dir, save_results

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = tuple(f"data/checkpoints/{m}/seed*/last.pt" for m in ("dcn-ode", "dcn-sigma-ji", "odenet", "resnet-blocks"))


def build_parser():
    p = ScriptParser(prog="analyses/pattern_completion.py", description=__doc__.split("\n")[0],
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=None, metavar="PATH",
                   help="checkpoint(s) to compare; default: the bundled " + ", ".join(DEFAULTS))
    p.add_argument("--out", default="results/pattern_completion", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.add_argument("--n-images", type=int, default=100,
                   help="first N images of the evaluation split (default 100; 1000 for the paper-grade run)")
    p.add_argument("--batch-size", type=int, default=128, help="images per solve (NFE are per batch)")
    p.add_argument("--masks", type=int, nargs="+", default=[2, 4, 6, 8, 10, 12, 14], help="mask sides n (pixels)")
    p.add_argument("--fill", choices=("black", "mean"), default="black",
                   help="mask value: a zero pixel (black, the paper's) or the dataset mean (0 in normalised units)")
    p.add_argument("--n-times", type=int, default=21, help="points of the time grid over [0, T]")
    p.add_argument("--example-mask", type=int, default=6, help="mask size of the D(t) figure and example panels")
    p.add_argument("--n-examples", type=int, default=2, help="images shown in the example panels")
    p.add_argument("--split", choices=("test", "val"), default="test", help="evaluation split")
    p.add_argument("--data-root", default=None, help="dataset directory (default: the standard places)")
    return p


def log(msg):
    print(msg, flush=True)


def accuracy_table(results):
    rows = {}
    for label, ds in results.items():
        row = {"intact": 100 * float(ds["accuracy_intact"])}
        row.update({f"n={int(n)}": 100 * float(a) for n, a in zip(ds["mask"].values, ds["accuracy"].values)})
        rows[label] = row
    df = pd.DataFrame(rows).T
    df.index.name = "model"
    return df


def d_table(results, mask):
    """Mean D at block input and output, the ratio of means, and the share of images whose D decreased."""
    rows = []
    for label, ds in results.items():
        for b in ds["block"].values:
            row = {"model / block": f"{label} / {b}"}
            for norm in NORMALIZERS:
                d = ds["D"].sel(mask=mask, block=b, normalizer=norm)
                first, last = d.isel(time=0).values.astype(float), d.isel(time=-1).values.astype(float)
                row[f"{norm}: D(0)"] = float(np.mean(first))
                row[f"{norm}: D(end)"] = float(np.mean(last))
                row[f"{norm}: ratio"] = float(np.mean(last) / np.mean(first)) if np.mean(first) else np.nan
                if norm != "per_element":  # amplitude_0 and per_element decrease for the same images
                    row[f"{norm}: share decreased"] = float(np.mean(last < first))
            rows.append(row)
    return pd.DataFrame(rows).set_index("model / block")


def ratio_vs_mask(results, block="block1"):
    rows = {}
    for label, ds in results.items():
        for norm in ("amplitude_t", "amplitude_0"):
            m = ds["D_mean"].sel(block=block, normalizer=norm)
            ratio = (m.isel(time=-1) / m.isel(time=0)).values
            rows[f"{label} / {norm}"] = {f"n={int(n)}": float(r) for n, r in zip(ds["mask"].values, ratio)}
    df = pd.DataFrame(rows).T
    df.index.name = "model / normaliser"
    return df


def run_values(results, mask, block="block1"):
    """One value per training run: block D(end)/D(0) (ratio of image means) per normaliser and accuracies (%)."""
    values = {}
    for label, ds in results.items():
        d = ds["D_mean"].sel(mask=mask, block=block)
        for norm in ("amplitude_t", "amplitude_0"):
            first, last = float(d.sel(normalizer=norm)[0]), float(d.sel(normalizer=norm)[-1])
            values.setdefault(f"{block} D(end)/D(0), {norm}", {})[label] = last / first if first else np.nan
        values.setdefault("accuracy intact (%)", {})[label] = 100 * float(ds["accuracy_intact"])
        values.setdefault(f"accuracy n={mask} (%)", {})[label] = 100 * float(ds["accuracy"].sel(mask=mask))
    return {name: pd.Series(v, dtype=float) for name, v in values.items()}


def across_runs(results, mask, block="block1"):
    """Tables over training runs: mean ± SD per model, the one-sample test of log D-ratio = 0, Welch comparisons."""
    values = run_values(results, mask, block)
    pooled = pd.DataFrame({name: pool_runs(v).apply(
        lambda r: f"{r['mean']:.3g} ± {r['sd']:.2g}" if r["n_runs"] > 1 else f"{r['mean']:.3g}", axis=1)
        for name, v in values.items()})
    pooled.insert(0, "runs", pool_runs(next(iter(values.values())))["n_runs"])
    pooled.index.name = "model"
    tests = []
    for norm in ("amplitude_t", "amplitude_0"):
        logs = np.log(values[f"{block} D(end)/D(0), {norm}"])
        res = against_reference(logs, 0.0)
        res.insert(0, "normaliser", norm)
        tests.append(res)
    tests = pd.concat(tests).rename(columns={"mean": "mean log ratio", "sd": "SD log ratio"})
    comparisons = pd.concat({name: compare_models(values[name]) for name in
                             (f"{block} D(end)/D(0), amplitude_0", f"accuracy n={mask} (%)")},
                            names=["quantity"]).reset_index(level="quantity")
    return pooled, tests, comparisons


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.n_images < 1 or args.batch_size < 1:
        raise ConfigError("--n-images and --batch-size must be >= 1")
    start = time.time()
    paths, missing = resolve_checkpoints(args.checkpoint, DEFAULTS, REPO, analysis="pattern completion")
    runs = load_models(paths)
    data, cache = {}, {}
    for label, model, info in runs:  # everything validated before the output directory is created
        name = dataset_of(info, model)
        images, labels, indices, dinfo = load_eval_images(name, split=args.split, n_images=args.n_images,
                                                          root=args.data_root, cache=cache)
        check_mask_sizes(args.masks, *images.shape[-2:])
        if args.example_mask not in args.masks:
            raise ConfigError(f"--example-mask {args.example_mask} is not among --masks {args.masks}")
        data[label] = (images, labels, indices, dinfo, name)
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))

    results = {}
    for label, model, info in runs:
        images, labels, indices, dinfo, name = data[label]
        t0 = time.time()
        ds = compute_pattern_completion(model, images, labels, args.masks, fill=mask_fill(dinfo, args.fill),
                                        n_times=args.n_times, batch_size=args.batch_size, indices=indices,
                                        n_examples=args.n_examples, example_mask=args.example_mask, info=info)
        ds.attrs.update({"dataset": name, "split": args.split, "fill_kind": args.fill})
        results[label] = ds
        log(f"{label}: {images.shape[0]} images, {len(args.masks)} masks in {time.time() - t0:.1f} s")
    save_results(results, out / "completion.nc", overwrite=args.overwrite)

    save_figure(plot_differences(results, args.example_mask), out / "completion_D.png", dpi=120)
    save_figure(plot_masked_accuracy(results), out / "masked_accuracy.png", dpi=120)
    for label, ds in results.items():
        if args.n_examples:
            save_figure(plot_examples(ds), out / f"examples_{label}.png", dpi=110)

    report = Report("Pattern completion in block feature maps")
    report.section("Inputs")
    inputs = pd.DataFrame([{"model": label, "checkpoint": info["path"], "kind": info.get("kind", ""),
                            "epoch": info.get("epoch", ""), "dataset": data[label][4], "split": args.split,
                            "images": int(data[label][0].shape[0]), "solver": model.config.solver,
                            "T": model.config.T if results[label].attrs["block_type"] == "ode" else np.nan}
                           for label, model, info in runs]).set_index("model")
    report.table(inputs, "Checkpoints and evaluation images")
    if missing:
        report.text("Default checkpoints not found (skipped): " + ", ".join(f"`{m}`" for m in missing) + ".")
    fill_text = ("a zero pixel value, i.e. −mean/std in normalised units (the paper's zero masks)"
                 if args.fill == "black" else "the dataset mean, 0 in normalised units")
    report.text(f"Centred n×n masks (rows/columns (H − n)//2 …) filled with {fill_text}. States h(t) are read from "
                f"the solve at {args.n_times} times over [0, T] (ResNet blocks: 0 = input, 1 = output). Masked "
                "images are solved in the same batches as their intact versions (so n = 0 gives D = 0 exactly); for n > 0 "
                "the adaptive solver steps differently for the two batches, so D carries the solver error "
                "(≈ the tolerance, 1e-3 relative) as a floor.")
    report.bullets([f"`{k}`: {v}" for k, v in NORMALIZER_LABELS.items()] +
                   ["`amplitude_0` and `per_element` differ by a constant per image, so their D(end)/D(0) per "
                    "image are equal; `amplitude_t` divides by an amplitude that grows with t under GroupNorm "
                    "dynamics, so a falling `amplitude_t` D alone is no evidence of completion."])
    report.section("Masked accuracy").table(accuracy_table(results), "Accuracy (%) against mask size n")
    report.figure("masked_accuracy.png", "Accuracy against mask size (n = 0: intact)")
    report.section(f"D(t) for the {args.example_mask}×{args.example_mask} mask")
    report.table(d_table(results, args.example_mask),
                 f"Mean D at the block input (t = 0) and output (t = T; ResNet: 1), ratio of the means, and the share "
                 f"of images whose D decreased (n = {args.example_mask})")
    report.figure("completion_D.png", "Mean D(t) ± SD over images per block; rows: normaliser")
    report.section("Across training runs")
    pooled, tests, comparisons = across_runs(results, args.example_mask)
    report.text("Each training run contributes one value (its mean over images); the ± here is the SD over runs "
                "(seeds) of a model, which is what a claim about the model needs, unlike the SD over images above. "
                "With three runs a t-test needs |t| > 4.30 for p < 0.05.")
    report.table(pooled, f"Mean ± SD over runs (n = {args.example_mask} mask)")
    report.table(tests, "Does D change within block 1 across runs? Two-sided one-sample t-test of "
                        "ln(D(end)/D(0)) = 0 (a negative mean: D falls, as the paper claims; NaN: fewer than two runs)")
    report.table(comparisons, "Differences between models across runs (Welch's t-test)")
    report.section("Completion against mask size")
    report.table(ratio_vs_mask(results), "Block 1: mean D(end) / mean D(0) against mask size")
    if args.n_examples:
        report.section("Example feature maps")
        for label in results:
            report.figure(f"examples_{label}.png", f"{label}: block 1, the channel the mask changes most at t = 0")
    write_report(report, out)

    for label, ds in results.items():
        d = ds["D_mean"].sel(mask=args.example_mask, block="block1")
        ratios = ", ".join(f"{norm} {float(d.sel(normalizer=norm)[-1] / d.sel(normalizer=norm)[0]):.3g}"
                           for norm in ("amplitude_t", "amplitude_0"))
        log(f"  {label}: accuracy intact {100 * float(ds['accuracy_intact']):.1f}%, n={int(ds['mask'].values[-1])} "
            f"{100 * float(ds['accuracy'].values[-1]):.1f}%; block1 D(end)/D(0) at n={args.example_mask}: {ratios}")
    log(f"  wrote completion.nc, figures and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
