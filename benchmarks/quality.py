"""Quality: test metrics of every sampler on the same backbones, budget and protocol.

    python benchmarks/quality.py                                  # the whole plan of quality.yaml
    python benchmarks/quality.py --dry-run                        # list the runs still to do
    python benchmarks/quality.py --only-datasets LastFM --only-samplers uniform,DNS --max-runs 4
    python benchmarks/quality.py --render-only                    # rewrite quality.md and the plots

The plan (`--config`, default `benchmarks/quality.yaml`) declares `datasets` (name ->
a text file converted once by `recbole_mdcns.convert` into `data_dir`, default
`benchmarks/data/`, or `{data_path: DIR}` for RecBole atomic files already at
`DIR/<name>/<name>.inter`), `models`, `runs` (entries `{sampler, variant, models,
datasets, config}`), `seeds` and `base_config`, the backbone, budget and protocol
shared by every run. Runs are done dataset by dataset (in the yaml's order), then seed
by seed, then model, then run entry, so the first seed of every sampler comes before
the other seeds.

Each run builds `recbole_mdcns.config.Config` from base_config, the dataset's
data_path, the entry's config, its sampler and the seed, trains with early stopping on
the validation metric (RecBole's fit, the best checkpoint in a temporary directory),
tests the best checkpoint, and appends one JSON line to `<out>/quality.jsonl` right
away; a (dataset, model, sampler, variant, seed) already there is skipped, so an
interrupted session resumes. `<out>/quality.md` (mean ± std over seeds of the test
metrics) and, when matplotlib is installed, `quality_ndcg.png` and
`quality_diagnostics.png` are regenerated from the JSONL after every session.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import yaml  # noqa: E402

from benchmarks.benchlib import describe, machine, read_jsonl, write_markdown  # noqa: E402

DEFAULT_CONFIG = os.path.join(REPO_ROOT, "benchmarks", "quality.yaml")
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results")
DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, "benchmarks", "data")
JSONL = "quality.jsonl"
PLOT_NDCG, PLOT_DIAGNOSTICS = "quality_ndcg.png", "quality_diagnostics.png"
KEY_FIELDS = ("dataset", "model", "sampler", "variant", "seed")
REFERENCE = "uniform"  # the row the NDCG@10 ratio is taken against
SAMPLER_ORDER = ["none", "uniform", "popularity", "dns", "genni", "divns", "mdcns"]
TABLE_METRICS = [("ndcg@10", "NDCG@10"), ("hit@10", "HR@10"), ("ndcg@20", "NDCG@20"), ("hit@20", "HR@20")]
RATIO_METRIC = "ndcg@10"


class PlanError(ValueError):
    """A malformed plan."""


# ----- the plan --------------------------------------------------------------------
@dataclass
class Run:
    dataset: str
    model: str
    sampler: str
    variant: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict)  # the entry's extra keys

    @property
    def key(self) -> tuple:
        return (self.dataset, self.model, self.sampler, self.variant, self.seed)

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.model} {row_name(self.sampler, self.variant)} seed {self.seed}"


def row_name(sampler: str, variant: str) -> str:
    return f"{sampler} ({variant})" if variant else sampler


def _resolve(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


def load_plan(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        plan = yaml.safe_load(f) or {}
    missing = [k for k in ("datasets", "models", "runs", "seeds", "base_config") if k not in plan]
    if missing:
        raise PlanError(f"{path}: missing {', '.join(missing)}")
    for i, entry in enumerate(plan["runs"]):
        if not isinstance(entry, dict) or "sampler" not in entry:
            raise PlanError(f"{path}: runs[{i}] needs a sampler: {entry!r}")
        unknown = set(entry) - {"sampler", "variant", "models", "datasets", "config"}
        if unknown:
            raise PlanError(f"{path}: runs[{i}] has unknown fields {sorted(unknown)}")
        for scope, known in (("models", plan["models"]), ("datasets", list(plan["datasets"]))):
            extra = set(entry.get(scope) or []) - set(known)
            if extra:
                raise PlanError(f"{path}: runs[{i}] names {scope} {sorted(extra)} not declared in {scope}")
    return plan


def planned_runs(plan: dict[str, Any]) -> list[Run]:
    """Every run of the plan, in order: dataset, seed, model, run entry."""
    runs: list[Run] = []
    seen: set[tuple] = set()
    for dataset in plan["datasets"]:
        for seed in plan["seeds"]:
            for model in plan["models"]:
                for entry in plan["runs"]:
                    if entry.get("models") and model not in entry["models"]:
                        continue
                    if entry.get("datasets") and dataset not in entry["datasets"]:
                        continue
                    run = Run(dataset, model, str(entry["sampler"]), str(entry.get("variant") or ""),
                              int(seed), dict(entry.get("config") or {}))
                    if run.key in seen:
                        raise PlanError(f"two run entries give the same run: {run.label}")
                    seen.add(run.key)
                    runs.append(run)
    return runs


def _split(option: Optional[str]) -> Optional[set[str]]:
    return {s.strip().lower() for s in option.split(",") if s.strip()} if option else None


def select(runs: list[Run], done: set[tuple], datasets: Optional[str] = None,
           samplers: Optional[str] = None) -> list[Run]:
    """The runs still to do, restricted to the comma-separated datasets and samplers (any case)."""
    only_datasets, only_samplers = _split(datasets), _split(samplers)
    return [
        run for run in runs
        if run.key not in done
        and (only_datasets is None or run.dataset.lower() in only_datasets)
        and (only_samplers is None or run.sampler.lower() in only_samplers)
    ]


def dataset_location(name: str, spec: Any, data_dir: str, convert_now: bool = True) -> str:
    """The RecBole data_path holding `name/name.inter`, converting a text source once.

    `spec`: a text file (sequence format) or `{source: FILE, format: sequence|interactions}`
    to convert into `data_dir`, or `{data_path: DIR}` for atomic files already there."""
    if isinstance(spec, str):
        spec = {"source": spec}
    if not isinstance(spec, dict) or ("source" in spec) == ("data_path" in spec):
        raise PlanError(f"dataset {name}: give a source text file or a data_path, got {spec!r}")
    if "data_path" in spec:
        return _resolve(str(spec["data_path"]))
    inter = os.path.join(data_dir, name, f"{name}.inter")
    if convert_now and not os.path.exists(inter):
        from recbole_mdcns.convert import convert

        counts = convert(_resolve(str(spec["source"])), name, data_dir, spec.get("format", "sequence"))
        print(f"converted {name}: {counts.users} users, {counts.items} items, "
              f"{counts.interactions} interactions -> {inter}", flush=True)
    return data_dir


# ----- one run ---------------------------------------------------------------------
def plain(value: Any) -> Any:
    """`value` as plain JSON: containers recursively, anything else non-JSON as str."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    try:  # numpy and torch scalars
        number = float(value)
        return number if math.isfinite(number) else str(number)
    except (TypeError, ValueError):
        return str(value)


