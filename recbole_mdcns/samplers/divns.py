"""DivNS: diverse negatives from a per-user cache of runner-ups, chosen by a k-DPP.

Per batch: of m scored candidates the top-1 is the hard negative; the next r join the
user's cache; from the second epoch the negative is the synthetic embedding
lambda * E[hard] + (1 - lambda) * E[diverse], the diverse id popped from the user's
queue (cycled when it runs out; the pure hard negative while the queue is empty).
At the end of each epoch, for every user seen: the cache's distinct ids (the
`divns_cache_size` best scored), a cosine kernel penalised against the epoch's hard
negatives, and a k-DPP choice of k_u (the user's rows this epoch, capped by the cache
size and the kernel's rank) ids for the next epoch's queue.

Per-user state lives in flat tensors (user, item[, score]) appended per batch and
grouped by sorting at the epoch's end; users are batched for the k-DPP in buckets of
similar cache size. No Python loop runs over users or rows.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.dpp import greedy_map, sample_k_dpp
from recbole_mdcns.params import Param
from recbole_mdcns.samplers.base import CANDIDATE_PARAM, NegativeSampler, occurrence_index, ordered, register
from recbole_mdcns.scoring import EncodedBatch

MAX_GROUP_ELEMENTS = 1 << 22  # padded features per k-DPP call
BUFFERS = ("cache_users", "cache_items", "cache_scores", "hard_users", "hard_items", "used_users", "used_items")


def mean_pairwise_distance(users: Tensor, items: Tensor, unit_emb: Tensor, n_users: int) -> float:
    """Mean over users (with 2+ items) of the mean pairwise cosine distance of their items."""
    sums = torch.zeros(n_users, unit_emb.shape[1], device=unit_emb.device).index_add_(0, users, unit_emb[items])
    counts = torch.bincount(users, minlength=n_users).float()
    many = counts >= 2
    if not many.any():
        return math.nan
    similarity = ((sums[many] ** 2).sum(1) - counts[many]) / (counts[many] * (counts[many] - 1))
    return (1 - similarity).mean().item()


@register("DivNS")
class DivNSSampler(NegativeSampler):
    params = (
        replace(CANDIDATE_PARAM, default=10, doc="m, candidates scored per row; the top-1 is the hard negative"),
        Param("divns_runner_ups", int, 4, "r < m, next-best candidates added to the user's cache", minimum=1),
        Param("divns_lambda", float, 0.7, "in [0, 1], weight of the hard negative in the synthetic negative",
              minimum=0, maximum=1),
        Param("divns_penalty", float, 1.0, "a >= 0, penalty on cached items similar to the epoch's hard negatives",
              minimum=0),
        Param("divns_cache_size", int, 256, "at most this many distinct cached ids per user (the best scored)", minimum=1),
        Param("divns_dpp_mode", str, "sample", "`sample`: exact k-DPP sampling; `greedy`: greedy MAP",
              choices=("sample", "greedy")),
    )
    uses_candidate_pool = True

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        problems = ordered(
            config, "divns_runner_ups", "neg_candidate_num", strict=True, why=", the top-1 being the hard negative"
        )
        if config["neg_num"] != 1:
            problems.append(f"neg_num = {config['neg_num']}: DivNS makes one synthetic negative per row; set neg_num: 1")
        return problems

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.runner_ups: int = config["divns_runner_ups"]
        self.mix: float = config["divns_lambda"]
        self.penalty: float = config["divns_penalty"]
        self.cache_size: int = config["divns_cache_size"]
        self.greedy: bool = config["divns_dpp_mode"] == "greedy"
        self.n_users: int = dataset.user_num
        self.buffers: dict[str, list[Tensor]] = {name: [] for name in BUFFERS}
        long = dict(dtype=torch.long, device=self.device)
        self.queue_items = torch.zeros(0, **long)  # diverse ids, grouped by user
        self.queue_start = torch.zeros(self.n_users, **long)
        self.queue_len = torch.zeros(self.n_users, **long)
        self.cursor = torch.zeros(self.n_users, **long)
        self.item_table: Tensor | None = None  # the latest item embeddings, for the kernel

    # ----- per batch ----------------------------------------------------------------
    def negative_embeddings(self, batch: EncodedBatch) -> Tensor:
        candidates = self.candidate_pool(batch)
        scores, top = batch.score_detached(candidates).topk(self.runner_ups + 1, dim=1)
        ids = candidates.gather(1, top)
        hard, users = ids[:, 0], batch.users
        self._append(
            cache_users=users.repeat_interleave(self.runner_ups),
            cache_items=ids[:, 1:].reshape(-1),
            cache_scores=scores[:, 1:].reshape(-1),
            hard_users=users,
            hard_items=hard,
        )
        self.item_table = batch.item_table.detach()

        negative = batch.item_rows(hard)
        diverse = self._pop_queue(users)
        # a queued id came from an earlier row's pool: the row may exclude it (an item its user had since)
        has_diverse = (diverse > 0) & ~self.exclusion.contains(batch, diverse.unsqueeze(1)).squeeze(1)
        self.chose(batch, torch.stack([hard, diverse], 1), torch.stack([torch.ones_like(has_diverse), has_diverse], 1))
        if has_diverse.any():
            mixed = self.mix * negative + (1 - self.mix) * batch.item_rows(diverse)
            negative = torch.where(has_diverse.unsqueeze(1), mixed, negative)
            self._append(used_users=users[has_diverse], used_items=diverse[has_diverse])
        return negative.unsqueeze(1)

    def _append(self, **tensors: Tensor) -> None:
        for name, tensor in tensors.items():
            self.buffers[name].append(tensor)

    def _pop_queue(self, users: Tensor) -> Tensor:
        """The next diverse id of each row's user (0 for an empty queue), cycling."""
        length = self.queue_len[users]
        offset = (self.cursor[users] + occurrence_index(users)) % length.clamp(min=1)
        index = (self.queue_start[users] + offset).clamp(max=max(len(self.queue_items) - 1, 0))
        self.cursor.index_add_(0, users, torch.ones_like(users))
        if len(self.queue_items) == 0:
            return torch.zeros_like(users)
        return torch.where(length > 0, self.queue_items[index], 0)

    def _take(self, name: str) -> Tensor:
        parts = self.buffers[name]
        dtype = torch.float if name == "cache_scores" else torch.long
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=self.device)

    # ----- end of epoch ---------------------------------------------------------------
    def on_epoch_end(self, epoch: int) -> None:
        if self.item_table is None or not self.buffers["hard_users"]:
            return
        start = time.perf_counter()
        unit = F.normalize(self.item_table.float(), dim=1)
        hard_users, hard_items = self._take("hard_users"), self._take("hard_items")
        used_users, used_items = self._take("used_users"), self._take("used_items")
        users, items = self._cached_items()
        rows = torch.bincount(hard_users, minlength=self.n_users)

        # penalty against this epoch's hard negatives: q_j = 1 / (1 + a * mean_h cos(E_j, E_h))
        hard_mean = torch.zeros(self.n_users, unit.shape[1], device=self.device).index_add_(0, hard_users, unit[hard_items])
        hard_mean = hard_mean / rows.clamp(min=1).unsqueeze(1)
        mean_cos = (unit[items] * hard_mean[users]).sum(1)
        quality = 1 / (1 + self.penalty * mean_cos).clamp(min=1e-3)
        features = quality.unsqueeze(1) * unit[items]  # L = diag(q) S diag(q), S = X X^T

        self._fill_queues(users, items, features, rows)
        for name in BUFFERS:
            self.buffers[name].clear()
        self.record("dpp_seconds", torch.tensor(time.perf_counter() - start))
        self.record("hard_distance", torch.tensor(mean_pairwise_distance(hard_users, hard_items, unit, self.n_users)))
        if len(used_users):
            self.record("diverse_distance", torch.tensor(mean_pairwise_distance(used_users, used_items, unit, self.n_users)))

    def _cached_items(self) -> tuple[Tensor, Tensor]:
        """Each user's distinct cached ids, the `cache_size` best scored, sorted by user."""
        users, items, scores = self._take("cache_users"), self._take("cache_items"), self._take("cache_scores")
        order = torch.argsort(scores, descending=True, stable=True)
        users, items = users[order], items[order]
        key = users * (self.n_items + 1) + items
        order = torch.argsort(key, stable=True)  # best score first within each (user, item)
        first = torch.ones(len(key), dtype=torch.bool, device=self.device)
        first[1:] = key[order][1:] != key[order][:-1]
        keep = torch.sort(order[first]).values  # back to score order
        users, items = users[keep], items[keep]
        keep = occurrence_index(users) < self.cache_size
        users, items = users[keep], items[keep]
        order = torch.argsort(users, stable=True)
        return users[order], items[order]

    def _fill_queues(self, users: Tensor, items: Tensor, features: Tensor, rows: Tensor) -> None:
        """queue[u] = a k-DPP choice of k_u of u's cached ids, users batched by cache size."""
        cache_len = torch.bincount(users, minlength=self.n_users)
        position = occurrence_index(users)  # users are sorted: the index within the user's cache
        seen = torch.nonzero(cache_len > 0).squeeze(1)
        bucket = torch.ceil(torch.log2(cache_len[seen].float())).long()
        picked_users, picked_items = [], []
        for b in bucket.unique().tolist():
            bucket_users = seen[bucket == b]
            width = int(cache_len[bucket_users].max())
            chunk = max(1, MAX_GROUP_ELEMENTS // (width * max(width, features.shape[1])))
            for group in bucket_users.split(chunk):
                slot = torch.full((self.n_users,), -1, dtype=torch.long, device=self.device)
                slot[group] = torch.arange(len(group), device=self.device)
                member = slot[users] >= 0
                padded = torch.zeros(len(group), width, features.shape[1], device=self.device)
                padded[slot[users[member]], position[member]] = features[member]
                ids = torch.zeros(len(group), width, dtype=torch.long, device=self.device)
                ids[slot[users[member]], position[member]] = items[member]
                k = torch.minimum(rows[group], cache_len[group])
                chosen = (greedy_map if self.greedy else sample_k_dpp)(padded, k)
                valid = chosen >= 0
                picked_items.append(ids.gather(1, chosen.clamp(min=0))[valid])
                picked_users.append(group.unsqueeze(1).expand_as(chosen)[valid])
        picked_users, picked_items = torch.cat(picked_users), torch.cat(picked_items)
        order = torch.argsort(picked_users, stable=True)
        self.queue_items = picked_items[order]
        self.queue_len = torch.bincount(picked_users, minlength=self.n_users)
        self.queue_start = torch.cumsum(self.queue_len, 0) - self.queue_len
        self.cursor.zero_()

    # ----- checkpoint -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {name: self._take(name) for name in BUFFERS}
        state.update(queue_items=self.queue_items, queue_start=self.queue_start, queue_len=self.queue_len, cursor=self.cursor)
        return {name: tensor.clone() for name, tensor in state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in BUFFERS:
            self.buffers[name] = [state[name].to(self.device)] if len(state[name]) else []
        for name in ("queue_items", "queue_start", "queue_len", "cursor"):
            setattr(self, name, state[name].to(self.device))
