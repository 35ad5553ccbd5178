"""Checkpoint files that load with `torch.load(..., weights_only=True)`, and the random
generator states that make a resumed run continue exactly.

RecBole pickles its whole Config object into each checkpoint, which torch >= 2.6
refuses to load by default. The plugin stores the config as a plain dict instead
(anything not a number, string, bool or plain container becomes its string), and
writes through a temporary file and a rename, so a killed process never leaves a
half-written checkpoint.
"""
from __future__ import annotations

import os
import pickle
import random
import uuid
from enum import Enum
from typing import Any, Optional

import numpy as np
import torch


def plain(value: Any) -> Any:
    """`value` with every leaf a tensor, number, string, bool or None."""
    if isinstance(value, dict):
        return {k if isinstance(k, (int, str)) else str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):  # np.float64 subclasses float but is no plain float
        return value.item()
    if isinstance(value, (torch.Tensor, int, float, str, bool)) or value is None:
        return value
    if isinstance(value, Enum):
        return value.name
    return str(value)


def unique_path(path: str) -> str:
    """`path` with a random suffix before its extension: RecBole names the best model
    `<model>-<local time>.pth`, so two runs started in the same second in one
    checkpoint_dir would otherwise overwrite each other's files."""
    stem, ext = os.path.splitext(path)
    return f"{stem}-{uuid.uuid4().hex[:6]}{ext}"


def save(state: dict[str, Any], path: str) -> None:
    """Write `state` to `path` atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(plain(state), tmp)
    os.replace(tmp, path)


def load(path: str, device: Any) -> dict[str, Any]:
    """Load a checkpoint written by `save`; refuse anything that needs arbitrary unpickling."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} is not a recbole-mdcns checkpoint (it needs full unpickling, which can run "
            "arbitrary code). If you trust the file, load it yourself with "
            "torch.load(path, weights_only=False)."
        ) from error


def rng_state(loader_generator: Optional[torch.Generator]) -> dict[str, Any]:
    """Every random generator training depends on, as plain values: torch (and CUDA),
    numpy, python, and the training loader's own shuffling generator."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(internal), gauss],
        "loader": loader_generator.get_state() if loader_generator is not None else None,
    }


def set_rng_state(state: dict[str, Any], loader_generator: Optional[torch.Generator]) -> None:
    """Restore what `rng_state` returned. Generator states must be CPU tensors: a checkpoint
    loaded with `map_location` on a GPU holds them there, so they are moved back first."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"]:
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in state["cuda"]])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if loader_generator is not None and state["loader"] is not None:
        loader_generator.set_state(state["loader"].cpu())
