"""Meta-parametrized DCNs: σ(t) and α(t) over the depth of each ODE block, with accuracy (paper Tables 3–4).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/meta_parametrization.py --checkpoint CKPT [CKPT ...]

Without ``--checkpoint`` it looks for bundled ``<bundle>/<model>/seed*/last.pt`` (``--bundle``) of ``dcn-sigma-t``,
``dcn-sigma-t2`` and ``dcn-sigma-alpha-t``. In the full-data bundle (``--bundle full``)
``bash data/checkpoints/retrain.sh`` trains them with the full-data CPU recipe (one seed of each, three of
``dcn-sigma-t`` as the budget allows; queued, not yet trained: until then the analysis names them as missing).
The subset-trained bundle (``--bundle subset``) has one seed of each that saw 70 SGD steps and is barely past
chance (``data/checkpoints/README.md``), trained with::

    dcnbio train --model dcn-sigma-t --width 0.25 --dataset fashion-mnist --subset 100 --val-size 500 \\
        --epochs 10 --no-adjoint --no-test --seeds 1 --out data/checkpoints/dcn-sigma-t

Outputs (in ``--out``, default ``results/meta_parametrization``):

``meta.nc``
    One netCDF group per model (:func:`dcnbio.extract.meta.compute_meta_curves`: ``sigma``/``log2_sigma (layer,
    time)``, ``alpha_rms (layer, time, basis)``) and ``<model>-init`` for the ``init.pt`` beside the checkpoint
    when there is one (the control: what training changed).
``meta_curves.png``
    σ(t) per layer and the mean RMS α(t) per derivative order (dashed: init).
``report.md``, ``report.tex``
    σ at t = 0, T/2, T per layer, its change over the block in octaves, and test accuracy beside Table 4's.
"""
import sys
import time
from pathlib import Path

import numpy as np

from dcnbio.extract.common import evaluate
from dcnbio.script import add_eval_options, analysis_parser, eval_data, open_runs, with_init
from dcnbio.extract.meta import META_MODELS, compute_meta_curves
from dcnbio.plots import plot_meta_curves
from dcnbio.reports.meta_report import meta_report
from dcnbio.cli import at_least, user_errors
from dcnbio.io import save_figure, write_report
from dcnbio.io import prepare_output_dir, save_results

REPO = Path(__file__).resolve().parents[1]
MODELS = tuple(META_MODELS)
TRAIN_COMMAND = ("dcnbio train --model dcn-sigma-t --width 0.25 --dataset fashion-mnist --subset 100 --val-size 500 "
                 "--epochs 10 --no-adjoint --no-test --seeds 1 --out data/checkpoints/dcn-sigma-t")
#: Table 4 of the paper (CIFAR-10 validation accuracy, %, mean ± SD over 3 runs), for context only.
PAPER_TABLE4 = {"dcn-sigma-t": "89.97 ± 0.30", "dcn-sigma-t2": "89.93 ± 0.28", "dcn-sigma-alpha-t": "89.88 ± 0.25"}


def build_parser():
    p = analysis_parser("meta_parametrization", __doc__, MODELS, what="meta-parametrized checkpoint(s)")
    add_eval_options(p, n_images=1000, n_images_help="first N images of the evaluation split (accuracy)",
                     batch_help="images per solve")
    p.add_argument("--n-times", type=at_least(2), default=41, help="points of the grid over [0, T]")
    return p


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    runs, missing = open_runs(args, MODELS, REPO, analysis="meta-parametrization", make=TRAIN_COMMAND)
    inits = {label: (m, i) for label, state, m, i in with_init(runs) if state == "init"}
    curves = {}
    for label, model, info in runs:  # curves first: a model that is not meta-parametrized fails before any output
        times = np.linspace(0.0, float(model.config.T), args.n_times)
        init = inits.get(label)
        curves[label] = (compute_meta_curves(model, times, info=info),
                         None if init is None else compute_meta_curves(init[0], times, info=init[1]))
    data = eval_data(runs, args)
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
        print(f"{label}: accuracy {100 * res.attrs['accuracy']:.1f}% on {images.shape[0]} images "
            f"({time.time() - t0:.1f} s)")
    groups = {**{label: ds for label, (ds, _) in curves.items()},
              **{f"{label}-init": init for label, (_, init) in curves.items() if init is not None}}
    save_results(groups, out / "meta.nc", overwrite=args.overwrite)
    save_figure(plot_meta_curves(curves), out / "meta_curves.png", dpi=120)

    inits = ["yes" if curves[label][1] is not None else "no" for label, _, _ in runs]
    report = meta_report(curves, accuracy, [info["path"] for _, _, info in runs], inits, split=args.split,
                         missing=missing)
    write_report(report, out)
    for label, (ds, _) in curves.items():
        d = (ds["log2_sigma"][:, -1] - ds["log2_sigma"][:, 0]).values
        print(f"  {label}: log2 σ(T)/σ(0) per layer {np.array2string(d, precision=2)} oct")
    print(f"  wrote meta.nc, meta_curves.png and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
