"""GNNO, graph-based negatives with a curriculum (Fan et al., SIGIR 2023), as the MDCNS
paper's port runs it.

Once, from the training split: the item-transition graph A (items within `gnno_window`
steps of each other in a user's training sequence, binary, undirected) and the
neighbourhood overlap J_ij = |N(i) & N(j)| / |N(i) | N(j)| (Jaccard, from A A^T), kept on
the model's device as sorted (row, column) keys of its entries, or as a dense matrix where
that is smaller. Per batch: g graph
negatives drawn with weights exp(J(t, j)) among the items whose overlap with the target t
is at most the epoch's hardness h_e = min(h_0 + pace * epoch, h_max) (items with no
overlap count, with weight 1; the excluded ids never), joined to C - g uniform
candidates; the K negatives are drawn among the top-M of those C by score (DNS). The
graph draw is exact rejection sampling from the row's uniform pool (every weight is at
most exp(h_e)), so a batch costs O(B g) lookups whatever the catalogue's size, where the
port densifies [B, N] weights; only rows with few eligible ids (dense data, early
epochs) fall back to their dense weights. The graph is rebuilt at resume.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.history import sequence_fields
from recbole_mdcns.params import ConfigError, Param
from recbole_mdcns.samplers.base import NegativeSampler, ordered, register
from recbole_mdcns.samplers.exclusion import RowExclusions
from recbole_mdcns.samplers.dns import top_m_negatives, top_m_problems
from recbole_mdcns.scoring import EncodedBatch

OVERSAMPLE = 2  # uniform proposals per graph negative and round
REJECTION_ROUNDS = 3  # then the rows still short draw from their dense weights
MIN_ACCEPTANCE = 0.5  # a target whose proposals are accepted less often goes to its dense weights at once
DENSE_PIECE_ENTRIES = 2**24  # [rows, N + 2] weights per piece of those rows
TOLERANCE = 1e-9  # h_e accumulates in floating point; J is float32, so h_e + TOLERANCE is rounded to float32 in
# the comparisons, and an overlap equal to h_e in float32 counts as eligible
BYTES_PER_OVERLAP = 12  # an int64 key and a float32 value


def eligible_weight(overlap: Tensor, threshold: float, shift: float = 0.0) -> Tensor:
    """exp(J - shift) where the overlap J is at most the threshold h_e (the pair may be
    drawn), else 0."""
    return torch.where(overlap <= threshold + TOLERANCE, (overlap - shift).exp(), 0.0)


def transition_pairs(config: Any, dataset: Dataset, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (x_j, x_j+k), k <= window, of every user's training sequence: each
    training row's target with the last `window` items of its prefix."""
    _, item_field, seq_field, length_field = sequence_fields(config)
    inter = dataset.inter_feat
    seq, length = inter[seq_field], inter[length_field]
    back = length.unsqueeze(1) - torch.arange(1, window + 1)  # prefix positions 1..window steps back
    earlier = seq.gather(1, back.clamp(min=0)).masked_fill(back < 0, 0)
    target = inter[item_field].unsqueeze(1).expand_as(earlier)
    keep = earlier > 0
    return target[keep].numpy(), earlier[keep].numpy()


def adjacency(sources: np.ndarray, targets: np.ndarray, n_ids: int) -> sp.csr_matrix:
    """The binary undirected graph [n_ids, n_ids] with edges (sources, targets)."""
    rows, cols = np.concatenate([sources, targets]), np.concatenate([targets, sources])
    graph = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_ids, n_ids))
    graph.data[:] = 1.0  # duplicate edges summed: binary again
    return graph


def overlap_bytes_bound(graph: sp.csr_matrix) -> int:
    """An upper bound on the device bytes of the overlap: each item with d neighbours relates
    at most d^2 pairs (12 bytes an entry), and a dense matrix takes 4 bytes a pair."""
    degree = np.diff(graph.indptr).astype(np.float64)
    return int(min((degree ** 2).sum() * BYTES_PER_OVERLAP, float(graph.shape[0]) ** 2 * 4))


def jaccard_overlap(graph: sp.csr_matrix) -> sp.csr_matrix:
    """J of a binary undirected graph: common neighbours over the union of neighbours, 0 where undefined."""
    common = (graph @ graph.T).tocoo()
    degree = common.diagonal()
    union = degree[common.row] + degree[common.col] - common.data
    return sp.csr_matrix((common.data / union, (common.row, common.col)), shape=graph.shape)


