"""Data-parallel training with torch.distributed, launched by torchrun.

Launch N processes on one machine with

    torchrun --nproc_per_node N $(command -v adascale) train --config local --train T --valid V --out DIR

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (read here, never written); the process
group uses gloo on CPU and nccl on GPUs, and DistributedDataParallel averages gradients
(no hand-written all-reduce of gradients). Without torchrun everything runs in one
process and the helpers below are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistributedContext:
    """Where this process sits: ``rank`` of ``world_size`` processes, computing on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model under DDP when there are several processes (unused parameters allowed: a
        force-only loss gives no gradient to, e.g., the last read-out bias)."""
        if self.world_size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` over all processes (metrics, not gradients)."""
        if self.world_size > 1:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's value of ``flag`` everywhere (e.g. 'the time budget is spent')."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())


def setup_distributed(device: torch.device | None = None) -> DistributedContext:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1), else a single-process context.

    device: where to compute (None: a GPU when one is available, else the CPU). Under torchrun a
    CUDA device means this process's own GPU (``cuda:LOCAL_RANK``, nccl); the CPU uses gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
    if world_size == 1:
        return DistributedContext(device=torch.device("cuda" if use_cuda else "cpu") if device is None else device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank, world_size=world_size, device=device)


def teardown_distributed() -> None:
    """Leave the process group (if any), once every process got here: a rank that tears gloo
    down while another still talks to it aborts ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
