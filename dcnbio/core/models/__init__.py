"""The model zoo: configuration, network and registry."""
from .config import ModelConfig
from .network import Network, ResBlock, nfe, ode_blocks, reset_nfe, srf_layers
from .registry import build_model, create_model, describe_model, list_models, model_config, register_model

__all__ = ["ModelConfig", "Network", "ResBlock", "build_model", "create_model", "describe_model", "list_models",
           "model_config", "nfe", "ode_blocks", "register_model", "reset_nfe", "srf_layers"]
