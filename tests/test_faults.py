"""Each row of the README's fault table: a clear error or the documented behaviour."""
from __future__ import annotations

import pytest

from conftest import LEARNING_KEYS, N_ITEMS, N_USERS, random_ndcg, write_tiny_dataset
from recbole_mdcns import ConfigError, build_experiment, run_recbole_mdcns
from recbole_mdcns.config import Config


@pytest.fixture
def faulty_root(tmp_path):
    """The tiny dataset plus a user with one interaction, a user with two, and an item (999)
    that only ever appears as some user's last (test) item."""
    root = write_tiny_dataset(tmp_path)
    inter = root / "tiny" / "tiny.inter"
    inter.write_text(inter.read_text() + f"{N_USERS + 1}\t5\t0\n{N_USERS + 2}\t6\t0\n{N_USERS + 2}\t7\t1\n1\t999\t1000\n")
    return root


def run(config, **keys):
    return run_recbole_mdcns(model="SASRec", config_dict={**config, "sampler": "DNS", **keys}, saved=False)


def test_short_users_and_test_only_items_train_normally(tiny_config, faulty_root):
    config = Config("SASRec", config_dict={**tiny_config, **LEARNING_KEYS, "sampler": "DNS", "data_path": str(faulty_root),
                                           "load_col": {"inter": ["user_id", "item_id", "timestamp"]}})
    experiment = build_experiment(config)
    item_999 = experiment.dataset.token2id("item_id", "999")
    test_targets = experiment.test_data._dataset.inter_feat["item_id"]
    assert item_999 in test_targets.tolist()  # the test-only item is a test target...
    assert item_999 not in experiment.train_data._dataset.inter_feat["item_id"].tolist()  # ...never a training one
    baseline = random_ndcg(experiment)
    experiment.trainer.fit(experiment.train_data, experiment.valid_data, saved=False)
    # the faulty users and item neither crash training nor keep it from learning
    assert experiment.trainer.evaluate(experiment.test_data, load_best_model=False)["ndcg@10"] > baseline + 0.06


@pytest.mark.parametrize("keys", [{"user_inter_num_interval": "[100,inf)"}, {"item_inter_num_interval": "[1000,inf)"}])
def test_filtering_that_leaves_nothing_names_the_filters(tiny_config, keys):
    key, value = next(iter(keys.items()))
    with pytest.raises(ConfigError, match=f"dataset 'tiny' is empty after RecBole's filtering \\(.*{key} = '\\[.*loosen"):
        run(tiny_config, **keys)


def test_no_validation_or_test_rows_after_the_split(tiny_config, tmp_path):
    folder = tmp_path / "short"
    folder.mkdir()
    rows = [f"{u}\t{(u + k) % 30 + 1}\t{k}" for u in range(1, 21) for k in range(2)]
    (folder / "short.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match="'short' has no validation or test rows after the split .*3 or more interactions"):
        run({**tiny_config, "dataset": "short", "data_path": str(tmp_path), "load_col": {"inter": ["user_id", "item_id", "timestamp"]}})


def test_a_user_owning_every_item_cannot_exclude_them_all(tiny_config, tmp_path):
    root = write_tiny_dataset(tmp_path)
    inter = root / "tiny" / "tiny.inter"
    # every item in training, then two more for validation and test (held out of training)
    everything = "\n".join(f"{N_USERS + 1}\t{i}\t{t}" for t, i in enumerate([*range(1, N_ITEMS + 1), 1, 2]))
    inter.write_text(inter.read_text() + everything + "\n")
    for mode in ("user", "history"):
        with pytest.raises(ConfigError, match=f"neg_exclude = '{mode}': some training rows may exclude all .* "
                                              "use neg_exclude: target, or neg_exclude: window with a MAX_ITEM_LIST_LENGTH below"):
            run({**tiny_config, "data_path": str(root)}, neg_exclude=mode, MAX_ITEM_LIST_LENGTH=100)
