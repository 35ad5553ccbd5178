"""The MDCNS paper's other baselines, against the behavioural tests of their specification
(section (h) of each sampler): MixGCF / MixGCF+ and AHNS."""
from __future__ import annotations

import pytest
import torch
from scipy.stats import kstest

from conftest import BATCH_ROWS as ROWS
from conftest import excluded_mask, make_batch, make_sampler
from recbole_mdcns.scoring import EncodedBatch


def fixed_pool(sampler, candidates: torch.Tensor) -> None:
    """Make `sampler` score `candidates` [B, C] instead of a fresh uniform pool."""
    sampler.candidate_pool = lambda batch, num=None: candidates


# ----- MixGCF ----------------------------------------------------------------------
def test_mixgcf_mixes_dns_choice_with_the_target():
    torch.manual_seed(0)
    batch, dataset = make_batch()
    sampler = make_sampler("MixGCF", dataset, mixgcf_top_m=1)
    candidates = sampler.exclusion.draw(batch, 50)
    fixed_pool(sampler, candidates)
    chosen, alpha = sampler.select(batch)
    scores = batch.score_detached(candidates)
    assert torch.equal(chosen.squeeze(1), candidates.gather(1, scores.argmax(1, keepdim=True)).squeeze(1))
    torch.manual_seed(1)
    chosen, alpha = sampler.select(batch)
    torch.manual_seed(1)
    mixed = sampler.negative_embeddings(batch)
    expected = alpha.unsqueeze(-1) * batch.item_rows(batch.pos_items).unsqueeze(1) + (1 - alpha.unsqueeze(-1)) * batch.item_rows(chosen)
    assert torch.allclose(mixed, expected)


def test_mixgcf_plus_draws_among_the_top_m():
    torch.manual_seed(2)
    batch, dataset = make_batch()
    sampler = make_sampler("MixGCF", dataset, mixgcf_top_m=5, neg_num=2)
    candidates = sampler.exclusion.draw(batch, 50)
    fixed_pool(sampler, candidates)
    top = candidates.gather(1, batch.score_detached(candidates).topk(5, dim=1).indices)
    for _ in range(10):
        chosen, _ = sampler.select(batch)
        assert (chosen.unsqueeze(-1) == top.unsqueeze(1)).any(-1).all()
        assert not excluded_mask(dataset, chosen).any()


def test_mixgcf_alpha_is_uniform_on_zero_one():
    torch.manual_seed(3)
    batch, dataset = make_batch()
    sampler = make_sampler("MixGCF", dataset, neg_num=4, mixgcf_top_m=4)
    alphas = torch.cat([sampler.select(batch)[1].flatten() for _ in range(5)])
    assert alphas.min() >= 0 and alphas.max() < 1
    assert kstest(alphas.numpy(), "uniform").pvalue > 0.001


def test_mixgcf_gradient_reaches_the_target_and_the_chosen_candidate_only():
    torch.manual_seed(4)
    batch, dataset = make_batch()
    table = batch.item_table.clone().requires_grad_(True)
    seq_emb = batch.seq_emb.clone().requires_grad_(True)
    batch = EncodedBatch(**{**batch.__dict__, "item_table": table, "seq_emb": seq_emb})
    sampler = make_sampler("MixGCF", dataset, mixgcf_top_m=1)
    candidates = sampler.exclusion.draw(batch, 50)
    fixed_pool(sampler, candidates)
    torch.manual_seed(5)
    chosen, _ = sampler.select(batch)
    torch.manual_seed(5)
    sampler.loss(batch).backward()
    touched = table.grad.abs().sum(1) > 0
    used = torch.zeros_like(touched)
    used[batch.pos_items] = True
    used[chosen.flatten()] = True
    assert torch.equal(touched, used)  # unselected candidates get no gradient
    assert (seq_emb.grad.abs().sum(1) > 0).all()  # and every row's sequence does


# ----- AHNS ---------------------------------------------------------------------------
def scored_batch(pos_scores: list[float], candidate_scores: list[float]) -> tuple[EncodedBatch, torch.Tensor]:
    """One row per positive score, d = 1, h = 1: item j's embedding is its score. Items 1..C
    are the candidates (scores `candidate_scores`), items C+1.. the rows' targets."""
    c, rows = len(candidate_scores), len(pos_scores)
    table = torch.tensor([[0.0], *([s] for s in candidate_scores), *([s] for s in pos_scores)])
    targets = torch.arange(c + 1, c + 1 + rows)
    batch = EncodedBatch(seq_emb=torch.ones(rows, 1), item_table=table, pos_items=targets,
                         users=torch.arange(1, rows + 1), target_index=torch.zeros(rows, dtype=torch.long),
                         item_seq=torch.zeros(rows, 1, dtype=torch.long), seq_row=torch.arange(rows),
                         seq_len=torch.zeros(rows, dtype=torch.long))
    return batch, torch.arange(1, c + 1).expand(rows, -1)


