"""Two CPU processes with gloo, RecBole's distributed training, for DNS and MDCNS."""
from __future__ import annotations

import glob
import os
import statistics
from types import SimpleNamespace

import pytest
import torch

from recbole_mdcns import build_experiment, load_data_and_model
from recbole_mdcns.config import Config
from recbole_mdcns.quick_start import run, run_recbole_mdcns
from recbole_mdcns.samplers.rowstate import RowState

SEEDS = (1, 2, 3)


@pytest.mark.parametrize("sampler, port", [("DNS", "29611"), ("MDCNS", "29612"), ("SRNS", "29616")])
def test_two_gloo_processes_match_one_within_seed_noise(sampler, port, tiny_config):
    keys = {**tiny_config, "sampler": sampler, "epochs": 2, "seed": SEEDS[0], "dist_backend": "gloo",
            "mdcns_peer_config": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1}}
    two = run(model="SASRec", config_dict=keys, nproc=2, port=port)
    assert two is not None and set(two["test_result"]) == {"recall@10", "ndcg@10"}
    # its checkpoint loads in one process, without the run's distributed set-up
    (saved,) = [p for p in glob.glob(os.path.join(keys["checkpoint_dir"], "*.pth")) if "-resume" not in p]
    config = load_data_and_model(saved)[0]
    assert config["single_spec"] and config["sampler"] == sampler
    # noise: the spread of one-process runs over seeds; the two-process run must fall
    # within 3 standard deviations (at least 0.03 NDCG@10 on this tiny data) of their mean
    single = [run_recbole_mdcns(model="SASRec", config_dict={**keys, "seed": s}, saved=False)["best_valid_result"]["ndcg@10"]
              for s in SEEDS]
    tolerance = max(3 * statistics.stdev(single), 0.03)
    assert abs(two["best_valid_result"]["ndcg@10"] - statistics.mean(single)) <= tolerance


def _one_step_on_each_rank(rank: int, keys: dict, out: str) -> None:
    """One training step on each rank's own shard, then every trained model's weights gathered to rank 0."""
    config = Config("SASRec", config_dict={**keys, "local_rank": rank})
    built = build_experiment(config)
    built.trainer.train_step(next(iter(built.trainer.layout_rows(built.train_data))).to(config["device"]))
    weights = {name: torch.cat([p.detach().flatten() for p in part.model.parameters()])
               for name, part in built.trainer.trained.items()}
    gathered = [None, None]
    torch.distributed.all_gather_object(gathered, weights)
    if rank == 0:
        torch.save(gathered, out)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("layout, port", [("prefix", "29613"), ("sequence", "29614")])
def test_ranks_hold_identical_weights_of_self_and_peer_after_a_step(layout, port, tiny_config, tmp_path):
    keys = {**tiny_config, "sampler": "MDCNS", "dist_backend": "gloo", "world_size": 2, "nproc": 2, "offset": 0,
            "ip": "localhost", "port": port, "train_layout": layout,
            "mdcns_peer_config": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1}}
    out = str(tmp_path / "weights.pt")
    torch.multiprocessing.spawn(_one_step_on_each_rank, args=(keys, out), nprocs=2, join=True)
    rank0, rank1 = torch.load(out, weights_only=True)
    assert set(rank0) == {"self", "peer"}
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def _sync_row_state(rank: int, out: str) -> None:
    """Rank 0 writes rows 0 and 1, rank 1 rows 1 and 3; row 5 was written before the epoch
    (rank 1's copy is stale); then the epoch's sync."""
    torch.distributed.init_process_group("gloo", init_method="tcp://localhost:29615", rank=rank, world_size=2)
    config = {"device": torch.device("cpu"), "neg_state_key": "user"}
    state = RowState(config, SimpleNamespace(user_num=6), {"ids": ((2,), torch.int32), "q": ((), torch.float),
                                                          "count": ((), torch.int8), "filled": ((), torch.bool)})
    state["q"][5] = 7.0 if rank == 0 else 99.0
    rows = torch.tensor([0, 1]) if rank == 0 else torch.tensor([1, 3])
    values = torch.tensor([1.0, 2.0]) if rank == 0 else torch.tensor([10.0, 30.0])
    state.write(rows, {"ids": values.int().unsqueeze(1).expand(-1, 2), "q": values, "count": values.to(torch.int8),
                       "filled": torch.ones(2, dtype=torch.bool)})
    state.sync()
    gathered = [None, None]
    torch.distributed.all_gather_object(gathered, state.state_dict())
    if rank == 0:
        torch.save(gathered, out)
    torch.distributed.destroy_process_group()


def test_row_state_sync_gives_every_rank_every_rows_latest_state(tmp_path):
    out = str(tmp_path / "state.pt")
    torch.multiprocessing.spawn(_sync_row_state, args=(out,), nprocs=2, join=True)
    rank0, rank1 = torch.load(out, weights_only=True)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert rank0["q"].tolist() == [1.0, 10.0, 0.0, 30.0, 0.0, 7.0]  # row 1: the higher rank's; row 5: rank 0's
    assert rank0["ids"][:, 0].tolist() == [1, 10, 0, 30, 0, 0] and rank0["count"].tolist() == [1, 10, 0, 30, 0, 0]
    assert rank0["filled"].tolist() == [True, True, False, True, False, False]
