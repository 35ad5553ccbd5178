"""Uniform negatives: K ids uniform over the items not excluded for the row."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from recbole_mdcns.samplers.base import NegativeSampler, register, uniform_ids
from recbole_mdcns.scoring import EncodedBatch


@register("uniform")
class UniformSampler(NegativeSampler):
    has_proposal = True
    can_share = True

    def sample(self, batch: EncodedBatch) -> Tensor:
        return self.exclusion.draw(batch, self.neg_num)

    def sample_with_log_q(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """Q = 1 / the row's number of free ids."""
        negatives = self.sample(batch)
        log_q = -torch.log(self.exclusion.free(batch).float()).unsqueeze(1)
        return negatives, log_q.expand_as(negatives)

    def sample_shared(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """K ids uniform over 1..N, with replacement: Q = 1 / N."""
        negatives = uniform_ids(self.n_items, self.neg_num, self.device)
        return negatives, torch.full((self.neg_num,), -math.log(self.n_items), device=self.device)
