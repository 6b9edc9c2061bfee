"""Reconstruction (paper Table 2b, App. A.4): the untied decoder and the frozen encoder, hand-computable MSE and
paired tests, seeded training, one-line errors, and the script end to end on the bundled checkpoints."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from dcnbio import create_model
from dcnbio.extract.reconstruction import (Decoder, center_crop, compare_models, compute_reconstruction,
                                            compute_reconstruction_error, encode, reconstruct, train_decoder)
from dcnbio.plots import plot_reconstructions
from dcnbio.reports.reconstruction_report import run_values
from dcnbio.train.checkpoint import make_checkpoint, save_checkpoint
from dcnbio.train.data import epoch_permutation, load_dataset
from dcnbio.errors import ConfigError, DataError
from dcnbio.io import open_results
from dcnbio.core.layers.ode import ODEBlock
from dcnbio.core.layers.srf import SRFConv2d
from dcnbio.core.models import ResBlock
from helpers import load_analysis

REPO = Path(__file__).resolve().parents[1]
MODELS = ("dcn-ode", "odenet", "resnet-blocks")


def tiny(name="resnet-blocks", width=0.125, seed=0):
    torch.manual_seed(seed)
    return create_model(name, in_channels=1, width=width)


def block_convs(block):
    """The two convolutions of a block (ODE: inside the time concatenation)."""
    if isinstance(block, ODEBlock):
        return [block.func.conv1.conv, block.func.conv2.conv]
    return [block.conv1, block.conv2]


# --- the decoder -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,conv_type", [("dcn-ode", SRFConv2d), ("odenet", nn.Conv2d),
                                            ("resnet-blocks", nn.Conv2d), ("dcn-sigma-ji", SRFConv2d)])
@pytest.mark.parametrize("width", [0.125, 0.25])
def test_decoder_blocks_are_of_the_models_kind_and_width(name, conv_type, width):
    model = tiny(name, width)
    decoder = Decoder(model.config, seed=0)
    c1, c2, c3 = model.config.channels
    assert (c2, c3) == (round(64 * width), round(128 * width))
    for dec_name, enc_block in (("block3", model.block3), ("block2", model.block2)):
        dec_block = getattr(decoder, dec_name)
        assert type(dec_block) is type(enc_block) and type(dec_block) in (ODEBlock, ResBlock)
        assert all(type(c) is conv_type for c in block_convs(dec_block))
        # built by the same code: the same parameters, shape for shape, as the classifier's block of that width
        assert {k: v.shape for k, v in dec_block.state_dict().items()} == \
               {k: v.shape for k, v in enc_block.state_dict().items()}
        if isinstance(dec_block, ODEBlock):
            for attr in ("T", "solver", "rtol", "atol", "adjoint"):
                assert getattr(dec_block, attr) == getattr(enc_block, attr)
            assert dec_block.name == f"decoder.{dec_name}"
    assert (decoder.reduce.in_channels, decoder.reduce.out_channels, decoder.reduce.kernel_size) == (c3, c2, (1, 1))
    assert (decoder.out.in_channels, decoder.out.out_channels, decoder.out.kernel_size) == (c2, 1, (1, 1))
    assert type(decoder.act) is type(model.head[1])  # CELU for DCNs, ReLU for the baselines
    assert decoder(torch.randn(2, c3, 6, 6)).shape == (2, 1, 24, 24)


@pytest.mark.parametrize("name", MODELS)
def test_decoder_is_untied_from_the_encoder(name):
    model = tiny(name)
    decoder = Decoder(model.config)
    encoder_storage = {p.untyped_storage().data_ptr() for p in model.parameters()}
    decoder_storage = {p.untyped_storage().data_ptr() for p in decoder.parameters()}
    assert encoder_storage.isdisjoint(decoder_storage)
    encoder_modules = {id(m) for m in model.modules()}
    assert not any(id(m) in encoder_modules for m in decoder.modules())
    # and the gradient of a decoder loss reaches no encoder parameter
    x = torch.randn(3, 1, 28, 28)
    loss = decoder(encode(model, x)).square().mean()
    loss.backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in decoder.parameters())


def test_decoder_initialisation_is_seeded_and_leaves_global_rng_alone():
    config = tiny("dcn-ode").config
    state = torch.random.get_rng_state()
    a, b, c = (Decoder(config, seed=s).state_dict() for s in (1, 1, 2))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# --- encoder, crop, MSE -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_encode_gives_the_features_the_head_classifies(name):
    model = tiny(name).train()
    x = torch.randn(5, 1, 28, 28)
    features = encode(model, x, batch_size=5)
    assert features.shape == (5, model.config.channels[2], 6, 6) and not features.requires_grad
    assert model.training  # mode restored
    with torch.no_grad():
        # one batch of 5 in both: ODE solves are per batch; tolerance: the same operations, rounding only
        torch.testing.assert_close(model.head(features), model(x), rtol=0, atol=1e-6)


def test_center_crop_by_hand():
    img = torch.arange(28 * 28.).reshape(1, 1, 28, 28)
    crop = center_crop(img, 24)
    assert crop.shape == (1, 1, 24, 24) and crop[0, 0, 0, 0] == 2 * 28 + 2 and crop[0, 0, -1, -1] == 25 * 28 + 25
    odd = center_crop(torch.arange(25.).reshape(5, 5), 2)  # offset (5 - 2) // 2 = 1
    assert odd.tolist() == [[6.0, 7.0], [11.0, 12.0]]
    assert torch.equal(center_crop(img, 28), img)
    with pytest.raises(DataError, match="cannot crop 29x29"):
        center_crop(img, 29)


def test_mse_of_a_decoder_with_known_output():
    torch.manual_seed(2)
    decoder = Decoder(tiny("odenet").config).double()
    with torch.no_grad():  # zero output weights: the decoder outputs its bias b everywhere
        decoder.out.weight.zero_()
        decoder.out.bias.fill_(0.5)
    features = torch.randn(4, 16, 3, 3, dtype=torch.float64)
    targets = torch.randn(4, 1, 12, 12, dtype=torch.float64)
    ds = compute_reconstruction_error(decoder, features, targets, batch_size=3)
    expected = ((targets - 0.5) ** 2).mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(ds["mse"].values, expected, rtol=1e-15)
    assert ds["image"].values.tolist() == [0, 1, 2, 3]
    assert ds.attrs["mean_mse"] == pytest.approx(expected.mean(), rel=1e-15)
    # a target equal to the decoder's own output has error exactly 0
    same = compute_reconstruction_error(decoder, features, reconstruct(decoder, features))
    assert np.all(same["mse"].values == 0)


# --- training ---------------------------------------------------------------------------------------------------

def training_data(n=12, c3=16, seed=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c3, 6, 6, generator=g), torch.randn(n, 1, 24, 24, generator=g)


@pytest.mark.parametrize("name", ["resnet-blocks", "odenet"])
def test_training_is_seeded_and_deterministic(name):
    config = tiny(name).config
    features, targets = training_data()

    def run(seed):
        decoder = Decoder(config, seed=0)
        history = train_decoder(decoder, features, targets, steps=4, batch_size=5, seed=seed)
        return decoder.state_dict(), history

    (a, ha), (b, hb), (_, hc) = run(7), run(7), run(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    xr.testing.assert_identical(ha, hb)
    assert not np.array_equal(ha["loss"].values, hc["loss"].values)  # another batch order
    assert ha.attrs["n_train"] == 12 and ha.attrs["batch_size"] == 5
    if name == "odenet":
        assert (ha["nfe"].values >= 2 * 8).all()  # two dopri5 solves of >= 1 step (2 + 6 evaluations) each


def test_training_history_by_hand():
    config = tiny().config
    features, targets = training_data()
    decoder = Decoder(config, seed=3)
    with torch.no_grad():
        first = epoch_permutation(12, 9, 0)[:5]  # the first batch of seed 9
        loss0 = float(((Decoder(config, seed=3)(features[first]) - targets[first]) ** 2).mean())
    history = train_decoder(decoder, features, targets, steps=10, batch_size=5, lr=0.1, seed=9)
    assert history["loss"].values[0] == pytest.approx(loss0, rel=1e-6)  # recorded before the step
    # x0.1 after 50 % and after 80 % of 10 steps
    np.testing.assert_allclose(history["lr"].values, [0.1] * 5 + [0.01] * 3 + [0.001] * 2, rtol=1e-12)
    assert (history["nfe"].values == 0).all()  # a residual decoder has no ODE blocks


def test_a_small_full_batch_step_lowers_the_loss():
    features, targets = training_data()
    decoder = Decoder(tiny().config, seed=0).double()
    history = train_decoder(decoder, features.double(), targets.double(), steps=2, batch_size=100, lr=1e-3,
                            milestones=())
    loss = history["loss"].values  # same full batch twice; the first step is a plain gradient step
    assert history.attrs["batch_size"] == 12 and loss[1] < loss[0]


@pytest.mark.parametrize("kwargs,error,match", [
    ({"steps": 0}, ConfigError, "steps must be a positive integer"),
    ({"batch_size": 0}, ConfigError, "batch_size must be a positive integer"),
    ({"lr": -1.0}, ConfigError, "lr must be"),
    ({"lr": float("nan")}, ConfigError, "lr must be"),
    ({"milestones": (1.5,)}, ConfigError, "milestones"),
    ({"targets": torch.zeros(12, 1, 20, 20)}, DataError, "targets must have shape (12, 1, 24, 24)"),
    ({"targets": torch.zeros(11, 1, 24, 24)}, DataError, "targets must have shape"),
    ({"features": torch.zeros(12, 5, 6, 6)}, DataError, "features have 5 channels but the decoder's first block "
                                                        "takes 16"),
    ({"features": torch.zeros(12, 16, 6)}, DataError, "features must be a (N, C, h, w) tensor"),
])
def test_bad_training_inputs(kwargs, error, match):
    features, targets = training_data()
    args = {"features": features, "targets": targets, **kwargs}
    with pytest.raises(error, match=match.replace("(", r"\(").replace(")", r"\)")):
        train_decoder(Decoder(tiny().config), args.pop("features"), args.pop("targets"), **args)


def test_bad_decoder_inputs():
    with pytest.raises(ConfigError, match="needs a ModelConfig"):
        Decoder(tiny())
    with pytest.raises(ConfigError, match="seed must be an integer"):
        Decoder(tiny().config, seed=0.5)


# --- the experiment for one classifier -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dcn-ode", "resnet-blocks"])
def test_compute_reconstruction_freezes_the_encoder(name):
    model = tiny(name).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    train_images, eval_images = torch.randn(10, 1, 28, 28, generator=g), torch.randn(6, 1, 28, 28, generator=g)
    ds = compute_reconstruction(model, train_images, eval_images, steps=3, batch_size=4, n_examples=2,
                                train_index=np.arange(100, 110), eval_index=np.arange(6) * 3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert ds.attrs["encoder_unchanged"] == 1 and ds.attrs["crop"] == 24
    assert ds["image"].values.tolist() == [0, 3, 6, 9, 12, 15]
    assert ds["example_image"].values.tolist() == [0, 3] and ds["train_image"].values[0] == 100
    # per-image MSE from the stored example arrays (independent of the code path that produced `mse`)
    own = ((ds["reconstruction"] - ds["original"]) ** 2).mean(("channel", "y", "x"))
    np.testing.assert_allclose(ds["mse"].values[:2], own.values, rtol=1e-6)  # float32 arrays vs float64 sums
    np.testing.assert_array_equal(ds["original"].values, center_crop(eval_images[:2], 24).numpy())
    mean_image = center_crop(train_images, 24).double().mean(0)
    expected = ((center_crop(eval_images, 24).double() - mean_image) ** 2).mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(ds["mse_mean_image"].values, expected, rtol=1e-12)
    assert ds.attrs["decoder_parameters"] == sum(p.numel() for p in Decoder(model.config).parameters())
    assert ds.attrs["encoder_parameters"] == sum(p.numel() for p in model.parameters()) - \
        sum(p.numel() for p in model.head.parameters())


# --- comparing models -------------------------------------------------------------------------------------------

def mse_ds(values, images=None):
    images = np.arange(len(values)) if images is None else images
    return xr.Dataset({"mse": ("image", np.asarray(values, float))}, coords={"image": images})


def test_wilcoxon_by_hand_and_pairing_by_image_label():
    # differences a - b: +1 … +6 and -7 → rank sums W+ = 21, W- = 7; statistic min = 7;
    # exact two-sided p = 2 · #{subsets of {1..7} with sum <= 7} / 2^7 = 2 · 19 / 128; median of -7, 1..6 is 3
    a = mse_ds([1, 2, 3, 4, 5, 6, 7])
    b_values = np.array([0, 0, 0, 0, 0, 0, 14.0])
    order = np.array([6, 2, 0, 5, 1, 4, 3])  # b stored in another order, plus an image a does not have
    b = mse_ds(np.append(b_values[order], 99.0), np.append(order, 50))
    out = compare_models({"a": a, "b": b})
    row = out.isel(pair=0)
    assert str(row["pair"].values) == "a vs b" and int(row["n"]) == 7
    assert float(row["statistic"]) == 7 and float(row["p_value"]) == pytest.approx(38 / 128, rel=1e-12)
    assert float(row["median_difference"]) == 3 and float(row["fraction_a_lower"]) == pytest.approx(1 / 7)
    assert float(row["mean_a"]) == 4 and float(row["mean_b"]) == 2


def test_compare_models_edge_cases():
    out = compare_models({"a": mse_ds([1, 2]), "b": mse_ds([1, 2]), "c": mse_ds([3], [7])})
    assert list(out["pair"].values) == ["a vs b", "a vs c", "b vs c"]
    assert np.isnan(out["p_value"].values).all()  # identical values; no shared image with c
    assert out["n"].values.tolist() == [2, 0, 0]
    with pytest.raises(ConfigError, match="unknown model"):
        compare_models({"a": mse_ds([1, 2])}, pairs=[("a", "z")])
    with pytest.raises(DataError, match="not unique"):
        compare_models({"a": mse_ds([1, 2], [0, 0]), "b": mse_ds([1, 2])})


def test_plot_reconstructions():
    ex = {"original": (("example", "channel", "y", "x"), np.random.default_rng(0).normal(size=(3, 1, 4, 4)))}
    a = xr.Dataset({**ex, "reconstruction": ex["original"]}, coords={"example_image": ("example", [4, 5, 6])})
    fig = plot_reconstructions({"a": a, "b": a}, n_examples=2)
    assert len(fig.axes) == 6 and fig.axes[2].get_title() == "MSE 0"
    with pytest.raises(DataError, match="other images"):
        plot_reconstructions({"a": a, "b": a.assign_coords(example_image=("example", [1, 2, 3]))})


# --- the script -------------------------------------------------------------------------------------------------

def run(script, argv, capsys):
    rc = script.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_script_on_the_bundled_checkpoints(tmp_path, capsys):
    script = load_analysis("reconstruction")
    # every finished bundled run of the three models (a run still training has no final.json and is skipped)
    bundled = {f"{m}-{f.parent.name}": f.parent / "last.pt" for m in MODELS
               for f in (REPO / "data" / "checkpoints" / m).glob("seed*/final.json")}
    if not all(f"{m}-seed1" in bundled for m in MODELS):
        pytest.skip("bundled checkpoints not present")
    digests = {label: sha256(p) for label, p in bundled.items()}
    out = tmp_path / "rec"
    rc, printed, err = run(script, ["--n-images", 6, "--n-train", 8, "--steps", 2, "--batch-size", 4,
                                    "--n-examples", 3, "--out", out], capsys)
    assert rc == 0, err
    results = open_results(out / "reconstruction.nc")
    assert set(results) == set(bundled)
    val = load_dataset("fashion-mnist", "val", val_size=1000, split_seed=0, download=False)
    train = load_dataset("fashion-mnist", "train", val_size=1000, split_seed=0, download=False)
    for label, ds in results.items():
        ds = ds.load()
        assert ds["image"].values.tolist() == val.indices[:6].tolist()  # the checkpoint's own validation split
        assert ds["train_image"].values.tolist() == train.indices[:8].tolist()
        assert np.intersect1d(ds["image"].values, ds["train_image"].values).size == 0
        own = ((ds["reconstruction"].astype(float) - ds["original"]) ** 2).mean(("channel", "y", "x"))
        np.testing.assert_allclose(ds["mse"].values[:3], own.values, rtol=1e-5)  # stored as float32
        assert ds.attrs["encoder_unchanged"] == 1 and ds.attrs["steps"] == 2 and ds.attrs["val_size"] == 1000
        assert ds.attrs["checkpoint_sha256"] == digests[label]
    assert {label: sha256(p) for label, p in bundled.items()} == digests  # the bundled files are untouched
    assert (out / "reconstructions.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "The paper's ordering is" in report and "DCN-ODE 17.1 ± 0.3 < ODE-Net 20.2 ± 1.3" in report
    assert "Wilcoxon signed-rank" in report and "normalised input space" in report
    assert (out / "report.tex").exists()
    assert "dcn-ode-seed1 vs odenet-seed1" in printed
    per_run = run_values(results)  # pooled over seeds per model in the report
    assert per_run[("odenet", "odenet-seed1")] == pytest.approx(float(results["odenet-seed1"]["mse"].mean()))
    assert "## Across training runs" in report
    for m in MODELS:
        assert f"| {m} | {sum(label.startswith(m + '-seed') for label in bundled)} |" in report


@pytest.fixture(scope="module")
def odd_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec_ckpts")
    model = tiny("resnet-blocks")
    paths = {}
    for name, config in (("nosplit", {"dataset": "fashion-mnist", "seed": 1}),
                         ("noval", {"dataset": "fashion-mnist", "seed": 1, "val_size": 0, "split_seed": 0}),
                         ("ok", {"dataset": "fashion-mnist", "seed": 1, "val_size": 1000, "split_seed": 0})):
        paths[name] = root / f"{name}.pt"
        save_checkpoint(make_checkpoint(model, kind="last", train_config=config), paths[name])
    return paths


@pytest.mark.parametrize("argv,match", [
    (["--checkpoint", "ok", "--n-images", 0], "argument --n-images: must be an integer >= 1, got 0"),
    (["--checkpoint", "ok", "--steps", 0], "argument --steps: must be an integer >= 1, got 0"),
    (["--checkpoint", "ok", "--lr", -1], "--lr must be a number > 0"),
    (["--checkpoint", "ok", "--n-examples", -1], "argument --n-examples: must be an integer >= 0, got -1"),
    (["--checkpoint", "ok", "--steps", "x"], "argument --steps: must be an integer >= 1, got 'x'"),
    (["--checkpoint", "nosplit"], "does not record its validation split"),
    (["--checkpoint", "noval"], "without a validation split"),
    (["--checkpoint", "missing"], "missing.pt"),
])
def test_script_bad_inputs_exit_2_with_one_line(odd_checkpoints, tmp_path, capsys, argv, match):
    argv = [odd_checkpoints.get(a, tmp_path / "missing.pt") if a in ("ok", "nosplit", "noval", "missing") else a
            for a in argv]
    rc, _, err = run(load_analysis("reconstruction"), argv + ["--out", tmp_path / "out"], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert not (tmp_path / "out").exists()  # nothing written for a rejected input
