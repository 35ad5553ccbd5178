"""The false-negative diagnostic: which chosen negatives their row's user has later."""
from __future__ import annotations

import pytest
import torch
from recbole.data import create_dataset, data_preparation

from recbole_mdcns import build_experiment
from recbole_mdcns.config import Config
from recbole_mdcns.history import TARGET_INDEX_FIELD, LaterItems
from recbole_mdcns.layout import positions
from recbole_mdcns.samplers.exclusion import false_negative_share

# user a: 1 2 3 1 4 | valid 5 | test 6 (item 1 again at index 3); user b: 7 8 9 10 11
SEQUENCES = {"a": [1, 2, 3, 1, 4, 5, 6], "b": [7, 8, 9, 10, 11]}


@pytest.fixture
def hand_dataset(tmp_path, tiny_config):
    folder = tmp_path / "hand"
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{user}\t{item}\t{t}" for user, items in SEQUENCES.items() for t, item in enumerate(items)]
    (folder / "hand.inter").write_text("\n".join(lines) + "\n")
    keys = {**tiny_config, "dataset": "hand", "data_path": str(tmp_path), "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "selected_features": None, "user_inter_num_interval": None, "item_inter_num_interval": None}
    config = Config("SASRec", config_dict=keys)
    dataset = create_dataset(config)
    data_preparation(config, dataset)  # builds the split and RecBole's prefix rows, in place
    return config, dataset


def share(later: LaterItems, dataset, user: str, target_index: int, items: list[int], counted=None) -> float:
    users = torch.tensor([dataset.token2id("user_id", user)])
    ids = torch.tensor([dataset.token2id("item_id", [str(i) for i in items])])
    return false_negative_share(later, users, torch.tensor([target_index]), ids, counted).item()


def test_a_hand_counted_case(hand_dataset):
    config, dataset = hand_dataset
    later = LaterItems(config, dataset)
    # the row whose target is item 2 (index 1): 3 and 1 come back later in training, 5 is the
    # validation item, 6 the test item; 2 is the target itself; 7 and 8 are another user's
    assert share(later, dataset, "a", 1, [3, 1, 5, 6, 2, 7, 8]) == pytest.approx(4 / 7)
    # the row whose target is item 1's second visit (index 3): only 4, 5 and 6 are later
    assert share(later, dataset, "a", 3, [1, 3, 4, 5, 6, 2]) == pytest.approx(3 / 6)
    # only the marked entries count
    counted = torch.tensor([[True, False, True]])
    assert share(later, dataset, "a", 3, [1, 3, 4], counted) == pytest.approx(1 / 2)
    assert share(later, dataset, "b", 1, [9, 10, 11, 1, 5]) == pytest.approx(3 / 5)


@pytest.mark.parametrize("sampler, keys", [
    ("uniform", {}), ("uniform", {"neg_shared": True, "neg_num": 4, "neg_loss": "SSM"}), ("GenNi", {"neg_loss": "SSM", "neg_logq": True}),
    ("DNS", {}), ("DivNS", {}), ("MixGCF", {}), ("MDCNS", {"train_layout": "sequence"}),
])
def test_every_sampler_logs_the_share_of_its_chosen_negatives(sampler, keys, tiny_config):
    run = build_experiment(Config("SASRec", config_dict={**tiny_config, "sampler": sampler, **keys}))
    run.trainer.fit(run.train_data, run.valid_data, saved=False)
    assert 0 < run.trainer.diagnostics["false_negatives"] < 1


def test_hard_negatives_are_more_often_later_items_than_uniform_ones(tiny_config):
    """The tiny data's users draw from a band of 17 of the 60 items: once trained, the
    top-scored candidates are far more often the user's later items than uniform draws."""
    shares = {}
    for sampler in ("uniform", "DNS"):
        keys = {**tiny_config, "sampler": sampler, "learning_rate": 0.01, "epochs": 5}
        run = build_experiment(Config("SASRec", config_dict=keys))
        run.trainer.fit(run.train_data, run.valid_data, saved=False)
        shares[sampler] = run.trainer.diagnostics["false_negatives"]
    assert shares["DNS"] > 2 * shares["uniform"], shares


@pytest.mark.parametrize("layout", ["prefix", "sequence"])
def test_every_training_row_has_its_validation_and_test_items_later(layout, tiny_config):
    """The whole dataset's indices line up with the training rows' target indices under
    both layouts: for every row, its user's validation and test items come later."""
    run = build_experiment(Config("SASRec", config_dict={**tiny_config, "sampler": "uniform", "train_layout": layout}))
    n_users = run.dataset.user_num
    later_ids = []
    for split in (run.valid_data, run.test_data):
        inter = split._dataset.inter_feat
        later_ids.append(torch.zeros(n_users, dtype=torch.long).index_put_((inter["user_id"],), inter["item_id"]))
    later_ids = torch.stack(later_ids, 1)  # [U, 2]
    checked = 0
    for interaction in run.trainer.layout_rows(run.train_data):
        if layout == "prefix":
            users, target_index = interaction["user_id"], interaction[TARGET_INDEX_FIELD]
        else:
            at = positions(interaction, run.model)
            users, target_index = interaction["user_id"][at.row], at.target_index
        assert false_negative_share(run.sampler.later_items, users, target_index, later_ids[users]).item() == 1.0
        checked += len(users)
    assert checked == len(run.train_data._dataset.inter_feat)  # every training target, once
