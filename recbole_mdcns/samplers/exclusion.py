"""Per-row item sets: the items a training row may not draw (`ExclusionSets`), exact
uniform draws from the rest, and the false-negative diagnostic's membership test.

Every set is a row's sorted item ids [B, W] with a mask of those that count, so draws and
membership tests are one `searchsorted` per row and need no [B, N] tensor.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.history import LaterItems, UserHistory
from recbole_mdcns.scoring import EncodedBatch

# [rows, W] entries per piece of a batch's exclusions: rows are taken in pieces of at most
# this many entries, so memory stays bounded when W (the most items one user has) is large
EXCLUSION_PIECE_ENTRIES = 2**22


def row_pieces(n_rows: int, width: int, piece_rows: Optional[int] = None) -> Iterator[slice]:
    """Slices of n_rows rows whose [rows, width] tables hold at most EXCLUSION_PIECE_ENTRIES
    entries (and at most `piece_rows` rows, when given)."""
    step = max(1, EXCLUSION_PIECE_ENTRIES // width)
    step = min(piece_rows, step) if piece_rows else step
    for start in range(0, n_rows, step):
        yield slice(start, start + step)


class ExclusionSets:
    """The items a training row may not draw: under `history`, every item its user had up
    to and including its target (the whole prefix, not only RecBole's truncated window);
    under `user`, every training item of its user; under `window`, the target and the
    prefix items the row holds; under `target`, only the target (full-softmax CE's
    negatives: every other item, the user's earlier ones too).

    `history` and `user` read the user's sorted distinct items (`UserHistory`) with a
    per-row mask of those that count, so draws and membership tests need no sort per
    batch; `window` sorts the row's own ids. A batch is handled in pieces of rows whose
    [rows, W] tensors hold at most EXCLUSION_PIECE_ENTRIES entries.
    """

    def __init__(self, config: Any, dataset: Dataset):
        self.mode: str = config["neg_exclude"]
        self.n_items = dataset.item_num - 1
        self.pad = self.n_items + 1
        if self.mode in ("window", "target"):
            self.history = None
            self.width = config["MAX_ITEM_LIST_LENGTH"] + 1 if self.mode == "window" else 1
            self.max_excluded = self.width
        else:
            self.history = UserHistory(config, dataset, self.pad).to(config["device"])
            self.width = self.history.items.shape[1]
            # a user's last row excludes all the user's items under either mode
            self.max_excluded = int(self.history.counts.max()) if len(self.history.counts) else 0
        # the latest batch's exclusions by row slice: a sampler that draws and then tests
        # membership (DivNS, popularity's redraws) builds them once per batch. A weak
        # reference: holding the batch would keep its autograd graph alive into the next step
        self._latest: tuple[Callable[[], Optional[EncodedBatch]], dict[tuple[int, int], RowExclusions]] = (
            lambda: None, {})

    def for_rows(self, batch: EncodedBatch, rows: slice) -> "RowExclusions":
        """The exclusions of the batch's training rows `rows`."""
        if self._latest[0]() is not batch:
            self._latest = (weakref.ref(batch), {})
        cached = self._latest[1]
        key = (rows.start, rows.stop)
        if key not in cached:
            cached[key] = self._build(batch, rows)
        return cached[key]

    def _build(self, batch: EncodedBatch, rows: slice) -> "RowExclusions":
        if self.history is None:
            held = batch.pos_items[rows].unsqueeze(1)
            if self.mode == "window":
                held = torch.cat([held, batch.held_items(rows)], 1)
            return RowExclusions.of_ids(held, self.n_items)
        users = batch.users[rows]
        items = self.history.items.index_select(0, users)  # index_select: the fastest row gather
        if self.mode == "user":
            return RowExclusions(items, items < self.pad, self.n_items)
        first = self.history.first.index_select(0, users)
        return RowExclusions(items, first <= batch.target_index[rows].unsqueeze(1), self.n_items)

    def pieces(self, batch: EncodedBatch, piece_rows: Optional[int] = None) -> Iterator[tuple[slice, "RowExclusions"]]:
        """The batch's rows in pieces of at most `piece_rows` (default: the memory bound), with their exclusions."""
        for rows in row_pieces(batch.size, self.width, piece_rows):
            yield rows, self.for_rows(batch, rows)

    def draw(self, batch: EncodedBatch, num: int) -> Tensor:
        """`num` ids per row [B, num], uniform with replacement over the ids the row does not exclude."""
        return torch.cat([exclusions.draw(num) for _, exclusions in self.pieces(batch)])

    def free(self, batch: EncodedBatch) -> Tensor:
        """How many ids each row may draw: [B]."""
        return torch.cat([self.n_items - exclusions.excluded.sum(1) for _, exclusions in self.pieces(batch)])

    def excluded_mass(self, batch: EncodedBatch, probs: Tensor) -> Tensor:
        """The total of `probs` [N+1] over each row's excluded ids: [B]."""
        return torch.cat([(probs[exclusions.items.long().clamp(max=self.n_items)] * exclusions.excluded).sum(1)
                          for _, exclusions in self.pieces(batch)])

    def contains(self, batch: EncodedBatch, ids: Tensor) -> Tensor:
        """Whether each of the ids [B, n] is excluded for its row: [B, n] bool."""
        return torch.cat([exclusions.contains(ids[rows]) for rows, exclusions in self.pieces(batch)])

    def contains_shared(self, batch: EncodedBatch, ids: Tensor) -> Tensor:
        """Whether each of the ids [n], the same for every row (shared negatives, the mix),
        is excluded for each row: [B, n] bool, as `contains` of the ids repeated per row."""
        return torch.cat([exclusions.contains_shared(ids) for _, exclusions in self.pieces(batch)])


def false_negative_share(later_items: LaterItems, users: Tensor, target_index: Tensor, ids: Tensor,
                         counted: Optional[Tensor] = None) -> Tensor:
    """The share (0-d) of the ids [B, K] that the rows' users [B] have after the rows'
    target indices [B], among the entries `counted` [B, K] marks (default: all). Rows are
    taken in pieces whose [rows, W] tables hold at most EXCLUSION_PIECE_ENTRIES entries."""
    items, last = later_items.history.items, later_items.history.last
    later = []
    for rows in row_pieces(len(users), items.shape[1]):
        is_later = last.index_select(0, users[rows]) > target_index[rows].unsqueeze(1)
        user_items = items.index_select(0, users[rows])
        later.append(RowExclusions(user_items, is_later, later_items.n_items).contains(ids[rows]))
    marked = torch.cat(later)
    counted = torch.ones_like(marked) if counted is None else counted
    return (marked & counted).sum() / counted.sum().clamp(min=1)


@dataclass
class RowExclusions:
    """Per row: its user's sorted items [B, W] (padded with N+1) and which of them the row excludes [B, W]."""

    items: Tensor
    excluded: Tensor
    n_items: int

    @classmethod
    def of_ids(cls, ids: Tensor, n_items: int) -> "RowExclusions":
        """Exclusions of the ids [B, W] of each row (0 is padding; repeats allowed): one sort."""
        items = ids.masked_fill(ids == 0, n_items + 1).int().sort(dim=1).values
        excluded = items <= n_items
        excluded[:, 1:] &= items[:, 1:] != items[:, :-1]  # a repeat is marked once
        return cls(items, excluded, n_items)

    def ids(self, shift: int = 0) -> Tensor:
        """The excluded ids of each row plus `shift` [B, W] (int64), padded with N+1+shift."""
        return torch.where(self.excluded, self.items + shift, self.n_items + 1 + shift).long()

    def contains(self, ids: Tensor) -> Tensor:
        """Whether each of the ids [B, n] is excluded for its row: [B, n] bool."""
        pos = torch.searchsorted(self.items, ids.int()).clamp(max=self.items.shape[1] - 1)
        return (self.items.gather(1, pos.long()) == ids) & self.excluded.gather(1, pos.long())

    def contains_shared(self, ids: Tensor) -> Tensor:
        """Whether each of the ids [n], the same for every row, is excluded for each row:
        [B, n] bool, as `contains` of the ids repeated per row. It searches each row's W items
        among the sorted ids, O(B (W log n + n)), where `contains` searches the n ids among
        each row's W, O(B n log W); no data-dependent size, so no device sync."""
        ids = ids.to(self.items.dtype)
        ascending = ids.sort().values
        pos = torch.searchsorted(ascending, self.items).clamp(max=len(ids) - 1)  # a repeated id: its first copy
        hit = (ascending[pos] == self.items) & self.excluded
        found = torch.zeros(self.items.shape[0], len(ids) + 1, dtype=torch.bool, device=ids.device)
        found.scatter_(1, torch.where(hit, pos, len(ids)), True)  # misses go to a spare last column
        return found[:, torch.searchsorted(ascending, ids)]

    def draw(self, num: int) -> Tensor:
        """`num` ids per row [B, num], uniform with replacement over the ids the row does not exclude."""
        return draw_from_sorted_complement(self.items, self.excluded, num, self.n_items)


def draw_from_sorted_complement(items: Tensor, excluded: Tensor, num: int, n_items: int) -> Tensor:
    """Draw `num` ids per row uniformly (with replacement) from 1..n_items minus the ids of
    `items` [B, W] (ascending, padding above n_items at the end) that `excluded` [B, W]
    marks, each id marked at most once (a repeat unmarked). Exact, loop-free, no sort.
    A row must keep a free id (`check_dataset` ensures it).

    Draw a rank r among the row's free ids and map it to an id: with c_i the number of
    marked ids among items_0..items_i, g_i = items_i - c_i is non-decreasing, and the
    marked ids below the answer are c at the last i with g_i <= r, so
    id = r + 1 + c_{j-1} with j = #{i : g_i <= r}.
    """
    counted = torch.cumsum(excluded, dim=1, dtype=torch.int32)  # c_i
    gaps = items.int() - counted  # g_i (int32: half the cost of int64 here)
    free = n_items - counted[:, -1:]  # [B, 1]
    rank = (torch.rand(items.shape[0], num, device=items.device) * free).int()
    rank = torch.minimum(rank, free - 1)  # float rounding can reach `free`
    j = torch.searchsorted(gaps, rank, right=True, out_int32=True)
    below = torch.cat([torch.zeros_like(counted[:, :1]), counted], dim=1).gather(1, j.long())
    return (rank + 1 + below).long()
