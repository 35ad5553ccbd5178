"""Ranking losses of one positive against K negatives per row."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

LOSSES = ("BPR", "BCE")


def ranking_loss(pos_score: Tensor, neg_score: Tensor, kind: str) -> Tensor:
    """Mean over rows of BPR or BCE, for positive scores [B] and negative scores [B, K].

    BPR: mean_k -log sigma(p - n_k).  BCE: -log sigma(p) - mean_k log(1 - sigma(n_k)).
    """
    if kind == "BPR":
        return -F.logsigmoid(pos_score.unsqueeze(1) - neg_score).mean()
    if kind == "BCE":
        return -(F.logsigmoid(pos_score) + F.logsigmoid(-neg_score).mean(dim=1)).mean()
    raise ValueError(f"neg_loss = {kind!r}: must be one of {', '.join(LOSSES)}")
