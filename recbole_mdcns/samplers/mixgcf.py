"""MixGCF's positive mixing (Huang et al., KDD 2021) for sequential models, as the MDCNS
paper's baseline port: a synthetic hard negative alpha E[pos] + (1 - alpha) E[j].

The candidate j is DNS's choice (one of the top-M of C scored candidates; M = 1 is MixGCF,
M > 1 MixGCF+): with alpha shared by a row's candidates, the mixed score
alpha s+ + (1 - alpha) s(j) rises with s(j), so ranking the mixes ranks the raw scores. Only
the K chosen rows are mixed, with gradient into h, E[pos] and E[j].
"""
from __future__ import annotations

import torch
from torch import Tensor

from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import register
from recbole_mdcns.samplers.dns import DNSSampler
from recbole_mdcns.scoring import EncodedBatch


@register("MixGCF")
class MixGCFSampler(DNSSampler):
    params = (Param("mixgcf_top_m", int, 1, "M, the K candidates to mix are drawn among the top-M of C; "
                    "1 is MixGCF, above 1 MixGCF+; K <= M <= C", minimum=1),)
    top_m_key = "mixgcf_top_m"

    def select(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """The candidates to mix, ids [B, K] (DNS's choice), and each one's alpha ~ U[0, 1) [B, K]."""
        chosen = self.sample(batch)
        return chosen, torch.rand(chosen.shape, device=chosen.device)

    def negative_embeddings(self, batch: EncodedBatch) -> Tensor:
        chosen, alpha = self.select(batch)
        self.chose(batch, chosen)
        alpha = alpha.unsqueeze(-1)
        self.record("alpha", alpha.mean())
        return alpha * batch.item_rows(batch.pos_items).unsqueeze(1) + (1 - alpha) * batch.item_rows(chosen)
