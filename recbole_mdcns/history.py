"""Each user's training sequence, read from RecBole's prefix rows.

RecBole's sequential training split holds one row per training target: the target and
its prefix, truncated to the last MAX_ITEM_LIST_LENGTH items. A row's *target index*
is the target's 0-based position in its user's whole training sequence; from it and
the rows' items follow the first index at which each user had each item, so "the items
before position q" is a comparison, whatever the truncation. The negative samplers'
exclusion and the masked evaluation read these tables; the false-negative diagnostic
reads the same tables built over the whole dataset, validation and test targets included.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.params import ConfigError

TARGET_INDEX_FIELD = "recbole_mdcns_target_index"  # a training row's target index, added to its inter_feat


def sequence_fields(config: Any) -> tuple[str, str, str, str]:
    item = config["ITEM_ID_FIELD"]
    return config["USER_ID_FIELD"], item, item + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]


def target_indices(config: Any, dataset: Dataset) -> Tensor:
    """Each training row's target index: its user's first row's prefix length plus the
    row's rank among the user's rows. RecBole writes a user's rows together, in time
    order; a row whose prefix is not truncated must have index = prefix length, which
    is checked (a shuffled split fails it and is reported)."""
    user_field, _, _, length_field = sequence_fields(config)
    inter = dataset.inter_feat
    users, lengths = inter[user_field], inter[length_field]
    if len(users) == 0:
        return torch.zeros(0, dtype=torch.long)
    new_user = torch.ones_like(users, dtype=torch.bool)
    new_user[1:] = users[1:] != users[:-1]
    block = torch.cumsum(new_user, 0) - 1  # which run of equal users a row is in
    starts = torch.nonzero(new_user).squeeze(1)
    index = lengths[starts][block] + torch.arange(len(users)) - starts[block]
    untruncated = lengths < config["MAX_ITEM_LIST_LENGTH"]
    if len(torch.unique(users)) != len(starts) or not torch.equal(index[untruncated], lengths[untruncated]):
        raise ConfigError([f"dataset {config['dataset']!r}: its training rows are not RecBole's prefix rows (each "
                           "user's rows together, in time order, prefix lengths 1, 2, ...), which the negative "
                           "samplers and train_layout read; build the split with eval_args order TO and without "
                           "benchmark_filename"])
    return index


def add_target_index(config: Any, dataset: Dataset) -> None:
    """Give `dataset`'s rows their target index (`TARGET_INDEX_FIELD`), so that batches carry it."""
    if TARGET_INDEX_FIELD not in dataset.inter_feat:
        dataset.inter_feat.update(type(dataset.inter_feat)({TARGET_INDEX_FIELD: target_indices(config, dataset)}))


class UserHistory:
    """Each user's distinct training items, sorted: `items` [U, W] padded with `pad`, and
    `counts` [U] (on the CPU); with `index="first"` also `first` [U, W], the first index at
    which the user had each (padding: beyond any index), with `index="last"` `last` [U, W],
    the last one (padding: -1), both int32. Built without a loop over users."""

    def __init__(self, config: Any, dataset: Dataset, pad: int, index: str = "first"):
        """`index`: `first`, `last`, or `none` for the items alone (no index, so no check of
        the rows' order)."""
        if is_longest_prefix(dataset):
            raise ValueError("UserHistory needs the whole training split, not the longest-prefix rows built from it")
        user_field, item_field, seq_field, length_field = sequence_fields(config)
        inter = dataset.inter_feat
        n_ids, n_rows = dataset.item_num, len(inter[user_field])
        seq = inter[seq_field]
        target_index = inter[length_field] if index == "none" else target_indices(config, dataset)
        # a row's prefix item j sits at index target_index - length + j of the user's sequence
        prefix_index = (target_index - inter[length_field]).unsqueeze(1) + torch.arange(seq.shape[1])
        items = torch.cat([inter[item_field].unsqueeze(1), seq], 1).reshape(-1)
        indices = torch.cat([target_index.unsqueeze(1), prefix_index], 1).reshape(-1)
        users = inter[user_field].unsqueeze(1).expand(n_rows, 1 + seq.shape[1]).reshape(-1)
        keep = items > 0
        key = users[keep] * n_ids + items[keep]
        pairs, slot = torch.unique(key, return_inverse=True)  # sorted by (user, item)
        pair_users, pair_items = pairs // n_ids, pairs % n_ids
        counts = torch.bincount(pair_users, minlength=dataset.user_num)
        col = torch.arange(len(pairs)) - (torch.cumsum(counts, 0) - counts)[pair_users]
        width = max(int(counts.max()), 1) if len(pairs) else 1
        # int32: the samplers gather [B, W] of these per batch, half the memory traffic of int64
        self.items = torch.full((dataset.user_num, width), pad, dtype=torch.int32)
        self.items[pair_users, col] = pair_items.int()
        self.counts = counts

        def table(reduce: str, fill: int) -> Tensor:
            """The `reduce` of each (user, item)'s indices, laid out as `items`."""
            per_pair = torch.full((len(pairs),), fill).scatter_reduce(0, slot, indices[keep], reduce=reduce)
            laid_out = torch.full((dataset.user_num, width), fill, dtype=torch.int32)
            laid_out[pair_users, col] = per_pair.int()
            return laid_out

        never = n_rows + seq.shape[1] + 1  # above every index
        self.first: Optional[Tensor] = table("amin", never) if index == "first" else None
        self.last: Optional[Tensor] = table("amax", -1) if index == "last" else None

    def to(self, device: Any) -> "UserHistory":
        """Move `items`, `first` and `last` (`counts` stays on the CPU, read at start-up only)."""
        self.items = self.items.to(device)
        self.first = None if self.first is None else self.first.to(device)
        self.last = None if self.last is None else self.last.to(device)
        return self


class LaterItems:
    """For the false-negative diagnostic: each user's items with the last index at which
    the user had each (`history.items`, `history.last`), over RecBole's whole filtered
    dataset after `data_preparation` (every user's prefix rows, the validation and test
    targets included). An id is a later item of a training row when its user has it at an
    index above the row's target index."""

    def __init__(self, config: Any, dataset: Dataset):
        # RecBole sorts the whole dataset's rows by time; a stable sort by user keeps each
        # user's rows in that order, the order of the training split's rows
        by_user = torch.argsort(dataset.inter_feat[config["USER_ID_FIELD"]], stable=True)
        rows = dataset.copy(dataset.inter_feat[by_user])
        self.n_items = dataset.item_num - 1
        self.history = UserHistory(config, rows, pad=dataset.item_num, index="last")

    def to(self, device: Any) -> "LaterItems":
        self.history.to(device)
        return self


def longest_prefix_dataset(config: Any, dataset: Dataset) -> Dataset:
    """A copy of the training split with only each user's last row (its longest prefix):
    the row of the whole-sequence layout."""
    user_field = config["USER_ID_FIELD"]
    users = dataset.inter_feat[user_field]
    last = torch.ones_like(users, dtype=torch.bool)
    last[:-1] = users[:-1] != users[1:]
    rows = dataset.copy(dataset.inter_feat[torch.nonzero(last).squeeze(1)])
    rows.longest_prefix_rows = True
    return rows


def is_longest_prefix(dataset: Dataset) -> bool:
    """Whether `dataset` is already `longest_prefix_dataset`'s."""
    return getattr(dataset, "longest_prefix_rows", False)
