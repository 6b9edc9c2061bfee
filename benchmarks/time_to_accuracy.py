"""Time to accuracy of the full-data CPU recipe: the figure a user plans with.

Run from the repository root::

    .venv/bin/python benchmarks/time_to_accuracy.py                     # every run in data/checkpoints/full
    .venv/bin/python benchmarks/time_to_accuracy.py --runs runs/mine --thresholds 0.8 0.85 0.9

Reads what training recorded (``metrics.csv``, ``final.json`` or, for a run still in training, ``last.pt``)
and prints, per run: the steps and wall time until validation accuracy first reached each threshold (at epoch
granularity: validation is measured once per epoch), training images/s (training time only, validation
excluded), and the machine(s) it trained on with their thread counts.  Nothing is timed here: the figures are
as good as the conditions the runs trained in, which ``benchmarks/RESULTS.md`` states (the bundle's lanes share
two cores with each other, and at times with development work).
"""
import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dcnbio.train.checkpoint import read_checkpoint  # noqa: E402
from dcnbio.train.loop import read_final  # noqa: E402


def first_reaching(rows, threshold):
    """``(epoch, step, elapsed seconds)`` of the first epoch whose validation accuracy is ≥ ``threshold``."""
    for row in rows:
        if float(row["val_acc"]) >= threshold:
            return int(row["epoch"]), int(row["step"]), float(row["elapsed_seconds"])
    return None


def describe(run, thresholds, batch_size_default=128):
    rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").exists() else []
    if (run / "final.json").exists():
        final = read_final(run / "final.json")
        segments, status = final["segments"], f"done ({final['epochs']} epochs)"
    else:
        last = read_checkpoint(run / "last.pt")
        loop = last["optimizer_state"]["loop"]
        segments, status = loop["segments"], f"epoch {last['epoch']}/{loop['epochs']}, step {last['step']}"
    config = json.loads((run / "config.json").read_text())["train_config"]
    train_seconds = sum(float(r["epoch_seconds"]) for r in rows)
    images = (int(rows[-1]["step"]) if rows else 0) * config.get("batch_size", batch_size_default)
    machines = sorted({f"{s['machine']['cpu']} (family {s['machine']['cpu_family']} model "
                       f"{s['machine']['cpu_model']}, {s['machine']['aten_capability']}, "
                       f"{s['machine']['threads']} thread(s))" for s in segments})
    return {"run": f"{run.parent.name}/{run.name}", "status": status,
            "reached": {t: first_reaching(rows, t) for t in thresholds},
            "best_val": max((float(r["val_acc"]) for r in rows), default=float("nan")),
            "images_per_s": images / train_seconds if train_seconds else float("nan"), "machines": machines}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=ROOT / "data" / "checkpoints" / "full",
                   help="directory of <model>/seed<S>/ run directories")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.80, 0.85])
    args = p.parse_args(argv)
    runs = sorted(d for d in args.runs.glob("*/seed*") if (d / "config.json").exists())
    if not runs:
        print(f"error: no run directories under {args.runs}", file=sys.stderr)
        return 2
    head = ["run", "status", "best val"] + [f"to {t:.0%}: steps / wall" for t in args.thresholds] + ["images/s"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    machines = set()
    for run in runs:
        d = describe(run, args.thresholds)
        cells = [d["run"], d["status"], f"{d['best_val']:.3f}"]
        for t in args.thresholds:
            hit = d["reached"][t]
            cells.append("not reached" if hit is None else f"{hit[1]} / {hit[2] / 60:.1f} min (epoch {hit[0]})")
        cells.append(f"{d['images_per_s']:.1f}")
        print("| " + " | ".join(cells) + " |")
        machines.update(d["machines"])
    print("\nmachines: " + "; ".join(sorted(machines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
