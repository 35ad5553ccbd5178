"""The ranking losses against hand-computed values, and the proposal probabilities that the
logQ correction subtracts against the draws they describe."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import BATCH_ITEMS as N_ITEMS
from conftest import excluded_mask, make_batch, make_sampler
from recbole_mdcns.config import Config
from recbole_mdcns.losses import RankingLoss, gbce_beta, mixed_log_mass, sampled_softmax_loss
from recbole_mdcns.params import ConfigError
from recbole_mdcns.samplers.base import uniform_ids

POS = torch.tensor([2.0, -1.0])
NEG = torch.tensor([[1.0, 0.0], [0.5, -2.0]])


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_bpr_and_bce_match_their_formulas():
    bpr = -(math.log(sig(1.0)) + math.log(sig(2.0)) + math.log(sig(-1.5)) + math.log(sig(1.0))) / 4
    bce = (-math.log(sig(2.0)) - (math.log(1 - sig(1.0)) + math.log(1 - sig(0.0))) / 2
           - math.log(sig(-1.0)) - (math.log(1 - sig(0.5)) + math.log(1 - sig(-2.0))) / 2) / 2
    assert RankingLoss("BPR")(POS, NEG).item() == pytest.approx(bpr, rel=1e-6)
    assert RankingLoss("BCE")(POS, NEG).item() == pytest.approx(bce, rel=1e-6)


def test_sampled_softmax_matches_its_formula_with_temperature_and_log_q():
    def row(p, negs, t, log_q):  # the correction is log(K Q): the expected count among K = 2 draws
        logits = [p / t] + [n / t - q - math.log(len(negs)) for n, q in zip(negs, log_q)]
        return math.log(sum(math.exp(x) for x in logits)) - p / t

    log_q = torch.tensor([[-1.0, -2.0], [0.5, -0.5]])
    for t in (1.0, 0.5):
        expected = (row(2.0, [1.0, 0.0], t, [-1.0, -2.0]) + row(-1.0, [0.5, -2.0], t, [0.5, -0.5])) / 2
        assert RankingLoss("SSM", temperature=t)(POS, NEG, log_q).item() == pytest.approx(expected, rel=1e-6)
    plain = (row(2.0, [1.0, 0.0], 1.0, [-math.log(2)] * 2) + row(-1.0, [0.5, -2.0], 1.0, [-math.log(2)] * 2)) / 2
    assert RankingLoss("SSM")(POS, NEG).item() == pytest.approx(plain, rel=1e-6)


def test_sampled_softmax_over_every_other_item_is_full_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    h, table = torch.randn(5, 8, generator=gen), torch.randn(N_ITEMS + 1, 8, generator=gen)
    targets = torch.randint(1, N_ITEMS + 1, (5,), generator=gen)
    scores = h @ table[1:].T  # [5, N], id i at column i - 1
    others = torch.stack([torch.cat([scores[r, : t - 1], scores[r, t:]]) for r, t in enumerate(targets.tolist())])
    full = F.cross_entropy(scores, targets - 1)
    assert sampled_softmax_loss(scores.gather(1, (targets - 1).unsqueeze(1)).squeeze(1), others) == pytest.approx(full.item(), rel=1e-5)
    # with the logQ correction of uniform draws (Q = 1 / (N - 1)), still full CE: K Q = 1
    positive = scores.gather(1, (targets - 1).unsqueeze(1)).squeeze(1)
    corrected = sampled_softmax_loss(positive, others, neg_log_q=torch.full_like(others, -math.log(N_ITEMS - 1)))
    assert corrected == pytest.approx(full.item(), rel=1e-5)
    # and half of them, each drawn with Q = 1 / (N - 1): the sum over them counts twice
    half = others[:, ::2]
    estimate = sampled_softmax_loss(positive, half, neg_log_q=torch.full_like(half, -math.log(N_ITEMS - 1)))
    twice = torch.logsumexp(torch.cat([positive.unsqueeze(1), half + math.log(others.size(1) / half.size(1))], 1), 1)
    assert estimate == pytest.approx((twice - positive).mean().item(), rel=1e-5)


def test_mixed_negatives_join_the_softmax_corrected_by_their_expected_count():
    """A row's own negatives as they are, each shared one less log(S / N), masked ones out."""
    score, valid = torch.tensor([[0.2, 3.0, -0.4], [1.5, 0.0, 0.7]]), torch.tensor([[True, False, True], [True] * 3])

    def row(p, negs, mixed, t):
        logits = [p / t] + [n / t for n in negs] + [m / t - math.log(3 / 50) for m in mixed]
        return math.log(sum(math.exp(x) for x in logits)) - p / t

    for t in (1.0, 0.5):
        expected = (row(2.0, [1.0, 0.0], [0.2, -0.4], t) + row(-1.0, [0.5, -2.0], [1.5, 0.0, 0.7], t)) / 2
        mixed = mixed_log_mass(score, math.log(3 / 50), valid, t)
        assert RankingLoss("SSM", temperature=t)(POS, NEG, mixed=mixed).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="mixed negatives join neg_loss SSM, not 'BCE'"):
        RankingLoss("BCE")(POS, NEG, mixed=mixed)


