"""Data-parallel training across processes (``torchrun --nproc_per_node=N -m dgc_cli fit ...``).

Each rank trains on its own shard of the rows with a DistributedDataParallel copy of the model
(gradients averaged every step); the mixture initialisation is computed on rank 0 from the
latent means of every rank and broadcast; epoch statistics are summed over ranks once per epoch;
only rank 0 writes outputs. Backend nccl on GPUs, gloo on CPUs. Nothing here runs in a single
process: every helper falls through when no process group is initialised.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def init_from_env() -> bool:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shard(n: int) -> np.ndarray:
    """The row indices this rank trains on: every world_size-th row, starting at its rank."""
    return np.arange(rank(), n, world_size())


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself in one process; a DistributedDataParallel view of it across ranks."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [model.mu.device.index] if model.mu.device.type == "cuda" else None
    # the task head and the prior take no part in pre-training, hence find_unused_parameters
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Make every rank start from rank 0's weights."""
    if active():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    if active():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def min_over_ranks(value: int, device) -> int:
    if not active():
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather_rows(array: np.ndarray) -> np.ndarray | None:
    """Concatenate every rank's rows on rank 0 (None elsewhere); the array itself in one process."""
    if not active():
        return array
    parts = [None] * world_size() if is_main() else None
    dist.gather_object(array, parts, dst=0)
    return np.concatenate(parts) if is_main() else None


def broadcast_object(obj):
    """Rank 0's Python object on every rank (the object itself in one process)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
