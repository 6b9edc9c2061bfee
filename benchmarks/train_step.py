"""One SGD training step (forward + backward) of dcn-ode and dcn-sigma-ji: fast formulations vs the reference.

Run on an otherwise idle machine, with the default thread count::

    .venv/bin/python benchmarks/train_step.py                          # widths 1.0 and 0.25, batch 128, 28x28
    .venv/bin/python benchmarks/train_step.py --models dcn-ode --widths 0.25 --repeats 3

Variants (all dopri5, rtol = atol = 1e-3, the same parameters and the same batch of Fashion-MNIST
training images; the model function is the same, only how it is computed differs):

``reference``         the straightforward formulation (:mod:`dcnbio.core.layers.reference`): filters rebuilt at
                      every evaluation, ``conv2d`` on ``t ⊕ h``, ``torch.nn.CELU``, adjoint gradients —
                      the baseline;
``fast``              ``formulation="auto"`` (spectral/dense per layer, filters once per solve, no
                      time-channel concatenation, CELU through ``exp``), adjoint gradients: the same
                      gradient algorithm;
``fast+seminorm``     as ``fast`` with the seminorm adjoint (fewer backward NFE; gradients differ from the
                      reference's at the level of the adjoint's tolerance);
``reference-direct``  the reference formulation, gradients by backpropagating through the solver;
``fast+direct``       ``fast`` with direct backprop (more memory, gradients of the discrete solve);
``fast+direct+rk``    ``fast+direct`` integrated by dcnbio's own dopri5 (:mod:`dcnbio.fast.dopri5`: the same
                      steps and NFE as torchdiffeq's, leaner stage arithmetic, step sizes not differentiated);
``tuned``             ``fast+direct+rk`` with measured choices (:mod:`dcnbio.fast.tuning`): the SRF
                      formulation, the convolution backend and the CELU formulation timed per shape on this
                      machine (in the warm-up step) instead of the fixed rules.

Each repeat times one step of every variant in turn (alternating in the same process), after a warm-up
step on 8 images and one on the full batch.  By default (``--warm-steps 1``) each timed step is preceded by one
untimed full-batch step of the same variant: a training loop repeats steps of one model, whose memory the
allocator then reuses, while the first step after another variant's (or after the peak-RSS reset, which
returns freed memory to the OS) faults in every page anew — on a KVM guest measured at 2× the steady step
time for ``fast+direct+rk`` (7.9 against 3.9 s, dcn-ode width 0.25), more for variants that hold more
memory.  ``--warm-steps 0`` measures cold steps, as the first version of this script did.

Printed per variant: median step time, images/s, ratio to the reference (of medians,
and its range over repeats), forward/backward NFE per block, dense-equivalent FLOPs per image (the convs,
norms and matrix products of the reference formulation for the variant's NFE, counted by
``torch.utils.flop_counter``), effective GFLOP/s and its fraction of the measured peak (oneDNN conv), peak
resident memory of the step, and the largest difference of logits and gradients from the reference
(relative to the largest reference value).  With ``--f64-check`` every float32 variant is also compared
with a float64 reference step of the same solver settings: float32 adjoint gradients at tolerance 1e-3
can be far from the float64 ones for the reference formulation itself, so the float32-vs-float32
``dgrad`` column alone does not say which formulation is off.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe_machine, median, parse_device, print_machine, timed  # noqa: E402

from dcnbio.extract.cli import _release_memory  # noqa: E402
from dcnbio.fast import tuning  # noqa: E402
from dcnbio.core.layers.reference import SOLVER  # noqa: E402
from dcnbio.core.models.reference import reference_model  # noqa: E402
from dcnbio.core.models import build_model, create_model, nfe, ode_blocks, reset_nfe  # noqa: E402

VARIANTS = {
    "reference": dict(formulation="reference", **SOLVER),
    "fast": dict(formulation="auto", **SOLVER),
    "fast+seminorm": dict(formulation="auto", **{**SOLVER, "seminorm": True}),
    "reference-direct": dict(formulation="reference", **{**SOLVER, "adjoint": False}),
    "fast+direct": dict(formulation="auto", **{**SOLVER, "adjoint": False}),
    "fast+direct+rk": dict(formulation="auto", **{**SOLVER, "adjoint": False, "integrator": "dcnbio"}),
}
VARIANTS["tuned"] = VARIANTS["fast+direct+rk"]
TUNED = {"tuned"}  # variants run with tuning.enabled()


def fashion_batch(n, size, channels=1):
    """The first ``n`` Fashion-MNIST training images (normalised), or a seeded random batch without the data;
    resized to ``size`` and repeated over ``channels`` (3 and 32: CIFAR-10's shape, with real images)."""
    try:
        from dcnbio.train.data import load_dataset
        ds = load_dataset("fashion-mnist", "train", download=False)
        x, y = ds.batch(torch.arange(n))
        source = "fashion-mnist train[:n]"
    except Exception as exc:  # the benchmark still runs without the dataset; say so
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)
        source = f"random normal (no dataset: {type(exc).__name__})"
    if size != 28:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if channels != 1:
        x = x.repeat(1, channels, 1, 1)
        source += f", repeated over {channels} channels"
    return x.contiguous(), y, source


