"""Seconds per training epoch: SASRec on ml-100k with the packaged `quick` config, on CPU.

    python benchmarks/speed.py                       # every variant, 3 epochs each
    python benchmarks/speed.py --only uniform,dns_c10 --repeats 1
    python benchmarks/speed.py --skip-done           # resume: run only variants not yet measured
    python benchmarks/speed.py --render-only         # rewrite speed.md from speed.jsonl

Each variant runs in a fresh Python process (a variant measured right after RecBole's
memory-hungry DNS ran measurably slower in the same process), is built once (dataset,
model, sampler, trainer, seed 2020), then
`trainer._train_epoch` alone (no evaluation, no warm-up) is timed with
`time.perf_counter()` for `repeats` consecutive epochs (epoch_idx 0, 1, 2, ...) on the
same trainer; the statistic is the median of those epochs. Torch keeps its default
thread count. Each variant appends one JSON line to `<out>/speed.jsonl`, and
`<out>/speed.md` is regenerated from the latest line of each variant.

To add a variant (GenNi, DivNS, MDCNS, ...), add one row to `VARIANTS`.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from benchmarks.benchlib import (  # noqa: E402
    append_jsonl, epoch_timer_parser, machine, machine_lines, read_jsonl, run_fresh, selected_variants, timestamp,
    write_markdown)

MODEL = "SASRec"
DATASET = "ml-100k"
CONFIG_FILES = ["quick"]  # recbole_mdcns/yaml/quick.yaml
SEED = 2020


def _recbole_dns(candidates: int) -> dict[str, Any]:
    """RecBole's own dynamic negative sampling (DNS) over `candidates` uniform candidates."""
    neg_args = {"distribution": "uniform", "sample_num": 1, "dynamic": True, "candidate_num": candidates}
    return {"sampler": "none", "loss_type": "BPR", "train_neg_sample_args": neg_args}