class SparseOverlap:
    """The stored entries of a sparse [n, n] overlap on a device: one sorted int64 key per
    entry (row * n + column) and its float32 value."""

    def __init__(self, matrix: sp.csr_matrix, device: Any):
        coo = matrix.tocoo()
        self.n = matrix.shape[0]
        keys = coo.row.astype(np.int64) * self.n + coo.col
        order = np.argsort(keys, kind="stable")
        self.keys = torch.as_tensor(keys[order], device=device)
        self.values = torch.as_tensor(coo.data[order], dtype=torch.float, device=device)
        self.nnz = len(self.keys)

    def __call__(self, rows: Tensor, cols: Tensor) -> Tensor:
        """The overlaps at (rows [B, 1], cols [B, n]): [B, n], 0 where nothing is stored."""
        keys = rows * self.n + cols
        if not self.nnz:
            return torch.zeros(keys.shape, device=keys.device)
        at = torch.searchsorted(self.keys, keys).clamp(max=self.nnz - 1)
        return torch.where(self.keys[at] == keys, self.values[at], 0.0)

    def dense_rows(self, rows: Tensor) -> Tensor:
        """The rows `rows` [r] in full: [r, n]."""
        start = torch.searchsorted(self.keys, rows * self.n)
        count = torch.searchsorted(self.keys, (rows + 1) * self.n) - start
        where = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), count)
        offset = torch.arange(len(where), device=rows.device) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        index = start[where] + offset
        dense = torch.zeros(len(rows), self.n, device=rows.device)
        dense[where, self.keys[index] - rows[where] * self.n] = self.values[index]
        return dense

    def weight_sums(self, threshold: float) -> Tensor:
        """Each row's sum over columns 1..n-1 of exp(J) 1[J <= threshold] (exp(0) where nothing is stored): [n]."""
        extra = eligible_weight(self.values, threshold) - 1
        return (self.n - 1) + torch.zeros(self.n, device=self.values.device).index_add_(0, self.keys // self.n, extra)


class DenseOverlap:
    """The overlap as a dense [n, n] float32 matrix on a device: the smaller form where a
    third or more of the pairs overlap (dense data such as ml-100k)."""

    def __init__(self, matrix: sp.csr_matrix, device: Any):
        self.matrix = torch.as_tensor(matrix.toarray(), dtype=torch.float, device=device)
        self.n = matrix.shape[0]
        self.nnz = matrix.nnz

    def __call__(self, rows: Tensor, cols: Tensor) -> Tensor:
        return self.matrix[rows, cols]

    def dense_rows(self, rows: Tensor) -> Tensor:
        return self.matrix.index_select(0, rows)

    def weight_sums(self, threshold: float) -> Tensor:
        return eligible_weight(self.matrix, threshold)[:, 1:].sum(1)


def overlap_on_device(matrix: sp.csr_matrix, device: Any) -> SparseOverlap | DenseOverlap:
    """The overlap in its smaller form: dense (4 bytes a pair) or sparse (12 bytes an entry)."""
    dense = matrix.shape[0] ** 2 * 4 <= matrix.nnz * BYTES_PER_OVERLAP
    return (DenseOverlap if dense else SparseOverlap)(matrix, device)


@register("GNNO")
class GNNOSampler(NegativeSampler):
    params = (
        Param("gnno_graph_negatives", int, 10, "g <= C, of the C candidates drawn from the overlap graph (the rest "
              "uniform)", minimum=0),
        Param("gnno_top_m", int, 1, "M, the K negatives are drawn among the top-M of the C candidates (DNS); "
              "K <= M <= C", minimum=1),
        Param("gnno_hardness", float, 0.05, "h_0, the largest overlap J(t, j) a graph negative may have at epoch 0",
              minimum=0),
        Param("gnno_pace", float, 0.01, "the hardness added at the end of each epoch", minimum=0),
        Param("gnno_max_hardness", float, 0.4, "h_max, the hardness stops rising here", minimum=0),
        Param("gnno_graph_mb", float, 4096.0, "the most MB the overlap graph may take on the device; a dataset "
              "whose graph may exceed it is refused at start-up (12 bytes an entry, or 4 a pair where dense is smaller)", minimum=0, minimum_exclusive=True),
        Param("gnno_window", int, 3, "items at most this many steps apart in a training sequence are neighbours "
              "in the graph; <= MAX_ITEM_LIST_LENGTH", minimum=1),
    )
    uses_candidate_pool = True

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        return (ordered(config, "gnno_graph_negatives", "neg_candidate_num")
                + top_m_problems(config, "gnno_top_m", "GNNO")
                + ordered(config, "gnno_window", "MAX_ITEM_LIST_LENGTH", why=", the prefix a row holds")
                + ordered(config, "gnno_hardness", "gnno_max_hardness"))

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.graph_num: int = config["gnno_graph_negatives"]
        self.top_m: int = config["gnno_top_m"]
        self.hardness: float = config["gnno_hardness"]
        self.pace: float = config["gnno_pace"]
        self.max_hardness: float = config["gnno_max_hardness"]
        self.epoch = 0
        graph = adjacency(*transition_pairs(config, dataset, config["gnno_window"]), dataset.item_num)
        bound_mb = overlap_bytes_bound(graph) / 2**20
        if bound_mb > config["gnno_graph_mb"]:
            raise ConfigError([f"gnno_graph_mb = {config['gnno_graph_mb']}: GNNO's overlap graph of dataset "
                               f"{config['dataset']!r} may take up to {bound_mb:,.3g} MB (its items with many "
                               "neighbours relate many pairs); raise gnno_graph_mb if the device holds it, or "
                               "lower gnno_window"])
        self.overlap = overlap_on_device(jaccard_overlap(graph), self.device)
        self._acceptance: tuple[int, Tensor] = (-1, torch.zeros(0))  # (epoch, acceptance())

    def threshold(self) -> float:
        """h_e, the largest overlap a graph negative may have this epoch."""
        return min(self.hardness + self.pace * self.epoch, self.max_hardness)

    @torch.no_grad()
    def sample(self, batch: EncodedBatch) -> Tensor:
        uniform = self.candidate_num - self.graph_num
        parts = ([self.candidate_pool(batch, uniform)] if uniform else []) + (
            [self.graph_draws(batch)] if self.graph_num else [])
        return top_m_negatives(batch, torch.cat(parts, 1), self.top_m, self.neg_num)

    def graph_draws(self, batch: EncodedBatch) -> Tensor:
        """g ids per row [B, g], drawn with replacement with weights w = exp(J(t, j)) 1[J(t, j) <= h_e]
        over the ids the row does not exclude. Exact, by rejection: uniform proposals over
        those ids, each accepted with probability w / exp(h_e) <= 1. Rows whose target accepts
        few proposals (dense data, early epochs), and rows still short after REJECTION_ROUNDS,
        draw from their dense weights over the catalogue."""
        threshold = self.threshold()
        need = self.graph_num
        drawn = torch.zeros(batch.size, need, dtype=torch.long, device=self.device)
        short = self.acceptance()[batch.pos_items] < MIN_ACCEPTANCE
        if not short.all():
            filled = torch.where(short, need, 0)  # the dense rows take no part
            targets = batch.pos_items.unsqueeze(1)
            for _ in range(REJECTION_ROUNDS):
                proposals = self.exclusion.draw(batch, need * OVERSAMPLE)
                overlap = self.overlap(targets, proposals)
                weight = eligible_weight(overlap, threshold, shift=threshold)
                accepted = torch.rand_like(weight) < weight
                # each row's accepted proposals, in order, after the ones it already has
                slot = filled.unsqueeze(1) + torch.cumsum(accepted, 1) - 1
                keep = accepted & (slot < need)
                drawn[torch.nonzero(keep, as_tuple=True)[0], slot[keep]] = proposals[keep]
                filled = filled + keep.sum(1)
                if bool((filled == need).all()):
                    break
            short |= filled < need  # a short row's accepted draws are dropped: a fresh draw of all g stays exact
        self.record("dense_rows", short.float().mean())
        if short.any():
            piece_rows = max(1, DENSE_PIECE_ENTRIES // (self.n_items + 2))
            for rows, exclusions in self.exclusion.pieces(batch, piece_rows):
                chosen = torch.nonzero(short[rows]).squeeze(1)
                if len(chosen):
                    drawn[rows.start + chosen] = self._dense_draws(batch.pos_items[rows][chosen], exclusions, chosen, threshold)
        return drawn

    def acceptance(self) -> Tensor:
        """Each target's share of uniform proposals the rejection accepts this epoch, its
        exclusions aside: sum_j w(t, j) / (N exp(h_e)) [N + 1] (cached per epoch)."""
        if self._acceptance[0] != self.epoch:
            threshold = self.threshold()
            self._acceptance = (self.epoch, self.overlap.weight_sums(threshold) / (self.n_items * math.exp(threshold)))
        return self._acceptance[1]

    def _dense_draws(self, targets: Tensor, exclusions: RowExclusions, chosen: Tensor, threshold: float) -> Tensor:
        """g ids per row [r, g] from each row's weights over the whole catalogue, its
        excluded ids (`exclusions` rows `chosen`) at 0; uniform ids where none is eligible."""
        overlap = self.overlap.dense_rows(targets)  # [r, N + 1]
        weights = torch.zeros(len(targets), self.n_items + 2, device=self.device)  # and the pad N+1
        weights[:, :-1] = eligible_weight(overlap, threshold)
        weights[:, 0] = 0
        weights.scatter_(1, targets.unsqueeze(1), 0)
        weights.scatter_(1, exclusions.ids()[chosen], 0)  # the pad N+1 stands for "not excluded"
        weights = weights[:, : self.n_items + 1]
        none = weights.sum(1) == 0
        drawn = torch.multinomial(weights.masked_fill(none.unsqueeze(1), 1), self.graph_num, replacement=True)
        uniform = exclusions.draw(self.graph_num)[chosen]
        return torch.where(none.unsqueeze(1), uniform, drawn)

    def on_epoch_end(self, epoch: int) -> None:
        self.epoch = epoch + 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "graph": [self.overlap.n, self.overlap.nnz]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["graph"]) != [self.overlap.n, self.overlap.nnz]:
            raise ValueError(f"the checkpoint's GNNO graph has (ids, overlaps) {tuple(state['graph'])}, this run's "
                             f"{(self.overlap.n, self.overlap.nnz)}: resume it with the data that wrote it")
        self.epoch = state["epoch"]