def reset_peak_memory(device):
    """Start a new peak-memory window: of the CUDA allocator on a GPU, of the process's RSS on a CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    return reset_peak_rss()


def peak_memory_mb(device):
    """Peak GPU memory allocated by tensors (CUDA) or peak resident memory of the process (CPU) since the reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return peak_rss_mb()


def reset_peak_rss():
    """Start a new peak-RSS window: free heap back to the OS first (glibc keeps freed pages, so without this
    the high-water mark after a reset is the previous variant's footprint), then reset ``VmHWM``."""
    _release_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def step(model, x, y, tune=False):
    with tuning.tuning(tune):
        model.zero_grad(set_to_none=True)
        reset_nfe(model)
        logits = model(x)
        F.cross_entropy(logits, y).backward()
    return logits.detach()


def eval_flops(ref, x, y):
    """Dense-equivalent FLOPs of one evaluation of each block (forward; forward + vjp) and of the rest."""
    per_block = {}
    h = x
    shapes = {}
    with torch.no_grad():
        for name, module in ref.stages():
            if name in ode_blocks(ref):
                shapes[name] = h.shape
            else:
                h = module(h)
    for name, block in ode_blocks(ref).items():
        hb = torch.randn(shapes[name]).requires_grad_(True)
        t = torch.tensor(1.0)
        with FlopCounterMode(display=False) as fc:
            with torch.no_grad():
                block.func(t, hb)
        fwd = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            out = block.func(t, hb)
            out.backward(torch.randn_like(out))
        per_block[name] = (fwd, fc.get_total_flops())
    with FlopCounterMode(display=False) as fc:  # the discrete layers, ODE blocks as identity (same shape)
        h = x
        for name, module in ref.stages():
            if name not in ode_blocks(ref):
                h = module(h)
        F.cross_entropy(h, y).backward()
    ref.zero_grad(set_to_none=True)
    return per_block, fc.get_total_flops()


def step_flops(per_block, rest, counts, adjoint):
    total = rest
    for name, (fwd, fwd_vjp) in per_block.items():
        n_f, n_b = counts[name]["forward"], counts[name]["backward"]
        total += n_f * fwd + n_b * fwd_vjp if adjoint else n_f * fwd_vjp
    return total