# (name, config dict, repeats: None = the --repeats option)
VARIANTS: list[tuple[str, dict[str, Any], Optional[int]]] = [
    ("recbole_uniform_bpr", {"sampler": "none", "loss_type": "BPR",
                             "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}, None),
    ("recbole_dns_c10", _recbole_dns(10), None),
    ("recbole_dns_c100", _recbole_dns(100), 1),  # re-encodes every sequence per candidate: ~200+ s an epoch
    ("uniform", {"sampler": "uniform"}, None),
    ("popularity", {"sampler": "popularity"}, None),
    ("dns_c10", {"sampler": "DNS", "neg_candidate_num": 10, "dns_top_m": 1}, None),
    ("dns_c100", {"sampler": "DNS", "neg_candidate_num": 100, "dns_top_m": 1}, None),
    ("genni_rho1", {"sampler": "GenNi", "genni_item_ratio": 1.0}, None),
    ("genni_rho0.1", {"sampler": "GenNi", "genni_item_ratio": 0.1}, None),
    ("divns", {"sampler": "DivNS"}, None),
    ("mdcns", {"sampler": "MDCNS", "mdcns_top_m": 1}, None),  # SASRec self, GRU4Rec peer (quick's sizes)
    ("mixgcf_c100", {"sampler": "MixGCF", "neg_candidate_num": 100, "mixgcf_top_m": 1}, None),
    ("ahns_c32", {"sampler": "AHNS", "neg_candidate_num": 32}, None),
    ("srns", {"sampler": "SRNS"}, None),  # S1 + S2 = 40 ids scored per row
    ("adasir", {"sampler": "AdaSIR"}, None),  # S = 200 proposals scored per row
    ("gnno_c100", {"sampler": "GNNO", "gnno_top_m": 1}, None),  # a dense [rows, N] graph weight per batch
    # many negatives: K = 256 per row, and K = 256 shared by the batch (one [B, K] product)
    ("uniform_k256_ssm", {"sampler": "uniform", "neg_num": 256, "neg_loss": "SSM", "neg_logq": True}, None),
    ("uniform_k256_ssm_shared", {"sampler": "uniform", "neg_num": 256, "neg_loss": "SSM", "neg_logq": True,
                                 "neg_shared": True}, None),
]
OUR_REFERENCE = "uniform"
RECBOLE_REFERENCE = "recbole_uniform_bpr"


def time_epochs(config_dict: dict[str, Any], repeats: int, model: str = MODEL, dataset: str = DATASET,
                config_files: Optional[list[str]] = None) -> tuple[list[float], list[dict[str, float]]]:
    """Seconds of each of `repeats` consecutive training epochs of one freshly built trainer,
    and the sampler's diagnostics of each epoch (DivNS's `dpp_seconds`, ...). Defaults:
    this script's model, dataset and the `quick` config."""
    from recbole_mdcns.config import Config
    from recbole_mdcns import build_experiment

    # in a scratch folder: RecBole writes its tensorboard logs relative to the working directory
    with tempfile.TemporaryDirectory() as checkpoints, contextlib.chdir(checkpoints):
        overrides = {"seed": SEED, "checkpoint_dir": checkpoints, "show_progress": False, "gpu_id": ""}
        config = Config(model=model, dataset=dataset,
                        config_file_list=CONFIG_FILES if config_files is None else config_files,
                        config_dict={**config_dict, **overrides})
        run = build_experiment(config)
        model, trainer, train_data = run.model, run.trainer, run.train_data
        neg_args = config["train_neg_sample_args"] or {}
        if neg_args.get("dynamic", False):  # as RecBole's Trainer.fit does
            train_data.get_model(model)
        seconds, diagnostics = [], []
        for epoch_idx in range(repeats):
            start = time.perf_counter()
            trainer._train_epoch(train_data, epoch_idx, show_progress=False)
            seconds.append(time.perf_counter() - start)
            diagnostics.append(dict(getattr(trainer, "diagnostics", {})))
    return seconds, diagnostics


def _ratio(value: float, reference: Optional[float]) -> str:
    return f"{value / reference:.2f}" if reference else "–"


def render(jsonl_path: str) -> str:
    """The markdown table of `jsonl_path`: the latest line of each variant, in `VARIANTS` order."""
    latest: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(jsonl_path):
        latest[row["variant"]] = row
    known = [name for name, _, _ in VARIANTS]
    order = [name for name in known if name in latest] + [name for name in latest if name not in known]
    ours = latest.get(OUR_REFERENCE, {}).get("median_seconds")
    recbole = latest.get(RECBOLE_REFERENCE, {}).get("median_seconds")
    lines = [
        f"# Training speed: {MODEL} on {DATASET}, quick config, CPU",
        "",
        "Median seconds of one training epoch (no evaluation) over `runs` consecutive epochs;",
        "the epoch includes the sampler's end-of-epoch work, whose median is also shown alone",
        "(DivNS's k-DPP selection).",
        "",
        f"| variant | median s/epoch | runs | ratio to our {OUR_REFERENCE} | ratio to RecBole uniform BPR "
        "| end-of-epoch selection s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in order:
        row = latest[name]
        median = row["median_seconds"]
        selection = [d["dpp_seconds"] for d in row.get("diagnostics", []) if "dpp_seconds" in d]
        selection_cell = f"{statistics.median(selection):.2f}" if selection else "–"
        lines.append(f"| {name} | {median:.2f} | {len(row['epoch_seconds'])} | {_ratio(median, ours)} "
                     f"| {_ratio(median, recbole)} | {selection_cell} |")
    lines += machine_lines(latest[name] for name in order)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = epoch_timer_parser(__doc__, "speed", 3, os.path.join(REPO_ROOT, "benchmarks", "results"))
    parser.add_argument("--skip-done", action="store_true", help="skip variants already in speed.jsonl")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config would read any --key=value left here

    only = selected_variants(parser, args.only, [name for name, _, _ in VARIANTS])
    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "speed.jsonl")

    if not args.render_only:
        done = {row["variant"] for row in read_jsonl(jsonl)} if args.skip_done else set()
        for name, config_dict, repeats in VARIANTS:
            if name not in only or name in done:
                continue
            if not args.in_process:
                run_fresh(__file__, "--only", name, "--repeats", str(args.repeats), "--out", args.out, "--in-process")
                continue
            seconds, diagnostics = time_epochs(config_dict, repeats or args.repeats)
            row = {
                "variant": name,
                "model": MODEL,
                "dataset": DATASET,
                "config": config_dict,
                "epoch_seconds": seconds,
                "median_seconds": statistics.median(seconds),
                "diagnostics": diagnostics,
                "machine": machine(),
                "timestamp": timestamp(),
            }
            append_jsonl(jsonl, row)
            print(f"{name}: {', '.join(f'{s:.2f}' for s in seconds)} s/epoch", flush=True)
    if not args.in_process:
        print(f"wrote {write_markdown(args.out, 'speed', render)}")


if __name__ == "__main__":
    main()
