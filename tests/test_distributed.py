"""Two CPU processes with gloo, RecBole's distributed training, for DNS and MDCNS."""
from __future__ import annotations

import glob
import os
import statistics

import pytest
import torch

from recbole_mdcns import build_experiment, load_data_and_model
from recbole_mdcns.config import Config
from recbole_mdcns.quick_start import run, run_recbole_mdcns

SEEDS = (1, 2, 3)


@pytest.mark.parametrize("sampler, port", [("DNS", "29611"), ("MDCNS", "29612")])
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
