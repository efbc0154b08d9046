"""What the losses need from torch.distributed: the process's place in the job, and a gather whose gradients
flow back to every process's own rows (the papers' global batch of negatives)."""

from __future__ import annotations

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed job, (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


_GATHER_GROUP = None


def _gather_group():
    """A process group of its own for the gathers: DDP all-reduces gradient buckets on the default group
    while the backward pass runs, and the gather's backward is a collective too; on one group the two can
    pair up across processes in different orders (seen with gloo: wrong gradients, no error)."""
    global _GATHER_GROUP
    if _GATHER_GROUP is None:
        import torch.distributed as dist

        _GATHER_GROUP = dist.new_group(list(range(dist.get_world_size())))
    return _GATHER_GROUP


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0, rank order; gradients flow back to each
    process's own part (``torch.distributed.nn``), so that the documents of the whole global batch are
    negatives for every query. The identity outside a distributed job. Every process must hold the same
    number of rows."""
    rank, size = world()
    if size == 1:
        return tensor
    group = _gather_group()
    if tensor.requires_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor.contiguous(), group=group), dim=0)
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def shut_down() -> None:
    """Destroy the job's process groups once a run has succeeded. A process that exits with them alive can
    abort in interpreter finalisation (gloo's worker threads still hold tensors: SIGABRT, "terminate called
    without an active exception", seen after a finished two-process run). Not called after a failure, where a
    clean-up while another process may sit in a collective could hang."""
    import torch.distributed as dist

    global _GATHER_GROUP
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _GATHER_GROUP = None
