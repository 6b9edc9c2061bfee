"""What produced a result: the attributes every dcnbio dataset carries (pure metadata, no disk access).

:func:`provenance_attrs` names the model, its configuration, the checkpoint and its sha256, the versions and the
creation time.  The creation time (:data:`TIMESTAMP_ATTR`) is the only attribute that differs between two
otherwise identical runs; :func:`dcnbio.io.assert_same_results` ignores it.
"""
import datetime
import json
import os

from .version import __version__

#: Name of the creation-time attribute (ignored when comparing results of two runs).
TIMESTAMP_ATTR = "created"


def provenance_attrs(model, info=None):
    """Attributes saying what produced a result.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
    info : dict, optional
        The ``info`` returned by :func:`dcnbio.load_checkpoint` (gives the checkpoint
        path, sha256, kind, epoch and step).

    Returns
    -------
    dict of str → str or number
        ``model_name``, ``model_config`` (JSON), ``checkpoint_path``, ``checkpoint_sha256``,
        ``checkpoint_kind``, ``checkpoint_epoch``, ``checkpoint_step`` (when ``info`` is given), ``seed`` (the
        training seed, when the checkpoint records one: with ``model_name`` it says which run produced a result,
        e.g. ``xr.concat([...], "seed")`` over ``ds.attrs["seed"]``), ``dcnbio_version``, ``torch_version`` and
        ``created`` (ISO 8601, UTC).
    """
    import torch

    attrs = {
        "model_name": model.config.name,
        "model_config": json.dumps(model.config.to_dict(), sort_keys=True, default=str),
    }
    if info is not None:
        attrs.update({
            "checkpoint_path": os.fspath(info.get("path", "")),
            "checkpoint_sha256": str(info.get("sha256", "")),
            "checkpoint_kind": str(info.get("kind", "")),
            "checkpoint_epoch": int(info.get("epoch", -1)),
            "checkpoint_step": int(info.get("step", -1)),
        })
        seed = (info.get("train_config") or {}).get("seed")
        if seed is not None:
            attrs["seed"] = int(seed)
    attrs.update({
        "dcnbio_version": __version__,
        "torch_version": str(torch.__version__),
        TIMESTAMP_ATTR: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    return attrs