def max_rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def run_model(name, width, x, y, args, peak):
    torch.manual_seed(args.seed)
    tuning.clear()  # the tuned variant measures its choices for this model in its warm-up
    device = torch.device(args.device)
    base = create_model(name, in_channels=x.shape[1], num_classes=10, width=width, **VARIANTS["fast"])
    models = {}
    for v in args.variants:  # one model per variant, all with the parameters of ``base``
        settings = dict(VARIANTS[v])
        if settings.pop("formulation") == "reference":  # torch's CELU and the reference SRF conv
            models[v] = reference_model(base, **settings)
        else:
            models[v] = build_model(base.config.replace(**VARIANTS[v]))
            models[v].load_state_dict(base.state_dict())
        models[v].to(device).train()
    x_cpu, y_cpu = x, y
    x, y = x.to(device), y.to(device)
    for v, m in models.items():  # warm-up: kernels, FFT plans, allocator; the tuned variant measures its choices
        step(m, x[:8], y[:8], v in TUNED)
        step(m, x, y, v in TUNED)
    rows = {v: {"times": [], "memory": []} for v in args.variants}
    ref_out = None
    for rep in range(args.repeats):
        for v, m in models.items():
            reset_peak_memory(device)
            for _ in range(args.warm_steps):
                step(m, x, y, v in TUNED)
            t = timed(lambda: rows[v].__setitem__("logits", step(m, x, y, v in TUNED)), device)
            rows[v]["memory"].append(peak_memory_mb(device))
            rows[v]["times"].append(t)
            rows[v]["nfe"] = nfe(m)
            if rep == 0:
                rows[v]["grads"] = {n: p.grad.clone() for n, p in m.named_parameters()}
            print(f"  {name} w={width} repeat {rep} {v}: {t:.2f} s", flush=True)
        ref_out = rows["reference"] if "reference" in rows else ref_out
    truth = {}
    if args.f64_check:  # float64 reference per solver setting: how far is each float32 variant from it?
        for v in args.variants:
            key = (VARIANTS[v]["adjoint"], VARIANTS[v]["seminorm"])
            if key not in truth:
                ref64 = reference_model(base, adjoint=key[0], seminorm=key[1]).double().to(device)
                logits64 = step(ref64, x.double(), y)
                truth[key] = (logits64, {n: p.grad.clone() for n, p in ref64.named_parameters()})
            t_logits, t_grads = truth[(VARIANTS[v]["adjoint"], VARIANTS[v]["seminorm"])]
            scale = max(float(g.abs().max()) for g in t_grads.values())
            rows[v]["f64_logits"] = max_rel(rows[v]["logits"].double(), t_logits)
            rows[v]["f64_grads"] = max(float((rows[v]["grads"][n].double() - t_grads[n]).abs().max())
                                       for n in t_grads) / scale
    per_block, rest = eval_flops(reference_model(base), x_cpu, y_cpu)  # counted on the CPU: device-independent
    results = []
    mem = "peak_rss_mb" if device.type == "cpu" else "peak_gpu_mb"
    ref_t = median(rows["reference"]["times"]) if "reference" in rows else float("nan")
    for v in args.variants:
        r = rows[v]
        t = median(r["times"])
        flops = step_flops(per_block, rest, r["nfe"], VARIANTS[v]["adjoint"])
        row = {"model": name, "width": width, "variant": v, "step_s": t, "step_s_all": r["times"],
               "images_per_s": x.shape[0] / t, "speedup_vs_reference": ref_t / t,
               "speedup_range": [a / b for a, b in zip(rows["reference"]["times"], r["times"])]
               if "reference" in rows else None,
               "nfe": r["nfe"], "dense_equiv_gflop_per_image": flops / x.shape[0] * 1e-9,
               "effective_gflops": flops / t * 1e-9, "fraction_of_peak": flops / t * 1e-9 / peak,
               mem: max(r["memory"])}
        if truth:
            row["f64_logits_diff"], row["f64_grad_diff"] = r["f64_logits"], r["f64_grads"]
        if v in TUNED:
            row["tuning_choices"] = {repr(k): {"chose": c, "median_s": ts} for k, (c, ts) in tuning.choices().items()}
        if ref_out is not None:
            row["logits_diff"] = max_rel(r["logits"], ref_out["logits"])
            scale = max(float(g.abs().max()) for g in ref_out["grads"].values())
            row["grad_diff"] = max(float((r["grads"][n] - ref_out["grads"][n]).abs().max())
                                   for n in r["grads"]) / scale
        results.append(row)
    print(f"\n{name}, width {width} (channels {base.config.channels}), batch {x.shape[0]}, "
          f"{x.shape[1]}x{x.shape[-1]}x{x.shape[-1]}, {device}; medians of {args.repeats} alternating repeats")
    print(f"{'variant':>17} {'step s':>7} {'img/s':>6} {'speedup':>13} {'NFE fwd/bwd per block':>27} "
          f"{'GFLOP/img':>9} {'eff GFLOP/s':>11} {'/peak':>5} {'RSS MB' if mem == 'peak_rss_mb' else 'GPU MB':>7} "
          f"{'dlogit':>8} {'dgrad':>8}")
    for row in results:
        counts = " ".join(f"{c['forward']}/{c['backward']}" for c in row["nfe"].values())
        rng = row["speedup_range"] or []
        sp = f"{row['speedup_vs_reference']:.2f}x" + (f" ({min(rng):.2f}-{max(rng):.2f})" if rng else "")
        print(f"{row['variant']:>17} {row['step_s']:>7.2f} {row['images_per_s']:>6.1f} {sp:>13} {counts:>27} "
              f"{row['dense_equiv_gflop_per_image']:>9.2f} {row['effective_gflops']:>11.1f} "
              f"{row['fraction_of_peak']:>5.2f} {row[mem]:>7.0f} {row.get('logits_diff', 0):>8.1e} "
              f"{row.get('grad_diff', 0):>8.1e}")
    if truth:
        print("  float32 vs the float64 reference with the same solver settings (adjoint / seminorm / direct), "
              "largest difference relative to the largest float64 value:")
        for row in results:
            print(f"  {row['variant']:>17}: logits {row['f64_logits_diff']:.1e}, gradients {row['f64_grad_diff']:.1e}")
    if TUNED & set(args.variants):
        print("  tuned choices (what: shape -> choice, median round in ms of each candidate):")
        for k, (c, ts) in tuning.choices().items():
            cands = ", ".join(f"{n} {t * 1e3:.2f}" for n, t in ts.items())
            print(f"    {k[0]}: {[d for d in k[1:] if isinstance(d, tuple)]} -> {c} ({cands})")
    print("  (GFLOP/img: dense-equivalent, i.e. what the reference formulation executes for the variant's NFE; "
          "'eff GFLOP/s' = that / step time)")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["dcn-ode", "dcn-sigma-ji"])
    p.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--in-channels", type=int, default=1,
                   help="input channels (the Fashion-MNIST images repeated): 3 with --size 32 is CIFAR-10's shape")
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N (tuning and the CPU backends stay off there)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warm-steps", type=int, default=1,
                   help="untimed steps of a variant right before each of its timed steps (0: cold steps)")
    p.add_argument("--f64-check", action="store_true",
                   help="also compare every variant with a float64 reference step (slow at full width)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if "reference" not in args.variants:
        p.error("the reference variant is the baseline; keep it in --variants")
    if args.warm_steps < 0 or args.repeats < 1:
        p.error("--warm-steps must be >= 0 and --repeats >= 1")
    if args.in_channels < 1:
        p.error("--in-channels must be >= 1")
    device = parse_device(p, args.device)
    machine = describe_machine(device=device)
    print_machine(machine)
    x, y, source = fashion_batch(args.batch, args.size, args.in_channels)
    print(f"batch: {source}")
    results = []
    for width in args.widths:
        for name in args.models:
            results += run_model(name, width, x, y, args, machine["peak_gflops"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "batch": source, "results": results}, f, indent=1,
                      default=str)


if __name__ == "__main__":
    main()
