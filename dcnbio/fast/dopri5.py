"""dcnbio's own Dormand–Prince 5(4) integrator: torchdiffeq's ``dopri5`` algorithm with lean tensor arithmetic.

Why a second implementation
---------------------------
Backpropagating through torchdiffeq's ``dopri5`` (``adjoint=False``) spends about 40 % of a width-0.25 DCN
training step on the solver's own arithmetic rather than on the dynamics (``benchmarks/RESULTS.md``): its
stages live in one ``(…, 7)`` tensor whose last axis is strided, every stage combination multiplies and sums
over that axis, every stage write is a strided copy, and autograd carries full ``(…, 7)`` gradients through
all of it.  Here the stages are a list of tensors and every combination is a chain of ``add(…, alpha=c)``;
the step-size control runs without autograd.

The same algorithm
------------------
Step for step this follows torchdiffeq 0.2.5's ``dopri5`` with the rms norm (its default for one tensor), so
that for the same ``func``, ``y0``, tolerances and options it evaluates ``func`` at the same times, the same
number of times, and returns the same states up to float rounding (``tests/test_dopri5.py`` checks both):

* the Dormand–Prince tableau, first-same-as-last;
* the initial step of Hairer, Nørsett & Wanner (Sec. II.4): ``h0 = 0.01 d0 / d1`` (or 1e-6 when ``d0`` or
  ``d1 < 1e-5``), one trial evaluation at ``t0 + h0``, ``h = min(100 h0, (0.01 / max(d1, d2))^(1/5))``;
* error ratio ``rms(err / (atol + rtol · max(|y0|, |y1|)))``, accept when ≤ 1;
* next step ``dt · min(ifactor, max(safety / ratio^(1/5), dfactor))`` with ``dfactor = 1`` after an accepted
  step (safety 0.9, ifactor 10, dfactor 0.2), ``dt · ifactor`` when the ratio is 0;
* steps may run past an output time; the state there is the 4th-order dense output through ``y0``, ``y1``,
  the Shampine midpoint and both end slopes;
* times are float64; ``func`` receives ``t`` as a 0-d tensor of the state's dtype, the last two stages at
  the float just below ``t1`` (torchdiffeq's ``Perturb.PREV``).

The one deliberate difference is in the gradient.  torchdiffeq computes the first step size with autograd, so
backpropagating through its solve also differentiates where the steps were placed (through ``h0 = 0.01 d0 /
d1``): a term of the controller, not of the model function, and absent from the adjoint.  Here step sizes are
plain numbers, so the gradient is that of the discrete solve at the chosen steps.  With a given
``first_step`` the two implementations' gradients agree to float rounding (tested).

Supported options (torchdiffeq's names): ``first_step``, ``min_step``, ``max_step``, ``max_num_steps``,
``safety``, ``ifactor``, ``dfactor``.
"""
import math

import torch

from ..errors import ConfigError

#: Options this integrator understands (torchdiffeq's names and defaults).
OPTIONS = {"first_step": None, "min_step": 0.0, "max_step": math.inf, "max_num_steps": 2 ** 31 - 1,
           "safety": 0.9, "ifactor": 10.0, "dfactor": 0.2}

