"""Contrast conditions: their settings, the time-rescaling identity on exactly scale-free dynamics, and the NFE
mechanism (an absolute tolerance that loosens relative to a shrinking signal)."""
import numpy as np
import pytest
import torch
from torch import nn

from dcnbio import create_model
from dcnbio.extract.common import evaluate, override_solver, solver_state
from dcnbio.extract.contrast import (CONDITIONS, check_contrasts, compute_contrast, compute_rescaling_check,
                                      condition_settings)
from dcnbio.plots import plot_contrast
from dcnbio.errors import ConfigError
from dcnbio.core.layers.ode import ODEBlock


class ScaleFree(nn.Module):
    """``f(t, h) = GN(conv(relu(GN(h))))`` with ε = 0: ``f(c·h) = f(h)`` exactly for c > 0, and no t-dependence.

    The idealisation of the paper's mechanism: for it ``h_c(s) = c·h(s/c)`` solves the block from ``c·h(0)``.
    """

    def __init__(self, channels, fail_below=None):
        super().__init__()
        self.n1 = nn.GroupNorm(1, channels, eps=0.0)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.n2 = nn.GroupNorm(1, channels, eps=0.0)
        self.fail_below = fail_below

    def forward(self, t, h):
        out = self.n2(self.conv(torch.relu(self.n1(h))))
        if self.fail_below is not None and float(h.abs().max()) < self.fail_below:
            return out * float("nan")  # fault injection: a solve that fails on small inputs
        return out


def scale_free_model(solver="dopri5", options=None, fail_below=None):
    """An ODE-Net whose blocks are :class:`ScaleFree`, with every GroupNorm at ε = 0 and no stem bias (float64)."""
    torch.manual_seed(0)
    model = create_model("odenet", in_channels=1, width=0.125)
    for name, block in model.blocks().items():
        func = ScaleFree(block.func.norm1.num_channels, fail_below)
        setattr(model, name, ODEBlock(func, T=2.0, solver=solver, options=options, adjoint=False, name=name))
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            m.eps = 0.0
    with torch.no_grad():
        model.stem.bias.zero_()
    return model.double().eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(4, 1, 28, 28, dtype=torch.float64)


def logits_under(model, images, condition, c, first_step=None):
    s = condition_settings(model, condition, c, first_step=first_step)
    with override_solver(model, per_block=s["per_block"]):
        res = evaluate(model, images * s["image_scale"], batch_size=2, input_scale=s["input_scale"],
                       keep_logits=True)
    return res["logits"].values.astype(np.float64), res["nfe"].values


# --- arguments and settings ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,match", [([1, 0], "> 0"), ([-0.5], "> 0"), ([float("nan")], "> 0"), (["a"], "numbers"),
                                       ([0.5, 0.5], "repeat"), ([], "no contrasts")])
def test_bad_contrasts_one_line(bad, match):
    with pytest.raises(ConfigError, match=match) as exc:
        check_contrasts(bad)
    assert "\n" not in str(exc.value)


def test_contrasts_sorted_decreasing():
    assert check_contrasts([0.06, 1, 0.25]) == [1.0, 0.25, 0.06]


def test_condition_settings_adaptive():
    model = create_model("dcn-ode", in_channels=1, width=0.125)  # T = 2, rtol = atol = 1e-3
    c = 0.25
    assert condition_settings(model, "naive", c) == {"image_scale": c, "input_scale": {}, "per_block": {}}
    assert condition_settings(model, "block1-T", c)["per_block"] == {"block1": {"T": 0.5}}
    s = condition_settings(model, "all-blocks", c)
    assert s["input_scale"] == {"block2": c, "block3": c}
    assert s["per_block"] == {b: {"T": 0.5} for b in ("block1", "block2", "block3")}
    s = condition_settings(model, "atol-control", c)
    assert s["per_block"] == {b: {"T": 0.5, "atol": 0.00025} for b in ("block1", "block2", "block3")}
    s = condition_settings(model, "block1-T", c, first_step=0.1)
    assert s["per_block"] == {"block1": {"T": 0.5, "options": {"first_step": 0.05}},
                              "block2": {"options": {"first_step": 0.2}}, "block3": {"options": {"first_step": 0.2}}}
    with pytest.raises(ConfigError, match="first_step"):
        condition_settings(model, "naive", c, first_step=0.0)
    with pytest.raises(ConfigError, match="unknown contrast condition"):
        condition_settings(model, "everything", c)


def test_condition_settings_fixed_grid_keeps_the_step_count():
    model = create_model("dcn-ode", in_channels=1, width=0.125, solver="rk4", solver_options={"step_size": 0.25})
    s = condition_settings(model, "atol-control", 0.5)
    # step size scales with T (same 8 steps); a fixed-step solver has no tolerance to scale
    assert s["per_block"]["block2"] == {"T": 1.0, "options": {"step_size": 0.125}}


def test_models_without_ode_blocks_are_refused(images):
    resnet = create_model("resnet-blocks", in_channels=1, width=0.125)
    for call in (lambda: condition_settings(resnet, "naive", 0.5),
                 lambda: compute_contrast(resnet, images.float(), contrasts=[1, 0.5]),
                 lambda: compute_rescaling_check(resnet, images.float())):
        with pytest.raises(ConfigError, match="no ODE blocks") as exc:
            call()
        assert "\n" not in str(exc.value)


