"""``dcnbio extract``: block trajectories of a checkpoint, written as netCDF-4 shards.

Example (the first 1000 Fashion-MNIST test images, states at t = 0, 0.5, …, 2)::

    dcnbio extract --checkpoint data/checkpoints/dcn-ode/seed1/last.pt \\
        --dataset fashion-mnist --split test --images 1000 --times 0 0.5 1 1.5 2 --out results/traj/dcn-ode-s1

    python -m dcnbio.extract --checkpoint ckpt.pt --images-file images.pt --out DIR   # any (N, C, H, W) tensor

Output layout::

    DIR/manifest.json              the command's parameters and the completed shards
    DIR/block1/shard-00000.nc      images [0, shard_size) of block 1
    DIR/block1/shard-00001.nc      …
    DIR/block2/…

Each shard is written atomically (``.tmp-*`` while being written, then renamed), so a
killed run never leaves a partial file under a final name.  Running the same command
again into the same DIR resumes: only missing shard files are computed, and the result
equals an uninterrupted run (apart from each file's ``created`` attribute).  A DIR made by
a different command is refused unless ``--overwrite``.  Batches never straddle shards
(``--shard-size`` must be a multiple of ``--batch-size``) because the adaptive solver's
steps, hence the states and NFE, depend on which images share a batch.

Open the result with ``dcnbio.io.open_results(DIR)`` (block name → lazily loaded Dataset).
"""
import argparse
import ctypes
import ctypes.util
import gc
import json
import math
import os
import sys

import numpy as np
import torch

from .trajectories import check_images, check_times, concat_batches, iter_trajectories
from ..train.checkpoint import COMPUTE_PATHS, load_checkpoint, sha256_file
from ..cli import at_least, user_errors
from ..errors import ConfigError, DataError, DcnbioError
from ..io import (LOCK_NAME, TMP_PREFIX, discard, lock_directory, prepare_output_dir, provenance_attrs, save_dataset,
                 write_json)
from ..core.layers.ode import ODEBlock
from ..core.models.network import Network
from ..signals import stop_requests

MANIFEST = "manifest.json"
FORMAT = "dcnbio-trajectories"
FORMAT_VERSION = 1
ALL_BLOCKS = tuple(Network.BLOCK_STRIDES)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2, like every other user error
        raise ConfigError(f"{message} (see dcnbio extract --help)")


def build_parser():
    """The ``dcnbio extract`` argument parser."""
    p = _Parser(prog="dcnbio extract",
                description="Extract ODE-block trajectories h(t) of a checkpoint into netCDF-4 shards "
                            "(DIR/<block>/shard-NNNNN.nc + DIR/manifest.json); re-running resumes.",
                epilog="example: dcnbio extract --checkpoint ckpt.pt --dataset fashion-mnist --images 1000 "
                       "--times 0 0.5 1 1.5 2 --out results/traj")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) written by dcnbio train")
    p.add_argument("--compute", choices=COMPUTE_PATHS, default="fast",
                   help="integrator and SRF formulation: the fastest exact ones, or those the checkpoint records "
                        "(the same function to float rounding)")
    p.add_argument("--out", required=True, help="output directory (created; resumed when it holds this command)")
    src = p.add_argument_group("images")
    src.add_argument("--dataset", default=None, help="fashion-mnist (default) or cifar10")
    src.add_argument("--split", default="test", help="train, val or test (default test)")
    src.add_argument("--data-root", default=None, help="where the dataset files are (default the standard places)")
    src.add_argument("--images-file", default=None,
                     help="a tensor (N, C, H, W) saved with torch.save (or a dict with 'images' and optional "
                          "'labels'); used instead of a dataset, labels -1")
    src.add_argument("--images", type=at_least(1), default=None, metavar="N",
                     help="use the first N images (default all)")
    src.add_argument("--mask-size", type=int, default=None, metavar="N",
                     help="replace the centred N x N patch of every image (default none; pattern completion: "
                          "extract once with and once without, then compare with "
                          "dcnbio.extract.completion.compute_differences)")
    src.add_argument("--mask-fill", choices=("black", "mean"), default="black",
                     help="mask value: a zero pixel, -mean/std of the dataset (the paper's masks; default), or the "
                          "dataset mean, 0 in normalised units")
    p.add_argument("--times", type=float, nargs="+", default=None, metavar="T",
                   help="increasing times in [0, T] (default 5 points from 0 to T)")
    p.add_argument("--blocks", nargs="+", default=None, choices=ALL_BLOCKS, help="blocks to extract (default all)")
    p.add_argument("--batch-size", type=at_least(1), default=64, help="images per solve (default 64)")
    p.add_argument("--shard-size", type=at_least(1), default=None,
                   help="images per shard file, a multiple of --batch-size (default 16 batches)")
    p.add_argument("--overwrite", action="store_true", help="replace an output directory made by another command")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def shard_path(out, block, shard):
    """Path of shard number ``shard`` of ``block`` under the output directory ``out``."""
    return os.path.join(out, block, f"shard-{shard:05d}.nc")


