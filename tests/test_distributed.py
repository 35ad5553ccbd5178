"""Two CPU processes with gloo, RecBole's distributed training, for DNS and MDCNS."""
from __future__ import annotations

import statistics

import pytest

from recbole_mdcns.quick_start import run, run_recbole_mdcns

SEEDS = (1, 2, 3)


@pytest.mark.parametrize("sampler, port", [("DNS", "29611"), ("MDCNS", "29612")])
def test_two_gloo_processes_match_one_within_seed_noise(sampler, port, tiny_config):
    keys = {**tiny_config, "sampler": sampler, "epochs": 2, "seed": SEEDS[0], "dist_backend": "gloo",
            "mdcns_peer_config": {"embedding_size": 16, "hidden_size": 16, "num_layers": 1}}
    two = run(model="SASRec", config_dict=keys, nproc=2, port=port)
    assert two is not None and set(two["test_result"]) == {"recall@10", "ndcg@10"}
    # noise: the spread of one-process runs over seeds; the two-process run must fall
    # within 3 standard deviations (at least 0.03 NDCG@10 on this tiny data) of their mean
    single = [run_recbole_mdcns(model="SASRec", config_dict={**keys, "seed": s}, saved=False)["best_valid_result"]["ndcg@10"]
              for s in SEEDS]
    tolerance = max(3 * statistics.stdev(single), 0.03)
    assert abs(two["best_valid_result"]["ndcg@10"] - statistics.mean(single)) <= tolerance
