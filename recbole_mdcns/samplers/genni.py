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


def draw_from_logits_(logits: Tensor, num: int) -> tuple[Tensor, Tensor]:
    """Positions [B, num] drawn i.i.d. from softmax(logits) per row, by inverse CDF (-1 in
    rows with no finite logit), and each row's log normaliser log sum exp(logits) [B].
    Works in place on `logits` (fresh [B, N] buffers cost page faults) and is ten times
    faster than torch.multinomial on CPU.
    """
    peak = logits.amax(dim=1, keepdim=True)
    empty = torch.isinf(peak)
    cdf = logits.sub_(peak.masked_fill(empty, 0.0)).exp_().cumsum(dim=1)  # -inf logits: zero-width steps
    total = cdf[:, -1:]
    u = torch.rand(logits.shape[0], num, device=logits.device, dtype=cdf.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # stay below the last edge
    positions = torch.searchsorted(cdf, u, right=True).clamp(max=logits.shape[1] - 1)
    return positions.masked_fill(empty, -1), (peak + torch.log(total)).squeeze(1)


@register("GenNi")
class GenNiSampler(NegativeSampler):
    has_proposal = True
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

    def sample(self, batch: EncodedBatch) -> Tensor:
        return self._draw(batch)[0]

    @torch.no_grad()
    def sample_with_log_q(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """Q(j) = softmax(alpha z)_j over S with the row's excluded ids masked, times the
        chance |S| / N that a subsample holds j (an approximation of its marginal
        probability); a row whose subsample is all excluded draws uniformly from its free
        ids: Q = 1 / their number."""
        draws, log_norm, size, empty = self._draw(batch)
        log_q = self.alpha * batch.score_detached(draws) - log_norm.unsqueeze(1) + math.log(size / self.n_items)
        if empty.any():
            log_q[empty] = -torch.log(self.exclusion.free(batch).float())[empty].unsqueeze(1)
        return draws, log_q

    @torch.no_grad()
    def _draw(self, batch: EncodedBatch) -> tuple[Tensor, Tensor, int, Tensor]:
        """Ids [B, K], each row's log normaliser over S [B], |S|, and the rows that fell back to uniform [B]."""
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
        positions, log_norm = [], []
        for rows, exclusions in self.exclusion.pieces(batch, piece_rows):
            # id i sits at position i - 1 of the whole catalogue; the pad N+1 falls outside S
            slots = exclusions.ids(shift=-1) if items is None else slot[exclusions.ids()]
            drawn, norm = self._draw_rows(query[rows], table, slots, size)
            positions.append(drawn)
            log_norm.append(norm)
        positions, log_norm = torch.cat(positions), torch.cat(log_norm)
        draws = positions.clamp(min=0) + 1 if items is None else items[positions.clamp(min=0)]
        empty = positions[:, 0] < 0  # every id of a small S is excluded for the row
        if empty.any():
            draws[empty] = self.exclusion.draw(batch, self.neg_num)[empty]
        return draws, log_norm, size, empty

    def _draw_rows(self, query: Tensor, table: Tensor, slots: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """Positions in S [rows, K] drawn from softmax(query @ table^T) with `slots` masked,
        and each row's log normaliser [rows]."""
        logits = query @ table.T  # [rows, |S|]
        # one scatter: ids outside S write to position 0 too, whose own value is put back
        in_set = slots < size
        first = logits[:, 0].masked_fill((in_set & (slots == 0)).any(dim=1), -math.inf)
        logits.scatter_(1, slots.masked_fill(~in_set, 0), -math.inf)
        logits[:, 0] = first
        return draw_from_logits_(logits, self.neg_num)
