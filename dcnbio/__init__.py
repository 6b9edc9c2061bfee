"""dcnbio: Deep Continuous Networks (Tomen, Pintea & van Gemert, ICML 2021) as objects of study."""
from .version import __version__

from .core import filters
from . import fast  # noqa: F401  (the toolkit computes with the speed machinery: it registers into the core's tables)
from .errors import CheckpointError, ConfigError, DataError, DcnbioError, SolverError
from .core.models import create_model, list_models, nfe, ode_blocks, reset_nfe, srf_layers
from .train.checkpoint import load_checkpoint  # noqa: E402  (needs the models)

__all__ = ["__version__", "CheckpointError", "ConfigError", "DataError", "DcnbioError", "SolverError", "create_model",
           "filters", "list_models", "load_checkpoint", "nfe", "ode_blocks", "reset_nfe", "srf_layers"]

_LAZY = {"extract_sigmas": "dcnbio.extract.sigmas", "extract_trajectories": "dcnbio.extract.trajectories",
         "open_results": "dcnbio.io"}
__all__ += list(_LAZY)


def __getattr__(name):
    # Extraction and the disk edge import xarray/scipy: load them on first use, not on ``import dcnbio``.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dcnbio' has no attribute {name!r}")
