"""MDCNS: selection by the spec's formulas, distillation, ablations, peer training and state."""
from __future__ import annotations

import math

import pytest
import torch

from recbole_mdcns import ConfigError, build_experiment
from recbole_mdcns.config import Config
from recbole_mdcns.losses import RankingLoss
from recbole_mdcns.scoring import encode_batch
from recbole_mdcns.samplers.mdcns import (
    MDCNSWeights, PeerConfig, picked_by_every_view, consensus_distillation, mdcns_losses, select_negatives)

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


def test_distillation_sums_over_rows_as_the_official_code_when_asked():
    torch.manual_seed(3)
    z_self, z_peer = torch.randn(6, 5), torch.randn(6, 5)
    mean_self, mean_peer = consensus_distillation(z_self, z_peer, tau=1.5)
    sum_self, sum_peer = consensus_distillation(z_self, z_peer, tau=1.5, reduction="sum")
    assert sum_self.item() == pytest.approx(6 * mean_self.item(), rel=1e-6)
    assert sum_peer.item() == pytest.approx(6 * mean_peer.item(), rel=1e-6)
    # the sum of the rows' own KLs, each computed on its own
    rows = [consensus_distillation(z_self[i:i + 1], z_peer[i:i + 1], tau=1.5)[0].item() for i in range(6)]
    assert sum_self.item() == pytest.approx(sum(rows), rel=1e-6)


WEIGHTS = dict(alpha=1.0, beta=1.0, gamma=1.0, kd_weight=10.0, kd_reduction="mean", tau=1.0, kd_with_positive=True, single_source=False)


def weights(**changes) -> MDCNSWeights:
    return MDCNSWeights(**{**WEIGHTS, **changes})


def bpr(p: float, n: float) -> float:
    return -math.log(1 / (1 + math.exp(-(p - n))))


def test_each_model_is_ranked_on_every_view_with_its_weight():
    # one row, four candidates; each view picks another one
    p_self, p_peer = torch.tensor([0.5]), torch.tensor([-0.2])
    s_self, s_peer = torch.tensor([[0.1, 0.7, -0.3, 0.4]]), torch.tensor([[0.9, -0.5, 0.2, 0.3]])
    chosen = {"self": torch.tensor([[1]]), "peer": torch.tensor([[0]]), "teacher": torch.tensor([[3]])}
    w = weights(alpha=1.0, beta=2.0, gamma=5.0, kd_weight=0)
    self_loss, peer_loss, kd = mdcns_losses(p_self, s_self, p_peer, s_peer, chosen, w, RankingLoss("BPR"))
    # L_S = alpha l(self's pick) + beta l(peer's pick) + gamma l(teacher's pick), scored by self
    assert self_loss.item() == pytest.approx(1 * bpr(0.5, 0.7) + 2 * bpr(0.5, 0.1) + 5 * bpr(0.5, 0.4), rel=1e-6)
    # L_P: the roles of self and peer swapped, scored by the peer
    assert peer_loss.item() == pytest.approx(1 * bpr(-0.2, 0.9) + 2 * bpr(-0.2, -0.5) + 5 * bpr(-0.2, 0.3), rel=1e-6)
    assert kd.item() == 0
    single_self, single_peer, _ = mdcns_losses(p_self, s_self, p_peer, s_peer, chosen, weights(single_source=True, kd_weight=0), RankingLoss("BPR"))
    assert single_self.item() == pytest.approx(bpr(0.5, 0.7), rel=1e-6)
    assert single_peer.item() == pytest.approx(bpr(-0.2, 0.9), rel=1e-6)


def test_each_model_ranks_every_view_against_its_own_scores_of_the_mixed_negatives():
    torch.manual_seed(4)
    p_self, p_peer, s_self, s_peer = torch.randn(3), torch.randn(3), torch.randn(3, 5), torch.randn(3, 5)
    chosen = select_negatives(s_self, s_peer, 1.0, 2, 2, "mean")
    m_self, m_peer = torch.randn(3), torch.randn(3)
    w, ssm = weights(alpha=1.0, beta=2.0, gamma=5.0, kd_weight=0), RankingLoss("SSM")
    self_loss, peer_loss, _ = mdcns_losses(p_self, s_self, p_peer, s_peer, chosen, w, ssm, (m_self, m_peer))

    def view(p, s, pick, mixed):
        return ssm(p, s.gather(1, chosen[pick]), mixed=mixed)

    assert self_loss.item() == pytest.approx((view(p_self, s_self, "self", m_self) + 2 * view(p_self, s_self, "peer", m_self)
                                              + 5 * view(p_self, s_self, "teacher", m_self)).item(), rel=1e-6)
    assert peer_loss.item() == pytest.approx((view(p_peer, s_peer, "peer", m_peer) + 2 * view(p_peer, s_peer, "self", m_peer)
                                              + 5 * view(p_peer, s_peer, "teacher", m_peer)).item(), rel=1e-6)


