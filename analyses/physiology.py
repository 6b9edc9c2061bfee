"""In-silico electrophysiology: grating tuning of every unit over blocks and ODE time, trained vs init, against V1.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/physiology.py

records every channel of every block of the bundled DCN-ODE, DCN σ_ji, ODE-Net and ResNet checkpoints
(``<bundle>/<model>/seed*/last.pt`` of ``--bundle``) and of each run's ``init.pt`` (the control) at the centre of its
map, for a factorial grid of gratings (10 spatial frequencies × 8 orientations × 8 phases × 4 Michelson
contrasts) at 9 ODE times per block; derives each unit's preferred SF, SF bandwidth and selectivity,
orientation bandwidth, circular variance, F1/F0, Naka–Rushton fit and half-rise latency per contrast
(:mod:`dcnbio.stats.physiology`); and compares them with macaque V1 where a digitised distribution on the
same scale ships (``data/reference/``), seeds as clusters.

Outputs (``--out``): ``responses/<run>/shard-*.nc`` (one shard per SF band; ``--resume`` continues a stopped
run, skipping finished shards), ``properties.nc`` (one group per model: dims state × seed × unit),
``tuning-<model>.png`` (curves of each block's most responsive unit), ``properties-<model>.png`` (property
histograms, trained vs init, V1 overlaid where on the same scale), ``latency.png``, ``report.md``/``report.tex``.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dcnbio.stats import physiology as ph
from dcnbio.stats import tuning_study as study
from dcnbio.core.stimuli import stimulus_grid
from dcnbio.plots import plot_latency_contrast, plot_property_histograms, plot_tuning_examples
from dcnbio.reports.report import physiology_report
from dcnbio.extract.responses import grating_responses
from dcnbio.cli import at_least, say, user_errors
from dcnbio.io import open_results, prepare_output_dir, save_figure, save_results, save_shards, write_report
from dcnbio.script import (analysis_parser, dataset_of, fresh_or_resumed, load_tuning_references, open_runs,
                           with_init)

REPO = Path(__file__).resolve().parents[1]
MODELS = ("dcn-ode", "dcn-sigma-ji", "odenet", "resnet-blocks")


def reference_arg(text):
    name, _, path = text.partition("=")
    if name not in study.PROPERTIES or not path:
        raise argparse.ArgumentTypeError(f"expected PROPERTY=CSV with PROPERTY one of {', '.join(study.PROPERTIES)}")
    return name, path


def build_parser():
    p = analysis_parser("physiology", __doc__, MODELS)
    p.add_argument("--resume", action="store_true", help="continue a stopped run in --out (finished shards kept)")
    p.add_argument("--n-sf", type=at_least(3), default=10,
                   help="spatial frequencies, log-spaced 0.02-0.45 cycles/pixel")
    p.add_argument("--n-orientations", type=at_least(3), default=8, help="orientations, evenly over 180 degrees")
    p.add_argument("--n-phases", type=at_least(3), default=8, help="phases, evenly over 360 degrees")
    p.add_argument("--contrasts", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0],
                   help="Michelson contrasts (>= 4 for the Naka-Rushton fit, >= 3 for latency slopes)")
    p.add_argument("--n-times", type=at_least(1), default=9, help="ODE times per block, evenly over [0, T]")
    p.add_argument("--sf-per-shard", type=at_least(1), default=2, help="spatial frequencies per response shard")
    p.add_argument("--batch-size", type=at_least(1), default=256, help="stimuli per solve")
    p.add_argument("--no-init", action="store_true", help="skip the init.pt control")
    p.add_argument("--reference", nargs="+", type=reference_arg, default=[], metavar="PROPERTY=CSV",
                   help="compare PROPERTY with your own binned V1 histogram (data/reference/ layout); one of "
                        + ", ".join(study.PROPERTIES))
    return p


def record(model, info, grid, args, directory):
    """Grating responses of one network, written in SF shards; returns the lazily opened result."""
    name, times = dataset_of(info, model), np.linspace(0.0, model.config.T, args.n_times)
    bands = [grid["sf"][i:i + args.sf_per_shard] for i in range(0, grid["sf"].size, args.sf_per_shard)]
    save_shards(lambda i: grating_responses(model, name, times, **{**grid, "sf": bands[i]}, info=info,
                                            batch_size=args.batch_size), len(bands), directory)
    return open_results(directory, concat_dim="sf").load()


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    grid = stimulus_grid(args.n_sf, args.n_orientations, args.n_phases, args.contrasts)
    refs = load_tuning_references(args.reference)
    runs, missing = open_runs(args, MODELS, REPO, analysis="physiology")
    runs = with_init(runs, skip=args.no_init)
    study.check_unique_runs([(m.config.name, (i.get("train_config") or {}).get("seed", 0), st)
                             for _, st, m, i in runs])  # before any work
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite or args.resume))
    checkpoints = [i["path"] for _, st, _, i in runs if st == "trained"]
    fresh_or_resumed(out, {**grid, "n_times": args.n_times, "sf_per_shard": args.sf_per_shard,
                           "batch_size": args.batch_size, "checkpoints": checkpoints}, resume=args.resume,
                     subdir="responses")
    per_run, examples = [], {}
    for label, state, model, info in runs:
        t0 = time.time()
        resp = record(model, info, grid, args, out / "responses" / (label + ("" if state == "trained" else "-init")))
        props = ph.tuning_properties(resp)
        per_run.append((model.config.name, (info.get("train_config") or {}).get("seed", 0), state, props))
        if state == "trained":
            examples.setdefault(model.config.name, props)
        say(f"{label} ({state}): {resp.sizes['unit']} units, {int(props.responsive.sum())} responsive, "
            f"{time.time() - t0:.0f} s")
    stacked = study.stack_runs(per_run)
    save_results(stacked, out / "properties.nc", overwrite=True)
    tables = study.summarize(stacked, refs)
    for m, ds in stacked.items():
        save_figure(plot_tuning_examples(examples[m], study.example_units(examples[m])), out / f"tuning-{m}.png")
        save_figure(plot_property_histograms(study.histogram_values(ds), refs), out / f"properties-{m}.png")
    lat = {m: study.property_values(ds, "latency") for m, ds in stacked.items() if ds.sizes.get("time", 0) > 2}
    save_figure(plot_latency_contrast(lat), out / "latency.png", dpi=110)
    write_report(physiology_report(tables, runs, grid, list(stacked), n_times=args.n_times, missing=missing), out)
    print(f"wrote responses/, properties.nc, figures and report.md/.tex to {out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
