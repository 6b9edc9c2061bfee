"""In-silico electrophysiology against closed forms.

The hand-built model: its stem is a fixed linear filter bank (Gaussian derivatives of the project's own
N-jet, σ = 2 px, radius 4σ, unpadded) and its first block the linear ODE dh/dt = -h/τ, whose solution h(t) = h(0)
e^{-t/τ} is known.  A unit of block 1 is then a linear filter scaled in time, so its grating responses, SF
and orientation tuning, F1/F0 and half-rise time all have closed forms:

* the continuous Fourier transform of the scale-normalised n-th x-derivative of a Gaussian at wave
  vector k = 2πf(cos θ, sin θ) has modulus ∝ u^n e^{-u²/2} |cos θ|^n with u = 2πσf, so the preferred
  frequency is √n / (2πσ) and the half-height frequencies solve u^n e^{-u²/2} = ½ n^{n/2} e^{-n/2};
* the orientation tuning |cos θ|^n has half width at half height 60° (n = 1) and 45° (n = 2) and circular
  variance 1 - (1/3) = 2/3 and 1 - 1/2 = 1/2;
* a half-wave rectified sinusoid has F1/F0 = π/2;
* r(t) - r(0) ∝ e^{-t/τ} - 1 reaches half of its final value at t½ = -τ ln(1 - (1 - e^{-T/τ}) / 2).
"""
import math

import numpy as np
import pytest
import scipy.optimize as opt
import scipy.stats as st
import torch
import xarray as xr

from dcnbio import create_model
from dcnbio.core import filters, stimuli
from dcnbio.stats import physiology as ph
from dcnbio.extract.responses import grating_responses
from dcnbio.errors import ConfigError, DataError
from dcnbio.core.layers.ode import ODEBlock

SIGMA, RADIUS, TAU, T = 2.0, 8, 0.5, 2.0
# basis index of (n_x, n_y) in the N-jet of order 2
KERNELS = {"gx": (1, 0), "gy": (0, 1), "gxx": (2, 0), "gxy": (1, 1)}


class Decay(torch.nn.Module):
    def forward(self, t, h):
        return -h / TAU


def linear_model():
    model = create_model("dcn-ode", in_channels=1, width=0.125)
    basis = filters.gaussian_derivative_basis(SIGMA, order=2, radius=RADIUS).to(torch.float32)
    orders = filters.basis_orders(2)
    # no padding: a 12×12 map whose centre (6, 6) sees the image centre (14, 14) -- all the test reads,
    # at 1/5 of the cost of solving full 28×28 maps
    stem = torch.nn.Conv2d(1, len(KERNELS), 2 * RADIUS + 1, padding=0, bias=False)
    with torch.no_grad():
        for c, o in enumerate(KERNELS.values()):
            stem.weight[c, 0] = basis[orders.index(o)]
    model.stem = stem
    model.block1 = ODEBlock(Decay(), T=T, rtol=1e-5, atol=1e-8, adjoint=False, name="block1")
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return linear_model()


SF = np.geomspace(0.02, 0.45, 31)
ORI = np.arange(0, 180, 15.0)
PHASE = np.arange(0, 360, 360 / 16)


@pytest.fixture(scope="module")
def props(model):
    resp = grating_responses(model, "fashion-mnist", np.linspace(0, T, 21), sf=SF, orientation=ORI,
                             phase=PHASE, contrast=[0.25, 0.5, 1.0], blocks=["block1"], batch_size=1024)
    return resp, ph.tuning_properties(resp)


def _unit(props, name):
    return props.sel(unit=list(KERNELS).index(name))


def _half_height(n, level=0.5):
    g = lambda u: u ** n * math.exp(-u * u / 2)  # noqa: E731
    peak = math.sqrt(n)
    lo = opt.brentq(lambda u: g(u) - g(peak) * level, 1e-6, peak)
    hi = opt.brentq(lambda u: g(u) - g(peak) * level, peak, 20)
    return peak, math.log2(hi / lo)


