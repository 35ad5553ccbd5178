"""Exact resume after SIGKILL, determinism, safe checkpoints, typos and data faults."""
from __future__ import annotations

import glob
import json
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch

from recbole_mdcns import ConfigError, run_recbole_mdcns
from recbole_mdcns import build_experiment
from recbole_mdcns.config import Config
from recbole_mdcns.samplers import sampler_names

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL_PEER = {"embedding_size": 16, "hidden_size": 16, "num_layers": 1}


def run_worker(config: dict, tmp_path, name: str, *options: str) -> subprocess.CompletedProcess:
    config_file, result_file = tmp_path / f"{name}.json", tmp_path / f"{name}-result.json"
    config_file.write_text(json.dumps(config))
    cmd = [sys.executable, os.path.join(HERE, "train_worker.py"), str(config_file), str(result_file), *options]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out.result = json.loads(result_file.read_text()) if result_file.exists() else None
    return out


# MDCNS with the grad scaler: two models, each scaled, unscaled and stepped, both checkpointed
# DivNS under train_layout sequence: its per-user state counts positions, the loader is the layout's
# SRNS and AdaSIR: per-row state; GNNO: its graph rebuilt, its hardness from the epoch
@pytest.mark.parametrize("sampler, keys", [("DNS", {}), ("DivNS", {}), ("MDCNS", {"enable_scaler": True}),
                                           ("DivNS", {"train_layout": "sequence", "train_batch_size": 16}),
                                           ("SRNS", {}), ("GNNO", {}),
                                           ("AdaSIR", {"train_layout": "sequence", "train_batch_size": 16})])
def test_killed_during_epoch_3_and_resumed_ends_like_the_uninterrupted_run(sampler, keys, tiny_config, tmp_path):
    config = {**tiny_config, "model": "SASRec", "sampler": sampler, "epochs": 5, "stopping_step": 10,
              "mdcns_peer_config": SMALL_PEER, **keys}
    whole = run_worker({**config, "checkpoint_dir": str(tmp_path / "whole")}, tmp_path, "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    crashed_dir = tmp_path / "crashed"
    crashed = run_worker({**config, "checkpoint_dir": str(crashed_dir)}, tmp_path, "crashed", "--kill-epoch", "2")
    assert crashed.returncode == -signal.SIGKILL and crashed.result is None
    (state,) = glob.glob(str(crashed_dir / "*-resume.pth"))
    assert torch.load(state, weights_only=True)["epoch"] == 1  # epochs 0 and 1 were complete

    resumed = run_worker({**config, "checkpoint_dir": str(crashed_dir)}, tmp_path, "resumed", "--resume", state)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.result == whole.result


@pytest.mark.parametrize("layout", ["prefix", "sequence"])
@pytest.mark.parametrize("sampler", [name for name in sampler_names()])
def test_same_seed_same_metrics(sampler, layout, tiny_config):
    keys = {**tiny_config, "sampler": sampler, "epochs": 2, "mdcns_peer_config": SMALL_PEER, "train_layout": layout}
    first = run_recbole_mdcns(model="SASRec", config_dict=keys, saved=False)
    second = run_recbole_mdcns(model="SASRec", config_dict=keys, saved=False)
    assert first["best_valid_result"] == second["best_valid_result"]
    assert first["test_result"] == second["test_result"]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_pickle_is_refused_by_resume(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"epoch": 0, "payload": RunsCode()}, f)
    trainer = build_experiment(Config("SASRec", config_dict={**tiny_config, "sampler": "uniform"})).trainer
    with pytest.raises(ValueError, match="not a recbole-mdcns checkpoint.*weights_only=False"):
        trainer.resume_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()


def test_every_checkpoint_loads_with_weights_only(tiny_config):
    keys = {**tiny_config, "sampler": "MDCNS", "epochs": 2, "mdcns_peer_config": SMALL_PEER}
    run = build_experiment(Config("SASRec", config_dict=keys))
    trainer, train_data, valid_data = run.trainer, run.train_data, run.valid_data
    trainer.fit(train_data, valid_data, saved=True)
    for path in (trainer.saved_model_file, trainer.resume_file):
        state = torch.load(path, weights_only=True)
        assert state["config"]["sampler"] == "MDCNS" and "peer" in state["co_trained"]
    assert "rng" in torch.load(trainer.resume_file, weights_only=True)


def test_a_typo_names_the_closest_key(tiny_config):
    with pytest.raises(ConfigError, match="mdcns_gama is not a recbole-mdcns key \\(did you mean mdcns_gamma\\?\\)"):
        Config("SASRec", config_dict={**tiny_config, "sampler": "MDCNS", "mdcns_gama": 2.0})


def test_every_problem_is_reported_at_once(tiny_config):
    with pytest.raises(ConfigError) as error:
        Config("SASRec", config_dict={**tiny_config, "sampler": "DNS", "neg_num": "two", "dns_top_m": 50, "dns_topm": 3})
    text = str(error.value)
    assert "neg_num = 'two'" in text and "dns_top_m = 50: must be <= neg_candidate_num" in text and "dns_topm" in text
