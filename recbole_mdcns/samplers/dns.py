"""Dynamic negative sampling: the top-M of C scored candidates, K of them drawn uniformly.

M = 1 is classic DNS (Zhang et al. 2013); M > 1 is DNS(M,N) (Shi et al. 2023). Under
neg_shared the C candidates are drawn once per batch and scored as one [B, C] product;
each row takes its top-M among those it does not exclude (uniform free ids where fewer remain).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import NegativeSampler, ordered, register
from recbole_mdcns.scoring import EncodedBatch


def draw_top_m(scores: Tensor, top_m: int, num: int) -> Tensor:
    """Positions [B, num] drawn uniformly without replacement among each row's top-M scores."""
    top = scores.topk(top_m, dim=1).indices
    if top_m == num:
        return top
    pick = torch.rand(top.shape, device=top.device).argsort(dim=1)[:, :num]
    return top.gather(1, pick)


def top_m_negatives(batch: EncodedBatch, candidates: Tensor, top_m: int, num: int) -> Tensor:
    """`num` ids [B, num] of each row's `candidates` [B, C], drawn uniformly without
    replacement among the row's top-M by score."""
    return candidates.gather(1, draw_top_m(batch.score_detached(candidates), top_m, num))


def top_m_problems(config: Any, key: str, sampler: str) -> list[str]:
    """K <= M <= C, for a sampler whose M is `key` and that draws its K among the top-M of C."""
    return ordered(config, key, "neg_candidate_num") + ordered(
        config, "neg_num", key, why=f"; {sampler} draws its K negatives among the top-M")


@register("DNS")
class DNSSampler(NegativeSampler):
    params = (Param("dns_top_m", int, 1, "M, the K negatives are drawn among the top-M of C; K <= M <= C", minimum=1),)
    uses_candidate_pool = True
    shares_candidates = True
    top_m_key: ClassVar[str] = "dns_top_m"  # the key of M (a subclass that picks as DNS names its own)

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        return top_m_problems(config, cls.top_m_key, cls.name)

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.top_m: int = config[self.top_m_key]

    def sample(self, batch: EncodedBatch) -> Tensor:
        if not self.shared:
            return top_m_negatives(batch, self.candidate_pool(batch), self.top_m, self.neg_num)
        candidates, excluded = self.shared_candidates(batch)
        with torch.no_grad():
            scores = batch.score_shared(candidates).masked_fill(excluded, -math.inf)
        picks = draw_top_m(scores, self.top_m, self.neg_num)
        # a row that excludes all but fewer than M of the pool takes uniform free ids instead of excluded ones
        short = scores.gather(1, picks) == -math.inf
        chosen = candidates[picks]
        return torch.where(short, self.exclusion.draw(batch, self.neg_num), chosen) if short.any() else chosen
