"""GenNi draws from softmax(alpha * z) over the non-excluded items."""
from __future__ import annotations

import math

import pytest
import torch

from benchmarks.benchlib import LargestTensor
from conftest import BATCH_ITEMS as N_ITEMS
from conftest import BATCH_ROWS as ROWS
from conftest import chi_square_ok, excluded_mask, make_batch, make_sampler
from recbole_mdcns import ConfigError
from recbole_mdcns.config import Config


def genni(dataset, **keys):
    return make_sampler("GenNi", dataset, **{"genni_alpha": 1.0, "genni_item_ratio": 1.0, "genni_memory_mb": 1024, **keys})



def one_row_batch(batch, row: int = 3):
    """The batch with every row a copy of `row`, so that all draws share one distribution."""
    for name in ("seq_emb", "pos_items", "users", "target_index"):
        value = getattr(batch, name)
        setattr(batch, name, value[row : row + 1].expand_as(value).clone())
    return batch


def target_distribution(batch, dataset, alpha: float) -> torch.Tensor:
    """The masked softmax of a one-row batch (its user is the dataset's row users - 1)."""
    z = alpha * (batch.item_table @ batch.seq_emb[0])
    z[0] = -math.inf
    all_ids = torch.arange(N_ITEMS + 1).expand(len(dataset.targets), -1)
    z[excluded_mask(dataset, all_ids)[batch.users[0] - 1]] = -math.inf
    return torch.softmax(z.double(), dim=0)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_frequencies_match_the_masked_softmax(alpha):
    torch.manual_seed(0)
    batch, dataset = make_batch()
    batch = one_row_batch(batch)
    sampler = genni(dataset, genni_alpha=alpha, neg_num=32)
    draws = torch.cat([sampler.sample(batch).flatten() for _ in range(4)])  # 32768 draws
    counts = torch.bincount(draws, minlength=N_ITEMS + 1).double()
    probs = target_distribution(batch, dataset, alpha)
    assert counts[probs == 0].sum() == 0  # target, prefix and padding never drawn
    assert chi_square_ok(counts, probs)


def test_alpha_zero_is_uniform_and_large_alpha_is_the_top_item():
    torch.manual_seed(1)
    batch, dataset = make_batch()
    batch = one_row_batch(batch)
    counts = torch.bincount(genni(dataset, genni_alpha=0.0, neg_num=64).sample(batch).flatten(), minlength=N_ITEMS + 1)
    free = target_distribution(batch, dataset, 1.0) > 0
    assert chi_square_ok(counts.double(), free.double() / free.sum())
    top = target_distribution(batch, dataset, 1.0).argmax()
    assert (genni(dataset, genni_alpha=1e4, neg_num=8).sample(batch) == top).all()


def test_excluded_items_are_never_drawn_on_varied_rows():
    torch.manual_seed(2)
    batch, dataset = make_batch()
    for ratio in (1.0, 0.1):
        negatives = genni(dataset, genni_item_ratio=ratio, neg_num=16).sample(batch)
        assert not excluded_mask(dataset, negatives).any()
        assert negatives.min() >= 1 and negatives.max() <= N_ITEMS


def test_subsample_is_shared_by_the_batch():
    torch.manual_seed(3)
    batch, dataset = make_batch()
    sampler = genni(dataset, genni_item_ratio=1 / N_ITEMS)  # |S| = 1
    negatives = sampler.sample(batch).flatten()
    # every row draws the single shared item unless it is excluded for that row
    assert negatives.unique(return_counts=True)[1].max() > ROWS * 0.9
    assert not excluded_mask(dataset, negatives.unsqueeze(1)).any()


def test_a_memory_budget_chunks_rows_without_changing_the_distribution():
    torch.manual_seed(5)
    batch, dataset = make_batch()
    batch = one_row_batch(batch)
    budget_rows = 16  # two float buffers of 16 x 200 per chunk
    sampler = genni(dataset, genni_alpha=2.0, neg_num=32, genni_memory_mb=budget_rows * 8 * N_ITEMS / 2**20)
    tracker = LargestTensor()
    with tracker:
        draws = sampler.sample(batch)
    assert tracker.largest < ROWS * N_ITEMS  # never a [B, N] tensor
    draws = torch.cat([draws.flatten()] + [sampler.sample(batch).flatten() for _ in range(3)])
    counts = torch.bincount(draws, minlength=N_ITEMS + 1).double()
    assert chi_square_ok(counts, target_distribution(batch, dataset, 2.0))


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"genni_alpha": -0.1}, "genni_alpha = -0.1: must be a number >= 0"),
        ({"genni_item_ratio": 0}, "genni_item_ratio = 0: must be a number > 0 and <= 1"),
        ({"genni_item_ratio": 1.5}, "genni_item_ratio = 1.5: must be a number > 0 and <= 1"),
        ({"genni_memory_mb": 0}, "genni_memory_mb = 0: must be a number > 0"),
    ],
)
def test_bad_genni_values(tiny_config, keys, message):
    with pytest.raises(ConfigError, match=message):
        Config("SASRec", config_dict={**tiny_config, "sampler": "GenNi", **keys})
