"""Atomic file writes, and the one-line error every failed write becomes.

A result file is written to a temporary ``.tmp-<name>-XXXX`` beside its final name, fsynced and renamed
(:func:`atomic_write_path`): at any moment — a crash, a full disk, a signal — the final name holds either the
previous complete file or the new complete one, never a partial one.  A failed write removes its temporary and
raises :class:`WriteError`, whose message names the path and the cause (``No space left on device``,
``Read-only file system``, ``Disk quota exceeded``, ``File too large``, ``Permission denied``) in one line.
"""
import errno
import os
import re
import signal
import tempfile

from ..errors import DcnbioError

#: Prefix of temporary files; a name with this prefix is never a finished result.
TMP_PREFIX = ".tmp-"
#: Tests set this to ``kill-before-rename:<file name>[:<n>]`` to SIGKILL the process mid-write.
FAULT_ENV = "DCNBIO_FAULT_INJECTION"

_UMASK = os.umask(0)
os.umask(_UMASK)
_WRITES = {}
# Libraries that write through their own C code report the errno in their message, not as an OSError.
_ERRNO_IN_TEXT = re.compile(r"errno\s*=?\s*(\d+)", re.IGNORECASE)
_ADVICE = {
    errno.ENOSPC: "free space there (or choose another output), then re-run; --resume continues a training run",
    errno.EDQUOT: "free quota there (or choose another output), then re-run; --resume continues a training run",
    errno.EFBIG: "the file-size limit (ulimit -f) is too small for it; raise it and re-run",
    errno.EROFS: "choose a writable output directory",
    errno.EACCES: "choose an output directory you may write to",
    errno.EPERM: "choose an output directory you may write to",
}


class WriteError(DcnbioError):
    """A result could not be written (disk full, quota, read-only, permissions, file-size limit).

    The previous complete file under ``path`` (if any) is untouched and no temporary is left behind.

    Attributes
    ----------
    path : str or None
    errno : int or None
    """

    def __init__(self, path, err):
        self.path = os.fspath(path) if path is not None else None
        cause = os.strerror(err) if err else "write failed"
        advice = _ADVICE.get(err, "check the output directory, then re-run")
        where = f" {self.path}" if self.path else ""
        super().__init__(f"cannot write{where}: {cause}; {advice}")
        self.errno = err


def write_errno(exc, directory=None):
    """The errno behind a failed write: from the exception chain, its text (HDF5, torch), or — when neither
    names one — ``ENOSPC`` if ``directory``'s filesystem has no free block left.  ``None`` if unknown."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno:
            return exc.errno
        match = _ERRNO_IN_TEXT.search(str(exc))
        if match:
            return int(match.group(1))
        if "No space left on device" in str(exc):
            return errno.ENOSPC
        exc = exc.__cause__ or exc.__context__
    if directory is not None:
        try:
            st = os.statvfs(directory)
            if st.f_bavail == 0:
                return errno.ENOSPC
        except OSError:
            pass
    return None


def discard(path):
    """Remove ``path`` if it exists (a temporary, a stale shard)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write_path(path, write):
    """Write a file atomically: ``write(tmp_path)`` fills a temporary file beside ``path``; fsync, rename.

    A crash at any moment leaves either the old file or the new one under ``path``, never a partial one
    (a ``.tmp-*`` file at most, after a SIGKILL; re-runs remove those).  The file gets the permissions the umask
    allows.

    Raises
    ------
    WriteError
        The temporary could not be created, filled, synced or renamed; it has been removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + os.path.basename(path) + "-", dir=directory)
    except OSError as exc:
        raise WriteError(path, exc.errno) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _maybe_inject_fault(path)
        os.replace(tmp, path)
    except DcnbioError:
        discard(tmp)
        raise
    except Exception as exc:
        err = write_errno(exc, directory)  # before the cleanup frees the space it would look at
        discard(tmp)
        if err is None:
            raise
        raise WriteError(path, err) from None
    except BaseException:  # KeyboardInterrupt, SystemExit, a signal turned into an exception
        discard(tmp)
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # the rename is done; a directory that cannot be fsynced (some network filesystems) keeps it


def atomic_write(path, write):
    """:func:`atomic_write_path` for writers of file objects: ``write(fileobj)``."""

    def to_path(tmp):
        with open(tmp, "wb") as f:
            write(f)

    atomic_write_path(path, to_path)


def write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data))


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path, **savefig_kwargs):
    """Save a matplotlib figure atomically: rendered in memory (format from the file name), then written."""
    import io

    buf = io.BytesIO()
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or None
    fig.savefig(buf, format=fmt, **savefig_kwargs)
    write_bytes(path, buf.getvalue())


def write_report(report, directory, stem="report"):
    """Write a :class:`dcnbio.reports.report.Report` as ``<stem>.md`` and ``<stem>.tex`` into ``directory``
    (atomically); return both paths."""
    paths = []
    for ext, text in (("md", report.to_markdown()), ("tex", report.to_latex())):
        path = os.path.join(os.fspath(directory), f"{stem}.{ext}")
        write_text(path, text)
        paths.append(path)
    return paths


def remove_stale_temporaries(directory):
    """Delete ``.tmp-*`` files left in ``directory`` by a process killed mid-write."""
    for name in os.listdir(directory):
        if name.startswith(TMP_PREFIX):
            discard(os.path.join(directory, name))


def _maybe_inject_fault(path):
    """Crash-safety tests: ``DCNBIO_FAULT_INJECTION=kill-before-rename:<name>[:<n>]`` SIGKILLs this process
    after the n-th (default first) complete temporary write of ``<name>``, before it is renamed into place."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec.startswith("kill-before-rename:"):
        return
    name, _, nth = spec[len("kill-before-rename:"):].partition(":")
    if os.path.basename(path) != name:
        return
    _WRITES[name] = _WRITES.get(name, 0) + 1
    if _WRITES[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
