"""The disk side of ``analyses/reproduce.py``: running the analyses, their run times, loading what the claims need.

* :func:`run_analyses` — every analysis of :data:`ANALYSES` as its own process into ``<results>/<analysis>/``,
  on one bundle of trained runs, stopping at the first that fails; each one's wall time and the fingerprint of
  what it read go to ``<results>/runtimes.csv`` (:func:`record_runtime`, :func:`read_runtimes`), so a resumed
  run (``resume=True``) skips exactly the analyses already done on the same inputs;
* :func:`judge_claims` — the analyses' results, the bundled checkpoints and the V1 references loaded and handed to
  the pure verdicts of :mod:`dcnbio.reports.claims`.

This is the script layer (beside :mod:`dcnbio.script`): it may touch disk, start processes and load checkpoints;
the layers below it (extract, stats, reports) may not.
"""
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from .reports import claims
from .train.checkpoint import load_checkpoint
from .train.loop import read_final
from .errors import DataError
from .io import LOCK_NAME, DirectoryLock, load_reference_histogram, load_v1_reference, open_results, write_text
from .script import BUNDLES, DEFAULT_BUNDLE, is_finished_run

__all__ = ["ANALYSES", "READ_ONLY", "RUNTIMES", "RUNTIME_COLUMNS", "SMOKE_ARGS", "WITH_N_IMAGES", "bundle_fingerprint",
           "bundled", "command_line", "forget_runtime", "judge_claims", "load_analysis", "read_runtimes",
           "record_runtime", "recorded_bundles", "run_analyses"]

#: The analyses in the order they run (each ``analyses/<name>.py``).
ANALYSES = ("sigma_distribution", "pattern_completion", "contrast", "solver_audit", "small_data", "reconstruction",
            "meta_parametrization", "physiology")
#: The trajectory analyses, which take ``--n-images``.
WITH_N_IMAGES = ("pattern_completion", "contrast", "solver_audit")
#: The analyses that only read weights (no ``--compute``: they evaluate no model).
READ_ONLY = ("sigma_distribution",)
#: ``--smoke``: every analysis on a handful of images (the pipeline end to end; its numbers are meaningless).
SMOKE_ARGS = {"pattern_completion": ["--batch-size", "2"], "contrast": ["--batch-size", "2"],
              "solver_audit": ["--batch-size", "2"], "small_data": ["--n-images", "20"],
              "reconstruction": ["--n-images", "8", "--n-train", "16", "--steps", "2", "--n-examples", "2"],
              "meta_parametrization": ["--n-images", "4"],
              "physiology": ["--n-sf", "3", "--n-orientations", "3", "--n-phases", "3", "--contrasts", "0.25", "0.5",
                             "1", "--n-times", "3"]}
#: The run-time table in the results directory, and its columns (indexed by analysis).
RUNTIMES = "runtimes.csv"
RUNTIME_COLUMNS = ("seconds", "finished", "threads", "command", "inputs")


def run_analyses(results, n_images, extra=None, only=None, *, repo, log=print, bundle=DEFAULT_BUNDLE,
                 compute="fast", resume=False):
    """Run every analysis in :data:`ANALYSES` (or those in ``only``) into ``results/<analysis>`` (replaced).

    Parameters
    ----------
    results : path
        Each analysis writes ``results/<analysis>/``.
    n_images : int
        ``--n-images`` of the analyses in :data:`WITH_N_IMAGES`.
    extra : dict of str → list of str, optional
        More arguments per analysis name (e.g. :data:`SMOKE_ARGS`).
    only : sequence of str, optional
        Run just these; the others' results and run times are kept.
    repo : path
        Repository root (where ``analyses/`` is; the processes run there).
    log : callable
        Progress lines.
    bundle : str
        The bundle of trained runs every analysis reads (``--bundle``; :data:`dcnbio.script.BUNDLES`).
    compute : ``"fast"`` or ``"recorded"``
        ``--compute`` of the analyses that evaluate models (all but :data:`READ_ONLY`).
    resume : bool
        Skip an analysis whose row in ``runtimes.csv`` records this very command and the same inputs
        (:func:`bundle_fingerprint`): it finished on them, since a row is removed when its analysis starts and
        written back only when it ends.  Any other is run (again).

    Raises
    ------
    DataError
        An analysis failed: its exit status, wall time and the last line of its standard error.
    """
    results, repo = Path(results), Path(repo)
    done = read_runtimes(results) if resume else None
    for name in ANALYSES:
        if only and name not in only:
            continue
        cmd = [sys.executable, str(repo / "analyses" / f"{name}.py"), "--out", str(results / name), "--overwrite",
               "--bundle", bundle]
        if name not in READ_ONLY:
            cmd += ["--compute", compute]
        if name in WITH_N_IMAGES:
            cmd += ["--n-images", str(n_images)]
        cmd += list((extra or {}).get(name, []))
        inputs = bundle_fingerprint(repo, bundle)  # per analysis: lanes may add finished runs meanwhile
        if done is not None and name in done.index and done.loc[name, "inputs"] == inputs \
                and done.loc[name, "command"] == command_line(cmd[1:], repo):
            log(f"  {name}: done on these inputs ({done.loc[name, 'finished']}), kept")
            continue
        log(f"running {name} ...")
        forget_runtime(results, name)  # from here until it ends, its results are not a finished analysis
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
        seconds = time.time() - t0
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise DataError(f"analyses/{name}.py failed (exit {proc.returncode}) after {seconds:.0f} s: {last}")
        log(f"  {name}: {seconds:.0f} s")
        record_runtime(results, name, seconds, cmd[1:], repo=repo, inputs=inputs)


