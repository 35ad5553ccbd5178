"""eval_mask: full-sort validation and test rank the target among the items the user did not have before."""
from __future__ import annotations

import math

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer

from benchmarks.quality_run import earlier_items, ranking_metrics
from recbole_mdcns import ConfigError, build_experiment
from recbole_mdcns.config import Config
from recbole_mdcns.evaluation import HistoryMask

INF = -math.inf


def hand_mask(keep_target: bool) -> HistoryMask:
    """Two users over items 1..5: user 1 trained on {1, 2}, user 2 on {4}."""
    mask = HistoryMask.__new__(HistoryMask)
    mask.keep_target, mask.user_field, mask.seq_field = keep_target, "user_id", "item_id_list"
    mask.user_items = torch.tensor([[0, 0], [1, 2], [4, 0]])
    return mask


@pytest.mark.parametrize("keep_target", [False, True])
def test_a_hand_ranked_case(keep_target):
    # row 0: user 1, prefix [2, 3], target 2 (a repeat); row 1: user 2, prefix [4, 5], target 1
    batch = Interaction({"user_id": torch.tensor([1, 2]), "item_id_list": torch.tensor([[2, 3], [4, 5]])})
    scores = torch.tensor([[INF, 0.9, 0.8, 0.7, 0.6, 0.5], [INF, 0.1, 0.2, 0.3, 0.4, 0.5]])
    hand_mask(keep_target).apply(batch, scores, torch.tensor([0, 1]), torch.tensor([2, 1]))
    expected = torch.tensor([[INF, INF, 0.8 if keep_target else INF, INF, 0.6, 0.5],
                             [INF, 0.1, 0.2, 0.3, INF, INF]])
    assert torch.equal(scores, expected)
    # row 1's target (item 1) now ranks 3rd of 3 unmasked items, where RecBole ranks it 5th


def masked_keys(tiny_config, **keys):
    return {**tiny_config, "sampler": "uniform", "epochs": 2, "metrics": ["Hit", "NDCG"], "topk": [5, 10],
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
            **keys}


def test_masked_test_metrics_equal_an_independent_masked_ranking(tiny_config):
    run = build_experiment(Config("SASRec", config_dict=masked_keys(tiny_config, eval_mask="history")))
    run.trainer.fit(run.train_data, run.valid_data, saved=False)
    ours = run.trainer.evaluate(run.test_data, load_best_model=False)
    reference = ranking_metrics(run.model, run.test_data, [5, 10], exclude=earlier_items(run.dataset))
    assert set(ours) == set(reference)
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-4), name
    unmasked = ranking_metrics(run.model, run.test_data, [5, 10])
    assert ours["ndcg@10"] != pytest.approx(unmasked["ndcg@10"], abs=1e-4)  # the mask changed the ranking


def test_without_a_mask_the_metrics_are_recboles(tiny_config):
    run = build_experiment(Config("SASRec", config_dict=masked_keys(tiny_config)))
    run.trainer.fit(run.train_data, run.valid_data, saved=False)
    recbole = Trainer(run.config, run.model).evaluate(run.test_data, load_best_model=False)
    assert run.trainer.evaluate(run.test_data, load_best_model=False) == recbole


def test_early_stopping_and_the_best_model_follow_the_masked_validation(tiny_config):
    config = Config("SASRec", config_dict=masked_keys(tiny_config, eval_mask="history_keep_target", sampler="none"))
    run = build_experiment(config)
    _, best = run.trainer.fit(run.train_data, run.valid_data, saved=True)
    assert best == run.trainer.evaluate(run.valid_data, load_best_model=True)  # the saved best, masked
    assert best != Trainer(run.config, run.model).evaluate(run.valid_data, load_best_model=False)  # RecBole's differs


@pytest.mark.parametrize("keys, message", [
    ({"eval_mask": "seen"}, "eval_mask = 'seen': must be one of none, history, history_keep_target"),
    ({"eval_mask": "history", "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "full"}},
     "eval_mask = 'history' needs eval_args order TO"),
    ({"eval_mask": "history", "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni100"}},
     "eval_mask = 'history' applies to full-sort evaluation"),
])
def test_bad_eval_mask_settings_are_refused_at_start_up(tiny_config, keys, message):
    for sampler in ("none", "DNS"):
        with pytest.raises(ConfigError, match=message):
            Config("SASRec", config_dict={**tiny_config, "sampler": sampler, **keys})


def test_a_trainer_without_the_training_data_cannot_mask(tiny_config):
    from recbole_mdcns import SampledTrainer

    run = build_experiment(Config("SASRec", config_dict=masked_keys(tiny_config, eval_mask="history")))
    with pytest.raises(ValueError, match="eval_mask = 'history' needs the training dataset"):
        SampledTrainer(run.config, run.model)
