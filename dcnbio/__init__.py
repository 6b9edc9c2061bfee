"""dcnbio: Deep Continuous Networks (Tomen, Pintea & van Gemert, ICML 2021) as objects of study."""
__version__ = "0.1.0"

from . import filters
from .errors import CheckpointError, ConfigError, DataError, DcnbioError, SolverError
from .models import create_model, list_models, nfe, ode_blocks, reset_nfe, srf_layers

__all__ = ["CheckpointError", "ConfigError", "DataError", "DcnbioError", "SolverError", "create_model", "filters",
           "list_models", "nfe", "ode_blocks", "reset_nfe", "srf_layers"]

from .checkpoint import load_checkpoint  # noqa: E402

__all__ += ["load_checkpoint"]
