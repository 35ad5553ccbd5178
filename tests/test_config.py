"""Bad input gets one clear message at start-up, before any training time is spent."""
from __future__ import annotations

import os

import pytest
import torch

from recbole_mdcns import ConfigError, run_recbole_mdcns
from recbole_mdcns.config import Config
from recbole_mdcns.trainer import SampledTrainer


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started despite a bad config")

    monkeypatch.setattr(SampledTrainer, "fit", refuse)


def start(tiny_config, model="SASRec", **keys):
    return run_recbole_mdcns(model=model, config_dict={**tiny_config, **keys})


def test_unknown_sampler_lists_the_valid_ones(tiny_config, no_training):
    with pytest.raises(ConfigError, match="sampler = 'hardest'.*valid samplers: none, AdaSIR, AHNS, DivNS, DNS, GenNi, GNNO, MDCNS, MixGCF, popularity, SRNS, uniform"):
        start(tiny_config, sampler="hardest")


def test_unsupported_model_names_the_supported_ones(tiny_config, no_training):
    with pytest.raises(ConfigError, match="model = 'BERT4Rec' is not supported.*supported models: .*GRU4Rec.*SASRec"):
        start(tiny_config, model="BERT4Rec", sampler="DNS")


def test_unsupported_model_is_fine_without_a_sampler(tiny_config):
    assert Config("BERT4Rec", config_dict={**tiny_config, "sampler": "none"})["sampler"] == "none"


def test_candidate_pool_at_or_above_the_item_count(tiny_config, no_training):
    n_items = 60
    with pytest.raises(ConfigError, match=f"neg_candidate_num = {n_items}: must be below the number of items \\({n_items}\\)"):
        start(tiny_config, sampler="DNS", neg_candidate_num=n_items)
    assert not os.path.exists(tiny_config["checkpoint_dir"])  # nothing written


def test_gbce_sampling_rate_above_one(tiny_config, no_training):
    n_items = 60
    with pytest.raises(ConfigError, match=f"neg_num = {n_items} with neg_loss gBCE: its sampling rate K / \\(N - 1\\) "
                                          f"must be at most 1, so K at most {n_items - 1}"):
        start(tiny_config, sampler="uniform", neg_loss="gBCE", neg_num=n_items)
    assert not os.path.exists(tiny_config["checkpoint_dir"])  # nothing written


@pytest.mark.parametrize("value", ["hinge", 3])
def test_neg_loss_must_be_bpr_or_bce(tiny_config, no_training, value):
    with pytest.raises(ConfigError, match=f"neg_loss = {value!r}: must be one of BPR, BCE"):
        start(tiny_config, sampler="uniform", neg_loss=value)


@pytest.mark.parametrize("value", [0, -2, 1.5])
def test_neg_num_must_be_a_positive_integer(tiny_config, no_training, value):
    with pytest.raises(ConfigError, match=f"neg_num = {value!r}: must be an integer >= 1"):
        start(tiny_config, sampler="uniform", neg_num=value)


def test_all_problems_are_reported_at_once(tiny_config):
    with pytest.raises(ConfigError) as error:
        Config("SASRec", config_dict={**tiny_config, "sampler": "DNS", "neg_num": 0, "neg_exclude": "all"})
    assert len(error.value.problems) == 2


@pytest.mark.parametrize("sampler", ["DNS", "MDCNS", "MixGCF", "GNNO"])
def test_top_m_cross_key_constraints(tiny_config, sampler):
    key = f"{sampler.lower()}_top_m"
    with pytest.raises(ConfigError, match=f"{key} = 20: must be <= neg_candidate_num \\(10\\)"):
        Config("SASRec", config_dict={**tiny_config, "sampler": sampler, key: 20})
    with pytest.raises(ConfigError, match=f"neg_num = 3: must be <= {key} \\(2\\)"):
        Config("SASRec", config_dict={**tiny_config, "sampler": sampler, key: 2, "neg_num": 3})