def execute(run: Run, base_config: dict[str, Any], data_path: str) -> dict[str, Any]:
    """Train, validate and test one run; its JSON line (without machine and timestamp)."""
    from recbole.utils import init_seed

    from recbole_mdcns.config import Config
    from recbole_mdcns.quick_start import _prepare

    with tempfile.TemporaryDirectory() as checkpoints:
        config = Config(model=run.model, dataset=run.dataset, config_dict={
            **base_config, "data_path": data_path, **run.config,
            "sampler": run.sampler, "seed": run.seed, "checkpoint_dir": checkpoints})
        init_seed(config["seed"], config["reproducibility"])
        _, _, trainer, (train_data, valid_data, test_data) = _prepare(config)

        epochs: list[dict[str, Any]] = []
        train_epoch = trainer._train_epoch

        def timed_train_epoch(data, epoch_idx, *args, **kwargs):
            start = time.perf_counter()
            loss = train_epoch(data, epoch_idx, *args, **kwargs)
            epochs.append({"epoch": epoch_idx, "train_seconds": time.perf_counter() - start,
                           "valid_score": None, "diagnostics": plain(dict(trainer.diagnostics))})
            return loss

        def callback(epoch_idx: int, valid_score: float) -> None:
            if epochs and epochs[-1]["epoch"] == epoch_idx:
                epochs[-1]["valid_score"] = plain(valid_score)

        trainer._train_epoch = timed_train_epoch  # times training alone, not validation
        _, best_valid = trainer.fit(train_data, valid_data, saved=True, verbose=False, callback_fn=callback)
        test = trainer.evaluate(test_data, load_best_model=True)
        final_config = plain(dict(config.final_config_dict))
    return {
        "dataset": run.dataset, "model": run.model, "sampler": run.sampler, "variant": run.variant,
        "seed": run.seed,
        "best_valid": {k: float(v) for k, v in (best_valid or {}).items()},
        "test": {k: float(v) for k, v in test.items()},
        "epochs_run": len(epochs),
        "seconds_per_epoch": statistics.mean(e["train_seconds"] for e in epochs) if epochs else None,
        "per_epoch": epochs,
        "config": final_config,
    }


