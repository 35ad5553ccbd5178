"""DivNS: cache, penalised k-DPP queue, synthetic negatives, state round trips."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import make_batch, make_sampler
from recbole_mdcns import ConfigError
from recbole_mdcns.config import Config
from recbole_mdcns import build_experiment
from recbole_mdcns.samplers.divns import mean_pairwise_distance, occurrence_index

DIVNS_KEYS = {"divns_runner_ups": 4, "divns_lambda": 0.7, "divns_penalty": 1.0, "divns_cache_size": 256,
              "divns_dpp_mode": "sample", "neg_candidate_num": 10}


def divns(dataset, **keys):
    return make_sampler("DivNS", dataset, **{**DIVNS_KEYS, **keys})


def crafted_epoch(sampler, table: torch.Tensor, cache: list[int], hard: list[int], users: int):
    """Fill the sampler's epoch buffers as if every user had cached `cache` and used `hard`."""
    user_ids = torch.arange(1, users + 1)
    sampler.item_table = table
    sampler.buffers["cache_users"] = [user_ids.repeat_interleave(len(cache))]
    sampler.buffers["cache_items"] = [torch.tensor(cache).repeat(users)]
    sampler.buffers["cache_scores"] = [torch.linspace(1, 0, len(cache)).repeat(users)]
    sampler.buffers["hard_users"] = [user_ids.repeat_interleave(len(hard))]
    sampler.buffers["hard_items"] = [torch.tensor(hard).repeat(users)]
    sampler.on_epoch_end(0)
    return sampler.queue_items.view(users, -1)


def test_occurrence_index():
    assert occurrence_index(torch.tensor([5, 3, 5, 5, 3, 7])).tolist() == [0, 0, 1, 2, 1, 0]


def test_queues_hold_k_distinct_cached_ids_per_user_and_cycle():
    torch.manual_seed(0)
    batch, dataset = make_batch()
    batch.users = torch.arange(len(batch.users)) // 4 + 1  # 4 rows per user
    sampler = divns(dataset)
    for _ in range(2):
        sampler.negative_embeddings(batch)  # 8 rows per user this epoch
    cache = {(u, i) for u, i in zip(sampler._take("cache_users").tolist(), sampler._take("cache_items").tolist())}
    sampler.on_epoch_end(0)
    assert (sampler.queue_len[1:65] == 8).all() and (sampler.queue_len[65:] == 0).all()
    for user in (1, 30, 64):
        start, length = sampler.queue_start[user], sampler.queue_len[user]
        queue = sampler.queue_items[start : start + length].tolist()
        assert len(set(queue)) == 8 and all((user, i) in cache for i in queue)
    popped = torch.stack([sampler._pop_queue(batch.users) for _ in range(5)], 1)  # 20 pops per user
    first_user = popped[:4].T.reshape(-1)  # user 1's pops in order
    queue = sampler.queue_items[: sampler.queue_len[1]]
    assert torch.equal(first_user[:8], queue) and torch.equal(first_user[8:16], queue)


def test_the_cache_cap_keeps_each_users_best_scored_distinct_ids():
    _, dataset = make_batch()
    sampler = divns(dataset, divns_cache_size=3)
    sampler.item_table = torch.randn(201, 8)
    # user 1 cached 5 twice (its best score 0.95 counts), 6, 7, 8 and 9; user 2 cached 10..13
    sampler.buffers["cache_users"] = [torch.tensor([1, 1, 1, 1, 1, 1, 2, 2, 2, 2])]
    sampler.buffers["cache_items"] = [torch.tensor([5, 6, 7, 5, 8, 9, 10, 11, 12, 13])]
    sampler.buffers["cache_scores"] = [torch.tensor([0.1, 0.9, 0.8, 0.95, 0.85, 0.2, 0.4, 0.3, 0.2, 0.1])]
    sampler.buffers["hard_users"] = [torch.tensor([1] * 6 + [2] * 2)]  # 6 rows of user 1, 2 of user 2
    sampler.buffers["hard_items"] = [torch.tensor([20] * 8)]
    sampler.on_epoch_end(0)

    def queue(user: int) -> list[int]:
        start, length = sampler.queue_start[user], sampler.queue_len[user]
        return sorted(sampler.queue_items[start : start + length].tolist())

    # k = min(rows, capped cache size): user 1 gets all 3 ids of its capped cache
    assert queue(1) == [5, 6, 8]
    assert len(queue(2)) == 2 and set(queue(2)) <= {10, 11, 12}


@pytest.mark.parametrize("mode", ["sample", "greedy"])
def test_with_a_small_cache_the_next_queue_holds_only_the_best_scored_runner_ups(mode):
    torch.manual_seed(7)
    batch, dataset = make_batch()
    batch.users = torch.arange(len(batch.users)) // 8 + 1  # 8 rows per user, 32 users
    sampler = divns(dataset, divns_cache_size=2, divns_dpp_mode=mode)
    for _ in range(3):
        sampler.negative_embeddings(batch)  # 24 rows and 96 runner-ups per user
    users, items, scores = (sampler._take(name) for name in ("cache_users", "cache_items", "cache_scores"))
    best: dict[int, dict[int, float]] = {}
    for user, item, score in zip(users.tolist(), items.tolist(), scores.tolist()):
        best.setdefault(user, {})[item] = max(score, best.get(user, {}).get(item, -float("inf")))
    sampler.on_epoch_end(0)
    for user in range(1, 33):
        start, length = sampler.queue_start[user], sampler.queue_len[user]
        queue = set(sampler.queue_items[start : start + length].tolist())
        top2 = set(sorted(best[user], key=best[user].get, reverse=True)[:2])
        assert queue == top2, user


