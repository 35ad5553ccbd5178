"""End to end on the tiny dataset: training, evaluation, checkpoints, the run script."""
from __future__ import annotations

import glob
import logging
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import LEARNING_KEYS, random_ndcg
from recbole_mdcns import run_recbole_mdcns
from recbole_mdcns.config import Config
from recbole_mdcns import build_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "model, keys",
    [
        ("SASRec", {"sampler": "DNS"}),
        ("GRU4Rec", {"sampler": "popularity", "neg_loss": "BCE"}),
        ("NARM", {"sampler": "uniform", "neg_num": 3, "neg_exclude": "user"}),
        ("SASRec", {"sampler": "GenNi", "genni_item_ratio": 0.5}),
        ("SASRec", {"sampler": "DivNS", "epochs": 3}),
        ("GRU4Rec", {"sampler": "DivNS", "divns_dpp_mode": "greedy"}),
        ("SASRec", {"sampler": "none"}),  # RecBole's own CE training in the same harness
        ("SASRec", {"sampler": "SRNS", "epochs": 3, "neg_loss": "BCE"}),
        ("GRU4Rec", {"sampler": "AdaSIR", "train_layout": "sequence"}),
        ("SASRec", {"sampler": "GNNO", "gnno_top_m": 2, "neg_num": 2}),
        ("SASRec", {"sampler": "MDCNS", "mdcns_peer_model": "SASRec"}),  # a peer of self's own class
    ],
)
def test_train_and_test(model, keys, tiny_config):
    result = run_recbole_mdcns(model=model, config_dict={**tiny_config, "epochs": 2, **keys}, saved=True)
    assert set(result["test_result"]) == {"recall@10", "ndcg@10"}
    (checkpoint,) = [p for p in glob.glob(os.path.join(tiny_config["checkpoint_dir"], "*.pth")) if "-resume" not in p]
    state = torch.load(checkpoint, weights_only=True)  # the plugin's files need no unpickling
    assert state["config"]["sampler"] == Config(model, config_dict={**tiny_config, **keys})["sampler"]


@pytest.mark.parametrize("sampler", ["uniform", "popularity", "DNS", "GenNi", "DivNS", "MDCNS", "MixGCF", "AHNS",
                                     "SRNS", "AdaSIR", "GNNO", "none"])
def test_training_beats_a_random_ranking(sampler, tiny_config):
    """Users of the tiny data draw their items from a band of 17 of the 60 items: a few epochs
    of training must rank the test item far better than random scores do."""
    keys = {**tiny_config, **LEARNING_KEYS, "sampler": sampler}
    if sampler == "MDCNS":
        keys["mdcns_peer_config"] = {"embedding_size": 16, "hidden_size": 16, "num_layers": 1}
    run = build_experiment(Config("SASRec", config_dict=keys))
    baseline = random_ndcg(run)  # about 0.076 = sum_{r<=10} 1 / (60 log2(r + 1))
    run.trainer.fit(run.train_data, run.valid_data, saved=False)
    trained = run.trainer.evaluate(run.test_data, load_best_model=False)["ndcg@10"]
    assert trained > baseline + 0.06, (trained, baseline)


def logged_neg_score(caplog, epoch: int) -> float:
    """The sampler's mean negative score on the training log line of `epoch`."""
    line = next(r.getMessage() for r in caplog.records if f"epoch {epoch} training" in r.getMessage())
    return float(re.search(r"neg_score(?:\x1b\[[0-9;]*m)*: (-?[0-9.]+)", line).group(1))


def test_hardness_is_logged_per_epoch(tiny_config, caplog):
    scores = {}
    for sampler in ("uniform", "DNS"):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            run_recbole_mdcns(model="SASRec", config_dict={**tiny_config, "sampler": sampler, "epochs": 2}, saved=False)
        scores[sampler] = [logged_neg_score(caplog, epoch) for epoch in (0, 1)]
    # DNS's negatives, the best of 10 candidates, score far above uniform's, in every epoch
    assert all(dns > uniform + 0.05 for dns, uniform in zip(scores["DNS"], scores["uniform"])), scores


