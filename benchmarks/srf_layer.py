"""Cost of one SRF layer: every formulation against a plain ``nn.Conv2d`` of the same kernel size, vs σ.

Run on an otherwise idle machine, with the default thread count::

    .venv/bin/python benchmarks/srf_layer.py                 # C = 32, 26x26, batch 128, σ = 0.5 1 2 3
    .venv/bin/python benchmarks/srf_layer.py --grid          # dense, spectral, separable over the network's shapes
    .venv/bin/python benchmarks/srf_layer.py --device cuda   # on a GPU (cuDNN for the direct convolutions)

The first mode times forward + backward (gradients of the input and of every parameter, one fixed
cotangent) and forward alone (``no_grad``: the adjoint's forward solve, trajectory extraction) of one
layer call, filters built inside the call as a layer outside an ODE block does.  Targets (issue #6):
cost(σ=2)/cost(σ=1) ≤ 1.5, cost(σ=3)/cost(σ=1) ≤ 2, never slower than a plain conv of the same kernel
size.  Measurements of all variants alternate round by round; medians are printed.

FLOPs: a direct convolution of ``k x k`` kernels costs ``2 B O C k² H W`` forward and twice that backward;
that *dense-equivalent* count is what the model function asks for.  The fraction of peak is executed FLOPs
over time for the direct convolutions (plain, reference, dense); for ``spectral`` the executed count is
estimated (complex products 8 real FLOPs per multiply-add, transforms 2.5 n log2 n per real 2-D transform).

The ``--grid`` mode times dense, spectral and separable on the shapes the network meets at widths 1/8 … 1
(block 1: C at 26x26, block 2: 2C at 13x13, block 3: 4C at 6x6) for several radii; it is what the
``auto`` rule of :func:`dcnbio.fast.formulations.auto_rule` was set from.
"""
import argparse
import json
import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe_machine, median, parse_device, print_machine, timed  # noqa: E402

from dcnbio.core.filters import kernel_radius  # noqa: E402
from dcnbio.core.layers.srf import SRFConv2d  # noqa: E402
from dcnbio.fast.formulations import auto_rule, fft_length  # noqa: E402

FORMS = ("reference", "dense", "spectral", "separable", "auto")


def srf_layer(cin, cout, sigma, formulation):
    layer = SRFConv2d(cin, cout, formulation=formulation)
    with torch.no_grad():
        layer.scale.log2_scale.fill_(math.log2(sigma))
    return layer


def fwd_bwd(layer, x, cot):
    def run():
        layer.zero_grad(set_to_none=True)
        xx = x.detach().requires_grad_(True)
        (layer(xx) * cot).sum().backward()
    return run


def fwd(layer, x):
    def run():
        with torch.no_grad():
            layer(x)
    return run


