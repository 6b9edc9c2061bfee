"""dcnbio.fast.tuning: measured choices pick the faster candidate by the stated rule, are remembered, and never
change the function computed (each candidate is checked against an independent computation).

Timing-based choices are tested with a planted clock (each candidate advances it by a known amount), so the
choice rule is tested exactly; the real measurements are only required to end in a valid candidate, since which
one wins depends on the machine.
"""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dcnbio.errors import ConfigError
from dcnbio.fast import tuning
from dcnbio.core.layers.activations import celu
from dcnbio.fast.conv import BACKENDS, conv2d, forward_conv, nnpack_applies
from dcnbio.core.layers.srf import SRFConv2d
from dcnbio.core.models import create_model, srf_layers
from test_formulations import SOLVER, assert_same_step, fixed_batch, model_pair, reference_conv


@pytest.fixture(autouse=True)
def fresh_choices():
    previous = tuning.set_enabled(False)
    tuning.clear()
    yield
    tuning.clear()
    tuning.set_enabled(previous)


class PlantedClock:
    """A clock that only moves when a candidate runs: candidate ``name`` takes ``cost[name]`` seconds."""

    def __init__(self, cost):
        self.now, self.cost, self.calls = 0.0, cost, {n: 0 for n in cost}

    def __call__(self):
        return self.now

    def candidates(self):
        def run(name):
            self.calls[name] += 1
            self.now += self.cost[name]
        return {n: (lambda n=n: run(n)) for n in self.cost}


def test_the_fastest_candidate_wins_and_is_remembered():
    clock = PlantedClock({"rule": 2.0, "a": 1.5, "b": 1.0})
    assert tuning.choose("k", clock.candidates(), clock=clock) == "b"
    warm, rounds = tuning.WARMUP, tuning.ROUNDS
    assert clock.calls == {n: warm + rounds for n in clock.cost}
    assert tuning.choose("k", clock.candidates(), clock=clock) == "b"  # remembered: nothing runs again
    assert clock.calls == {n: warm + rounds for n in clock.cost}
    assert tuning.choices() == {"k": ("b", {"rule": 2.0, "a": 1.5, "b": 1.0})}
    built = []
    assert tuning.choose("k", lambda: built.append(1) or clock.candidates(), clock=clock) == "b"
    assert built == []  # a candidate factory is not even called for a decided key
    tuning.clear()
    assert tuning.choices() == {}
    fresh = PlantedClock({"rule": 1.0, "x": 0.5})
    assert tuning.choose("f", lambda: built.append(1) or fresh.candidates(), clock=fresh) == "x" and built == [1]


def test_the_rule_keeps_its_choice_unless_another_is_clearly_faster():
    margin = tuning.MARGIN
    tie = PlantedClock({"rule": 1.0, "x": 1.0})
    assert tuning.choose("tie", tie.candidates(), clock=tie) == "rule"
    near = PlantedClock({"rule": 1.0, "x": margin + 0.01})
    assert tuning.choose("near", near.candidates(), clock=near) == "rule"
    past = PlantedClock({"rule": 1.0, "x": margin - 0.01})
    assert tuning.choose("past", past.candidates(), clock=past) == "x"
    one = PlantedClock({"only": 5.0})
    assert tuning.choose("one", one.candidates(), clock=one) == "only" and one.calls["only"] == 0
    with pytest.raises(ConfigError, match="nothing to choose"):
        tuning.choose("none", {})


def _scripted(times):
    """Candidates ``rule`` and ``x`` whose timed rounds (alternating, after the warm-up) take ``times``."""
    times = iter(times)

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()
    seq = []

    def make(name):
        def run():
            if len(seq) >= 2 * tuning.WARMUP:  # timed rounds
                clock.now += next(times)
            seq.append(name)
        return run
    return {"rule": make("rule"), "x": make("x")}, clock


def test_the_typical_round_decides_not_the_luckiest():
    """A candidate fast in only two rounds of five (NNPACK beside OpenMP's spinning workers) does not win on
    its best round; one fast in three of five does; and two disturbed rounds (here of ``x``) do not hide a
    candidate that is faster in its other three."""
    assert tuning.ROUNDS == 5
    lucky, clock = _scripted([1.0, 0.6, 1.0, 0.6, 1.0, 1.5, 1.0, 1.5, 1.0, 1.5])  # rounds of (rule, x)
    assert tuning.choose("lucky", lucky, clock=clock) == "rule"
    assert tuning.choices()["lucky"][1] == pytest.approx({"rule": 1.0, "x": 1.5})  # the medians
    steady, clock = _scripted([1.0, 0.6, 1.0, 0.6, 1.0, 0.6, 1.0, 3.0, 1.0, 3.0])
    assert tuning.choose("steady", steady, clock=clock) == "x"