def test_second_epoch_mixes_hard_and_diverse_embeddings():
    torch.manual_seed(1)
    batch, dataset = make_batch()
    sampler = divns(dataset, divns_lambda=0.7)
    first = sampler.negative_embeddings(batch).squeeze(1)
    hard_first = sampler._take("hard_items")
    assert torch.equal(first, batch.item_table[hard_first])  # epoch 1: pure hard negatives
    sampler.on_epoch_end(0)
    second = sampler.negative_embeddings(batch).squeeze(1)
    hard, used = sampler.buffers["hard_items"][-1], sampler.buffers["used_items"][-1]
    assert len(used) == len(batch.users)
    assert torch.allclose(second, 0.7 * batch.item_table[hard] + 0.3 * batch.item_table[used])


def test_penalty_lowers_the_chance_of_items_like_the_hard_negatives():
    torch.manual_seed(2)
    _, dataset = make_batch()
    table = torch.randn(201, 8)
    hard_direction = F.normalize(torch.randn(8), dim=0)
    table[1:5] = hard_direction + 0.3 * torch.randn(4, 8)  # items 1-4 resemble hard item 9
    table[9] = hard_direction
    cache, hard, users = list(range(1, 9)), [9, 9], 3000
    dataset.user_num = users + 1

    def share_of_similar(penalty: float) -> float:
        queue = crafted_epoch(divns(dataset, divns_penalty=penalty), table, cache, hard, users)
        return (queue <= 4).float().mean().item()

    assert share_of_similar(5.0) < share_of_similar(0.0) - 0.1


@pytest.mark.parametrize("mode", ["sample", "greedy"])
def test_k_dpp_sets_are_more_diverse_than_random_subsets(mode):
    torch.manual_seed(3)
    _, dataset = make_batch()
    # a user's runner-ups come in clusters of near-duplicates (4 clusters of 4 items)
    table = torch.randn(201, 8)
    table[1:17] = torch.randn(4, 8).repeat(4, 1) + 0.2 * torch.randn(16, 8)
    cache, users = list(range(1, 17)), 500
    dataset.user_num = users + 1
    queue = crafted_epoch(divns(dataset, divns_dpp_mode=mode, divns_penalty=0.0), table, cache, [20] * 4, users)
    unit = F.normalize(table, dim=1)
    user_ids = torch.arange(1, users + 1).repeat_interleave(4)
    random_sets = torch.stack([torch.randperm(16)[:4] + 1 for _ in range(users)])
    dpp = mean_pairwise_distance(user_ids, queue.reshape(-1), unit, users + 1)
    random = mean_pairwise_distance(user_ids, random_sets.reshape(-1), unit, users + 1)
    assert dpp > random + 0.05


def test_sampler_state_round_trips_mid_epoch():
    torch.manual_seed(4)
    batch, dataset = make_batch()
    sampler = divns(dataset)
    sampler.negative_embeddings(batch)
    sampler.on_epoch_end(0)
    sampler.negative_embeddings(batch)  # mid-epoch: buffers, queue and cursor all non-empty
    fresh = divns(dataset)
    fresh.load_state_dict(sampler.state_dict())
    for name, tensor in sampler.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_checkpoint_after_epoch_2_restores_the_per_user_state(tiny_config):
    keys = {**tiny_config, "sampler": "DivNS", "epochs": 2, "neg_candidate_num": 10}
    run = build_experiment(Config("SASRec", config_dict={**keys, "eval_step": 0}))
    trainer, train_data, valid_data = run.trainer, run.train_data, run.valid_data
    trainer.fit(train_data, valid_data, saved=True)
    saved = trainer.sampler.state_dict()
    assert len(saved["queue_items"]) > 0
    fresh = build_experiment(Config("SASRec", config_dict={**keys, "epochs": 3})).trainer
    fresh.resume_checkpoint(trainer.saved_model_file)
    for name, tensor in saved.items():
        assert torch.equal(fresh.sampler.state_dict()[name], tensor), name
    assert fresh.start_epoch == 2
    # training continues with the restored queues: epoch 2's diverse ids come from them
    used = []
    end_epoch = fresh.sampler.on_epoch_end
    fresh.sampler.on_epoch_end = lambda epoch: used.append(
        (fresh.sampler._take("used_users"), fresh.sampler._take("used_items"))) or end_epoch(epoch)
    fresh.fit(train_data, valid_data, saved=False)
    ((users, items),) = used
    # every row of a user with a queue mixes in a diverse id, unless the row excludes it (its user had it since)
    assert len(train_data._dataset) / 2 < len(users) <= len(train_data._dataset)
    restored = {(u, i) for u, start, length in zip(range(len(saved["queue_len"])), saved["queue_start"].tolist(),
                                                    saved["queue_len"].tolist())
                for i in saved["queue_items"][start : start + length].tolist()}
    assert set(zip(users.tolist(), items.tolist())) <= restored


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"divns_runner_ups": 10}, "divns_runner_ups = 10: must be below neg_candidate_num \\(10\\)"),
        ({"divns_lambda": 1.2}, "divns_lambda = 1.2: must be a number >= 0 and <= 1"),
        ({"divns_penalty": -1}, "divns_penalty = -1: must be a number >= 0"),
        ({"divns_dpp_mode": "map"}, "divns_dpp_mode = 'map': must be one of sample, greedy"),
    ],
)
def test_bad_divns_values(tiny_config, keys, message):
    with pytest.raises(ConfigError, match=message):
        Config("SASRec", config_dict={**tiny_config, "sampler": "DivNS", **keys})