@pytest.mark.parametrize("with_positive,reduction", [(True, "mean"), (False, "mean"), (True, "sum")])
def test_distillation_covers_the_positive_only_when_asked(with_positive, reduction):
    torch.manual_seed(2)
    p_self, p_peer, s_self, s_peer = torch.randn(5), torch.randn(5), torch.randn(5, 4), torch.randn(5, 4)
    chosen = select_negatives(s_self, s_peer, 1.0, 1, 1, "mean")
    w = weights(kd_weight=3.0, tau=2.0, kd_with_positive=with_positive, kd_reduction=reduction)
    kd = mdcns_losses(p_self, s_self, p_peer, s_peer, chosen, w, RankingLoss("BCE"))[2]
    z_self = torch.cat([p_self.unsqueeze(1), s_self], 1) if with_positive else s_self
    z_peer = torch.cat([p_peer.unsqueeze(1), s_peer], 1) if with_positive else s_peer
    assert kd.item() == pytest.approx(3.0 * sum(consensus_distillation(z_self, z_peer, 2.0, reduction)).item(), rel=1e-6)


def test_each_ablation_switch_changes_exactly_its_part():
    torch.manual_seed(1)
    p_self, p_peer = torch.randn(8), torch.randn(8)
    s_self, s_peer = torch.randn(8, 6), torch.randn(8, 6)
    chosen = select_negatives(s_self, s_peer, 1.0, 1, 1, "mean")
    full = mdcns_losses(p_self, s_self, p_peer, s_peer, chosen, weights(), RankingLoss("BCE"))
    no_kd = mdcns_losses(p_self, s_self, p_peer, s_peer, chosen, weights(kd_weight=0), RankingLoss("BCE"))
    assert torch.equal(full[0], no_kd[0]) and torch.equal(full[1], no_kd[1])
    assert full[2] > 0 and no_kd[2] == 0

    no_divergence = select_negatives(s_self, s_peer, 0.0, 1, 1, "mean")
    assert torch.equal(no_divergence["self"].squeeze(1), s_self.argmax(1))
    assert torch.equal(no_divergence["peer"].squeeze(1), s_peer.argmax(1))
    plain = mdcns_losses(p_self, s_self, p_peer, s_peer, no_divergence, weights(), RankingLoss("BCE"))
    assert torch.equal(plain[2], full[2])  # distillation does not depend on the picks

    single = mdcns_losses(p_self, s_self, p_peer, s_peer, no_divergence, weights(single_source=True, kd_weight=0), RankingLoss("BCE"))
    hardest = s_self.max(1).values
    dns = (-torch.nn.functional.logsigmoid(p_self) - torch.nn.functional.logsigmoid(-hardest)).mean()
    assert torch.isclose(single[0], dns)  # self trained by DNS on its own view alone


def peer_of(run) -> torch.nn.Module:
    return run.trainer.trained["peer"].model


@pytest.mark.parametrize("model, peer", [("SASRec", "GRU4Rec"), ("GRU4Rec", "NARM"), ("SASRec", "SASRec")])
def test_one_step_trains_self_and_peer_together(tiny_config, model, peer):
    keys = {**tiny_config, "sampler": "MDCNS", "mdcns_peer_model": peer, "mdcns_peer_config": SMALL_PEER}
    run = build_experiment(Config(model, config_dict=keys))
    interaction = next(iter(run.train_data)).to(run.config["device"])
    peer_model = peer_of(run)
    assert type(peer_model).__name__ == peer and peer_model is not run.model
    assert set(run.trainer.trained) == {"self", "peer"}
    before = {name: [p.detach().clone() for p in part.model.parameters()] for name, part in run.trainer.trained.items()}
    losses = run.trainer.train_step(interaction)
    assert len(losses) == 3 and all(math.isfinite(part) for part in losses)
    for name, part in run.trainer.trained.items():
        assert any(not torch.equal(b, a) for b, a in zip(before[name], part.model.parameters())), name