# --- the time-rescaling identity --------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [0.5, 0.25, 0.125])
def test_rescaling_identity_is_exact_for_scale_free_dynamics(images, c):
    # rk4 with the step scaled by c: every stage of the scaled solve is c times the unscaled one, so the logits agree
    # to rounding (powers of 2 keep the step grid exact).  Tolerance: float64 rounding through three blocks.
    model = scale_free_model("rk4", {"step_size": 0.25})
    base, base_nfe = logits_under(model, images, "naive", 1.0)
    for condition in ("block1-T", "all-blocks", "atol-control"):
        logits, nfe = logits_under(model, images, condition, c)
        np.testing.assert_allclose(logits, base, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(nfe, base_nfe)
    naive, _ = logits_under(model, images, "naive", c)
    assert np.abs(naive - base).max() > 1e-3  # without T -> cT the network does see the contrast


def test_rescaling_check_measures_zero_on_scale_free_dynamics(images):
    model = scale_free_model("rk4", {"step_size": 0.25})
    check = compute_rescaling_check(model, images, [1.0, 0.25, 0.125], batch_size=2)
    # tolerance: float64 rounding (measured ~2e-16)
    assert float(check["f_change"].max()) < 1e-12
    assert float(check["identity_error"].max()) < 1e-12


def test_rescaling_check_detects_the_time_channel(images):
    # the paper's dynamics see t through the t-channel: over [0, cT] they see other times, so the identity fails
    # (measured 0.1-0.4 at c = 0.25 for models at initialisation) while f itself stays nearly scale-free
    torch.manual_seed(2)
    model = create_model("dcn-ode", in_channels=1, width=0.125)
    check = compute_rescaling_check(model, images.float()[:2], [1.0, 0.25], batch_size=2)
    assert float(check["identity_error"].sel(contrast=1.0).max()) == 0.0
    assert float(check["identity_error"].sel(contrast=0.25).min()) > 1e-2
    assert float(check["f_change"].sel(contrast=0.25).max()) < 0.05  # GroupNorm ε is the only scale


# --- the NFE mechanism ------------------------------------------------------------------------------------------------

def test_atol_control_removes_the_saving_with_a_covariant_first_step(images):
    # With the first step a fixed fraction of the interval, dopri5's accept/reject test on the rescaled trajectory is
    # the unscaled one once atol scales with c: the same steps, NFE and logits.  With atol fixed, the tolerance
    # loosens relative to the signal and the solver takes fewer steps.
    model = scale_free_model()
    base, base_nfe = logits_under(model, images, "naive", 1.0, first_step=0.05)
    for c in (0.06, 0.01):
        logits, nfe = logits_under(model, images, "atol-control", c, first_step=0.05)
        np.testing.assert_array_equal(nfe, base_nfe)
        np.testing.assert_allclose(logits, base, rtol=1e-9, atol=1e-12)  # tolerance: float64 rounding
        _, loose = logits_under(model, images, "all-blocks", c, first_step=0.05)
        assert (loose < base_nfe).all()


def test_compute_contrast_on_scale_free_dynamics(images):
    model = scale_free_model()
    before = {b: solver_state(m) for b, m in model.blocks().items()}
    ds = compute_contrast(model, images, [0, 1, 2, 3], [1.0, 0.25, 0.01], batch_size=2)
    assert {b: solver_state(m) for b, m in model.blocks().items()} == before  # own settings restored
    assert list(ds["condition"].values) == list(CONDITIONS)
    # c = 1 is the unchanged model in every condition (computed once)
    for cond in CONDITIONS:
        np.testing.assert_array_equal(ds["nfe"].sel(condition=cond, contrast=1.0).values,
                                      ds["nfe"].sel(condition="naive", contrast=1.0).values)
    # the rescaled solves agree with the unchanged model to dopri5's tolerance: every prediction survives
    assert (ds["agreement"].sel(condition=["block1-T", "all-blocks", "atol-control"]).values == 1.0).all()
    nfe = ds["nfe_total"]
    assert float(nfe.sel(condition="all-blocks", contrast=0.01)) < float(nfe.sel(condition="naive", contrast=1.0))
    np.testing.assert_array_equal(ds["T_used"].sel(condition="block1-T", contrast=0.25).values, [0.5, 2.0, 2.0])
    np.testing.assert_allclose(ds["atol_used"].sel(condition="atol-control", contrast=0.01).values, 1e-5)
    np.testing.assert_array_equal(ds["input_factor"].sel(condition="all-blocks", contrast=0.25).values,
                                  [1.0, 0.25, 0.25])
    res = evaluate(model, images * 0.25, [0, 1, 2, 3], batch_size=2)  # naive at c = 0.25, computed independently
    np.testing.assert_array_equal(ds["prediction"].sel(condition="naive", contrast=0.25).values,
                                  res["prediction"].values)
    assert float(ds["accuracy"].sel(condition="naive", contrast=0.25)) == res.attrs["accuracy"]
    fig = plot_contrast({"m": ds})
    np.testing.assert_array_equal(fig.axes[2].get_lines()[0].get_ydata(), nfe.sel(condition="naive").values)


def test_failed_solves_are_recorded_and_settings_restored(images):
    model = scale_free_model("rk4", {"step_size": 0.25}, fail_below=0.05)
    before = {b: solver_state(m) for b, m in model.blocks().items()}
    ds = compute_contrast(model, images, None, [1.0, 0.001], ["all-blocks"], batch_size=2)
    assert {b: solver_state(m) for b, m in model.blocks().items()} == before
    assert str(ds["failed"].sel(condition="all-blocks", contrast=1.0).values) == ""
    assert "failed" in str(ds["failed"].sel(condition="all-blocks", contrast=0.001).values)
    assert np.isnan(float(ds["nfe_total"].sel(condition="all-blocks", contrast=0.001)))
    assert (ds["nfe"].sel(condition="all-blocks", contrast=0.001).values == -1).all()
