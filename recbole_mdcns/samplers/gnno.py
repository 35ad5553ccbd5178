"""GNNO, graph-based negatives with a curriculum (Fan et al., SIGIR 2023), as the MDCNS
paper's port runs it.

Once, from the training split: the item-transition graph A (items within `gnno_window`
steps of each other in a user's training sequence, binary, undirected) and the
neighbourhood overlap J_ij = |N(i) & N(j)| / |N(i) | N(j)| (Jaccard, from A A^T), kept as
a sparse CSR matrix on the model's device. Per batch: g graph negatives drawn with
weights exp(J(t, j)) among the items whose overlap with the target t is at most the
epoch's hardness h_e = min(h_0 + pace * epoch, h_max) (items with no overlap count, with
weight 1; the excluded ids never), joined to C - g uniform candidates; the K negatives
are drawn among the top-M of those C by score (DNS). The graph is rebuilt at resume.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.dataset import Dataset
from torch import Tensor

from recbole_mdcns.params import ConfigError, Param
from recbole_mdcns.samplers.base import NegativeSampler, ordered, register
from recbole_mdcns.samplers.dns import draw_top_m
from recbole_mdcns.scoring import EncodedBatch

DENSE_PIECE_ENTRIES = 2**24  # [rows, N + 2] weights per piece of a batch's graph draws
TOLERANCE = 1e-9  # h_e accumulates in floating point
BYTES_PER_OVERLAP = 8  # an int32 column and a float32 value


def transition_pairs(config: Any, dataset: Dataset, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (x_j, x_j+k), k <= window, of every user's training sequence: each
    training row's target with the last `window` items of its prefix."""
    inter = dataset.inter_feat
    item_field = config["ITEM_ID_FIELD"]
    seq, length = inter[item_field + config["LIST_SUFFIX"]], inter[config["ITEM_LIST_LENGTH_FIELD"]]
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


def overlap_entries_bound(graph: sp.csr_matrix) -> int:
    """An upper bound on the stored entries of the overlap: each item with d neighbours
    relates at most d^2 pairs, and there are at most n_ids^2."""
    degree = np.diff(graph.indptr).astype(np.float64)
    return int(min((degree ** 2).sum(), float(graph.shape[0]) ** 2))


def jaccard_overlap(graph: sp.csr_matrix) -> sp.csr_matrix:
    """J of a binary undirected graph: common neighbours over the union of neighbours, 0 where undefined."""
    common = (graph @ graph.T).tocoo()
    degree = common.diagonal()
    union = degree[common.row] + degree[common.col] - common.data
    return sp.csr_matrix((common.data / union, (common.row, common.col)), shape=graph.shape)


class SparseRows:
    """A CSR matrix on a device whose rows can be read densely for a batch of row ids."""

    def __init__(self, matrix: sp.csr_matrix, device: Any):
        matrix.sort_indices()
        self.shape = matrix.shape
        self.crow = torch.as_tensor(matrix.indptr, dtype=torch.long, device=device)
        self.col = torch.as_tensor(matrix.indices, dtype=torch.int32, device=device)
        self.val = torch.as_tensor(matrix.data, dtype=torch.float, device=device)

    @property
    def nnz(self) -> int:
        return len(self.val)

    def entries(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The stored entries of the rows `rows` [b]: their row position in `rows`, column and value [nnz of them]."""
        start = self.crow[rows]
        count = self.crow[rows + 1] - start
        where = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), count)
        offset = torch.arange(len(where), device=rows.device) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        index = start[where] + offset
        return where, self.col[index].long(), self.val[index]


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
              "whose graph may exceed it is refused at start-up (8 bytes an entry)", minimum=0, minimum_exclusive=True),
        Param("gnno_window", int, 3, "items at most this many steps apart in a training sequence are neighbours "
              "in the graph; <= MAX_ITEM_LIST_LENGTH", minimum=1),
    )
    uses_candidate_pool = True

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        return (ordered(config, "gnno_graph_negatives", "neg_candidate_num")
                + ordered(config, "gnno_top_m", "neg_candidate_num")
                + ordered(config, "neg_num", "gnno_top_m", why="; GNNO draws the K negatives among the top-M")
                + ordered(config, "gnno_window", "MAX_ITEM_LIST_LENGTH", why=", the prefix a row holds"))

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.graph_num: int = config["gnno_graph_negatives"]
        self.top_m: int = config["gnno_top_m"]
        self.hardness: float = config["gnno_hardness"]
        self.pace: float = config["gnno_pace"]
        self.max_hardness: float = config["gnno_max_hardness"]
        self.epoch = 0
        graph = adjacency(*transition_pairs(config, dataset, config["gnno_window"]), dataset.item_num)
        bound_mb = overlap_entries_bound(graph) * BYTES_PER_OVERLAP / 2**20
        if bound_mb > config["gnno_graph_mb"]:
            raise ConfigError([f"gnno_graph_mb = {config['gnno_graph_mb']}: GNNO's overlap graph of dataset "
                               f"{config['dataset']!r} may take up to {bound_mb:,.3g} MB (its items with many "
                               "neighbours relate many pairs); raise gnno_graph_mb if the device holds it, or "
                               "lower gnno_window"])
        self.overlap = SparseRows(jaccard_overlap(graph), self.device)

    def threshold(self) -> float:
        """h_e, the largest overlap a graph negative may have this epoch."""
        return min(self.hardness + self.pace * self.epoch, self.max_hardness)

    @torch.no_grad()
    def sample(self, batch: EncodedBatch) -> Tensor:
        uniform = self.candidate_num - self.graph_num
        parts = ([self.candidate_pool(batch, uniform)] if uniform else []) + (
            [self.graph_draws(batch)] if self.graph_num else [])
        candidates = torch.cat(parts, 1)
        scores = batch.score_detached(candidates)
        return candidates.gather(1, draw_top_m(scores, self.top_m, self.neg_num))

    def graph_draws(self, batch: EncodedBatch) -> Tensor:
        """g ids per row [B, g], drawn with replacement with weights exp(J(t, j)) 1[J(t, j) <= h_e]
        over the ids the row does not exclude (uniform where none is eligible)."""
        threshold = self.threshold() + TOLERANCE
        piece_rows = max(1, DENSE_PIECE_ENTRIES // (self.n_items + 2))
        draws = []
        for rows, exclusions in self.exclusion.pieces(batch, piece_rows):
            targets = batch.pos_items[rows]
            weights = torch.ones(len(targets), self.n_items + 2, device=self.device)  # ids 0..N and the pad N+1
            where, col, val = self.overlap.entries(targets)
            weights[where, col] = torch.where(val <= threshold, val.exp(), 0.0)
            weights[:, 0] = 0
            weights.scatter_(1, targets.unsqueeze(1), 0)
            weights.scatter_(1, exclusions.ids(), 0)  # the pad N+1 stands for "not excluded"
            weights = weights[:, : self.n_items + 1]
            none = weights.sum(1) == 0
            weights[none, 1:] = 1  # replaced below
            drawn = torch.multinomial(weights, self.graph_num, replacement=True)
            if none.any():
                drawn[none] = exclusions.draw(self.graph_num)[none]
            draws.append(drawn)
        return torch.cat(draws)

    def on_epoch_end(self, epoch: int) -> None:
        self.epoch = epoch + 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "graph_nnz": self.overlap.nnz}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["graph_nnz"] != self.overlap.nnz:
            raise ValueError(f"the checkpoint's GNNO graph has {state['graph_nnz']} overlaps, this run's "
                             f"{self.overlap.nnz}: resume it with the data that wrote it")
        self.epoch = state["epoch"]
