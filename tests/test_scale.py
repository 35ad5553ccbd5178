"""No sampler allocates a [B, N] tensor unless asked to (GenNi over the whole catalogue)."""
from __future__ import annotations

import pytest
import torch

from benchmarks.benchlib import LargestTensor
from conftest import BATCH_DIM as DIM
from conftest import BATCH_ROWS as ROWS
from conftest import FakeDataset, make_sampler

N_LARGE = 20_000  # catalogue far larger than the batch


def large_catalogue_batch():
    gen = torch.Generator().manual_seed(0)
    seqs = torch.randint(1, N_LARGE + 1, (ROWS, 6), generator=gen)
    targets = torch.randint(1, N_LARGE + 1, (ROWS,), generator=gen)
    dataset = FakeDataset(seqs, targets)
    dataset.item_num = N_LARGE + 1
    batch = dataset.batch(torch.randn(ROWS, DIM, generator=gen), torch.randn(N_LARGE + 1, DIM, generator=gen))
    return batch, dataset


@pytest.mark.parametrize(
    "name, keys",
    [
        ("uniform", {}),
        ("uniform", {"neg_num": 256, "neg_loss": "SSM", "neg_logq": True}),
        ("uniform", {"neg_num": 256, "neg_loss": "SSM", "neg_logq": True, "neg_shared": True}),
        ("popularity", {}),
        ("popularity", {"neg_num": 256, "neg_loss": "gBCE", "neg_shared": True}),
        ("DNS", {"neg_candidate_num": 100}),
        ("GenNi", {"genni_item_ratio": 0.01, "genni_alpha": 1.0, "genni_memory_mb": 1024}),
        ("GenNi", {"genni_item_ratio": 1.0, "genni_alpha": 1.0, "genni_memory_mb": 1.0}),  # chunked rows
        ("DivNS", {"neg_candidate_num": 10, "divns_runner_ups": 4, "divns_lambda": 0.7, "divns_penalty": 1.0,
                   "divns_cache_size": 256, "divns_dpp_mode": "sample"}),
    ],
)
def test_largest_tensor_of_a_step_stays_below_b_times_n(name, keys):
    batch, dataset = large_catalogue_batch()
    batch.item_table.requires_grad_(True)
    sampler = make_sampler(name, dataset, **keys)
    tracker = LargestTensor()
    with tracker:
        sampler.loss(batch).backward()
        sampler.on_epoch_end(0)
    # the item table's own gradient is [N, d]; nothing reaches [B, N]
    assert tracker.largest < ROWS * N_LARGE