# ----- results ---------------------------------------------------------------------
def done_keys(path: str) -> set[tuple]:
    return {tuple(row[k] for k in KEY_FIELDS) for row in read_jsonl(path)}


def _row_order(sampler: str, variant: str) -> tuple:
    name = sampler.lower()
    rank = SAMPLER_ORDER.index(name) if name in SAMPLER_ORDER else len(SAMPLER_ORDER)
    return (rank, name, variant != "", variant)


def grouped(jsonl_path: str) -> dict[tuple[str, str], dict[tuple[str, str], list[dict[str, Any]]]]:
    """(dataset, model) -> (sampler, variant) -> rows sorted by seed (the latest line of each
    key), all in a fixed order, whatever the order of the file."""
    latest: dict[tuple, dict[str, Any]] = {}
    for row in read_jsonl(jsonl_path):
        latest[tuple(row[k] for k in KEY_FIELDS)] = row
    groups: dict[tuple[str, str], dict[tuple[str, str], list[dict[str, Any]]]] = {}
    for key in sorted(latest, key=lambda k: (k[0], k[1], _row_order(k[2], k[3]), k[4])):
        groups.setdefault((key[0], key[1]), {}).setdefault((key[2], key[3]), []).append(latest[key])
    return groups


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def render(jsonl_path: str) -> str:
    """The markdown tables of `jsonl_path`: one per dataset and model, a row per sampler and variant."""
    groups = grouped(jsonl_path)
    lines = [
        "# Quality: test metrics per sampler",
        "",
        "Leave-one-out (RecBole `eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user,",
        "mode: full}`), ranking over all items; early stopping on valid NDCG@10, test with the best",
        "checkpoint. Mean ± standard deviation over seeds; HR is RecBole's Hit. `ratio` is the mean",
        f"test NDCG@10 over that of the `{REFERENCE}` row; `s/epoch` is training time alone. Written by",
        "`benchmarks/quality.py` from `quality.jsonl`.",
    ]
    if not groups:
        lines += ["", "No results yet."]
    machines: set[str] = set()
    for (dataset, model), rows in groups.items():
        reference = next((runs for (s, v), runs in rows.items() if s.lower() == REFERENCE and not v), None)
        ref_mean = statistics.mean(r["test"][RATIO_METRIC] for r in reference) if reference else None
        lines += ["", f"## {dataset}, {model}", "",
                  "| sampler | " + " | ".join(f"test {title}" for _, title in TABLE_METRICS)
                  + f" | ratio to {REFERENCE} | runs | epochs | s/epoch |",
                  "|---|" + "---:|" * (len(TABLE_METRICS) + 4)]
        for (sampler, variant), runs in rows.items():
            cells = [_mean_std([r["test"][m] for r in runs if m in r["test"]]) for m, _ in TABLE_METRICS]
            ours = [r["test"][RATIO_METRIC] for r in runs if RATIO_METRIC in r["test"]]
            ratio = f"{statistics.mean(ours) / ref_mean:.3f}" if ours and ref_mean else "–"
            epochs = statistics.mean(r["epochs_run"] for r in runs)
            speeds = [r["seconds_per_epoch"] for r in runs if r.get("seconds_per_epoch") is not None]
            speed = f"{statistics.mean(speeds):.1f}" if speeds else "–"
            lines.append(f"| {row_name(sampler, variant)} | " + " | ".join(cells)
                         + f" | {ratio} | {len(runs)} | {epochs:.1f} | {speed} |")
            machines.update(describe(r["machine"]) for r in runs if r.get("machine"))
    for described in sorted(machines):
        lines += ["", f"Machine: {described}"]
    return "\n".join(lines) + "\n"


# ----- plots -----------------------------------------------------------------------
def _per_epoch_mean(runs: list[dict[str, Any]], name: str) -> tuple[list[int], list[float]]:
    """Epoch -> mean over seeds of diagnostic `name` (over the seeds that ran that epoch)."""
    values: dict[int, list[float]] = {}
    for run in runs:
        for epoch in run.get("per_epoch", []):
            value = (epoch.get("diagnostics") or {}).get(name)
            if isinstance(value, (int, float)):
                values.setdefault(int(epoch["epoch"]), []).append(float(value))
    epochs = sorted(values)
    return epochs, [statistics.mean(values[e]) for e in epochs]