def _load_images_file(path, n):
    if not os.path.isfile(path):
        raise DataError(f"no images file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated zip, not a torch file …
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read images file {path} as a tensor saved with torch.save ({first})") from None
    labels = None
    if isinstance(obj, dict):
        if "images" not in obj:
            raise DataError(f"{path} holds a dict without an 'images' entry (keys: {sorted(map(str, obj))})")
        obj, labels = obj["images"], obj.get("labels")
    if not isinstance(obj, torch.Tensor):
        raise DataError(f"{path} must hold a tensor (N, C, H, W), got {type(obj).__name__}")
    total = obj.shape[0] if obj.ndim else 0
    n = total if n is None else n
    if n > total:
        raise DataError(f"--images {n} but {path} holds only {total} images")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape != (total,):
            raise DataError(f"labels in {path} must have shape ({total},), got {tuple(labels.shape)}")
        labels = labels[:n].long()
    else:
        labels = torch.full((n,), -1, dtype=torch.long)
    source = {"kind": "file", "images_file_sha256": sha256_file(path), "n_images": int(n)}
    return obj[:n], labels, torch.arange(n), source


def _load_dataset_images(name, split, root, n):
    from ..train.data import load_dataset

    ds = load_dataset(name, split, root, download=False)
    n = len(ds) if n is None else n
    if n > len(ds):
        raise DataError(f"--images {n} but {name} {split} has only {len(ds)} images")
    sub = ds.subset(torch.arange(n))
    source = {"kind": "dataset", "dataset": name, "split": split, "n_images": int(n),
              "indices_sha256": sub.fingerprint()}
    # the images are normalised shard by shard (``sub.batch``): the float copy of all N would grow the peak with N
    return sub, sub.labels.clone(), sub.indices.clone(), source


def _mask_images(args, images):
    """Centre-mask the images for ``--mask-size``; returns the masked images and the mask's description (the
    images may be any of the same size: the mask depends on the size only)."""
    from .completion import apply_center_mask, check_mask_sizes, mask_fill
    from ..datasets import dataset_info

    (n,) = check_mask_sizes([args.mask_size], images.shape[2], images.shape[3])
    if args.images_file is not None:
        if args.mask_fill != "mean":
            raise ConfigError("--mask-fill black needs the dataset's mean/std: with --images-file use --mask-fill mean "
                              "(0 in the file's units) or mask the images in the file yourself")
        fill = [0.0] * images.shape[1]
    else:
        fill = mask_fill(dataset_info(args.dataset or "fashion-mnist"), args.mask_fill)
    return apply_center_mask(images, n, fill), {"size": n, "fill": args.mask_fill, "value": [float(v) for v in fill]}


def _release_memory():
    """Return freed heap to the OS between shards, so peak memory stays that of one shard whatever N is.

    A shard's arrays are freed when the next shard starts, but glibc keeps the freed pages in its arenas and
    later shards' allocations fragment them; ``malloc_trim`` gives them back (a no-op elsewhere than glibc).
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def _read_manifest(out):
    path = os.path.join(out, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _clean(out, everything):
    """Remove temporary files left by a killed run; with ``everything`` also our shards and manifest."""
    dirs = [out] + [os.path.join(out, b) for b in ALL_BLOCKS if os.path.isdir(os.path.join(out, b))]
    for d in dirs:
        for f in os.listdir(d):
            full = os.path.join(d, f)
            if not os.path.isfile(full):
                continue
            ours = f == MANIFEST if d == out else (f.startswith("shard-") and f.endswith(".nc"))
            if f.startswith(TMP_PREFIX) or (everything and ours):
                discard(full)


def _differences(a, b):
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k)]


def _entries(out):
    return [f for f in os.listdir(out) if f != LOCK_NAME] if os.path.isdir(out) else []


def _prepare(out, command, overwrite):
    """Decide between a fresh run and a resume; returns True when resuming."""
    manifest = _read_manifest(out)
    if manifest is not None:
        if manifest.get("format") == FORMAT and manifest.get("command") == command:
            _clean(out, everything=False)
            return True
        if not overwrite:
            old = manifest.get("command") if isinstance(manifest.get("command"), dict) else {}
            diff = ", ".join(_differences(old, command)) or "format"
            raise DcnbioError(f"{out} holds an extraction made by a different command (differs in: {diff}); "
                              f"use another --out or pass --overwrite")
        _clean(out, everything=True)
    elif _entries(out) and all(f.startswith(TMP_PREFIX) for f in _entries(out)):
        _clean(out, everything=False)  # a run killed before its first manifest was written
    elif overwrite and os.path.isdir(out):
        _clean(out, everything=True)
    prepare_output_dir(out, overwrite=overwrite)
    return False


def _stopped(out, completed, n_shards):
    return (f"{len(completed)} of {n_shards} shard(s) complete in {out}; run the same command again to "
            f"continue")


@user_errors
def main(argv=None):
    """``dcnbio extract`` (``argv`` as for :func:`build_parser`); returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.images_file is not None and args.dataset is not None:
        raise ConfigError("give either --images-file or --dataset, not both")
    batch_size = args.batch_size
    shard_size = args.shard_size if args.shard_size is not None else 16 * batch_size
    if shard_size % batch_size:
        raise ConfigError(f"--shard-size ({shard_size}) must be a multiple of --batch-size ({batch_size}): "
                          f"a batch split across shards would be solved differently")

    model, info = load_checkpoint(args.checkpoint, compute=args.compute)
    blocks = [b for b in ALL_BLOCKS if args.blocks is None or b in args.blocks]
    ode = [model.blocks()[b] for b in blocks if isinstance(model.blocks()[b], ODEBlock)]
    T = float(model.config.T)
    times = args.times if args.times is not None else np.linspace(0.0, T, 5).tolist()
    if ode:
        times = check_times(times, T).tolist()

    if args.images_file is not None:
        images, labels, indices, source = _load_images_file(args.images_file, args.images)
        images = check_images(images, model.config.in_channels)
    else:  # the dataset's images are normalised shard by shard, below
        dataset, labels, indices, source = _load_dataset_images(args.dataset or "fashion-mnist", args.split,
                                                                 args.data_root, args.images)

    def shard_images(start, stop):
        """Images ``[start, stop)``, checked against the model and centre-masked if asked; with the mask's
        description."""
        if args.images_file is not None:
            x = images[start:stop]
        else:
            x = check_images(dataset.batch(torch.arange(start, stop))[0], model.config.in_channels)
        return (x, None) if args.mask_size is None else _mask_images(args, x)

    _, mask = shard_images(0, 1)  # a wrong model or mask size fails here, before any work
    n = len(labels)
    command = json.loads(json.dumps({
        "checkpoint_sha256": info["sha256"], "model_name": model.config.name, "compute": args.compute,
        "source": source,
        "times": [float(t) for t in times], "blocks": blocks, "batch_size": batch_size, "shard_size": shard_size,
        **({"mask": mask} if mask is not None else {}),
    }))
    out = os.fspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise DcnbioError(f"output path {out} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    lock_directory(out)  # one writer: before anything in it is cleaned or written
    with stop_requests() as preempt:
        n_shards = math.ceil(n / shard_size)
        resuming = _prepare(out, command, args.overwrite)
        for b in blocks:
            os.makedirs(os.path.join(out, b), exist_ok=True)

        def done(s):
            return all(os.path.isfile(shard_path(out, b, s)) for b in blocks)

        completed = [s for s in range(n_shards) if done(s)]
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "command": command,
                    "checkpoint_path": os.fspath(args.checkpoint), "images_file": args.images_file,
                    "data_root": args.data_root, "n_shards": n_shards, "completed_shards": completed,
                    "complete": len(completed) == n_shards}
        write_json(manifest, os.path.join(out, MANIFEST))

        attrs = provenance_attrs(model, info)
        attrs.update({"source": json.dumps(source, sort_keys=True)})
        todo = [s for s in range(n_shards) if s not in completed]
        from tqdm.auto import tqdm

        for s in tqdm(todo, desc="shards", unit="shard", disable=True if args.quiet else None):
            missing = [b for b in blocks if not os.path.isfile(shard_path(out, b, s))]
            start, stop = s * shard_size, min((s + 1) * shard_size, n)
            parts, batch = {b: [] for b in missing}, None
            for batch in iter_trajectories(model, shard_images(start, stop)[0], times, blocks=missing,
                                           labels=labels[start:stop], indices=indices[start:stop],
                                           batch_size=batch_size, batch_offset=start // batch_size):
                for b, ds in batch.items():
                    parts[b].append(ds)
                preempt.check(_stopped(out, completed, n_shards))  # the shard in progress is abandoned, not written
            for b in missing:
                ds = concat_batches(parts.pop(b))
                ds.attrs.update(attrs)
                save_dataset(ds, shard_path(out, b, s))
                del ds
            del batch, parts
            _release_memory()
            completed.append(s)
            manifest.update(completed_shards=sorted(completed), complete=len(completed) == n_shards)
            write_json(manifest, os.path.join(out, MANIFEST))
            preempt.check(_stopped(out, completed, n_shards))

        if not args.quiet:
            reused = n_shards - len(todo)
            note = f" ({reused} shard(s) already done, resumed)" if resuming and reused else ""
            print(f"wrote {len(todo)} shard(s) x {len(blocks)} block(s) of {n} image(s) to {out}{note}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
