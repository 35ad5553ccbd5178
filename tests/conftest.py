"""Shared fixtures and helpers of the test files (which never import each other).

- the tiny generated atomic dataset (`write_tiny_dataset`, `data_root`) and the small
  CI config on it (`tiny_config`);
- a random batch of fixed embeddings and a sampler built on it without RecBole
  (`make_batch`, `make_sampler`, `FakeDataset`, `excluded_mask`);
- `chi_square_ok`, Pearson's goodness-of-fit test at the 99.9% quantile;
- `random_ndcg`, the test NDCG@10 of a random ranking under the run's own evaluator;
- an autouse fixture that runs every test in its own temporary working directory, so that
  RecBole's `log/`, `log_tensorboard/` and default `saved/` never land in the repository.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from scipy.stats import chi2

import recbole_mdcns  # noqa: F401  (applies the compatibility fixes)
from recbole_mdcns.samplers import sampler_class
from recbole_mdcns.history import target_indices
from recbole_mdcns.scoring import EncodedBatch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the benchmarks' shared helpers

# ----- the tiny atomic dataset ---------------------------------------------------------
N_USERS, N_ITEMS = 40, 60


def write_tiny_dataset(root: Path, name: str = "tiny", seed: int = 0) -> Path:
    """Atomic files for `name`: N_USERS users with 8-16 time-ordered items, one item feature."""
    rng = random.Random(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(1, N_USERS + 1):
        # users prefer a band of items, so that models can learn something
        centre = rng.randrange(1, N_ITEMS + 1)
        items = [(centre + rng.randrange(-8, 9)) % N_ITEMS + 1 for _ in range(rng.randint(8, 16))]
        lines += [f"{user}\t{item}\t{t}" for t, item in enumerate(items)]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    item_lines = ["item_id:token\tcategory:token"] + [f"{i}\t{i % 5}" for i in range(1, N_ITEMS + 1)]
    (folder / f"{name}.item").write_text("\n".join(item_lines) + "\n")
    return root


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def clean_argv(monkeypatch):
    """RecBole's Config reads --key=value from sys.argv; pytest's own flags must not leak in."""
    monkeypatch.setattr(sys, "argv", sys.argv[:1])


@pytest.fixture(autouse=True)
def temporary_cwd(monkeypatch, tmp_path_factory) -> Path:
    """Each test runs in a fresh empty directory (RecBole writes log/, log_tensorboard/ and
    saved/ relative to it; subprocesses inherit it). Tests that need the repository use
    absolute paths (REPO_ROOT)."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture
def tiny_config(data_root, tmp_path) -> dict[str, Any]:
    """The CI config (hidden 16, 1 layer, length 20, dropout 0) on the tiny dataset."""
    return {
        "dataset": "tiny",
        "data_path": str(data_root),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "category"]},
        "selected_features": ["category"],
        "checkpoint_dir": str(tmp_path / "saved"),
        "log_wandb": False,
        "show_progress": False,
        "seed": 7,
        "hidden_size": 16,
        "embedding_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "num_layers": 1,
        "n_heads": 1,
        "hidden_dropout_prob": 0.0,
        "attn_dropout_prob": 0.0,
        "dropout_prob": 0.0,
        "dropout_probs": [0.0, 0.0],
        "MAX_ITEM_LIST_LENGTH": 20,
        "train_batch_size": 64,
        "eval_batch_size": 256,
        "epochs": 1,
        "neg_candidate_num": 10,
        "metrics": ["Recall", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
    }


# ----- does a run learn? -------------------------------------------------------------
# enough training for the tiny data's item bands to show in the test metrics (a second or two)
LEARNING_KEYS = {"learning_rate": 0.01, "epochs": 10, "stopping_step": 10}


def random_ndcg(run: Any, repeats: int = 30) -> float:
    """Mean test NDCG@10 of uniformly random scores, through the run's own trainer and
    evaluator (same users, same masking): the baseline that a trained model must beat."""
    model = run.model
    generator = torch.Generator().manual_seed(0)
    real = model.full_sort_predict
    try:
        model.full_sort_predict = lambda interaction: torch.rand(real(interaction).shape, generator=generator)
        values = [run.trainer.evaluate(run.test_data, load_best_model=False)["ndcg@10"] for _ in range(repeats)]
    finally:
        del model.full_sort_predict
    return sum(values) / len(values)


