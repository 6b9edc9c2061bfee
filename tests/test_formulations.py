"""Every SRF formulation computes the reference function (dcnbio.core.layers.reference), and the filter cache
never serves filters of old parameters.

Layer and model comparisons run in float64, where two formulations of the same sums can differ only by
rounding (~1e-16 relative per operation), so a wrong index, flip or padding shows up as an O(1) error;
one float32 model comparison checks the tolerance the issue asks for (~1e-5).
"""
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dcnbio.errors import ConfigError
from dcnbio.core.layers.reference import SOLVER, reference_conv
from dcnbio.core.models.reference import reference_model
from dcnbio.core.layers.srf import FORMULATIONS, SRFConv2d, filter_cache
from dcnbio.fast.formulations import auto_rule, fft_length
from dcnbio.core.models import create_model, ode_blocks, srf_layers

FAST = [f for f in FORMULATIONS if f != "reference"]
T = 0.7


def make_layer(scale, alpha, formulation, cin=5, cout=4, **kwargs):
    """A float64 layer with σ(T) ≈ 1.3 px (radius 4, 2σ + 0.5 far from an integer)."""
    layer = SRFConv2d(cin, cout, scale=scale, alpha=alpha, formulation=formulation, **kwargs).double()
    with torch.no_grad():
        if scale == "shared":
            layer.scale.log2_scale.fill_(math.log2(1.3))
        elif scale == "linear-t":
            layer.scale.a.fill_(0.4)
            layer.scale.b.fill_(0.3)
    return layer


def out_and_grads(fn, layer, x):
    x = x.clone().requires_grad_(True)
    out = fn(x)
    cot = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    return out, torch.autograd.grad((out * cot).sum(), [x, *layer.parameters()])


CASES = [("shared", "static"), ("per-channel", "static"), ("linear-t", "linear-t")]


@pytest.mark.parametrize("time_channel", [False, True])
@pytest.mark.parametrize("stride, padding, size", [(1, "same", (13, 12)), (2, "same", (13, 12)),
                                                   (1, "valid", (13, 12)), (2, 2, (13, 12)),
                                                   (1, "same", (5, 6))])  # map smaller than the 9x9 kernel
@pytest.mark.parametrize("formulation, scale, alpha", [
    (f, s, a) for f in FAST for s, a in CASES if not (f == "separable" and s == "per-channel")])  # refused
def test_layer_equals_reference(formulation, scale, alpha, stride, padding, size, time_channel):
    """Output and gradients (input, σ and α parameters) against the reference conv, every formulation."""
    layer = make_layer(scale, alpha, formulation, stride=stride, padding=padding)
    x = torch.randn(2, 5, *size, dtype=torch.float64)
    if time_channel:  # the layer is given h (4 channels) and appends the constant channel t itself
        out, grads = out_and_grads(lambda v: layer(v[:, :4], T, time_channel=True), layer, x)
        xt = torch.cat([x[:, :4], torch.full_like(x[:, :1], T)], 1)
        ref, ref_grads = out_and_grads(lambda v: reference_conv(layer, torch.cat([v[:, :4], xt[:, 4:]], 1), T),
                                       layer, x)
    else:
        out, grads = out_and_grads(lambda v: layer(v, T), layer, x)
        ref, ref_grads = out_and_grads(lambda v: reference_conv(layer, v, T), layer, x)
    assert out.shape == ref.shape
    # float64: the same sums associated differently (FFT: O(log n) roundings of terms of order 1)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    for name, g, gr in zip(names, grads, ref_grads):
        torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-11, msg=lambda m: f"grad of {name}: {m}")


def test_reference_formulation_is_the_paper_construction():
    """The oracle itself: conv2d with Σ_f α_f B_f(σ) built by hand from scipy-checked 1-D derivatives."""
    from dcnbio.core.filters import basis_orders, gaussian_derivatives_1d

    layer = make_layer("shared", "static", "reference", cin=2, cout=3)
    sigma = float(layer.sigma().detach())
    r = math.ceil(2 * sigma + 0.5)
    g = gaussian_derivatives_1d(torch.tensor(sigma, dtype=torch.float64), 2, r)
    w = torch.zeros(3, 2, 2 * r + 1, 2 * r + 1, dtype=torch.float64)
    for f, (nx, ny) in enumerate(basis_orders(2)):
        w += layer.alpha.alpha[:, :, f, None, None].detach() * torch.outer(g[ny], g[nx])
    x = torch.randn(1, 2, 10, 10, dtype=torch.float64)
    # same products summed in another order
    torch.testing.assert_close(layer(x), F.conv2d(x, w, padding=r), rtol=0, atol=1e-13)


