"""Shared fixtures: a tiny generated atomic dataset and the small CI config."""
from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest

import recbole_mdcns  # noqa: F401  (applies the compatibility fixes)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks' shared helpers

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
