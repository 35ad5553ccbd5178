"""The MDCNS paper's other baselines, against the behavioural tests of their specification
(section (h) of each sampler): MixGCF / MixGCF+, AHNS, SRNS, AdaSIR and GNNO; the stable
row keys of the stateful ones."""
from __future__ import annotations

import math

import pytest
import torch
from recbole.utils import init_seed
from scipy.stats import binomtest, kstest

from conftest import BATCH_ROWS as ROWS
from conftest import CONFIG_FIELDS, FakeDataset, chi_square_ok, excluded_mask, make_batch, make_sampler
from recbole_mdcns import ConfigError, run_recbole_mdcns
from recbole_mdcns.config import Config
from recbole_mdcns.quick_start import build_experiment
from recbole_mdcns.samplers import gnno
from recbole_mdcns.samplers.gnno import adjacency, jaccard_overlap, transition_pairs
from recbole_mdcns.samplers.srns import history_sd, keep_best
from recbole_mdcns.scoring import EncodedBatch, encode_batch
from recbole_mdcns.trainer import SampledTrainer


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


# ----- SRNS ---------------------------------------------------------------------------
def srns(batch: EncodedBatch, entrants: list[int], **keys):
    """SRNS over `batch` (keyed 0..B-1) whose visits offer `entrants` as the fresh ids."""
    _, dataset = make_batch()
    sampler = make_sampler("SRNS", dataset, **{"srns_memory": 2, "srns_new": len(entrants), "srns_history": 5,
                                               "srns_min_history": 3, "srns_alpha": 5.0, "srns_warmup": 1, **keys})
    sampler.state.keys = lambda b: torch.arange(b.size)
    fresh = torch.tensor(entrants).expand(batch.size, -1)
    sampler.exclusion.draw = lambda b, num: torch.cat([fresh[:, :1].expand(-1, num - fresh.shape[1]), fresh], 1)
    return sampler


def with_memory(sampler, ids: list[int], histories: list[list[float]]) -> None:
    """Row 0's memory: `ids`, each with its past q values (oldest first)."""
    width = sampler.state["history"].shape[-1]
    for slot, (item, past) in enumerate(zip(ids, histories)):
        sampler.state["ids"][0, slot] = item
        sampler.state["history"][0, slot, width - len(past):] = torch.tensor(past)
        sampler.state["count"][0, slot] = len(past)
    sampler.state["filled"][0] = True


def logit(q: float) -> float:
    return math.log(q / (1 - q))


@pytest.mark.parametrize("alpha, epoch, expected", [(5.0, 1, 2), (0.0, 1, 1), (5.0, 0, 1)])
def test_srns_prefers_the_varying_candidate_once_alpha_counts(alpha, epoch, expected):
    # q now: A (id 1) .9 with past (.9, .9, .9); B (id 2) .6 with past (.2, .8, .5), sd .245:
    # .6 + 5 * .245 = 1.83 > .9; alpha = 0, or epoch 0 of a 1-epoch warm-up, leaves .9 > .6
    batch, _ = scored_batch([0.0], [logit(0.9), logit(0.6), -5.0])
    sampler = srns(batch, [3], srns_alpha=alpha)
    with_memory(sampler, [1, 2], [[0.9, 0.9, 0.9], [0.2, 0.8, 0.5]])
    sampler.epoch = epoch
    assert sampler.sample(batch).tolist() == [[expected]]


def test_srns_sd_is_the_population_sd_of_the_held_past_values():
    history = torch.tensor([[[9.0, 9.0, 0.2, 0.8, 0.5], [0.1, 0.3, 0.5, 0.7, 0.9]]])  # slot 0 holds 3 values
    sd = history_sd(history, torch.tensor([[3, 5]], dtype=torch.int8), min_count=3)
    assert torch.allclose(sd, torch.tensor([[0.244949, 0.282843]]), atol=1e-5)  # the stale 9s are not read
    assert history_sd(history, torch.tensor([[2, 5]], dtype=torch.int8), min_count=3)[0, 0] == 0


