"""MDCNS: Teacher-Peer-Self training with multi-source scoring, divergence re-ranking and
consensus distillation.

Two models train together on one shared candidate pool: self (the model the user
asked for, the only one evaluated and saved) and a peer (any supported RecBole
sequential model), which this sampler declares as co-trained: the trainer builds, steps
and checkpoints it beside self and encodes both once per batch. Under no_grad, three
views score the pool (self, peer, and the teacher: their consensus), each re-ranked by
the self-peer divergence; each view picks its negatives among its top-M. Each model is
trained on the negatives of all three views, and both are distilled towards the
consensus softmax.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from logging import getLogger
from typing import Any, Mapping, Optional

import recbole
import torch
import torch.nn.functional as F
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.data.dataset import Dataset
from recbole.utils import get_model
from torch import Tensor

from recbole_mdcns.losses import RankingLoss
from recbole_mdcns.parallel import DISTRIBUTED_KEYS
from recbole_mdcns.params import ConfigError, Param
from recbole_mdcns.samplers.base import CoTrained, Loss, NegativeSampler, register
from recbole_mdcns.samplers.dns import draw_top_m, top_m_problems
from recbole_mdcns.scoring import EncodedBatch, backbone_for


@dataclass(frozen=True)
class MDCNSWeights:
    """The loss weights and switches of MDCNS (the `mdcns_*` keys)."""

    alpha: float  # a model's own view
    beta: float  # the other model's view
    gamma: float  # the teacher's view
    kd_weight: float
    kd_reduction: str  # `mean` or `sum` of the KL over the batch's rows
    tau: float
    kd_with_positive: bool
    single_source: bool  # each model trains on its own view only


def select_negatives(s_self: Tensor, s_peer: Tensor, omega: float, top_m: int, num: int, teacher: str) -> dict[str, Tensor]:
    """Positions [B, num] in the pool chosen by each view: its score plus omega times the
    divergence |s_self - s_peer|, top-M, drawn uniformly. Scores are [B, C], no gradient."""
    divergence = (s_self - s_peer).abs()
    consensus = s_self + s_peer if teacher == "sum" else (s_self + s_peer) / 2
    views = {"self": s_self, "peer": s_peer, "teacher": consensus}
    return {name: draw_top_m(score + omega * divergence, top_m, num) for name, score in views.items()}


def consensus_distillation(z_self: Tensor, z_peer: Tensor, tau: float, reduction: str = "mean") -> tuple[Tensor, Tensor]:
    """tau^2 KL(T || softmax(z / tau)) per student, the `mean` or the `sum` over rows, with
    the teacher T = softmax(stopgrad((z_self + z_peer) / 2) / tau). Logits are [B, n]."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction = {reduction!r}: mean or sum")
    target = F.log_softmax(((z_self + z_peer) / 2).detach() / tau, dim=1)

    def kl(z: Tensor) -> Tensor:
        return tau**2 * F.kl_div(F.log_softmax(z / tau, dim=1), target, log_target=True,
                                 reduction="sum" if reduction == "sum" else "batchmean")

    return kl(z_self), kl(z_peer)


def mdcns_losses(
    p_self: Tensor, s_self: Tensor, p_peer: Tensor, s_peer: Tensor, picks: dict[str, Tensor], weights: MDCNSWeights,
    ranking: RankingLoss, mixed: tuple[Optional[Tensor], Optional[Tensor]] = (None, None),
) -> tuple[Tensor, Tensor, Tensor]:
    """(self ranking, peer ranking, weighted distillation) from positive scores [B], pool
    scores [B, C] with gradient, each view's picked positions [B, K] and the log mass [B]
    of the mixed negatives that join every view's loss, as (self, peer) score them."""

    def rank(p: Tensor, s: Tensor, view: str, mixed_log_mass: Optional[Tensor]) -> Tensor:
        return ranking(p, s.gather(1, picks[view]), mixed=mixed_log_mass)

    w, (m_self, m_peer) = weights, mixed
    if w.single_source:
        self_loss = w.alpha * rank(p_self, s_self, "self", m_self)
        peer_loss = w.alpha * rank(p_peer, s_peer, "peer", m_peer)
    else:
        self_loss = (w.alpha * rank(p_self, s_self, "self", m_self) + w.beta * rank(p_self, s_self, "peer", m_self)
                     + w.gamma * rank(p_self, s_self, "teacher", m_self))
        peer_loss = (w.alpha * rank(p_peer, s_peer, "peer", m_peer) + w.beta * rank(p_peer, s_peer, "self", m_peer)
                     + w.gamma * rank(p_peer, s_peer, "teacher", m_peer))
    if w.kd_weight == 0:
        return self_loss, peer_loss, torch.zeros((), device=s_self.device)
    if w.kd_with_positive:
        z_self, z_peer = torch.cat([p_self.unsqueeze(1), s_self], 1), torch.cat([p_peer.unsqueeze(1), s_peer], 1)
    else:
        z_self, z_peer = s_self, s_peer
    kd_self, kd_peer = consensus_distillation(z_self, z_peer, w.tau, w.kd_reduction)
    return self_loss, peer_loss, w.kd_weight * (kd_self + kd_peer)


