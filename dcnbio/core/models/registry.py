"""Models by name: ``create_model`` and ``list_models``.

Each entry states only what makes its variant different from the default
:class:`ModelConfig` (an SRF DCN with ODE blocks, CELU, T = 2, dopri5 at 1e-3).
"""
from ...errors import ConfigError
from .config import ModelConfig
from .network import Network

_REGISTRY = {}


def register_model(name, description, **differences):
    """Register a model variant: ``differences`` are the :class:`ModelConfig` fields that set it apart."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    ModelConfig(name=name, **differences)  # validate the entry itself
    _REGISTRY[name] = (description, differences)


def list_models():
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def describe_model(name):
    """The one-line description a registered model was registered with."""
    return _entry(name)[0]


def model_config(name, *, in_channels=3, num_classes=10, width=1.0, **overrides):
    """The resolved :class:`ModelConfig` of a registered model with ``overrides`` applied."""
    _, differences = _entry(name)
    config = ModelConfig(name=name, **differences)
    return config.replace(in_channels=in_channels, num_classes=num_classes, width=width, **overrides)


def create_model(name, *, in_channels=3, num_classes=10, width=1.0, **overrides):
    """Build a registered model.

    Parameters
    ----------
    name : str
        One of :func:`list_models`.
    in_channels, num_classes : int
    width : float
        Multiplier of the stage widths (32, 64, 128); e.g. 0.25 for a CPU-scale model.
    **overrides
        Any other :class:`ModelConfig` field (``T``, ``solver``, ``rtol``, ``atol``, ``adjoint`` ...).

    Examples
    --------
    >>> model = create_model("dcn-ode", in_channels=1, width=0.25)
    >>> sum(p.numel() for p in model.parameters())
    27952
    """
    return build_model(model_config(name, in_channels=in_channels, num_classes=num_classes, width=width,
                                    **overrides))


def build_model(config):
    """Build the network of a :class:`ModelConfig`."""
    return Network(config)


def _entry(name):
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


# --- the paper's models (Table 1, Table 4) ------------------------------------------------------
register_model("resnet-blocks", "ResNet baseline: one pre-activation ResBlock per stage, pixel 3x3 convs",
               block="res", conv="pixel", act="relu")
register_model("resnet-srf-blocks", "ResNet with SRF convs inside the blocks",
               block="res", conv="srf", act="relu")
register_model("resnet-srf-full", "ResNet with SRF convs everywhere (first conv and downsampling too)",
               block="res", conv="srf", stem="srf", downsample="srf", act="relu")
register_model("odenet", "ODE-Net: ODE blocks with 3x3 pixel convs on t (+) h, T = 1",
               conv="pixel", act="relu", T=1.0)
register_model("dcn-ode", "DCN: ODE blocks with SRF convs (shared sigma per layer), other layers discrete")
register_model("dcn-full", "DCN with SRF convs everywhere (first conv and downsampling too)",
               stem="srf", downsample="srf")
register_model("dcn-sigma-ji", "DCN with one sigma per (out, in) channel pair, 7x7 kernels",
               scale="per-channel")
register_model("dcn-sigma-t", "DCN with sigma(t) = 2^(a t' + b)", scale="linear-t")
register_model("dcn-sigma-t2", "DCN with sigma(t) = 2^(a t'^2 + b t' + c)", scale="quadratic-t")
register_model("dcn-sigma-alpha-t", "DCN with sigma(t) = 2^(a t' + b) and alpha(t) = a t' + b",
               scale="linear-t", alpha="linear-t")