@pytest.mark.parametrize("epoch, expected", [(1, 1), (5, 2)])
def test_srns_alpha_warms_up_over_t_w_epochs(epoch, expected):
    # T_w = 10: alpha_t = 0.5 at epoch 1 (B: .6 + .5 * .245 = .72 < .9, A wins), 2.5 at epoch 5 (B: 1.21)
    batch, _ = scored_batch([0.0], [logit(0.9), logit(0.6), -5.0])
    sampler = srns(batch, [3], srns_warmup=10)
    with_memory(sampler, [1, 2], [[0.9, 0.9, 0.9], [0.2, 0.8, 0.5]])
    sampler.epoch = epoch
    assert sampler.sample(batch).tolist() == [[expected]]


def test_srns_sd_needs_min_history_values():
    batch, _ = scored_batch([0.0], [logit(0.9), logit(0.6), -5.0])
    sampler = srns(batch, [3], srns_min_history=4)
    with_memory(sampler, [1, 2], [[0.9, 0.9, 0.9], [0.2, 0.8, 0.5]])
    sampler.epoch = 1
    assert sampler.sample(batch).tolist() == [[1]]  # three past values: B's sd does not count yet


def test_srns_memory_keeps_the_best_by_score_with_their_history():
    # union: A 2.20 (id 1), B 0.41 (id 2), entrants 3.0 (id 3) and -3.0 (id 4): keep ids 3 and 1
    batch, _ = scored_batch([0.0], [logit(0.9), logit(0.6), 3.0, -3.0])
    sampler = srns(batch, [3, 4])
    with_memory(sampler, [1, 2], [[0.9, 0.9, 0.9], [0.2, 0.8, 0.5]])
    sampler.sample(batch)
    ids, history, count = sampler.state["ids"][0].tolist(), sampler.state["history"][0], sampler.state["count"][0]
    assert sorted(ids) == [1, 3]
    kept, entrant = ids.index(1), ids.index(3)
    assert torch.allclose(history[kept], torch.tensor([0.0, 0.9, 0.9, 0.9, 0.9]))  # shifted, q now appended
    assert count[kept] == 4 and count[entrant] == 1
    assert math.isclose(history[entrant, -1].item(), 1 / (1 + math.exp(-3.0)), rel_tol=1e-6)


def test_srns_memory_holds_no_duplicate_and_keeps_the_remembered_copy():
    batch, _ = scored_batch([0.0], [logit(0.9), logit(0.6)])
    sampler = srns(batch, [1, 1])  # both entrants are A again
    with_memory(sampler, [1, 2], [[0.9, 0.9, 0.9], [0.2, 0.8, 0.5]])
    sampler.sample(batch)
    ids = sampler.state["ids"][0].tolist()
    assert sorted(ids) == [1, 2]
    assert sampler.state["count"][0, ids.index(1)] == 4  # A's history, not an entrant's


def test_srns_first_visit_fills_the_memory_from_the_pool():
    torch.manual_seed(7)
    batch, dataset = make_batch()
    sampler = make_sampler("SRNS", dataset)
    negatives = sampler.sample(batch)
    assert sampler.state["filled"].sum() == ROWS and (sampler.state["count"][sampler.state["filled"]] == 1).all()
    keys = sampler.state.keys(batch)
    memory = sampler.state["ids"][keys].long()
    assert not excluded_mask(dataset, memory).any() and not excluded_mask(dataset, negatives).any()
    distinct = torch.tensor([len(set(row)) for row in memory.tolist()])
    assert (distinct == memory.shape[1]).all()


