"""dcnbio.fast.dopri5: torchdiffeq's dopri5 algorithm, checked against torchdiffeq and closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchdiffeq

from dcnbio.errors import ConfigError, SolverError
from dcnbio.fast.dopri5 import odeint_dopri5
from dcnbio.core.layers.ode import ODEBlock
from dcnbio.core.models import build_model, create_model, nfe


class ConvDynamics(torch.nn.Module):
    """A small nonlinear, time-dependent conv field that counts its evaluations and records their times."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.times = []

    def forward(self, t, y):
        self.times.append(float(t.detach()))
        return torch.tanh(self.conv(y)) * (1 + t) - 0.3 * y


def make(dtype, seed=0):
    torch.manual_seed(seed)
    f = ConvDynamics().to(dtype)
    y0 = torch.randn(2, 3, 6, 6, dtype=dtype, requires_grad=True)
    return f, y0


def solve_both(f, y0, times, tol, options):
    f.times = []
    theirs = torchdiffeq.odeint(f, y0, times, rtol=tol, atol=tol, method="dopri5", options=dict(options))
    their_times = f.times
    f.times = []
    ours = odeint_dopri5(f, y0, times, rtol=tol, atol=tol, options=dict(options))
    return theirs, their_times, ours, f.times


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
@pytest.mark.parametrize("options", [{}, {"first_step": 0.05}, {"max_step": 0.1}, {"safety": 0.8, "dfactor": 0.3}])
def test_same_steps_and_states_as_torchdiffeq(tol, options):
    f, y0 = make(torch.float64)
    times = torch.tensor([0.0, 0.3, 1.1, 2.0], dtype=torch.float64)  # output times inside steps: dense output
    theirs, their_times, ours, our_times = solve_both(f, y0, times, tol, options)
    assert len(our_times) == len(their_times) > 6
    # the error estimate is a difference of nearly equal sums (≈ tol · |y|), so summation order alone moves
    # it by ~1e-16 / tol relative, and the step sizes chosen from it by as much
    assert our_times == pytest.approx(their_times, rel=1e-8, abs=1e-12)
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-10)


