"""Multi-process training with PyTorch's own engine (``torch.distributed``, launched by torchrun).

``torchrun --nproc-per-node N -m n3f fit ...`` (or ``n3f fit --devices N``, which runs torchrun for
you) starts N copies of the fit. Every rank builds the same model from the same seed and draws the
same *global* ray batch from the same generator; rank r keeps its contiguous slice of it
(:func:`shard_range`). Each rank's loss is its slice's mean weighted by the slice's share of the
global batch, so the all-reduced (summed) gradient equals the gradient of the single-process loss,
the mean over the whole global batch: a 2-process run follows the 1-process run on the same batch
up to float32 summation order (``tests/pipeline/test_distributed.py``).

Gradients are all-reduced explicitly (:func:`allreduce_gradients`) rather than through
``DistributedDataParallel``: the student is queried through several entry points per step (the
occupancy sampler's ``density``, the field call, the transient streams, which are a second module),
each rank's share of the batch differs by a ray when the global count is odd, and the hash-table
optimiser needs gradients that stay exactly zero where no rank touched a row; one flat all-reduce
after ``backward`` keeps all of that as it is in a single process, and is what DDP's bucketed hooks
compute. The occupancy grid is refreshed on every rank with the shared generator and then
broadcast from rank 0, so no rank can drift by a flipped cell. Rank 0 alone writes the run folder:
config, checkpoints, metrics and renders; the checkpoint format is the single-process one, so a
run resumes in either mode.

CPU ranks talk over ``gloo``, CUDA ranks over ``nccl`` (one GPU per rank, ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from n3f.errors import N3FError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def context() -> DistContext:
    """The current process group's rank and size (``SINGLE`` when none is initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return SINGLE


def init_from_env(device: str) -> tuple[DistContext, str]:
    """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1).

    Args:
        device: the configured device (``cpu`` or ``cuda``...).

    Returns:
        The context and this rank's device (``cuda:LOCAL_RANK`` for CUDA runs).

    Raises:
        N3FError: more CUDA ranks than GPUs.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    ctx = context()
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", ctx.rank))
        if local >= torch.cuda.device_count():
            raise N3FError(
                f"rank {ctx.rank} wants cuda:{local} but this machine has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (--devices / --nproc-per-node)"
            )
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return ctx, device


def shard_range(n: int, ctx: DistContext) -> tuple[int, int]:
    """The slice ``[start, stop)`` of ``n`` items this rank owns (contiguous; sizes differ by <= 1)."""
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return start, start + base + (1 if ctx.rank < extra else 0)


def allreduce_gradients(params: list[torch.nn.Parameter], ctx: DistContext) -> None:
    """Sum the gradients of ``params`` over all ranks, in place, as one flat buffer.

    Each rank's loss must already carry its share of the global batch (see the module docstring),
    so the sum is the single-process gradient. A parameter this rank left without a gradient
    counts as zeros (another rank may have touched it); one no rank touched keeps ``None``. Ranks must pass the same parameters in the
    same order.
    """
    if not ctx.active or not params:
        return
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    present = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [present])
    dist.all_reduce(flat)
    offset = 0
    for k, p in enumerate(params):
        n = p.numel()
        # no rank touched it: leave it without a gradient, as one process would (Adam skips it)
        p.grad = flat[offset : offset + n].view_as(p).clone() if flat[-len(params) + k] > 0 else None
        offset += n


def allreduce_sum(values: list[float], ctx: DistContext, device: str = "cpu") -> list[float]:
    """Sum scalars over ranks (float64), e.g. sample counts and share-weighted losses."""
    if not ctx.active:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_module_state(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers of ``module`` to every rank."""
    if not ctx.active:
        return
    import torch.distributed as dist

    for t in list(module.parameters()) + list(module.buffers()):
        if t.dtype == torch.bool:  # gloo has no bool type
            as_bytes = t.data.to(torch.uint8)
            dist.broadcast(as_bytes, 0)
            t.data.copy_(as_bytes.bool())
        else:
            dist.broadcast(t.data, 0)


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank (picklable objects: a run folder, a config)."""
    if not ctx.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Run the block on rank 0 first and then on the other ranks (rank 0 renders a demo scene or
    fills a cache that the others then read)."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


def launch(devices: int, argv: list[str]) -> int:
    """Run ``python -m n3f <argv>`` in ``devices`` processes on this machine through torchrun.

    Args:
        devices: number of processes (one per GPU on CUDA machines).
        argv: the n3f arguments, without ``--devices``.

    Returns:
        torchrun's exit status.
    """
    import subprocess

    if devices < 1:
        raise N3FError(f"--devices must be at least 1 (got {devices})")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}", "-m", "n3f", *argv]
    return subprocess.call(cmd)
