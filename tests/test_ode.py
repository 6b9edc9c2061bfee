"""ODE blocks against closed forms: linear ODEs (matrix exponential), NFE accounting, solver failures.

The dynamics here are plain ``nn.Module``s ``f(t, h)`` with no counting
attributes: :class:`ODEBlock` accepts any module (its docstring says so) and
counts evaluations itself.
"""
import math

import pytest
import torch
from torch import nn

from dcnbio.errors import ConfigError, SolverError
from dcnbio.core.layers.ode import ODEBlock

F64 = dict(dtype=torch.float64)


class Linear(nn.Module):
    """``dh/dt = A h`` for a batch of vectors ``h`` of shape ``(B, n)``."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, h):
        return h @ self.A.T


class StepCounter(nn.Module):
    """Wraps dynamics and counts the solver's attempted steps through torchdiffeq's callbacks.

    ``callback_step`` is called once before every attempted step (accepted or rejected) of an
    adaptive solver; ``*_adjoint`` during the adjoint (backward) solve.  This counts steps
    independently of the ODE block's evaluation counter.
    """

    def __init__(self, func):
        super().__init__()
        self.func = func
        self.steps = {"forward": 0, "backward": 0}
        self.accepted = 0
        self.rejected = 0

    def forward(self, t, h):
        return self.func(t, h)

    def callback_step(self, t0, y0, dt):
        self.steps["forward"] += 1

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1

    def callback_step_adjoint(self, t0, y0, dt):
        self.steps["backward"] += 1


class Zero(nn.Module):
    def forward(self, t, h):
        return torch.zeros_like(h)


class Square(nn.Module):
    """``dh/dt = h²``: with ``h(0) = 1`` the solution ``1 / (1 - t)`` blows up at ``t = 1``."""

    def forward(self, t, h):
        return h * h


def random_system(n=4, batch=3):
    """A fixed random A with moderate rates (‖A‖₂ ≈ 1.6 for seed 0) and a batch of initial states."""
    A = torch.randn(n, n, **F64) * 0.5
    h0 = torch.randn(batch, n, **F64)
    return A, h0


def exact(A, h0, t):
    """``h(t) = exp(A t) h0`` for a batch of row vectors."""
    return h0 @ torch.linalg.matrix_exp(A * t).T


# --- linear ODE vs the matrix exponential ---------------------------------------------------------

TIGHT = dict(rtol=1e-10, atol=1e-10)
# dopri5 keeps the local error of each step below ~1e-10 (relative + absolute); summed over the ~60
# steps and amplified by at most exp(‖A‖ T) ≈ e³ the global error stays well below 1e-7.
GLOBAL_TOL = dict(rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("adjoint", [False, True])
def test_linear_ode_matches_matrix_exponential(adjoint):
    A, h0 = random_system()
    block = ODEBlock(Linear(A), T=2.0, adjoint=adjoint, **TIGHT)
    torch.testing.assert_close(block(h0), exact(A, h0, 2.0), **GLOBAL_TOL)


def test_solve_at_several_times_matches_matrix_exponential():
    A, h0 = random_system()
    block = ODEBlock(Linear(A), T=2.0, **TIGHT)
    times = [0.0, 0.3, 1.1, 1.75, 2.0]
    states = block.solve(h0, times)
    assert states.shape == (len(times), *h0.shape)
    torch.testing.assert_close(states[0], h0, rtol=0, atol=0)  # the initial state is returned as is
    for state, t in zip(states, times):
        # intermediate times come from dopri5's 4th-order dense output, which is as accurate as the steps
        torch.testing.assert_close(state, exact(A, h0, t), **GLOBAL_TOL)


@pytest.mark.parametrize("times", [[0.5, 1.5], [2.0], [0.0], torch.tensor([0.25, 1.0, 2.0])])
def test_solve_times_not_starting_at_zero(times):
    A, h0 = random_system()
    block = ODEBlock(Linear(A), T=2.0, **TIGHT)
    states = block.solve(h0, times)
    times = torch.as_tensor(times).tolist()
    assert states.shape == (len(times), *h0.shape)
    for state, t in zip(states, times):
        torch.testing.assert_close(state, exact(A, h0, t), **GLOBAL_TOL)


def gradients(block, A, h0, w):
    h0 = h0.clone().requires_grad_(True)
    loss = (block(h0) * w).sum()
    return torch.autograd.grad(loss, (block.func.A, h0))


@pytest.mark.parametrize("tol", [1e-6, 1e-8])
@pytest.mark.parametrize("seminorm", [False, True])
def test_adjoint_gradients_equal_direct_backprop_and_exact(seminorm, tol):
    A, h0 = random_system()
    w = torch.randn(h0.shape, **F64)
    # exact gradient of w · exp(A T) h0 by autograd through the matrix exponential
    A_ = A.clone().requires_grad_(True)
    h0_ = h0.clone().requires_grad_(True)
    exact_grads = torch.autograd.grad((exact(A_, h0_, 2.0) * w).sum(), (A_, h0_))
    direct = gradients(ODEBlock(Linear(A), T=2.0, adjoint=False, rtol=tol, atol=tol), A, h0, w)
    adjoint = gradients(ODEBlock(Linear(A), T=2.0, adjoint=True, seminorm=seminorm, rtol=tol, atol=tol),
                        A, h0, w)
    # both gradients carry the global error of adaptive solves at local tolerance `tol`: a problem-dependent
    # multiple of tol (growth exp(‖A‖ T) ≈ e³ over 30-60 steps; measured ≤ 20 tol on gradients of size ≤ 20).
    # 1000 tol keeps a margin; a missing or wrong adjoint term would be off by O(1).
    close = dict(rtol=1e3 * tol, atol=1e3 * tol)
    for g_direct, g_adjoint, g_exact in zip(direct, adjoint, exact_grads):
        torch.testing.assert_close(g_adjoint, g_direct, **close)
        torch.testing.assert_close(g_direct, g_exact, **close)
        torch.testing.assert_close(g_adjoint, g_exact, **close)


def test_seminorm_needs_no_more_backward_evaluations():
    """The seminorm ignores the parameter-gradient integrals in the adjoint's error control."""
    A, h0 = random_system(n=6)
    w = torch.randn(h0.shape, **F64)
    counts = {}
    for seminorm in (False, True):
        block = ODEBlock(Linear(A), T=2.0, adjoint=True, seminorm=seminorm, rtol=1e-6, atol=1e-6)
        gradients(block, A, h0, w)
        counts[seminorm] = block.nfe_backward
    assert 0 < counts[True] <= counts[False]