def test_gradients_equal_torchdiffeqs_when_the_step_sizes_are_given():
    f, y0 = make(torch.float64)
    times = torch.tensor([0.0, 2.0], dtype=torch.float64)
    theirs, _, ours, _ = solve_both(f, y0, times, 1e-4, {"first_step": 0.05})
    params = [y0, *f.parameters()]
    g = torch.randn_like(ours[-1])
    for a, b in zip(torch.autograd.grad(ours[-1], params, g), torch.autograd.grad(theirs[-1], params, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradients_omit_only_torchdiffeqs_step_size_term():
    """With the automatic first step torchdiffeq also differentiates the step positions: a small difference
    that shrinks with the tolerance, while both approach the exact gradient (direct vs adjoint at 1e-10)."""
    f, y0 = make(torch.float64)
    times = torch.tensor([0.0, 2.0], dtype=torch.float64)
    params = [y0, *f.parameters()]
    g = torch.randn(y0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def grads(solution):
        return torch.cat([v.flatten() for v in torch.autograd.grad(solution[-1], params, g)])

    exact = grads(torchdiffeq.odeint_adjoint(f, y0, times, rtol=1e-10, atol=1e-10, method="dopri5",
                                             adjoint_params=tuple(f.parameters())))
    gaps = []
    for tol in (1e-3, 1e-6):
        theirs, _, ours, _ = solve_both(f, y0, times, tol, {})
        ours_g, theirs_g = grads(ours), grads(theirs)
        scale = float(exact.abs().max())
        gaps.append(float((ours_g - theirs_g).abs().max()) / scale)
        assert float((ours_g - exact).abs().max()) / scale < 100 * tol
    assert 0 < gaps[1] < gaps[0] < 1e-2


@pytest.mark.parametrize("tol", [1e-4, 1e-8])
def test_linear_ode_matches_closed_form(tol):
    lam = torch.tensor([-1.5, 0.4, 2.0], dtype=torch.float64)
    y0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    times = torch.linspace(0, 1.5, 7, dtype=torch.float64)
    ys = odeint_dopri5(lambda t, y: lam * y, y0, times, rtol=tol, atol=tol)
    exact = y0 * torch.exp(lam * times[:, None])
    err = float(((ys - exact).abs() / (tol + tol * exact.abs())).max())
    assert err < 50  # global error within a small multiple of the local tolerance
    listed = odeint_dopri5(lambda t, y: lam * y, y0, times, rtol=tol, atol=tol, stack=False)
    assert isinstance(listed, list) and torch.equal(torch.stack(listed), ys)  # the same states, unstacked


def test_time_dependent_ode_and_gradient_match_closed_form():
    # dy/dt = a t y: y(T) = y0 exp(a T^2 / 2), dy(T)/da = y(T) T^2 / 2
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.3], dtype=torch.float64)
    T = 1.7
    yT = odeint_dopri5(lambda t, y: a * t * y, y0, [0.0, T], rtol=1e-9, atol=1e-9)[-1]
    exact = y0 * math.exp(0.7 * T ** 2 / 2)
    torch.testing.assert_close(yT, exact, rtol=1e-7, atol=0)
    (da,) = torch.autograd.grad(yT.sum(), a)
    torch.testing.assert_close(da, exact.sum() * T ** 2 / 2, rtol=1e-6, atol=0)


def test_bad_inputs_raise_actionable_errors():
    y0 = torch.ones(3)
    with pytest.raises(ConfigError, match="does not support option"):
        odeint_dopri5(lambda t, y: y, y0, [0.0, 1.0], options={"step_t": [0.5]})
    with pytest.raises(ConfigError, match="strictly increasing"):
        odeint_dopri5(lambda t, y: y, y0, [0.0, 0.0])
    with pytest.raises(ConfigError, match="first_step"):
        odeint_dopri5(lambda t, y: y, y0, [0.0, 1.0], options={"first_step": -1})
    with pytest.raises(RuntimeError, match="max_num_steps"):
        odeint_dopri5(lambda t, y: 50 * torch.sin(50 * t) * y, y0, [0.0, 1.0], rtol=1e-9, atol=1e-9,
                      options={"max_num_steps": 3})
    with pytest.raises(RuntimeError, match="non-finite"):
        odeint_dopri5(lambda t, y: y * float("nan"), y0, [0.0, 1.0])


def test_ode_block_reports_solver_failures_and_validates_the_integrator():
    block = ODEBlock(lambda_module(lambda t, y: y * float("inf")), integrator="dcnbio", adjoint=False, name="b1")
    with pytest.raises(SolverError, match="b1"):
        block(torch.ones(1, 2, 3, 3))
    with pytest.raises(ConfigError, match="integrator"):
        ODEBlock(lambda_module(lambda t, y: y), integrator="scipy")
    with pytest.raises(ConfigError, match="does not support option"):
        ODEBlock(lambda_module(lambda t, y: y), integrator="dcnbio", options={"jump_t": [1.0]})
    # another solver with the dcnbio integrator is torchdiffeq's (documented), so rk4 still works
    rk4 = ODEBlock(lambda_module(lambda t, y: -y), solver="rk4", integrator="dcnbio", T=1.0)
    torch.testing.assert_close(rk4(torch.ones(2)), torch.full((2,), math.exp(-1.0)), rtol=1e-5, atol=0)


def lambda_module(fn):
    class Fn(torch.nn.Module):
        def forward(self, t, y):
            return fn(t, y)
    return Fn()


@pytest.mark.parametrize("model", ["dcn-ode", "dcn-sigma-ji", "dcn-sigma-alpha-t"])
def test_network_with_dcnbio_integrator_matches_torchdiffeq(model):
    """The same steps and the same model function: float64 gradients agree to rounding; float32 ones to its noise.

    In float32 the two integrators sum the stages in different orders, and backpropagation through ~30 steps
    amplifies that rounding to ~1e-4 of the largest gradient (3e-4 measured on an AMD AVX2 machine, below 1e-4 on an
    Intel AVX-512 one); float64 removes the ambiguity, so the equality of gradients is tested there.
    """
    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 14, 14), torch.randint(0, 10, (4,))
    base = create_model(model, in_channels=1, num_classes=10, width=0.25, formulation="auto", adjoint=False,
                        solver_options={"first_step": 0.1})
    outs = {}
    for dtype in (torch.float32, torch.float64):
        for integrator in ("torchdiffeq", "dcnbio"):
            m = build_model(base.config.replace(integrator=integrator))
            m.load_state_dict(base.state_dict())
            m = m.to(dtype)
            logits = m(x.to(dtype))
            F.cross_entropy(logits, y).backward()
            outs[integrator, dtype] = (logits.detach(), nfe(m), {n: p.grad for n, p in m.named_parameters()})
            with torch.no_grad():  # the no-grad path (extraction) too
                torch.testing.assert_close(m(x.to(dtype)), logits.detach(), rtol=1e-6, atol=1e-6)
    (la, na, ga), (lb, nb, gb) = outs["torchdiffeq", torch.float32], outs["dcnbio", torch.float32]
    assert na == nb
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-5)
    (la64, na64, ga64), (lb64, nb64, gb64) = outs["torchdiffeq", torch.float64], outs["dcnbio", torch.float64]
    assert na64 == nb64 == na
    torch.testing.assert_close(lb64, la64, rtol=1e-12, atol=1e-12)
    scale = max(float(g.abs().max()) for g in ga64.values())
    assert max(float((ga64[n] - gb64[n]).abs().max()) for n in ga64) / scale < 1e-10
    for g in (ga, gb):  # each float32 gradient is the float64 one up to float32 rounding
        assert max(float((g[n].double() - ga64[n]).abs().max()) for n in g) / scale < 2e-3


def test_config_round_trip_and_old_checkpoints_default_to_torchdiffeq():
    m = create_model("dcn-ode", in_channels=1, num_classes=10, width=0.25, integrator="dcnbio")
    d = m.config.to_dict()
    assert d["integrator"] == "dcnbio"
    assert build_model(type(m.config).from_dict(d)).config.integrator == "dcnbio"
    d.pop("integrator")  # a checkpoint written before the option existed
    assert type(m.config).from_dict(d).integrator == "torchdiffeq"
    with pytest.raises(ConfigError, match="integrator"):
        m.config.replace(integrator="euler")
