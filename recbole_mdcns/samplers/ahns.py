"""AHNS, adaptive hardness negative sampling (Lai et al., AAAI 2024), its p < 0 form as the
authors' code and the DivNS code run it.

The harder the target already scores, the easier the negative: among C uniform candidates,
the K whose scores lie closest to t = beta (s+ + alpha)^(p + 1), which falls as s+ rises
for p < -1. Where t is not finite (s+ + alpha = 0, p + 1 < 0) the limit from above is +inf:
the highest-scored candidates.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import CANDIDATE_PARAM, NegativeSampler, ordered, register
from recbole_mdcns.scoring import EncodedBatch


def closest_to_target(scores: Tensor, target: Tensor, num: int, blocks: bool) -> Tensor:
    """Positions [B, num] of the scores [B, C] closest to each row's target [B] (+inf: the
    highest scores): the `num` closest, or with `blocks` the closest of each of `num` equal
    blocks of the pool (C // num candidates each; the remainder is not read)."""
    distance = torch.where(target.isfinite().unsqueeze(1), (scores - target.unsqueeze(1)).abs(), -scores)
    if not blocks:
        return distance.topk(num, dim=1, largest=False).indices
    width = scores.shape[1] // num
    per_block = distance[:, : num * width].view(-1, num, width).argmin(dim=2)  # [B, num]
    return per_block + torch.arange(num, device=scores.device) * width


@register("AHNS")
class AHNSSampler(NegativeSampler):
    params = (
        replace(CANDIDATE_PARAM, default=32, doc="C, uniform candidates scored per row (the authors' n_negs)"),
        Param("ahns_alpha", float, 1.0, "alpha, the shift of the target's score: base = s+ + alpha"),
        Param("ahns_beta", float, 0.1, "beta, the scale of the hardness target t = beta base^(p + 1)"),
        Param("ahns_p", int, -2, "p (integer), the exponent: t = beta base^(p + 1); p < -1 gives easier negatives "
              "to better-scored targets"),
        Param("ahns_k_mode", str, "closest", "K > 1: `closest`, the K candidates closest to t; `blocks`, the "
              "closest of each of K equal blocks of the pool (the authors' K blocks of C / K)",
              choices=("closest", "blocks")),
    )
    uses_candidate_pool = True

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        return ordered(config, "neg_num", "neg_candidate_num", why="; AHNS picks the K among the C candidates")

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.alpha: float = config["ahns_alpha"]
        self.beta: float = config["ahns_beta"]
        self.p: int = config["ahns_p"]
        self.blocks: bool = config["ahns_k_mode"] == "blocks"

    @torch.no_grad()
    def target(self, pos_score: Tensor) -> Tensor:
        """The hardness target of each row [B] from its target's score [B]."""
        return self.beta * (pos_score + self.alpha) ** (self.p + 1)

    def sample(self, batch: EncodedBatch) -> Tensor:
        candidates = self.candidate_pool(batch)
        with torch.no_grad():
            target = self.target(batch.pos_score())
        return candidates.gather(1, closest_to_target(batch.score_detached(candidates), target, self.neg_num, self.blocks))
