"""Layers: the SRF convolution, its σ/α parametrizations and the ODE block."""
from .ode import SOLVERS, ODEBlock, ODEFunc
from .srf import SRFConv2d

__all__ = ["SOLVERS", "ODEBlock", "ODEFunc", "SRFConv2d"]
