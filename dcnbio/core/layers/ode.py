"""Continuous-depth blocks: ``dh/dt = f(h, t)`` solved with torchdiffeq (paper Eq. 2).

The dynamics follow the paper's reference code::

    f(h, t) = GN(conv2(t ⊕ act(GN(conv1(t ⊕ act(GN(h)))))))

where ``t ⊕ h`` appends a constant channel filled with ``t`` (so each conv sees
``C + 1`` input channels).  The solver, tolerances, end time and adjoint are
attributes of the block, passed to torchdiffeq by name; nothing is vendored.

Function evaluations (NFE) are counted by the block, through a forward pre-hook
on its dynamics module (so any ``nn.Module`` ``f(t, h)`` can serve as dynamics),
separately for the forward solve and for the backward (adjoint) solve.  Any
evaluation made while :meth:`ODEBlock.solve` runs is a forward evaluation; the
adjoint solve runs later, from ``loss.backward()``, and its evaluations count as
backward.  With ``adjoint=False`` gradients come from backpropagating through the
solver's operations and ``nfe_backward`` stays 0.
"""
import math

import torch
import torchdiffeq
from torch import nn

from ...errors import ConfigError, SolverError
from .srf import filter_cache

#: Solvers by name: torchdiffeq's methods (its public ``odeint(method=...)``; tests/test_ode.py checks that
#: torchdiffeq accepts each of them).
SOLVERS = ("adaptive_heun", "bosh3", "dopri5", "dopri8", "euler", "explicit_adams", "fehlberg2", "fixed_adams",
           "heun2", "heun3", "implicit_adams", "midpoint", "rk4", "scipy_solver")
ADAPTIVE = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")


class Integrator:
    """Who integrates an ODE block's solves without the adjoint (direct backprop and no-grad solves), for the
    solvers it names; an entry of :data:`INTEGRATORS`.

    Parameters
    ----------
    solvers : tuple of str
        The solver names it integrates; any other solver of a block that names it is torchdiffeq's.
    solve : callable ``(func, h0, grid, *, rtol, atol, options, stack) -> Tensor or list``
        The states at ``grid`` (``h0`` first): one stacked tensor, or with ``stack=False`` a list.
    check : callable ``(options) -> dict``, optional
        Validates the solver options (raises :class:`~dcnbio.errors.ConfigError`).
    """

    def __init__(self, solvers, solve, check=None):
        self.solvers = tuple(solvers)
        self.solve = solve
        self.check = check


#: Integrators by name: ``"torchdiffeq"`` (``None``: torchdiffeq's ``odeint``) in the core; :mod:`dcnbio.fast`
#: registers ``"dcnbio"`` (its own dopri5: the same steps and states, faster arithmetic).
INTEGRATORS = {"torchdiffeq": None}


def register_integrator(name, integrator):
    """Add the integrator ``name`` (an :class:`Integrator`) to :data:`INTEGRATORS`."""
    if name == "torchdiffeq" or not isinstance(integrator, Integrator):
        raise ConfigError(f"cannot register {name!r}: torchdiffeq is the core's, and an entry must be an Integrator")
    INTEGRATORS[name] = integrator


def check_solver(method):
    """``method`` if torchdiffeq knows it (:data:`SOLVERS`), else a :class:`~dcnbio.errors.ConfigError`."""
    if method not in SOLVERS:
        raise ConfigError(f"unknown ODE solver {method!r}; choose one of {', '.join(SOLVERS)}")
    return method


def integrator_entry(integrator):
    """The :data:`INTEGRATORS` entry of ``integrator`` (``None``: torchdiffeq's), else a ConfigError."""
    if integrator not in INTEGRATORS:
        raise ConfigError(f"unknown integrator {integrator!r}; choose one of {', '.join(INTEGRATORS)} "
                          "(`import dcnbio.fast` registers dcnbio)")
    return INTEGRATORS[integrator]


def check_solver_options(options):
    """``options`` if its fixed-grid ``step_size`` (when given) is a finite number > 0, else a ConfigError."""
    step = (options or {}).get("step_size")
    if step is not None and not (isinstance(step, (int, float)) and not isinstance(step, bool)
                                 and math.isfinite(step) and step > 0):
        raise ConfigError(f"step_size must be a finite number > 0, got {step!r}")
    return options


