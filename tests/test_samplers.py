"""Sampler behaviour on fixed embeddings: exclusion, distributions, hardness, losses."""
from __future__ import annotations

import pytest
import torch

from conftest import BATCH_ITEMS as N_ITEMS
from conftest import BATCH_ROWS as ROWS
from conftest import chi_square_ok, excluded_mask, make_batch, make_sampler
from recbole_mdcns.samplers import exclusion as exclusion_module
from recbole_mdcns.samplers.exclusion import RowExclusions, draw_from_sorted_complement
from recbole_mdcns.samplers.dns import draw_top_m
from recbole_mdcns.scoring import EncodedBatch


def test_draw_from_sorted_complement_is_uniform_over_the_free_items():
    torch.manual_seed(0)
    n = 12
    items = torch.tensor([[1, 3, 4, 5, 9, 13, 13]]).repeat(4, 1)  # sorted, padded with 13 = n+1
    excluded = torch.tensor([[True, True, False, True, False, False, False]]).repeat(4, 1)  # 1, 3, 5
    draws = draw_from_sorted_complement(items, excluded, 6000, n)
    assert not torch.isin(draws, torch.tensor([1, 3, 5])).any()
    assert draws.min() >= 1 and draws.max() <= n
    counts = torch.bincount(draws.flatten(), minlength=n + 1).double()
    probs = torch.ones(n + 1, dtype=torch.double)
    probs[[0, 1, 3, 5]] = 0
    assert chi_square_ok(counts, probs / probs.sum())


def test_exclusions_of_ids_with_repeats_and_padding_draw_uniformly_over_the_rest():
    torch.manual_seed(0)
    n = 12
    ids = torch.tensor([[5, 3, 0, 5, 1, 3, 0]]).repeat(4, 1)  # repeats, and 0 as padding
    draws = RowExclusions.of_ids(ids, n).draw(6000)
    assert not torch.isin(draws, torch.tensor([1, 3, 5])).any()
    counts = torch.bincount(draws.flatten(), minlength=n + 1).double()
    probs = torch.ones(n + 1, dtype=torch.double)
    probs[[0, 1, 3, 5]] = 0
    assert chi_square_ok(counts, probs / probs.sum())


def test_draw_from_sorted_complement_with_a_single_free_item():
    items = torch.tensor([[1, 2, 3, 4, 5]])
    excluded = torch.tensor([[True, True, False, True, True]])
    assert torch.equal(draw_from_sorted_complement(items, excluded, 50, 5), torch.full((1, 50), 3))


@pytest.mark.parametrize("mode", ["history", "user", "window", "target"])
@pytest.mark.parametrize("piece_rows", [None, 7])
def test_shared_membership_matches_the_per_row_test(mode, piece_rows, monkeypatch):
    batch, dataset = make_batch()
    exclusion = make_sampler("uniform", dataset, neg_exclude=mode).exclusion
    if piece_rows:  # the batch in pieces of at most 7 rows
        monkeypatch.setattr(exclusion_module, "EXCLUSION_PIECE_ENTRIES", piece_rows * exclusion.width)
    gen = torch.Generator().manual_seed(0)
    ids = torch.cat([dataset.targets[:5], dataset.seqs[0, :3], torch.randint(1, N_ITEMS + 1, (40,), generator=gen)])
    ids = torch.cat([ids, ids[:6]])  # repeats
    shared = exclusion.contains_shared(batch, ids)
    assert torch.equal(shared, exclusion.contains(batch, ids.expand(ROWS, -1)))
    assert shared[:5, :5].diagonal().all()  # each row's own target


def test_shared_membership_counts_only_the_marked_items():
    items = torch.tensor([[2, 4, 7, 9, 9], [1, 4, 5, 9, 9]])  # sorted, padded with 9 = N+1
    excluded = torch.tensor([[True, False, True, False, False], [True, True, False, False, False]])
    rows = RowExclusions(items, excluded, 8)
    ids = torch.tensor([7, 1, 2, 4, 5, 8, 2])  # unsorted, 2 repeated
    expected = torch.tensor([[True, False, True, False, False, False, True],
                             [False, True, False, True, False, False, False]])
    assert torch.equal(rows.contains_shared(ids), expected)
    assert torch.equal(rows.contains(ids.expand(2, -1)), expected)


