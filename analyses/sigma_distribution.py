"""The distribution of learned scales σ: per block, against initialisation, against depth and against macaque V1.

Run from the repository root::

    .venv/bin/python analyses/sigma_distribution.py

analyses the finished runs of the full-data σ_ji DCN bundle (``data/checkpoints/full/dcn-sigma-ji/seed*/last.pt``
with a ``final.json``; runs still in training are named on stderr and skipped), each seed's ``init.pt`` as the
control, and writes ``results/sigma_distribution/``.  Any SRF model works, one or several seeds (the subset-trained
bundle: ``--bundle subset``)::

    .venv/bin/python analyses/sigma_distribution.py \\
        --checkpoint data/checkpoints/dcn-ode/seed*/last.pt --out results/sigma_dcn_ode --n-boot 2000

Outputs (in ``--out``):

``sigma.nc``
    Every σ of every SRF layer, trained and init (:func:`dcnbio.extract.sigmas.extract_sigmas` stacked with
    coordinates ``state`` = trained/init and ``seed``); open with :func:`dcnbio.io.open_results`.
``sigma_histograms.png``
    σ per block on a log axis with the fitted log-normal (per-channel σ_ji models; paper Fig. 3b).
``sigma_vs_depth.png``
    σ of every SRF layer against depth, trained vs init (paper Fig. 3a; every SRF model).
``report.md``, ``report.tex``
    The tables: per-layer σ, log-normal fits, goodness of fit, family comparison by AIC, trained vs init,
    depth trend (with the statsmodels summary) and the trend training added (each filter's Δ log2 σ from its own
    init against depth, per seed and across seeds), model vs V1 shapes.

Why trained vs init: σ = 2^s with s ~ N(0, 2/3) is log-normal at initialisation by construction, so only what
training changed says anything about the paper's "approximately log-normal" claim.
"""
import sys
import time
from pathlib import Path

from dcnbio.reports.sigma_report import sigma_report
from dcnbio.cli import at_least, user_errors
from dcnbio.io import load_v1_reference, prepare_output_dir, save_dataset, save_figure, write_report
from dcnbio.script import analysis_parser, bundle_checkpoints, load_sigma_study

REPO = Path(__file__).resolve().parents[1]
MODELS = ("dcn-sigma-ji",)


def build_parser():
    p = analysis_parser("sigma_distribution", __doc__, MODELS, what="trained checkpoint(s), one per seed",
                        evaluates=False, bundle="full")
    p.add_argument("--n-boot", type=at_least(1), default=1000, help="bootstrap resamples for confidence intervals")
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the bootstrap")
    return p


def resolve_checkpoints(paths, bundle):
    """``--checkpoint`` as given, else the finished runs in ``bundle`` (unfinished ones are named on stderr)."""
    found, missing = bundle_checkpoints(paths, MODELS, bundle, REPO, analysis="σ distribution")
    for m in missing:
        print(f"skipping {m}", file=sys.stderr)
    return found


@user_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    start = time.time()
    ds, inputs = load_sigma_study(resolve_checkpoints(args.checkpoint, args.bundle))  # before any output exists
    out = Path(prepare_output_dir(args.out, overwrite=args.overwrite))
    save_dataset(ds, out / "sigma.nc", overwrite=args.overwrite)
    report, figures, lines = sigma_report(ds, inputs, n_boot=args.n_boot, seed=args.seed,
                                          reference=load_v1_reference())
    for name, fig in figures.items():
        save_figure(fig, out / name, dpi=120)
    write_report(report, out)
    print("\n".join(lines) + f"\n  wrote sigma.nc, figures and report.md/.tex to {out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