# self's run set-up that the peer shares rather than sets up again
SHARED_RUN_KEYS = ("gpu_id", "use_gpu", "device", "single_spec", "dist_backend") + DISTRIBUTED_KEYS


class PeerConfig(RecBoleConfig):
    """RecBole's Config of the peer model, with RecBole's precedence: RecBole's defaults,
    the peer model's yaml and the dataset's, then the keys the user gave self's run (files,
    dict and command line), then `overrides` (`mdcns_peer_config`, a dict or a yaml path).
    Self's model defaults never reach the peer; self's device set-up is shared."""

    def __init__(self, self_config: Any, peer_model: str, overrides: Any):
        self._self_config = self_config
        self._overrides = overrides
        super().__init__(model=peer_model, dataset=self_config["dataset"])

    def _merge_external_config_dict(self) -> None:
        overrides = self._overrides
        if isinstance(overrides, str):
            with open(overrides, encoding="utf-8") as f:
                overrides = yaml.load(f, Loader=self.yaml_loader) or {}
        # the plugin draws the peer's negatives, as self's
        self.external_config_dict = {**self._self_config.external_config_dict, **(overrides or {}),
                                     "train_neg_sample_args": None}

    def _init_device(self) -> None:
        for key in SHARED_RUN_KEYS:
            if key in self._self_config:
                self.final_config_dict[key] = self._self_config[key]


def model_summary(model: torch.nn.Module, config: Any) -> str:
    """`Name (key=value, ...; P parameters)` with the keys of the model's RecBole yaml."""
    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{type(model).__name__}.yaml")
    with open(path, encoding="utf-8") as f:
        names = yaml.load(f, Loader=config.yaml_loader) or {}
    keys = ", ".join(f"{k}={config[k]}" for k in names)
    size = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} ({keys}; {size:,} parameters)"


