"""Training throughput of a reference configuration: images/s and NFE per ODE block.

Run from the repository root::

    .venv/bin/python benchmarks/train_throughput.py                       # the bundled CPU recipe
    .venv/bin/python benchmarks/train_throughput.py --model dcn-ode --width 1 --adjoint --steps 2

Times real SGD steps of the training core's own pieces (model from the registry, SGD with the paper's
settings, Fashion-MNIST batches with the paper's augmentation) and prints images/s with the forward and
backward NFE per block, so a number here predicts the wall time of ``dcnbio train`` with the same settings
(add the per-epoch validation pass).
"""
import argparse
import sys
import time

import torch
import torch.nn.functional as F

from _machine import describe_machine, print_machine
from dcnbio.data import augment, batch_seed, load_dataset
from dcnbio.models import model_config, build_model, nfe, reset_nfe
from dcnbio.training.loop import param_groups


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="dcn-sigma-ji")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    p.add_argument("--adjoint", action="store_true", help="adjoint backprop (default: through the solver)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine(describe_machine(measure_peak=False))
    train = load_dataset("fashion-mnist", "train", val_size=1000, subset=500, seed=1, download=False)
    torch.manual_seed(1)
    model = build_model(model_config(args.model, in_channels=1, width=args.width, adjoint=args.adjoint))
    opt = torch.optim.SGD(param_groups(model, 0.1, 1.0), lr=0.1, momentum=0.9)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    totals, seconds = {}, 0.0
    for step in range(args.steps + 1):
        idx = perm[(step * args.batch_size) % len(train):][:args.batch_size]
        x, y = train.batch(idx)
        x = augment(x, torch.Generator().manual_seed(batch_seed(1, 0, step)))
        reset_nfe(model)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if step == 0:
            continue  # warm-up: allocator and kernel selection
        seconds += dt
        for block, counts in nfe(model).items():
            for phase, n in counts.items():
                totals[(block, phase)] = totals.get((block, phase), 0) + n
    images = args.steps * args.batch_size
    print(f"{args.model} width {args.width} batch {args.batch_size} "
          f"({'adjoint' if args.adjoint else 'backprop through the solver'}), {torch.get_num_threads()} thread(s)")
    print(f"  {seconds / args.steps:.2f} s/step, {images / seconds:.1f} images/s over {args.steps} steps")
    for block in sorted({b for b, _ in totals}):
        print(f"  {block}: forward NFE {totals[(block, 'forward')] / args.steps:.1f}, "
              f"backward NFE {totals[(block, 'backward')] / args.steps:.1f} per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
