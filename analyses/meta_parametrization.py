"""Meta-parametrized DCNs: σ(t) and α(t) over the depth of each ODE block, with accuracy (paper Tables 3–4).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/meta_parametrization.py --checkpoint CKPT [CKPT ...]

Without ``--checkpoint`` it looks for bundled ``data/checkpoints/<model>/seed*/last.pt`` of ``dcn-sigma-t``,
``dcn-sigma-t2`` and ``dcn-sigma-alpha-t``. One seed of each is bundled, trained with (at CPU scale; 70 steps, so
they are barely past chance — see ``data/checkpoints/README.md``)::

    dcnbio train --model dcn-sigma-t --width 0.25 --dataset fashion-mnist --subset 100 --val-size 500 \\
        --epochs 10 --no-adjoint --no-test --seeds 1 --out data/checkpoints/dcn-sigma-t

Outputs (in ``--out``, default ``results/meta_parametrization``):

``meta.nc``
    One netCDF group per model (:func:`dcnbio.analysis.meta.compute_meta_curves`: ``sigma``/``log2_sigma (layer,
    time)``, ``alpha_rms (layer, time, basis)``) and ``<model>-init`` for the ``init.pt`` beside the checkpoint
    when there is one (the control: what training changed).
``meta_curves.png``
    σ(t) per layer and the mean RMS α(t) per derivative order (dashed: init).
``report.md``, ``report.tex``
    σ at t = 0, T/2, T per layer, its change over the block in octaves, and test accuracy beside Table 4's.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dcnbio.analysis.common import evaluate
from dcnbio.script import ScriptParser, dataset_of, load_eval_images, load_models, resolve_checkpoints
from dcnbio.analysis.meta import META_MODELS, compute_meta_curves, plot_meta_curves
from dcnbio.analysis.report import Report
from dcnbio.checkpoint import load_checkpoint
from dcnbio.cli import user_errors
from dcnbio.errors import CheckpointError, ConfigError
from dcnbio.io import save_figure, write_report
from dcnbio.io import prepare_output_dir, save_results

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = tuple(f"data/checkpoints/{m}/seed*/last.pt" for m in META_MODELS)
TRAIN_COMMAND = ("dcnbio train --model dcn-sigma-t --width 0.25 --dataset fashion-mnist --subset 100 --val-size 500 "
                 "--epochs 10 --no-adjoint --no-test --seeds 1 --out data/checkpoints/dcn-sigma-t")
#: Table 4 of the paper (CIFAR-10 validation accuracy, %, mean ± SD over 3 runs), for context only.
PAPER_TABLE4 = {"dcn-sigma-t": "89.97 ± 0.30", "dcn-sigma-t2": "89.93 ± 0.28", "dcn-sigma-alpha-t": "89.88 ± 0.25"}


def build_parser():
    p = ScriptParser(prog="analyses/meta_parametrization.py", description=__doc__.split("\n")[0],
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=None, metavar="PATH",
                   help="meta-parametrized checkpoint(s); default: the bundled " + ", ".join(DEFAULTS))
    p.add_argument("--out", default="results/meta_parametrization", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.add_argument("--n-images", type=int, default=1000, help="first N images of the evaluation split (accuracy)")
    p.add_argument("--batch-size", type=int, default=128, help="images per solve")
    p.add_argument("--n-times", type=int, default=41, help="points of the grid over [0, T]")
    p.add_argument("--split", choices=("test", "val"), default="test", help="evaluation split")
    p.add_argument("--data-root", default=None, help="dataset directory (default: the standard places)")
    return p


def log(msg):
    print(msg, flush=True)


def resolve(paths):
    try:
        return resolve_checkpoints(paths, DEFAULTS, REPO, analysis="meta-parametrization")
    except CheckpointError:
        raise CheckpointError(f"no meta-parametrized checkpoint is bundled ({', '.join(DEFAULTS)}); make one with "
                              f"`{TRAIN_COMMAND}` or pass --checkpoint PATH") from None


def init_curves(info, model, times):
    """Curves of the ``init.pt`` beside the checkpoint (None when absent, itself, or of another configuration)."""
    path = os.path.join(os.path.dirname(os.path.abspath(info["path"])), "init.pt")
    if info.get("kind") == "init" or not os.path.isfile(path) or os.path.abspath(info["path"]) == path:
        return None
    init_model, init_info = load_checkpoint(path)
    if init_model.config != model.config:
        return None
    return compute_meta_curves(init_model, times, info=init_info)


def sigma_table(curves):
    rows = []
    for label, (ds, init) in curves.items():
        T = float(ds["time"].values[-1])
        for k, layer in enumerate(ds["layer"].values):
            s = ds["sigma"].isel(layer=k)
            row = {"model / layer": f"{label} / {layer}", "σ(0)": float(s.sel(time=0.0, method="nearest")),
                   "σ(T/2)": float(s.sel(time=T / 2, method="nearest")), "σ(T)": float(s.isel(time=-1)),
                   "log2 σ(T)/σ(0) (oct)": float(ds["log2_sigma"].isel(layer=k)[-1] - ds["log2_sigma"].isel(layer=k)[0])}
            if init is not None:
                row["init: log2 σ(T)/σ(0) (oct)"] = float(init["log2_sigma"].isel(layer=k)[-1]
                                                          - init["log2_sigma"].isel(layer=k)[0])
            rows.append(row)
    return pd.DataFrame(rows).set_index("model / layer")


def alpha_table(curves):
    rows = []
    for label, (ds, _) in curves.items():
        if not np.any(ds["alpha"].values == "linear-t"):
            continue
        for o in np.unique(ds["basis_order"].values):
            a = ds["alpha_rms"].isel(basis=np.flatnonzero(ds["basis_order"].values == o)).mean(("layer", "basis"))
            rows.append({"model / order": f"{label} / {int(o)}", "RMS α(0)": float(a[0]), "RMS α(T)": float(a[-1]),
                         "ratio": float(a[-1] / a[0])})
    return pd.DataFrame(rows).set_index("model / order") if rows else pd.DataFrame()


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.n_images < 1 or args.batch_size < 1 or args.n_times < 2:
        raise ConfigError("--n-images and --batch-size must be >= 1 and --n-times >= 2")
    start = time.time()
    paths, missing = resolve(args.checkpoint)
    runs = load_models(paths)
    curves, data, cache = {}, {}, {}
    for label, model, info in runs:  # curves first: a model that is not meta-parametrized fails before any output
        times = np.linspace(0.0, float(model.config.T), args.n_times)
        curves[label] = (compute_meta_curves(model, times, info=info), init_curves(info, model, times))
        name = dataset_of(info, model)
        data[label] = load_eval_images(name, split=args.split, n_images=args.n_images, root=args.data_root,
                                       cache=cache) + (name,)
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))

    accuracy = {}
    for label, model, info in runs:
        images, labels, _, _, name = data[label]
        t0 = time.time()
        res = evaluate(model, images, labels, batch_size=args.batch_size)
        nfe = float(res["nfe"].sum("block").mean("batch")) if res.sizes["block"] else 0.0
        accuracy[label] = {"model": model.config.name, "dataset": name, "images": int(images.shape[0]),
                           "accuracy (%)": 100 * res.attrs["accuracy"], "forward NFE per batch": nfe,
                           "paper Table 4 (CIFAR-10, %)": PAPER_TABLE4.get(model.config.name, "")}
        ds, init = curves[label]
        ds.attrs.update({"dataset": name, "split": args.split, "accuracy": res.attrs["accuracy"],
                         "n_images": int(images.shape[0])})
        log(f"{label}: accuracy {100 * res.attrs['accuracy']:.1f}% on {images.shape[0]} images "
            f"({time.time() - t0:.1f} s)")
    groups = {}
    for label, (ds, init) in curves.items():
        groups[label] = ds
        if init is not None:
            groups[f"{label}-init"] = init
    save_results(groups, out / "meta.nc", overwrite=args.overwrite)
    save_figure(plot_meta_curves(curves), out / "meta_curves.png", dpi=120)

    report = Report("Meta-parametrized SRF filters: σ(t) and α(t)")
    report.section("Inputs")
    acc = pd.DataFrame(accuracy).T
    acc.index.name = "checkpoint"
    acc.insert(0, "path", [info["path"] for _, _, info in runs])
    acc.insert(1, "init control", ["yes" if curves[label][1] is not None else "no" for label, _, _ in runs])
    report.table(acc, f"Checkpoints and {args.split} accuracy (Table 4's CIFAR-10 values for context only)")
    if missing:
        report.text("Default checkpoints not found (skipped): " + ", ".join(f"`{m}`" for m in missing) + ".")
    report.text("σ is in pixels of each layer's input map, evaluated on a grid over [0, T] "
                "(t' = 0.5·clip(t, −0.5, 2.5)). α(t) is summarised per basis function as the RMS over the out × in "
                "filter pairs; static α gives flat lines.")
    report.section("σ(t)").table(sigma_table(curves), "σ at the start, middle and end of each block")
    report.figure("meta_curves.png", "σ(t) per layer (top) and mean RMS α(t) per derivative order (bottom); "
                                     "dashed: init")
    at = alpha_table(curves)
    if len(at):
        report.section("α(t)").table(at, "Mean RMS α per derivative order at t = 0 and t = T")
    write_report(report, out)
    for label, (ds, _) in curves.items():
        d = (ds["log2_sigma"][:, -1] - ds["log2_sigma"][:, 0]).values
        log(f"  {label}: log2 σ(T)/σ(0) per layer {np.array2string(d, precision=2)} oct")
    log(f"  wrote meta.nc, meta_curves.png and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