def check_integrator(integrator, solver, options):
    """Validate the integrator choice against the solver and its options."""
    entry = integrator_entry(integrator)
    if entry is not None and solver in entry.solvers and entry.check is not None:
        entry.check(dict(options or {}))
    return integrator


def group_norm(channels, max_groups=32):
    """``GroupNorm(min(32, C), C)`` as in the paper; ``gcd(32, C)`` groups when C is no multiple of 32."""
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


class TimeConcat(nn.Module):
    """Apply ``conv`` to ``t ⊕ x`` (a constant channel filled with t appended)."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, t, x):
        if getattr(self.conv, "accepts_time_channel", False):  # SRF layers add the constant channel's term
            return self.conv(x, t, time_channel=True)
        tt = torch.ones_like(x[:, :1]) * t
        xt = torch.cat([x, tt], dim=1)
        if getattr(self.conv, "depends_on_t", None) is not None:
            return self.conv(xt, t)
        return self.conv(xt)


class ODEFunc(nn.Module):
    """The block dynamics ``f(t, h)`` of the paper (the :class:`ODEBlock` counts its evaluations).

    Parameters
    ----------
    channels : int
    make_conv : callable ``(in_channels, out_channels) -> nn.Module``
        Builds each of the two convolutions (pixel or SRF); called with ``C + 1`` inputs.
    act : nn.Module
    """

    def __init__(self, channels, make_conv, act):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = TimeConcat(make_conv(channels + 1, channels))
        self.norm2 = group_norm(channels)
        self.conv2 = TimeConcat(make_conv(channels + 1, channels))
        self.norm3 = group_norm(channels)
        self.act = act

    def forward(self, t, h):
        out = self.conv1(t, self.act(self.norm1(h)))
        out = self.conv2(t, self.act(self.norm2(out)))
        return self.norm3(out)


class ODEBlock(nn.Module):
    """Integrate ``func`` from 0 to ``T`` and return ``h(T)``.

    Parameters
    ----------
    func : nn.Module
        Dynamics ``func(t, h)``; any module (the block counts its calls with a forward pre-hook).
    T : float
        End time (2 for DCNs, 1 for ODE-Net in the paper).
    solver : str
        Any torchdiffeq method name (``dopri5`` by default).
    rtol, atol : float
        Tolerances of adaptive solvers (1e-3 in the paper).
    adjoint : bool
        Backpropagate with the adjoint method (``odeint_adjoint``) instead of through the solver.
    seminorm : bool
        Use the seminorm for the adjoint's error control (Kidger et al. 2021): fewer backward NFE.
    options : dict, optional
        Solver options passed to torchdiffeq (``step_size`` for fixed-grid methods,
        ``min_step``, ``max_num_steps``, ``first_step`` ...).
    integrator : str
        A name in :data:`INTEGRATORS`: who integrates the solves without the adjoint (direct backprop and
        no-grad solves) — ``"torchdiffeq"``, or with :mod:`dcnbio.fast` ``"dcnbio"`` (its dopri5: the same steps
        and states, faster arithmetic, step sizes not differentiated).  Solvers the integrator does not name and
        the adjoint's solves are always torchdiffeq's.
    name : str
        Shown in error messages.

    Attributes
    ----------
    nfe_forward, nfe_backward : int
        Function evaluations since the last :meth:`reset_nfe`.
    """

    def __init__(self, func, *, T=2.0, solver="dopri5", rtol=1e-3, atol=1e-3, adjoint=True,
                 seminorm=False, options=None, integrator="torchdiffeq", name="block"):
        super().__init__()
        self.func = func
        self.T = T
        self.solver = check_solver(solver)
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.seminorm = seminorm
        self.options = dict(options or {})
        self.name = name
        self.integrator = check_integrator(integrator, solver, self.options)
        if not T > 0:
            raise ConfigError(f"end time T of {name} must be > 0, got {T}")
        check_solver_options(self.options)
        if solver not in ADAPTIVE and "step_size" not in self.options and "grid_constructor" not in self.options:
            self.options["step_size"] = T / 10
        # NFE bookkeeping lives in the block: every call of func (by the solver, the initial-step probe or
        # the adjoint's backward solve) passes through the hook
        self._nfe = {"forward": 0, "backward": 0}
        self._phase = "backward"
        self._last_t = float("nan")
        func.register_forward_pre_hook(self._count_evaluation)

    def _count_evaluation(self, module, args):
        self._nfe[self._phase] += 1
        if args:  # kept as a tensor: no device sync per evaluation
            self._last_t = args[0].detach() if torch.is_tensor(args[0]) else args[0]

    @property
    def nfe_forward(self):
        """Function evaluations of the forward solves since the last :meth:`reset_nfe`."""
        return self._nfe["forward"]

    @property
    def nfe_backward(self):
        """Function evaluations of the adjoint's backward solves since the last :meth:`reset_nfe` (0 without the
        adjoint)."""
        return self._nfe["backward"]

    def reset_nfe(self):
        """Set both evaluation counters to 0."""
        self._nfe["forward"] = 0
        self._nfe["backward"] = 0

    def solver_settings(self):
        """The solver configuration as plain values (for provenance attrs)."""
        return {"solver": self.solver, "rtol": self.rtol, "atol": self.atol, "T": self.T,
                "adjoint": self.adjoint, "seminorm": self.seminorm, "options": dict(self.options),
                "integrator": self.integrator}

    def forward(self, h0):
        return self._solve(h0, None, final_only=True)

    def solve(self, h0, times=None):
        """States at ``times`` from one solve (dense output of the solver, no recording in f).

        Parameters
        ----------
        h0 : Tensor ``(B, C, H, W)``
        times : sequence of float or 1-D Tensor, optional
            Increasing times in ``[0, T]``; default ``[0, T]``.

        Returns
        -------
        Tensor ``(len(times), B, C, H, W)``.
        """
        return self._solve(h0, times)

    def _solve(self, h0, times, final_only=False):
        """:meth:`solve`, or with ``final_only`` the state at ``T`` alone (not sliced from a stack of states)."""
        grid, keep = self._grid(times, h0)
        kwargs = dict(rtol=self.rtol, atol=self.atol, method=self.solver, options=self.options)
        own = integrator_entry(self.integrator)  # options were checked when the block was built
        self._phase = "forward"
        try:
            # SRF layers with t-independent filters build them once per solve (srf.filter_cache), and once
            # more for the adjoint's backward solve, which runs after this returns (cache.bind re-opens it)
            with filter_cache(self.func) as cache:
                if self.adjoint and torch.is_grad_enabled():
                    if self.seminorm:
                        kwargs["adjoint_options"] = dict(norm="seminorm")
                    kwargs["adjoint_params"] = tuple(self.func.parameters())
                    states = torchdiffeq.odeint_adjoint(cache.bind(self.func), h0, grid, **kwargs)
                elif own is not None and self.solver in own.solvers:
                    states = own.solve(self.func, h0, grid, rtol=self.rtol, atol=self.atol, options=self.options,
                                       stack=not final_only)
                else:
                    states = torchdiffeq.odeint(self.func, h0, grid, **kwargs)
        except (AssertionError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise SolverError(self.name, float(self._last_t), reason) from None
        finally:
            self._phase = "backward"
        if not bool(torch.isfinite(states[-1]).all()):
            raise SolverError(self.name, float(self._last_t), "non-finite state")
        return states[-1] if final_only else states[keep]

    def _grid(self, times, h0):
        if times is None:
            return torch.tensor([0.0, float(self.T)], dtype=h0.dtype, device=h0.device), slice(None)
        grid = torch.as_tensor(times, dtype=h0.dtype).detach().to(h0.device).flatten()
        if grid.numel() == 0:
            raise ConfigError(f"time grid for {self.name} is empty")
        if not bool(torch.isfinite(grid).all()) or float(grid.min()) < 0 or float(grid.max()) > self.T + 1e-6:
            raise ConfigError(f"times for {self.name} must lie in [0, T={self.T}], got {grid.tolist()}")
        if grid.numel() > 1 and not bool((grid[1:] > grid[:-1]).all()):
            raise ConfigError(f"times for {self.name} must be strictly increasing, got {grid.tolist()}")
        if float(grid[0]) > 0:
            return torch.cat([grid.new_zeros(1), grid]), slice(1, None)
        if grid.numel() == 1:  # only t = 0 requested: the solver needs an end point
            return torch.cat([grid, grid.new_full((1,), float(self.T))]), slice(0, 1)
        return grid, slice(None)

    def extra_repr(self):
        return f"name={self.name!r}, T={self.T}, solver={self.solver!r}, rtol={self.rtol}, atol={self.atol}, " \
               f"adjoint={self.adjoint}, seminorm={self.seminorm}, integrator={self.integrator!r}"
