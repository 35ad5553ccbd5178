"""Popularity negatives: K ids with probability proportional to count^alpha (as RecBole's)."""
from __future__ import annotations

from logging import getLogger
from typing import Any

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import NegativeSampler, register
from recbole_mdcns.scoring import EncodedBatch

MAX_REDRAWS = 50


@register("popularity")
class PopularitySampler(NegativeSampler):
    """Counts are the item's occurrences as a training target. Excluded draws are
    redrawn; after MAX_REDRAWS rounds the rare rows whose free items carry almost no
    popularity mass fall back to a uniform draw over their free items (logged)."""

    params = (Param("popularity_alpha", float, 1.0, "probability proportional to count^alpha", minimum=0),)
    has_proposal = True
    can_share = True

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        counts = torch.bincount(dataset.inter_feat[config["ITEM_ID_FIELD"]], minlength=self.n_items + 1)
        weights = counts.double().pow(config["popularity_alpha"])
        weights[0] = 0.0  # padding
        if weights.sum() == 0:  # alpha > 0 and no counts cannot happen on a real split
            weights[1:] = 1.0
        self.probs = (weights / weights.sum()).float().to(self.device)

    def sample_shared(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """K ids with probability count^alpha, with replacement: Q = that probability."""
        negatives = torch.multinomial(self.probs, self.neg_num, replacement=True)
        return negatives, torch.log(self.probs[negatives])

    def sample_with_log_q(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """Q(j) = p_j / (1 - the row's excluded mass): the redraws sample p conditioned on
        the row's free ids (a row that falls back to uniform is rare and not corrected for)."""
        negatives = self.sample(batch)
        free_mass = (1 - self.exclusion.excluded_mass(batch, self.probs)).clamp(min=1e-12)
        return negatives, torch.log(self.probs[negatives]) - torch.log(free_mass).unsqueeze(1)

    def sample(self, batch: EncodedBatch) -> Tensor:
        rows, k = batch.size, self.neg_num
        draws = torch.multinomial(self.probs, rows * k, replacement=True).view(rows, k)
        bad = self.exclusion.contains(batch, draws)
        for _ in range(MAX_REDRAWS):
            n_bad = int(bad.sum())
            if n_bad == 0:
                return draws
            draws[bad] = torch.multinomial(self.probs, n_bad, replacement=True)
            bad = self.exclusion.contains(batch, draws)
        getLogger().debug("popularity sampler: %d rows fell back to uniform", int(bad.any(dim=1).sum()))
        return torch.where(bad, self.exclusion.draw(batch, k), draws)
