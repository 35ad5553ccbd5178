"""train_layout: sequence and the whole-prefix exclusion, against the raw interaction file.

The per-position outputs must equal the model's own forward on each prefix; the training
positions must be each user's longest training prefix; no negative may be an item its
row's user had up to its target, however far before RecBole's truncated window.
"""
from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from recbole.utils import init_seed

from recbole_mdcns.config import Config
from recbole_mdcns.history import TARGET_INDEX_FIELD
from recbole_mdcns.layout import CAUSAL_MODELS, every_position, positions
from recbole_mdcns.params import ConfigError
from recbole_mdcns.quick_start import build_experiment
from recbole_mdcns.scoring import encode_batch


def experiment(tiny_config, model="SASRec", **keys):
    config = Config(model=model, config_dict={**tiny_config, **keys})
    init_seed(config["seed"], config["reproducibility"])
    return build_experiment(config)


def training_sequences(run) -> dict[int, list[int]]:
    """Each user's training items (all but the validation and test ones), as internal ids,
    read from the raw .inter file (rows are written in time order)."""
    dataset = run.dataset
    path = f"{run.config['data_path']}/{run.config['dataset']}.inter"
    items = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            user, item, _ = line.rstrip("\n").split("\t")
            items[dataset.field2token_id["user_id"][user]].append(dataset.field2token_id["item_id"][item])
    return {user: seq[:-2] for user, seq in items.items()}


@pytest.mark.parametrize("model", CAUSAL_MODELS)
def test_every_position_equals_the_models_forward_on_each_prefix(model, tiny_config):
    run = experiment(tiny_config, model, sampler="uniform", train_layout="sequence")
    net = run.model.eval()
    batch = next(iter(run.trainer.layout_rows(run.train_data)))
    seq, length = batch[net.ITEM_SEQ], batch[net.ITEM_SEQ_LEN]
    with torch.no_grad():
        hidden = every_position(net, seq, length)
        assert torch.allclose(hidden[torch.arange(len(seq)), length - 1], net.forward(seq, length), atol=1e-5)
        for j in range(1, int(length.max())):
            rows = length > j
            prefix = torch.where(torch.arange(seq.shape[1]) <= j, seq[rows], 0)  # the first j + 1 items
            own = net.forward(prefix, torch.full_like(length[rows], j + 1))
            assert torch.allclose(hidden[rows, j], own, atol=1e-5), j
    assert "gather_indexes" not in vars(net)  # the method is restored


def test_a_model_that_pools_the_whole_sequence_fails_the_prefix_property(tiny_config):
    """What the layout's check guards against: LightSANs's output at a position is not its forward on that prefix."""
    run = experiment(tiny_config, "LightSANs", sampler="uniform")
    net = run.model.eval()
    batch = next(iter(run.train_data))
    seq, length = batch[net.ITEM_SEQ], batch[net.ITEM_SEQ_LEN]
    rows = length > 2
    with torch.no_grad():
        hidden = every_position(net, seq[rows], length[rows])
        prefix = torch.where(torch.arange(seq.shape[1]) <= 1, seq[rows], 0)
        own = net.forward(prefix, torch.full_like(length[rows], 2))
    assert not torch.allclose(hidden[:, 1], own, atol=1e-3)


@pytest.mark.parametrize("max_length", [20, 5])  # 5 truncates most users' longest prefix
def test_training_positions_are_each_users_longest_prefix(max_length, tiny_config):
    run = experiment(tiny_config, sampler="uniform", train_layout="sequence", MAX_ITEM_LIST_LENGTH=max_length)
    sequences = training_sequences(run)
    seen = set()
    for batch in run.trainer.layout_rows(run.train_data):
        at = positions(batch, run.model)
        users = batch["user_id"][at.row]
        for user, target, index in zip(users.tolist(), at.target.tolist(), at.target_index.tolist()):
            assert sequences[user][index] == target
            seen.add((user, index))
    expected = {(user, t) for user, seq in sequences.items() for t in range(max(1, len(seq) - max_length), len(seq))}
    assert seen == expected