@pytest.mark.parametrize("seed", [3])  # seed 3: the best validation epoch is 0 of 2, not the last
def test_best_model_is_the_one_evaluated(tiny_config, seed):
    config = Config("SASRec", config_dict={**tiny_config, "sampler": "uniform", "epochs": 2, "seed": seed})
    run = build_experiment(config)
    model, trainer, train_data, valid_data, test_data = run.model, run.trainer, run.train_data, run.valid_data, run.test_data
    trainer.fit(train_data, valid_data, saved=True)
    best = torch.load(trainer.saved_model_file, weights_only=True)["state_dict"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # spoil the live model; evaluation must reload the saved best one
    trainer.evaluate(test_data, load_best_model=True)
    assert best.keys() == model.state_dict().keys()
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


def test_resume_restores_model_optimiser_and_progress(tiny_config):
    keys = {**tiny_config, "sampler": "DNS", "epochs": 2}
    config = Config("SASRec", config_dict=keys)
    run = build_experiment(config)
    model, trainer, train_data, valid_data = run.model, run.trainer, run.train_data, run.valid_data
    trainer.fit(train_data, valid_data, saved=True)
    run = build_experiment(Config("SASRec", config_dict=keys))
    fresh_model, fresh = run.model, run.trainer
    fresh.resume_checkpoint(trainer.saved_model_file)
    state = torch.load(trainer.saved_model_file, weights_only=True)
    assert fresh.start_epoch == state["epoch"] + 1
    assert all(torch.equal(v, fresh_model.state_dict()[k]) for k, v in state["state_dict"].items())
    resumed, saved = fresh.optimizer.state_dict()["state"], trainer.optimizer.state_dict()["state"]
    assert resumed.keys() == saved.keys()
    assert all(torch.equal(resumed[i]["exp_avg"], saved[i]["exp_avg"]) for i in saved)


def test_runs_started_in_the_same_second_write_different_checkpoints(tiny_config, monkeypatch):
    """RecBole names the best model <model>-<local time>.pth: two runs started in the same
    second in one checkpoint_dir must not overwrite each other's best model."""
    import recbole.trainer.trainer

    monkeypatch.setattr(recbole.trainer.trainer, "get_local_time", lambda: "Jan-01-2000_00-00-00")
    config = Config("SASRec", config_dict={**tiny_config, "sampler": "uniform"})
    first, second = (build_experiment(config).trainer.saved_model_file for _ in range(2))
    assert first != second
    assert os.path.dirname(first) == os.path.dirname(second) == os.path.abspath(tiny_config["checkpoint_dir"])
    assert all(os.path.basename(path).startswith("SASRec-") for path in (first, second))


def test_refuses_a_checkpoint_that_needs_unpickling(tiny_config, tmp_path):
    config = Config("SASRec", config_dict={**tiny_config, "sampler": "uniform"})
    trainer = build_experiment(config).trainer
    foreign = tmp_path / "foreign.pth"
    torch.save({"config": config, "epoch": 0}, foreign)  # a pickled object, as stock RecBole writes
    with pytest.raises(ValueError, match="not a recbole-mdcns checkpoint.*weights_only=False"):
        trainer.resume_checkpoint(foreign)


def test_run_script_on_the_command_line(data_root, tmp_path):
    cmd = [
        sys.executable, os.path.join(ROOT, "run_recbole_mdcns.py"), "--model=GRU4Rec", "--sampler=DNS",
        "--dataset=tiny", f"--data_path={data_root}", f"--checkpoint_dir={tmp_path}",
        "--config_files=quick", "--epochs=1", "--neg_candidate_num=10",
        "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # the run trained and saved its model with the command line's keys over the quick config's
    (best,) = [p for p in glob.glob(str(tmp_path / "*.pth")) if "-resume" not in p]
    config = torch.load(best, weights_only=True)["config"]
    assert (config["model"], config["sampler"], config["dataset"]) == ("GRU4Rec", "DNS", "tiny")
    assert (config["epochs"], config["neg_candidate_num"], config["train_batch_size"]) == (1, 10, 2048)
