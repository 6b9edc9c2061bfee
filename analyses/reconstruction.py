"""Image reconstruction from frozen block-3 features: DCN vs ODE-Net vs ResNet (paper Table 2b, App. A.4).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/reconstruction.py

takes the bundled DCN-ODE, ODE-Net and ResNet-blocks checkpoints that exist
(``data/checkpoints/<model>/seed*/last.pt``), freezes each classifier up to its third block, trains a fresh
decoder of the same block kind on its block-3 features of the first ``--n-train`` images of the checkpoint's own
training split, measures the reconstruction MSE of every one of the first ``--n-images`` images of the
checkpoint's validation split (same ``val_size`` and ``split_seed`` as in training: images the classifier never
trained on) and writes ``results/reconstruction/``.  Any checkpoints, a longer decoder training::

    .venv/bin/python analyses/reconstruction.py --checkpoint a.pt b.pt --steps 2000 --batch-size 128 \\
        --n-train 20000 --out results/reconstruction_long --overwrite

See :mod:`dcnbio.analysis.reconstruction` for the decoder (untied: fresh blocks, encoder truly frozen), the
centre crop the 4×-upsampled output is compared with, and the units.  The MSE is in the normalised input space
(images standardised per channel with the dataset mean and SD, as the classifier sees them).

Why the defaults (``--n-train 512 --steps 120 --batch-size 32``): on a 2-core CPU one decoder step of an ODE
decoder (two dopri5 solves forward and their backpropagation) costs about 0.5 s at batch 32 for the width-0.25
bundled models, and encoding costs about 30 ms per image for DCN-ODE, so these defaults keep the whole default
run to about four minutes with one thread.  120 steps of 32 images are 7.5 passes over 512 images; the decoders'
losses are still falling at the end, so the comparison is one at a *fixed training budget* (the same for every
model), not at convergence — the report shows the training losses.  Raise ``--steps`` on a faster machine.

Outputs (in ``--out``): ``reconstruction.nc`` (one group per checkpoint: per-image MSE, the mean-image baseline,
the training loss, example reconstructions, provenance), ``reconstructions.png`` (originals and each model's
reconstructions of a few validation images), ``report.md``/``report.tex`` (mean ± SD MSE per model, the paper's
ordering as the claim, paired Wilcoxon signed-rank tests on the same images).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcnbio.script import ScriptParser, dataset_of, load_models, resolve_checkpoints
from dcnbio.analysis.reconstruction import compare_models, compute_reconstruction, plot_reconstructions
from dcnbio.analysis.report import Report
from dcnbio.analysis.runs import compare_models as compare_runs, pool_runs
from dcnbio.cli import user_errors
from dcnbio.errors import CheckpointError, ConfigError, DataError
from dcnbio.io import save_figure, write_report
from dcnbio.io import prepare_output_dir, save_results

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = tuple(f"data/checkpoints/{m}/seed*/last.pt" for m in ("dcn-ode", "odenet", "resnet-blocks"))
#: Paper Table 2b (CIFAR-10, mean ± SD over 3 runs, the paper's units): lower is better.
CLAIM = (("dcn-ode", "DCN-ODE", 17.1, 0.3), ("odenet", "ODE-Net", 20.2, 1.3), ("resnet-blocks", "ResNet-blocks", 21.0, 0.4))
ALPHA = 0.05


def build_parser():
    p = ScriptParser(prog="analyses/reconstruction.py", description=__doc__.split("\n")[0],
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=None, metavar="PATH",
                   help="classifier checkpoint(s); default: the bundled " + ", ".join(DEFAULTS))
    p.add_argument("--out", default="results/reconstruction", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.add_argument("--n-images", type=int, default=1000, help="first N images of the validation split (evaluation)")
    p.add_argument("--n-train", type=int, default=512, help="first N images of the training split (decoder training)")
    p.add_argument("--steps", type=int, default=120, help="decoder SGD steps")
    p.add_argument("--batch-size", type=int, default=32, help="images per decoder step")
    p.add_argument("--lr", type=float, default=0.1, help="decoder learning rate (SGD, momentum 0.9; x0.1 at 50%% "
                                                         "and 80%% of the steps)")
    p.add_argument("--seed", type=int, default=0, help="decoder initialisation and batch order")
    p.add_argument("--eval-batch-size", type=int, default=128, help="images per encoder/decoder forward pass")
    p.add_argument("--n-examples", type=int, default=8, help="validation images whose reconstructions are kept")
    p.add_argument("--data-root", default=None, help="dataset directory (default: the standard places)")
    return p


def log(msg):
    print(msg, flush=True)


def split_of(info):
    """``(val_size, split_seed)`` the checkpoint was trained with (its validation split)."""
    config = info.get("train_config") or {}
    if "val_size" not in config or "split_seed" not in config:
        raise CheckpointError(f"{info.get('path', 'checkpoint')} does not record its validation split "
                              "(train_config val_size and split_seed); its held-out images cannot be found")
    val_size, split_seed = int(config["val_size"]), int(config["split_seed"])
    if val_size < 1:
        raise CheckpointError(f"{info.get('path', 'checkpoint')} was trained without a validation split "
                              "(val_size 0): no training-split image is held out from it")
    return val_size, split_seed


def load_split(name, split, n, *, val_size, split_seed, root, cache):
    """The first ``n`` normalised images of a split and their indices in the official training file."""
    from dcnbio.data import load_dataset

    key = (name, split, val_size, split_seed, root)
    if key not in cache:
        cache[key] = load_dataset(name, split, root, val_size=val_size, split_seed=split_seed, download=False)
    data = cache[key]
    n = min(n, len(data))
    images, _ = data.batch(np.arange(n))
    return images, data.indices[:n].numpy().astype(np.int64)


def fmt_p(p):
    return "n/a" if not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")


def describe_pair(row):
    """One plain sentence about a paired comparison."""
    a, b, n = row["a"], row["b"], int(row["n"])
    if n < 2 or not np.isfinite(row["p_value"]):
        return f"{a} vs {b}: {n} shared image(s), no test possible."
    lower, higher, frac = (a, b, row["fraction_a_lower"]) if row["median_difference"] <= 0 else \
        (b, a, 1 - row["fraction_a_lower"])
    verdict = (f"p = {fmt_p(row['p_value'])} < {ALPHA:g}: on these images the difference is systematic, not "
               "image-to-image noise" if row["p_value"] < ALPHA else
               f"p = {fmt_p(row['p_value'])} ≥ {ALPHA:g}: these images show no systematic difference")
    return (f"**{lower}** reconstructs with lower MSE than **{higher}** on {100 * frac:.0f} % of {n} shared images "
            f"(mean {row['mean_a']:.4g} vs {row['mean_b']:.4g} for {a} vs {b}; median difference "
            f"{row['median_difference']:+.3g}); Wilcoxon signed-rank {verdict}.")


def run_values(results):
    """One value per training run: its mean per-image MSE (keyed by run label, pooled by model)."""
    return pd.Series({label: float(ds["mse"].mean()) for label, ds in results.items()}, dtype=float)


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    for flag in ("n_images", "n_train", "steps", "batch_size", "eval_batch_size"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.n_examples < 0:
        raise ConfigError(f"--n-examples must be >= 0, got {args.n_examples}")
    if not (np.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(f"--lr must be a number > 0, got {args.lr:g}")
    start = time.time()
    paths, missing = resolve_checkpoints(args.checkpoint, DEFAULTS, REPO, analysis="reconstruction")
    runs = load_models(paths, analysis="reconstruction")
    data, cache = {}, {}
    for label, model, info in runs:
        name = dataset_of(info, model)
        val_size, split_seed = split_of(info)
        kw = dict(val_size=val_size, split_seed=split_seed, root=args.data_root, cache=cache)
        train = load_split(name, "train", args.n_train, **kw)
        val = load_split(name, "val", args.n_images, **kw)
        if np.intersect1d(train[1], val[1]).size:  # cannot happen with load_dataset; the claim rests on it
            raise DataError(f"{label}: training and validation images overlap")
        data[label] = {"dataset": name, "val_size": val_size, "split_seed": split_seed, "train": train, "val": val}
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))

    results, seconds = {}, {}
    for label, model, info in runs:
        d = data[label]
        t0 = time.time()
        ds = compute_reconstruction(model, d["train"][0], d["val"][0], steps=args.steps, batch_size=args.batch_size,
                                    lr=args.lr, seed=args.seed, eval_batch_size=args.eval_batch_size,
                                    n_examples=args.n_examples, train_index=d["train"][1], eval_index=d["val"][1],
                                    info=info)
        ds.attrs.update({"dataset": d["dataset"], "val_size": d["val_size"], "split_seed": d["split_seed"],
                         "image_index": "index in the official training file",
                         "train_split": "first n_train images of the checkpoint's training split",
                         "eval_split": "first n_images images of the checkpoint's validation split"})
        results[label] = ds
        seconds[label] = time.time() - t0
        log(f"{label}: decoder {args.steps} steps on {ds.attrs['n_train']} images, MSE {ds.attrs['mean_mse']:.4f} "
            f"on {ds.attrs['n_images']} validation images (mean image {ds.attrs['mean_mse_mean_image']:.4f}) in "
            f"{seconds[label]:.1f} s")
    save_results(results, out / "reconstruction.nc", overwrite=args.overwrite)
    figure_note = None
    if args.n_examples:
        try:
            save_figure(plot_reconstructions(results), out / "reconstructions.png", dpi=130)
        except DataError as exc:
            figure_note = f"No figure: {exc}."
    comparisons = compare_models(results)

    report = Report("Image reconstruction from frozen block-3 features")
    report.section("Inputs")
    report.table(pd.DataFrame([{
        "model": label, "checkpoint": info["path"], "epoch": info.get("epoch", ""), "step": info.get("step", ""),
        "dataset": data[label]["dataset"], "val_size / split_seed": f"{data[label]['val_size']} / "
                                                                   f"{data[label]['split_seed']}",
        "train images": results[label].attrs["n_train"], "val images": results[label].attrs["n_images"],
        "encoder params": results[label].attrs["encoder_parameters"],
        "decoder params": results[label].attrs["decoder_parameters"]}
        for label, model, info in runs]).set_index("model"), "Checkpoints, images and networks")
    if missing:
        report.text("Default checkpoints not found (skipped): " + ", ".join(f"`{m}`" for m in missing) + ".")
    first = next(iter(results.values()))
    report.text(
        f"Encoder: the trained classifier up to and including block 3, frozen (eval mode, no gradient; its "
        f"block-3 features are computed once and every encoder parameter was checked to be bit-identical after "
        f"decoder training). Decoder: block(C3) → bilinear ×2 → 1×1 conv C3→C2 → block(C2) → bilinear ×2 → GN → "
        f"act → 1×1 conv, with fresh (untied) blocks of the classifier's own kind and width. Its output "
        f"({first.attrs['crop']}×{first.attrs['crop']} px for {first.attrs['image_size']}×"
        f"{first.attrs['image_size']} px inputs) is compared with the central crop of the image. Training: SGD, lr "
        f"{args.lr:g}, momentum 0.9, ×0.1 after 50 % and 80 % of {args.steps} steps of {args.batch_size} images, "
        f"seed {args.seed}, on the first {args.n_train} images of each checkpoint's training split; evaluation on "
        f"the first {args.n_images} images of its validation split (images the classifier never trained on).")
    report.text("**Units.** MSE is the mean over pixels and channels of the squared difference in the normalised "
                "input space (images standardised per channel with the dataset's mean and SD): an MSE of 1 is an "
                "error of one training-set SD per pixel. *Mean image* is the MSE of the trivial decoder that "
                "always outputs the mean training image; *ratio* = MSE / mean-image MSE (0 is perfect, 1 is no "
                "better than the mean). The ± is the SD over images (the paper's ± is over 3 training runs).")

    report.section("Reconstruction error")
    rows = []
    for label, ds in results.items():
        loss = ds["loss"].values
        tenth = max(1, len(loss) // 10)
        rows.append({"model": label, "MSE mean": float(ds["mse"].mean()), "MSE SD": float(ds["mse"].std(ddof=1))
                     if ds.sizes["image"] > 1 else float("nan"), "MSE median": float(ds["mse"].median()),
                     "mean image": float(ds["mse_mean_image"].mean()),
                     "ratio": float(ds["mse"].mean() / ds["mse_mean_image"].mean()),
                     "train loss, first 10 %": float(loss[:tenth].mean()),
                     "train loss, last 10 %": float(loss[-tenth:].mean()),
                     "decoder NFE/step": float(ds["nfe"].mean()), "time (s)": seconds[label]})
    report.table(pd.DataFrame(rows).set_index("model"), "Per-image MSE on validation images (normalised units)")
    if figure_note:
        report.text(figure_note)
    elif args.n_examples:
        report.figure("reconstructions.png", "Validation images (centre crop, top) and each model's reconstruction; "
                                             "each column on the grey scale of its original")

    report.section("The paper's claim")
    report.text("Claim (Table 2b, CIFAR-10, 3 runs, the paper's units): " + " < ".join(
        f"{disp} {m:g} ± {s:g}" for _, disp, m, s in CLAIM) + " — DCN-ODE features reconstruct best. The paper's "
        "units come from min-max rescaled outputs compared with unnormalised images, so only the ordering can be "
        "compared with the numbers here.")
    by_model = {}
    for ds in results.values():
        by_model.setdefault(ds.attrs["model_name"], []).append(float(ds["mse"].mean()))
    present = [(name, disp) for name, disp, _, _ in CLAIM if name in by_model]
    if len(present) >= 2:
        means = {name: float(np.mean(by_model[name])) for name, _ in present}
        observed = sorted(present, key=lambda p: means[p[0]])
        same = [p[0] for p in observed] == [p[0] for p in present]
        report.text("Observed (mean over images, and over checkpoints of the same model): " + " < ".join(
            f"{disp} {means[name]:.4g}" for name, disp in observed) + f". **The paper's ordering is "
            f"{'reproduced' if same else 'not reproduced'}** on these checkpoints"
            f"{'' if len(present) == len(CLAIM) else ' (only ' + ', '.join(d for _, d in present) + ' present)'}.")
        report.text("Checkpoints far from the paper's training (100 epochs on CIFAR-10 at full width; see the step "
                    "column above) make this a statement about these checkpoints, not a test of the claim at "
                    "scale.")
    else:
        report.text("Fewer than two of the paper's models are present: the ordering cannot be checked.")

    report.section("Across training runs")
    per_run = run_values(results)
    pooled = pool_runs(per_run).drop(columns="runs")
    report.table(pooled, "Mean per-image MSE of each run, pooled per model: mean ± SD over runs (seeds), as the "
                         "paper's ± (NaN SD: one run)")
    if pooled.shape[0] > 1:
        report.table(compare_runs(per_run), "Differences of the model means over runs (Welch's t-test; NaN: "
                                              "fewer than two runs of a model)")

    report.section("Paired tests on the same images")
    if comparisons.sizes["pair"]:
        table = comparisons.drop_vars(["a", "b"]).to_dataframe()
        table = table.rename(columns={"n": "images", "mean_a": "mean MSE a", "mean_b": "mean MSE b",
                                      "median_difference": "median (a − b)", "fraction_a_lower": "share a lower",
                                      "statistic": "W", "p_value": "p"})
        report.table(table, "Two-sided Wilcoxon signed-rank tests of per-image MSE differences (a − b) on shared "
                            "validation images")
        report.bullets([describe_pair(r) for _, r in comparisons.to_dataframe().iterrows()])
        report.text("The tests take images as the sampling units for one trained classifier and one trained decoder "
                    "per model. They say whether the difference is consistent across images, not whether another "
                    "training run (classifier or decoder seed) would give the same order; that needs several seeds "
                    "per model.")
    else:
        report.text("Only one checkpoint: nothing to compare.")
    write_report(report, out)

    for _, r in comparisons.to_dataframe().iterrows():
        log(f"  {r['a']} vs {r['b']}: median difference {r['median_difference']:+.4f}, share a lower "
            f"{100 * r['fraction_a_lower']:.0f} %, Wilcoxon p = {fmt_p(r['p_value'])}")
    log(f"  wrote reconstruction.nc, reconstructions.png and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