@pytest.mark.parametrize("layout", ["prefix", "sequence"])
def test_the_progress_bar_counts_the_layouts_batches(layout, tiny_config, capsys):
    run = experiment(tiny_config, sampler="uniform", train_layout=layout)
    sequences = training_sequences(run)
    rows = len(sequences) if layout == "sequence" else sum(len(seq) - 1 for seq in sequences.values())
    run.trainer.fit(run.train_data, run.valid_data, saved=False, show_progress=True)
    batches = -(-rows // tiny_config["train_batch_size"])
    assert f"{batches}/{batches}" in capsys.readouterr().err
    # RecBole's loader keeps every prefix row (the evaluation's item counts read it)
    assert len(run.train_data._dataset) == sum(len(seq) - 1 for seq in sequences.values())


def test_sampler_none_trains_recboles_ce_at_every_position(tiny_config):
    """With no truncation the positions are exactly the prefix rows: the mean CE over them is
    RecBole's own loss on those rows."""
    prefix_run = experiment(tiny_config, sampler="none")
    run = experiment(tiny_config, sampler="none", train_layout="sequence")
    run.model.load_state_dict(prefix_run.model.state_dict())
    every_row = prefix_run.train_data._dataset.inter_feat
    every_user = run.trainer.layout_rows(run.train_data)._dataset.inter_feat
    assert len(every_user) < len(every_row)
    with torch.no_grad():
        assert torch.allclose(run.trainer._own_loss(every_user), prefix_run.model.calculate_loss(every_row), atol=1e-5)


@pytest.mark.parametrize("layout", ["prefix", "sequence"])
@pytest.mark.parametrize("sampler", ["uniform", "popularity", "DNS", "GenNi", "DivNS", "MDCNS", "MixGCF", "AHNS",
                                     "SRNS", "AdaSIR", "GNNO"])
def test_no_negative_is_an_item_the_user_had_before_the_target(sampler, layout, tiny_config):
    """MAX_ITEM_LIST_LENGTH 3: most of a row's prefix lies before RecBole's window."""
    # the pool samplers' candidates (40 a row) are checked, the others' 40 negatives (SRNS's
    # whole memory, GNNO's top 40 of 40: its graph draws too)
    pool_only = sampler in ("DNS", "DivNS", "MDCNS", "MixGCF", "AHNS")
    keys = {"neg_num": 1 if pool_only else 40, "neg_candidate_num": 40, "MAX_ITEM_LIST_LENGTH": 3,
            **{"SRNS": {"srns_memory": 40}, "GNNO": {"gnno_top_m": 40}}.get(sampler, {})}
    run = experiment(tiny_config, sampler=sampler, train_layout=layout, **keys)
    sequences = training_sequences(run)
    before_window = 0
    for batch in run.trainer.layout_rows(run.train_data):
        encoded = encode_batch(run.model, batch, layout)
        negatives = run.sampler.candidate_pool(encoded) if pool_only else run.sampler.sample(encoded)
        for user, index, drawn in zip(encoded.users.tolist(), encoded.target_index.tolist(), negatives.tolist()):
            had = set(sequences[user][: index + 1])
            assert not had & set(drawn), (user, index)
            before_window += len(set(sequences[user][: max(0, index - 3)]) - set(sequences[user][index - 3: index + 1]))
    assert before_window > 100  # the window-only exclusion would have let these be drawn


@pytest.mark.parametrize("layout", ["prefix", "sequence"])
def test_window_exclusion_skips_only_the_items_the_row_holds(layout, tiny_config):
    """neg_exclude: window, RecBole's truncated view: the row's own items are never drawn, the
    items before its window are."""
    run = experiment(tiny_config, sampler="uniform", neg_exclude="window", neg_num=40, MAX_ITEM_LIST_LENGTH=3,
                     train_layout=layout)
    sequences = training_sequences(run)
    before_window = 0
    for batch in run.trainer.layout_rows(run.train_data):
        encoded = encode_batch(run.model, batch, layout)
        negatives = run.sampler.sample(encoded)
        held = torch.cat([encoded.pos_items.unsqueeze(1), encoded.held_items(slice(None))], 1)
        assert not (negatives.unsqueeze(-1) == held.unsqueeze(1)).any()
        for user, index, row, drawn in zip(encoded.users.tolist(), encoded.target_index.tolist(), held.tolist(),
                                           negatives.tolist()):
            before_window += len(set(drawn) & (set(sequences[user][:index]) - set(row)))
    assert before_window > 0


@pytest.mark.parametrize("layout", ["prefix", "sequence"])
def test_target_exclusion_skips_only_the_target(layout, tiny_config):
    """neg_exclude: target, full-softmax CE's negatives: the target is never drawn, the
    user's earlier items are."""
    run = experiment(tiny_config, sampler="uniform", neg_exclude="target", neg_num=40, train_layout=layout)
    sequences = training_sequences(run)
    earlier = 0
    for batch in run.trainer.layout_rows(run.train_data):
        encoded = encode_batch(run.model, batch, layout)
        negatives = run.sampler.sample(encoded)
        assert not (negatives == encoded.pos_items.unsqueeze(1)).any()
        for user, index, target, drawn in zip(encoded.users.tolist(), encoded.target_index.tolist(),
                                              encoded.pos_items.tolist(), negatives.tolist()):
            earlier += len(set(drawn) & (set(sequences[user][:index]) - {target}))
    assert earlier > 0


def test_divns_never_mixes_in_an_item_the_row_excludes(tiny_config):
    run = experiment(tiny_config, sampler="DivNS")
    batch = encode_batch(run.model, next(iter(run.trainer.layout_rows(run.train_data))))
    run.sampler._pop_queue = lambda users: batch.pos_items  # each row's own target as its queued diverse id
    torch.manual_seed(0)
    offered = run.sampler.negative_embeddings(batch)
    run.sampler._pop_queue = lambda users: torch.zeros_like(users)  # no diverse id at all
    torch.manual_seed(0)
    assert torch.equal(offered, run.sampler.negative_embeddings(batch))


def test_user_exclusion_skips_the_users_later_items_too(tiny_config):
    run = experiment(tiny_config, sampler="uniform", neg_exclude="user", neg_num=40, MAX_ITEM_LIST_LENGTH=3)
    sequences = training_sequences(run)
    for batch in run.train_data:
        encoded = encode_batch(run.model, batch)
        for user, drawn in zip(encoded.users.tolist(), run.sampler.sample(encoded).tolist()):
            assert not set(sequences[user]) & set(drawn)


def test_a_row_carries_its_target_index(tiny_config):
    run = experiment(tiny_config, sampler="uniform", MAX_ITEM_LIST_LENGTH=3)
    sequences = training_sequences(run)
    inter = run.train_data._dataset.inter_feat
    for user, item, index in zip(inter["user_id"].tolist(), inter["item_id"].tolist(), inter[TARGET_INDEX_FIELD].tolist()):
        assert sequences[user][index] == item


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"model": "NARM", "sampler": "uniform"}, "model = 'NARM': train_layout = 'sequence' needs a causal model"),
        ({"sampler": "MDCNS", "mdcns_peer_model": "STAMP"}, "mdcns_peer_model = 'STAMP': train_layout = 'sequence'"),
        ({"sampler": "none", "loss_type": "BPR"}, "loss_type = 'BPR': with sampler none, train_layout = 'sequence'"),
        ({"sampler": "uniform", "eval_args": {"split": {"LS": "valid_and_test"}, "order": "RO", "mode": "full"}},
         "eval_args order = 'RO'"),
        ({"train_layout": "sequences"}, "train_layout = 'sequences'"),
    ],
)
def test_layout_mistakes_are_reported_at_start_up(keys, message, tiny_config):
    keys = {"train_layout": "sequence", **keys}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config(model=keys.pop("model", "SASRec"), config_dict={**tiny_config, **keys})


def test_divns_queues_count_positions_not_users(tiny_config):
    """Under `sequence`, k_u is the user's positions in the epoch (each a row of RecBole's
    layout), capped by its distinct cached ids."""
    run = experiment(tiny_config, sampler="DivNS", train_layout="sequence", neg_candidate_num=40,
                     divns_runner_ups=20, divns_dpp_mode="greedy")
    sampler = run.sampler
    positions_seen = torch.zeros(run.dataset.user_num, dtype=torch.long)
    with torch.no_grad():
        for batch in run.trainer.layout_rows(run.train_data):
            encoded = encode_batch(run.model, batch, "sequence")
            sampler.negative_embeddings(encoded)
            positions_seen += torch.bincount(encoded.users, minlength=run.dataset.user_num)
    cached = torch.bincount(sampler._cached_items()[0], minlength=run.dataset.user_num)
    sampler.on_epoch_end(0)
    expected = torch.minimum(positions_seen, cached)
    assert (expected > 1).sum() > 10
    assert torch.equal(sampler.queue_len, expected)