def test_mixed_negatives_are_drawn_once_and_scored_by_self_then_the_peer(tiny_config):
    keys = {**tiny_config, "sampler": "MDCNS", "mdcns_peer_config": SMALL_PEER, "neg_loss": "SSM", "neg_mix_num": 8}
    run = build_experiment(Config("SASRec", config_dict=keys))
    sampler, calls = run.trainer.sampler, []
    draw = sampler.mixed_log_masses
    sampler.mixed_log_masses = lambda *batches: calls.append(batches) or draw(*batches)
    interaction = next(iter(run.train_data)).to(run.config["device"])
    encoded = {name: encode_batch(part.model, interaction) for name, part in run.trainer.trained.items()}
    sampler.loss(encoded["self"], {"peer": encoded["peer"]})
    assert len(calls) == 1 and calls[0][0] is encoded["self"] and calls[0][1] is encoded["peer"]


def one_sgd_step(tiny_config, **keys) -> list[torch.Tensor]:
    config = Config("SASRec", config_dict={**tiny_config, "sampler": "MDCNS", "mdcns_peer_config": SMALL_PEER,
                                           "learner": "sgd", "learning_rate": 0.5, **keys})
    run = build_experiment(config)
    run.trainer.train_step(next(iter(run.train_data)).to(config["device"]))
    return [p.detach().clone() for part in run.trainer.trained.values() for p in part.model.parameters()]


@pytest.mark.parametrize("clip", [None, {"max_norm": 0.5}])
def test_the_grad_scaler_scales_and_unscales_both_models(tiny_config, monkeypatch, clip):
    """enable_scaler runs torch's GradScaler (on CPU too): one SGD step gives both models the
    weights of an unscaled step, so neither model's gradients stay scaled."""
    enabled = []
    scale = torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale", lambda self, x: enabled.append(self.is_enabled()) or scale(self, x))
    plain = one_sgd_step(tiny_config, clip_grad_norm=clip)
    scaled = one_sgd_step(tiny_config, clip_grad_norm=clip, enable_scaler=True)
    assert enabled == [False, True]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, scaled))


def test_peer_and_its_optimiser_are_checkpointed_and_resumed(tiny_config):
    keys = {**tiny_config, "sampler": "MDCNS", "mdcns_peer_config": SMALL_PEER, "eval_step": 0, "epochs": 2}
    run = build_experiment(Config("SASRec", config_dict=keys))
    run.trainer.fit(run.train_data, run.valid_data, saved=True)  # saved after epoch 2
    saved = torch.load(run.trainer.saved_model_file, weights_only=True)["co_trained"]["peer"]
    fresh = build_experiment(Config("SASRec", config_dict={**keys, "epochs": 3}))
    fresh.trainer.resume_checkpoint(run.trainer.saved_model_file)
    for name, tensor in saved["state_dict"].items():
        assert torch.equal(peer_of(fresh).state_dict()[name], tensor)
    state = fresh.trainer.trained["peer"].optimizer.state_dict()["state"]
    assert state.keys() == saved["optimizer"]["state"].keys() and len(state) > 0
    assert all(torch.equal(state[i]["exp_avg"], saved["optimizer"]["state"][i]["exp_avg"]) for i in state)
    peer_before = {k: v.clone() for k, v in peer_of(fresh).state_dict().items()}
    fresh.trainer.fit(fresh.train_data, fresh.valid_data, saved=False)  # training continues from there
    assert any(not torch.equal(peer_before[k], v) for k, v in peer_of(fresh).state_dict().items())


def test_resuming_under_a_sampler_that_trains_other_models_is_refused(tiny_config):
    keys = {**tiny_config, "sampler": "MDCNS", "mdcns_peer_config": SMALL_PEER, "epochs": 1}
    run = build_experiment(Config("SASRec", config_dict=keys))
    run.trainer.fit(run.train_data, run.valid_data, saved=True)
    dns = build_experiment(Config("SASRec", config_dict={**keys, "sampler": "DNS"}))
    with pytest.raises(ValueError, match="holds the co-trained models \['peer'\], this run trains none"):
        dns.trainer.resume_checkpoint(run.trainer.saved_model_file)


def test_the_scaler_state_is_checkpointed_and_a_loss_func_is_refused_under_a_sampler(tiny_config):
    keys = {**tiny_config, "sampler": "MDCNS", "mdcns_peer_config": SMALL_PEER, "epochs": 1, "enable_scaler": True}
    run = build_experiment(Config("SASRec", config_dict=keys))
    run.trainer.fit(run.train_data, run.valid_data, saved=True)
    saved = torch.load(run.trainer.saved_model_file, weights_only=True)["scaler"]
    assert saved["scale"] == run.trainer.scaler.get_scale() > 1
    with pytest.raises(ValueError, match="the loss is the sampler's"):
        run.trainer.train_step(next(iter(run.train_data)), loss_func=run.model.calculate_loss)


