"""What each lever of the speed machinery (:mod:`dcnbio.fast`) buys: one training step, every lever against
every lever but one, side by side in one run.

Run on an otherwise idle machine (training lanes stopped)::

    .venv/bin/python benchmarks/levers.py                          # dcn-ode and dcn-sigma-ji, width 0.25
    .venv/bin/python benchmarks/levers.py --widths 0.25 1.0 --repeats 3 --json benchmarks/results/levers.json

The step is the full-data recipe's (``--no-adjoint``, dopri5 at 1e-3, batch 128 of Fashion-MNIST training
images, SGD's forward + backward, no update so that every repeat sees the same function).  At width 0.25 the
weights are the bundled full-data runs' ``best.pt`` (trained σ and the NFE of a trained model); at other widths
the initialisation of seed 1.  Variants:

``all``              ``formulation="auto"``, ``integrator="dcnbio"``, every lever registered (the recipe);
``-integrator``      as ``all`` with torchdiffeq's dopri5;
``-formulations``    as ``all`` with ``formulation="dense"`` (no spectral/separable layer);
``-conv``            as ``all`` without the faster direct-convolution backward (``without("conv")``);
``-celu``            as ``all`` with PyTorch's CELU kernel (``without("celu")``);
``none``             the core alone: ``dense`` on ``F.conv2d``, PyTorch's CELU, torchdiffeq;
``+tuning``          ``all`` with measured choices (:mod:`dcnbio.fast.tuning`), measured in the warm-up.

Each repeat times one step of every variant in turn, each after one untimed step of the same variant (the
allocator's steady state).  Printed: median step time, NFE per step, and the ratio of each variant's median to
``all``'s (above 1: the lever taken out was paying) with its range over repeats.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe_machine, median, print_machine, timed  # noqa: E402

import dcnbio  # noqa: E402
from dcnbio.core.models import build_model, create_model, nfe, reset_nfe  # noqa: E402
from dcnbio.fast import LEVERS, tuning, without  # noqa: E402
from train_step import fashion_batch  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
#: name -> (model settings, levers taken out, tuning)
VARIANTS = {
    "all": ({}, (), False),
    "-integrator": ({"integrator": "torchdiffeq"}, (), False),
    "-formulations": ({"formulation": "dense"}, (), False),
    "-conv": ({}, ("conv",), False),
    "-celu": ({}, ("celu",), False),
    "none": ({"formulation": "dense", "integrator": "torchdiffeq"}, LEVERS, False),
    "+tuning": ({}, (), True),
}
RECIPE = {"formulation": "auto", "integrator": "dcnbio", "adjoint": False, "solver": "dopri5", "rtol": 1e-3,
          "atol": 1e-3}


def base_model(name, width):
    """The bundled full-data run's best.pt at width 0.25 (trained weights), else the initialisation of seed 1."""
    path = os.path.join(ROOT, "data", "checkpoints", "full", name, "seed1", "best.pt")
    if width == 0.25 and os.path.exists(path):
        model, _ = dcnbio.load_checkpoint(path)
        return model, "bundled full-data best.pt"
    torch.manual_seed(1)
    return create_model(name, in_channels=1, width=width), "initialisation, seed 1"


def variant_model(base, settings, levers):
    with without(*levers):
        model = build_model(base.config.replace(**{**RECIPE, **settings}))
    model.load_state_dict(base.state_dict())
    return model.train()


def step(model, x, y, levers, tune):
    with without(*levers), tuning.tuning(tune):
        reset_nfe(model)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        return sum(b["forward"] for b in nfe(model).values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["dcn-ode", "dcn-sigma-ji"])
    p.add_argument("--widths", nargs="+", type=float, default=[0.25])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    machine = describe_machine(measure_peak=False)
    print_machine(machine)
    x, y, source = fashion_batch(args.batch, 28)
    print(f"batch: {args.batch} images, {source}")
    results = []
    for width in args.widths:
        for name in args.models:
            base, weights = base_model(name, width)
            models = {v: variant_model(base, *VARIANTS[v][:2]) for v in args.variants}
            times = {v: [] for v in args.variants}
            steps_nfe = {}
            for v in args.variants:  # warm-up (and, for +tuning, the measurements) on the full batch
                steps_nfe[v] = step(models[v], x, y, *VARIANTS[v][1:])
            for _ in range(args.repeats):
                for v in args.variants:
                    step(models[v], x, y, *VARIANTS[v][1:])
                    times[v].append(timed(lambda: step(models[v], x, y, *VARIANTS[v][1:])))
            ref = times.get("all")
            print(f"\n{name}, width {width} ({weights}), median of {args.repeats} steps:")
            print(f"  {'variant':<15} {'step s':>8} {'NFE fwd':>8} {'÷ all':>7}  range over repeats")
            for v in args.variants:
                med = median(times[v])
                ratio = med / median(ref) if ref else float("nan")
                spread = [t / r for t, r in zip(times[v], ref)] if ref else []
                span = f"{min(spread):.2f}–{max(spread):.2f}" if spread else "-"
                print(f"  {v:<15} {med:8.2f} {steps_nfe[v]:8d} {ratio:7.2f}  {span}")
                results.append({"model": name, "width": width, "weights": weights, "variant": v,
                                "median_s": med, "times_s": times[v], "nfe_forward": steps_nfe[v],
                                "ratio_to_all": ratio})
            if args.json:  # after every model: a run stopped part-way keeps what it measured
                with open(args.json, "w") as f:
                    json.dump({"machine": machine, "args": vars(args), "batch": source, "results": results}, f,
                              indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