def test_fft_length_is_the_next_5_smooth_number():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 300):
        m = fft_length(n)
        assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m))


def test_spectral_rejects_a_map_smaller_than_a_valid_kernel():
    layer = make_layer("shared", "static", "spectral", padding="valid")
    with pytest.raises(ConfigError, match="smaller than"):
        layer(torch.randn(1, 5, 6, 6, dtype=torch.float64))


@pytest.mark.parametrize("isa", ["AVX2", "AVX512"])
def test_auto_rule_respects_what_each_formulation_can_do(isa):
    """σ_ji layers never get the separable passes (they need one σ), strided calls stay dense, the smallest
    kernels (radius ≤ 2, where the direct conv won on every measured shape) stay dense, and the direct conv is
    never used where its cost jumps: from 15×15 (radius 7) on AVX-512, from 9×9 (radius 4) on AVX2."""
    shapes = [(26, 26), (13, 13), (6, 6), None]
    for cin in (5, 9, 17, 33, 65, 129):
        shared = SRFConv2d(cin, cin - 1, formulation="auto")
        pair = SRFConv2d(cin, cin - 1, scale="per-channel", formulation="auto")
        strided = SRFConv2d(cin, cin - 1, stride=2, formulation="auto")
        for size in shapes:
            for r in range(1, 9):
                assert auto_rule(pair, r, cin, size, isa) in ("dense", "spectral")
                assert auto_rule(strided, r, cin, size, isa) == "dense"
                form = auto_rule(shared, r, cin, size, isa)
                assert form in ("dense", "spectral", "separable")
                if r <= 2:
                    assert form == "dense"
                if r >= (4 if isa == "AVX2" else 7):
                    assert form != "dense" and auto_rule(pair, r, cin, size, isa) != "dense"


def test_auto_rule_follows_the_cpu_capability(monkeypatch):
    layer = SRFConv2d(17, 16, formulation="auto")
    for capability, isa in [("AVX512", "AVX512"), ("AVX2", "AVX2"), ("DEFAULT", "AVX2")]:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        picks = [auto_rule(layer, r, 17, (s, s)) for r in (3, 4, 5) for s in (6, 13, 26)]
        assert picks == [auto_rule(layer, r, 17, (s, s), isa) for r in (3, 4, 5) for s in (6, 13, 26)]
    # the two rules differ where oneDNN's 9x9 conv does (block 3 of a width-0.25 DCN: 32 channels on 6 px)
    assert auto_rule(layer, 4, 33, (6, 6), "AVX2") == "separable"
    assert auto_rule(layer, 4, 33, (6, 6), "AVX512") == "dense"
    with pytest.raises(ConfigError, match="AVX512 or AVX2"):
        auto_rule(layer, 4, 17, (6, 6), "NEON")


GRIDS = [("AVX512", "srf_grid_zen4_2026-12-03.json"), ("AVX512", "srf_grid_intel_2026-12-02.json"),
         ("AVX2", "srf_grid_amd_2026-12-02.json")]


@pytest.mark.parametrize("isa, grid", GRIDS)
@pytest.mark.parametrize("scale", ["shared", "per-channel"])
def test_auto_rule_against_the_recorded_grids(isa, grid, scale):
    """The rule of each vector width, replayed on the forward + backward times recorded by
    ``benchmarks/srf_layer.py --grid`` on a machine of that width: over all shapes and radii its picks cost
    at most 5 % more than the per-row best formulation, and no row more than twice the best."""
    import json
    path = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "results", grid)
    with open(path) as f:
        rows = json.load(f)["results"]
    picked = best = 0.0
    for row in rows:
        layer = SRFConv2d(row["C"] + 1, row["C"], scale=scale, formulation="auto")
        forms = ["dense", "spectral"] + (["separable"] if scale == "shared" and "separable_fb_ms" in row else [])
        pick = auto_rule(layer, row["r"], row["C"] + 1, (row["H"], row["H"]), isa)
        if pick not in forms:  # a separable pick on a grid recorded without it
            continue
        fastest = min(row[f"{f}_fb_ms"] for f in forms)
        assert row[f"{pick}_fb_ms"] <= 2 * fastest, (row, pick)
        picked += row[f"{pick}_fb_ms"]
        best += fastest
    assert best > 0 and picked <= 1.05 * best


