"""The false-negative diagnostic: the share of a sampler's chosen negatives that their
row's user has later.

A hard-negative sampler picks the items the model scores highest among those a row may
draw, and some of those are items the user goes on to have: a later training item, the
validation item or the test item. Every sampler notes the ids it chose
(`NegativeSampler.chose`); with `watch_false_negatives(LaterItems(...))` (the CLI and
`build_experiment` set it up) the epoch's log line, tensorboard and the benchmarks'
diagnostics get `false_negatives`, beside the negatives' mean score `neg_score`.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.history import UserHistory
from recbole_mdcns.samplers.base import EXCLUSION_PIECE_ENTRIES, RowExclusions


class LaterItems:
    """Each user's items with the last index at which the user had each, over RecBole's
    whole filtered dataset after `data_preparation` (every user's prefix rows, the
    validation and test targets included): an id is a later item of a training row when
    its user has it at an index above the row's target index."""

    def __init__(self, config: Any, dataset: Dataset):
        self.n_items = dataset.item_num - 1
        # RecBole sorts the whole dataset's rows by time; a stable sort by user keeps each
        # user's rows in that order, the order of the training split's rows
        by_user = torch.argsort(dataset.inter_feat[config["USER_ID_FIELD"]], stable=True)
        rows = dataset.copy(dataset.inter_feat[by_user])
        self.history = UserHistory(config, rows, pad=self.n_items + 1, with_first=False, with_last=True)

    def to(self, device: Any) -> "LaterItems":
        self.history.to(device)
        return self

    def share(self, users: Tensor, target_index: Tensor, ids: Tensor, counted: Optional[Tensor] = None) -> Tensor:
        """The share (0-d) of the ids [B, K] that the rows' users [B] have after the rows'
        target indices [B], among the entries `counted` [B, K] marks (default: all).
        Rows are taken in pieces whose [rows, W] tables hold at most EXCLUSION_PIECE_ENTRIES."""
        items, last = self.history.items, self.history.last
        step = max(1, EXCLUSION_PIECE_ENTRIES // items.shape[1])
        later = []
        for start in range(0, len(users), step):
            rows = slice(start, start + step)
            user_items = items.index_select(0, users[rows])
            is_later = last.index_select(0, users[rows]) > target_index[rows].unsqueeze(1)
            later.append(RowExclusions(user_items, is_later, self.n_items).contains(ids[rows]))
        marked = torch.cat(later)
        if counted is None:
            return marked.float().mean()
        return (marked & counted).sum() / counted.sum().clamp(min=1)