def test_the_peers_summary_names_its_keys_and_size(tiny_config):
    from recbole_mdcns.samplers.mdcns import model_summary

    run = build_experiment(Config("SASRec", config_dict={**tiny_config, "sampler": "MDCNS"}))
    summary = model_summary(peer_of(run), run.sampler.co_trained["peer"].config)
    size = sum(p.numel() for p in peer_of(run).parameters())
    assert summary == (f"GRU4Rec (embedding_size=16, hidden_size=16, num_layers=1, dropout_prob=0.0, loss_type=CE; "
                       f"{size:,} parameters)")


def peer_config(tiny_config, model="SASRec", **keys):
    config = Config(model, config_dict={**tiny_config, "sampler": "MDCNS", **keys})
    return PeerConfig(config, config["mdcns_peer_model"], config["mdcns_peer_config"])


def test_the_peer_takes_the_users_keys_over_its_model_defaults(tiny_config):
    peer = peer_config(tiny_config)  # the user set hidden 16, embedding 16, dropout 0
    assert (peer["embedding_size"], peer["hidden_size"], peer["dropout_prob"]) == (16, 16, 0.0)
    assert peer["model"] == "GRU4Rec" and peer["loss_type"] == "CE"  # GRU4Rec's own default, unset by the user


def test_self_models_defaults_never_reach_the_peer(tiny_config):
    keys = {k: v for k, v in tiny_config.items() if k not in ("hidden_size", "embedding_size")}
    # GRU4Rec's yaml says hidden 128; the SASRec peer keeps SASRec's 64
    peer = peer_config(keys, model="GRU4Rec", mdcns_peer_model="SASRec")
    assert peer["hidden_size"] == 64


def test_mdcns_peer_config_is_laid_over_everything(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["run_recbole_mdcns.py", "--hidden_size=12"])
    peer = peer_config(tiny_config, mdcns_peer_config={"hidden_size": 8, "num_layers": 2})
    assert (peer["hidden_size"], peer["num_layers"], peer["embedding_size"]) == (8, 2, 16)
    path = tmp_path / "peer.yaml"
    path.write_text("hidden_size: 24\ndropout_prob: 0.1\n")
    peer = peer_config(tiny_config, mdcns_peer_config=str(path))
    assert (peer["hidden_size"], peer["dropout_prob"], peer["embedding_size"]) == (24, 0.1, 16)
    run = build_experiment(Config("SASRec", config_dict={**tiny_config, "sampler": "MDCNS",
                                                         "mdcns_peer_config": str(path)}))
    assert peer_of(run).gru_layers.hidden_size == 24 and run.model.hidden_size == 12  # the command line's


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_an_epoch_reports_the_three_loss_parts_and_the_diagnostics_behind_them(tiny_config, reduction):
    keys = {**tiny_config, "sampler": "MDCNS", "mdcns_kd_weight": 4.0, "mdcns_top_m": 3, "mdcns_kd_reduction": reduction}
    run = build_experiment(Config("SASRec", config_dict=keys))
    self_rank, peer_rank, kd = run.trainer._train_epoch(run.train_data, 0)
    diagnostics = run.trainer.diagnostics
    assert set(diagnostics) == {"neg_score", "divergence", "views_agree", "kl", "false_negatives"}
    # train_loss3 sums the weighted distillation over the batches; kl is its per-batch mean,
    # unweighted, per row (under sum, the batches' 64 rows each sum their KL)
    per_batch = kd / len(run.train_data) / 4.0
    if reduction == "mean":
        assert per_batch == pytest.approx(diagnostics["kl"], rel=1e-4)
    else:
        assert 16 * diagnostics["kl"] < per_batch < 64 * diagnostics["kl"] * 1.0001
    assert self_rank > 0 and peer_rank > 0 and diagnostics["divergence"] > 0
    assert 0 < diagnostics["views_agree"] < 1  # M = 3: the views' draws agree only sometimes


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


def test_views_agree_counts_self_picks_every_view_made_in_any_slot():
    candidates = torch.tensor([[5, 6, 7, 5], [8, 9, 5, 6]])  # item 5 twice in row 0's pool
    picks = {"self": torch.tensor([[0, 2, 1], [1, 3, 0]]), "peer": torch.tensor([[2, 3, 1], [1, 0, 2]]),
             "teacher": torch.tensor([[0, 2, 1], [3, 1, 0]])}
    # row 0: every item agrees (5 through the pool's other 5); row 1: 9 and 8 agree, and 6,
    # which the peer picked in row 0 only, does not
    assert picked_by_every_view(candidates, picks, 9).tolist() == [[True, True, True], [True, False, True]]
