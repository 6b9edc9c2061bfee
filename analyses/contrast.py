"""Contrast robustness and NFE savings of ODE blocks: inputs c·x under four conditions (paper §3.3, Fig. 4b).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/contrast.py

evaluates the bundled DCN-ODE, DCN σ_ji and ODE-Net checkpoints that exist (``<bundle>/<model>/seed*/last.pt``
of ``--bundle``) on the first 100 test images (every finished seed; ``--n-images 1000`` for the paper-grade run)
at contrasts c = 1, 0.5, 0.25, 0.125, 0.06 and writes ``results/contrast/``.
Other checkpoints, contrasts or conditions::

    .venv/bin/python analyses/contrast.py --checkpoint ckpt.pt --contrast 1 0.1 --conditions naive all-blocks \\
        --n-images 256 --out results/contrast_small --overwrite

Conditions (:mod:`dcnbio.extract.contrast`): ``naive`` (T fixed), ``block1-T`` (block 1 integrates to c·T, the
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
import sys
import time
from pathlib import Path

from dcnbio.script import add_eval_options, analysis_parser, eval_data, open_runs
from dcnbio.extract.contrast import (CONDITIONS, DEFAULT_CONTRASTS, check_contrasts, compute_contrast,
                                      compute_rescaling_check)
from dcnbio.plots import plot_contrast
from dcnbio.reports.contrast_report import contrast_report, summary_lines
from dcnbio.cli import at_least, user_errors
from dcnbio.io import prepare_output_dir, save_figure, save_results, write_report

REPO = Path(__file__).resolve().parents[1]
MODELS = ("dcn-ode", "dcn-sigma-ji", "odenet")


def build_parser():
    p = analysis_parser("contrast", __doc__, MODELS, what="checkpoint(s) with ODE blocks")
    add_eval_options(p, n_images_help="first N images of the evaluation split (1000 for the paper-grade run)")
    p.add_argument("--contrast", type=float, nargs="+", default=list(DEFAULT_CONTRASTS), help="contrasts c > 0")
    p.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    p.add_argument("--first-step", type=float, default=None, metavar="FRACTION",
                   help="initial step of adaptive solvers as a fraction of each block's interval, in every condition "
                        "(default: torchdiffeq's heuristic, which is not scale-covariant)")
    p.add_argument("--n-check", type=at_least(0), default=32,
                   help="images for the rescaling check (f scale-freeness, h_c(cT) = c h(T)); 0 skips it")
    return p


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    contrasts = check_contrasts(args.contrast)
    start = time.time()
    runs, missing = open_runs(args, MODELS, REPO, analysis="contrast", require_ode=True)
    data = eval_data(runs, args)
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
        print(f"{label}: {images.shape[0]} images, {len(contrasts)} contrasts x {len(args.conditions)} conditions "
            f"in {time.time() - t0:.1f} s")
    save_results(results, out / "contrast.nc", overwrite=args.overwrite)
    save_figure(plot_contrast(results), out / "contrast.png", dpi=120)

    inputs = [(label, info, model, data[label][4], int(data[label][0].shape[0])) for label, model, info in runs]
    report = contrast_report(results, inputs, batch_size=args.batch_size, first_step=args.first_step,
                             n_check=args.n_check, missing=missing)
    write_report(report, out)

    print("\n".join(summary_lines(results)))
    print(f"  wrote contrast.nc, contrast.png and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
