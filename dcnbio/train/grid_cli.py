"""``dcnbio grid`` / ``python -m dcnbio.train.grid_cli``: train the missing runs of a small-data grid.

Every (model, images per class, seed) of ``--models × --sizes × --seeds`` is one ``dcnbio train`` run of the
recipe ``--recipe`` (:mod:`dcnbio.train.grid`) in ``RUNS_DIR/<model>/n<size>/seed<S>/``: a finished run is
kept, an unfinished one resumed, a missing one trained; a run trained with another recipe is refused before
anything is trained.  SIGTERM stops at a safe point (``last.pt`` written, exit status 143); the same command
continues.  The grid of the full-data bundle, one lane per core::

    OMP_NUM_THREADS=1 dcnbio grid --recipe plateau --runs-dir data/checkpoints/full/small-data \\
        --models dcn-ode --sizes 10 20 --seeds 1 2 3

``analyses/small_data.py`` evaluates a grid (and can train one itself with ``--train``).
"""
import argparse
import sys

from ..cli import HelpFormatter, say, user_errors
from .grid import DEFAULT_EPOCHS_BUDGET, RECIPES, plan_runs, train_missing


def build_parser():
    """The ``dcnbio grid`` argument parser."""
    p = argparse.ArgumentParser(prog="dcnbio grid", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--recipe", choices=RECIPES, required=True, help="training recipe (dcnbio.train.grid)")
    p.add_argument("--runs-dir", required=True, help="grid root: RUNS_DIR/<model>/n<size>/seed<S>/")
    p.add_argument("--models", nargs="+", required=True, help="registered model names")
    p.add_argument("--sizes", type=int, nargs="+", required=True, help="training images per class")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds (images drawn and initialisation)")
    p.add_argument("--width", type=float, default=0.25, help="width multiplier")
    p.add_argument("--epochs-budget", type=int, default=DEFAULT_EPOCHS_BUDGET,
                   help="image passes per class (the budget recipe's epochs = budget // size)")
    p.add_argument("--batch-size", type=int, default=32, help="SGD batch")
    p.add_argument("--data-root", default=None, help="dataset directory (default: the standard places)")
    p.add_argument("--save-every", type=int, default=20, help="write last.pt every N steps as well as per epoch")
    p.add_argument("--quiet", action="store_true", help="one line per run instead of one per epoch")
    return p


@user_errors
def main(argv=None):
    """``dcnbio grid`` (``argv`` as for :func:`build_parser`); returns the exit status."""
    import dataclasses

    args = build_parser().parse_args(argv)
    plan = plan_runs(args.runs_dir, args.models, args.sizes, args.seeds, recipe=args.recipe, width=args.width,
                     epochs_budget=args.epochs_budget, batch_size=args.batch_size, data_root=args.data_root)
    plan = [(dataclasses.replace(config, save_every=args.save_every), d, state) for config, d, state in plan]
    train_missing(plan, log=say, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
