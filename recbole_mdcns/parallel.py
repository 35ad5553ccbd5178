"""torch.distributed helpers: DDP wrappers on any device, and RecBole's gradient-sync trick."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from recbole_mdcns.params import ConfigError, Param

DIST_BACKEND = Param("dist_backend", str, "auto", "torch.distributed backend with `nproc` > 1: `nccl` (one GPU "
                     "per process), `gloo` (CPU processes); `auto`: nccl where CUDA is available, else gloo",
                     choices=("auto", "nccl", "gloo"))

# what `quick_start.run` adds for a multi-process run: where it ran, not what it computes
DISTRIBUTED_KEYS = ("local_rank", "world_size", "ip", "port", "nproc", "offset")


def dist_backend(value: Any) -> str:
    """The backend `dist_backend = value` names, `auto` resolved; a ConfigError for anything else."""
    backend, problem = DIST_BACKEND.coerce(value)
    if problem:
        raise ConfigError([problem])
    return backend if backend != "auto" else ("nccl" if torch.cuda.is_available() else "gloo")


def distributed(module: torch.nn.Module, config: Any) -> DistributedDataParallel:
    """A DDP wrapper on the module's device: device_ids only on CUDA (gloo runs on CPU)."""
    device_ids = [config["local_rank"]] if config["device"].type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def arm_gradient_sync(module: torch.nn.Module, wrapper: DistributedDataParallel) -> Tensor:
    """Make `module`'s gradients all-reduce in the next backward, as RecBole does for self:
    a dummy forward through the wrapper arms its reduce hooks; the returned zero-valued
    term (add it to the loss) gives every parameter a gradient."""
    module.forward = lambda x: x
    try:
        wrapper(torch.zeros(1, dtype=torch.long, device=next(module.parameters()).device))
    finally:
        del module.forward  # back to the class's forward
    return sum(p.sum() * 0 for p in module.parameters())