@pytest.mark.parametrize("size, channels, k, padding, stride", [
    ((13, 11), (2, 3), 7, 3, 1),   # transform lengths 16 x 15: an odd width (no Nyquist column)
    ((12, 12), (3, 2), 5, 2, 2),   # stride 2: gradients on a subsampled output
    ((9, 10), (2, 3), 3, 1, 1),
    ((8, 8), (2, 2), 3, 0, 1)])    # no padding
def test_spectral_backward_is_the_adjoint_of_the_correlation(size, channels, k, padding, stride):
    """The spectral correlation's hand-written backward (input and transformed filters) against conv2d's
    autograd in float64 (gradients of the filter bank through its transform), and gradcheck/gradgradcheck of
    the function itself: a wrong half-spectrum weight (the 2 of the conjugate columns, the Nyquist column of
    an even length) or a missing conjugate is an O(1) error."""
    from dcnbio.fast.formulations import _SpectralCorrelation, _fft_filters

    gen = torch.Generator().manual_seed(3)
    (cin, cout), (h, w) = channels, size
    x = torch.randn(2, cin, h, w, dtype=torch.float64, generator=gen).requires_grad_(True)
    wt = torch.randn(cout, cin, k, k, dtype=torch.float64, generator=gen).requires_grad_(True)
    prep = _fft_filters(wt, padding, (h, w))
    out = _SpectralCorrelation.apply(x, prep["wf"], prep["n"], prep["out"], stride)
    ref = F.conv2d(x, wt, padding=padding, stride=stride)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    cot = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    for g, g_ref in zip(torch.autograd.grad(out, [x, wt], cot), torch.autograd.grad(ref, [x, wt], cot)):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-11)
    wf = prep["wf"].detach().requires_grad_(True)
    fn = lambda a, b: _SpectralCorrelation.apply(a, b, prep["n"], prep["out"], stride)  # noqa: E731
    x1 = x[:1].detach().requires_grad_(True)  # (fast mode: random projections of the Jacobians)
    assert torch.autograd.gradcheck(fn, (x1, wf), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x1, wf), fast_mode=True)


def test_band_matrix_is_a_1d_correlation():
    """Against numpy's correlate of the zero-padded signal, subsampled: every stride, padding and a filter
    longer than the signal; a kernel that does not fit is a one-line error."""
    import numpy as np

    from dcnbio.fast.formulations import band_matrix

    gen = torch.Generator().manual_seed(3)
    for n, k, p, s in [(13, 5, 2, 1), (12, 7, 3, 2), (11, 3, 0, 1), (6, 9, 4, 1), (10, 5, 1, 3)]:
        g = torch.randn(2, k, dtype=torch.float64, generator=gen)
        v = torch.randn(n, dtype=torch.float64, generator=gen)
        m = band_matrix(g, n, p, s)
        for j in range(2):
            want = np.correlate(np.pad(v.numpy(), p), g[j].numpy(), mode="valid")[::s]
            np.testing.assert_allclose((m[j] @ v).numpy(), want, rtol=0, atol=1e-13)
    with pytest.raises(ConfigError, match="does not fit"):
        band_matrix(torch.ones(1, 9), 6, 0)


# --- whole models -------------------------------------------------------------------------------

def model_pair(name, formulation, dtype, **overrides):
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, width=0.125, formulation=formulation, **{**SOLVER, **overrides})
    model = model.to(dtype)
    return model, reference_model(model, **overrides)


def step_outputs(model, x, y):
    model.zero_grad()
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same_step(model, ref, x, y, rtol):
    logits, grads = step_outputs(model, x, y)
    ref_logits, ref_grads = step_outputs(ref, x, y)
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    torch.testing.assert_close(logits, ref_logits, rtol=rtol, atol=rtol * float(ref_logits.abs().max()))
    for n in grads:
        # relative to the largest gradient: σ/α gradients of single scalars can be tiny
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=rtol, atol=rtol * scale, msg=lambda m: f"{n}: {m}")




