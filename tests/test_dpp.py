"""The k-DPP module against exact enumeration, and the greedy MAP rule by hand."""
from __future__ import annotations

import itertools

import pytest
import torch

from conftest import chi_square_ok
from recbole_mdcns.dpp import greedy_map, sample_k_dpp


def kernel_features(kernel: torch.Tensor) -> torch.Tensor:
    """Features F with F F^T = kernel, for a PSD kernel [..., n, n]."""
    eigvals, eigvecs = torch.linalg.eigh(kernel)
    return eigvecs * eigvals.clamp(min=0).sqrt().unsqueeze(-2)


def exact_k_dpp(kernel: torch.Tensor, k: int) -> dict[tuple[int, ...], float]:
    """P(S) = det(L_S) / e_k(L) for every k-subset, by enumeration."""
    dets = {s: torch.linalg.det(kernel[list(s)][:, list(s)]).item() for s in itertools.combinations(range(len(kernel)), k)}
    total = sum(dets.values())
    return {s: d / total for s, d in dets.items()}


def random_kernel(n: int, rank: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    b = torch.randn(n, rank, generator=gen, dtype=torch.double)
    return b @ b.T


@pytest.mark.parametrize("n, rank, k", [(6, 6, 2), (7, 7, 3), (8, 4, 3), (8, 8, 5)])
def test_sampler_matches_exact_k_dpp_probabilities(n, rank, k):
    torch.manual_seed(n * 10 + k)
    kernel = random_kernel(n, rank, seed=n + k)
    draws = 40000
    features = kernel_features(kernel).unsqueeze(0).expand(draws, -1, -1)
    picks = sample_k_dpp(features, torch.full((draws,), k))
    assert (picks >= 0).all() and picks.shape == (draws, k)
    subsets = [tuple(sorted(row)) for row in picks.tolist()]
    assert all(len(set(s)) == k for s in subsets)  # exactly k distinct items
    exact = exact_k_dpp(kernel, k)
    index = {s: i for i, s in enumerate(exact)}
    counts = torch.bincount(torch.tensor([index[s] for s in subsets]), minlength=len(exact)).double()
    assert chi_square_ok(counts, torch.tensor(list(exact.values()), dtype=torch.double))


def test_rank_deficient_kernel_never_yields_a_zero_probability_set():
    torch.manual_seed(0)
    kernel = random_kernel(8, 3, seed=1)
    features = kernel_features(kernel).unsqueeze(0).expand(2000, -1, -1)
    picks = sample_k_dpp(features, torch.full((2000,), 3))
    dets = torch.stack([torch.linalg.det(kernel[p][:, p]) for p in picks[:200]])
    assert (dets > 1e-9).all()


def test_groups_of_different_sizes_and_k_in_one_batch():
    torch.manual_seed(1)
    kernel = random_kernel(6, 6, seed=2)
    padded = torch.zeros(2, 8, 6, dtype=torch.double)
    padded[0, :6] = kernel_features(kernel)
    padded[1, :4] = kernel_features(kernel[:4, :4])[:, :4] @ torch.eye(4, 6, dtype=torch.double)
    picks = sample_k_dpp(padded, torch.tensor([3, 2]))
    assert picks.shape == (2, 3)
    assert set(picks[0].tolist()) <= set(range(6)) and len(set(picks[0].tolist())) == 3
    assert set(picks[1, :2].tolist()) <= set(range(4)) and picks[1, 2] == -1


def test_greedy_map_on_a_hand_checked_kernel():
    # items 0 and 1 are near-duplicates with the largest norms; 2 is orthogonal to both
    features = torch.tensor([[2.0, 0.0], [1.9, 0.3], [0.0, 1.5], [0.5, 0.5]], dtype=torch.double)
    # step 1: largest L_ii = 4.0 -> item 0. step 2: residuals are 1.5^2 = 2.25 for item 2,
    # 0.3^2 = 0.09 for item 1 and 0.5^2 = 0.25 for item 3 -> item 2.
    assert greedy_map(features.unsqueeze(0), torch.tensor([2])).tolist() == [[0, 2]]
    # step 3: item 3 lies in the span of items 0 and 2 and item 1 too: both residuals 0
    kernel = features @ features.T
    gains = {j: torch.linalg.det(kernel[[0, 2, j]][:, [0, 2, j]]).item() for j in (1, 3)}
    assert max(gains.values()) < 1e-9
