"""MDCNS: selection by the spec's formulas, distillation, ablations, peer training and state."""
from __future__ import annotations

import logging

import pytest
import torch

from recbole_mdcns import ConfigError, run_recbole_mdcns
from recbole_mdcns.config import Config
from recbole_mdcns import build_experiment
from recbole_mdcns.samplers.mdcns import MDCNSWeights, consensus_distillation, mdcns_losses, select_negatives

SMALL_PEER = {"embedding_size": 16, "hidden_size": 16, "n_layers": 1, "num_layers": 1, "inner_size": 32, "n_heads": 1}

# divergence |s_self - s_peer| = [0, 3, 0.6, 4]; mean teacher = [1, 1.5, 2.3, 2.0]
S_SELF = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
S_PEER = torch.tensor([[1.0, 0.0, 2.6, 4.0]])


def picks(omega: float, top_m: int = 1, teacher: str = "mean", rows: int = 1) -> dict[str, torch.Tensor]:
    return select_negatives(S_SELF.repeat(rows, 1), S_PEER.repeat(rows, 1), omega, top_m, 1, teacher)


def test_selection_with_m_1_follows_the_formulas():
    # omega 1: self [1, 6, 2.6, 4] -> 1; peer [1, 3, 3.2, 8] -> 3; teacher [1, 4.5, 2.9, 6] -> 3
    assert {v: p.item() for v, p in picks(1.0).items()} == {"self": 1, "peer": 3, "teacher": 3}
    # omega 0: the raw views; the teacher's mean peaks at 2
    assert {v: p.item() for v, p in picks(0.0).items()} == {"self": 1, "peer": 3, "teacher": 2}
    # the paper's sum teacher [2, 3, 4.6, 4] -> 2 without divergence
    assert picks(0.0, teacher="sum")["teacher"].item() == 2


def test_selection_with_m_2_draws_uniformly_within_each_top_2():
    torch.manual_seed(0)
    chosen = picks(1.0, top_m=2, rows=4000)
    for view, top2 in {"self": {1, 3}, "peer": {2, 3}, "teacher": {1, 3}}.items():
        counts = torch.bincount(chosen[view].flatten(), minlength=4)
        assert set(torch.nonzero(counts).flatten().tolist()) == top2
        assert abs(counts[min(top2)].item() / 4000 - 0.5) < 0.04


def test_distillation_is_zero_on_agreement_positive_otherwise_with_the_right_gradient():
    z = torch.tensor([[2.0, 0.0, 1.0]])
    kd_self, kd_peer = consensus_distillation(z, z.clone(), tau=2.0)
    assert kd_self.abs() < 1e-7 and kd_peer.abs() < 1e-7
    z_self = torch.tensor([[2.0, 0.0]], requires_grad=True)
    z_peer = torch.tensor([[0.0, 2.0]], requires_grad=True)
    kd_self, kd_peer = consensus_distillation(z_self, z_peer, tau=1.0)
    assert kd_self > 0 and kd_peer > 0
    kd_self.backward()
    # the teacher is uniform: descent lowers self's first logit and raises its second
    assert z_self.grad[0, 0] > 0 > z_self.grad[0, 1]
    assert z_peer.grad is None or z_peer.grad.abs().sum() == 0  # no gradient through the teacher


def test_each_ablation_switch_changes_exactly_its_part():
    torch.manual_seed(1)
    p_self, p_peer = torch.randn(8), torch.randn(8)
    s_self, s_peer = torch.randn(8, 6), torch.randn(8, 6)
    chosen = select_negatives(s_self, s_peer, 1.0, 1, 1, "mean")
    full = mdcns_losses(p_self, s_self, p_peer, s_peer, chosen, MDCNSWeights(), "BCE")
    no_kd = mdcns_losses(p_self, s_self, p_peer, s_peer, chosen, MDCNSWeights(kd_weight=0), "BCE")
    assert torch.equal(full[0], no_kd[0]) and torch.equal(full[1], no_kd[1])
    assert full[2] > 0 and no_kd[2] == 0

    no_divergence = select_negatives(s_self, s_peer, 0.0, 1, 1, "mean")
    assert torch.equal(no_divergence["self"].squeeze(1), s_self.argmax(1))
    assert torch.equal(no_divergence["peer"].squeeze(1), s_peer.argmax(1))
    plain = mdcns_losses(p_self, s_self, p_peer, s_peer, no_divergence, MDCNSWeights(), "BCE")
    assert torch.equal(plain[2], full[2])  # distillation does not depend on the picks

    single = mdcns_losses(p_self, s_self, p_peer, s_peer, no_divergence, MDCNSWeights(single_source=True, kd_weight=0), "BCE")
    hardest = s_self.max(1).values
    dns = (-torch.nn.functional.logsigmoid(p_self) - torch.nn.functional.logsigmoid(-hardest)).mean()
    assert torch.isclose(single[0], dns)  # self trained by DNS on its own view alone


