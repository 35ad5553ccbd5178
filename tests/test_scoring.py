"""Every supported backbone: our scores equal the model's own, and a training batch runs."""
from __future__ import annotations

import math
import re

import pytest
import torch

from recbole_mdcns import ConfigError
from recbole_mdcns.config import Config
from recbole_mdcns import build_experiment
from recbole_mdcns.scoring import BACKBONES, UNSUPPORTED, encode_batch

MODEL_OVERRIDES = {"FEARec": {"n_layers": 2}}  # FEARec divides by n_layers - 1


@pytest.mark.parametrize("model_name", sorted(BACKBONES))
def test_scores_equal_predict_and_a_batch_trains(model_name, tiny_config):
    config = Config(model_name, config_dict={**tiny_config, "sampler": "DNS", **MODEL_OVERRIDES.get(model_name, {})})
    run = build_experiment(config)
    model, trainer, train_data = run.model, run.trainer, run.train_data
    interaction = next(iter(train_data)).to(config["device"])

    model.eval()
    with torch.no_grad():
        batch = encode_batch(model, interaction)
        assert torch.allclose(batch.pos_score(), model.predict(interaction), atol=1e-5)
        full = batch.seq_emb @ batch.item_table.T
        assert torch.allclose(full, model.full_sort_predict(interaction).view(full.shape), atol=1e-5)

    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    loss = trainer.train_step(interaction)
    assert math.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("model_name", sorted(UNSUPPORTED))
def test_unsupported_models_are_refused_with_the_reason_and_accepted_with_sampler_none(model_name, tiny_config):
    with pytest.raises(ConfigError, match=f"model = '{model_name}' is not supported .*{re.escape(UNSUPPORTED[model_name])}"):
        Config(model_name, config_dict={**tiny_config, "sampler": "DNS"})
    assert Config(model_name, config_dict={**tiny_config, "sampler": "none"})["sampler"] == "none"