# ----- a batch of fixed embeddings for the samplers ----------------------------------
BATCH_ITEMS, BATCH_DIM, BATCH_ROWS, BATCH_SEQ = 200, 8, 256, 6


def chi_square_ok(counts: torch.Tensor, probs: torch.Tensor) -> bool:
    """Pearson's statistic of `counts` against `probs` below the chi-square 99.9% quantile
    (cells with zero probability are left out; the caller checks that they stay empty)."""
    expected = probs * counts.sum()
    keep = expected > 0
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
    return stat < chi2.ppf(0.999, int(keep.sum()) - 1)


class FakeDataset:
    """What a sampler reads from RecBole's training dataset: prefix rows `seqs` [R, L]
    (right-padded), their `targets` and `users` (default: one user per row). Rows are
    read when a sampler is built, so a test may edit them before."""

    item_num = BATCH_ITEMS + 1
    user_num = BATCH_ROWS + 1

    def __init__(self, seqs: torch.Tensor, targets: torch.Tensor, users: torch.Tensor | None = None):
        self.seqs, self.targets = seqs, targets
        self.users = torch.arange(1, len(targets) + 1) if users is None else users

    @property
    def inter_feat(self) -> dict[str, torch.Tensor]:
        return {"user_id": self.users, "item_id": self.targets, "item_id_list": self.seqs,
                "item_length": (self.seqs > 0).sum(1)}

    def batch(self, seq_emb: torch.Tensor, item_table: torch.Tensor) -> EncodedBatch:
        """An encoded batch of all the rows (their target index is the prefix length: one row per user)."""
        return EncodedBatch(seq_emb=seq_emb, item_table=item_table, pos_items=self.targets, users=self.users,
                            target_index=target_indices(CONFIG_FIELDS, self), item_seq=self.seqs,
                            seq_row=torch.arange(len(self.seqs)), seq_len=(self.seqs > 0).sum(1))


CONFIG_FIELDS = {"ITEM_ID_FIELD": "item_id", "USER_ID_FIELD": "user_id", "LIST_SUFFIX": "_list",
                 "ITEM_LIST_LENGTH_FIELD": "item_length", "MAX_ITEM_LIST_LENGTH": BATCH_SEQ, "eval_args": {"order": "TO"}}


def make_batch(seed: int = 0) -> tuple[EncodedBatch, FakeDataset]:
    """BATCH_ROWS rows (one user each) over BATCH_ITEMS items, prefixes of BATCH_SEQ ids
    (half the rows padded), random embeddings; the dataset holds the same rows (the
    batch's targets are the dataset's tensor)."""
    gen = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, BATCH_ITEMS + 1, (BATCH_ROWS, BATCH_SEQ), generator=gen)
    seqs[: BATCH_ROWS // 2, BATCH_SEQ - 2 :] = 0  # half the rows are padded
    targets = torch.randint(1, BATCH_ITEMS + 1, (BATCH_ROWS,), generator=gen)
    dataset = FakeDataset(seqs, targets)
    batch = dataset.batch(torch.randn(BATCH_ROWS, BATCH_DIM, generator=gen),
                          torch.randn(BATCH_ITEMS + 1, BATCH_DIM, generator=gen))
    return batch, dataset


def make_sampler(name: str, dataset: FakeDataset, **keys):
    """Sampler `name` on `dataset` with the shared keys (BPR, K = 1, C = 50, history) over `keys`."""
    config = {
        **sampler_class(name).defaults(),
        "neg_loss": "BPR", "neg_num": 1, "neg_candidate_num": 50, "neg_exclude": "history",
        "neg_temperature": 1.0, "neg_logq": False, "neg_gbce_t": 0.75, "neg_shared": False,
        "dns_top_m": 1, "popularity_alpha": 1.0, "device": torch.device("cpu"), "dataset": "fake",
        **CONFIG_FIELDS, **keys,
    }
    return sampler_class(name)(config, dataset)


def excluded_mask(dataset: FakeDataset, negatives: torch.Tensor) -> torch.Tensor:
    """Which of the ids [R, K] are their row's target or in its prefix (one row per user)."""
    in_prefix = (negatives.unsqueeze(-1) == dataset.seqs.unsqueeze(1)).any(-1)
    return in_prefix | (negatives == dataset.targets.unsqueeze(1))