def test_srns_gumbel_update_keeps_ids_as_a_softmax_sample():
    torch.manual_seed(8)
    scores = torch.tensor([1.0, 0.0, -1.0, 2.0])
    trials = 20000
    ids = torch.arange(1, 5).expand(trials, -1)
    kept = ids.gather(1, keep_best(ids, scores.expand(trials, -1), 1, tau=2.0)).squeeze(1)
    counts = torch.bincount(kept - 1, minlength=4).float()
    assert chi_square_ok(counts, torch.softmax(scores / 2.0, 0))


# ----- AdaSIR -------------------------------------------------------------------------
def adasir(batch: EncodedBatch, proposals: list[int], **keys):
    """AdaSIR over `batch` (keyed 0..B-1) whose refreshes propose `proposals`."""
    _, dataset = make_batch()
    sampler = make_sampler("AdaSIR", dataset, **{"adasir_proposals": len(proposals), **keys})
    sampler.state.keys = lambda b: torch.arange(b.size)
    sampler.exclusion.draw = lambda b, num: torch.tensor(proposals).expand(b.size, -1)
    return sampler


@pytest.mark.parametrize("copies", [1, 3])
def test_adasir_resamples_in_proportion_to_the_models_softmax(copies):
    torch.manual_seed(9)
    z = torch.linspace(-1.5, 1.5, 20)
    proposals = list(range(1, 21)) + [1] * (copies - 1)  # id 1 proposed `copies` times
    batch, _ = scored_batch([0.0] * 5000, z.tolist())
    sampler = adasir(batch, proposals, adasir_pool=10)
    pool, weight = sampler.resample(batch)
    counts = torch.bincount(pool.flatten() - 1, minlength=20).float()
    expected = z.exp() * torch.tensor([copies] + [1] * 19)
    assert chi_square_ok(counts, expected / expected.sum())
    per_copy = torch.softmax(torch.cat([z, z[:1].expand(copies - 1)]), 0)[:20]  # w of one proposal of each id
    assert torch.allclose(weight, per_copy[pool - 1])


def test_adasir_merge_takes_old_and_new_pool_half_each_and_a_new_row_draws_from_its_fill():
    torch.manual_seed(10)
    batch, _ = scored_batch([0.0] * ROWS, [0.0, 1.0, 2.0])
    sampler = adasir(batch, [1])
    proposals = iter([2, 3])  # the new rows' fill proposes id 2, the visit's refresh id 3
    sampler.exclusion.draw = lambda b, num: torch.full((b.size, num), next(proposals))
    half = ROWS // 2  # rows 0..half-1 hold a pool of id 1 with weight 0.25; the others have never been visited
    sampler.state["pool"][:half] = 1
    sampler.state["weight"][:half] = 0.25
    sampler.state["filled"][:half] = True
    negatives = sampler.sample(batch)
    assert (negatives[:half] == 1).all() and (negatives[half:] == 2).all()  # drawn before the refresh
    old, new = sampler.state["pool"][:half], sampler.state["pool"][half:]
    assert binomtest(int((old == 3).sum()), old.numel(), 0.5).pvalue > 0.001 and set(old.unique().tolist()) == {1, 3}
    assert binomtest(int((new == 3).sum()), new.numel(), 0.5).pvalue > 0.001 and set(new.unique().tolist()) == {2, 3}
    weight = sampler.state["weight"][: ROWS]
    pool = sampler.state["pool"][: ROWS]
    assert torch.equal(weight[pool == 1], torch.full_like(weight[pool == 1], 0.25))  # each weight stays with its id
    assert torch.equal(weight[pool != 1], torch.ones_like(weight[pool != 1]))  # one distinct proposal: softmax 1
    assert sampler.state["filled"].all()


def test_adasir_draws_from_the_pool_its_last_visit_left_and_nothing_excluded():
    torch.manual_seed(11)
    batch, dataset = make_batch()
    sampler = make_sampler("AdaSIR", dataset, neg_num=3)
    keys = sampler.state.keys(batch)
    sampler.sample(batch)
    for _ in range(3):
        left = sampler.state["pool"][keys].clone()
        negatives = sampler.sample(batch)
        assert (negatives.unsqueeze(-1) == left.unsqueeze(1)).any(-1).all()
        assert not excluded_mask(dataset, negatives).any() and not excluded_mask(dataset, left).any()
        assert (left > 0).all()


