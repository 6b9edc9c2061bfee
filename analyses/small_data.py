"""Small data (paper Table 2a): is the DCN more accurate than its baselines when training images are few?

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/small_data.py

evaluates every finished bundled run (``<bundle>/small-data/<model>/n<size>/seed<S>/last.pt`` of ``--bundle``: dcn-ode,
odenet and resnet-blocks trained on 10, 20 and 50 Fashion-MNIST images per class, seeds 1–3; recipe in that
directory's README) on the first 1000 test images — the same images for every run — and writes
``results/small_data/``.  Train a grid first (only the runs that are missing, with the training core and the same
recipe) and analyse it::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/small_data.py --train --runs-dir runs/small-data \\
        --sizes 10 20 50 100 --seeds 1 2 3 4 5 --out results/small_data_more

Explicit runs: ``--checkpoint A/last.pt B/last.pt ...`` (each must record its subset, i.e. be trained with
``--subset``).  Paper (CIFAR-10, 52/103/512/1024 images per class): DCN-ODE 44.5/54.2/75.5/79.7 % vs ODE-Net
41.7/48.6/71.7/77.4 % vs ResNet-blocks 39.8/49.0/70.4/76.8 % — the claim is the DCN's advantage at small sizes.
The verdict comes from a quasi-binomial GLM ``accuracy ~ C(model) * np.log(size)`` at the smallest size; see
:mod:`dcnbio.stats.small_data`.

Outputs (in ``--out``): ``small_data.nc`` (``(model, size, seed)``: accuracy, correct and evaluated images, epochs,
steps, NFE; ``(model, size)``: mean, SD, seeds; the fitted coefficients), ``small_data.png`` (accuracy against
images per class, log x, mean ± SD; the paper's table beside it), ``report.md``/``report.tex``.
"""
import sys
import time
from pathlib import Path

from dcnbio.plots import plot_small_data
from dcnbio.stats.small_data import MODEL_ORDER
from dcnbio.reports.small_data_report import compute_small_data, evaluate_runs, small_data_report, summary_lines
from dcnbio.cli import at_least, say, user_errors
from dcnbio.io import prepare_output_dir, save_dataset, save_figure, write_report
from dcnbio.script import (BUNDLES, analysis_parser, check_small_data_options, find_small_data_runs,
                           load_eval_images, load_small_data_runs, select_small_data_runs)
from dcnbio.train.grid import DEFAULT_EPOCHS_BUDGET, RECIPES, plan_runs, recipe_differences, train_missing

REPO = Path(__file__).resolve().parents[1]
RUNS_DIR = "data/checkpoints/small-data"
DEFAULT_PATTERN = "<bundle>/small-data/*/n*/seed*/last.pt"
DEFAULT_SIZES = (10, 20, 50)
DEFAULT_SEEDS = (1, 2, 3)


def build_parser():
    p = analysis_parser("small_data", __doc__, f"every finished {DEFAULT_PATTERN}", what="run checkpoints (last.pt)")
    p.add_argument("--train", action="store_true",
                   help="train the missing runs of the grid (--models x --sizes x --seeds) in --runs-dir, then "
                        "analyse exactly that grid")
    p.add_argument("--runs-dir", default=RUNS_DIR, help="grid root: <runs-dir>/<model>/n<size>/seed<S>/ (--train)")
    p.add_argument("--models", nargs="+", default=None,
                   help=f"grid models (--train; default {' '.join(MODEL_ORDER)}) or a selection of the bundled runs")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="training images per class (--train; default 10 20 50) or a selection of the bundled runs")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds (--train; default 1 2 3) or a selection of the bundled runs")
    p.add_argument("--recipe", choices=RECIPES, default="budget", help="training recipe of the grid (--train): "
                   "budget = equal image passes; plateau = until the training loss plateaus (dcnbio.train.grid)")
    p.add_argument("--width", type=float, default=0.25, help="width multiplier of trained runs (--train)")
    p.add_argument("--epochs-budget", type=at_least(1), default=DEFAULT_EPOCHS_BUDGET,
                   help="image passes per class of a trained run: epochs = max(1, budget // size) (--train)")
    p.add_argument("--batch-size", type=at_least(1), default=32, help="SGD batch of trained runs (--train)")
    p.add_argument("--eval-batch-size", type=at_least(1), default=128, help="images per evaluation batch")
    p.add_argument("--n-images", type=at_least(1), default=1000, help="first N test images (the same for every run)")
    p.add_argument("--data-root", default=None, help="dataset directory (default: the standard places)")
    return p


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_small_data_options(train=args.train, checkpoint=args.checkpoint, models=args.models, sizes=args.sizes,
                             seeds=args.seeds, width=args.width, epochs_budget=args.epochs_budget,
                             batch_size=args.batch_size, n_images=args.n_images, eval_batch_size=args.eval_batch_size)
    start = time.time()
    plan, explicit, source = None, True, "the given checkpoints"
    if args.train:
        plan = plan_runs(args.runs_dir, args.models or MODEL_ORDER, args.sizes or DEFAULT_SIZES,
                         args.seeds or DEFAULT_SEEDS, recipe=args.recipe, width=args.width,
                         epochs_budget=args.epochs_budget,
                         batch_size=args.batch_size, data_root=args.data_root)
        source = f"the grid in `{args.runs_dir}`"
    else:  # validate every given run before anything is written
        paths = args.checkpoint
        if not paths:
            pattern = DEFAULT_PATTERN.replace("<bundle>", BUNDLES[args.bundle])
            explicit, source = False, f"the bundled runs (`{pattern}`)"
            paths = find_small_data_runs(REPO, pattern)
        runs, skipped = load_small_data_runs(paths, explicit=explicit, repo=REPO, compute=args.compute)
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))
    if plan is not None:
        t0 = time.time()
        paths = train_missing(plan, log=say)
        say(f"training done in {time.time() - t0:.0f} s")
        runs, skipped = load_small_data_runs(paths, explicit=True, repo=REPO, compute=args.compute)
    # a selection of the bundled set; the runs of --train and --checkpoint are taken whole
    keep = {} if explicit else dict(models=args.models, sizes=args.sizes, seeds=args.seeds)
    runs, dataset = select_small_data_runs(runs, skipped=skipped, **keep)
    images, labels, indices, _ = load_eval_images(dataset, split="test", n_images=args.n_images, root=args.data_root)
    records = evaluate_runs([(model, run) for model, _, run in runs], images, labels,
                            batch_size=args.eval_batch_size, log=say)
    study = compute_small_data(records, dataset=dataset, indices=indices, eval_batch_size=args.eval_batch_size,
                               differences=recipe_differences([run["train_config"] for *_, run in runs]))
    save_dataset(study.results, out / "small_data.nc", overwrite=args.overwrite)
    save_figure(plot_small_data(study.table, study.fit), out / "small_data.png", dpi=120)
    write_report(small_data_report(study, records, source=source, skipped=skipped), out)

    say("\n" + "\n".join(summary_lines(study)))
    say(f"wrote small_data.nc, small_data.png and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
