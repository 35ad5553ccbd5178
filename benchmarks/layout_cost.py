"""Seconds per training epoch under both training layouts: SASRec on Beauty with the
quality benchmark's backbone (`benchmarks/quality.yaml`'s base_config: hidden 64, 2
layers, length 20, batch 512), for uniform (BCE, one negative), RecBole's CE
(`sampler: none`) and MDCNS.

    python benchmarks/layout_cost.py                 # every variant, 2 epochs each
    python benchmarks/layout_cost.py --only sequence_uniform --repeats 1
    python benchmarks/layout_cost.py --render-only   # rewrite layout_cost.md from the JSONL

Each variant runs in a fresh process, built once (seed 2020); `trainer._train_epoch`
alone is timed (no evaluation) for `repeats` consecutive epochs, median reported, as
`speed.py` does. Under `train_layout: sequence` an epoch trains each user's longest
prefix once, with a target at every position; under `prefix` (RecBole's) every prefix
is a row. Lines go to `<out>/layout_cost.jsonl`; `<out>/layout_cost.md` is regenerated.
"""
from __future__ import annotations

import os
import statistics
import sys
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from benchmarks.benchlib import (  # noqa: E402
    append_jsonl, epoch_timer_parser, machine, machine_lines, read_jsonl, run_fresh, selected_variants, timestamp,
    write_markdown)
from benchmarks.quality_plan import DEFAULT_CONFIG, conversion_dir, dataset_location, load_plan  # noqa: E402
from benchmarks.speed import time_epochs  # noqa: E402

MODEL, DATASET = "SASRec", "Beauty"
SAMPLERS = {"uniform": {"sampler": "uniform", "neg_loss": "BCE"}, "CE": {"sampler": "none"}, "MDCNS": {"sampler": "MDCNS"}}
VARIANTS = {f"{layout}_{name}": {**keys, "train_layout": layout}
            for layout in ("prefix", "sequence") for name, keys in SAMPLERS.items()}


def base_config() -> dict[str, Any]:
    """The quality plan's base_config and Beauty's data_path (converted once)."""
    plan = load_plan(DEFAULT_CONFIG)
    data_path = dataset_location(DATASET, plan["datasets"][DATASET], conversion_dir(plan))
    return {**plan["base_config"], "data_path": data_path}


def render(jsonl_path: str) -> str:
    latest = {row["variant"]: row for row in read_jsonl(jsonl_path)}
    lines = [f"# Epoch cost of the training layouts: {MODEL} on {DATASET}, quality.yaml's backbone, CPU", "",
             "Median seconds of one training epoch (no evaluation) over `runs` consecutive epochs.", "",
             "| sampler | prefix s/epoch | sequence s/epoch | prefix / sequence | runs |", "|---|---:|---:|---:|---:|"]
    for name in SAMPLERS:
        prefix, sequence = latest.get(f"prefix_{name}"), latest.get(f"sequence_{name}")
        cell = lambda row: f"{row['median_seconds']:.1f}" if row else "–"  # noqa: E731
        ratio = f"{prefix['median_seconds'] / sequence['median_seconds']:.1f}x" if prefix and sequence else "–"
        runs = "/".join(str(len(row["epoch_seconds"])) for row in (prefix, sequence) if row)
        lines.append(f"| {name} | {cell(prefix)} | {cell(sequence)} | {ratio} | {runs} |")
    lines += machine_lines(latest.values())
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = epoch_timer_parser(__doc__, "layout_cost", 2, os.path.join(REPO_ROOT, "benchmarks", "results"))
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config would read any --key=value left here
    only = selected_variants(parser, args.only, VARIANTS)
    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "layout_cost.jsonl")
    if not args.render_only:
        for name in only:
            if not args.in_process:
                run_fresh(__file__, "--only", name, "--repeats", str(args.repeats), "--out", args.out, "--in-process")
                continue
            config = {**base_config(), **VARIANTS[name]}
            seconds, _ = time_epochs(config, args.repeats, MODEL, DATASET, config_files=[])
            append_jsonl(jsonl, {"variant": name, "model": MODEL, "dataset": DATASET, "config": VARIANTS[name],
                                 "epoch_seconds": seconds, "median_seconds": statistics.median(seconds),
                                 "machine": machine(), "timestamp": timestamp()})
            print(f"{name}: {', '.join(f'{s:.1f}' for s in seconds)} s/epoch", flush=True)
    if not args.in_process:
        print(f"wrote {write_markdown(args.out, 'layout_cost', render)}")


if __name__ == "__main__":
    main()
