"""MDCNS: Teacher-Peer-Self training with multi-source scoring, divergence re-ranking and
consensus distillation.

Two models train together on one shared candidate pool: self (the model the user
asked for, the only one evaluated and saved) and a peer (any supported RecBole
sequential model). Under no_grad, three views score the pool (self, peer, and the
teacher: their consensus), each re-ranked by the self-peer divergence; each view picks
its negatives among its top-M. Each model is trained on the negatives of all three
views, and both are distilled towards the consensus softmax. One backward; the peer
has its own optimiser, stepped right after self's.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import recbole
import torch
import torch.nn.functional as F
import yaml
from recbole.data.dataset import Dataset
from recbole.utils import get_model
from torch import Tensor
from torch.nn.utils.clip_grad import clip_grad_norm_

from recbole_mdcns.losses import ranking_loss
from recbole_mdcns.parallel import arm_gradient_sync, distributed
from recbole_mdcns.params import ConfigError, Param
from recbole_mdcns.samplers.base import Loss, NegativeSampler, ordered, register
from recbole_mdcns.samplers.dns import draw_top_m
from recbole_mdcns.scoring import EncodedBatch, backbone_for, encode_batch

VIEWS = ("self", "peer", "teacher")


@dataclass(frozen=True)
class MDCNSWeights:
    """The loss weights and switches of MDCNS."""

    alpha: float = 1.0  # a model's own view
    beta: float = 1.0  # the other model's view
    gamma: float = 1.0  # the teacher's view
    kd_weight: float = 10.0
    tau: float = 1.0
    kd_with_positive: bool = True
    single_source: bool = False  # each model trains on its own view only


def select_negatives(s_self: Tensor, s_peer: Tensor, omega: float, top_m: int, num: int, teacher: str) -> dict[str, Tensor]:
    """Positions [B, num] in the pool chosen by each view: its score plus omega times the
    divergence |s_self - s_peer|, top-M, drawn uniformly. Scores are [B, C], no gradient."""
    divergence = (s_self - s_peer).abs()
    consensus = s_self + s_peer if teacher == "sum" else (s_self + s_peer) / 2
    views = {"self": s_self, "peer": s_peer, "teacher": consensus}
    return {name: draw_top_m(score + omega * divergence, top_m, num) for name, score in views.items()}


def consensus_distillation(z_self: Tensor, z_peer: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """tau^2 KL(T || softmax(z / tau)) per student, mean over rows, with the teacher
    T = softmax(stopgrad((z_self + z_peer) / 2) / tau). Logits are [B, n]."""
    target = F.log_softmax(((z_self + z_peer) / 2).detach() / tau, dim=1)

    def kl(z: Tensor) -> Tensor:
        return tau**2 * F.kl_div(F.log_softmax(z / tau, dim=1), target, log_target=True, reduction="batchmean")

    return kl(z_self), kl(z_peer)


def mdcns_losses(
    p_self: Tensor, s_self: Tensor, p_peer: Tensor, s_peer: Tensor, picks: dict[str, Tensor], weights: MDCNSWeights, kind: str
) -> tuple[Tensor, Tensor, Tensor]:
    """(self ranking, peer ranking, weighted distillation) from positive scores [B], pool
    scores [B, C] with gradient, and each view's picked positions [B, K]."""

    def rank(p: Tensor, s: Tensor, view: str) -> Tensor:
        return ranking_loss(p, s.gather(1, picks[view]), kind)

    w = weights
    if w.single_source:
        self_loss = w.alpha * rank(p_self, s_self, "self")
        peer_loss = w.alpha * rank(p_peer, s_peer, "peer")
    else:
        self_loss = w.alpha * rank(p_self, s_self, "self") + w.beta * rank(p_self, s_self, "peer") + w.gamma * rank(p_self, s_self, "teacher")
        peer_loss = w.alpha * rank(p_peer, s_peer, "peer") + w.beta * rank(p_peer, s_peer, "self") + w.gamma * rank(p_peer, s_peer, "teacher")
    if w.kd_weight == 0:
        return self_loss, peer_loss, torch.zeros((), device=s_self.device)
    if w.kd_with_positive:
        z_self, z_peer = torch.cat([p_self.unsqueeze(1), s_self], 1), torch.cat([p_peer.unsqueeze(1), s_peer], 1)
    else:
        z_self, z_peer = s_self, s_peer
    kd_self, kd_peer = consensus_distillation(z_self, z_peer, w.tau)
    return self_loss, peer_loss, w.kd_weight * (kd_self + kd_peer)


