"""The model configuration: one frozen dataclass that validates itself.

A checkpoint stores ``dataclasses.asdict(config)``; ``ModelConfig(**d)`` rebuilds it.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple

from ...errors import ConfigError
from ..layers.ode import check_integrator, check_solver, check_solver_options
from ..layers.scales import ALPHAS, SCALES
from ..layers.srf import FORMULATIONS

BLOCKS = ("ode", "res")
CONVS = ("pixel", "srf")
ACTIVATIONS = ("celu", "relu")
#: Channel counts of the three stages at width 1.
BASE_CHANNELS = (32, 64, 128)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model (see :func:`dcnbio.create_model`).

    Attributes
    ----------
    name : str
        Registry name the configuration came from.
    in_channels, num_classes : int
    width : float
        Multiplier of the stage widths 32, 64, 128.
    block : ``"ode"`` or ``"res"``
        Continuous (ODE) or discrete (pre-activation residual) blocks.
    conv, stem, downsample : ``"pixel"`` or ``"srf"``
        Kind of the block convolutions, the first convolution and the stride-2 transitions.
    scale, alpha : str
        σ and α parametrizations of the SRF convs inside blocks (:mod:`dcnbio.core.layers.scales`).
    order : int
        Gaussian-derivative order of every SRF layer.
    radius : int, optional
        Fixed SRF kernel radius inside blocks (default: from σ; 3 for per-channel σ).
    sigma_range : (float, float), optional
        Clamp every σ into this range.
    formulation : str
        SRF formulation (``auto``, ``dense``, ``spectral``, ``separable``, ``reference``;
        :mod:`dcnbio.core.layers.srf`).
    act : ``"celu"`` or ``"relu"``
    T : float
        End time of every ODE block.
    solver, rtol, atol, adjoint, seminorm, solver_options
        ODE solver settings, passed to torchdiffeq.
    integrator : ``"torchdiffeq"`` or ``"dcnbio"``
        Who integrates the solves that do not use the adjoint (:class:`dcnbio.core.layers.ode.ODEBlock`);
        ``"dcnbio"`` (dopri5 only) takes the same steps with faster arithmetic.
    """

    name: str = "custom"
    in_channels: int = 3
    num_classes: int = 10
    width: float = 1.0
    block: str = "ode"
    conv: str = "srf"
    stem: str = "pixel"
    downsample: str = "pixel"
    scale: str = "shared"
    alpha: str = "static"
    order: int = 2
    radius: Optional[int] = None
    sigma_range: Optional[Tuple[float, float]] = None
    formulation: str = "dense"
    act: str = "celu"
    T: float = 2.0
    solver: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    adjoint: bool = True
    seminorm: bool = False
    solver_options: dict = field(default_factory=dict)
    integrator: str = "torchdiffeq"

    def __post_init__(self):
        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")

        for name, allowed in (("block", BLOCKS), ("conv", CONVS), ("stem", CONVS), ("downsample", CONVS),
                              ("scale", tuple(SCALES)), ("alpha", tuple(ALPHAS)), ("act", ACTIVATIONS),
                              ("formulation", FORMULATIONS)):
            choice(name, allowed)
        check_solver(self.solver)
        check_solver_options(self.solver_options)
        check_integrator(self.integrator, self.solver, self.solver_options)
        if not (isinstance(self.width, (int, float)) and self.width > 0):
            raise ConfigError(f"width must be a number > 0, got {self.width!r}")
        for name in ("in_channels", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 0:
            raise ConfigError(f"order must be an integer >= 0, got {self.order!r}")
        if not self.T > 0:
            raise ConfigError(f"T must be > 0, got {self.T!r}")
        if not (self.rtol > 0 and self.atol > 0):
            raise ConfigError(f"rtol and atol must be > 0, got rtol={self.rtol!r}, atol={self.atol!r}")
        if self.sigma_range is not None:
            object.__setattr__(self, "sigma_range", tuple(float(v) for v in self.sigma_range))
            lo, hi = self.sigma_range
            if not 0 < lo < hi:
                raise ConfigError(f"sigma_range must satisfy 0 < low < high, got {self.sigma_range}")

    @property
    def channels(self):
        """Channel counts of the three stages: ``round(w * (32, 64, 128))``, at least 1."""
        return tuple(max(1, int(round(c * self.width))) for c in BASE_CHANNELS)

    def replace(self, **changes):
        """A copy with ``changes`` applied (validated); unknown field names are a
        :class:`~dcnbio.errors.ConfigError`."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown model option(s) {sorted(unknown)}; valid: "
                              f"{', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The configuration as plain values (what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The configuration stored by :meth:`to_dict`; unknown fields are a :class:`~dcnbio.errors.ConfigError`."""
        d = dict(d)
        if d.get("sigma_range") is not None:
            d["sigma_range"] = tuple(d["sigma_range"])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"model configuration has unknown field(s) {sorted(unknown)}")
        return cls(**d)