def test_a_row_without_a_valid_mixed_negative_gets_the_plain_loss_and_finite_gradients():
    score = torch.tensor([[0.2, 3.0], [1.5, 0.0]], requires_grad=True)
    mixed = mixed_log_mass(score, 0.0, torch.tensor([[False, False], [True, True]]))
    loss = RankingLoss("SSM")(POS[:1], NEG[:1], mixed=mixed[:1])
    assert loss.item() == pytest.approx(RankingLoss("SSM")(POS[:1], NEG[:1]).item())
    loss.backward()
    assert torch.equal(score.grad, torch.zeros(2, 2))


def test_mixed_negatives_over_every_other_item_once_are_full_cross_entropy():
    """Every other item shared once (count 1, log 0), the row's own negative masked out."""
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(4, N_ITEMS, generator=gen)  # id i at column i - 1
    targets = torch.randint(1, N_ITEMS + 1, (4,), generator=gen)
    positive = scores.gather(1, (targets - 1).unsqueeze(1)).squeeze(1)
    others = torch.arange(1, N_ITEMS + 1).unsqueeze(0) != targets.unsqueeze(1)
    own = torch.zeros(4, 1)
    loss = sampled_softmax_loss(positive, own, valid=torch.zeros(4, 1, dtype=torch.bool),
                                mixed=mixed_log_mass(scores, 0.0, others))
    assert loss.item() == pytest.approx(F.cross_entropy(scores, targets - 1).item(), rel=1e-5)


def test_gbce_matches_gsasrec():
    assert gbce_beta(0.75, 0.01) == pytest.approx(0.01 * (0.75 * (1 - 1 / 0.01) + 1 / 0.01))
    assert gbce_beta(0.0, 0.01) == 1.0
    beta = gbce_beta(0.75, 2 / 99)
    expected = (-(beta * math.log(sig(2.0)) + math.log(1 - sig(1.0)) + math.log(1 - sig(0.0)))
                - (beta * math.log(sig(-1.0)) + math.log(1 - sig(0.5)) + math.log(1 - sig(-2.0)))) / 2
    assert RankingLoss("gBCE", gbce_beta=beta)(POS, NEG).item() == pytest.approx(expected, rel=1e-6)
    # t = 0 at K = 1 is BCE
    one = NEG[:, :1]
    assert RankingLoss("gBCE", gbce_beta=gbce_beta(0.0, 1 / 99))(POS, one) == pytest.approx(RankingLoss("BCE")(POS, one).item())


def test_from_config_reads_the_keys():
    keys = {"neg_loss": "gBCE", "neg_num": 4, "neg_temperature": 0.5, "neg_gbce_t": 0.5}
    loss = RankingLoss.from_config(keys, n_items=101)
    assert loss == RankingLoss("gBCE", 0.5, 1 - 0.5 * (1 - 4 / 100))


@pytest.mark.parametrize("name, keys", [("uniform", {}), ("popularity", {"popularity_alpha": 0.7}),
                                        ("GenNi", {"genni_alpha": 2.0, "genni_item_ratio": 1.0, "genni_memory_mb": 64})])