def ahns(**keys):
    _, dataset = make_batch()
    return make_sampler("AHNS", dataset, **{"ahns_alpha": 1.0, "ahns_beta": 0.1, "ahns_p": -2, "ahns_k_mode": "closest",
                                            "neg_candidate_num": 4, **keys})


@pytest.mark.parametrize("p, pos_score", [(-2, 1.0), (-1, 1.0), (-1, 7.0)])
def test_ahns_picks_the_candidate_closest_to_its_target(p, pos_score):
    # p = -2, s+ = 1: t = 0.1 / 2 = 0.05; p = -1: t = 0.1 whatever s+
    batch, candidates = scored_batch([pos_score], [2.0, 0.3, 0.06, -1.0])
    sampler = ahns(ahns_p=p)
    fixed_pool(sampler, candidates)
    assert sampler.sample(batch).tolist() == [[3]]


@pytest.mark.parametrize("pos_score", [1.0, 7.0])
def test_ahns_with_p_minus_one_the_target_is_beta_whatever_the_positive(pos_score):
    batch, candidates = scored_batch([pos_score], [0.02, 0.09, 0.3, 2.0])  # t = 0.1: 0.09 is closest
    sampler = ahns(ahns_p=-1)
    fixed_pool(sampler, candidates)
    assert sampler.sample(batch).tolist() == [[2]]


@pytest.mark.parametrize("p, alpha, beta, expected", [(-2, 1.0, 0.1, 2), (-3, 1.0, 0.1, 1), (-2, 3.0, 0.2, 2),
                                                     (-2, 0.0, 0.1, 4)])
def test_ahns_target_is_beta_times_base_to_the_p_plus_one(p, alpha, beta, expected):
    # s+ = 1; t: 0.1 / 2 = 0.05, 0.1 / 4 = 0.025, 0.2 / 4 = 0.05, 0.1 / 1 = 0.1 (ids 1..4 score 0.026, 0.049, 0.3, 0.099)
    batch, candidates = scored_batch([1.0], [0.026, 0.049, 0.3, 0.099])
    sampler = ahns(ahns_p=p, ahns_alpha=alpha, ahns_beta=beta)
    fixed_pool(sampler, candidates)
    assert sampler.sample(batch).tolist() == [[expected]]


def test_ahns_a_better_scored_target_never_gets_a_harder_negative():
    scores = torch.linspace(-0.5, 0.5, 150).tolist()  # dense enough that the choice moves with t
    positives = torch.linspace(0, 5, 51).tolist()
    batch, candidates = scored_batch(positives, scores)
    sampler = ahns(neg_candidate_num=150)
    fixed_pool(sampler, candidates)
    chosen_scores = batch.item_table[sampler.sample(batch).squeeze(1), 0]
    assert (chosen_scores[1:] <= chosen_scores[:-1]).all() and chosen_scores[0] > chosen_scores[-1]


def test_ahns_k_closest_are_distinct_and_the_closest():
    scores = [2.0, 0.3, 0.06, -1.0, 0.01, 0.5]
    batch, candidates = scored_batch([1.0], scores)
    sampler = ahns(neg_num=3, neg_candidate_num=6)
    fixed_pool(sampler, candidates)
    picked = sampler.sample(batch)[0].tolist()
    assert sorted(picked) == [2, 3, 5]  # |s - 0.05|: 0.01 (0.06), 0.04 (0.01), 0.25 (0.3)
    blocks = ahns(neg_num=2, neg_candidate_num=6, ahns_k_mode="blocks")
    fixed_pool(blocks, candidates)
    assert blocks.sample(batch)[0].tolist() == [3, 5]  # the closest of (2.0, 0.3, 0.06) and of (-1, 0.01, 0.5)


def test_ahns_target_at_the_pole_takes_the_highest_score():
    batch, candidates = scored_batch([-1.0], [0.3, 2.0, 0.06, -1.0])  # s+ + alpha = 0: t = beta / 0
    sampler = ahns()
    fixed_pool(sampler, candidates)
    assert sampler.sample(batch).tolist() == [[2]]  # the highest score, not the pool's first (the authors' code)


def test_ahns_draws_no_excluded_item():
    torch.manual_seed(6)
    batch, dataset = make_batch()
    sampler = make_sampler("AHNS", dataset, ahns_alpha=1.0, ahns_beta=0.1, ahns_p=-2, ahns_k_mode="closest", neg_num=2)
    for _ in range(10):
        negatives = sampler.sample(batch)
        assert negatives.shape == (ROWS, 2) and not excluded_mask(dataset, negatives).any()