def bundle_fingerprint(repo, bundle):
    """sha256 of what an analysis of ``bundle`` can read under ``data/``: every file of the bundle's runs and every
    file outside all bundles (reference data), by path and content; the files of other bundles (and the lock
    files of runs in training) are left out.

    A file belongs to the bundle whose root (:data:`dcnbio.script.BUNDLES`) is the deepest that contains it, so
    ``full`` (``data/checkpoints/full``) is not part of ``subset`` (``data/checkpoints``).
    """
    repo = Path(repo)
    if bundle not in BUNDLES:
        raise DataError(f"unknown bundle {bundle!r}; choose one of {', '.join(BUNDLES)}")
    roots = {b: repo / r for b, r in BUNDLES.items()}

    def owner(path):
        holding = [b for b, r in roots.items() if path.is_relative_to(r)]
        return max(holding, key=lambda b: len(roots[b].parts)) if holding else None

    digest = hashlib.sha256()
    for path in sorted(p for p in (repo / "data").rglob("*") if p.is_file() and p.name != LOCK_NAME
                       and owner(p) in (None, bundle)):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def command_line(cmd, repo):
    """``cmd`` as recorded: ``python`` and the arguments, paths under ``repo`` relative to it."""
    return " ".join(["python"] + [os.path.relpath(c, repo) if os.path.isabs(c) else c for c in cmd])


def forget_runtime(results, name):
    """Remove ``name``'s row of ``results/runtimes.csv`` (under the directory's lock; nothing if it has none)."""
    results = Path(results)
    if not (results / RUNTIMES).is_file():
        return
    with DirectoryLock(results, wait=60):
        table = read_runtimes(results)
        if name in table.index:
            write_text(results / RUNTIMES, table.drop(index=name).to_csv())


def record_runtime(results, name, seconds, cmd, *, repo, inputs=""):
    """Replace ``name``'s row of ``results/runtimes.csv`` (:data:`RUNTIME_COLUMNS`, indexed by analysis).

    A read-modify-write under ``results/``'s lock (waiting for another reproduce lane's write to finish), replaced
    atomically: lanes running different analyses (``--only``) into one ``results/`` each keep their row.  The
    command is recorded with paths relative to ``repo``; ``inputs`` is the :func:`bundle_fingerprint` it read.
    """
    results = Path(results)
    os.makedirs(results, exist_ok=True)
    with DirectoryLock(results, wait=60):
        table = read_runtimes(results)
        row = (round(seconds, 1), time.strftime("%Y-%m-%d %H:%M:%S"), os.environ.get("OMP_NUM_THREADS", "default"),
               command_line(cmd, repo), inputs)
        table.loc[name] = dict(zip(RUNTIME_COLUMNS, row))
        table = table.reindex([a for a in ANALYSES if a in table.index])
        write_text(results / RUNTIMES, table.to_csv())