def test_divns_refuses_more_than_one_negative_per_row(tiny_config):
    with pytest.raises(ConfigError, match="neg_num = 2: DivNS makes one synthetic negative per row; set neg_num: 1"):
        Config("SASRec", config_dict={**tiny_config, "sampler": "DivNS", "neg_num": 2})


def test_recbole_negative_sampling_conflicts_with_a_sampler(tiny_config):
    with pytest.raises(ConfigError, match="train_neg_sample_args .* must be unset when sampler = 'DNS'"):
        Config("SASRec", config_dict={**tiny_config, "sampler": "DNS", "train_neg_sample_args": {"distribution": "uniform"}})


def test_sampler_defaults_are_below_user_values(tiny_config, tmp_path):
    config = Config("SASRec", config_dict={**tiny_config, "sampler": "dns"})
    assert (config["sampler"], config["dns_top_m"], config["neg_loss"], config["neg_exclude"]) == ("DNS", 1, "BPR", "history")
    assert config["neg_candidate_num"] == 10  # the user's value beats the default of 100
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("sampler: DNS\ndns_top_m: 4\nneg_loss: bce\n")
    config = Config("SASRec", config_file_list=[str(yaml_file)], config_dict=tiny_config)
    assert (config["dns_top_m"], config["neg_loss"]) == (4, "BCE")


def test_command_line_keys_reach_the_config(tiny_config, monkeypatch):
    monkeypatch.setattr("sys.argv", ["run_recbole_mdcns.py", "--sampler=DNS", "--dns_top_m=3"])
    config = Config("SASRec", config_dict=tiny_config)
    assert (config["sampler"], config["dns_top_m"]) == ("DNS", 3)


def test_integral_floats_become_integers(tiny_config):
    config = Config("SASRec", config_dict={**tiny_config, "sampler": "DNS", "neg_candidate_num": 8.0})
    assert config["neg_candidate_num"] == 8 and isinstance(config["neg_candidate_num"], int)


def test_nccl_with_more_processes_than_gpu_ids_names_the_fix(tiny_config):
    # seen on a one-GPU machine: RecBole's own check there is a bare AssertionError
    with pytest.raises(ConfigError, match="nproc = 2 with dist_backend = nccl needs one GPU per process, "
                                          "but gpu_id = '0' names 1.*dist_backend = gloo"):
        Config("SASRec", config_dict={**tiny_config, "nproc": 2, "local_rank": 0, "world_size": 2,
                                      "dist_backend": "nccl", "gpu_id": "0"})


def test_dist_backend_auto_is_gloo_without_cuda_and_a_typo_names_the_choices(tiny_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Config("SASRec", config_dict=tiny_config)["dist_backend"] == "gloo"
    assert Config("SASRec", config_dict={**tiny_config, "dist_backend": "NCCL"})["dist_backend"] == "nccl"
    with pytest.raises(ConfigError, match=r"dist_backend = 'mpi': must be one of auto, nccl, gloo$"):
        Config("SASRec", config_dict={**tiny_config, "dist_backend": "mpi"})


def test_pre_split_files_need_no_timestamp(tmp_path):
    """RecBole's pre-split session files (benchmark_filename) are not re-ordered by time, so
    a load_col without the timestamp is right there."""
    (tmp_path / "sess").mkdir()
    for part in ("train.", "valid.", "test.", ""):
        (tmp_path / "sess" / f"sess.{part}inter").write_text(
            "session_id:token\titem_id_list:token_seq\titem_id:token\n1\t1 2\t3\n")
    keys = {"data_path": str(tmp_path), "sampler": "none", "benchmark_filename": ["train", "valid", "test"],
            "USER_ID_FIELD": "session_id", "load_col": {"inter": ["session_id", "item_id_list", "item_id"]}}
    assert Config("GRU4Rec", "sess", config_dict=keys)["benchmark_filename"] == ["train", "valid", "test"]
    with pytest.raises(ConfigError, match="sequential models need TIME_FIELD 'timestamp' loaded"):
        Config("GRU4Rec", "sess", config_dict={**keys, "benchmark_filename": None})