@register("MDCNS")
class MDCNSSampler(NegativeSampler):
    params = (
        Param("mdcns_peer_model", str, "GRU4Rec", "the peer, any supported model"),
        Param("mdcns_peer_config", dict, {}, "the peer's own keys, over the user's keys and its RecBole defaults; "
              "or a yaml path"),
        Param("mdcns_top_m", int, 1, "M, each view draws among its top-M; K <= M <= C", minimum=1),
        Param("mdcns_alpha", float, 1.0, "weight of a model's own view", minimum=0),
        Param("mdcns_beta", float, 1.0, "weight of the other model's view", minimum=0),
        Param("mdcns_gamma", float, 1.0, "weight of the teacher's view", minimum=0),
        Param("mdcns_omega", float, 1.0, "weight of the divergence in re-ranking; 0 = no divergence", minimum=0),
        Param("mdcns_teacher", str, "mean", "`mean` (official code) or `sum` (paper) of the two scores",
              choices=("mean", "sum")),
        Param("mdcns_tau", float, 1.0, "distillation temperature, > 0", minimum=0, minimum_exclusive=True),
        Param("mdcns_kd_weight", float, 10.0, "weight of the distillation; 0 = none. 10 with the per-row mean equals "
              "the official 0.01 with a batch sum at 1,000 rows a batch", minimum=0),
        Param("mdcns_kd_reduction", str, "mean", "the KL over a batch's rows: `mean` (the strength does not depend on "
              "the batch size) or `sum` (the official code's: with weight 0.01 its setting at any batch size)",
              choices=("mean", "sum")),
        Param("mdcns_kd_with_positive", bool, True, "distil over [positive, candidates] (false: candidates only)"),
        Param("mdcns_single_source", bool, False, "each model trains on its own view only"),
    )
    uses_candidate_pool = True

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        problems = []
        try:
            backbone_for(config["mdcns_peer_model"])
        except ConfigError as error:
            problems += [p.replace("model = ", "mdcns_peer_model = ", 1) for p in error.problems]
        problems += top_m_problems(config, "mdcns_top_m", "each view of MDCNS")
        overrides = config["mdcns_peer_config"]
        if isinstance(overrides, str) and not os.path.isfile(overrides):
            problems.append(f"mdcns_peer_config = {overrides!r}: no such yaml file")
        return problems

    @classmethod
    def co_trained_models(cls, config: Any) -> dict[str, str]:
        return {"mdcns_peer_model": config["mdcns_peer_model"]}

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.top_m: int = config["mdcns_top_m"]
        self.omega: float = config["mdcns_omega"]
        self.teacher: str = config["mdcns_teacher"]
        self.weights = MDCNSWeights(
            alpha=config["mdcns_alpha"], beta=config["mdcns_beta"], gamma=config["mdcns_gamma"],
            kd_weight=config["mdcns_kd_weight"], kd_reduction=config["mdcns_kd_reduction"], tau=config["mdcns_tau"],
            kd_with_positive=config["mdcns_kd_with_positive"], single_source=config["mdcns_single_source"],
        )
        peer_config = PeerConfig(config, config["mdcns_peer_model"], config["mdcns_peer_config"])
        peer = get_model(config["mdcns_peer_model"])(peer_config, dataset).to(self.device)
        self.co_trained = {"peer": CoTrained(peer, peer_config)}
        getLogger().info(f"MDCNS peer: {model_summary(peer, peer_config)}")

    def loss(self, batch: EncodedBatch, co_batches: Mapping[str, EncodedBatch]) -> Loss:
        peer_batch = co_batches["peer"]
        candidates = self.candidate_pool(batch)
        s_self, s_peer = batch.score(candidates), peer_batch.score(candidates)
        p_self, p_peer = batch.pos_score(), peer_batch.pos_score()
        with torch.no_grad():
            picks = select_negatives(s_self, s_peer, self.omega, self.top_m, self.neg_num, self.teacher)
        losses = mdcns_losses(p_self, s_self, p_peer, s_peer, picks, self.weights, self.ranking_loss,
                              self.mixed_log_masses(batch, peer_batch))
        with torch.no_grad():
            self.record("neg_score", s_self.gather(1, picks["self"]).mean())
            self.record("divergence", (s_self - s_peer).abs().mean())
            self.record("views_agree", picked_by_every_view(candidates, picks, self.n_items).float().mean())
            w = self.weights
            # self's negatives: the picks of the views it trains on
            view_weights = {"self": w.alpha} if w.single_source else {"self": w.alpha, "peer": w.beta, "teacher": w.gamma}
            trained_on = [candidates.gather(1, picks[view]) for view, weight in view_weights.items() if weight > 0]
            if trained_on:
                self.chose(batch, torch.cat(trained_on, 1))
            if w.kd_weight > 0:
                rows = batch.size if w.kd_reduction == "sum" else 1
                self.record("kl", losses[2] / (w.kd_weight * rows))
        return losses


def picked_by_every_view(candidates: Tensor, picks: Mapping[str, Tensor], n_items: int) -> Tensor:
    """[B, K] bool: whether the item of each of self's picks (positions in the row's
    `candidates` [B, C], ids 1..n_items) is among the items the peer and the teacher picked
    in that row too."""
    # an item id made unique per row, so that one flat membership test stays within rows
    offset = torch.arange(candidates.size(0), device=candidates.device).unsqueeze(1) * (n_items + 1)
    items = {view: candidates.gather(1, chosen) + offset for view, chosen in picks.items()}
    return torch.isin(items["self"], items["peer"]) & torch.isin(items["self"], items["teacher"])