def fixed_batch(dtype):
    """3 images of 16x16: block maps 14, 7 and 3 pixels (the last smaller than a 7x7 kernel)."""
    gen = torch.Generator().manual_seed(3)
    return torch.randn(3, 1, 16, 16, generator=gen).to(dtype), torch.tensor([0, 3, 9])


@pytest.mark.parametrize("name, formulation, adjoint", [
    (name, f, adj) for name in ("dcn-ode", "dcn-sigma-ji") for f, adj in
    [("spectral", True), ("dense", True), ("auto", False)]] + [("dcn-ode", "separable", True),
                                                               ("dcn-ode", "separable", False)])
def test_model_step_equals_reference_float64(name, formulation, adjoint):
    """Logits and every parameter gradient of one training step, fast formulation vs reference twin.

    Both solve with dopri5 at 1e-3 (adjoint or not on both sides); in float64 the adaptive solver
    takes the same steps (same NFE, asserted), so the results differ by rounding only, amplified by the
    step-size control: its error estimate is a difference of two nearby Runge–Kutta solutions (~1e-4 of the
    state), and autograd differentiates it in direct backprop, the adjoint's own control in its backward
    solve.  Seen: ≤ 1.3e-9 of the largest gradient (spectral, adjoint), ≤ 3e-9 (direct); a wrong tap, flip or
    padding gives O(1e-2) or more.
    """
    model, ref = model_pair(name, formulation, torch.float64, adjoint=adjoint)
    x, y = fixed_batch(torch.float64)
    assert_same_step(model, ref, x, y, rtol=1e-7)
    assert all(b.nfe_forward == r.nfe_forward and b.nfe_backward == r.nfe_backward
               for b, r in zip(ode_blocks(model).values(), ode_blocks(ref).values()))


def max_errors(model, x, y, truth):
    logits, grads = step_outputs(model, x, y)
    scale = max(float(g.abs().max()) for g in truth[1].values())
    return (float((logits.double() - truth[0]).abs().max() / truth[0].abs().max()),
            max(float((grads[n].double() - truth[1][n]).abs().max()) for n in grads) / scale)


@pytest.mark.parametrize("name", ["dcn-ode", "dcn-sigma-ji"])
def test_model_step_float32_is_as_accurate_as_the_reference(name):
    """The training dtype, with the adjoint.  Logits agree with the float64 reference to 1e-5 (float32
    eps 1.2e-7 amplified by ~30 evaluations; measured ≤ 1e-6).  Adjoint gradients in float32 are only
    good to ~1e-4 of the largest gradient *for the reference formulation itself* (measured 6e-5 and
    9e-5 on this batch), so the fast formulation's gradient error is bounded by 3x the reference's own
    float32 error (two independent roundings of the same size, not a tuned margin).

    The batch is 4 images of 28x28 on which float32 and float64 solves accept the same steps.  On the
    16x16 batch above, block 3 of dcn-ode needs 80 evaluations and float32 rounding alone changes the
    accepted steps: the *reference's* float32 logits then move by 4e-4 and its gradients by 10 %
    against float64 — a property of the adaptive solver, not of any formulation.
    """
    model, ref32 = model_pair(name, "auto", torch.float32)
    ref64 = reference_model(model).double()
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 1, 28, 28, generator=gen), torch.tensor([0, 3, 5, 9])
    truth = step_outputs(ref64, x.double(), y)
    fast_logits, fast_grads = max_errors(model, x, y, truth)
    ref_logits, ref_grads = max_errors(ref32, x, y, truth)
    assert fast_logits < 1e-5 and ref_logits < 1e-5
    assert fast_grads < 3 * ref_grads + 1e-6, (fast_grads, ref_grads)


# --- the filter cache -------------------------------------------------------------------------

def builds(model):
    return {n: m.filter_builds for n, m in srf_layers(model).items()}


def test_filters_are_built_once_per_solve_and_the_cache_closes():
    model, _ = model_pair("dcn-ode", "auto", torch.float64, adjoint=False)
    x, y = fixed_batch(torch.float64)
    before = builds(model)
    F.cross_entropy(model(x), y).backward()
    after = builds(model)
    for name, layer in srf_layers(model).items():
        assert after[name] - before[name] == 1, name  # one solve, many evaluations, one build
        assert layer._filter_cache is None
    assert all(b.nfe_forward > 2 for b in ode_blocks(model).values())


