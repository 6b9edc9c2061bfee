"""Process-group setup for ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything runs in one
process and :class:`Context` reports rank 0 of 1.  Batches are sharded by
:func:`local_slice`: rank ``r`` of ``W`` takes items ``r, r + W, ...`` of each global
batch, so ``W`` processes together see exactly the images of the single-process
run with the same global batch size (a distributed sampler over our
deterministic epoch permutation).
"""
import dataclasses
import os

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclasses.dataclass
class Context:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self):
        """Whether this is rank 0 (the process that writes)."""
        return self.rank == 0

    @property
    def distributed(self):
        """Whether more than one process trains."""
        return self.world_size > 1

    def barrier(self):
        """Wait for every rank (nothing to wait for in one process)."""
        if self.distributed:
            dist.barrier()


def setup(device="cpu"):
    """Initialise the process group when launched by torchrun; return the :class:`Context`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was requested but no CUDA device is available; use --device cpu")
        dev = torch.device("cuda", local_rank if world_size > 1 else torch.device(device).index or 0)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Context(rank, world_size, local_rank, dev)


def teardown(ctx):
    """Leave the process group :func:`setup` joined, if any."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def local_slice(batch, ctx):
    """This rank's share of a global batch (a tensor or a tuple of tensors along dim 0)."""
    if not ctx.distributed:
        return batch
    if isinstance(batch, tuple):
        return tuple(local_slice(b, ctx) for b in batch)
    return batch[ctx.rank::ctx.world_size]


def wrap(model, ctx):
    """``model`` in ``DistributedDataParallel`` when several processes train, else ``model`` itself."""
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def broadcast_flag(flag, ctx):
    """Rank 0's boolean, on every rank (used to stop all ranks together)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], device=ctx.device)
    dist.broadcast(t, 0)
    return bool(t.item())