# --- NFE accounting -------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [0.05, 1.0, 2.0, 50.0])
def test_dopri5_nfe_closed_form_for_zero_dynamics(T):
    """dh/dt = 0: the error estimate is exactly 0, so every step is accepted and grows ×10.

    torchdiffeq's initial step is 1e-6 when f(0) = 0 (and f at the probe point is 0 too), so after
    k steps the solver has reached ``1e-6 (10^k - 1) / 9``; it stops at the first k reaching T
    (it steps past T and interpolates).  NFE = 2 (f0 and the initial-step probe) + 6 per step
    (7 stages, the first reused from the previous step).
    """
    steps = math.ceil(math.log10(9 * T / 1e-6 + 1))
    func = StepCounter(Zero())
    block = ODEBlock(func, T=T, adjoint=False)
    h0 = torch.randn(2, 3, **F64)
    torch.testing.assert_close(block(h0), h0, rtol=0, atol=0)
    assert func.steps["forward"] == func.accepted == steps and func.rejected == 0
    assert block.nfe_forward == 2 + 6 * steps
    assert block.nfe_backward == 0


def test_dopri5_nfe_counts_rejected_steps():
    """On a problem where dopri5 rejects steps, NFE = 2 + 6 · (accepted + rejected) attempted steps."""
    # fast decay plus a fast oscillation: the initial step guess is too long and gets rejected
    A = torch.tensor([[-30.0, 40.0], [-40.0, -1.0]], **F64)
    func = StepCounter(Linear(A))
    block = ODEBlock(func, T=2.0, adjoint=False, rtol=1e-6, atol=1e-6)
    h0 = torch.tensor([[1.0, 0.5]], **F64)
    block(h0)
    assert func.rejected > 0, "test set-up: this problem should make dopri5 reject steps"
    assert func.steps["forward"] == func.accepted + func.rejected
    assert block.nfe_forward == 2 + 6 * func.steps["forward"]


def test_forward_and_backward_nfe_with_adjoint():
    A, h0 = random_system()
    func = StepCounter(Linear(A))
    block = ODEBlock(func, T=2.0, adjoint=True, rtol=1e-6, atol=1e-6)
    loss = block(h0.clone().requires_grad_(True)).square().sum()
    forward = block.nfe_forward
    assert forward == 2 + 6 * func.steps["forward"] > 2
    assert block.nfe_backward == 0  # nothing evaluated backwards yet
    loss.backward()
    assert block.nfe_forward == forward  # the backward solve does not count as forward
    # the adjoint solve over [0, T] is one more dopri5 solve, counted by its own step callback
    assert block.nfe_backward == 2 + 6 * func.steps["backward"] > 2
    block.reset_nfe()
    assert block.nfe_forward == 0 and block.nfe_backward == 0


def test_no_backward_nfe_without_adjoint():
    A, h0 = random_system()
    block = ODEBlock(Linear(A), T=2.0, adjoint=False, rtol=1e-6, atol=1e-6)
    block(h0.clone().requires_grad_(True)).square().sum().backward()
    forward = block.nfe_forward
    assert forward > 2
    assert block.nfe_backward == 0
    assert block.func.A.grad is not None
    # a second forward adds to the count; reset zeroes it
    with torch.no_grad():
        block(h0)
    assert block.nfe_forward == 2 * forward
    block.reset_nfe()
    assert block.nfe_forward == 0


