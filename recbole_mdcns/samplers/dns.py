"""Dynamic negative sampling: the top-M of C scored candidates, K of them drawn uniformly.

M = 1 is classic DNS (Zhang et al. 2013); M > 1 is DNS(M,N) (Shi et al. 2023).
"""
from __future__ import annotations

from typing import Any

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


@register("DNS")
class DNSSampler(NegativeSampler):
    params = (Param("dns_top_m", int, 1, "M, the K negatives are drawn among the top-M of C; K <= M <= C", minimum=1),)
    uses_candidate_pool = True

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        return ordered(config, "dns_top_m", "neg_candidate_num") + ordered(
            config, "neg_num", "dns_top_m", why="; DNS draws the K negatives among the top-M"
        )

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.top_m: int = config["dns_top_m"]

    def sample(self, batch: EncodedBatch) -> Tensor:
        candidates = self.candidate_pool(batch)
        scores = batch.score_detached(candidates)
        return candidates.gather(1, draw_top_m(scores, self.top_m, self.neg_num))