def peer_config(config: Any, peer_model: str, overrides: Any) -> Any:
    """The peer's config: self's, then the peer model's RecBole defaults, then `overrides`
    (a dict or a yaml path)."""
    final = dict(config.final_config_dict)
    defaults = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{peer_model}.yaml")
    if os.path.isfile(defaults):
        with open(defaults, encoding="utf-8") as f:
            final.update(yaml.load(f, Loader=config.yaml_loader) or {})
    if isinstance(overrides, str):
        with open(overrides, encoding="utf-8") as f:
            overrides = yaml.load(f, Loader=config.yaml_loader) or {}
    final.update(overrides or {})
    final["model"] = peer_model
    peer = copy.copy(config)
    peer.final_config_dict = final
    return peer


@register("MDCNS")
class MDCNSSampler(NegativeSampler):
    params = (
        Param("mdcns_peer_model", str),
        Param("mdcns_peer_config", dict),
        Param("mdcns_top_m", int, minimum=1),
        Param("mdcns_alpha", float, minimum=0),
        Param("mdcns_beta", float, minimum=0),
        Param("mdcns_gamma", float, minimum=0),
        Param("mdcns_omega", float, minimum=0),
        Param("mdcns_teacher", str, choices=("mean", "sum")),
        Param("mdcns_tau", float, minimum=0, minimum_exclusive=True),
        Param("mdcns_kd_weight", float, minimum=0),
        Param("mdcns_kd_with_positive", bool),
        Param("mdcns_single_source", bool),
    )
    uses_candidate_pool = True

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        problems = []
        try:
            backbone_for(config["mdcns_peer_model"])
        except ConfigError as error:
            problems += [p.replace("model = ", "mdcns_peer_model = ", 1) for p in error.problems]
        problems += ordered(config, "mdcns_top_m", "neg_candidate_num")
        problems += ordered(config, "neg_num", "mdcns_top_m", why="; each view draws its K negatives among its top-M")
        overrides = config["mdcns_peer_config"]
        if isinstance(overrides, str) and not os.path.isfile(overrides):
            problems.append(f"mdcns_peer_config = {overrides!r}: no such yaml file")
        if config["enable_scaler"]:
            problems.append("enable_scaler = True: not supported with MDCNS (the peer's gradients would stay scaled)")
        return problems

    def __init__(self, config: Any, dataset: Dataset):
        super().__init__(config, dataset)
        self.weights = MDCNSWeights(
            alpha=config["mdcns_alpha"], beta=config["mdcns_beta"], gamma=config["mdcns_gamma"],
            kd_weight=config["mdcns_kd_weight"], tau=config["mdcns_tau"],
            kd_with_positive=config["mdcns_kd_with_positive"], single_source=config["mdcns_single_source"],
        )
        self.peer_config = peer_config(config, config["mdcns_peer_model"], config["mdcns_peer_config"])
        self.peer = get_model(config["mdcns_peer_model"])(self.peer_config, dataset).to(self.device)
        self.optimizer: torch.optim.Optimizer | None = None
        self.peer_ddp = None if config["single_spec"] else distributed(self.peer, config)  # synced like self

    def attach(self, trainer: Any) -> None:
        pc = self.peer_config
        self.optimizer = trainer._build_optimizer(
            params=self.peer.parameters(), learner=pc["learner"], learning_rate=pc["learning_rate"], weight_decay=pc["weight_decay"]
        )

    def loss(self, batch: EncodedBatch) -> Loss:
        self.peer.train()
        peer_batch = encode_batch(self.peer, batch.interaction)
        candidates = self.candidate_pool(batch)
        s_self, s_peer = batch.score(candidates), peer_batch.score(candidates)
        p_self, p_peer = batch.pos_score(), peer_batch.pos_score()
        with torch.no_grad():
            picks = select_negatives(
                s_self.detach(), s_peer.detach(), self.config["mdcns_omega"], self.config["mdcns_top_m"],
                self.neg_num, self.config["mdcns_teacher"],
            )
        losses = mdcns_losses(p_self, s_self, p_peer, s_peer, picks, self.weights, self.loss_kind)
        if self.peer_ddp is not None:
            losses = (losses[0], losses[1] + arm_gradient_sync(self.peer, self.peer_ddp), losses[2])
        with torch.no_grad():
            self.record("neg_score", s_self.gather(1, picks["self"]).mean())
            self.record("divergence", (s_self - s_peer).abs().mean())
            agree = (picks["self"] == picks["peer"]) & (picks["peer"] == picks["teacher"])
            self.record("views_agree", agree.float().mean())
            if self.weights.kd_weight > 0:
                self.record("kl", losses[2] / self.weights.kd_weight)
        return losses

    def after_optimizer_step(self) -> None:
        if self.peer_config["clip_grad_norm"]:
            clip_grad_norm_(self.peer.parameters(), **self.peer_config["clip_grad_norm"])
        self.optimizer.step()
        self.optimizer.zero_grad()

    def state_dict(self) -> dict[str, Any]:
        return {"peer": self.peer.state_dict(), "peer_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.peer.load_state_dict(state["peer"])
        self.optimizer.load_state_dict(state["peer_optimizer"])
