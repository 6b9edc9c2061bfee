"""The full-data bundle at a glance: per run, its schedule, accuracy and how far σ moved from its own init.

    python analyses/bundle_summary.py                       # data/checkpoints/full → results/bundle_summary/

Writes ``summary.md`` (one row per run: status, plateau epoch and schedule, best validation and test accuracy, hours
spent and, for a run in training, hours left at its own mean rate so far (a range until its plateau fixes the
schedule), median |Δ log2 σ| per block from the run's own ``init.pt``) and ``sigma_shift.nc`` (the shifts, labelled
by model, seed and block). Runs still in training are summarised from ``last.pt``. A model whose σ moved less than
0.05 octaves in every block is flagged: at the paper's learning rate σ then barely trains, which is a finding to
report, and the reason for the separately labelled ``--sigma-lr-scale`` control set. The runs of the small-data grid
(``<runs>/small-data/<model>/n<size>/seed<S>/``, no hold-out) follow in a second table: status, plateau of the
training loss and schedule, steps, the last epoch's training loss and accuracy, hours spent and left. The runs of
the σ learning-rate control (``--control``, ``full-sigma-lr10/``) come last, in a table of their own: a control is
never pooled with the paper recipe's runs.
"""
import json
import sys
from pathlib import Path

import xarray as xr

from dcnbio.extract.sigmas import extract_sigmas
from dcnbio.stats.sigmas import sigma_shift
from dcnbio.train.checkpoint import load_checkpoint, read_checkpoint
from dcnbio.train.loop import hours_left, read_final, run_status
from dcnbio.reports.bundle_report import runs_table, schedule_text, small_runs_table
from dcnbio.cli import user_errors
from dcnbio.errors import DcnbioError
from dcnbio.script import analysis_parser
from dcnbio.io import prepare_output_dir, save_dataset, write_text
from dcnbio.core.models import srf_layers

ROOT = Path(__file__).resolve().parents[1]


def small_row(run, info):
    loop, last, finished = info["optimizer_state"]["loop"], (info["metrics"] or [{}])[-1], (run / "final.json").exists()
    return {"model": run.parts[-3], "size": int(run.parts[-2][1:]), "seed": int(run.parts[-1][4:]),
            "status": run_status(info, finished=finished), "schedule": schedule_text(loop),
            "steps": info["step"], "train_loss": last.get("train_loss", float("nan")),
            "train_acc": last.get("train_acc", float("nan")), "hours": loop["elapsed"] / 3600,
            "hours_left": None if finished else hours_left(info)}


def runs_under(root):
    return sorted(d for d in root.glob("*/seed*") if (d / "last.pt").exists())


def table_of(summaries):
    """:func:`summarise` of runs → their table and σ shifts keyed by (model, seed)."""
    shifts = {(r["model"], r["seed"]): s for r, s in summaries if s is not None}
    return runs_table([r for r, _ in summaries], shifts), shifts


def summarise(run):
    config = json.loads((run / "config.json").read_text())["train_config"]
    final = read_final(run / "final.json") if (run / "final.json").exists() else None
    model, info = load_checkpoint(run / "last.pt")
    loop = info["optimizer_state"]["loop"]
    row = {"model": run.parent.name, "seed": config["seed"], "status": run_status(info, finished=final is not None),
           "schedule": schedule_text(loop),
           "best_val": max((m["val_acc"] for m in info["metrics"]), default=float("nan")),
           "test_best": final.get("test_acc_best", float("nan")) if final else float("nan"),
           "hours": loop["elapsed"] / 3600, "hours_left": None if final else hours_left(info)}
    shift = None
    if srf_layers(model):
        init, init_info = load_checkpoint(run / "init.pt")
        shift = sigma_shift(extract_sigmas(model, info=info), extract_sigmas(init, info=init_info))
        shift = shift.expand_dims(model=[row["model"]], seed=[row["seed"]])
        shift.attrs = {"trained": str(run / "last.pt"), "init": str(run / "init.pt")}
    return row, shift


@user_errors
def main(argv=None):
    p = analysis_parser("bundle_summary", __doc__)
    p.add_argument("--runs", type=Path, default=ROOT / "data" / "checkpoints" / "full",
                   help="the bundle: <runs>/<model>/seed<S>/")
    p.add_argument("--control", type=Path, default=ROOT / "data" / "checkpoints" / "full-sigma-lr10",
                   help="the σ learning-rate control runs, tabulated apart: <control>/<model>/seed<S>/")
    args = p.parse_args(argv)
    runs = runs_under(args.runs)
    if not runs:
        raise DcnbioError(f"no run with a last.pt under {args.runs}")
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))
    text, shifts = table_of([summarise(run) for run in runs])
    control = [summarise(run) for run in runs_under(args.control)]  # never pooled with the paper recipe's runs
    small = sorted((d for d in args.runs.glob("small-data/*/n*/seed*") if (d / "last.pt").exists()),
                   key=lambda d: (d.parts[-3], int(d.parts[-2][1:]), d.parts[-1]))
    if small:
        small = [small_row(d, read_checkpoint(d / "last.pt")) for d in small]  # records only: no model is built
        text += "\nSmall-data grid (`small-data/`):\n\n" + small_runs_table(small)
    if control:
        text += (f"\nσ learning-rate control (`{args.control.name}/`, not the paper's recipe):\n\n"
                 + table_of(control)[0])
    write_text(out / "summary.md", text)
    if shifts:
        merged = xr.combine_by_coords([s.drop_attrs() for s in shifts.values()], combine_attrs="drop",
                                    join="outer")  # a model without some seed: NaN there
        merged.attrs["note"] = "median/max |log2 sigma(last.pt) - log2 sigma(init.pt)| per block, octaves"
        save_dataset(merged, out / "sigma_shift.nc", overwrite=True)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
