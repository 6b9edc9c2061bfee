"""The seam between the core and the speed machinery (dcnbio.fast): the core's tables, what registering into
them does, and that a model computes the same function with every lever and with none."""
import pytest
import torch

import dcnbio
from dcnbio.core.layers import activations, ode
from dcnbio.core.layers.srf import FORMULATIONS, Formulation, SRFConv2d, register_formulation
from dcnbio.core.models import build_model
from dcnbio.errors import ConfigError
from dcnbio.fast import LEVERS, without

FULL = "data/checkpoints/full/{}/seed1/best.pt"


def test_the_fast_package_fills_the_core_tables():
    assert sorted(FORMULATIONS) == ["auto", "dense", "reference", "separable", "spectral"]
    assert type(FORMULATIONS["dense"]).__module__ == "dcnbio.fast.formulations"
    assert sorted(ode.INTEGRATORS) == ["dcnbio", "torchdiffeq"]
    assert activations.default_implementation() == "auto"


def test_without_every_lever_the_tables_are_the_core_s_and_come_back():
    before = (dict(FORMULATIONS), dict(activations.IMPLEMENTATIONS), dict(ode.INTEGRATORS))
    with without(*LEVERS):
        assert sorted(FORMULATIONS) == ["dense", "reference"] and type(FORMULATIONS["dense"]) is Formulation
        assert list(activations.IMPLEMENTATIONS) == ["torch"] and list(ode.INTEGRATORS) == ["torchdiffeq"]
        with pytest.raises(ConfigError, match=r"unknown SRF formulation 'auto'.*import dcnbio.fast"):
            SRFConv2d(3, 4, formulation="auto")
        with pytest.raises(ConfigError, match=r"unknown integrator 'dcnbio'.*import dcnbio.fast"):
            dcnbio.create_model("dcn-ode", in_channels=1, width=0.125, integrator="dcnbio", adjoint=False)
    assert (dict(FORMULATIONS), dict(activations.IMPLEMENTATIONS), dict(ode.INTEGRATORS)) == before
    with pytest.raises(ValueError, match="unknown lever"):
        with without("simd"):
            pass


def test_a_registered_formulation_computes_the_layer(monkeypatch):
    """The layer asks the table, so an entry registered from outside the core is what runs (here one that
    counts its calls); the reference cannot be replaced and a table entry must be a Formulation or Chooser."""
    calls = []

    class Counting(Formulation):
        def convolve(self, layer, x, prep):
            calls.append(tuple(x.shape))
            return super().convolve(layer, x, prep)

    monkeypatch.setitem(FORMULATIONS, "counting", Counting())
    layer = SRFConv2d(3, 4, formulation="counting").double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    out = layer(x)
    layer.formulation = "dense"
    torch.testing.assert_close(out, layer(x), rtol=0, atol=1e-13)
    assert calls == [(2, 3, 9, 9)]
    with pytest.raises(ConfigError, match="oracle"):
        register_formulation("reference", Counting())
    with pytest.raises(ConfigError, match="Formulation or a Chooser"):
        register_formulation("bad", object())


@pytest.mark.parametrize("name", ["dcn-ode", "dcn-sigma-ji"])
def test_a_fast_path_checkpoint_computes_the_same_function_on_the_core_alone(name):
    """A bundled run trained with ``--formulation auto --integrator dcnbio`` (and the fast CELU and convolution)
    against its weights on the core's plain entries (dense F.conv2d, PyTorch's CELU, torchdiffeq), in float64
    (where two formulations of the same sums differ by rounding only): the same logits to 1e-9 of their scale
    after three adaptive solves, the same NFE."""
    model, info = dcnbio.load_checkpoint(FULL.format(name))
    model.double()
    assert info["model_config"]["formulation"] == "auto" and info["model_config"]["integrator"] == "dcnbio"
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        fast = model(x)
        fast_nfe = dcnbio.nfe(model)
        with without(*LEVERS):
            plain_model = build_model(model.config.replace(formulation="dense", integrator="torchdiffeq"))
            plain_model.double().load_state_dict(model.state_dict())
            plain_model.eval()
            plain = plain_model(x)
            plain_nfe = dcnbio.nfe(plain_model)
    scale = float(plain.abs().max())
    assert float((fast - plain).abs().max()) <= 1e-9 * scale
    assert fast_nfe == plain_nfe
