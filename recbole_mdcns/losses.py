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


def full_softmax_loss(seq_emb: Tensor, item_table: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of each row's target [B] over every item id, padding included,
    as RecBole's CE: logits seq_emb [B, d] @ item_table [N+1, d]^T."""
    return F.cross_entropy(seq_emb @ item_table.T, targets)
