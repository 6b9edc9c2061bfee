"""Pattern completion: do block states of a centre-masked image converge to those of the intact image? (paper §3.2,
Fig. 3c, 4a, 6, 7)

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/pattern_completion.py

compares the bundled DCN-ODE, DCN σ_ji, ODE-Net and ResNet-blocks checkpoints that exist
(``<bundle>/<model>/seed*/last.pt`` of ``--bundle``, every finished seed) on the first 100 test images of the
dataset each was trained on, and writes ``results/pattern_completion/``.  The paper-grade run, D(t) over 1000
images, is ``--n-images 1000`` (about ten times longer; ``REPRODUCTION.md``).  Any checkpoints, other
image counts, other masks::

    .venv/bin/python analyses/pattern_completion.py --checkpoint a.pt b.pt --n-images 200 --masks 0 4 8 \\
        --out results/completion_small --overwrite

Outputs (in ``--out``):

``completion.nc``
    One netCDF group per model (:func:`dcnbio.extract.completion.compute_pattern_completion`): D(t) per image,
    block, mask size and normaliser, its mean and SD, masked and intact predictions, NFE per batch and the example
    feature maps; open with :func:`dcnbio.io.open_results`.
``completion_D.png``
    Mean D(t) ± SD per block for the example mask size; rows are the three normalisers (Fig. 4a bottom, Fig. 7).
``masked_accuracy.png``
    Accuracy against mask size (Fig. 3c).
``examples_<model>.png``
    One channel of block 1 for the first images, intact, masked and their difference over t (Fig. 4a, 6).
``report.md``, ``report.tex``: the tables (:mod:`dcnbio.reports.completion_report`).

The paper zeroes pixels ("masks have zero pixel values"); images here are normalised, so ``--fill black`` (default)
writes the normalised value of a zero pixel, ``−mean/std``, and ``--fill mean`` writes 0 (the dataset mean).
The paper never defines D's normaliser A; see :mod:`dcnbio.extract.completion` for the three reported here.
"""
import sys
import time
from pathlib import Path

from dcnbio.script import add_eval_options, analysis_parser, eval_data, open_runs
from dcnbio.extract.completion import check_mask_sizes, compute_pattern_completion, mask_fill
from dcnbio.plots import plot_differences, plot_examples, plot_masked_accuracy
from dcnbio.reports.completion_report import completion_report, summary_lines
from dcnbio.cli import at_least, user_errors
from dcnbio.errors import ConfigError
from dcnbio.io import prepare_output_dir, save_figure, save_results, write_report

REPO = Path(__file__).resolve().parents[1]
MODELS = ("dcn-ode", "dcn-sigma-ji", "odenet", "resnet-blocks")


def build_parser():
    p = analysis_parser("pattern_completion", __doc__, MODELS, what="checkpoint(s) to compare")
    add_eval_options(p, n_images_help="first N images of the evaluation split (1000 for the paper-grade run)")
    p.add_argument("--masks", type=at_least(0), nargs="+", default=[2, 4, 6, 8, 10, 12, 14],
                   help="mask sides n (pixels)")
    p.add_argument("--fill", choices=("black", "mean"), default="black",
                   help="mask value: a zero pixel (black, the paper's) or the dataset mean (0 in normalised units)")
    p.add_argument("--n-times", type=at_least(2), default=21, help="points of the time grid over [0, T]")
    p.add_argument("--example-mask", type=at_least(0), default=6,
                   help="mask size of the D(t) figure and example panels")
    p.add_argument("--n-examples", type=at_least(0), default=2, help="images shown in the example panels")
    return p


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    if args.example_mask not in args.masks:
        raise ConfigError(f"--example-mask {args.example_mask} is not among --masks {args.masks}")
    runs, missing = open_runs(args, MODELS, REPO, analysis="pattern completion")
    data = eval_data(runs, args, check=lambda images: check_mask_sizes(args.masks, *images.shape[-2:]))
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
        print(f"{label}: {images.shape[0]} images, {len(args.masks)} masks in {time.time() - t0:.1f} s")
    save_results(results, out / "completion.nc", overwrite=args.overwrite)

    save_figure(plot_differences(results, args.example_mask), out / "completion_D.png", dpi=120)
    save_figure(plot_masked_accuracy(results), out / "masked_accuracy.png", dpi=120)
    for label, ds in (results.items() if args.n_examples else ()):
        save_figure(plot_examples(ds), out / f"examples_{label}.png", dpi=110)

    inputs = [(label, info, model, data[label][4], int(data[label][0].shape[0])) for label, model, info in runs]
    report = completion_report(results, inputs, example_mask=args.example_mask, fill=args.fill, split=args.split,
                               n_times=args.n_times, n_examples=args.n_examples, missing=missing)
    write_report(report, out)

    print("\n".join(summary_lines(results, args.example_mask)))
    print(f"  wrote completion.nc, figures and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
