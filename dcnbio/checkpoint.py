"""Self-describing checkpoints: plain dicts of tensors, written atomically, loaded without unpickling code.

A checkpoint is a ``dict`` with

``format`` / ``format_version``
    ``"dcnbio-checkpoint"`` / :data:`FORMAT_VERSION`.
``dcnbio_version``, ``torch_version``
``kind``
    ``"init"`` (before any step), ``"last"`` or ``"best"`` (best validation accuracy).
``model_config``
    :class:`~dcnbio.models.ModelConfig` as a dict; rebuilds the model through the registry.
``train_config``
    The resolved training configuration (dict), or ``{}``.
``epoch``, ``step``
    Completed epochs and optimizer steps.
``model_state``
    ``state_dict`` of the model.
``optimizer_state``, ``scheduler_state``, ``rng_state``
    Everything :mod:`dcnbio.training` needs to resume exactly (may be empty).
``metrics``
    List of per-epoch metric dicts.
``data_hash``
    sha256 of the training subset's indices.

Files are loaded with ``torch.load(weights_only=True)``: a file that would need
to unpickle arbitrary objects is refused before anything in it runs.
"""
import hashlib
import os
import pickle
import signal
import tempfile
import zipfile

import torch

from . import __version__
from .errors import CheckpointError, ConfigError
from .models import ModelConfig, build_model

FORMAT = "dcnbio-checkpoint"
FORMAT_VERSION = 1
#: Tests set this to ``kill-before-rename:<file name>`` to SIGKILL the process mid-write.
FAULT_ENV = "DCNBIO_FAULT_INJECTION"


def atomic_write_path(path, write):
    """Write a file atomically: ``write(tmp_path)`` fills a temporary file beside ``path``; fsync, rename.

    A crash at any moment leaves either the old file or the new one under ``path``, never a partial one
    (only a ``.tmp-*`` file, which re-runs remove).  The file gets the permissions the umask allows.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _maybe_inject_fault(path)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(path, write):
    """:func:`atomic_write_path` for writers of file objects: ``write(fileobj)``."""

    def to_path(tmp):
        with open(tmp, "wb") as f:
            write(f)

    atomic_write_path(path, to_path)


_WRITES = {}
_UMASK = os.umask(0)
os.umask(_UMASK)


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


def remove_stale_temporaries(directory):
    """Delete ``.tmp-*`` files left in ``directory`` by a process killed mid-write."""
    for name in os.listdir(directory):
        if name.startswith(".tmp-"):
            os.unlink(os.path.join(directory, name))


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def make_checkpoint(model, *, kind, train_config=None, epoch=0, step=0, optimizer_state=None,
                    scheduler_state=None, rng_state=None, metrics=None, data_hash=""):
    """Assemble the checkpoint dict of ``model`` (see the module docstring)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dcnbio_version": __version__,
        "torch_version": str(torch.__version__),
        "kind": kind,
        "model_config": model.config.to_dict(),
        "train_config": dict(train_config or {}),
        "epoch": int(epoch),
        "step": int(step),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer_state or {},
        "scheduler_state": scheduler_state or {},
        "rng_state": rng_state or {},
        "metrics": list(metrics or []),
        "data_hash": data_hash,
    }


def save_checkpoint(checkpoint, path):
    """Write a checkpoint dict atomically (temporary file, fsync, rename)."""
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def read_checkpoint(path, map_location="cpu"):
    """Read and validate a checkpoint dict without building the model.

    Raises
    ------
    CheckpointError
        Missing, truncated, corrupt, unsafe (would unpickle code), or of another format/version.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        # Only a reference to a Python global (a class or function) can make unpickling run code.
        if "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise CheckpointError(f"refused to load {path}: it contains pickled objects other than tensors "
                                  f"and plain containers (possibly code); only dcnbio checkpoints are accepted") from None
        raise CheckpointError(f"{path} is truncated or corrupt (not a readable torch file); re-copy or "
                              f"retrain it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({first[:120]}); re-copy or retrain it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dcnbio checkpoint (no '{FORMAT}' format marker)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {ckpt.get('format_version')!r}; this dcnbio "
                              f"{__version__} reads version {FORMAT_VERSION} only")
    return ckpt


def load_checkpoint(path, map_location="cpu"):
    """Rebuild a model from a checkpoint through the registry.

    Parameters
    ----------
    path : str or PathLike
    map_location : str or torch.device

    Returns
    -------
    model : :class:`~dcnbio.models.Network`
        In eval mode, with the checkpoint's weights.
    info : dict
        The checkpoint without ``model_state``, plus ``path`` and ``sha256`` of the file.

    Examples
    --------
    ::

        model, info = load_checkpoint("data/checkpoints/dcn-sigma-ji/seed1/last.pt")
        info["model_config"]["name"], info["epoch"]   # ('dcn-sigma-ji', 12)
    """
    ckpt = read_checkpoint(path, map_location)
    try:
        config = ModelConfig.from_dict(ckpt["model_config"])
    except (ConfigError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path} has an invalid model configuration: {exc}") from None
    model = build_model(config)
    try:
        model.load_state_dict(ckpt["model_state"], strict=True)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit model {config.name!r}: {first[:160]}") from None
    model.to(map_location).eval()
    info = {k: v for k, v in ckpt.items() if k != "model_state"}
    info["path"] = os.fspath(path)
    info["sha256"] = sha256_file(path)
    return model, info