@pytest.mark.parametrize("model, peer", [("SASRec", "GRU4Rec"), ("GRU4Rec", "NARM"), ("SASRec", "SASRec")])
def test_self_and_peer_of_different_classes_train_a_batch(tiny_config, model, peer):
    keys = {**tiny_config, "sampler": "MDCNS", "mdcns_peer_model": peer, "mdcns_peer_config": SMALL_PEER}
    config = Config(model, config_dict=keys)
    run = build_experiment(config)
    self_model, trainer, train_data = run.model, run.trainer, run.train_data
    interaction = next(iter(train_data)).to(config["device"])
    peer_model = trainer.sampler.peer
    assert type(peer_model).__name__ == peer and peer_model is not self_model
    before = [p.detach().clone() for p in [*self_model.parameters(), *peer_model.parameters()]]
    trainer.optimizer.zero_grad()
    losses = trainer._sampled_loss(interaction)
    assert len(losses) == 3 and all(torch.isfinite(part) for part in losses)
    sum(losses).backward()
    trainer.optimizer.step()  # self's step; the peer steps in the hook
    after = [*self_model.parameters(), *peer_model.parameters()]
    n_self = len(list(self_model.parameters()))
    assert any(not torch.equal(b, a) for b, a in zip(before[:n_self], after[:n_self]))
    assert any(not torch.equal(b, a) for b, a in zip(before[n_self:], after[n_self:]))
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in peer_model.parameters())  # zeroed


def test_peer_and_its_optimiser_are_checkpointed_and_resumed(tiny_config):
    keys = {**tiny_config, "sampler": "MDCNS", "mdcns_peer_config": SMALL_PEER, "eval_step": 0, "epochs": 2}
    run = build_experiment(Config("SASRec", config_dict=keys))
    trainer, train_data, valid_data = run.trainer, run.train_data, run.valid_data
    trainer.fit(train_data, valid_data, saved=True)  # saved after epoch 2
    saved = torch.load(trainer.saved_model_file, weights_only=True)["sampler"]
    fresh = build_experiment(Config("SASRec", config_dict={**keys, "epochs": 3})).trainer
    fresh.resume_checkpoint(trainer.saved_model_file)
    for name, tensor in saved["peer"].items():
        assert torch.equal(fresh.sampler.peer.state_dict()[name], tensor)
    state = fresh.sampler.optimizer.state_dict()["state"]
    assert state.keys() == saved["peer_optimizer"]["state"].keys() and len(state) > 0
    assert all(torch.equal(state[i]["exp_avg"], saved["peer_optimizer"]["state"][i]["exp_avg"]) for i in state)
    peer_before = {k: v.clone() for k, v in fresh.sampler.peer.state_dict().items()}
    fresh.fit(train_data, valid_data, saved=False)  # training continues from there
    assert any(not torch.equal(peer_before[k], v) for k, v in fresh.sampler.peer.state_dict().items())


def test_quick_run_logs_the_three_loss_parts_and_reports_self(tiny_config, caplog):
    with caplog.at_level(logging.INFO):
        result = run_recbole_mdcns(
            model="SASRec", config_dict={**tiny_config, "sampler": "MDCNS", "mdcns_peer_config": SMALL_PEER}, saved=True
        )
    epoch_line = next(r.getMessage() for r in caplog.records if "epoch 0 training" in r.getMessage())
    for part in ("train_loss1", "train_loss2", "train_loss3", "divergence", "views_agree", "kl"):
        assert part in epoch_line
    assert "ndcg@10" in result["test_result"]


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"mdcns_peer_model": "Foo"}, "mdcns_peer_model = 'Foo' is not supported.*supported models: "),
        ({"mdcns_peer_model": "BERT4Rec"}, "mdcns_peer_model = 'BERT4Rec' is not supported"),
        ({"mdcns_top_m": 20}, "mdcns_top_m = 20: must be <= neg_candidate_num \\(10\\)"),
        ({"mdcns_gamma": -0.5}, "mdcns_gamma = -0.5: must be a number >= 0"),
        ({"mdcns_omega": -1.0}, "mdcns_omega = -1.0: must be a number >= 0"),
        ({"mdcns_tau": 0}, "mdcns_tau = 0: must be a number > 0"),
        ({"mdcns_teacher": "max"}, "mdcns_teacher = 'max': must be one of mean, sum"),
        ({"mdcns_peer_config": 3}, "mdcns_peer_config = 3: must be a dict"),
    ],
)
def test_bad_mdcns_values(tiny_config, keys, message):
    with pytest.raises(ConfigError, match=message):
        Config("SASRec", config_dict={**tiny_config, "sampler": "MDCNS", **keys})
