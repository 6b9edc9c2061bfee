"""``dcnbio train`` / ``python -m dcnbio.train``: train one or several seeds of a registered model.

Examples
--------
CPU-scale σ_ji DCN on Fashion-MNIST (the bundled main-job model)::

    dcnbio train --model dcn-sigma-ji --width 0.25 --dataset fashion-mnist --subset 500 \\
        --val-size 1000 --epochs 30 --no-adjoint --seeds 1 --out data/checkpoints/dcn-sigma-ji

Paper scale on a GPU (CIFAR-10, 100 epochs, adjoint, dopri5 at 1e-3)::

    dcnbio train --model dcn-ode --dataset cifar10 --device cuda --seeds 1 2 3 --out runs/dcn-ode

Several processes: ``torchrun --nproc-per-node 2 -m dcnbio.train ...`` (only rank 0 writes).

Each seed writes ``OUT/seed<S>/`` (see :mod:`dcnbio.train.loop`); ``OUT/runs.csv`` and
``OUT/runs.json`` index every run in ``OUT`` with its final metrics.
"""
import argparse
import csv
import io
import json
import os
import sys

from ..cli import HelpFormatter, user_errors
from ..datasets import DATASETS
from ..errors import ConfigError
from ..core.layers.ode import INTEGRATORS, SOLVERS
from ..core.layers.srf import FORMULATIONS
from .. import fast  # noqa: F401  (registers the formulations and the integrator the options name)
from ..core.models import list_models


