"""Solver audit: convergence on a linear-ODE classifier with a closed-form flow, the verdict on planted tables, and the
shared evaluation and solver-override helpers it is built on."""
import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from dcnbio import create_model, nfe, reset_nfe
from dcnbio.extract.common import evaluate, override_solver, solver_state
from dcnbio.extract.solver_audit import assess_solver_independence, compute_solver_audit, solver_grid
from dcnbio.plots import plot_solver_audit
from dcnbio.errors import ConfigError
from dcnbio.core.layers.ode import ODEBlock


class Linear(nn.Module):
    """``dh/dt = W h`` per pixel (a 1×1 convolution): the flow is ``expm(W t)``."""

    def __init__(self, channels, fail_at=None):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.normal_(0.0, 0.5 / channels ** 0.5)
        self.fail_at = fail_at

    def forward(self, t, h):
        if self.fail_at is not None and float(t) == self.fail_at:
            return h * float("nan")  # fault injection at one time only a fixed grid visits
        return self.conv(h)


def linear_model(fail_at=None):
    """An ODE-Net whose blocks integrate a linear ODE over [0, 1] (float64, dopri5 at 1e-3)."""
    torch.manual_seed(0)
    model = create_model("odenet", in_channels=1, width=0.125)
    for name, block in model.blocks().items():
        func = Linear(block.func.norm1.num_channels, fail_at)
        setattr(model, name, ODEBlock(func, T=1.0, adjoint=False, name=name))
    return model.double().eval()


def exact_logits(model, x):
    """The classifier with every block replaced by its exact flow ``expm(W T)`` (an independent computation)."""
    with torch.no_grad():
        for name, module in model.stages():
            if isinstance(module, ODEBlock):
                w = module.func.conv.weight[:, :, 0, 0]
                x = torch.einsum("ij,bjhw->bihw", torch.linalg.matrix_exp(w * module.T), x)
            else:
                x = module(x)
    return x.numpy()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(6, 1, 28, 28, dtype=torch.float64)


@pytest.fixture(scope="module")
def audit(images):
    model = linear_model()
    labels = exact_logits(model, images).argmax(1)
    grid = solver_grid((1e-3, 1e-5, 1e-7), {"rk4": (1, 2, 4, 8), "euler": (4, 8, 16, 32)})
    return model, labels, compute_solver_audit(model, images, labels, grid, batch_size=3)


# --- convergence ------------------------------------------------------------------------------------------------------

def errors(ds, exact, solver):
    part = ds.isel(setting=np.flatnonzero((ds["solver"].values == solver) & ~ds["is_own"].values))
    err = np.abs(part["logits"].values - exact[None]).max(axis=(1, 2))
    return part, err


def test_fixed_step_solvers_converge_at_their_order(audit, images):
    model, _, ds = audit
    exact = exact_logits(model, images)
    for solver, order in (("rk4", 4), ("euler", 1)):
        part, err = errors(ds, exact, solver)
        assert list(part["steps"].values) == sorted(part["steps"].values)  # steps double along the grid
        observed = np.log2(err[:-1] / err[1:])
        # tolerance: halving the step multiplies the global error by 2^-order once the steps resolve the flow
        # (eigenvalues of W T are O(1)); measured log2 ratios rk4 4.08-4.35, euler 0.96-1.00
        np.testing.assert_allclose(observed[1:], order, atol=0.25)
        # closed-form cost: rk4 evaluates f 4 times per step, euler once, in every batch of every block
        np.testing.assert_array_equal(part["nfe_mean"].values,
                                      np.repeat((part["steps"].values * (4 if solver == "rk4" else 1))[:, None], 3, 1))


def test_adaptive_solver_converges_with_tolerance(audit, images):
    model, labels, ds = audit
    exact = exact_logits(model, images)
    part, err = errors(ds, exact, "dopri5")
    assert list(part["tol"].values) == [1e-3, 1e-5, 1e-7]
    assert err[0] > err[1] > err[2]
    # tolerance: dopri5 controls local errors; the global error of this mildly growing flow stays within 10x tol
    # (measured 3.4e-9 at tol 1e-7)
    assert err[2] < 1e-6
    # dopri5 costs 2 + 6 per attempted step (SPEC §3)
    assert ((part["nfe_mean"].values - 2) % 6 == 0).all()
    assert float(part["accuracy"].values[-1]) == 1.0  # labels are the exact flow's predictions
    table, verdict = assess_solver_independence(ds, 0.01)
    assert verdict["solver_independent"] and verdict["reference"] == "dopri5 tol=1e-07"
    assert verdict["reference_converged"] is True
    assert table.loc["dopri5 tol=1e-07", "refinement"] and not table.loc["dopri5 tol=0.001", "refinement"]
    assert not table.loc["euler 32 steps", "refinement"]