# ----- GNNO ---------------------------------------------------------------------------
def toy_graph_dataset() -> FakeDataset:
    """Users with training sequences (1, 2, 3, 4, 5) and (6, 1) over items 1..7, as prefix rows."""
    prefixes = [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4], [6]]
    seqs = torch.tensor([p + [0] * (6 - len(p)) for p in prefixes])
    dataset = FakeDataset(seqs, torch.tensor([2, 3, 4, 5, 1]), users=torch.tensor([1, 1, 1, 1, 2]))
    dataset.item_num = 8
    return dataset


def toy_overlap_matrix():
    return jaccard_overlap(adjacency(*transition_pairs(CONFIG_FIELDS, toy_graph_dataset(), 3), 8))


def toy_overlap():
    return toy_overlap_matrix().toarray()


def test_gnno_overlap_is_the_jaccard_of_the_window_graph():
    j = toy_overlap()
    expected = {(1, 5): 0.75, (1, 2): 1 / 3, (2, 3): 0.6, (2, 5): 0.4, (2, 6): 0.25, (1, 6): 0.0}
    for (a, b), value in expected.items():
        assert math.isclose(j[a, b], value, rel_tol=1e-6) and math.isclose(j[b, a], value, rel_tol=1e-6), (a, b)
    assert all(j[i, i] == 1 for i in range(1, 7))
    assert not j[7].any() and not j[0].any() and not j[:, 7].any()


def gnno_on_toy(target: int, rows: int, **keys):
    """GNNO on the toy graph and a batch of `rows` rows whose target is `target` and whose
    prefix is empty (only the target is excluded)."""
    dataset = toy_graph_dataset()
    config = {"gnno_graph_negatives": 5, "gnno_top_m": 1, "neg_candidate_num": 5, "neg_exclude": "window",
              "MAX_ITEM_LIST_LENGTH": 3, **keys}
    sampler = make_sampler("GNNO", dataset, **config)
    batch = EncodedBatch(seq_emb=torch.ones(rows, 1), item_table=torch.zeros(8, 1),
                         pos_items=torch.full((rows,), target), users=torch.ones(rows, dtype=torch.long),
                         target_index=torch.ones(rows, dtype=torch.long), item_seq=torch.zeros(rows, 1, dtype=torch.long),
                         seq_row=torch.arange(rows), seq_len=torch.zeros(rows, dtype=torch.long))
    return sampler, batch


@pytest.fixture(params=[("rejection", gnno.SparseOverlap), ("dense", gnno.SparseOverlap),
                        ("rejection", gnno.DenseOverlap), ("dense", gnno.DenseOverlap)],
                ids=["rejection-sparse", "dense-sparse", "rejection-dense", "dense-dense"])
def gnno_path(request, monkeypatch):
    """Force GNNO's graph draws through one path, rejection for every row (with rounds
    enough to fill) or the dense weights for every row, and its overlap into one storage."""
    path, storage = request.param
    if path == "rejection":
        monkeypatch.setattr(gnno, "MIN_ACCEPTANCE", 0.0)
        monkeypatch.setattr(gnno, "REJECTION_ROUNDS", 400)
    else:
        monkeypatch.setattr(gnno, "MIN_ACCEPTANCE", 2.0)
    monkeypatch.setattr(gnno, "overlap_on_device", storage)
    return request.param


def test_gnno_sparse_and_dense_overlaps_agree():
    torch.manual_seed(17)
    matrix = toy_overlap_matrix()
    sparse, dense = gnno.SparseOverlap(matrix, "cpu"), gnno.DenseOverlap(matrix, "cpu")
    rows, cols = torch.randint(0, 8, (50, 1)), torch.randint(0, 8, (50, 9))
    assert torch.equal(sparse(rows, cols), dense(rows, cols))
    assert torch.equal(sparse.dense_rows(torch.arange(8)), dense.dense_rows(torch.arange(8)))
    for threshold in (0.05, 0.4, 1.0):
        assert torch.allclose(sparse.weight_sums(threshold), dense.weight_sums(threshold))
    assert sparse.nnz == dense.nnz


