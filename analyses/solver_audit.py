"""Solver audit: does a trained model's accuracy survive other solvers and tighter tolerances? (SPEC §4)

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/solver_audit.py

audits the bundled DCN-ODE, DCN σ_ji and ODE-Net checkpoints that exist (``<bundle>/<model>/seed*/last.pt``
of ``--bundle``) on the first 100 test images (every finished seed; ``--n-images 1000`` resolves accuracy shifts
ten times finer) under dopri5 at rtol = atol = 1e-3 … 1e-6, rk4 with 2–16 and euler with 4–32
steps per block, and writes ``results/solver_audit/``.  Any checkpoint, another grid or threshold::

    .venv/bin/python analyses/solver_audit.py --checkpoint ckpt.pt --tolerances 1e-3 1e-5 --rk4-steps 4 8 \\
        --euler-steps --threshold 0.005 --n-images 500 --out results/audit_small --overwrite

A model is flagged **not solver-independent** when a refinement of its own solver (tighter tolerances; the tightest
adaptive setting always counts) moves its accuracy by more than ``--threshold`` (a fraction; 0.01 = one percentage
point).  See :mod:`dcnbio.extract.solver_audit`.

Outputs (in ``--out``): ``solver_audit.nc`` (one group per model: accuracy, agreement with the own setting,
predictions, logits, NFE per setting), ``solver_audit.png`` (accuracy against NFE), ``report.md``/``report.tex``.
"""
import sys
import time
from pathlib import Path

from dcnbio.script import add_eval_options, analysis_parser, eval_data, open_runs
from dcnbio.extract.solver_audit import (DEFAULT_FIXED_STEPS, DEFAULT_TOLERANCES, assess_solver_independence,
                                          compute_solver_audit, solver_grid)
from dcnbio.plots import plot_solver_audit
from dcnbio.reports.solver_audit_report import solver_audit_report
from dcnbio.cli import at_least, say, user_errors
from dcnbio.errors import ConfigError
from dcnbio.io import save_figure, write_report
from dcnbio.io import prepare_output_dir, save_results

REPO = Path(__file__).resolve().parents[1]
MODELS = ("dcn-ode", "dcn-sigma-ji", "odenet")


def build_parser():
    p = analysis_parser("solver_audit", __doc__, MODELS, what="checkpoint(s) with ODE blocks")
    add_eval_options(p, n_images_help="first N images of the evaluation split (1000 resolves 0.1 pp)")
    p.add_argument("--tolerances", type=float, nargs="*", default=list(DEFAULT_TOLERANCES),
                   help="rtol = atol of the adaptive solver")
    p.add_argument("--adaptive", default="dopri5", help="adaptive solver of the tolerance sweep")
    p.add_argument("--rk4-steps", type=at_least(1), nargs="*", default=list(DEFAULT_FIXED_STEPS["rk4"]),
                   help="rk4 step counts per block (none: skip rk4)")
    p.add_argument("--euler-steps", type=at_least(1), nargs="*", default=list(DEFAULT_FIXED_STEPS["euler"]),
                   help="euler step counts per block (none: skip euler)")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="largest accepted accuracy change under refinement (fraction)")
    return p


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 0 < args.threshold < 1:
        raise ConfigError(f"--threshold must be a fraction in (0, 1), got {args.threshold:g}")
    fixed = {k: v for k, v in (("rk4", args.rk4_steps), ("euler", args.euler_steps)) if v}
    if not args.tolerances:
        raise ConfigError("give at least one --tolerances value: the tightest adaptive setting is the reference")
    grid = solver_grid(args.tolerances, fixed, adaptive=args.adaptive)
    start = time.time()
    runs, missing = open_runs(args, MODELS, REPO, analysis="solver audit", require_ode=True)
    data = eval_data(runs, args)
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))

    results, verdicts, tables = {}, {}, {}
    for label, model, info in runs:
        images, labels, indices, _, name = data[label]
        t0 = time.time()
        ds = compute_solver_audit(model, images, labels, grid, batch_size=args.batch_size, info=info)
        ds = ds.assign_coords(image=indices)
        tables[label], verdicts[label] = assess_solver_independence(ds, args.threshold)
        v = verdicts[label]
        ds.attrs.update({"dataset": name, "split": args.split, "threshold": args.threshold,
                         "solver_independent": int(v["solver_independent"]),
                         "max_refinement_shift": v["max_refinement_shift"]})
        results[label] = ds
        say(f"{label}: {len(grid) + 1} settings on {images.shape[0]} images in {time.time() - t0:.1f} s")
    save_results(results, out / "solver_audit.nc", overwrite=args.overwrite)
    save_figure(plot_solver_audit(results), out / "solver_audit.png", dpi=120)

    report = solver_audit_report(results, verdicts, tables, runs, data, missing, threshold=args.threshold,
                                 batch_size=args.batch_size)
    write_report(report, out)

    for label, v in verdicts.items():
        ds = results[label]
        own = float(ds["accuracy"].values[0])
        say(f"  {label}: own {100 * own:.1f}% (NFE {float(ds['nfe_total'].values[0]):.0f}); largest refinement shift "
            f"{100 * v['max_refinement_shift']:.2f} pp ({v['worst_refinement']}) -> "
            f"{'solver-independent' if v['solver_independent'] else 'NOT solver-independent'}"
            f"{'' if v['reference_converged'] in (True, None) else ' (reference not converged)'}")
    say(f"  wrote solver_audit.nc, solver_audit.png and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