def test_own_setting_first_and_restored(audit, images):
    model, _, ds = audit
    assert bool(ds["is_own"].values[0]) and ds["setting"].values[0].startswith("own: dopri5")
    assert all(solver_state(b) == {"T": 1.0, "solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "options": {}}
               for b in model.blocks().values())
    # the repeat of the own setting in the grid is the same computation
    np.testing.assert_array_equal(ds["logits"].values[0], ds["logits"].sel(setting="dopri5 tol=0.001").values)
    fig = plot_solver_audit({"linear": ds})
    assert fig.axes[0].get_lines()[-1].get_ydata()[0] == 100 * float(ds["accuracy"].values[0])


def test_failed_setting_recorded_and_settings_restored(images):
    model = linear_model(fail_at=0.5)  # euler with 4 steps on [0, 1] evaluates f at t = 0.5
    before = {b: solver_state(m) for b, m in model.blocks().items()}
    ds = compute_solver_audit(model, images[:2], None, solver_grid((1e-4,), {"euler": (4,)}), batch_size=2)
    assert {b: solver_state(m) for b, m in model.blocks().items()} == before
    assert "non-finite" in str(ds["failed"].sel(setting="euler 4 steps").values)
    assert np.isnan(float(ds["accuracy"].sel(setting="euler 4 steps")))
    assert str(ds["failed"].sel(setting="dopri5 tol=0.0001").values) == ""


def test_models_without_ode_blocks_are_refused(images):
    with pytest.raises(ConfigError, match="no ODE blocks") as exc:
        compute_solver_audit(create_model("resnet-blocks", in_channels=1, width=0.125), images.float())
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("args,match", [(((0.0,), {}), "tolerances"), (((1e-3,), {"rk4": (0,)}), "step counts"),
                                        (((1e-3,), {"dopri5": (4,)}), "adaptive"), (((1e-3,), {"nope": (4,)}),
                                                                                     "unknown ODE solver"),
                                        (((1e-3, 1e-3), {}), "repeat")])
def test_bad_grids(args, match):
    with pytest.raises(ConfigError, match=match):
        solver_grid(*args)


# --- the verdict on planted tables ------------------------------------------------------------------------------------

def planted(rows, own_rtol=1e-3, own_atol=1e-3):
    """An audit table: rows of (label, solver, tol, steps, is_own, accuracy)."""
    labels, solver, tol, steps, own, acc = zip(*rows)
    return xr.Dataset({"accuracy": ("setting", np.array(acc, dtype=float))},
                      coords={"setting": list(labels), "solver": ("setting", list(solver)),
                              "tol": ("setting", np.array(tol, dtype=float)), "steps": ("setting", list(steps)),
                              "is_own": ("setting", list(own))},
                      attrs={"own_rtol": own_rtol, "own_atol": own_atol})


NAN = float("nan")


def adaptive_rows(acc_own, acc_4, acc_5, acc_6):
    return [("own", "dopri5", 1e-3, 0, True, acc_own), ("d3", "dopri5", 1e-3, 0, False, acc_own),
            ("d4", "dopri5", 1e-4, 0, False, acc_4), ("d5", "dopri5", 1e-5, 0, False, acc_5),
            ("d6", "dopri5", 1e-6, 0, False, acc_6), ("rk4-2", "rk4", NAN, 2, False, 0.40),
            ("euler-4", "euler", NAN, 4, False, 0.30)]


def test_verdict_independent_despite_coarse_schemes():
    table, v = assess_solver_independence(planted(adaptive_rows(0.80, 0.805, 0.809, 0.809)), 0.01)
    assert v["solver_independent"] and v["worst_refinement"] == "d5"
    assert v["max_refinement_shift"] == pytest.approx(0.009)
    assert list(table.index[table["refinement"]]) == ["d4", "d5", "d6"] and v["reference"] == "d6"
    assert bool(table.loc["rk4-2", "exceeds"]) and not bool(table.loc["rk4-2", "refinement"])


def test_verdict_flags_a_refinement_shift():
    table, v = assess_solver_independence(planted(adaptive_rows(0.80, 0.78, 0.75, 0.75)), 0.01)
    assert not v["solver_independent"] and v["worst_refinement"] == "d5"
    assert v["max_refinement_shift"] == pytest.approx(0.05)
    assert v["reference_converged"] is True
    _, v = assess_solver_independence(planted(adaptive_rows(0.80, 0.78, 0.70, 0.75)), 0.01)
    assert v["reference_converged"] is False and v["max_refinement_shift"] == pytest.approx(0.10)
    _, v = assess_solver_independence(planted(adaptive_rows(0.80, 0.78, 0.70, 0.75)), 0.2)
    assert v["solver_independent"]


def test_verdict_with_a_failed_refinement():
    _, v = assess_solver_independence(planted(adaptive_rows(0.80, 0.80, 0.80, NAN)), 0.01)
    assert not v["solver_independent"] and v["failed_refinements"] == ["d6"]
    assert v["reference"] == "d6"


def test_verdict_for_a_fixed_step_model():
    rows = [("own", "rk4", NAN, 4, True, 0.80), ("rk4-2", "rk4", NAN, 2, False, 0.50),
            ("rk4-8", "rk4", NAN, 8, False, 0.805), ("euler-64", "euler", NAN, 64, False, 0.60),
            ("d5", "dopri5", 1e-5, 0, False, 0.81)]
    table, v = assess_solver_independence(planted(rows), 0.02)
    assert list(table.index[table["refinement"]]) == ["rk4-8", "d5"]
    assert v["solver_independent"] and v["reference"] == "d5" and v["reference_converged"] is None
    with pytest.raises(ConfigError, match="threshold"):
        assess_solver_independence(planted(rows), 1.5)


def test_verdict_tighter_rtol_only_is_no_refinement():
    rows = [("own", "dopri5", 1e-3, 0, True, 0.8), ("d4", "dopri5", 1e-4, 0, False, 0.5),
            ("d2", "dopri5", 1e-2, 0, False, 0.1)]
    table, _ = assess_solver_independence(planted(rows, own_rtol=1e-3, own_atol=1e-5), 0.01)
    # tol 1e-4 is looser than the own atol 1e-5: not a refinement; it is still the tightest, hence the reference
    assert table["refinement"].tolist() == [False, True, False]
    assert table["reference"].tolist() == [False, True, False]


# --- shared helpers ---------------------------------------------------------------------------------------------------

def test_override_solver_sets_and_restores():
    model = create_model("dcn-ode", in_channels=1, width=0.125)
    with override_solver(model, {"rtol": 1e-5}, per_block={"block2": {"solver": "rk4", "options": {"step_size": 0.5}}}):
        assert [b.rtol for b in model.blocks().values()] == [1e-5] * 3
        assert model.block2.solver == "rk4" and model.block2.options == {"step_size": 0.5}
    assert solver_state(model.block2) == {"T": 2.0, "solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "options": {}}
    with pytest.raises(RuntimeError, match="inside"):
        with override_solver(model, {"T": 0.5}):
            raise RuntimeError("inside")
    assert [b.T for b in model.blocks().values()] == [2.0] * 3


@pytest.mark.parametrize("settings,per_block,match", [({"tol": 1e-3}, None, "unknown solver setting"),
                                                      ({"T": 0}, None, "must be a number > 0"),
                                                      ({"solver": "euler"}, None, "needs options"),
                                                      ({"solver": "nope"}, None, "unknown ODE solver"),
                                                      (None, {"block4": {"T": 1.0}}, "no ODE block")])
def test_override_solver_bad_settings(settings, per_block, match):
    model = create_model("dcn-ode", in_channels=1, width=0.125)
    with pytest.raises(ConfigError, match=match):
        with override_solver(model, settings, per_block=per_block):
            pass
    assert all(solver_state(b)["T"] == 2.0 and solver_state(b)["solver"] == "dopri5" for b in model.blocks().values())


def test_evaluate_matches_forward_passes():
    torch.manual_seed(2)
    model = create_model("dcn-ode", in_channels=1, width=0.125).eval()
    x = torch.randn(5, 1, 28, 28)
    res = evaluate(model, x, [0, 1, 2, 3, 4], batch_size=2, keep_logits=True)
    counts = []
    with torch.no_grad():
        logits = []
        for start in range(0, 5, 2):  # the same batches, run as plain forward passes
            reset_nfe(model)
            logits.append(model(x[start:start + 2]))
            counts.append([v["forward"] for v in nfe(model).values()])
    logits = torch.cat(logits).numpy()
    np.testing.assert_array_equal(res["logits"].values, logits)
    np.testing.assert_array_equal(res["nfe"].values, counts)
    assert res.attrs["accuracy"] == float(np.mean(logits.argmax(1) == np.arange(5)))
    # input_scale multiplies a block's input before it is solved
    scaled = evaluate(model, x, batch_size=5, input_scale={"block2": 0.5}, keep_logits=True)
    with torch.no_grad():
        h = model.down1(model.block1(model.stem(x))) * 0.5
        expected = model.head(model.block3(model.down2(model.block2(h))))
    np.testing.assert_array_equal(scaled["logits"].values, expected.numpy())
    assert np.isnan(scaled.attrs["accuracy"])  # no labels
    with pytest.raises(ConfigError, match="unknown block"):
        evaluate(model, x, input_scale={"block9": 0.5})
