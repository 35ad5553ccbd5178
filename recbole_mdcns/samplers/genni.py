"""GenNi: negatives drawn from the model's own softmax over items (Chen et al. 2022).

Each row draws K ids from softmax(alpha * z), z its scores over an item set S with the
row's excluded items masked. S is the whole catalogue (genni_item_ratio = 1) or, the
efficient form, ceil(rho * N) ids drawn uniformly once per batch and shared by all
rows, so that scoring is one [B, |S|] matrix product. alpha -> 0 is uniform sampling;
alpha -> infinity is DNS over S. Rows are scored in chunks whose [rows, |S|] buffers
fit `genni_memory_mb`, so memory stays bounded on large catalogues.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import NegativeSampler, register
from recbole_mdcns.scoring import EncodedBatch


def draw_from_logits_(logits: Tensor, num: int) -> Tensor:
    """Positions [B, num] drawn i.i.d. from softmax(logits) per row, by inverse CDF; -1 in
    rows with no finite logit. Works in place on `logits` (fresh [B, N] buffers cost page
    faults) and is ten times faster than torch.multinomial on CPU.
    """
    peak = logits.amax(dim=1, keepdim=True)
    empty = torch.isinf(peak)
    cdf = logits.sub_(peak.masked_fill(empty, 0.0)).exp_().cumsum(dim=1)  # -inf logits: zero-width steps
    total = cdf[:, -1:]
    u = torch.rand(logits.shape[0], num, device=logits.device, dtype=cdf.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # stay below the last edge
    positions = torch.searchsorted(cdf, u, right=True).clamp(max=logits.shape[1] - 1)
    return positions.masked_fill(empty, -1)


@register("GenNi")
class GenNiSampler(NegativeSampler):
    params = (
        Param("genni_alpha", float, 1.0, "alpha >= 0, inverse temperature of the softmax", minimum=0),
        Param("genni_item_ratio", float, 1.0, "rho in (0, 1]: 1 scores every item; below, ceil(rho N) items shared by the batch",
              minimum=0, minimum_exclusive=True, maximum=1),
        Param("genni_memory_mb", float, 1024, "budget of the [rows, \\|S\\|] score buffers: rows are scored in chunks that fit it",
              minimum=0, minimum_exclusive=True),
    )

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.alpha: float = config["genni_alpha"]
        self.item_ratio: float = config["genni_item_ratio"]
        self.memory_mb: float = config["genni_memory_mb"]

    def item_set(self) -> Tensor | None:
        """The ids S scored this batch: None for all of 1..N, else a shared uniform subsample."""
        size = math.ceil(self.item_ratio * self.n_items)
        if size >= self.n_items:
            return None
        return torch.randperm(self.n_items, device=self.device)[:size] + 1

    @torch.no_grad()
    def sample(self, batch: EncodedBatch) -> Tensor:
        items = self.item_set()
        if items is None:  # the whole catalogue: a view of the table, no copy
            table, size = batch.item_table[1:], self.n_items
        else:
            table, size = batch.item_rows(items), len(items)
            slot = torch.full((self.n_items + 2,), size, device=self.device)
            slot[items] = torch.arange(size, device=self.device)
        query = self.alpha * batch.seq_emb
        # two [rows, |S|] float buffers per piece (logits, cdf)
        piece_rows = max(1, int(self.memory_mb * 2**20 // (8 * size)))
        positions = []
        for rows, exclusions in self.exclusion.pieces(batch, piece_rows):
            # id i sits at position i - 1 of the whole catalogue; the pad N+1 falls outside S
            slots = exclusions.ids(shift=-1) if items is None else slot[exclusions.ids()]
            positions.append(self._draw_rows(query[rows], table, slots, size))
        positions = torch.cat(positions)
        draws = positions.clamp(min=0) + 1 if items is None else items[positions.clamp(min=0)]
        empty = positions[:, 0] < 0  # every id of a small S is excluded for the row
        if empty.any():
            draws[empty] = self.exclusion.draw(batch, self.neg_num)[empty]
        return draws

    def _draw_rows(self, query: Tensor, table: Tensor, slots: Tensor, size: int) -> Tensor:
        """Positions in S [rows, K] drawn from softmax(query @ table^T) with `slots` masked."""
        logits = query @ table.T  # [rows, |S|]
        # one scatter: ids outside S write to position 0 too, whose own value is put back
        in_set = slots < size
        first = logits[:, 0].masked_fill((in_set & (slots == 0)).any(dim=1), -math.inf)
        logits.scatter_(1, slots.masked_fill(~in_set, 0), -math.inf)
        logits[:, 0] = first
        return draw_from_logits_(logits, self.neg_num)
