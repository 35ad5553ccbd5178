"""Per-training-row state of the stateful samplers (SRNS's memory, AdaSIR's pools).

A row's stable key is its index in RecBole's training split. A user's rows are
consecutive and in time order, so the key is start[user] + target index, the same
under both layouts: a position of `train_layout: sequence` is the prefix row with the
same target. `neg_state_key: user` keys by user instead (the papers' collaborative-
filtering form). Under DDP each rank updates the rows it visits; `sync` merges them
at the end of each epoch, so every rank (and the checkpoint) holds every row's state.
"""
from __future__ import annotations

from typing import Any

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.history import target_indices
from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import occurrence_index
from recbole_mdcns.scoring import EncodedBatch

STATE_KEY_PARAM = Param(
    "neg_state_key", str, "row", "what a stateful sampler keeps its state for: `row`, each training row (the "
    "MDCNS ports' form); `user`, each user (the papers' form; needs neg_exclude: user)", choices=("row", "user"))


def check_state_key(config: Any) -> list[str]:
    """A user's state serves all its rows, so it may only hold items none of them excludes."""
    if config["neg_state_key"] == "user" and config["neg_exclude"] != "user":
        return [f"neg_state_key = 'user' needs neg_exclude = 'user', not {config['neg_exclude']!r}: a user's "
                "state serves every row of the user, so it may hold no item any of them excludes"]
    return []


class RowState:
    """Named tensors [R, ...] on the device, one row per state key, and the rows written this epoch."""

    def __init__(self, config: Any, dataset: Dataset, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]):
        """`dataset`: the training split (RecBole's prefix rows); `shapes`: {name: (per-row shape, dtype)}."""
        self.device = config["device"]
        if config["neg_state_key"] == "user":
            self.start = None
            size = dataset.user_num
        else:
            users = dataset.inter_feat[config["USER_ID_FIELD"]]
            self.start = torch.zeros(dataset.user_num, dtype=torch.long)
            self.start[users] = torch.arange(len(users)) - target_indices(config, dataset)
            self.start = self.start.to(self.device)
            size = len(users)
        self.tensors = {name: torch.zeros((size, *shape), dtype=dtype, device=self.device)
                        for name, (shape, dtype) in shapes.items()}
        self.written = torch.zeros(size, dtype=torch.bool, device=self.device)

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def keys(self, batch: EncodedBatch) -> Tensor:
        """Each training row's key [B]."""
        return batch.users if self.start is None else self.start[batch.users] + batch.target_index

    def write(self, keys: Tensor, values: dict[str, Tensor]) -> None:
        """Store each row's new values. Row keys are distinct within a batch; of a user's rows
        (under `user`) the first in the batch wins, so the result does not depend on the device."""
        if self.start is None:
            first = occurrence_index(keys) == 0
            keys, values = keys[first], {name: value[first] for name, value in values.items()}
        for name, value in values.items():
            self.tensors[name][keys] = value.to(self.tensors[name].dtype)
        self.written[keys] = True

    def sync(self) -> None:
        """Under DDP, give every rank every row's latest state: each row from the rank that
        wrote it this epoch (the highest, if several did), an unwritten row from rank 0."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            self.written.zero_()
            return
        rank = torch.distributed.get_rank()
        owner = torch.where(self.written, rank + 1, 0).int()
        torch.distributed.all_reduce(owner, op=torch.distributed.ReduceOp.MAX)
        mine = (owner == rank + 1) | ((owner == 0) & (rank == 0))
        for name, tensor in self.tensors.items():
            wide = tensor.float() if tensor.is_floating_point() else tensor.long()
            wide = wide * mine.view(-1, *([1] * (tensor.dim() - 1)))
            torch.distributed.all_reduce(wide)
            tensor.copy_(wide.to(tensor.dtype))
        self.written.zero_()

    def state_dict(self) -> dict[str, Tensor]:
        return {name: tensor.clone() for name, tensor in self.tensors.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name, tensor in self.tensors.items():
            if state[name].shape != tensor.shape:
                raise ValueError(f"the checkpoint's sampler state {name} has shape {tuple(state[name].shape)}, this "
                                 f"run's {tuple(tensor.shape)}: resume it with the data and keys that wrote it")
            tensor.copy_(state[name])