@pytest.mark.parametrize("name", ["uniform", "popularity", "DNS"])
def test_negatives_never_hit_target_or_prefix(name):
    torch.manual_seed(0)
    batch, dataset = make_batch()
    sampler = make_sampler(name, dataset, neg_num=1)
    for _ in range(20):
        negatives = sampler.sample(batch)
        assert negatives.shape == (ROWS, 1)
        assert not excluded_mask(dataset, negatives).any()
        assert negatives.min() >= 1 and negatives.max() <= N_ITEMS


def test_uniform_negatives_are_uniform():
    torch.manual_seed(1)
    batch, dataset = make_batch()
    dataset.seqs[:] = 0
    batch.pos_items[:] = 1
    sampler = make_sampler("uniform", dataset, neg_num=64)
    counts = torch.bincount(sampler.sample(batch).flatten(), minlength=N_ITEMS + 1).double()
    probs = torch.ones(N_ITEMS + 1, dtype=torch.double)
    probs[:2] = 0
    assert chi_square_ok(counts, probs / probs.sum())


def test_popularity_follows_count_to_the_alpha():
    torch.manual_seed(2)
    batch, dataset = make_batch()
    dataset.seqs[:] = 0
    dataset.targets[:] = torch.randint(1, 21, (ROWS,))  # only items 1..20 are popular
    sampler = make_sampler("popularity", dataset, neg_num=64, popularity_alpha=0.5)
    counts = torch.bincount(sampler.sample(batch).flatten(), minlength=N_ITEMS + 1).double()
    weights = torch.bincount(dataset.targets, minlength=N_ITEMS + 1).double().sqrt()
    per_row = weights.expand(ROWS, -1).scatter(1, dataset.targets.unsqueeze(1), 0.0)  # a row's target is excluded
    probs = (per_row / per_row.sum(1, keepdim=True)).mean(0)
    assert counts[21:].sum() == 0
    assert chi_square_ok(counts, probs)


def test_popularity_rows_whose_free_items_have_no_mass_fall_back_to_uniform():
    torch.manual_seed(6)
    batch, dataset = make_batch()
    dataset.targets[:] = torch.arange(ROWS) % 5 + 1  # only items 1..5 carry popularity
    # rows 0..7 exclude all of 1..5 (target 1, prefix 2..5): redraws never leave the popular
    # items, so after the redraw rounds these rows must fall back to uniform over 6..N
    stuck = torch.arange(8)
    dataset.targets[stuck] = 1
    dataset.seqs[stuck] = torch.tensor([2, 3, 4, 5, 0, 0])
    # every other row excludes one of 1..5 (its target), so it always draws popular items
    rest = torch.arange(8, ROWS)
    dataset.seqs[rest] = torch.where(dataset.seqs[rest] > 0, dataset.seqs[rest].clamp(min=6), 0)
    batch = dataset.batch(batch.seq_emb, batch.item_table)
    sampler = make_sampler("popularity", dataset, neg_num=500)
    negatives = sampler.sample(batch)
    assert not excluded_mask(dataset, negatives).any()
    assert negatives.min() >= 1 and negatives.max() <= N_ITEMS
    assert (negatives[rest] <= 5).all()
    counts = torch.bincount(negatives[stuck].flatten(), minlength=N_ITEMS + 1).double()
    probs = torch.ones(N_ITEMS + 1, dtype=torch.double)
    probs[:6] = 0
    assert counts[:6].sum() == 0
    assert chi_square_ok(counts, probs / probs.sum())


def score_percentile(batch: EncodedBatch, negatives: torch.Tensor) -> float:
    """Mean fraction of items each negative outscores."""
    all_scores = batch.seq_emb @ batch.item_table[1:].T
    neg_scores = batch.score_detached(negatives)
    return (all_scores.unsqueeze(1) < neg_scores.unsqueeze(-1)).double().mean().item()


def test_dns_picks_higher_scored_negatives_than_uniform():
    torch.manual_seed(3)
    batch, dataset = make_batch()
    uniform = score_percentile(batch, make_sampler("uniform", dataset).sample(batch))
    dns = score_percentile(batch, make_sampler("DNS", dataset, neg_candidate_num=50).sample(batch))
    dns_m5 = score_percentile(batch, make_sampler("DNS", dataset, neg_candidate_num=50, dns_top_m=5).sample(batch))
    assert 0.45 < uniform < 0.55
    assert dns > 0.95  # the best of 50 uniform candidates
    assert uniform < dns_m5 < dns