def recorded_bundles(runtimes):
    """The ``--bundle`` of each analysis in a run-time table (``None`` where its command names none)."""
    out = {}
    for name, cmd in runtimes["command"].items():
        words = str(cmd).split(" ")  # as command_line joined them
        out[name] = words[words.index("--bundle") + 1] if "--bundle" in words[:-1] else None
    return out


def read_runtimes(results):
    """``results/runtimes.csv`` as a table indexed by analysis (empty if absent).

    Raises
    ------
    DataError
        The file is not a run-time table (other columns).
    """
    columns = list(RUNTIME_COLUMNS)
    path = Path(results) / RUNTIMES
    if not path.is_file():
        return pd.DataFrame(columns=columns, index=pd.Index([], name="analysis"))
    table = pd.read_csv(path, index_col="analysis", dtype={"threads": str, "inputs": str}, keep_default_na=False)
    if list(table.columns) == columns[:-1]:  # written before inputs were recorded: never a resumable row
        table["inputs"] = ""
    if list(table.columns) != columns:
        raise DataError(f"{path} is not a runtimes table (columns {list(table.columns)}); delete it")
    return table


def load_analysis(results, name, file):
    """``results/<name>/<file>`` (:func:`dcnbio.io.open_results`), or a :class:`DataError` naming the script."""
    path = Path(results) / name / file
    if not path.is_file():
        raise DataError(f"{path} not found: run analyses/{name}.py first (or this script without --no-run)")
    return open_results(path)


def bundled(repo, model, bundle=DEFAULT_BUNDLE):
    """Finished runs of ``model`` in ``bundle``: ``[(seed label, last.pt path)]`` from ``<bundle root>/<model>/``."""
    paths = sorted((Path(repo) / BUNDLES[bundle] / model).glob("seed*/last.pt"))
    return [(p.parent.name, p) for p in paths if is_finished_run(p)]


def judge_claims(results, repo, bundle=DEFAULT_BUNDLE):
    """Load everything the claims rest on, in the report's order, and judge them.

    The architecture and the bundled runs' ``final.json`` (Tables 1 and 4), the bundled DCN-ODE checkpoints with
    their ``init.pt`` (σ and depth), then each analysis's results in ``results/``.

    Returns
    -------
    pandas.DataFrame
        :func:`dcnbio.reports.claims.claim_table`.

    Raises
    ------
    CheckpointError
        A finished run's ``final.json`` is damaged (:func:`dcnbio.train.loop.read_final`).
    DataError
        An analysis's results are missing (naming the script to run) or cannot be judged.
    """
    models = (*claims.PARAMETER_MODELS, *claims.META_MODELS)
    finals = {(model, f"{model}-{seed}"): read_final(path.parent / "final.json")
              for model in models for seed, path in bundled(repo, model, bundle)}
    rows = claims.parameter_claims({run: f for run, f in finals.items() if run[0] in claims.PARAMETER_MODELS})
    runs = {f"dcn-ode-{seed}": (load_checkpoint(path), load_checkpoint(path.parent / "init.pt"))
            for seed, path in bundled(repo, "dcn-ode", bundle) if (path.parent / "init.pt").is_file()}
    rows += claims.depth_claims(runs)
    rows += claims.sigma_ji_claims(load_analysis(results, "sigma_distribution", "sigma.nc"), load_v1_reference())
    rows += claims.completion_claims(load_analysis(results, "pattern_completion", "completion.nc"))
    rows += claims.contrast_claims(load_analysis(results, "contrast", "contrast.nc"))
    rows += claims.small_data_claims(load_analysis(results, "small_data", "small_data.nc"))
    rows += claims.reconstruction_claims(load_analysis(results, "reconstruction", "reconstruction.nc"))
    rows += claims.meta_claims(load_analysis(results, "meta_parametrization", "meta.nc"),
                               {run: f for run, f in finals.items() if run[0] in (*claims.META_MODELS, "dcn-ode")})
    rows += claims.solver_claims(load_analysis(results, "solver_audit", "solver_audit.nc"))
    stacked = load_analysis(results, "physiology", "properties.nc")
    stacked = {m: ds.load() for m, ds in (stacked.items() if isinstance(stacked, dict) else [("model", stacked)])}
    sf_reference = load_reference_histogram("schiller1976_sf_bandwidth")["count"].sum("population")
    rows += claims.physiology_claims(stacked, sf_reference)
    return claims.claim_table(rows)