def test_switch_and_context_and_no_environment():
    assert not tuning.enabled()
    with tuning.tuning():
        assert tuning.enabled()
        with tuning.tuning(False):
            assert not tuning.enabled()
        assert tuning.enabled()
    assert not tuning.enabled()
    # off in a fresh process whatever the environment says: only set_enabled / tuning() / --tune switch it on
    code = "from dcnbio.fast import tuning; print(tuning.enabled())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCNBIO_")}
    for value in ("", "1", "fast"):
        res = subprocess.run([sys.executable, "-c", code], env={**env, "DCNBIO_TUNE": value}, capture_output=True,
                             text=True)
        assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k, padding", [(7, (3, 3)), (5, (2, 2)), (3, (0, 0)), (5, (1, 2))])
def test_each_conv_backend_is_the_same_convolution(backend, k, padding):
    """Values against F.conv2d (float64: the same sums; float32 on a batch NNPACK accepts), and the kernel that
    ran, from the profiler: each backend is what it says, and the global switches are restored."""
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(3, 4, 11, 12, dtype=torch.float64, generator=gen)
    w = torch.randn(5, 4, k, k, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(forward_conv(x, w, padding, backend), F.conv2d(x, w, padding=padding),
                               rtol=1e-13, atol=1e-13)
    x, w = torch.randn(16, 4, 11, 12, generator=gen), w.float()  # oneDNN and NNPACK serve float32 only
    assert nnpack_applies(x, w, padding) == torch.backends.nnpack.is_available()
    with torch.profiler.profile() as prof:
        got = forward_conv(x, w, padding, backend)
    want = F.conv2d(x.double(), w.double(), padding=padding)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)  # NNPACK transforms: float32 rounding
    ran = {e.name for e in prof.events()}
    kernel = {"onednn": "aten::mkldnn_convolution", "nnpack": "aten::_nnpack_spatial_convolution",
              "gemm": "aten::_slow_conv2d_forward"}
    kernel["grouped"] = kernel["onednn"]  # oneDNN on images folded into channels (next test)
    if backend == "nnpack" and not torch.backends.nnpack.is_available():
        pytest.skip("this torch build has no NNPACK")
    assert kernel[backend] in ran and not ({v for v in kernel.values() if v != kernel[backend]} & ran)
    assert torch.backends.mkldnn.enabled and torch.backends.nnpack.set_flags(True) == (True,)


@pytest.mark.parametrize("lanes, channels, batch, factor", [
    (16, (8, 8), 128, 2), (16, (4, 5), 12, 3), (16, (8, 8), 127, 1),  # 127 images: no whole groups
    (8, (8, 8), 128, 1), (8, (4, 4), 6, 2), (16, (16, 16), 8, 1)])
