"""benchmarks/quality.py end to end on the tiny dataset: run, resume, render."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from conftest import write_tiny_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality", REPO_ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _plan(data_root: Path) -> dict:
    return {
        "datasets": {"tiny": {"data_path": str(data_root)}},
        "models": ["SASRec"],
        "seeds": [2020],
        "base_config": {
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "metrics": ["Hit", "NDCG"], "topk": [10, 20], "valid_metric": "NDCG@10",
            "epochs": 1, "stopping_step": 1, "train_batch_size": 64, "eval_batch_size": 256,
            "hidden_size": 16, "embedding_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1,
            "num_layers": 1, "MAX_ITEM_LIST_LENGTH": 20, "show_progress": False, "log_wandb": False,
        },
        "runs": [
            {"sampler": "uniform"},
            {"sampler": "DNS", "variant": "C10", "config": {"neg_candidate_num": 10}},
        ],
    }


def test_run_resume_render(quality, tmp_path, capsys):
    data_root = write_tiny_dataset(tmp_path / "data")
    config = tmp_path / "quality.yaml"
    config.write_text(yaml.safe_dump(_plan(data_root)))
    out = tmp_path / "results"
    args = ["--config", str(config), "--out", str(out)]

    assert quality.main(args + ["--dry-run"]) == 0
    assert "2 runs to do" in capsys.readouterr().out
    assert not (out / "quality.jsonl").exists()

    assert quality.main(args) == 0
    rows = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert [(r["sampler"], r["variant"]) for r in rows] == [("uniform", ""), ("DNS", "C10")]
    for row in rows:
        for name in ("dataset", "model", "seed", "best_valid", "test", "epochs_run", "seconds_per_epoch",
                     "per_epoch", "config", "machine", "timestamp"):
            assert name in row, name
        assert row["epochs_run"] == 1 and row["seconds_per_epoch"] > 0
        assert {"ndcg@10", "hit@10", "ndcg@20", "hit@20"} <= set(row["test"])
        assert row["per_epoch"][0]["valid_score"] is not None
        assert "neg_score" in row["per_epoch"][0]["diagnostics"]
        assert row["config"]["seed"] == 2020
    assert rows[1]["config"]["neg_candidate_num"] == 10
    json.dumps(rows)  # plain JSON throughout

    md = (out / "quality.md").read_text()
    assert "## tiny, SASRec" in md
    assert "| uniform | " in md and "| DNS (C10) | " in md

    before = (out / "quality.jsonl").read_text()
    assert quality.main(args) == 0  # resume: nothing left to do
    assert (out / "quality.jsonl").read_text() == before

    assert quality.main(["--out", str(out), "--render-only"]) == 0
    first = (out / "quality.md").read_text()
    assert quality.main(["--out", str(out), "--render-only"]) == 0
    assert (out / "quality.md").read_text() == first == md


def test_plan_order_and_conversion(quality, tmp_path):
    plan = {
        "datasets": {"small": "unused.txt", "big": "unused.txt"},
        "models": ["SASRec", "GRU4Rec"],
        "seeds": [1, 2],
        "base_config": {},
        "runs": [{"sampler": "uniform"}, {"sampler": "DNS", "models": ["SASRec"], "datasets": ["big"]}],
    }
    runs = quality.planned_runs(plan)
    assert [r.label for r in runs[:3]] == ["small SASRec uniform seed 1", "small GRU4Rec uniform seed 1",
                                           "small SASRec uniform seed 2"]
    assert [r.label for r in runs if r.sampler == "DNS"] == ["big SASRec DNS seed 1", "big SASRec DNS seed 2"]
    todo = quality.select(runs, {runs[0].key}, datasets="SMALL", samplers="uniform")
    assert len(todo) == 3 and runs[0] not in todo

    source = tmp_path / "seq.txt"
    source.write_text("1 1 2 3 4\n2 2 3 4 5\n")
    data_dir = str(tmp_path / "data")
    assert quality.dataset_location("seq", str(source), data_dir) == data_dir
    inter = os.path.join(data_dir, "seq", "seq.inter")
    assert open(inter).read().count("\n") == 9
    os.utime(inter, (0, 0))
    quality.dataset_location("seq", str(source), data_dir)  # converted once
    assert os.path.getmtime(inter) == 0
