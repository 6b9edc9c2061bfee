"""Preemption: SIGTERM and SIGINT end long work at a safe point instead of mid-write.

Schedulers send SIGTERM before they kill; users press Ctrl-C (SIGINT).  Inside :class:`stop_requests` the first
such signal only *records* the request; the work checks :attr:`stop_requests.requested` at its safe points (after
an optimizer step, after a shard), saves what it must and raises :class:`Preempted`, which the command line turns
into one line on stderr and the conventional exit status 128 + signal number (143 for SIGTERM, 130 for SIGINT).
A second signal gets the default behaviour at once (termination, or ``KeyboardInterrupt``): every file is written
atomically (:mod:`dcnbio.io.atomic`), so even then no partial file is left under a final name.
"""
import signal
import threading

from .errors import DcnbioError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(DcnbioError):
    """Work stopped at a safe point on SIGTERM/SIGINT; ``exit_status`` is 128 + the signal number."""

    def __init__(self, signum, message):
        self.signum = int(signum)
        self.exit_status = 128 + self.signum
        super().__init__(f"stopped by {signal.Signals(signum).name}: {message}")


class stop_requests:
    """Context manager recording SIGTERM/SIGINT instead of dying at once (main thread only; elsewhere a no-op).

    >>> with stop_requests() as stop:
    ...     stop.requested is None
    True
    """

    def __init__(self, signals=SIGNALS):
        self.signals = tuple(signals)
        self.requested = None
        self._previous = {}

    def _handler(self, signum, frame):
        self.requested = signum
        for s in self.signals:  # a second signal acts at once
            signal.signal(s, self._previous.get(s, signal.SIG_DFL))

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()
        return False

    def check(self, message):
        """Raise :class:`Preempted` with ``message`` if a signal was received."""
        if self.requested is not None:
            raise Preempted(self.requested, message)