def build_parser():
    """The ``dcnbio train`` argument parser."""
    p = argparse.ArgumentParser(prog="dcnbio train", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help=f"one of: {', '.join(list_models())}")
    p.add_argument("--width", type=float, default=1.0, help="multiplier of the stage widths 32/64/128")
    p.add_argument("--dataset", default="cifar10", help=f"one of: {', '.join(DATASETS)}")
    p.add_argument("--data-root", default=None,
                   help="where to look for (and download) the dataset first (default: the standard places, then "
                        "~/.cache/dcnbio)")
    p.add_argument("--no-download", dest="download", action="store_false", help="never download data")
    p.add_argument("--subset", type=int, default=None,
                   help="images per class (small-data regime; default: every training image)")
    p.add_argument("--val-size", type=int, default=5000, help="training images held out for validation")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: 100, ×10/×5/×2 for ≤520/1030/5120 training images (App. A.2)")
    p.add_argument("--plateau-patience", type=int, default=0, metavar="K",
                   help="choose the schedule's length by measurement: drop the learning rate once validation "
                        "accuracy has not beaten its earlier best by --plateau-delta for K epochs (epoch P), then "
                        "the paper's proportions (second drop at 1.75 P, end at 2.5 P); --epochs is the cap; "
                        "0: the fixed schedule of --epochs.  With --val-size 0 the training loss is measured instead")
    p.add_argument("--plateau-delta", type=float, default=0.005,
                   help="progress: a validation-accuracy gain, or (with --val-size 0) a training-loss decrease in nats")
    p.add_argument("--plateau-window", type=int, default=0, metavar="STEPS",
                   help="with --val-size 0: compare means of the training loss over windows of the epochs that make "
                        "up STEPS SGD steps, K windows of patience (0: one epoch per window)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--sigma-lr-scale", type=float, default=1.0,
                   help="multiplier of the learning rate of σ parameters (1 = paper)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no translation/flip augmentation")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds S; default: seed 0)")
    seeds.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds, one directory each")
    p.add_argument("--out", required=True, help="output directory (one seed<S>/ per seed)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--solver", default=None, help=f"ODE solver ({', '.join(SOLVERS)}); default dopri5")
    p.add_argument("--rtol", type=float, default=None, help="default 1e-3")
    p.add_argument("--atol", type=float, default=None, help="default 1e-3")
    p.add_argument("--step-size", type=float, default=None, help="step size of fixed-grid solvers (default: T / 10)")
    adj = p.add_mutually_exclusive_group()
    adj.add_argument("--adjoint", dest="adjoint", action="store_true", default=None,
                     help="adjoint backpropagation (paper default)")
    adj.add_argument("--no-adjoint", dest="adjoint", action="store_false",
                     help="backpropagate through the solver (faster, more memory)")
    p.add_argument("--seminorm", action="store_true", default=None, help="seminorm adjoint error control")
    p.add_argument("--integrator", choices=list(INTEGRATORS), default=None,
                   help="who integrates dopri5 solves without the adjoint: torchdiffeq (default) or dcnbio's "
                        "own dopri5 (same steps, faster; dcnbio.fast.dopri5)")
    p.add_argument("--formulation", choices=[f for f in FORMULATIONS if f != "reference"], default=None,
                   help="how SRF convolutions are computed (the same function; dcnbio.fast.formulations); "
                        "default dense")
    p.add_argument("--tune", action="store_true",
                   help="measure the fastest formulation, convolution backend and CELU per shape on this machine "
                        "(dcnbio.fast.tuning; runs are then not bit-identical)")
    p.add_argument("--sigma-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="clamp every σ into [LOW, HIGH] pixels (default: no clamp)")
    p.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps (0: each epoch)")
    p.add_argument("--no-test", dest="test", action="store_false", help="skip the final test-set report")
    p.add_argument("--resume", action="store_true", help="continue the runs in --out from last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace earlier runs in --out")
    return p


def config_from_args(args, seed):
    """The :class:`~dcnbio.train.config.TrainConfig` of seed ``seed`` from parsed arguments."""
    from .config import TrainConfig

    overrides = {}
    for name in ("solver", "rtol", "atol", "adjoint", "seminorm", "integrator", "formulation"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.step_size is not None:
        overrides["solver_options"] = {"step_size": args.step_size}
    if args.sigma_range is not None:
        overrides["sigma_range"] = tuple(args.sigma_range)
    return TrainConfig(
        model=args.model, dataset=args.dataset, width=args.width, data_root=args.data_root, download=args.download,
        subset=args.subset, val_size=args.val_size, epochs=args.epochs, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        sigma_lr_scale=args.sigma_lr_scale, augment=args.augment, seed=seed, device=args.device,
        save_every=args.save_every, test=args.test, tune=args.tune, plateau_patience=args.plateau_patience,
        plateau_delta=args.plateau_delta, plateau_window=args.plateau_window, model_overrides=overrides)


def write_index(out, rows):
    """``OUT/runs.csv`` and ``OUT/runs.json``: every seed directory of OUT with its final metrics."""
    from ..io.atomic import write_text

    fields = ["seed", "dir", "epochs", "steps", "wall_seconds", "best_val_acc", "val_acc_last", "test_acc_best",
              "test_acc_last"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(os.path.join(out, "runs.csv"), buf.getvalue())
    write_text(os.path.join(out, "runs.json"), json.dumps(rows, indent=2))


def collect_runs(out):
    """The ``final.json`` of every finished ``seed*`` run under ``out``, with its seed and directory."""
    from .loop import read_final

    rows = []
    for name in sorted(os.listdir(out)):
        final = os.path.join(out, name, "final.json")
        if name.startswith("seed") and os.path.isfile(final):
            row = read_final(final)
            row.update(seed=int(name[4:]) if name[4:].isdigit() else name[4:], dir=name)
            rows.append(row)
    return rows


@user_errors
def main(argv=None):
    """``dcnbio train`` (``argv`` as for :func:`build_parser`); returns the exit status."""
    args = build_parser().parse_args(argv)
    seeds = args.seeds if args.seeds is not None else [args.seed if args.seed is not None else 0]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds has repeated values: {seeds}")
    configs = [config_from_args(args, s) for s in seeds]  # validate everything before any work
    from .loop import train_run

    is_main = int(os.environ.get("RANK", "0")) == 0
    log = print if is_main else (lambda *a, **k: None)
    for config in configs:
        run_dir = os.path.join(args.out, f"seed{config.seed}")
        log(f"training {config.model} (width {config.width}) on {config.dataset}, seed {config.seed} -> {run_dir}")
        final = train_run(config, run_dir, resume=args.resume, overwrite=args.overwrite, log=log)
        log(f"seed {config.seed}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in final.items() if k != "segments"))
    if is_main:
        from ..io.lock import DirectoryLock

        with DirectoryLock(args.out, wait=60):  # runs of other seeds may finish into the same OUT
            write_index(args.out, collect_runs(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
