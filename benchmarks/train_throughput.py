"""Training throughput of a reference configuration: images/s and NFE per ODE block.

Run from the repository root::

    .venv/bin/python benchmarks/train_throughput.py                       # the bundled CPU recipe
    .venv/bin/python benchmarks/train_throughput.py --model dcn-ode --width 1 --adjoint --steps 2
    .venv/bin/python benchmarks/train_throughput.py --model dcn-sigma-ji --width 1 --adjoint --device cuda \
        --dataset cifar10-shaped                                  # the paper's recipe, CIFAR-10's shape, a GPU

Times real SGD steps of the training core's own pieces (model from the registry, SGD with the paper's
settings, Fashion-MNIST batches with the paper's augmentation) and prints images/s with the forward and
backward NFE per block, so a number here predicts the wall time of ``dcnbio train`` with the same settings
(add the per-epoch validation pass), and an epoch time for the dataset's training split.

``--dataset cifar10`` takes CIFAR-10 from ``--data-root`` (or torchvision's download); ``cifar10-shaped``
gives CIFAR-10's shape (3 x 32 x 32, 45 000 training images after the 5 000 held out for validation) to real
images where CIFAR-10 cannot be had (no network): Fashion-MNIST, zero-padded to 32 px and repeated over three
channels.  The solver's NFE, and so the time, depend on the images: an epoch time from the shaped data is an
estimate of the cost of the shape, not of CIFAR-10 itself.
"""
import argparse
import sys

import torch
import torch.nn.functional as F

from _machine import describe_machine, parse_device, print_machine, timed
from dcnbio.train.data import augment, batch_seed, load_dataset
from dcnbio.core.models import model_config, build_model, nfe, reset_nfe
from dcnbio.train.loop import param_groups


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="dcn-sigma-ji")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    p.add_argument("--adjoint", action="store_true", help="adjoint backprop (default: through the solver)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10", "cifar10-shaped"])
    p.add_argument("--data-root", default=None,
                   help="where the dataset's files lie (default: the usual places; Fashion-MNIST's Debian package)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or args.batch_size < 1:
        p.error("--steps and --batch-size must be >= 1")
    device = parse_device(p, args.device)
    print_machine(describe_machine(measure_peak=False, device=device))
    if args.dataset == "cifar10":
        train = load_dataset("cifar10", "train", args.data_root, val_size=5000, seed=1)
        epoch_images = len(train)
    else:  # a 500-per-class subset of Fashion-MNIST's training split serves the batches
        train = load_dataset("fashion-mnist", "train", args.data_root, val_size=1000, subset=500, seed=1,
                             download=False)
        epoch_images = 45000 if args.dataset == "cifar10-shaped" else len(train)
    shaped = args.dataset == "cifar10-shaped"
    channels = 3 if args.dataset != "fashion-mnist" else 1
    torch.manual_seed(1)
    model = build_model(model_config(args.model, in_channels=channels, width=args.width, adjoint=args.adjoint))
    model.to(device)
    opt = torch.optim.SGD(param_groups(model, 0.1, 1.0), lr=0.1, momentum=0.9)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    totals, seconds = {}, 0.0
    for step in range(args.steps + 1):
        idx = perm[(step * args.batch_size) % len(train):][:args.batch_size]
        x, y = train.batch(idx)
        x = augment(x, torch.Generator().manual_seed(batch_seed(1, 0, step)))
        if shaped:
            x = F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
        x, y = x.to(device), y.to(device)
        reset_nfe(model)

        def sgd_step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        dt = timed(sgd_step, device)
        if step == 0:
            continue  # warm-up: allocator and kernel selection
        seconds += dt
        for block, counts in nfe(model).items():
            for phase, n in counts.items():
                totals[(block, phase)] = totals.get((block, phase), 0) + n
    images = args.steps * args.batch_size
    where = f"{torch.get_num_threads()} thread(s)" if device.type == "cpu" else str(device)
    print(f"{args.model} width {args.width} batch {args.batch_size} "
          f"({'adjoint' if args.adjoint else 'backprop through the solver'}), {args.dataset} "
          f"({channels}x{x.shape[-2]}x{x.shape[-1]}), {where}")
    print(f"  {seconds / args.steps:.2f} s/step, {images / seconds:.1f} images/s over {args.steps} steps; "
          f"an epoch of {epoch_images} training images: {epoch_images / (images / seconds) / 60:.1f} min "
          f"(training steps only)")
    for block in sorted({b for b, _ in totals}):
        print(f"  {block}: forward NFE {totals[(block, 'forward')] / args.steps:.1f}, "
              f"backward NFE {totals[(block, 'backward')] / args.steps:.1f} per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