# --- stimuli -------------------------------------------------------------------------------------
def test_grating_is_the_formula_around_the_dataset_mean():
    images, p = stimuli.grating_set("fashion-mnist", sf=[0.125], orientation=[30.0], phase=[45.0],
                                    contrast=[0.5])
    mean, std = 0.2860, 0.3530
    lum = images[0, 0].double() * std + mean
    row, col = 3, 20
    x, y = col - 13.5, 13.5 - row
    th = math.radians(30)
    expect = mean * (1 + 0.5 * math.cos(2 * math.pi * 0.125 * (x * math.cos(th) + y * math.sin(th))
                                        + math.radians(45)))
    assert float(lum[row, col]) == pytest.approx(expect, abs=1e-6)
    assert p["shape"] == (1, 1, 1, 1)
    # Michelson contrast of a vertical grating with whole periods across the image: exactly c
    g = stimuli.grating(28, 0.25, 0.0, phase=45.0, contrast=0.3, mean_luminance=0.4)
    assert float((g.max() - g.min()) / (g.max() + g.min())) == pytest.approx(0.3, abs=1e-12)
    assert float(g.mean()) == pytest.approx(0.4, abs=1e-12)
    assert float(stimuli.blank_image("fashion-mnist").abs().max()) < 1e-6


def test_cifar10_gratings_are_grey_and_normalised_per_channel():
    """On CIFAR-10 (32×32 RGB) a grating modulates each channel around that channel's mean (a grey grating in
    the dataset's colour balance); normalised, every channel is the same c·cos(...) scaled by mean/std."""
    images, _ = stimuli.grating_set("cifar10", sf=[0.1], orientation=[0.0], phase=[0.0], contrast=[0.5],
                                    dtype=torch.float64)
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    assert images.shape == (1, 3, 32, 32)
    lum = images[0].numpy() * std[:, None, None] + mean[:, None, None]
    x = np.arange(32) - 15.5
    expect = 1 + 0.5 * np.cos(2 * math.pi * 0.1 * x)
    np.testing.assert_allclose(lum / mean[:, None, None], np.broadcast_to(expect, (3, 32, 32)), atol=1e-6)


def test_windows_leave_the_mean_luminance_outside():
    g = stimuli.grating(28, 0.2, 0.0, mean_luminance=0.5, window="circle", window_size=5)
    assert float(g[0, 0]) == 0.5 and float(g[13, 13]) != 0.5
    gg = stimuli.grating(28, 0.2, 0.0, mean_luminance=0.5, window="gaussian", window_size=3)
    assert abs(float(gg[0, 0]) - 0.5) < 1e-8