def test_gnno_never_draws_above_the_hardness_and_admits_an_item_at_its_epoch(gnno_path):
    torch.manual_seed(12)
    j = toy_overlap()
    sampler, batch = gnno_on_toy(2, 500, gnno_hardness=0.05, gnno_pace=0.05, gnno_max_hardness=1.0)
    first_seen = {}
    for epoch in range(12):
        drawn = sampler.graph_draws(batch).flatten()
        assert (torch.as_tensor(j[2])[drawn] <= sampler.threshold() + 1e-9).all() and not (drawn == 2).any()
        for item in drawn.unique().tolist():
            first_seen.setdefault(item, epoch)
        sampler.on_epoch_end(epoch)
    # J(2, 5) = .4: eligible from the epoch where .05 + .05 e reaches .4 (e = 7, in floating point .05 * 7 + .05)
    assert first_seen[5] == 7 and first_seen[6] == 4 and first_seen[7] == 0


@pytest.mark.parametrize("hardness", [1.0, 0.5])
def test_gnno_draws_in_proportion_to_exp_overlap(gnno_path, hardness):
    torch.manual_seed(13)
    j = torch.as_tensor(toy_overlap()[1], dtype=torch.float)
    sampler, batch = gnno_on_toy(1, 4000, gnno_hardness=hardness, gnno_max_hardness=1.0)
    counts = torch.bincount(sampler.graph_draws(batch).flatten(), minlength=8).float()
    expected = j.exp() * (j <= hardness)  # J(1, 5) = .75 is above 0.5
    expected[[0, 1]] = 0  # padding and the target
    assert counts[expected == 0].sum() == 0 and chi_square_ok(counts, expected / expected.sum())


def test_gnno_rows_short_after_rejection_redraw_exactly(monkeypatch):
    """One round of one proposal per negative: most rows fall short, drop what they accepted
    and redraw all g from their dense weights; the mixture keeps the distribution."""
    monkeypatch.setattr(gnno, "MIN_ACCEPTANCE", 0.0)
    monkeypatch.setattr(gnno, "REJECTION_ROUNDS", 1)
    monkeypatch.setattr(gnno, "OVERSAMPLE", 1)
    torch.manual_seed(16)
    j = torch.as_tensor(toy_overlap()[1], dtype=torch.float)
    sampler, batch = gnno_on_toy(1, 4000, gnno_hardness=1.0, gnno_max_hardness=1.0)
    counts = torch.bincount(sampler.graph_draws(batch).flatten(), minlength=8).float()
    assert 0.5 < sampler.pop_diagnostics()["dense_rows"] < 1  # both paths drew
    expected = j.exp()
    expected[[0, 1]] = 0
    assert counts[[0, 1]].sum() == 0 and chi_square_ok(counts, expected / expected.sum())


def test_gnno_negative_is_in_the_dns_top_m_of_uniform_and_graph_candidates():
    torch.manual_seed(14)
    batch, dataset = make_batch()
    sampler = make_sampler("GNNO", dataset, neg_candidate_num=30, gnno_graph_negatives=10, gnno_top_m=3, neg_num=2)
    uniform, graph = sampler.exclusion.draw(batch, 20), sampler.exclusion.draw(batch, 10)
    sampler.candidate_pool = lambda b, num=None: uniform
    sampler.graph_draws = lambda b: graph
    union = torch.cat([uniform, graph], 1)
    top = union.gather(1, batch.score_detached(union).topk(3, dim=1).indices)
    for _ in range(5):
        negatives = sampler.sample(batch)
        assert (negatives.unsqueeze(-1) == top.unsqueeze(1)).any(-1).all()


