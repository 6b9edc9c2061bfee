"""Exceptions raised by dcnbio.

Every error a *user* can cause (a bad name, a bad file, a bad argument) is a
:class:`DcnbioError`; the command-line entry points print its one-line message
and exit with status 2 instead of showing a traceback.  Anything else is a bug.
"""


class DcnbioError(Exception):
    """A user-facing error with a one-line, actionable message."""


class ConfigError(DcnbioError, ValueError):
    """An argument or configuration value is out of range or unknown."""


class SolverError(DcnbioError, RuntimeError):
    """An ODE solve failed (step-size underflow, non-finite state, too many steps).

    Attributes
    ----------
    block : str
        Name of the ODE block whose solve failed (e.g. ``"block1"``).
    time : float
        Last integration time the dynamics were evaluated at.
    """

    def __init__(self, block, time, reason):
        self.block = block
        self.time = time
        self.reason = reason
        super().__init__(f"ODE solve of {block} failed at t={time:.4g}: {reason}")


class CheckpointError(DcnbioError):
    """A checkpoint is missing, corrupt, unsafe or of another format."""


class DataError(DcnbioError):
    """A dataset cannot be found or an input array is malformed."""