def spectral_flops(b, cin, cout, h, w, r):
    nh, nw = fft_length(h + r), fft_length(w + r)
    freqs = nh * (nw // 2 + 1)
    gemm = 8 * freqs * b * cin * cout
    transform = 2.5 * nh * nw * math.log2(nh * nw)
    return gemm + transform * b * (cin + cout), 3 * gemm + 2 * transform * b * (cin + cout)


def sigma_sweep(args, peak):
    b, c, h = args.batch, args.channels, args.size
    dev = args.device
    x = torch.randn(b, c, h, h, device=dev)
    variants = {}
    for sigma in args.sigmas:
        r = kernel_radius(sigma)
        k = 2 * r + 1
        for form in FORMS:
            variants[(sigma, form)] = srf_layer(c, c, sigma, form)
        variants[(sigma, "plain conv")] = nn.Conv2d(c, c, k, padding=r, bias=False)
    for m in variants.values():
        m.to(dev)
    cot = {s: torch.randn(b, c, h, h, device=dev) for s in args.sigmas}
    runs = {key: (fwd_bwd(m, x, cot[key[0]]), fwd(m, x)) for key, m in variants.items()}
    for run, run_fwd in runs.values():  # warm-up: allocator, MKL/oneDNN kernels, FFT plans
        run()
        run_fwd()
    times = {key: ([], []) for key in runs}
    for _ in range(args.rounds):
        for key, (run, run_fwd) in runs.items():
            times[key][0].append(timed(run, dev))
            times[key][1].append(timed(run_fwd, dev))
    results = []
    for sigma in args.sigmas:
        r = kernel_radius(sigma)
        k = 2 * r + 1
        dense_fwd = 2 * b * c * c * k * k * h * h
        for form in FORMS + ("plain conv",):
            t_fb, t_f = (median(v) for v in times[(sigma, form)])
            chosen = auto_rule(variants[(sigma, form)], r, c, (h, h)) if form != "plain conv" else "-"
            if form in ("reference", "dense", "plain conv") or chosen == "dense":
                executed = (dense_fwd, 3 * dense_fwd)
            elif form == "spectral" or chosen == "spectral":
                executed = spectral_flops(b, c, c, h, h, r)
            else:
                executed = (float("nan"), float("nan"))
            results.append({"sigma": sigma, "k": k, "formulation": form, "auto_picks": chosen,
                            "fwd_bwd_ms": 1e3 * t_fb, "fwd_ms": 1e3 * t_f,
                            "dense_equiv_gflop_per_image": 3 * dense_fwd / b * 1e-9,
                            "effective_gflops": 3 * dense_fwd / t_fb * 1e-9,
                            "executed_fraction_of_peak": executed[1] / t_fb * 1e-9 / peak})
    print(f"\nSRF layer C={c}->{c}, {h}x{h}, batch {b}; medians of {args.rounds} alternating rounds")
    print(f"{'sigma':>5} {'k':>3} {'formulation':>11} {'picks':>8} {'fwd+bwd ms':>11} {'fwd ms':>9} "
          f"{'GFLOP/img':>9} {'eff GFLOP/s':>11} {'exec/peak':>9}")
    for row in results:
        print(f"{row['sigma']:>5} {row['k']:>3} {row['formulation']:>11} {row['auto_picks']:>8} "
              f"{row['fwd_bwd_ms']:>11.1f} {row['fwd_ms']:>9.1f} {row['dense_equiv_gflop_per_image']:>9.3f} "
              f"{row['effective_gflops']:>11.1f} {row['executed_fraction_of_peak']:>9.2f}")
    by = {(row["sigma"], row["formulation"]): row for row in results}
    print("\ngrowth with σ (fwd+bwd, fwd) relative to σ = 1; and time / plain conv of the same kernel size")
    for form in FORMS + ("plain conv",):
        if 1.0 not in args.sigmas:
            break
        base = by[(1.0, form)]
        growth = " ".join(f"σ={s}: {by[(s, form)]['fwd_bwd_ms'] / base['fwd_bwd_ms']:.2f}/"
                          f"{by[(s, form)]['fwd_ms'] / base['fwd_ms']:.2f}" for s in args.sigmas)
        vs_plain = " ".join(f"{by[(s, form)]['fwd_bwd_ms'] / by[(s, 'plain conv')]['fwd_bwd_ms']:.2f}/"
                            f"{by[(s, form)]['fwd_ms'] / by[(s, 'plain conv')]['fwd_ms']:.2f}" for s in args.sigmas)
        print(f"  {form:>11}: growth {growth} | vs plain {vs_plain}")
    return results


GRID_FORMS = ("dense", "spectral", "separable")


def grid(args):
    """Dense vs spectral vs separable on the network's layer shapes (input channels include the time channel)."""
    shapes = []
    for c1 in (4, 8, 16, 32):
        shapes += [(c1, 26), (2 * c1, 13), (4 * c1, 6)]
    rows = []
    print(f"\n{' vs '.join(GRID_FORMS)}, batch {args.batch}, C+1 -> C channels (an ODE block conv), filters built "
          "per call; ratios are time / dense time")
    print(f"{'C':>4} {'H':>3} {'r':>2} {'dense f+b':>10} {'spec/d':>7} {'sep/d':>6} {'dense f':>8} {'spec/d':>7} "
          f"{'sep/d':>6}")
    for c, h in sorted(set(shapes)):
        x = torch.randn(args.batch, c, h, h, device=args.device)
        cot = torch.randn(args.batch, c, h, h, device=args.device)
        for r in (1, 2, 3, 4, 5, 6, 7):
            layers = {form: SRFConv2d(c + 1, c, formulation=form, radius=r).to(args.device) for form in GRID_FORMS}
            t = 0.5

            def make(layer, grad):
                def run():
                    if grad:
                        layer.zero_grad(set_to_none=True)
                        xx = x.detach().requires_grad_(True)
                        (layer(xx, t, time_channel=True) * cot).sum().backward()
                    else:
                        with torch.no_grad():
                            layer(x, t, time_channel=True)
                return run

            runs = {(f, g): make(layers[f], g) for f in layers for g in (True, False)}
            for run in runs.values():
                run()
            times = {key: [] for key in runs}
            for _ in range(args.rounds):
                for key, run in runs.items():
                    times[key].append(timed(run, args.device))
            m = {key: 1e3 * median(v) for key, v in times.items()}
            row = {"C": c, "H": h, "r": r}
            for f in GRID_FORMS:
                row[f"{f}_fb_ms"], row[f"{f}_f_ms"] = m[(f, True)], m[(f, False)]
            rows.append(row)
            fb = " ".join(f"{row[f'{f}_fb_ms'] / row['dense_fb_ms']:>6.2f}" for f in GRID_FORMS[1:])
            fo = " ".join(f"{row[f'{f}_f_ms'] / row['dense_f_ms']:>6.2f}" for f in GRID_FORMS[1:])
            print(f"{c:>4} {h:>3} {r:>2} {row['dense_fb_ms']:>10.2f} {fb} {row['dense_f_ms']:>8.2f} {fo}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--size", type=int, default=26)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--grid", action="store_true",
                   help="dense, spectral and separable over the network's shapes instead")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N")
    args = p.parse_args(argv)
    parse_device(p, args.device)  # validated; kept as given (a string, for the JSON record)
    machine = describe_machine(device=args.device)
    print_machine(machine)
    peak = machine["peak_gflops"]
    results = grid(args) if args.grid else sigma_sweep(args, peak)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