ORDER = 5
# Dormand–Prince 5(4): nodes, stage coefficients, 5th-order weights (= the last stage row: FSAL), and the
# difference of the 5th- and 4th-order weights (the error estimate)
_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = ((1 / 5,),
      (3 / 40, 9 / 40),
      (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B = _A[-1] + (0.0,)
_E = (35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
      -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60)
# Shampine's midpoint weights: y(t0 + dt/2) ≈ y0 + dt Σ_j mid_j k_j
_MID = (6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
        187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2)


def check_options(options):
    """Validate ``options`` for this integrator; returns them merged with the defaults."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"the dcnbio dopri5 integrator does not support option(s) {sorted(unknown)}; "
                          f"supported: {', '.join(OPTIONS)} (use integrator='torchdiffeq' for the others)")
    merged = {**OPTIONS, **options}
    for name in ("min_step", "max_step", "safety", "ifactor", "dfactor"):
        merged[name] = float(merged[name])
    if merged["first_step"] is not None:
        merged["first_step"] = float(merged["first_step"])
        if not merged["first_step"] > 0:
            raise ConfigError(f"first_step must be > 0, got {merged['first_step']}")
    merged["max_num_steps"] = int(merged["max_num_steps"])
    return merged


def _combine(y0, ks, weights, dt):
    """``y0 + dt Σ_j w_j k_j`` (zero weights skipped; ``y0`` may be None for the bare sum).

    One new tensor, the rest accumulated into it in place: a fresh tensor per term cost a cold write of the
    whole state each (autograd allows it: an addition saves none of its operands).
    """
    out = None
    for w, k in zip(weights, ks):
        if w == 0.0:
            continue
        if out is None:
            out = torch.mul(k, w * dt) if y0 is None else torch.add(y0, k, alpha=w * dt)
        else:
            out.add_(k, alpha=w * dt)
    return out


def _rms(x):
    """Root mean square as a 0-d CPU tensor of ``x``'s dtype."""
    return x.pow(2).mean().sqrt().cpu()


def _dense_weights(x):
    """Weights ``w_j(x)`` of the dense output ``y(t0 + x dt) = y0 + dt Σ_j w_j(x) k_j``.

    torchdiffeq's quartic through ``y0``, ``y1``, ``y_mid``, ``f0 = k_0``, ``f1 = k_6`` rewritten on the stages:
    ``y0`` cancels from every power above 0, ``y1 − y0 = dt Σ b_j k_j`` and ``y_mid − y0 = dt Σ mid_j k_j``.
    """
    x2, x3, x4 = x * x, x ** 3, x ** 4
    p1 = -5 * x2 + 14 * x3 - 8 * x4  # coefficient of y1
    pm = 16 * x2 - 32 * x3 + 16 * x4  # of y_mid
    w = [b * p1 + m * pm for b, m in zip(_B, _MID)]
    w[0] += x - 4 * x2 + 5 * x3 - 2 * x4  # of dt f0
    w[-1] += x2 - 3 * x3 + 2 * x4  # of dt f1
    return w


class _Solve:
    def __init__(self, func, y0, rtol, atol, options):
        self.func = func
        self.rtol, self.atol = float(rtol), float(atol)
        self.opt = options
        self.dtype = y0.dtype

    def f(self, t, y, below=False):
        tt = torch.tensor(t, dtype=self.dtype)
        if below:  # the float just below t (torchdiffeq evaluates the stages at t1 there)
            tt = torch.nextafter(tt, tt - 1)
        return self.func(tt.to(y.device), y)

    def initial_step(self, t0, y0, f0):
        # in the state's dtype, as torchdiffeq computes it (so that both take the same first step)
        with torch.no_grad():
            scale = y0.abs().mul(self.rtol).add_(self.atol)
            d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
            if d0 < 1e-5 or d1 < 1e-5:
                h0 = torch.tensor(1e-6, dtype=self.dtype)
            else:
                h0 = 0.01 * d0 / d1
            f1 = self.f(t0 + float(h0), y0 + h0.to(y0.device) * f0)
            d2 = _rms((f1 - f0) / scale) / h0
            if d1 <= 1e-15 and d2 <= 1e-15:
                h1 = torch.clamp(h0 * 1e-3, min=1e-6)
            else:
                h1 = (0.01 / torch.maximum(d1, d2)) ** (1.0 / ORDER)
            return float(torch.minimum(100 * h0, h1))

    def next_step(self, dt, ratio, accepted):
        o = self.opt
        if ratio == 0:
            return dt * o["ifactor"]
        dfactor = 1.0 if ratio < 1 else o["dfactor"]
        return dt * min(o["ifactor"], max(o["safety"] / ratio ** (1.0 / ORDER), dfactor))

    def step(self, t0, y0, f0, dt):
        """One Dormand–Prince step: ``(y1, stages, error ratio)``."""
        ks = [f0]
        t1 = t0 + dt
        for c, a in zip(_C, _A):
            yi = _combine(y0, ks, a, dt)
            ks.append(self.f(t1 if c == 1.0 else t0 + c * dt, yi, below=c == 1.0))
        y1 = yi  # first same as last: the last stage's input is the 5th-order solution
        with torch.no_grad():
            err = _combine(None, ks, _E, dt)
            tol = torch.maximum(y0.abs(), y1.abs()).mul_(self.rtol).add_(self.atol)
            ratio = float(_rms(err.div_(tol)))
        return y1, ks, ratio

    def run(self, y0, times):
        o = self.opt
        t = times[0]
        f = self.f(t, y0)
        dt = o["first_step"] if o["first_step"] is not None else self.initial_step(t, y0, f)
        if not math.isfinite(dt):
            raise RuntimeError(f"non-finite state or derivative at t = {t:g} (initial step {dt})")
        y = y0
        last = None  # (t0, dt, y0, stages) of the last accepted step
        out = [y0]
        for target in times[1:]:
            n = 0
            while target > t:
                if n >= o["max_num_steps"]:
                    raise RuntimeError(f"max_num_steps exceeded ({n}>={o['max_num_steps']})")
                if not math.isfinite(dt):
                    dt = o["min_step"]
                dt = min(max(dt, o["min_step"]), o["max_step"])
                if not t + dt > t:
                    raise RuntimeError(f"underflow in dt {dt}")
                y1, ks, ratio = self.step(t, y, f, dt)
                if not math.isfinite(ratio):
                    raise RuntimeError("non-finite state")
                accept = (ratio <= 1 and not dt > o["max_step"]) or dt <= o["min_step"]
                if accept:
                    last = (t, dt, y, ks)
                    t, y, f = t + dt, y1, ks[-1]
                dt = min(max(self.next_step(dt, ratio, accept), o["min_step"]), o["max_step"])
                n += 1
            t0, h, ys, ks = last
            x = (target - t0) / h
            out.append(_combine(ys, ks, _dense_weights(x), h))
        return out


def odeint_dopri5(func, y0, t, *, rtol=1e-3, atol=1e-3, options=None, stack=True):
    """Solve ``dy/dt = func(t, y)`` from ``t[0]`` with dcnbio's dopri5 (module docstring).

    Parameters
    ----------
    func : callable ``(t, y) -> Tensor``
    y0 : Tensor
    t : 1-D Tensor or sequence of float
        Strictly increasing output times, ``t[0]`` the initial time.
    rtol, atol : float
    options : dict, optional
        Any of :data:`OPTIONS`.
    stack : bool
        Return one stacked tensor (default), or the list of states (no copy into a stack, and no zero-filled
        stack gradient when only some states are used).

    Returns
    -------
    Tensor ``(len(t), *y0.shape)``: the states at ``t`` (``y0`` first), differentiable by backpropagation
    through the solver's operations; a list of ``len(t)`` tensors with ``stack=False``.
    """
    opts = check_options(dict(options or {}))
    times = [float(v) for v in (t.tolist() if torch.is_tensor(t) else t)]
    if len(times) < 2 or any(b <= a for a, b in zip(times, times[1:])):
        raise ConfigError(f"output times must be at least two, strictly increasing; got {times}")
    states = _Solve(func, y0, rtol, atol, opts).run(y0, times)
    return torch.stack(states) if stack else states