def test_draw_top_m_draws_uniformly_among_the_top_m():
    torch.manual_seed(4)
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.8, 0.7, 0.0]]).repeat(3000, 1)
    picks = draw_top_m(scores, top_m=3, num=2)
    assert torch.isin(picks, torch.tensor([1, 3, 4])).all()
    assert (picks[:, 0] != picks[:, 1]).all()  # without replacement
    counts = torch.bincount(picks.flatten(), minlength=6).double()
    assert chi_square_ok(counts, torch.tensor([0, 1, 0, 1, 1, 0.0]) / 3)


def sample_shared_dns(seed: int, **keys):
    """DNS with a shared pool (`keys` over neg_shared) on make_batch's rows: the batch, the
    dataset, the negatives [B, K], the batch's one pool [C] and which of it each row excludes."""
    torch.manual_seed(seed)
    batch, dataset = make_batch()
    sampler = make_sampler("DNS", dataset, neg_shared=True, **keys)
    pools = []
    draw_pool = sampler.shared_candidates
    sampler.shared_candidates = lambda b: pools.append(draw_pool(b)) or pools[-1]
    negatives = sampler.sample(batch)
    ((pool, excluded),) = pools  # one pool for the whole batch
    return batch, dataset, negatives, pool, excluded


def test_shared_dns_takes_each_rows_top_m_of_one_pool_among_the_ids_it_may_draw():
    batch, dataset, negatives, pool, excluded = sample_shared_dns(6, neg_candidate_num=100, dns_top_m=5, neg_num=3)
    assert len(pool.unique()) == 100 and torch.equal(excluded, excluded_mask(dataset, pool.expand(ROWS, -1)))
    scores = (batch.seq_emb @ batch.item_table[pool].T).masked_fill(excluded, float("-inf"))
    top_5 = pool[scores.topk(5, dim=1).indices]
    assert negatives.shape == (ROWS, 3) and not excluded_mask(dataset, negatives).any()
    assert (negatives.unsqueeze(-1) == top_5.unsqueeze(1)).any(-1).all()
    assert (negatives[:, :1] != negatives[:, 1:]).all()  # without replacement
    assert excluded.any(1).sum() > ROWS // 4  # the pool holds excluded ids for many rows: the mask matters


def test_shared_dns_rows_left_with_fewer_than_m_candidates_fill_up_with_free_ids():
    _, dataset, negatives, pool, excluded = sample_shared_dns(7, neg_candidate_num=8, dns_top_m=8, neg_num=8)
    short = excluded.any(1)
    assert short.any() and not short.all()
    assert not excluded_mask(dataset, negatives).any()
    assert torch.equal(negatives[~short].sort(1).values, pool.sort().values.expand(int((~short).sum()), -1))
    kept = (pool.expand(ROWS, -1).unsqueeze(-1) == negatives.unsqueeze(1)).any(-1)  # [rows, C]
    assert (kept | excluded).all()  # a short row keeps each pool id it may draw; only the others are replaced


@pytest.mark.parametrize("shared", [False, True])
def test_loss_gradient_reaches_the_chosen_negatives_only(shared):
    torch.manual_seed(5)
    batch, dataset = make_batch()
    batch.item_table.requires_grad_(True)
    sampler = make_sampler("DNS", dataset, neg_shared=shared)
    chosen = []
    sample = sampler.sample
    sampler.sample = lambda b: chosen.append(sample(b)) or chosen[-1]
    loss = sampler.loss(batch)
    loss.backward()
    (negatives,) = chosen
    touched = batch.item_table.grad.abs().sum(1) > 0
    # exactly the targets and the chosen negatives: the scored pool itself gets no gradient
    assert torch.equal(torch.nonzero(touched).flatten(), torch.cat([batch.pos_items, negatives.flatten()]).unique())
    # the logged hardness is the mean score of the chosen negatives
    assert sampler.pop_diagnostics()["neg_score"] == pytest.approx(batch.score_detached(negatives).mean().item(), rel=1e-5)