def test_adjoint_block_under_no_grad_counts_forward_only():
    A, h0 = random_system()
    block = ODEBlock(Linear(A), T=2.0, adjoint=True)
    with torch.no_grad():
        block(h0)
    assert block.nfe_forward > 0 and block.nfe_backward == 0


@pytest.mark.parametrize("solver, evals_per_step", [("euler", 1), ("rk4", 4), ("midpoint", 2)])
def test_fixed_grid_solvers_run_and_count(solver, evals_per_step):
    A, h0 = random_system()
    errors = []
    for step in (0.25, 0.125):
        block = ODEBlock(Linear(A), T=2.0, solver=solver, adjoint=False, options=dict(step_size=step))
        errors.append(float((block(h0) - exact(A, h0, 2.0)).abs().max().detach()))
        # a fixed grid of T / step steps with the method's evaluations per step (step sizes exact in binary)
        assert block.nfe_forward == evals_per_step * round(2.0 / step)
    order = {"euler": 1, "midpoint": 2, "rk4": 4}[solver]
    # halving the step divides the global error by ≈ 2^order; at these steps the leading term dominates to
    # within ±30 % (higher-order terms of exp(A h) with ‖A h‖ ≤ 0.4)
    assert 2 ** order * 0.7 < errors[0] / errors[1] < 2 ** order * 1.3


def test_fixed_grid_default_step_is_a_tenth_of_T():
    A, h0 = random_system()
    block = ODEBlock(Linear(A), T=2.0, solver="euler", adjoint=False)
    assert block.solver_settings()["options"] == {"step_size": 0.2}
    block(h0)
    assert block.nfe_forward == 10


def test_solver_settings_are_plain_values():
    block = ODEBlock(Zero(), T=1.5, solver="bosh3", rtol=1e-4, atol=1e-5, adjoint=False, seminorm=True)
    assert block.solver_settings() == {"solver": "bosh3", "rtol": 1e-4, "atol": 1e-5, "T": 1.5,
                                       "adjoint": False, "seminorm": True, "options": {},
                                       "integrator": "torchdiffeq"}


# --- failures -------------------------------------------------------------------------------------

@pytest.mark.parametrize("adjoint", [False, True])
def test_blow_up_raises_solver_error_near_the_singularity(adjoint):
    block = ODEBlock(Square(), T=2.0, adjoint=adjoint, name="block7")
    h0 = torch.ones(1, 1, **F64)
    with pytest.raises(SolverError) as info:
        block(h0)
    err = info.value
    assert err.block == "block7"
    assert "block7" in str(err) and "\n" not in str(err)
    # h = 1/(1 - t) is finite before t = 1; steps shrink towards the singularity until dt underflows or
    # h overflows, both within a small fraction of the unit interval from it
    assert abs(err.time - 1.0) < 0.01
    assert f"t={err.time:.4g}" in str(err)


@pytest.mark.parametrize("times", [[0.5, 0.2], [0.0, 1.0, 1.0], [-0.1, 1.0], [0.5, 2.5], [], [float("nan")]])
def test_bad_time_grid_raises_config_error(times):
    block = ODEBlock(Zero(), T=2.0, adjoint=False)
    with pytest.raises(ConfigError, match="time") as info:
        block.solve(torch.zeros(1, 2), times)
    assert "\n" not in str(info.value)


def test_unknown_solver_and_bad_end_time_raise_config_error():
    with pytest.raises(ConfigError, match="dopri5") as info:  # the message lists the valid solvers
        ODEBlock(Zero(), solver="rk45")
    assert "rk45" in str(info.value)
    for T in (0.0, -1.0):
        with pytest.raises(ConfigError, match="T"):
            ODEBlock(Zero(), T=T)
    for step in (0.0, -0.5, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ConfigError, match="step_size must be a finite number > 0"):
            ODEBlock(Zero(), solver="rk4", options={"step_size": step})
    assert ODEBlock(Zero(), solver="rk4", options={"step_size": 3}).options["step_size"] == 3


def test_the_solver_table_is_what_torchdiffeq_accepts():
    """dcnbio's SOLVERS (written out, not read from torchdiffeq's private modules) against torchdiffeq's public
    odeint: every name is accepted and integrates dy/dt = -y to a finite value (dopri5 and rk4 to exp(-1)), and a
    name outside the table is refused by torchdiffeq too."""
    import torchdiffeq

    from dcnbio.core.layers.ode import SOLVERS

    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    y0 = torch.ones(1, dtype=torch.float64)
    for method in SOLVERS:
        options = {"step_size": 0.01} if method in ("euler", "midpoint", "rk4", "heun2", "heun3",
                                                    "explicit_adams", "implicit_adams", "fixed_adams") else {}
        y = torchdiffeq.odeint(lambda t, y: -y, y0, t, method=method, options=options, rtol=1e-7, atol=1e-9)
        assert math.isfinite(float(y[-1, 0])), method
        if method in ("dopri5", "rk4"):
            assert abs(float(y[-1, 0]) - math.exp(-1)) < 1e-6, method
    with pytest.raises(ValueError):
        torchdiffeq.odeint(lambda t, y: -y, y0, t, method="not-a-solver")
