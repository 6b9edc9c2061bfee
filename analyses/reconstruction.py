"""Image reconstruction from frozen block-3 features: DCN vs ODE-Net vs ResNet (paper Table 2b, App. A.4).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/reconstruction.py

takes the bundled DCN-ODE, ODE-Net and ResNet-blocks checkpoints that exist
(``<bundle>/<model>/seed*/last.pt`` of ``--bundle``), freezes each classifier up to its third block, trains a fresh
decoder of the same block kind on its block-3 features of the first ``--n-train`` images of the checkpoint's own
training split, measures the reconstruction MSE of every one of the first ``--n-images`` images of the
checkpoint's validation split (same ``val_size`` and ``split_seed`` as in training: images the classifier never
trained on) and writes ``results/reconstruction/``.  Any checkpoints, a longer decoder training::

    .venv/bin/python analyses/reconstruction.py --checkpoint a.pt b.pt --steps 2000 --batch-size 128 \\
        --n-train 20000 --out results/reconstruction_long --overwrite

See :mod:`dcnbio.extract.reconstruction` for the decoder (untied: fresh blocks, encoder truly frozen), the
centre crop the 4×-upsampled output is compared with, and the units.  The MSE is in the normalised input space
(images standardised per channel with the dataset mean and SD, as the classifier sees them).

Why the defaults (``--n-train 512 --steps 120 --batch-size 32``): they keep the default run to minutes on a CPU
(``benchmarks/RESULTS.md``). The decoders' losses are still falling at the end, so the comparison is one at a
*fixed training budget* (the same for every model), not at convergence — the report shows the training losses.

Outputs (in ``--out``): ``reconstruction.nc`` (one group per checkpoint: per-image MSE, the mean-image baseline,
the training loss, example reconstructions, provenance), ``reconstructions.png`` (originals and each model's
reconstructions of a few validation images), ``report.md``/``report.tex`` (mean ± SD MSE per model, the paper's
ordering as the claim, paired Wilcoxon signed-rank tests on the same images).
"""
import sys
import time
from pathlib import Path

import numpy as np

from dcnbio.script import analysis_parser, held_out_splits, open_runs
from dcnbio.extract.reconstruction import compare_models, compute_reconstruction
from dcnbio.plots import plot_reconstructions
from dcnbio.reports.reconstruction_report import reconstruction_report, split_attrs, summary_lines
from dcnbio.cli import at_least, user_errors
from dcnbio.errors import ConfigError, DataError
from dcnbio.io import prepare_output_dir, save_figure, save_results, write_report

REPO = Path(__file__).resolve().parents[1]
MODELS = ("dcn-ode", "odenet", "resnet-blocks")


def build_parser():
    p = analysis_parser("reconstruction", __doc__, MODELS, what="classifier checkpoint(s)")
    p.add_argument("--n-images", type=at_least(1), default=1000,
                   help="first N images of the validation split (evaluation)")
    p.add_argument("--n-train", type=at_least(1), default=512,
                   help="first N images of the training split (decoder training)")
    p.add_argument("--steps", type=at_least(1), default=120, help="decoder SGD steps")
    p.add_argument("--batch-size", type=at_least(1), default=32, help="images per decoder step")
    p.add_argument("--lr", type=float, default=0.1, help="decoder learning rate (SGD, momentum 0.9; x0.1 at 50%% "
                                                         "and 80%% of the steps)")
    p.add_argument("--seed", type=at_least(0), default=0, help="decoder initialisation and batch order")
    p.add_argument("--eval-batch-size", type=at_least(1), default=128, help="images per encoder/decoder forward pass")
    p.add_argument("--n-examples", type=at_least(0), default=8, help="validation images whose reconstructions are kept")
    p.add_argument("--data-root", default=None, help="dataset directory (default: the standard places)")
    return p


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    if not (np.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(f"--lr must be a number > 0, got {args.lr:g}")
    start = time.time()
    runs, missing = open_runs(args, MODELS, REPO, analysis="reconstruction")
    cache = {}
    data = {label: held_out_splits(info, model, args.n_train, args.n_images, root=args.data_root, cache=cache)
            for label, model, info in runs}
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))

    results, seconds = {}, {}
    for label, model, info in runs:
        d = data[label]
        t0 = time.time()
        ds = compute_reconstruction(model, d["train"][0], d["val"][0], steps=args.steps, batch_size=args.batch_size,
                                    lr=args.lr, seed=args.seed, eval_batch_size=args.eval_batch_size,
                                    n_examples=args.n_examples, train_index=d["train"][1], eval_index=d["val"][1],
                                    info=info)
        ds.attrs.update(split_attrs(d))
        results[label] = ds
        seconds[label] = time.time() - t0
        print(f"{label}: decoder {args.steps} steps on {ds.attrs['n_train']} images, MSE {ds.attrs['mean_mse']:.4f} "
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

    report = reconstruction_report(results, comparisons, [(label, info, data[label]) for label, _, info in runs],
                                   seconds, steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                   n_train=args.n_train, n_images=args.n_images, n_examples=args.n_examples,
                                   figure_note=figure_note, missing=missing)
    write_report(report, out)

    print("\n".join(summary_lines(comparisons)))
    print(f"  wrote reconstruction.nc, reconstructions.png and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
