"""GenNi: negatives drawn from the model's own softmax over items (Chen et al. 2022).

Each row draws K ids from softmax(alpha * z), z its scores over an item set S with the
row's excluded items masked. S is the whole catalogue (genni_item_ratio = 1) or, the
efficient form, ceil(rho * N) ids drawn uniformly once per batch and shared by all
rows, so that scoring is one [B, |S|] matrix product. alpha -> 0 is uniform sampling;
alpha -> infinity is DNS over S.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import NegativeSampler, draw_from_complement, register
from recbole_mdcns.scoring import EncodedBatch


@register("GenNi")
class GenNiSampler(NegativeSampler):
    params = (
        Param("genni_alpha", float, minimum=0),
        Param("genni_item_ratio", float, minimum=0, minimum_exclusive=True, maximum=1),
    )

    def item_set(self) -> Tensor:
        """The ids S scored this batch: all of 1..N, or a shared uniform subsample."""
        size = math.ceil(self.config["genni_item_ratio"] * self.n_items)
        if size >= self.n_items:
            return torch.arange(1, self.n_items + 1, device=self.device)
        return torch.randperm(self.n_items, device=self.device)[:size] + 1

    @torch.no_grad()
    def sample(self, batch: EncodedBatch) -> Tensor:
        items = self.item_set()
        logits = self.config["genni_alpha"] * (batch.seq_emb @ batch.item_table[items].T)  # [B, |S|]
        # mask each row's excluded ids at their slot in S (ids outside S have none)
        excluded = self.exclusion.for_batch(batch)
        slot = torch.full((self.n_items + 2,), len(items), device=self.device)
        slot[items] = torch.arange(len(items), device=self.device)
        slots = slot[excluded]
        in_set = slots < len(items)
        rows = torch.arange(batch.size, device=self.device).unsqueeze(1).expand_as(slots)
        logits[rows[in_set], slots[in_set]] = -math.inf

        empty = torch.isinf(logits).all(dim=1)  # every id of a small S excluded for the row
        logits[empty] = 0.0
        draws = items[torch.multinomial(torch.softmax(logits, dim=1), self.neg_num, replacement=True)]
        if empty.any():
            draws[empty] = draw_from_complement(excluded[empty], self.neg_num, self.n_items)
        return draws
