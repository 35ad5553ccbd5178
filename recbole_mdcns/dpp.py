"""k-DPP selection, batched over groups of padded item sets; independent of RecBole.

A kernel is given by features F [G, n, r] with L = F F^T (a low-rank PSD kernel; pad
items with zero rows, which are never selected). Two modes:

- `sample_k_dpp`: exact k-DPP sampling (Kulesza and Taskar 2012, Alg. 8 then Alg. 1).
  The eigendecomposition uses whichever of L [n, n] and the dual B^T B [r, r] is
  smaller (section 3.3), so its cost is O(n r min(n, r) + min(n, r)^3).
- `greedy_map`: the fast greedy MAP algorithm of Chen, Zhang and Zhou (NeurIPS 2018).

Both reduce to one loop over the k selection steps (never over groups): an
incremental Cholesky of the kernel restricted to the chosen items, picking the item
with the largest residual (greedy) or drawing one in proportion to it (the chain rule
of a projection DPP, whose residuals sum to k - t at step t).
"""
from __future__ import annotations

import torch
from torch import Tensor


RANK_TOL = 1e-6  # eigenvalues (and greedy gains) below RANK_TOL x the largest count as zero


def _significant(eigvals: Tensor) -> Tensor:
    """Mask of the eigenvalues that count as non-zero."""
    return eigvals > RANK_TOL * eigvals.amax(dim=-1, keepdim=True).clamp(min=1e-30)


def _eigen(features: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues [G, m] and unit item-space eigenvectors [G, n, m] of L = F F^T,
    m = min(n, r), from the smaller of the primal and the dual problem (float64)."""
    f = features.double()
    n, r = f.shape[-2:]
    if n <= r:
        eigvals, eigvecs = torch.linalg.eigh(f @ f.transpose(-1, -2))
        return eigvals.clamp(min=0), eigvecs
    eigvals, dual_vecs = torch.linalg.eigh(f.transpose(-1, -2) @ f)
    eigvals = eigvals.clamp(min=0)
    eigvecs = (f @ dual_vecs) / eigvals.sqrt().clamp(min=1e-30).unsqueeze(-2)  # u = B v / sqrt(lambda)
    return eigvals, eigvecs


def _elementary_symmetric(eigvals: Tensor, k_max: int) -> Tensor:
    """e[g, l, j] = e_l(eigvals[g, :j]) for l <= k_max, j <= m: [G, k_max + 1, m + 1]."""
    groups, m = eigvals.shape
    e = torch.zeros(groups, k_max + 1, m + 1, dtype=eigvals.dtype, device=eigvals.device)
    e[:, 0, :] = 1.0
    for j in range(1, m + 1):
        e[:, 1:, j] = e[:, 1:, j - 1] + eigvals[:, j - 1 : j] * e[:, :-1, j - 1]
    return e


def _choose_eigenvectors(eigvals: Tensor, k: Tensor) -> Tensor:
    """Kulesza and Taskar Alg. 8: a set of exactly k[g] eigenvector indices: mask [G, m]."""
    eigvals = eigvals / eigvals.mean(dim=-1, keepdim=True).clamp(min=1e-30)  # k-DPPs ignore scale
    groups, m = eigvals.shape
    e = _elementary_symmetric(eigvals, int(k.max()))
    rows = torch.arange(groups, device=eigvals.device)
    remaining = k.clone()
    chosen = torch.zeros(groups, m, dtype=torch.bool, device=eigvals.device)
    for j in range(m, 0, -1):
        active = remaining > 0
        l = remaining.clamp(min=1)
        prob = eigvals[:, j - 1] * e[rows, l - 1, j - 1] / e[rows, l, j].clamp(min=1e-300)
        take = active & (torch.rand(groups, device=eigvals.device, dtype=eigvals.dtype) < prob)
        chosen[:, j - 1] = take
        remaining = remaining - take.long()
    return chosen


def _sequential_select(features: Tensor, k: Tensor, greedy: bool) -> Tensor:
    """Select k[g] items per group from L = F F^T by incremental Cholesky: [G, max k], -1 padded."""
    f = features.double()
    groups, n, _ = f.shape
    k_max = int(k.max()) if groups else 0
    rows = torch.arange(groups, device=f.device)
    residual = (f * f).sum(-1)  # d_i^2, the diagonal of L given the items chosen so far
    floor = RANK_TOL * residual.amax(dim=1).clamp(min=1e-30)
    chol = torch.zeros(groups, n, k_max, dtype=f.dtype, device=f.device)
    picked = torch.full((groups, k_max), -1, dtype=torch.long, device=f.device)
    for t in range(k_max):
        active = (t < k) & (residual.amax(dim=1) > floor)  # greedy stops where no gain is left
        weights = residual.clamp(min=0)
        if greedy:
            j = weights.argmax(dim=1)
        else:
            j = torch.multinomial((weights + (weights.sum(1, keepdim=True) <= 0)).float(), 1).squeeze(1)
        picked[:, t] = torch.where(active, j, -1)
        d_j = residual[rows, j].clamp(min=1e-30).sqrt()
        l_j = (f @ f[rows, j].unsqueeze(-1)).squeeze(-1)  # L[j, :]
        e = (l_j - (chol[:, :, :t] * chol[rows, j, :t].unsqueeze(1)).sum(-1)) / d_j.unsqueeze(1)
        e = e * active.unsqueeze(1)
        chol[:, :, t] = e
        residual = residual - e * e
        residual[rows[active], j[active]] = 0.0
    return picked


def sample_k_dpp(features: Tensor, k: Tensor) -> Tensor:
    """Exact k-DPP samples, k[g] items of group g with kernel F F^T: indices [G, max k], -1 padded.

    No k-subset beyond the kernel's rank has positive probability, so k[g] is capped at
    the numerical rank of group g's kernel.
    """
    eigvals, eigvecs = _eigen(features)
    significant = _significant(eigvals)
    eigvals = eigvals * significant
    k = torch.minimum(k, significant.sum(-1))
    chosen = _choose_eigenvectors(eigvals, k)
    projection = eigvecs * chosen.unsqueeze(-2)  # features of the projection kernel V V^T
    return _sequential_select(projection, k, greedy=False)


def greedy_map(features: Tensor, k: Tensor) -> Tensor:
    """Greedy MAP: k[g] items of group g, each maximising the log-det gain: [G, max k], -1 padded.

    Stops early (padding with -1) where no item adds a positive gain (k above the rank).
    """
    return _sequential_select(features, k, greedy=True)