def test_the_reported_proposal_is_the_distribution_of_the_draws(name, keys):
    """For one row drawn many times, exp(log Q) of each drawn id is its frequency."""
    torch.manual_seed(0)
    batch, dataset = make_batch()
    row = 5
    for field in ("seq_emb", "pos_items", "users", "target_index", "seq_row", "seq_len"):
        value = getattr(batch, field)
        setattr(batch, field, value[row : row + 1].expand(200, *value.shape[1:]).clone())
    sampler = make_sampler(name, dataset, neg_num=50, **keys)
    draws, log_q = zip(*(sampler.sample_with_log_q(batch) for _ in range(4)))
    draws, q = torch.cat(draws).flatten(), torch.cat(log_q).flatten().exp()
    counts = torch.bincount(draws, minlength=N_ITEMS + 1).double()
    expected = torch.zeros(N_ITEMS + 1, dtype=torch.double)
    expected[draws] = q.double()  # an id's Q is the same in every draw (checked next)
    assert torch.allclose(expected[draws], q.double(), rtol=1e-4)
    if name == "GenNi":  # its rarest ids may never be drawn; they carry almost no mass
        assert 0.97 < expected.sum() < 1.0 + 1e-4
    else:  # every free id is drawn: their Q sum to 1
        assert expected.sum() == pytest.approx(1.0, abs=1e-4)
    # each frequent id's frequency is its Q within 5 standard errors, and the rare ones' pooled
    n = len(draws)
    frequent = expected * n >= 5
    freq = torch.cat([counts[frequent], counts[~frequent].sum().unsqueeze(0)]) / n
    prob = torch.cat([expected[frequent], expected[~frequent].sum().unsqueeze(0)])
    error = (freq - prob).abs() / (prob * (1 - prob) / n).sqrt().clamp(min=1e-12)
    assert error.max() < 5


@pytest.mark.parametrize("keys, message", [
    ({"sampler": "DNS", "neg_loss": "SSM", "neg_logq": True}, "neg_logq = true: DNS selects its negatives by their scores"),
    ({"sampler": "MDCNS", "neg_loss": "SSM", "neg_logq": True}, "neg_logq = true: MDCNS selects"),
    ({"sampler": "uniform", "neg_loss": "BPR", "neg_logq": True}, "applies to neg_loss SSM, not 'BPR'"),
    ({"sampler": "uniform", "neg_gbce_t": 1.5}, "neg_gbce_t = 1.5"),
    ({"sampler": "uniform", "neg_loss": "SSM", "neg_temperature": 0}, "neg_temperature = 0"),
    ({"sampler": "DNS", "neg_mix_num": 64}, "neg_mix_num = 64: mixed negatives join the sampled softmax, so they need "
                                            "neg_loss SSM, not 'BPR'"),
    ({"sampler": "uniform", "neg_loss": "SSM", "neg_mix_num": -1}, "neg_mix_num = -1"),
    ({"sampler": "uniform", "neg_loss": "SSM", "neg_logq": True, "neg_mix_num": 8},
     "neg_mix_num = 8 with neg_logq = true: the corrected K already estimate the whole catalogue"),
    ({"sampler": "MDCNS", "neg_shared": True}, "neg_shared = true: MDCNS's negatives depend on the row.*"
                                                "share their candidate pool instead: DNS, MixGCF"),
    ({"sampler": "GenNi", "neg_shared": True}, "neg_shared = true: GenNi's negatives depend on the row.*"
                                                "GenNi shares its subsample with genni_item_ratio below 1"),
    ({"sampler": "DivNS", "neg_loss": "SSM", "neg_logq": True}, "neg_logq = true: DivNS selects"),
])
def test_loss_mistakes_are_reported_at_start_up(keys, message, tiny_config):
    with pytest.raises(ConfigError, match=message):
        Config("SASRec", config_dict={**tiny_config, **keys})


@pytest.mark.parametrize("loss", ["SSM", "gBCE"])
@pytest.mark.parametrize("sampler", ["uniform", "popularity", "GenNi", "DNS", "DivNS", "MDCNS", "MixGCF", "AHNS", "SRNS",
                                     "AdaSIR", "GNNO"])
def test_every_sampler_trains_with_the_new_losses(sampler, loss, tiny_config):
    from recbole_mdcns import run_recbole_mdcns

    keys = {**tiny_config, "sampler": sampler, "neg_loss": loss, "neg_num": 1 if sampler == "DivNS" else 4,
            "dns_top_m": 4, "mdcns_top_m": 4, "mixgcf_top_m": 4, "gnno_top_m": 4,
            "neg_logq": loss == "SSM" and sampler in ("uniform", "popularity", "GenNi")}
    result = run_recbole_mdcns(model="SASRec", config_dict=keys, saved=False)
    assert math.isfinite(result["best_valid_score"])


