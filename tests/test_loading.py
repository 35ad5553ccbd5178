"""A model trained by the plugin loads for inference as RecBole users load theirs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recbole_mdcns import SampledTrainer, load_data_and_model, run_recbole_mdcns
from recbole_mdcns.config import Config


@pytest.mark.parametrize("sampler, extra", [("MDCNS", {}), ("none", {}), ("uniform", {"eval_mask": "history"})])
def test_load_data_and_model_gives_back_the_runs_test_metrics(tiny_config, sampler, extra):
    keys = {**tiny_config, "sampler": sampler, "epochs": 2, **extra,
            "mdcns_peer_config": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1}}
    result = run_recbole_mdcns(model="SASRec", config_dict=keys)
    (saved,) = [p for p in Path(tiny_config["checkpoint_dir"]).glob("*.pth") if not p.stem.endswith("-resume")]
    torch.load(saved, weights_only=True)  # the file is safe to load

    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(str(saved))
    assert isinstance(config, Config) and config["model"] == "SASRec" and config["sampler"] == sampler
    assert len(train_data) > 0 and len(valid_data) > 0 and dataset.item_num == 61
    trainer = SampledTrainer(config, model, train_dataset=train_data._dataset)
    assert trainer.evaluate(test_data, load_best_model=False) == result["test_result"]


def test_a_file_without_the_runs_keys_is_refused(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="did not record the run's keys"):
        load_data_and_model(str(path))
