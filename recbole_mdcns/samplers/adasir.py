"""AdaSIR, adaptive sampling with importance resampling (Chen et al., WWW 2022), as the
MDCNS paper's port runs it, without the port's two flaws (its first epoch draws the
padding id, its proposals include the target and the history).

Each training row keeps a pool of P ids. A visit draws its K negatives uniformly from the
pool (filled first at the row's first visit), then refreshes it: S uniform proposals,
weights w = softmax(s - log q) over them (the model's softmax, self-normalised), P of
them resampled by w with replacement, and the new pool drawn uniformly from the old
pool and the resample together (so a past hard negative stays with some probability).
The refresh scores with this batch's encoding, before the optimiser step. A row's first
visit draws from a freshly filled pool, which that visit's refresh then merges as usual.
"""
from __future__ import annotations

from typing import Any

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import NegativeSampler, register
from recbole_mdcns.samplers.rowstate import STATE_KEY_PARAM, RowState, check_state_key
from recbole_mdcns.scoring import EncodedBatch


@register("AdaSIR")
class AdaSIRSampler(NegativeSampler):
    params = (
        Param("adasir_pool", int, 10, "P, ids in each row's pool (the MDCNS run; the original's 50)", minimum=1),
        Param("adasir_proposals", int, 200, "S, uniform proposals resampled at each visit", minimum=1),
        STATE_KEY_PARAM,
    )

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        return check_state_key(config)

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.pool_size: int = config["adasir_pool"]
        self.proposals: int = config["adasir_proposals"]
        self.state = RowState(config, dataset, {"pool": ((self.pool_size,), torch.long),
                                                "weight": ((self.pool_size,), torch.float),
                                                "filled": ((), torch.bool)})

    @torch.no_grad()
    def sample(self, batch: EncodedBatch) -> Tensor:
        keys = self.state.keys(batch)
        filled = self.state["filled"][keys]
        pool, weight = self.state["pool"][keys], self.state["weight"][keys]
        if not filled.all():  # a row's first visit draws from a fresh pool
            fresh_pool, fresh_weight = self.resample(batch)
            pool = torch.where(filled.unsqueeze(1), pool, fresh_pool)
            weight = torch.where(filled.unsqueeze(1), weight, fresh_weight)
        slots = torch.randint(self.pool_size, (batch.size, self.neg_num), device=self.device)
        negatives = pool.gather(1, slots)
        new_pool, new_weight = self.resample(batch)
        merge = torch.randint(2 * self.pool_size, (batch.size, self.pool_size), device=self.device)
        self.state.write(keys, {"pool": torch.cat([pool, new_pool], 1).gather(1, merge),
                                "weight": torch.cat([weight, new_weight], 1).gather(1, merge),
                                "filled": torch.ones_like(filled)})
        self.record("pool_weight", weight.mean())
        return negatives

    def resample(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """A fresh pool per row [B, P] resampled from S uniform proposals by w = softmax(s)
        (log q is a constant for uniform proposals), and each id's weight [B, P]."""
        proposals = self.exclusion.draw(batch, self.proposals)
        weights = torch.softmax(batch.score_detached(proposals).float(), dim=1)
        picked = torch.multinomial(weights, self.pool_size, replacement=True)
        return proposals.gather(1, picked), weights.gather(1, picked)

    def on_epoch_end(self, epoch: int) -> None:
        self.state.sync()

    def state_dict(self) -> dict[str, Any]:
        return self.state.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.load_state_dict(state)
