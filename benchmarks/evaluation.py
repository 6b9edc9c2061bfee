"""What the analyses' default ``--compute fast`` buys: a no-grad forward pass of test images through bundled
checkpoints on the core's plain path and on the fastest exact one, side by side.

Run on an otherwise idle machine (training lanes stopped)::

    .venv/bin/python benchmarks/evaluation.py                       # full-data and subset seed-1 runs
    .venv/bin/python benchmarks/evaluation.py --repeats 5 --json benchmarks/results/evaluation.json

Every analysis spends its time in forward solves like these (pattern completion, contrast and the solver audit
integrate each batch of images through the ODE blocks; physiology integrates gratings), and trained DCNs take
several times the function evaluations of untrained ones.  Paths:

``plain``  torchdiffeq's dopri5, the ``dense`` SRF formulation on ``F.conv2d`` (the core's own entries: what a
           checkpoint trained without the speed options records, e.g. the subset-trained bundle);
``fast``   :data:`dcnbio.fast.FASTEST` — dcnbio's dopri5 and the ``auto`` formulation (``--compute fast``).

(The fast CELU is registered for both, as it is whenever dcnbio is imported.)  Each repeat times one batch on each
path in turn, after one untimed batch.  Printed per checkpoint: median seconds per batch, forward NFE summed over
the blocks, the ratio plain ÷ fast (above 1: the fast path pays) and its range over repeats, and the largest logit
difference between the paths relative to the logits' scale (float32 rounding through the solves).
"""
import argparse
import glob
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe_machine, median, print_machine, timed  # noqa: E402

import dcnbio  # noqa: E402
from dcnbio.core.models import build_model, nfe, reset_nfe  # noqa: E402
from dcnbio.fast import FASTEST  # noqa: E402
from dcnbio.train.data import load_dataset  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
PATHS = {"plain": {"integrator": "torchdiffeq", "formulation": "dense"}, "fast": FASTEST}
DEFAULT = [f"data/checkpoints/{bundle}{m}/seed1/last.pt" for bundle in ("full/", "")
           for m in ("dcn-ode", "dcn-sigma-ji", "odenet")]


def on_path(model, settings):
    other = build_model(model.config.replace(**settings))
    other.load_state_dict(model.state_dict())
    return other.eval()


def forward(model, x):
    with torch.no_grad():
        reset_nfe(model)
        logits = model(x)
        return logits, sum(b["forward"] for b in nfe(model).values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoints", nargs="+", default=DEFAULT, help="paths relative to the repository root")
    p.add_argument("--batch", type=int, default=128, help="test images per forward pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    machine = describe_machine(measure_peak=False)
    print_machine(machine)
    x, _ = load_dataset("fashion-mnist", "test", download=False).batch(torch.arange(args.batch))
    print(f"batch: the first {args.batch} Fashion-MNIST test images; median of {args.repeats} repeats")
    print(f"  {'checkpoint':<46} {'plain s':>8} {'fast s':>8} {'NFE':>5} {'÷ fast':>7}  range      max dlogit")
    results = []
    for path in [c for pattern in args.checkpoints for c in sorted(glob.glob(os.path.join(ROOT, pattern)))]:
        model, _ = dcnbio.load_checkpoint(path)
        models = {name: on_path(model, settings) for name, settings in PATHS.items()}
        out = {name: forward(m, x) for name, m in models.items()}  # warm-up, and the logits compared
        times = {name: [] for name in PATHS}
        for _ in range(args.repeats):
            for name, m in models.items():
                forward(m, x)
                times[name].append(timed(lambda: forward(m, x)))
        spread = [a / b for a, b in zip(times["plain"], times["fast"])]
        ratio = median(times["plain"]) / median(times["fast"])
        (plain, nfe_plain), (fast, nfe_fast) = out["plain"], out["fast"]
        diff = float((plain - fast).abs().max() / plain.abs().max())
        label = os.path.relpath(path, ROOT).replace("data/checkpoints/", "")
        nfe_text = str(nfe_fast) if nfe_fast == nfe_plain else f"{nfe_plain}/{nfe_fast}"
        print(f"  {label:<46} {median(times['plain']):8.3f} {median(times['fast']):8.3f} {nfe_text:>5} "
              f"{ratio:7.2f}  {min(spread):.2f}–{max(spread):.2f}  {diff:.1e}")
        results.append({"checkpoint": label, "plain_s": times["plain"], "fast_s": times["fast"],
                        "nfe_forward": {"plain": nfe_plain, "fast": nfe_fast}, "ratio_plain_to_fast": ratio,
                        "max_logit_difference_relative": diff})
        if args.json:  # after every checkpoint: a run stopped part-way keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
