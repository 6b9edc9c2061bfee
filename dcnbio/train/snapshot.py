"""One moment of runs that may still be training: the copy that ``retrain.sh snapshot`` commits.

A run directory (:mod:`dcnbio.train.loop`) changes while it trains: ``last.pt`` every ``save_every`` steps,
``best.pt`` and ``metrics.csv`` at epoch ends, ``final.json`` once the test set is evaluated.  Each file is
written atomically, but the set of them is not, and two moments are not a run anyone can use or resume: before
its first ``last.pt``, and between its last epoch and ``final.json``.  :func:`freeze_run` copies the files of a run
until one copy saw none of them change, then checks that the copy is a finished run or one that resumes; a run
at one of those two moments is refused with the reason (the snapshot keeps what was committed of it before).

``python -m dcnbio.train.snapshot --into STAGE RUN_DIR...`` freezes each run into ``STAGE/RUN_DIR`` and prints a
tab-separated line per run: ``ok``, the run and where it stands, or ``skip``, the run and why.
"""
import argparse
import os
import shutil
import sys

from ..cli import user_errors
from ..errors import CheckpointError, ConfigError
from .checkpoint import read_checkpoint
from .loop import RUN_FILES, read_final, run_status

#: Copies of one run tried before giving up on it: a run changes at most every few seconds, a copy takes less.
ATTEMPTS = 5


def _signature(directory):
    """(inode, size, mtime) of each run file present: an atomic write replaces the inode, so any write shows."""
    found = {}
    for name in RUN_FILES:
        try:
            st = os.stat(os.path.join(directory, name))
        except FileNotFoundError:
            continue
        found[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def _copy_once(src, dst):
    """Copy the run files of ``src`` into a fresh ``dst``; whether none of them changed meanwhile."""
    before = _signature(src)
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    try:
        for name in before:
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
    except FileNotFoundError:  # removed while copying (a grid run's best.pt, say): take the run again
        return False
    return _signature(src) == before


def where_it_stands(run_dir):
    """``done (N epochs, S steps)`` or ``training: epoch E + B batches (step S)`` for a run that can be resumed.

    Raises
    ------
    CheckpointError
        The directory is not a whole run at this moment: no ``config.json``, no ``last.pt`` yet (the run has just
        started), a ``last.pt`` at the end of its schedule without ``final.json`` (the run is finishing), or a
        ``final.json`` that disagrees with ``last.pt``.
    """
    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise CheckpointError(f"{run_dir} has no config.json: not a run directory")
    if not os.path.isfile(os.path.join(run_dir, "last.pt")):
        raise CheckpointError("no last.pt yet: the run has just started")
    last = read_checkpoint(os.path.join(run_dir, "last.pt"))
    loop = last["optimizer_state"].get("loop", {})
    final_path = os.path.join(run_dir, "final.json")
    if os.path.isfile(final_path):
        final = read_final(final_path)
        if (final.get("epochs"), final.get("steps")) != (last["epoch"], last["step"]):
            raise CheckpointError(f"final.json (epoch {final.get('epochs')}, step {final.get('steps')}) and last.pt "
                                  f"(epoch {last['epoch']}, step {last['step']}) disagree")
        return f"done ({last['epoch']} epochs, {last['step']} steps)"
    if "epochs" in loop and last["epoch"] >= loop["epochs"]:
        raise CheckpointError(f"finishing: its {loop['epochs']} epochs are done and final.json is not written yet")
    return run_status(last, finished=False)


def freeze_run(src, dst, *, finished_without=()):
    """Copy the run at ``src`` into the new directory ``dst`` as one moment of it; where that moment stands.

    Parameters
    ----------
    src, dst : path
        The run directory, and where its copy goes (replaced if present).  Only the run files of
        :data:`dcnbio.train.loop.RUN_FILES` are copied: no lock, no temporary of an atomic write.
    finished_without : sequence of str
        Files that a finished run does not keep (``retrain.sh`` removes a small-data grid run's ``best.pt`` once
        it is done): left out of the copy of a finished run, even if the source still has them.

    Returns
    -------
    str
        :func:`where_it_stands` of the copy.

    Raises
    ------
    CheckpointError
        The run changed during each of :data:`ATTEMPTS` copies, or its copy is not a whole run (the reasons of
        :func:`where_it_stands`); ``dst`` is removed then.
    """
    try:
        for _ in range(ATTEMPTS):
            if _copy_once(src, dst):
                break
        else:
            raise CheckpointError(f"it changed during each of {ATTEMPTS} copies; take the snapshot again")
        stands = where_it_stands(dst)
    except CheckpointError:
        shutil.rmtree(dst, ignore_errors=True)
        raise
    if stands.startswith("done"):
        for name in finished_without:
            if os.path.exists(os.path.join(dst, name)):
                os.remove(os.path.join(dst, name))
    return stands


def build_parser():
    """The argument parser of ``python -m dcnbio.train.snapshot``."""
    p = argparse.ArgumentParser(prog="python -m dcnbio.train.snapshot", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, relative to the current one")
    p.add_argument("--into", required=True, help="the stage: each run is copied to INTO/RUN_DIR")
    p.add_argument("--finished-without", action="append", default=[], metavar="FILE",
                   choices=[n for n in RUN_FILES if n != "final.json"],
                   help="a file a finished run does not keep (left out of its copy); may be repeated")
    return p


@user_errors
def main(argv=None):
    """Freeze each run into ``--into`` and print one tab-separated line per run (module docstring); exit 0, or 2
    for a run directory outside the current one (nothing is copied then)."""
    args = build_parser().parse_args(argv)
    for run in args.runs:
        if os.path.isabs(run) or os.pardir in os.path.normpath(run).split(os.sep):
            raise ConfigError(f"run directory {run!r} must be relative to the current directory and inside it")
    for run in args.runs:
        try:
            stands = freeze_run(run, os.path.join(args.into, run), finished_without=args.finished_without)
        except CheckpointError as exc:
            print(f"skip\t{run}\t{exc}", flush=True)
        else:
            print(f"ok\t{run}\t{stands}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