@pytest.mark.parametrize("kind", ["BPR", "BCE", "SSM", "gBCE"])
def test_a_masked_negative_does_not_count(kind):
    """valid=False removes a negative from its row's loss, as if it had not been drawn."""
    pos, neg = torch.tensor([0.3, -0.2]), torch.tensor([[0.5, -1.0, 9.0], [0.1, 0.2, -0.3]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    loss = RankingLoss(kind, temperature=0.7, gbce_beta=0.4)
    masked = loss(pos, neg, valid=valid)
    by_row = (loss(pos[:1], neg[:1, :2]) + loss(pos[1:], neg[1:])) / 2
    assert masked.item() == pytest.approx(by_row.item(), rel=1e-6)


def test_shared_negatives_are_scored_by_every_row_and_masked_where_excluded():
    torch.manual_seed(0)
    batch, dataset = make_batch()
    sampler = make_sampler("uniform", dataset, neg_num=2, neg_shared=True)
    free_for_row_0 = next(i for i in range(1, N_ITEMS + 1) if not excluded_mask(dataset, torch.tensor([[i]] * len(dataset.targets)))[0])
    shared = torch.tensor([int(batch.pos_items[0]), free_for_row_0])
    sampler.sample_shared = lambda b: (shared, torch.zeros(2))
    valid = ~excluded_mask(dataset, shared.expand(batch.size, -1))  # the rows' own targets and prefixes
    assert not valid[0, 0] and valid[0, 1] and valid.any(0).all()
    expected = RankingLoss("BPR")(batch.pos_score(), batch.seq_emb @ batch.item_table[shared].T, valid=valid)
    assert sampler.loss(batch).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mixed_negatives_are_one_uniform_draw_for_the_batch_scored_by_each_model(monkeypatch):
    """S ids for the whole batch, each model scoring them with its own encoding, a row's
    excluded ids (its target, its prefix) masked out of its loss."""
    batch, dataset = make_batch()
    row_0_excludes = int(batch.pos_items[0])
    ids = torch.tensor([row_0_excludes, 7, 7, 30])
    monkeypatch.setattr("recbole_mdcns.samplers.base.uniform_ids", lambda n, num, device: ids[:num])
    sampler = make_sampler("DNS", dataset, neg_loss="SSM", neg_mix_num=4, neg_temperature=0.5)
    other = make_batch(seed=1)[0]
    mine, theirs = sampler.mixed_log_masses(batch, other)
    valid = ~excluded_mask(dataset, ids.expand(batch.size, -1))
    assert not valid[0, 0]
    for got, encoded in ((mine, batch), (theirs, other)):
        expected = mixed_log_mass(encoded.seq_emb @ encoded.item_table[ids].T, math.log(4 / N_ITEMS), valid, 0.5)
        assert torch.allclose(got, expected)
    assert make_sampler("DNS", dataset, neg_loss="SSM").mixed_log_masses(batch, other) == (None, None)


def test_uniform_ids_cover_every_item_and_never_the_padding():
    torch.manual_seed(0)
    counts = torch.bincount(uniform_ids(N_ITEMS, 200 * N_ITEMS, torch.device("cpu")), minlength=N_ITEMS + 1)
    assert counts[0] == 0 and len(counts) == N_ITEMS + 1 and counts[1:].min() > 100


def test_uniform_with_mixed_negatives_adds_them_to_its_own():
    batch, dataset = make_batch()
    sampler = make_sampler("uniform", dataset, neg_loss="SSM", neg_num=2, neg_mix_num=4)
    own = torch.randint(1, N_ITEMS + 1, (batch.size, 2))
    sampler.sample = lambda b: own
    mixed = torch.randn(batch.size)
    sampler.mixed_log_masses = lambda b: (mixed,)
    expected = RankingLoss("SSM")(batch.pos_score(), batch.score(own), mixed=mixed)
    assert sampler.loss(batch).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("sampler, keys", [
    ("uniform", {"neg_num": 32, "neg_logq": True}), ("popularity", {"neg_num": 32, "neg_logq": True}),
    ("DNS", {"neg_num": 8, "dns_top_m": 8, "neg_candidate_num": 40}),
    ("MixGCF", {"neg_num": 2, "mixgcf_top_m": 4, "neg_candidate_num": 40}),
])
def test_shared_negatives_train(sampler, keys, tiny_config):
    from recbole_mdcns import run_recbole_mdcns

    keys = {**tiny_config, "sampler": sampler, "neg_loss": "SSM", "neg_shared": True, **keys}
    assert math.isfinite(run_recbole_mdcns(model="SASRec", config_dict=keys, saved=False)["best_valid_score"])


@pytest.mark.parametrize("sampler", ["DNS", "MDCNS"])
def test_mixed_negatives_train(sampler, tiny_config):
    from recbole_mdcns import run_recbole_mdcns

    keys = {**tiny_config, "sampler": sampler, "neg_loss": "SSM", "neg_mix_num": 64}
    assert math.isfinite(run_recbole_mdcns(model="SASRec", config_dict=keys, saved=False)["best_valid_score"])