@pytest.mark.parametrize("kwargs, message", [
    ({"sf": 0.6}, "above the Nyquist frequency 0.5"),
    ({"sf": 0.0}, "spatial frequency must be > 0"),
    ({"contrast": 0.0}, "Michelson contrast must lie in (0, 1]"),
    ({"contrast": 1.5}, "Michelson contrast must lie in (0, 1]"),
    ({"mean_luminance": 0.6}, "exceeds white"),
    ({"window": "square"}, "unknown window 'square'"),
    ({"window": "gaussian"}, "needs window_size > 0"),
])
def test_bad_stimuli_one_line(kwargs, message):
    args = {"size": 28, "sf": 0.1, "orientation": 0.0, "contrast": 1.0, "mean_luminance": 0.5}
    args.update(kwargs)
    with pytest.raises(ConfigError) as err:
        stimuli.grating(**args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unsorted_times_and_bad_readout_are_refused(model):
    kw = dict(sf=[0.1], orientation=[0.0], phase=[0.0], contrast=[1.0], blocks=["block1"])
    with pytest.raises(ConfigError, match="strictly increasing"):
        grating_responses(model, "fashion-mnist", [1.0, 0.5], **kw)
    with pytest.raises(ConfigError, match="readout must be"):
        grating_responses(model, "fashion-mnist", [0.0], readout="peak", **kw)


# --- responses -----------------------------------------------------------------------------------
def test_responses_equal_an_explicit_filter_sum(model, props):
    """The centre response at t = 0 is Σ_u w(u) (I - I_blank)(p + u), computed here in numpy; at t it is
    that times e^{-t/τ}."""
    resp, _ = props
    w = model.stem.weight.detach().double().numpy()[:, 0]            # (C, 17, 17)
    sel = dict(sf=SF[12], orientation=ORI[7], contrast=0.5)
    images, _ = stimuli.grating_set("fashion-mnist", sf=[sel["sf"]], orientation=[sel["orientation"]],
                                    phase=PHASE, contrast=[0.5], dtype=torch.float64)
    patch = images[:, 0, 14 - RADIUS:14 + RADIUS + 1, 14 - RADIUS:14 + RADIUS + 1].numpy()
    expect = np.einsum("pyx,cyx->pc", patch, w)                       # (phase, channel)
    got = (resp.response - resp.blank).sel(readout="centre", time=0.0, **sel).values
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    t = resp.time.values[10]
    got_t = (resp.response - resp.blank).sel(readout="centre", time=t, **sel).values
    np.testing.assert_allclose(got_t, expect * math.exp(-t / TAU), rtol=1e-4, atol=1e-6)
    assert resp.response.dims == ("readout", "sf", "orientation", "phase", "contrast", "time", "unit")
    assert list(resp.block.values) == ["block1"] * 4 and (resp.nfe > 0).all()


# --- tuning properties ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, n, hwhh, cv", [("gx", 1, 60.0, 2 / 3), ("gxx", 2, 45.0, 0.5)])
def test_gaussian_derivative_units_have_their_closed_form_tuning(props, name, n, hwhh, cv):
    _, p = props
    u = _unit(p, name)
    peak_u, bandwidth = _half_height(n)
    assert bool(u.responsive)
    assert float(u.preferred_sf) == pytest.approx(peak_u / (2 * math.pi * SIGMA), rel=0.02)
    assert float(u.sf_bandwidth) == pytest.approx(bandwidth, abs=0.05)
    # Schiller et al.'s selectivity 100 f_low / f_high at 0.707 of the peak
    assert float(u.sf_selectivity) == pytest.approx(100 * 2 ** -_half_height(n, 0.707)[1], abs=1.0)
    assert float(u.preferred_orientation) == 0.0
    assert float(u.orientation_hwhh) == pytest.approx(hwhh, abs=0.5)
    assert float(u.circular_variance) == pytest.approx(cv, abs=0.01)
    # half-wave rectified linear unit: F1/F0 = π/2 (16 phases: within 1 %)
    assert float(u.f1_f0) == pytest.approx(math.pi / 2, rel=0.01)


def test_orientation_follows_the_derivative_direction(props):
    _, p = props
    assert float(_unit(p, "gy").preferred_orientation) == 90.0
    assert float(_unit(p, "gxy").preferred_orientation) in (45.0, 135.0)


def test_linear_units_have_a_linear_contrast_response_and_the_closed_form_latency(props):
    _, p = props
    t_half = -TAU * math.log(1 - (1 - math.exp(-T / TAU)) / 2)
    lat = p.latency.sel(unit=0).values
    np.testing.assert_allclose(lat, t_half, rtol=0.01)
    # τ recovered from the latency by inverting the closed form
    tau = opt.brentq(lambda tau: -tau * math.log(1 - (1 - math.exp(-T / tau)) / 2) - lat[-1], 0.05, 5)
    assert tau == pytest.approx(TAU, rel=0.01)
    # r ∝ c exactly: the contrast curve is proportional to contrast
    cc = p.contrast_curve.sel(unit=0)
    np.testing.assert_allclose(cc / cc.contrast, float(cc[-1]), rtol=1e-4)


def test_naka_rushton_fit_recovers_known_parameters():
    c = np.geomspace(0.02, 1.0, 10)
    rng = np.random.default_rng(0)
    truth = np.array([[2.0, 0.2, 2.5], [1.0, 0.05, 1.5], [5.0, 0.5, 4.0]])
    y = np.stack([ph.naka_rushton(c, *t) for t in truth]) * (1 + 0.002 * rng.standard_normal((3, c.size)))
    fit = ph.fit_naka_rushton(xr.DataArray(y, dims=("unit", "contrast"), coords={"contrast": c}))
    np.testing.assert_allclose(np.stack([fit.r_max, fit.c50, fit.n], 1), truth, rtol=0.03)
    assert (fit.r2 > 0.999).all()
    flat = ph.fit_naka_rushton(xr.DataArray(np.zeros((1, c.size)), dims=("unit", "contrast"),
                                            coords={"contrast": c}))
    assert np.isnan(flat.r_max).all()


def test_latency_contrast_test_recovers_slopes_and_tests_over_seeds():
    c = np.array([0.125, 0.25, 0.5, 1.0])
    slopes = np.array([[-0.10, -0.12, -0.08], [-0.09, -0.11, -0.10], [-0.13, -0.07, -0.11]])  # (seed, unit)
    lat = 1.0 + slopes[..., None] * np.log2(c)
    da = xr.DataArray(lat, dims=("seed", "unit", "contrast"), coords={"seed": [1, 2, 3], "contrast": c})
    res = ph.latency_contrast_test(da)
    np.testing.assert_allclose(res.slope.values, slopes, atol=1e-12)
    means = slopes.mean(1)
    t = means.mean() / (means.std(ddof=1) / math.sqrt(3))
    assert float(res.t) == pytest.approx(t)
    assert float(res.p) == pytest.approx(2 * st.t.sf(abs(t), 2))
    assert float(res.fraction_negative) == 1.0 and int(res.n_units) == 9


def test_phase_and_orientation_grids_are_checked():
    r = xr.DataArray(np.ones(4), dims="phase", coords={"phase": [0, 90, 180, 200]})
    with pytest.raises(DataError, match="evenly spaced over 360"):
        ph.phase_harmonics(r)
    o = xr.DataArray(np.ones(3), dims="orientation", coords={"orientation": [0, 10, 20]})
    with pytest.raises(DataError, match="evenly spaced over 180"):
        ph.orientation_tuning(o)


# --- against V1 and the init control -------------------------------------------------------------
def _reference(counts, edges):
    return xr.DataArray(np.asarray(counts), dims="bin",
                        coords={"bin_low": ("bin", edges[:-1]), "bin_high": ("bin", edges[1:])})


def test_histogram_quantiles_interpolate_within_bins():
    ref = _reference([10, 30, 10], np.array([0.0, 1.0, 2.0, 4.0]))
    assert ph.histogram_quantile(ref, 0.5) == pytest.approx(1.5)          # half of the middle bin
    assert ph.histogram_quantile(ref, 0.1) == pytest.approx(0.5)
    assert ph.histogram_quantile(ref, 0.9) == pytest.approx(3.0)
    with pytest.raises(DataError, match="contiguous"):
        ph.histogram_cdf(_reference([1, 1], np.array([0.0, 1.0, 2.0]))
                         .assign_coords(bin_low=("bin", [0.0, 1.5])))


def test_comparison_with_a_reference_uses_seed_medians():
    edges = np.linspace(0, 90, 10)
    ref = _reference(np.full(9, 20), edges)                                 # uniform on [0, 90): median 45
    rng = np.random.default_rng(3)
    vals = np.stack([rng.uniform(0, 90, 400) + shift for shift in (2.0, -1.0, 4.0)])
    vals[0, :10] = np.nan
    vals[2, 0] = 200.0                                                      # outside the sampled range
    da = xr.DataArray(vals, dims=("seed", "unit"), coords={"seed": [1, 2, 3]})
    res = ph.compare_with_reference(da, ref)
    med = np.array([np.nanmedian(v) for v in vals])
    np.testing.assert_allclose(res["median"].values, med)
    r = st.ttest_1samp(med, 45.0)
    assert float(res.t) == pytest.approx(r.statistic) and float(res.p) == pytest.approx(r.pvalue)
    assert list(res.n_units.values) == [390, 400, 400] and float(res.reference_median) == 45.0
    # KS distance at the edges against the uniform CDF, by hand
    v = np.sort(vals[1])
    d = np.max(np.abs(np.searchsorted(v, edges) / v.size - edges / 90))
    assert float(res.ks_distance[1]) == pytest.approx(d)
    assert float(res.fraction_in_range[2]) == pytest.approx(np.mean((vals[2] >= 0) & (vals[2] < 90)))


def test_trained_init_control_is_a_paired_test_over_seeds():
    rng = np.random.default_rng(4)
    init = rng.uniform(20, 60, (3, 50))
    trained = init.copy()
    trained[:, :25] += np.array([[5.0], [3.0], [4.0]])
    da = lambda v: xr.DataArray(v, dims=("seed", "unit"), coords={"seed": [1, 2, 3]})  # noqa: E731
    res = ph.compare_trained_init(da(trained), da(init))
    d = np.median(trained, 1) - np.median(init, 1)
    np.testing.assert_allclose(res.median_change.values, d)
    r = st.ttest_1samp(d, 0.0)
    assert float(res.t) == pytest.approx(r.statistic) and float(res.p) == pytest.approx(r.pvalue)
    np.testing.assert_allclose(res.fraction_changed.values, 0.5)


def test_stacking_refuses_two_runs_of_one_model_seed_and_state(props):
    from dcnbio.stats.tuning_study import stack_runs

    _, p = props
    stacked = stack_runs([("m", 1, "trained", p), ("m", 2, "trained", p), ("m", 1, "init", p)])
    assert stacked["m"].sizes["seed"] == 2 and list(stacked["m"].state.values) == ["trained", "init"]
    assert np.isnan(stacked["m"].preferred_sf.sel(state="init", seed=2)).all()
    with pytest.raises(DataError, match="two trained runs of m seed 1: give one checkpoint per model and seed"):
        stack_runs([("m", 1, "trained", p), ("m", 1, "trained", p)])