def test_gnno_graph_draws_skip_the_excluded_items(gnno_path):
    torch.manual_seed(15)
    batch, dataset = make_batch()
    sampler = make_sampler("GNNO", dataset, gnno_hardness=1.0)
    assert not excluded_mask(dataset, sampler.graph_draws(batch)).any()


# ----- stable row keys, start-up errors -------------------------------------------------
@pytest.mark.parametrize("layout", ["prefix", "sequence"])
def test_row_keys_are_the_rows_index_in_the_training_split_under_both_layouts(layout, tiny_config):
    config = Config("SASRec", config_dict={**tiny_config, "sampler": "AdaSIR", "train_layout": layout})
    init_seed(config["seed"], config["reproducibility"])
    run = build_experiment(config)
    split = run.train_data._dataset.inter_feat
    users, targets = split["user_id"], split["item_id"]
    seen = []
    for batch in run.trainer.layout_rows(run.train_data):
        encoded = encode_batch(run.model, batch, layout)
        keys = run.sampler.state.keys(encoded)
        assert torch.equal(users[keys], encoded.users) and torch.equal(targets[keys], encoded.pos_items)
        seen.append(keys)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(len(users)))  # every row once an epoch


@pytest.mark.parametrize("keys, message", [
    ({"sampler": "SRNS", "neg_num": 3, "srns_memory": 2}, "neg_num = 3: must be <= srns_memory"),
    ({"sampler": "SRNS", "srns_min_history": 6}, "srns_min_history = 6: must be <= srns_history"),
    ({"sampler": "SRNS", "srns_score": "logit"}, "srns_score = 'logit'"),
    ({"sampler": "SRNS", "srns_tau": -1}, "srns_tau = -1"),
    ({"sampler": "AdaSIR", "neg_state_key": "user"}, "neg_state_key = 'user' needs neg_exclude = 'user'"),
    ({"sampler": "AdaSIR", "adasir_pool": 0}, "adasir_pool = 0"),
    ({"sampler": "GNNO", "gnno_graph_negatives": 20}, "gnno_graph_negatives = 20: must be <= neg_candidate_num"),
    ({"sampler": "GNNO", "gnno_window": 60}, "gnno_window = 60: must be <= MAX_ITEM_LIST_LENGTH"),
    ({"sampler": "GNNO", "neg_num": 2}, "neg_num = 2: must be <= gnno_top_m"),
    ({"sampler": "GNNO", "gnno_pace": "fast"}, "gnno_pace = 'fast'"),
    ({"sampler": "GNNO", "gnno_graph_mb": 0}, "gnno_graph_mb = 0"),
])
def test_bad_baseline_keys_are_refused_at_start_up(keys, message, tiny_config):
    with pytest.raises(ConfigError, match=message):
        Config("SASRec", config_dict={**tiny_config, **keys})


def test_gnno_refuses_a_graph_above_its_memory_cap_at_start_up(tiny_config, monkeypatch):
    monkeypatch.setattr(SampledTrainer, "fit", lambda *args, **kwargs: pytest.fail("training started"))
    with pytest.raises(ConfigError, match="gnno_graph_mb = 0.001: GNNO's overlap graph of dataset 'tiny' may take up to"):
        run_recbole_mdcns(model="SASRec", config_dict={**tiny_config, "sampler": "GNNO", "gnno_graph_mb": 0.001,
                                                       "gnno_window": 20})


def test_user_keyed_state_trains_with_user_exclusion(tiny_config):
    config = Config("SASRec", config_dict={**tiny_config, "sampler": "SRNS", "neg_state_key": "user",
                                           "neg_exclude": "user", "epochs": 1})
    run = build_experiment(config)
    run.trainer.fit(run.train_data, saved=False)
    assert run.sampler.state["filled"].sum() == len(set(run.train_data._dataset.inter_feat["user_id"].tolist()))
