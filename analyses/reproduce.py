"""Every claim of the paper judged from the analyses' results: one command regenerates the results and the report.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python analyses/reproduce.py                   # every analysis, then the report
    .venv/bin/python analyses/reproduce.py --no-run                              # judge results/ as it is

Without ``--no-run`` it runs, in turn and each as its own process, ``sigma_distribution``, ``pattern_completion``,
``contrast``, ``solver_audit`` (those three with ``--n-images``), ``small_data``, ``reconstruction``,
``meta_parametrization`` and ``physiology`` on the finished runs of one bundle (``--bundle``; the models evaluated
on the fastest exact path, ``--compute``), each writing ``<results>/<analysis>/`` (replaced), and stops at the
first that fails; each one's wall time and a fingerprint of the bundle it read go to ``<results>/runtimes.csv``
(:mod:`dcnbio.reproduce_run`), which the report's *Run time* section reads, with or without ``--no-run``.  Long
runs split and survive interruption: ``--only A …`` runs just those (the others' results kept; one lane per
core, each with its own analyses, into the same ``--results``; a lane judges only once every analysis has
finished), and ``--resume`` skips every analysis already finished on the same command and the same bundle
contents (one killed mid-way is run again).  It then reads
their netCDF results and writes ``<out>/`` (default ``results/reproduction``): ``report.md`` / ``report.tex`` (the
bundle; one row per claim: the result as mean ± SD over training runs, the test across runs and a verdict; the run
time of every analysis) and ``claims.csv``.  Results of another bundle than ``--bundle`` are refused.

The verdict rules — *holds*, *does not hold* or *undecided at this scale*, fixed before looking at any number,
the training run as the unit — are those of :mod:`dcnbio.reports.claims`; ``REPRODUCTION.md`` discusses them.
"""
import sys
import time
from pathlib import Path

from dcnbio.reports.claims import claims_report
from dcnbio.cli import at_least, say, user_errors
from dcnbio.errors import ConfigError
from dcnbio.io import prepare_output_dir, write_report, write_text
from dcnbio.reproduce_run import ANALYSES, SMOKE_ARGS, judge_claims, read_runtimes, recorded_bundles, run_analyses
from dcnbio.script import DEFAULT_BUNDLE, add_bundle_option, add_compute_option, analysis_parser

REPO = Path(__file__).resolve().parents[1]


def build_parser():
    p = analysis_parser("reproduce", __doc__, out="results/reproduction")
    p.add_argument("--no-run", dest="run", action="store_false",
                   help="do not run the analyses; judge the results already in --results")
    p.add_argument("--n-images", type=at_least(1), default=500,
                   help="test images of pattern_completion, contrast and solver_audit (the paper-grade N)")
    p.add_argument("--smoke", action="store_true",
                   help="run every analysis on a few images (with --n-images 2): checks the pipeline, not the paper")
    p.add_argument("--only", nargs="+", choices=ANALYSES, metavar="ANALYSIS",
                   help="run only these analyses (the others' results must already be in --results); one of "
                        + ", ".join(ANALYSES))
    p.add_argument("--results", default="results", help="where each analysis writes <results>/<analysis>/")
    p.add_argument("--resume", action="store_true",
                   help="skip the analyses already finished into --results on the same command and bundle contents")
    add_bundle_option(p, DEFAULT_BUNDLE)
    add_compute_option(p)
    return p


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    results = Path(args.results)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"output directory {out} exists and is not empty; choose another or pass --overwrite")
    if args.smoke and not args.run:
        raise ConfigError("--smoke runs the analyses: it cannot go with --no-run")
    for option in ("only", "resume"):
        if getattr(args, option) and not args.run:
            raise ConfigError(f"--{option} chooses analyses to run: it cannot go with --no-run")
    # the results kept beside those this run makes must be of the same bundle: refused before any work
    kept = [a for a in ANALYSES if not args.run or (args.only and a not in args.only)]
    other = {a: b for a, b in recorded_bundles(read_runtimes(results)).items()
             if a in kept and b not in (None, args.bundle)}
    if other:
        which = ", ".join(f"{a}: {b}" for a, b in other.items())
        raise ConfigError(f"{results} holds results of another bundle ({which}); judge them with --bundle "
                          f"{sorted(set(other.values()))[0]} or rerun those analyses")
    if args.run:
        run_analyses(results, 2 if args.smoke else args.n_images, SMOKE_ARGS if args.smoke else None, args.only,
                     repo=REPO, log=say, bundle=args.bundle, compute=args.compute, resume=args.resume)
    runtimes = read_runtimes(results)
    pending = [a for a in ANALYSES if a not in runtimes.index]
    if args.only and pending:  # a lane's share is done; another lane's is not (yet)
        say(f"ran {', '.join(args.only)}; not finished in {results}: {', '.join(pending)} — run those (--only, "
            "another lane), then judge with --no-run")
        return 0
    table = judge_claims(results, REPO, args.bundle)
    out = Path(prepare_output_dir(out, overwrite=args.overwrite))  # only now: a failure above leaves nothing
    write_report(claims_report(table, runtimes, results, bundle=args.bundle), out)
    write_text(out / "claims.csv", table.to_csv())
    for name, r in table.iterrows():
        say(f"  {r['verdict']:<24.24} {name}")
    say(f"wrote report.md/.tex and claims.csv to {out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