def test_adjoint_builds_twice_and_time_dependent_layers_every_evaluation():
    """With the adjoint: once without autograd for the forward solve, once with it for the whole backward
    solve (re-opened around each of its evaluations).  σ(t) layers never cache: one build per evaluation."""
    model, _ = model_pair("dcn-ode", "auto", torch.float64, adjoint=True)
    x, y = fixed_batch(torch.float64)
    before = builds(model)
    F.cross_entropy(model(x), y).backward()
    for name, layer in srf_layers(model).items():
        assert builds(model)[name] - before[name] == 2, name
        assert layer._filter_cache is None
    assert all(b.nfe_backward > 2 for b in ode_blocks(model).values())
    model_t, _ = model_pair("dcn-sigma-t", "auto", torch.float64, adjoint=False)
    with torch.no_grad():
        model_t(x)
    for name, n in builds(model_t).items():
        assert n == ode_blocks(model_t)[name.split(".")[0]].nfe_forward, name


@pytest.mark.parametrize("name", ["dcn-ode", "dcn-sigma-ji"])
def test_cache_follows_an_optimizer_step(name):
    """After SGD moves σ and α the next forward uses the new filters: it equals a reference twin built
    from the updated parameters and differs from the output before the step."""
    model, _ = model_pair(name, "auto", torch.float64, adjoint=False)
    x, y = fixed_batch(torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        before = model(x)
    sigmas = {n: m.sigma().detach().clone() for n, m in srf_layers(model).items()}
    opt.step()
    assert all(not torch.equal(m.sigma(), sigmas[n]) for n, m in srf_layers(model).items())
    with torch.no_grad():
        after = model(x)
        expected = reference_model(model, adjoint=False)(x)
    assert (after - before).abs().max() > 1e-6  # the step changed the function (O(lr · grad))
    torch.testing.assert_close(after, expected, rtol=1e-9, atol=1e-12)  # float64 rounding, same steps


def test_cache_is_per_context_and_sees_in_place_sigma_changes_between_contexts():
    layer = make_layer("shared", "static", "spectral")
    x = torch.randn(1, 5, 12, 12, dtype=torch.float64)
    with filter_cache(layer):
        with torch.no_grad():
            layer(x)  # built without autograd ...
        a = layer(x)  # ... so rebuilt once for a call that needs gradients
        assert layer.filter_builds == 2 and a.requires_grad
        with torch.no_grad():
            assert torch.equal(layer(x), a)  # an entry with autograd serves no-grad calls
        b = layer(x)
        with filter_cache(layer):  # a nested context keeps the outer cache
            layer(x)
        layer(x)
        assert layer.filter_builds == 2 and torch.equal(a, b)
    assert layer._filter_cache is None
    with torch.no_grad():
        layer.scale.log2_scale.add_(0.5)  # σ 1.3 → 1.84: a new radius and new values
    with filter_cache(layer):
        c = layer(x)
    assert layer.filter_builds == 3
    torch.testing.assert_close(c, reference_conv(layer, x), rtol=0, atol=1e-12)
    assert c.shape == a.shape and (c - a).abs().max() > 1e-3


def test_step_callbacks_of_srf_dynamics_still_reach_torchdiffeq():
    """The adjoint solve wraps the dynamics to re-open the filter cache; torchdiffeq must still see the
    dynamics' step callbacks (it looks them up on the function it is given)."""
    from dcnbio.core.layers.ode import ODEBlock

    class Dynamics(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = make_layer("shared", "static", "spectral", cin=2, cout=2)
            self.steps = {"forward": 0, "backward": 0}

        def forward(self, t, h):
            return torch.tanh(self.conv(h))

        def callback_step(self, t0, y0, dt):
            self.steps["forward"] += 1

        def callback_step_adjoint(self, t0, y0, dt):
            self.steps["backward"] += 1

    func = Dynamics()
    block = ODEBlock(func, T=1.0, adjoint=True)
    block(torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)).sum().backward()
    # dopri5: 2 + 6 evaluations per attempted step, forward and backward
    assert block.nfe_forward == 2 + 6 * func.steps["forward"] > 2
    assert block.nfe_backward == 2 + 6 * func.steps["backward"] > 2


# --- the CELU activation ------------------------------------------------------------------------

@pytest.mark.parametrize("implementation", ["exp", "torch"])
@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_celu_equals_torch_celu(alpha, implementation):
    """Both formulations, values and gradients, against torch.nn.CELU: float64 to 1 rounding of 1.0 (exp(z) - 1
    instead of expm1: absolute, not relative, error), float32 to 2.4e-7 absolute (torch's own float32 CELU is
    off by as much from the float64 value), gradcheck in float64, x = 0 included."""
    from dcnbio.core.layers.activations import celu

    x = torch.cat([torch.linspace(-30, 8, 4001, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    x.requires_grad_(True)
    layer, ref = (lambda v: celu(v, alpha, implementation)), torch.nn.CELU(alpha)
    y, y_ref = layer(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=2.3e-16 * alpha)
    g, g_ref = torch.autograd.grad(y.sum(), x)[0], torch.autograd.grad(y_ref.sum(), x)[0]
    torch.testing.assert_close(g, g_ref, rtol=0, atol=4.5e-16)
    assert torch.autograd.gradcheck(layer, (torch.randn(30, dtype=torch.float64, requires_grad=True),))
    x32 = x.detach().float()
    torch.testing.assert_close(layer(x32).double(), y_ref.detach(), rtol=0, atol=2.4e-7 * max(1.0, alpha))


def test_exp_celu_gradient_is_the_closed_form_at_any_alpha():
    """d celu / dx = exp(x / α) for x ≤ 0 and 1 above, from the result alone: to float64 rounding at an α that
    is no power of two (torch's own CELU backward is 2e-8 off there, so this compares with the closed form)."""
    from dcnbio.core.layers.activations import celu

    alpha = 0.7
    x = torch.cat([torch.linspace(-30, 8, 4001, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    x.requires_grad_(True)
    cot = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (g,) = torch.autograd.grad(celu(x, alpha, "exp"), x, cot)
    xd = x.detach()
    torch.testing.assert_close(g, torch.where(xd > 0, cot, cot * torch.exp(xd / alpha)), rtol=0, atol=1e-15)


def test_celu_default_is_exp_on_cpus_with_the_fast_package_and_torch_without():
    """The core's table holds PyTorch's kernel only; dcnbio.fast (imported by ``import dcnbio``) makes 'auto' (the
    exp formulation without tuning) the CPU default whatever ATen's capability; no environment variable is read;
    bad names are refused with the hint; without("celu") restores the core's table and leaves it as it was."""
    from dcnbio.core.layers import activations
    from dcnbio.fast import without

    code = "import dcnbio.core.layers.activations as a; print(a.default_implementation(), sorted(a.IMPLEMENTATIONS))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCNBIO_")}
    run = lambda **e: subprocess.run([sys.executable, "-c", code], env={**env, **e}, capture_output=True, text=True)
    for extra in ({}, {"ATEN_CPU_CAPABILITY": "default"}, {"ATEN_CPU_CAPABILITY": "avx2"}, {"DCNBIO_CELU": "torch"}):
        assert run(**extra).stdout.split() == ["auto", "['auto',", "'exp',", "'torch']"], extra
    with pytest.raises(ConfigError, match="unknown CELU implementation 'fast'.*import dcnbio.fast"):
        activations.celu(torch.zeros(2), 1.0, "fast")
    x = torch.linspace(-3, 3, 7)
    assert torch.equal(activations.celu(x), activations.celu(x, implementation="exp"))
    with without("celu"):
        assert activations.default_implementation() == "torch" and list(activations.IMPLEMENTATIONS) == ["torch"]
        torch.testing.assert_close(activations.celu(x), F.celu(x), rtol=0, atol=0)
    assert activations.default_implementation() == "auto" and "exp" in activations.IMPLEMENTATIONS


def test_models_use_the_fast_celu_and_keep_their_state():
    from dcnbio.core.layers.activations import CELU

    model = create_model("dcn-ode", in_channels=1, width=0.125)
    assert isinstance(model.block1.func.act, CELU)
    assert not any("act" in k for k in model.state_dict())  # no state: checkpoints are unaffected
    with pytest.raises(ConfigError, match="alpha"):
        CELU(0.0)


def test_reference_twin_uses_torch_celu():
    model = create_model("dcn-ode", in_channels=1, width=0.125)
    ref = reference_model(model)
    assert type(ref.block1.func.act) is torch.nn.CELU and type(ref.head[1]) is torch.nn.CELU
    assert all(m.formulation == "reference" for m in srf_layers(ref).values())
