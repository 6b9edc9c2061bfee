"""Trajectory extraction (``dcnbio extract``): images/s, peak memory for 1k and 10k images, time spent writing.

Run on an otherwise idle machine, with the default thread count::

    .venv/bin/python benchmarks/extraction.py                      # dcn-ode width 0.25, N = 1000 and 10000
    .venv/bin/python benchmarks/extraction.py --images 1000 --formulations auto reference

Each measurement is a fresh Python process running ``dcnbio.extract.cli.main`` on the first N Fashion-MNIST
test images (default times 0, 0.5, 1, 1.5, 2; batch 64; shards of 1024 images), so its peak resident
memory (``VmHWM``) is that of one extraction, imports included.  ``dcnbio.io.save_dataset`` is wrapped
with a timer to split the wall time into solving and writing (netCDF-4, zlib level 1, fsync + rename).
The checkpoint is a freshly initialised model (``make_checkpoint``), so the NFE are those of an untrained
network.  Target (issue #6): peak memory flat (±10 %) from 1k to 10k images.

FLOPs per image are dense-equivalent (the reference formulation's convolutions and norms of one block
evaluation, counted by ``torch.utils.flop_counter``, times the forward NFE per image, plus the discrete
layers), so the fraction of peak compares formulations on the same work.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe_machine, print_machine  # noqa: E402


def child(args):
    """One extraction in this process; prints one JSON line."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import dcnbio.extract.cli as extract
    from dcnbio.train.checkpoint import load_checkpoint
    from dcnbio.io import open_results
    from dcnbio.core.models.reference import reference_model
    from dcnbio.core.models import ode_blocks

    writing = [0.0]
    save = extract.save_dataset

    def timed_save(*a, **kw):
        t0 = time.perf_counter()
        try:
            return save(*a, **kw)
        finally:
            writing[0] += time.perf_counter() - t0

    extract.save_dataset = timed_save
    t0 = time.perf_counter()
    rc = extract.main(["--checkpoint", args.checkpoint, "--dataset", "fashion-mnist", "--split", "test",
                       "--images", str(args.child), "--out", args.out, "--quiet", "--batch-size", str(args.batch)])
    total = time.perf_counter() - t0
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))
    results = open_results(args.out)
    nfe = {b: float(ds.nfe.mean()) for b, ds in results.items()}
    # dense-equivalent FLOPs of one evaluation per image of each block, and of the discrete layers
    model, _ = load_checkpoint(args.checkpoint)
    ref = reference_model(model).eval()
    x = torch.zeros(1, model.config.in_channels, 28, 28)
    flops = 0.0
    with torch.no_grad():
        for name, module in ref.stages():
            if name in ode_blocks(ref):
                with FlopCounterMode(display=False) as fc:
                    module.func(torch.tensor(1.0), x)
                flops += nfe[name] * fc.get_total_flops()
            else:
                with FlopCounterMode(display=False) as fc:
                    x = module(x)
                flops += fc.get_total_flops()
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(json.dumps({"rc": rc, "n": args.child, "total_s": total, "write_s": writing[0], "peak_rss_mb": hwm,
                      "nfe_per_block": nfe, "dense_equiv_gflop_per_image": flops * 1e-9, "output_mb": size / 2**20,
                      "formulation": model.config.formulation}))


def make_checkpoint_file(directory, model_name, width, formulation):
    import torch

    from dcnbio.train.checkpoint import make_checkpoint, save_checkpoint
    from dcnbio.core.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, in_channels=1, width=width, formulation=formulation)
    path = os.path.join(directory, f"{model_name}-{formulation}.pt")
    save_checkpoint(make_checkpoint(model, kind="init"), path)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="dcn-ode")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--images", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--formulations", nargs="+", default=["auto"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--json", default=None)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        return child(args)
    machine = describe_machine()
    print_machine(machine)
    peak = machine["peak_gflops"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dcnbio-bench-") as tmp:
        for form in args.formulations:
            ckpt = make_checkpoint_file(tmp, args.model, args.width, form)
            for n in args.images:
                out = os.path.join(tmp, f"out-{form}-{n}")
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(n), "--checkpoint",
                                       ckpt, "--out", out, "--batch", str(args.batch)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stdout, proc.stderr)
                    raise SystemExit(f"extraction of {n} images failed")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["images_per_s"] = n / row["total_s"]
                row["write_share"] = row["write_s"] / row["total_s"]
                solve_s = row["total_s"] - row["write_s"]
                row["effective_gflops_solving"] = row["dense_equiv_gflop_per_image"] * n / solve_s
                row["fraction_of_peak_solving"] = row["effective_gflops_solving"] / peak
                rows.append(row)
                print(f"  {form} N={n}: {row['total_s']:.1f} s", flush=True)
                subprocess.run(["rm", "-rf", out])
    print(f"\n{args.model} width {args.width}, batch {args.batch}, Fashion-MNIST test images, times 0..2 (5)")
    print(f"{'formulation':>11} {'N':>6} {'total s':>8} {'img/s':>7} {'write %':>7} {'peak RSS MB':>11} "
          f"{'out MB':>7} {'NFE/block':>14} {'GFLOP/img':>9} {'eff GFLOP/s':>11} {'/peak':>5}")
    for row in rows:
        nfe = "/".join(f"{v:.0f}" for v in row["nfe_per_block"].values())
        print(f"{row['formulation']:>11} {row['n']:>6} {row['total_s']:>8.1f} {row['images_per_s']:>7.1f} "
              f"{100 * row['write_share']:>7.1f} {row['peak_rss_mb']:>11.0f} {row['output_mb']:>7.0f} {nfe:>14} "
              f"{row['dense_equiv_gflop_per_image']:>9.3f} {row['effective_gflops_solving']:>11.1f} "
              f"{row['fraction_of_peak_solving']:>5.2f}")
    for form in args.formulations:
        peaks = [r["peak_rss_mb"] for r in rows if r["formulation"] == form]
        if len(peaks) > 1:
            print(f"{form}: peak memory N={args.images[-1]} / N={args.images[0]} = {peaks[-1] / peaks[0]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
