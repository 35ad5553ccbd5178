"""Quality: test metrics of every sampler on the same backbones, budget and protocol.

    python benchmarks/quality.py                                  # the whole plan of quality.yaml
    python benchmarks/quality.py --jobs 2                         # two runs at a time
    python benchmarks/quality.py --dry-run                        # list the runs still to do
    python benchmarks/quality.py --only-datasets LastFM --only-samplers uniform,DNS --max-runs 4
    python benchmarks/quality.py --render-only                    # rewrite quality.md and the plots
    python benchmarks/quality.py --config benchmarks/example_plan.yaml  # a plan of one's own

The plan (`--config`, default `benchmarks/quality.yaml`; its format: `quality_plan.py`)
lists datasets, models, run entries, seeds and the `base_config` shared by every run. Runs
go: the entries marked `first` (every seed) before the others, then seed by seed, run entry
(in the yaml's order), model, dataset.

Each run trains with early stopping on the validation metric (RecBole's fit), tests the
best checkpoint with RecBole's evaluation and once more with each user's earlier items
masked (the published protocol), and appends one JSON line to `<out>/quality.jsonl` right
away (`quality_run.py`). A run whose line is there, recorded with the run's whole effective
config (defaults and nested keys included, the machine's own keys left out:
`quality_plan.signature`), is done and skipped, so an interrupted session resumes; lines of
another config stay in the file and are left out of the tables (`quality_results.py`). An interrupted run continues from the start of its last epoch.
`--jobs N` trains N runs at a time, each in its own process with CPUs / N threads.

`<out>` defaults to `benchmarks/results/` for the committed plan and to
`<plan's folder>/<plan's name>_results/` for any other. `<out>/quality.md` (mean ± std
over seeds, `quality_report.py`) and, when matplotlib is installed, `quality_ndcg.png` and
`quality_diagnostics.png` (`quality_plots.py`) are regenerated from the JSONL at the end;
for a plan written to its own default `<out>` inside the repository, benchmarks/README.md's copy
of the tables too, where the README has the two markers naming that `quality.md`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from benchmarks.benchlib import fresh_command, write_markdown  # noqa: E402
from benchmarks.quality_plan import (  # noqa: E402
    DEFAULT_CONFIG, Run, conversion_dir, dataset_location, default_out, load_plan, planned_runs,
    select, signature)
from benchmarks.quality_plots import write_plots  # noqa: E402
from benchmarks.quality_report import README, RATIO_METRIC, render_plan, sync_readme  # noqa: E402
from benchmarks.quality_results import JSONL, current_rows, row_key  # noqa: E402
from benchmarks.quality_run import run_and_record  # noqa: E402


def recorded_keys(plan: dict[str, Any], out: str) -> set[tuple]:
    """The keys of the plan's runs that are done: a current line in `<out>`'s JSONL."""
    return {row_key(row) for row in current_rows(os.path.join(out, JSONL), plan)[0]}


def run_here(todo: list[Run], plan: dict[str, Any], out: str, jobs: int = 1) -> None:
    """Train the runs one after another in this process, each line appended as it ends;
    `jobs`: how many runs share the machine meanwhile (recorded beside the timings). A run
    that another process recorded since `todo` was listed is skipped."""
    from tqdm import tqdm

    progress = tqdm(todo, desc="quality runs", unit="run")
    for run in progress:
        progress.set_postfix_str(run.label)
        if run.key in recorded_keys(plan, out):
            progress.write(f"{run.label}: recorded meanwhile by another process; skipped")
            continue
        data_path = dataset_location(run.dataset, plan["datasets"][run.dataset], conversion_dir(plan))
        row = run_and_record(run, plan, signature(run, plan), data_path, out, jobs)
        if row is None:
            progress.write(f"{run.label}: another process is training it; skipped")
            continue
        speed = row["seconds_per_epoch"] or 0.0
        progress.write(f"{run.label}: test ndcg@10 {row['test'].get(RATIO_METRIC, float('nan')):.4f} "
                       f"(masked {row['test_masked'].get(RATIO_METRIC, float('nan')):.4f}), "
                       f"{row['epochs_run']} epochs, {speed:.1f} s/epoch")


def run_in_workers(todo: list[Run], plan: dict[str, Any], args: argparse.Namespace) -> int:
    """Train the runs in `args.jobs` child processes at a time, one fresh process per run,
    each with its share of the CPU threads; returns how many runs failed."""
    for name in {run.dataset for run in todo}:  # convert once, before the workers start
        dataset_location(name, plan["datasets"][name], conversion_dir(plan))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    pending, active, failed = list(todo), [], 0
    while pending or active:
        while pending and len(active) < args.jobs:
            run = pending.pop(0)
            command = fresh_command(__file__, "--config", args.config, "--out", args.out, "--threads", str(threads),
                                    "--jobs", str(args.jobs), "--only-run", json.dumps(list(run.key)))
            active.append((run, subprocess.Popen(command)))
        time.sleep(1.0)
        for run, process in [(r, p) for r, p in active if p.poll() is not None]:
            active.remove((run, process))
            if process.returncode:
                failed += 1
                print(f"{run.label}: failed (exit {process.returncode}); it stays to do", flush=True)
    return failed


def publish(plan: dict[str, Any], args: argparse.Namespace) -> None:
    """Regenerate `<out>/quality.md` and the plots from the JSONL, and benchmarks/README.md's copy of the
    tables where it has one for this file and the plan was written to its own results folder."""
    os.makedirs(args.out, exist_ok=True)
    markdown_path = write_markdown(args.out, "quality", lambda path: render_plan(path, plan))
    print(f"wrote {markdown_path}")
    in_repo = os.path.commonpath([os.path.abspath(markdown_path), REPO_ROOT]) == REPO_ROOT
    if in_repo and os.path.abspath(args.out) == default_out(args.config):
        source = os.path.relpath(markdown_path, REPO_ROOT).replace(os.sep, "/")
        with open(markdown_path, encoding="utf-8") as f:
            if sync_readme(README, f.read(), source):
                print(f"synced {README} (its copy of {source})")
    rows, _ = current_rows(os.path.join(args.out, JSONL), plan)
    for path in write_plots(args.out, rows, plan.get("published")):
        print(f"wrote {path}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the plan (default benchmarks/quality.yaml)")
    parser.add_argument("--out", default=None,
                        help="results folder (default benchmarks/results for the committed plan, "
                             "<plan's folder>/<plan's name>_results for another)")
    parser.add_argument("--only-datasets", default=None, help="comma-separated dataset names")
    parser.add_argument("--only-samplers", default=None, help="comma-separated sampler names (any case)")
    parser.add_argument("--only-variants", default=None, help="comma-separated variant names (any case)")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per run (default: torch's own; CPUs / jobs with --jobs)")
    parser.add_argument("--render-only", action="store_true", help="only regenerate quality.md and the plots")
    parser.add_argument("--dry-run", action="store_true", help="list the runs still to do and stop")
    parser.add_argument("--only-run", default=None, help=argparse.SUPPRESS)  # a worker's run key, as JSON
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config would read any --key=value left here
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out = os.path.abspath(args.out or default_out(args.config))

    plan = load_plan(args.config)
    failed = 0
    if not args.render_only:
        todo = select(planned_runs(plan), recorded_keys(plan, args.out), args.only_datasets, args.only_samplers,
                      args.only_variants)
        if args.only_run is not None:
            todo = [run for run in todo if list(run.key) == json.loads(args.only_run)]
            run_here(todo, plan, args.out, args.jobs)
            return 0  # the parent renders
        if args.max_runs is not None:
            todo = todo[:args.max_runs]
        if args.dry_run:
            for run in todo:
                print(run.label + (f"  {json.dumps(run.config)}" if run.config else ""))
            print(f"{len(todo)} runs to do (results in {args.out})")
            return 0
        if args.jobs > 1:
            failed = run_in_workers(todo, plan, args)
        else:
            run_here(todo, plan, args.out)
    publish(plan, args)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
