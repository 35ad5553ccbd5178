"""Fidelity: the plugin's uniform sampler with BPR against RecBole's own uniform BPR.

    python benchmarks/fidelity.py                    # seeds 2020 2021 2022, both variants
    python benchmarks/fidelity.py --seeds 2020 --epochs 1 --out /tmp/fidelity
    python benchmarks/fidelity.py --render-only      # rewrite fidelity.md from fidelity.jsonl

SASRec on ml-100k with the packaged `quick` config, trained and tested by `run_recbole_mdcns`
(early stopping on valid NDCG@10, test with the best checkpoint). Each (variant, seed)
appends one JSON line to `<out>/fidelity.jsonl` and is skipped when already there, so
an interrupted run resumes. `<out>/fidelity.md` gives, per variant, the mean and
standard deviation over seeds of test NDCG@10 and Recall@10, and the relative
difference of mean test NDCG@10 (acceptance: within 10%).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from benchmarks.benchlib import append_jsonl, mean_std, read_jsonl, write_markdown  # noqa: E402

MODEL = "SASRec"
DATASET = "ml-100k"
CONFIG_FILES = ["quick"]  # recbole_mdcns/yaml/quick.yaml
OURS, RECBOLE = "ours_uniform_bpr", "recbole_uniform_bpr"
VARIANTS: dict[str, dict[str, Any]] = {
    OURS: {"sampler": "uniform", "neg_loss": "BPR"},
    RECBOLE: {"sampler": "none", "loss_type": "BPR",
              "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
}
METRICS = ("ndcg@10", "recall@10")
TOLERANCE = 0.10


def run_one(config_dict: dict[str, Any], seed: int, epochs: Optional[int]) -> dict[str, Any]:
    """Train and test one (variant, seed); metrics as plain floats."""
    from recbole_mdcns import run_recbole_mdcns

    with tempfile.TemporaryDirectory() as checkpoints:
        overrides: dict[str, Any] = {"seed": seed, "checkpoint_dir": checkpoints}
        if epochs is not None:
            overrides["epochs"] = epochs
        start = time.perf_counter()
        result = run_recbole_mdcns(model=MODEL, dataset=DATASET, config_file_list=CONFIG_FILES,
                                   config_dict={**config_dict, **overrides}, saved=True)
        seconds = time.perf_counter() - start
    return {
        "best_valid": {k: float(v) for k, v in result["best_valid_result"].items()},
        "test": {k: float(v) for k, v in result["test_result"].items()},
        "seconds": seconds,
    }


def render(jsonl_path: str) -> str:
    """The markdown summary of `jsonl_path` (the latest line of each (variant, seed))."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for row in read_jsonl(jsonl_path):
        latest[(row["variant"], row["seed"])] = row
    lines = [
        f"# Fidelity: {MODEL} on {DATASET}, quick config, uniform BPR",
        "",
        "Test metrics, mean ± standard deviation over seeds.",
        "",
        "| variant | seeds | " + " | ".join(f"test {m}" for m in METRICS) + " | mean s/run |",
        "|---|---|" + "---:|" * (len(METRICS) + 1),
    ]
    means: dict[str, float] = {}
    for variant in VARIANTS:
        rows = [row for (v, _), row in sorted(latest.items()) if v == variant]
        if not rows:
            continue
        cells = [mean_std([row["test"][m] for row in rows]) for m in METRICS]
        seconds = statistics.mean(row["seconds"] for row in rows)
        seeds = ", ".join(str(row["seed"]) for row in rows)
        lines.append(f"| {variant} | {seeds} | " + " | ".join(cells) + f" | {seconds:.0f} |")
        means[variant] = statistics.mean(row["test"]["ndcg@10"] for row in rows)
    if OURS in means and RECBOLE in means:
        diff = (means[OURS] - means[RECBOLE]) / means[RECBOLE]
        verdict = "PASS" if abs(diff) <= TOLERANCE else "FAIL"
        lines += ["", f"Relative difference of mean test NDCG@10, ours vs RecBole: {diff:+.1%} "
                      f"(acceptance: within {TOLERANCE:.0%}): **{verdict}**"]
    epochs = sorted({str(row.get("epochs") or "yaml") for row in latest.values()})
    lines += ["", f"Epochs: {', '.join(epochs)}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--epochs", type=int, default=None, help="override the yaml's epochs (smoke tests)")
    parser.add_argument("--out", type=str, default=os.path.join(REPO_ROOT, "benchmarks", "results"))
    parser.add_argument("--render-only", action="store_true", help="only regenerate fidelity.md")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config would read any --key=value left here

    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "fidelity.jsonl")
    if not args.render_only:
        done = {(row["variant"], row["seed"]) for row in read_jsonl(jsonl)}
        for seed in args.seeds:
            for variant, config_dict in VARIANTS.items():
                if (variant, seed) in done:
                    continue
                row = {"variant": variant, "seed": seed, "epochs": args.epochs,
                       **run_one(config_dict, seed, args.epochs)}
                append_jsonl(jsonl, row)
                print(f"{variant} seed {seed}: test ndcg@10 {row['test']['ndcg@10']:.4f} "
                      f"in {row['seconds']:.0f} s", flush=True)
    print(f"wrote {write_markdown(args.out, 'fidelity', render)}")


if __name__ == "__main__":
    main()
