"""Uniform negatives: K ids uniform over the items not excluded for the row."""
from __future__ import annotations

from torch import Tensor

from recbole_mdcns.samplers.base import NegativeSampler, register
from recbole_mdcns.scoring import EncodedBatch


@register("uniform")
class UniformSampler(NegativeSampler):
    def sample(self, batch: EncodedBatch) -> Tensor:
        return self.candidate_pool(batch, self.neg_num)
