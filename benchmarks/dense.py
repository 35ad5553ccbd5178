"""Why the hard-negative samplers collapse on dense ml-100k with M = 1, and what M = 10 changes.

    python benchmarks/dense.py                 # every variant, seed 2020, skipping those done
    python benchmarks/dense.py --only dns_m1 --out /tmp/dense
    python benchmarks/dense.py --only uniform --again  # measure a variant again (the table takes the latest)
    python benchmarks/dense.py --render-only   # rewrite dense.md from dense.jsonl

SASRec on ml-100k with the packaged `quick` config (the README's main job), one variant per
row: the sampler and its top-M (`dns_top_m` / `mdcns_top_m`), one seed. Each epoch records
the trainer's `false_negatives` diagnostic, `later` in the table: the share of the chosen
negatives that the row's user has later in time (later training rows, the validation or the
test item), negatives that are the user's own future positives. For the samplers that
return ids (uniform, DNS) it also records, over the negatives they chose:
- `popularity`: their mean popularity percentile among the items (training counts; 1 = the
  most popular item), beside the same figure for the targets (`target_popularity`);
- `distinct`: the distinct ids among a batch's negatives, per negative (1: no id twice).
Each variant appends one JSON line to `<out>/dense.jsonl`; `<out>/dense.md` is the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from benchmarks.benchlib import append_jsonl, machine, machine_lines, read_jsonl, timestamp, write_markdown  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "uniform": {"sampler": "uniform"},
    "dns_m1": {"sampler": "DNS", "dns_top_m": 1},
    "dns_m10": {"sampler": "DNS", "dns_top_m": 10},
    "dns_m1_exclude_user": {"sampler": "DNS", "dns_top_m": 1, "neg_exclude": "user"},
    "mdcns_m1": {"sampler": "MDCNS", "mdcns_top_m": 1},
    "mdcns_m10": {"sampler": "MDCNS", "mdcns_top_m": 10},
}


def popularity_percentile(train_dataset: Any) -> torch.Tensor:
    """[items]: each item's rank by training count, scaled to [0, 1] (1 = the most popular)."""
    counts = torch.bincount(train_dataset.inter_feat[train_dataset.iid_field], minlength=train_dataset.item_num)
    ranks = torch.empty(len(counts))
    ranks[counts.argsort(stable=True)] = torch.arange(len(counts), dtype=torch.float)
    return ranks / (len(counts) - 1)


def instrument(sampler: Any, percentile: torch.Tensor) -> None:
    """Record `popularity`, `target_popularity` and `distinct` for each batch's chosen ids."""
    draw = sampler.sample

    def sample(batch):
        ids = draw(batch)
        sampler.record("popularity", percentile[ids.cpu()].mean())
        sampler.record("target_popularity", percentile[batch.pos_items.cpu()].mean())
        sampler.record("distinct", torch.tensor(ids.unique().numel() / ids.numel()))
        return ids

    sampler.sample = sample


def run_variant(name: str, seed: int) -> dict[str, Any]:
    from recbole_mdcns import Config, build_experiment

    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # RecBole's log and tensorboard folders
        config = Config("SASRec", "ml-100k", ["quick"], {**VARIANTS[name], "seed": seed, "checkpoint_dir": scratch})
        start = time.perf_counter()
        run = build_experiment(config)
        if config["sampler"] in ("uniform", "DNS"):
            instrument(run.sampler, popularity_percentile(run.train_data._dataset))
        epochs: list[dict[str, Any]] = []
        run.trainer.fit(run.train_data, run.valid_data, saved=True,
                        callback_fn=lambda epoch, score: epochs.append({"epoch": epoch, "valid_ndcg@10": score,
                                                                        **run.trainer.diagnostics}))
        test = run.trainer.evaluate(run.test_data, load_best_model=True)
        os.chdir(REPO_ROOT)
    return {"variant": name, "seed": seed, "config": VARIANTS[name], "test": {k: float(v) for k, v in test.items()},
            "seconds": round(time.perf_counter() - start, 1), "epochs": epochs, "machine": machine(), "time": timestamp()}


def render(path: str) -> str:
    rows = list({(r["variant"], r["seed"]): r for r in read_jsonl(path)}.values())  # the latest of each
    lines = [
        "# Hard negatives on dense ml-100k: SASRec, the packaged `quick` config",
        "",
        "Written by `benchmarks/dense.py` from `dense.jsonl`. `later` and `popularity` are the means",
        "over the training epochs of the share of chosen negatives that the row's user has later in",
        "time (the sampler's `false_negatives` diagnostic, over at most 1,024 rows a batch), and of",
        "their popularity percentile (1 = the most popular item); `target` is that percentile for",
        "the training targets; `distinct` the distinct ids among a batch's negatives, per negative.",
        "Only samplers that return ids (uniform, DNS) record the last three.",
        "",
        "| variant | test NDCG@10 | test Recall@10 | best valid NDCG@10 | epochs | later | popularity | target | distinct | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def mean(row: dict[str, Any], key: str) -> str:
        values = [e[key] for e in row["epochs"] if key in e]
        return f"{sum(values) / len(values):.3f}" if values else "–"

    for row in rows:
        best = max(e["valid_ndcg@10"] for e in row["epochs"])
        lines.append(f"| {row['variant']} | {row['test']['ndcg@10']:.4f} | {row['test']['recall@10']:.4f} | {best:.4f} | "
                     f"{len(row['epochs'])} | {mean(row, 'false_negatives')} | {mean(row, 'popularity')} | "
                     f"{mean(row, 'target_popularity')} | {mean(row, 'distinct')} | {row['seconds']:.0f} |")
    return "\n".join(lines + machine_lines(rows)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results"))
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--again", action="store_true", help="measure the variants even where done")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv
    path = os.path.join(args.out, "dense.jsonl")
    if not args.render_only:
        done = {(r["variant"], r["seed"]) for r in read_jsonl(path)}
        for name in args.only.split(",") if args.only else VARIANTS:
            if args.again or (name, args.seed) not in done:
                append_jsonl(path, run_variant(name, args.seed))
                print(f"{name}: done", flush=True)
    print(write_markdown(args.out, "dense", render))


if __name__ == "__main__":
    main()
