"""SRNS, simplify and robustify negative sampling (Ding et al., NeurIPS 2020), with the
original's item-id memory (the MDCNS port keeps slot positions into a pool redrawn every
epoch, which makes its memory carry nothing).

Each training row keeps S1 candidate ids and, per id, its last W values of
q = sigmoid(s - s+) from earlier visits. The negatives are the memory's K ids of highest
q + alpha_t sd(history): hard now and varying over time (false negatives score high
stably). After the choice the memory keeps the best S1 of itself and S2 fresh uniform ids
by current score (or a softmax(s / tau) sample without replacement), and every kept id
appends its current q. A row is visited once per epoch, so W visits are W epochs (under
`neg_state_key: user` a user is visited once per batch holding one of its rows). Where a
row's memory and fresh ids hold fewer than S1 distinct ids (a user who had nearly every
item) the memory keeps repeats.
"""
from __future__ import annotations

from typing import Any

import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import NegativeSampler, ordered, register
from recbole_mdcns.samplers.rowstate import STATE_KEY_PARAM, RowState, check_state_key
from recbole_mdcns.scoring import EncodedBatch


def history_sd(history: Tensor, count: Tensor, min_count: int) -> Tensor:
    """Population sd of the last `count` [B, S] entries of each history [B, S, W] (oldest
    first); 0 where fewer than `min_count` are held."""
    width = history.shape[-1]
    valid = torch.arange(width, device=history.device) >= (width - count.long()).unsqueeze(-1)
    n = valid.sum(-1).clamp(min=1)
    mean = (history * valid).sum(-1) / n
    var = (((history - mean.unsqueeze(-1)) * valid) ** 2).sum(-1) / n
    return torch.where(count >= min_count, var.sqrt(), 0.0)


def keep_best(ids: Tensor, keys: Tensor, num: int, tau: float) -> Tensor:
    """Positions [B, num] of the ids [B, n] to keep, each distinct id at most once (its first
    copy): the `num` largest `keys`, or with tau > 0 a sample without replacement
    proportional to softmax(keys / tau) (Gumbel top-k)."""
    if tau > 0:
        gumbel = -torch.log(-torch.log(torch.rand_like(keys).clamp(min=1e-20)))
        keys = keys / tau + gumbel
    order = torch.sort(ids, dim=1, stable=True)
    repeat = torch.zeros_like(ids, dtype=torch.bool)
    repeat[:, 1:] = order.values[:, 1:] == order.values[:, :-1]
    keys = keys.scatter(1, order.indices, keys.gather(1, order.indices).masked_fill(repeat, -torch.inf))
    return keys.topk(num, dim=1).indices


@register("SRNS")
class SRNSSampler(NegativeSampler):
    params = (
        Param("srns_memory", int, 20, "S1, candidate ids kept per row; K <= S1", minimum=1),
        Param("srns_new", int, 20, "S2, fresh uniform ids offered to the memory at each visit", minimum=1),
        Param("srns_history", int, 5, "W, the last visits whose q each memory id keeps", minimum=1, maximum=127),
        Param("srns_alpha", float, 5.0, "alpha, the weight of the history's sd in q + alpha_t sd", minimum=0),
        Param("srns_warmup", int, 1, "T_w, epochs over which alpha_t = alpha min(1, epoch / T_w) rises to alpha",
              minimum=0),
        Param("srns_min_history", int, 3, "the sd counts only for ids with at least this many past values",
              minimum=1),
        Param("srns_tau", float, 0.0, "tau, the memory update: 0 keeps the top-S1 by score (the MDCNS port); "
              "above 0 samples S1 without replacement from softmax(score / tau) (the original, 10)", minimum=0),
        Param("srns_score", str, "q", "`q`: sigmoid(s - s+), the probability that the id outranks the target (the "
              "original); `raw`: the score s (the MDCNS port)", choices=("q", "raw")),
        STATE_KEY_PARAM,
    )

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        return (ordered(config, "neg_num", "srns_memory", why="; SRNS picks the K among the memory's ids")
                + ordered(config, "srns_min_history", "srns_history", why="; the history holds W values")
                + check_state_key(config))

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.memory_size: int = config["srns_memory"]
        self.new_size: int = config["srns_new"]
        self.alpha: float = config["srns_alpha"]
        self.warmup: int = config["srns_warmup"]
        self.min_history: int = config["srns_min_history"]
        self.tau: float = config["srns_tau"]
        self.raw: bool = config["srns_score"] == "raw"
        self.epoch = 0
        s1, w = self.memory_size, config["srns_history"]
        self.state = RowState(config, dataset, {"ids": ((s1,), torch.int32), "history": ((s1, w), torch.float),
                                                "count": ((s1,), torch.int8), "filled": ((), torch.bool)})

    def alpha_t(self) -> float:
        return self.alpha * (min(1.0, self.epoch / self.warmup) if self.warmup else 1.0)

    @torch.no_grad()
    def sample(self, batch: EncodedBatch) -> Tensor:
        keys = self.state.keys(batch)
        pool = self.exclusion.draw(batch, self.memory_size + self.new_size)
        filled = self.state["filled"][keys].unsqueeze(1)
        memory = torch.where(filled, self.state["ids"][keys].long(), pool[:, : self.memory_size])
        history = self.state["history"][keys]
        count = torch.where(filled, self.state["count"][keys], 0)
        union = torch.cat([memory, pool[:, self.memory_size:]], 1)  # [B, S1 + S2]
        scores = batch.score_detached(union).float()  # full precision under autocast (Gumbel keys, history)
        current = scores if self.raw else torch.sigmoid(scores - batch.pos_score().unsqueeze(1))

        sd = history_sd(history, count, self.min_history)
        negatives = memory.gather(1, (current[:, : self.memory_size] + self.alpha_t() * sd).topk(self.neg_num, dim=1).indices)
        self.record("memory_sd", sd.mean())

        kept = keep_best(union, scores, self.memory_size, self.tau)
        union_history = torch.cat([history, history.new_zeros(len(keys), self.new_size, history.shape[-1])], 1)
        union_count = torch.cat([count, count.new_zeros(len(keys), self.new_size)], 1)
        kept_history = union_history.gather(1, kept.unsqueeze(-1).expand(-1, -1, history.shape[-1]))
        kept_history = torch.cat([kept_history[..., 1:], current.gather(1, kept).unsqueeze(-1)], -1)
        kept_count = (union_count.gather(1, kept).long() + 1).clamp(max=history.shape[-1])
        self.state.write(keys, {"ids": union.gather(1, kept), "history": kept_history, "count": kept_count,
                                "filled": torch.ones_like(keys, dtype=torch.bool)})
        return negatives

    def on_epoch_end(self, epoch: int) -> None:
        self.state.sync()
        self.epoch = epoch + 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **self.state.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.state.load_state_dict(state)