def write_plots(out: str) -> list[str]:
    """quality_ndcg.png and quality_diagnostics.png from the JSONL; [] without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = grouped(os.path.join(out, JSONL))
    if not groups:
        return []
    metadata = {"Software": None}  # no version stamp: the same results give the same files
    written = []

    panels = list(groups.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 0.6 * max(len(r) for _, r in panels)) * len(panels), 4.5),
                             squeeze=False)
    for ax, ((dataset, model), rows) in zip(axes[0], panels):
        names, means, stds = [], [], []
        for (sampler, variant), runs in rows.items():
            values = [r["test"][RATIO_METRIC] for r in runs if RATIO_METRIC in r["test"]]
            if not values:
                continue
            names.append(row_name(sampler, variant))
            means.append(statistics.mean(values))
            stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        ax.bar(range(len(names)), means, yerr=stds, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{dataset}, {model}")
        ax.set_ylabel("test NDCG@10 (mean ± std over seeds)")
    fig.tight_layout()
    path = os.path.join(out, PLOT_NDCG)
    fig.savefig(path, dpi=100, metadata=metadata)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(len(panels), 3, figsize=(15, 3.8 * len(panels)), squeeze=False)
    for row_axes, ((dataset, model), rows) in zip(axes, panels):
        hard, divns, mdcns = row_axes
        for (sampler, variant), runs in rows.items():
            epochs, values = _per_epoch_mean(runs, "neg_score")
            if epochs:
                hard.plot(epochs, values, marker=".", label=row_name(sampler, variant))
            if sampler.lower() == "divns":
                for name, style in (("diverse_distance", "-"), ("hard_distance", "--")):
                    epochs, values = _per_epoch_mean(runs, name)
                    if epochs:
                        divns.plot(epochs, values, style, marker=".", label=f"{row_name(sampler, variant)} {name}")
            if sampler.lower() == "mdcns":
                for name, style in (("divergence", "-"), ("views_agree", "--")):
                    epochs, values = _per_epoch_mean(runs, name)
                    if epochs:
                        mdcns.plot(epochs, values, style, marker=".", label=f"{row_name(sampler, variant)} {name}")
        for ax, title in ((hard, "negative hardness (neg_score)"),
                          (divns, "DivNS: diverse vs hard distance"),
                          (mdcns, "MDCNS: divergence, views_agree")):
            ax.set_title(f"{dataset}, {model}: {title}", fontsize=9)
            ax.set_xlabel("epoch")
            if ax.lines:
                ax.legend(fontsize=6)
    fig.tight_layout()
    path = os.path.join(out, PLOT_DIAGNOSTICS)
    fig.savefig(path, dpi=100, metadata=metadata)
    plt.close(fig)
    written.append(path)
    return written


# ----- command line ----------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the plan (default benchmarks/quality.yaml)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="results folder (default benchmarks/results)")
    parser.add_argument("--only-datasets", default=None, help="comma-separated dataset names")
    parser.add_argument("--only-samplers", default=None, help="comma-separated sampler names (any case)")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs")
    parser.add_argument("--render-only", action="store_true", help="only regenerate quality.md and the plots")
    parser.add_argument("--dry-run", action="store_true", help="list the runs still to do and stop")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config would read any --key=value left here

    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, JSONL)
    if not args.render_only:
        plan = load_plan(args.config)
        todo = select(planned_runs(plan), done_keys(jsonl), args.only_datasets, args.only_samplers)
        if args.max_runs is not None:
            todo = todo[:args.max_runs]
        if args.dry_run:
            for run in todo:
                print(run.label + (f"  {json.dumps(run.config)}" if run.config else ""))
            print(f"{len(todo)} runs to do")
            return 0
        data_dir = _resolve(str(plan.get("data_dir", DEFAULT_DATA_DIR)))
        from tqdm import tqdm

        host = machine()
        progress = tqdm(todo, desc="quality runs", unit="run")
        for run in progress:
            progress.set_postfix_str(run.label)
            data_path = dataset_location(run.dataset, plan["datasets"][run.dataset], data_dir)
            row = execute(run, plan["base_config"], data_path)
            row.update(machine=host, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            with open(jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
            ndcg = row["test"].get(RATIO_METRIC, float("nan"))
            speed = row["seconds_per_epoch"] or 0.0
            progress.write(f"{run.label}: test ndcg@10 {ndcg:.4f}, {row['epochs_run']} epochs, "
                           f"{speed:.1f} s/epoch")
    print(f"wrote {write_markdown(args.out, 'quality', render)}")
    for path in write_plots(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
