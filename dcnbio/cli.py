"""The ``dcnbio`` command: ``dcnbio train …``, ``dcnbio grid …``, ``dcnbio extract …``.

Every subcommand module exposes ``main(argv=None) -> int``.  User errors
(:class:`~dcnbio.errors.DcnbioError`) and failed writes (a full disk, a read-only
or over-quota filesystem) are printed as one line on stderr and exit with status 2;
no traceback is shown for them.  Work stopped by SIGTERM/SIGINT at a safe point
(:class:`~dcnbio.signals.Preempted`) prints one line and exits with 143/130.
"""
import argparse
import errno
import functools
import importlib
import sys

from .errors import DcnbioError
from .io.atomic import WriteError
from .io.lock import held, unlock_directory
from .signals import Preempted

#: OSError numbers that mean "this output cannot be written" rather than a bug.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}

SUBCOMMANDS = {
    "train": ("dcnbio.train.cli", "train a model (or several seeds) and write checkpoints"),
    "grid": ("dcnbio.train.grid_cli", "train the missing runs of a small-data grid (models × sizes × seeds)"),
    "extract": ("dcnbio.extract.cli", "extract ODE-block trajectories of a checkpoint into netCDF/HDF5"),
}


def say(*parts):
    """Print one progress line at once (flushed): a command run in a lane with its output in a log file shows
    each line as it happens, not when the buffer fills."""
    print(*parts, flush=True)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, where an on/off flag's default reads ``off`` (not given), and a default
    of ``None`` (the option's absence leaves the choice to a model, or means "all") is left to the help text.

    argparse's own formatter prints the *stored value*, so a ``store_false`` flag such as ``--no-download`` would
    read "never download data (default: True)": the opposite of what the flag does unless given.

    >>> p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    >>> _ = p.add_argument("--no-test", dest="test", action="store_false", help="skip the test set")
    >>> _ = p.add_argument("--n", type=int, default=3, help="images")
    >>> _ = p.add_argument("--adjoint", action="store_true", default=None, help="adjoint (the model's default)")
    >>> _ = p.add_argument("--blocks", nargs="+", help="blocks (default: all)")
    >>> text = " ".join(p.format_help().split())
    >>> "skip the test set (default: off)" in text, "images (default: 3)" in text, "(default: None)" in text
    (True, True, False)
    >>> "adjoint (the model's default) --blocks" in text, text.endswith("blocks (default: all)")
    (True, True)
    """

    def _get_help_string(self, action):
        if action.default is None:  # decided further down (a model's own default, every run): the help says which
            return action.help
        if action.nargs == 0 and isinstance(action.const, bool) and action.default is not action.const:
            return f"{action.help or ''} (default: off)".strip()
        return super()._get_help_string(action)


def at_least(low):
    """An argparse ``type``: an integer >= ``low``, else a usage error naming the option.

    Counts are checked where they are parsed, before a script loads a model or creates its output directory, so
    a bad count never leaves a half-made result behind.

    >>> p = argparse.ArgumentParser(); _ = p.add_argument("--n", type=at_least(1))
    >>> p.parse_args(["--n", "3"]).n
    3
    >>> at_least(1)("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be an integer >= 1, got 0
    """
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def user_errors(main):
    """Decorator for ``main(argv) -> int``: DcnbioError → one line on stderr, exit status 2; the directory locks
    the command took are released when it returns."""

    @functools.wraps(main)
    def wrapper(argv=None):
        locks = held()
        try:
            return main(argv)
        except Preempted as exc:
            print(f"{exc}", file=sys.stderr)
            return exc.exit_status
        except DcnbioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:
                raise
            print(f"error: {WriteError(exc.filename, exc.errno)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        finally:
            for path in held() - locks:  # the directories this command locked are free once it returns
                unlock_directory(path)

    return wrapper


def main(argv=None):
    """The ``dcnbio`` command: dispatch to a subcommand's ``main``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: dcnbio {" + ",".join(SUBCOMMANDS) + "} [options]\n")
        for name, (_, helptext) in SUBCOMMANDS.items():
            print(f"  {name:8s} {helptext}")
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
