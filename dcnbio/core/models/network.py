"""The network of paper Fig. 2 (App. A.2), built from a :class:`ModelConfig`.

::

    stem: Conv2d(in, C1, 3, no padding, bias)      | SRF, "same" padding   (full models)
    block1(C1)                                     ODE block or ResBlock
    GN, act, Conv2d(C1, C2, 4, stride 2, pad 1)    | SRF stride 2         (full models)
    block2(C2)
    GN, act, Conv2d(C2, C3, 4, stride 2, pad 1)    | SRF stride 2
    block3(C3)
    GN, act, global average pool, Linear(C3, classes)

with ``(C1, C2, C3) = width * (32, 64, 128)``.  On 28×28 inputs the block maps are
26, 13, 6 pixels wide; on 32×32 they are 30, 15, 7.
"""
from torch import nn

from ..layers.activations import CELU
from ..layers.ode import ODEBlock, ODEFunc, group_norm
from ..layers.srf import SRFConv2d
from .config import ModelConfig

ACTIVATIONS = {"celu": CELU, "relu": nn.ReLU}  # CELU: nn.CELU's function without its scalar expm1 (issue #6)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``h + conv(act(GN(conv(act(GN(h))))))``."""

    def __init__(self, channels, make_conv, act):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = make_conv(channels, channels)
        self.norm2 = group_norm(channels)
        self.conv2 = make_conv(channels, channels)
        self.act = act

    def forward(self, h):
        out = self.conv1(self.act(self.norm1(h)))
        out = self.conv2(self.act(self.norm2(out)))
        return h + out


class Transition(nn.Sequential):
    """``GN, act, stride-2 conv`` between stages."""


class Head(nn.Sequential):
    """``GN, act, global average pool, Linear`` classifier."""


class Network(nn.Module):
    """A DCN or one of its baselines.

    Attributes
    ----------
    config : ModelConfig
    stem, block1, down1, block2, down2, block3, head : nn.Module
    """

    #: stride of each block's feature maps relative to the input image
    BLOCK_STRIDES = {"block1": 1, "block2": 2, "block3": 4}

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        c1, c2, c3 = c.channels
        act = ACTIVATIONS[c.act]

        def srf(cin, cout, **kw):
            return SRFConv2d(cin, cout, order=c.order, sigma_range=c.sigma_range,
                             formulation=c.formulation, **kw)

        def block_conv(cin, cout):
            if c.conv == "srf":
                return srf(cin, cout, scale=c.scale, alpha=c.alpha, radius=c.radius)
            if c.block == "ode":  # conv on t ⊕ h, with bias (ODE-Net)
                return nn.Conv2d(cin, cout, 3, padding=1, bias=True)
            return nn.Conv2d(cin, cout, 3, padding=1, bias=False)

        def block(channels, name):
            if c.block == "res":
                return ResBlock(channels, block_conv, act())
            return ODEBlock(ODEFunc(channels, block_conv, act()), T=c.T, solver=c.solver, rtol=c.rtol,
                            atol=c.atol, adjoint=c.adjoint, seminorm=c.seminorm, options=c.solver_options,
                            integrator=c.integrator, name=name)

        def transition(cin, cout):
            conv = srf(cin, cout, stride=2) if c.downsample == "srf" else nn.Conv2d(cin, cout, 4, 2, 1)
            return Transition(group_norm(cin), act(), conv)

        self.stem = srf(c.in_channels, c1) if c.stem == "srf" else nn.Conv2d(c.in_channels, c1, 3)
        self.block1 = block(c1, "block1")
        self.down1 = transition(c1, c2)
        self.block2 = block(c2, "block2")
        self.down2 = transition(c2, c3)
        self.block3 = block(c3, "block3")
        self.head = Head(group_norm(c3), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c3, c.num_classes))

    def blocks(self):
        """The three blocks by name (ODE blocks or ResBlocks)."""
        return {"block1": self.block1, "block2": self.block2, "block3": self.block3}

    def stages(self):
        """``(name, module)`` in execution order; blocks are named ``block1..3``."""
        return [("stem", self.stem), ("block1", self.block1), ("down1", self.down1), ("block2", self.block2),
                ("down2", self.down2), ("block3", self.block3), ("head", self.head)]

    def forward(self, x):
        for _, module in self.stages():
            x = module(x)
        return x


def ode_blocks(model):
    """The model's ODE blocks by name (empty for ResNet baselines)."""
    return {name: m for name, m in model.blocks().items() if isinstance(m, ODEBlock)}


def srf_layers(model):
    """Every SRF convolution of the model by qualified module name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SRFConv2d)}


def reset_nfe(model):
    """Set the evaluation counters of every ODE block of ``model`` to 0."""
    for block in ode_blocks(model).values():
        block.reset_nfe()


def nfe(model):
    """``{block: {"forward": n, "backward": n}}`` since the last :func:`reset_nfe`."""
    return {name: {"forward": b.nfe_forward, "backward": b.nfe_backward} for name, b in ode_blocks(model).items()}
