"""Self-describing checkpoints: plain dicts of tensors, written atomically, loaded without unpickling code.

A checkpoint is a ``dict`` with

``format`` / ``format_version``
    ``"dcnbio-checkpoint"`` / :data:`FORMAT_VERSION`.
``dcnbio_version``, ``torch_version``
``kind``
    ``"init"`` (before any step), ``"last"`` or ``"best"`` (best validation accuracy).
``model_config``
    :class:`~dcnbio.core.models.ModelConfig` as a dict; rebuilds the model through the registry.
``train_config``
    The resolved training configuration (dict), or ``{}``.
``epoch``, ``step``
    Completed epochs and optimizer steps.
``model_state``
    ``state_dict`` of the model.
``optimizer_state``, ``scheduler_state``, ``rng_state``
    Everything :mod:`dcnbio.train` needs to resume exactly (may be empty).
``metrics``
    List of per-epoch metric dicts.
``data_hash``
    sha256 of the training subset's indices.

Files are loaded with ``torch.load(weights_only=True)``: a file that would need
to unpickle arbitrary objects is refused before anything in it runs.  A file whose
weights hold NaN or infinity is refused too, naming the tensor: a damaged model
would otherwise surface far from its cause (a solver "failing" on an infinite α).
Files are written with :func:`dcnbio.io.atomic.atomic_write`.
"""
import hashlib
import io
import os
import pickle
import zipfile

import torch

from ..version import __version__
from ..errors import CheckpointError, ConfigError
from ..io.atomic import write_bytes
from ..core.models import ModelConfig, build_model
from .. import fast  # checkpoints may name its formulations and integrator; its fastest exact path

#: How :func:`load_checkpoint` computes the model function: ``"recorded"`` — the computation the checkpoint's
#: configuration names (the one it was trained with); ``"fast"`` — :data:`dcnbio.fast.FASTEST` in its place.
#: The function is the same either way, to float rounding (tests/test_checkpoint.py); only its cost differs.
COMPUTE_PATHS = ("recorded", "fast")

FORMAT = "dcnbio-checkpoint"
FORMAT_VERSION = 1


def sha256_file(path, chunk=1 << 20):
    """Hex SHA-256 of the file at ``path``, read in ``chunk``-byte blocks."""
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
    """Write a checkpoint dict atomically: serialised in memory, then temporary file, fsync, rename.

    Serialising first keeps torch's writer off the disk, so that a full disk is a plain write error
    (:class:`~dcnbio.io.atomic.WriteError`, naming ``path`` and the cause)."""
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    write_bytes(path, buf.getvalue())


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
            raise CheckpointError(f"refused to load {path}: it contains pickled objects other than tensors and "
                                  f"plain containers (possibly code); only dcnbio checkpoints are accepted") from None
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
    _check_finite(path, ckpt.get("model_state"))
    return ckpt


def _check_finite(path, state):
    """Refuse weights that hold NaN or infinity, naming the first such tensor."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has no model_state dict; re-copy or retrain it")
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                bad = value[~finite]
                kinds = "NaN" if bool(torch.isnan(bad).all()) else ("infinity" if not bool(torch.isnan(bad).any())
                                                                    else "NaN and infinity")
                raise CheckpointError(f"{path}: parameter {name} holds {kinds} ({int((~finite).sum())} of "
                                      f"{value.numel()} values); the file is damaged: restore or retrain it")


def load_checkpoint(path, map_location="cpu", *, compute="recorded"):
    """Rebuild a model from a checkpoint through the registry.

    Parameters
    ----------
    path : str or PathLike
    map_location : str or torch.device
    compute : ``"recorded"`` or ``"fast"``
        :data:`COMPUTE_PATHS`: build the model with the integrator and SRF formulation its configuration
        records, or with the fastest exact ones (:data:`dcnbio.fast.FASTEST`).  The model's ``config`` says
        which were used (so do the provenance attrs of what is computed from it); ``info["model_config"]``
        stays the checkpoint's.

    Returns
    -------
    model : :class:`~dcnbio.core.models.Network`
        In eval mode, with the checkpoint's weights.
    info : dict
        The checkpoint without ``model_state``, plus ``path`` and ``sha256`` of the file and ``compute``.

    Examples
    --------
    ::

        model, info = load_checkpoint("data/checkpoints/dcn-sigma-ji/seed1/last.pt")
        info["model_config"]["name"], info["epoch"]   # ('dcn-sigma-ji', 12)
    """
    if compute not in COMPUTE_PATHS:
        raise ConfigError(f"compute must be one of {', '.join(COMPUTE_PATHS)}, got {compute!r}")
    ckpt = read_checkpoint(path, map_location)
    try:
        config = ModelConfig.from_dict(ckpt["model_config"])
    except (ConfigError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path} has an invalid model configuration: {exc}") from None
    if compute == "fast":
        config = config.replace(**fast.FASTEST)
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
    info["compute"] = compute
    return model, info
