"""Every claim of the paper judged from the analyses' results: one command regenerates the results and the report.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/reproduce.py                   # every analysis, then the report
    .venv/bin/python analyses/reproduce.py --no-run                              # judge results/ as it is

Without ``--no-run`` it runs, in turn and each as its own process, ``sigma_distribution``, ``pattern_completion``,
``contrast``, ``solver_audit`` (those three with ``--n-images``), ``small_data``, ``reconstruction``,
``meta_parametrization`` and ``physiology`` on their default (bundled) checkpoints, each writing
``<results>/<analysis>/`` (replaced), and stops at the first that fails (``--only A …``: just those, the others'
results kept); each one's wall time goes to ``<results>/runtimes.csv`` (:mod:`dcnbio.reproduce_run`), which the
report's *Run time* section reads, with or without ``--no-run``.  It then reads their netCDF results and writes
``<out>/`` (default ``results/reproduction``): ``report.md`` / ``report.tex`` (one row per claim: the result as
mean ± SD over training runs, the test across runs and a verdict; the run time of every analysis) and ``claims.csv``.

The verdict rules — *holds*, *does not hold* or *undecided at this scale*, fixed before looking at any number,
the training run as the unit — are those of :mod:`dcnbio.reports.claims`; ``REPRODUCTION.md`` discusses them.
"""
import sys
import time
from pathlib import Path

from dcnbio.reports.claims import claims_report
from dcnbio.cli import user_errors
from dcnbio.errors import ConfigError
from dcnbio.io import prepare_output_dir, write_report, write_text
from dcnbio.reproduce_run import ANALYSES, SMOKE_ARGS, judge_claims, read_runtimes, run_analyses
from dcnbio.script import analysis_parser

REPO = Path(__file__).resolve().parents[1]


def build_parser():
    p = analysis_parser("reproduce", __doc__, out="results/reproduction")
    p.add_argument("--no-run", dest="run", action="store_false",
                   help="do not run the analyses; judge the results already in --results")
    p.add_argument("--n-images", type=int, default=500,
                   help="test images of pattern_completion, contrast and solver_audit (the paper-grade N)")
    p.add_argument("--smoke", action="store_true",
                   help="run every analysis on a few images (with --n-images 2): checks the pipeline, not the paper")
    p.add_argument("--only", nargs="+", choices=ANALYSES, metavar="ANALYSIS",
                   help="run only these analyses (the others' results must already be in --results); one of "
                        + ", ".join(ANALYSES))
    p.add_argument("--results", default="results", help="where each analysis writes <results>/<analysis>/")
    return p


def log(msg):
    print(msg, flush=True)


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.n_images < 1:
        raise ConfigError("--n-images must be >= 1")
    start = time.time()
    results = Path(args.results)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"output directory {out} exists and is not empty; choose another or pass --overwrite")
    if args.smoke and not args.run:
        raise ConfigError("--smoke runs the analyses: it cannot go with --no-run")
    if args.only and not args.run:
        raise ConfigError("--only chooses analyses to run: it cannot go with --no-run")
    if args.run:
        run_analyses(results, 2 if args.smoke else args.n_images, SMOKE_ARGS if args.smoke else None, args.only,
                     repo=REPO, log=log)
    table = judge_claims(results, REPO)
    out = Path(prepare_output_dir(out, overwrite=args.overwrite))  # only now: a failure above leaves nothing
    write_report(claims_report(table, read_runtimes(results), results), out)
    write_text(out / "claims.csv", table.to_csv())
    for name, r in table.iterrows():
        log(f"  {r['verdict']:<24.24} {name}")
    log(f"wrote report.md/.tex and claims.csv to {out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
