"""Ranking losses of one positive against K negatives per row, and RecBole's full CE.

Every loss takes positive scores [B] and negative scores [B, K] and returns the mean
over rows:

- BPR:  mean_k -log sigma(p - n_k)
- BCE:  -log sigma(p) - mean_k log(1 - sigma(n_k))
- SSM (sampled softmax): -log( e^(p/T) / (e^(p/T) + sum_k e^(n_k/T - log(K Q_k))) ), where
  the logQ correction subtracts the log of each negative's expected count among the K draws,
  K Q_k with Q_k its proposal probability, when the sampler knows it (Yi et al. 2019; Bengio
  and Senecal 2008): sum_k e^(n_k) / (K Q_k) then estimates the full softmax's sum over the
  row's other items, and K = N - 1 draws of each other item once give full CE exactly. The
  positive is given, not drawn, so it is not corrected. Mixed negatives (Yang et al. 2020):
  S ids drawn uniformly once per batch join every row's softmax beside its own K, each
  corrected by log(S / N), its expected count among the S draws: they add one term per
  row, their log mass (`mixed_log_mass`), computed once however many losses use it
- gBCE (gSASRec, Petrov & Macdonald 2023): -beta log sigma(p) - sum_k log(1 - sigma(n_k)),
  beta = 1 - t (1 - K / (N - 1)); t = 0 is BCE with its negatives summed (our BCE averages
  them: the two are equal at K = 1)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("BPR", "BCE", "SSM", "gBCE")


@dataclass(frozen=True)
class RankingLoss:
    """One of LOSSES with its settings: the SSM temperature and gBCE's beta."""

    kind: str
    temperature: float = 1.0
    gbce_beta: float = 1.0

    @classmethod
    def from_config(cls, config: Any, n_items: int) -> "RankingLoss":
        """From `neg_loss`, `neg_temperature` and `neg_gbce_t`, with K = `neg_num` of `n_items` items."""
        sampling_rate = config["neg_num"] / max(n_items - 1, 1)
        return cls(config["neg_loss"], config["neg_temperature"], gbce_beta(config["neg_gbce_t"], sampling_rate))

    def __call__(self, pos_score: Tensor, neg_score: Tensor, neg_log_q: Optional[Tensor] = None,
                 valid: Optional[Tensor] = None, mixed: Optional[Tensor] = None) -> Tensor:
        """The mean loss over rows; `neg_log_q` [B, K] (SSM only): log Q of each negative;
        `valid` [B, K] bool: the negatives that count (shared negatives a row excludes do not);
        `mixed` [B] (SSM only): the log mass of the mixed negatives in each row's softmax."""
        if mixed is not None and self.kind != "SSM":
            raise ValueError(f"mixed negatives join neg_loss SSM, not {self.kind!r}")
        if self.kind == "BPR":
            return bpr_loss(pos_score, neg_score, valid)
        if self.kind == "BCE":
            return bce_loss(pos_score, neg_score, valid)
        if self.kind == "SSM":
            return sampled_softmax_loss(pos_score, neg_score, self.temperature, neg_log_q, valid, mixed)
        if self.kind == "gBCE":
            return gbce_loss(pos_score, neg_score, self.gbce_beta, valid)
        raise ValueError(f"neg_loss = {self.kind!r}: must be one of {', '.join(LOSSES)}")


def gbce_beta(t: float, sampling_rate: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha) = 1 - t (1 - alpha), alpha = K / (N - 1)."""
    return 1.0 - t * (1.0 - sampling_rate)


def _row_mean(values: Tensor, valid: Optional[Tensor]) -> Tensor:
    """Each row's mean over its valid entries [B] (0 for a row without one)."""
    if valid is None:
        return values.mean(dim=1)
    return (values * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)


def bpr_loss(pos_score: Tensor, neg_score: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    return _row_mean(-F.logsigmoid(pos_score.unsqueeze(1) - neg_score), valid).mean()


def bce_loss(pos_score: Tensor, neg_score: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    return -(F.logsigmoid(pos_score) + _row_mean(F.logsigmoid(-neg_score), valid)).mean()


def gbce_loss(pos_score: Tensor, neg_score: Tensor, beta: float, valid: Optional[Tensor] = None) -> Tensor:
    negatives = F.logsigmoid(-neg_score)
    if valid is not None:
        negatives = negatives * valid
    return -(beta * F.logsigmoid(pos_score) + negatives.sum(dim=1)).mean()


def sampled_softmax_loss(pos_score: Tensor, neg_score: Tensor, temperature: float = 1.0,
                         neg_log_q: Optional[Tensor] = None, valid: Optional[Tensor] = None,
                         mixed: Optional[Tensor] = None) -> Tensor:
    neg_logits = neg_score / temperature
    if neg_log_q is not None:
        neg_logits = neg_logits - (neg_log_q + math.log(neg_score.size(1)))
    if valid is not None:
        neg_logits = neg_logits.masked_fill(~valid, -math.inf)
    logits = torch.cat([(pos_score / temperature).unsqueeze(1), neg_logits], dim=1)
    log_partition = torch.logsumexp(logits, dim=1)
    if mixed is not None:
        log_partition = torch.logaddexp(log_partition, mixed)
    return (log_partition - logits[:, 0]).mean()


def mixed_log_mass(score: Tensor, log_count: float, valid: Tensor, temperature: float = 1.0) -> Tensor:
    """log sum_s e^(score_s / T - log_count) over each row's valid shared negatives: [B].
    `score` [B, S]: their scores; `valid` [B, S]: which of them count in each row. A row
    without one gets the dtype's lowest value, finite, so that its gradient is 0, not NaN."""
    lowest = torch.finfo(score.dtype).min
    return torch.logsumexp((score / temperature - log_count).masked_fill(~valid, lowest), dim=1)


def full_softmax_loss(seq_emb: Tensor, item_table: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of each row's target [B] over every item id, padding included,
    as RecBole's CE: logits seq_emb [B, d] @ item_table [N+1, d]^T."""
    return F.cross_entropy(seq_emb @ item_table.T, targets)