def test_grouped_backend_folds_images_into_one_vector_of_channels(monkeypatch, lanes, channels, batch, factor):
    """k = vector floats // max(C_in, C_out) images side by side as the channels of one, groups = k: the kernel
    sees (B/k, k·C) inputs and (k·O, C) weights, and the values are F.conv2d's (float32: the same sums; float64
    to rounding).  Where k < 2 or the batch does not divide, the plain oneDNN call runs."""
    from dcnbio.fast import conv as conv_module

    monkeypatch.setattr(conv_module, "VECTOR_FLOATS", {torch.backends.cpu.get_cpu_capability(): lanes})
    gen = torch.Generator().manual_seed(batch)
    cout, cin = channels
    x = torch.randn(batch, cin, 9, 10, generator=gen)
    w = torch.randn(cout, cin, 5, 5, generator=gen)
    assert conv_module.group_factor(x, w) == factor
    assert conv_module.default_backend(x, w) == ("grouped" if factor > 1 else "onednn")
    with torch.profiler.profile(record_shapes=True) as prof:
        got = forward_conv(x, w, (2, 2), "grouped")
    shapes = [e.input_shapes[:2] for e in prof.events() if e.name == "aten::mkldnn_convolution"]
    assert shapes == [[[batch // factor, factor * cin, 9, 10], [factor * cout, cin, 5, 5]]]
    torch.testing.assert_close(got, F.conv2d(x, w, padding=2), rtol=1e-5, atol=1e-5)
    assert got._base is None and got.is_contiguous()  # a tensor of its own: callers may add to it in place
    nhwc = forward_conv(x.contiguous(memory_format=torch.channels_last), w, (2, 2), "grouped")
    torch.testing.assert_close(nhwc, F.conv2d(x, w, padding=2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(forward_conv(x.double(), w.double(), (2, 2), "grouped"),
                               F.conv2d(x.double(), w.double(), padding=2), rtol=1e-13, atol=1e-13)


def test_tuned_conv2d_gives_autograds_values_and_gradients_at_any_width():
    """With tuning the forward-gradient path serves every channel count; values and gradients stay autograd's."""
    gen = torch.Generator().manual_seed(0)
    with tuning.tuning():
        for c in (4, 32):
            x = torch.randn(2, c, 9, 10, dtype=torch.float64, generator=gen, requires_grad=True)
            w = torch.randn(c, c, 5, 5, dtype=torch.float64, generator=gen, requires_grad=True)
            ours, theirs = conv2d(x, w, padding=2), F.conv2d(x, w, padding=2)
            assert "Conv2dForwardGrad" in type(ours.grad_fn).__name__
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
            g = torch.randn(theirs.shape, dtype=torch.float64, generator=gen)
            for a, b in zip(torch.autograd.grad(ours, (x, w), g), torch.autograd.grad(theirs, (x, w), g)):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    chosen = {k[1:3]: v[0] for k, v in tuning.choices().items() if k[0] == "conv2d"}
    assert chosen and set(chosen.values()) <= set(BACKENDS)
    assert ((2, 32, 9, 10), (32, 32, 5, 5)) in chosen  # the wide layer was tuned too


def test_tuned_celu_is_celu():
    x = torch.linspace(-6, 4, 3001, dtype=torch.float64).reshape(1, 3001).requires_grad_(True)
    with tuning.tuning():
        y = celu(x, 0.5)
        g = torch.autograd.grad(y.sum(), x)[0]
        with torch.no_grad():
            y_nograd = celu(x, 0.5)
    y_ref = torch.nn.CELU(0.5)(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=2.3e-16)
    torch.testing.assert_close(y_nograd, y_ref.detach(), rtol=0, atol=2.3e-16)
    torch.testing.assert_close(g, torch.autograd.grad(y_ref.sum(), x)[0], rtol=0, atol=4.5e-16)
    keys = [k for k in tuning.choices() if k[0] == "celu"]
    assert {k[-1] for k in keys} == {True, False}  # with and without gradients are separate choices
    assert all(tuning.choices()[k][0] in ("torch", "exp") for k in keys)


@pytest.mark.parametrize("scale", ["shared", "per-channel"])
def test_tuned_auto_layer_equals_the_reference_and_measures_only_valid_formulations(scale):
    layer = SRFConv2d(5, 4, scale=scale, formulation="auto").double()
    x = torch.randn(2, 4, 13, 12, dtype=torch.float64, requires_grad=True)
    with tuning.tuning():
        out = layer(x, 0.7, time_channel=True)
    xt = torch.cat([x, torch.full_like(x[:, :1], 0.7)], 1)
    ref = reference_conv(layer, xt, 0.7)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    g, g_ref = (torch.autograd.grad(o.sum(), [x, *layer.parameters()]) for o in (out, ref))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)
    (key, (form, times)), = [(k, v) for k, v in tuning.choices().items() if k[0] == "srf"]
    expected = {"dense", "spectral"} | ({"separable"} if scale == "shared" else set())
    assert set(times) == expected and form in expected
    assert layer.filter_builds == 1  # the candidates' filters are not counted as builds of the layer
    calls = []
    prepare = layer.prepare
    layer.prepare = lambda *a: calls.append(a[0]) or prepare(*a)
    with tuning.tuning():
        layer(x, 0.7, time_channel=True)
    assert calls == [form]  # decided: later calls build only the chosen formulation's filters, time nothing


def test_tuned_model_step_equals_reference_and_untuned_runs_measure_nothing():
    """A whole training step with every choice measured (float64): the reference function to rounding."""
    model, ref = model_pair("dcn-ode", "auto", torch.float64, adjoint=False)
    x, y = fixed_batch(torch.float64)
    model(x)
    assert tuning.choices() == {}  # tuning off: the fixed rules, nothing timed
    with tuning.tuning():
        assert_same_step(model, ref, x, y, rtol=1e-7)
    kinds = {k[0] for k in tuning.choices()}
    assert kinds == {"srf", "conv2d", "celu"} or kinds == {"srf", "celu"}  # conv2d only where dense ran
    assert len([k for k in tuning.choices() if k[0] == "srf"]) == len(srf_layers(model))


def test_tuning_leaves_the_reference_and_other_formulations_alone():
    torch.manual_seed(0)
    model = create_model("dcn-ode", in_channels=1, width=0.125, formulation="spectral", **SOLVER)
    with tuning.tuning(), torch.no_grad():
        model(torch.randn(2, 1, 16, 16))
    assert not [k for k in tuning.choices() if k[0] == "srf"]
