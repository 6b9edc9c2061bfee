"""One writer per directory: an advisory lock held for as long as a process writes there.

``dcnbio train`` takes it on each run directory, ``dcnbio extract`` on its output directory and every analysis
script on its ``--out``.  The lock is ``flock(2)`` on ``<dir>/.dcnbio.lock``: the kernel releases it when its
holder exits, however it exits (SIGKILL included), so a lock left by a dead process never blocks a later run.
The file records the holder (pid, host, command) so that a refused second writer can say who holds it, and is
removed when the lock is released (a process that was killed leaves it behind, unlocked and harmless).  A taker
checks after locking that the file it locked is still the one under the name, so removal cannot let two processes
hold the lock at once.
"""
import atexit
import errno
import fcntl
import os
import socket
import sys
import time

from ..errors import DcnbioError

LOCK_NAME = ".dcnbio.lock"
_HELD = {}  # realpath -> file descriptor of a lock this process holds


class LockedError(DcnbioError):
    """Another process writes to the directory."""


def _holder(fd):
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def lock_directory(path, *, wait=0.0):
    """Take the writer's lock of directory ``path`` (which must exist) for this process.

    Parameters
    ----------
    path : str or PathLike
    wait : float
        Seconds to wait for a holder to finish (0: refuse at once).

    Returns
    -------
    str
        The lock file's path.  The lock is released by :func:`unlock_directory` or when the process exits.
        Taking a lock this process already holds is a no-op.

    Raises
    ------
    LockedError
        Another process holds it; the message names its pid, host and command.
    """
    real = os.path.realpath(os.fspath(path))
    if real in _HELD:
        return os.path.join(real, LOCK_NAME)
    lock_path = os.path.join(real, LOCK_NAME)
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise DcnbioError(f"cannot lock {path}: {exc.strerror}; choose a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise DcnbioError(f"cannot lock {path}: {exc.strerror}") from None
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise LockedError(f"{path} is in use by {holder}; wait for it to finish (or stop it) and "
                                  f"re-run") from None
            os.close(fd)
            time.sleep(0.1)
            continue
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed the file while releasing: lock the new one
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
    _record(fd, f"pid {os.getpid()} on host {socket.gethostname()} ({command})\n")
    _HELD[real] = fd
    return lock_path


def _record(fd, text):
    """Unbuffered, so that nothing is left to flush (and fail) when the lock is closed on a full disk."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8"), 0)
    except OSError:
        pass  # a full disk must not stop the lock itself; the holder's name is then missing


def unlock_directory(path):
    """Release a lock taken by :func:`lock_directory` (no-op if this process does not hold it)."""
    real = os.path.realpath(os.fspath(path))
    fd = _HELD.pop(real, None)
    if fd is not None:
        try:
            os.unlink(os.path.join(real, LOCK_NAME))  # while still locked: see the module docstring
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def held():
    """The directories (real paths) whose locks this process holds."""
    return set(_HELD)


@atexit.register
def _release_all():
    for real in list(_HELD):
        unlock_directory(real)


class DirectoryLock:
    """``with DirectoryLock(path):`` — :func:`lock_directory` for a block, released at its end."""

    def __init__(self, path, *, wait=0.0):
        self.path, self.wait, self._taken = path, wait, False

    def __enter__(self):
        self._taken = os.path.realpath(os.fspath(self.path)) not in _HELD
        lock_directory(self.path, wait=self.wait)
        return self

    def __exit__(self, *exc):
        if self._taken:
            unlock_directory(self.path)
        return False
