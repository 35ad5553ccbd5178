"""Quality: test metrics of every sampler on the same backbones, budget and protocol.

    python benchmarks/quality.py                                  # the whole plan of quality.yaml
    python benchmarks/quality.py --jobs 2                         # two runs at a time
    python benchmarks/quality.py --dry-run                        # list the runs still to do
    python benchmarks/quality.py --only-datasets LastFM --only-samplers uniform,DNS --max-runs 4
    python benchmarks/quality.py --render-only                    # rewrite quality.md and the plots

The plan (`--config`, default `benchmarks/quality.yaml`) declares `datasets` (name ->
a text file converted once by `recbole_mdcns.convert` into `data_dir`, default
`benchmarks/data/`, or `{data_path: DIR}` for RecBole atomic files already at
`DIR/<name>/<name>.inter`), `models`, `runs` (entries `{sampler, variant, models,
datasets, seeds, config}`), `seeds` and `base_config`, the backbone, budget and protocol
shared by every run. Runs are done seed by seed, then run entry (in the yaml's order),
then model, then dataset, so the first seed of the first entries comes first.

Each run builds `recbole_mdcns.config.Config` from base_config, the dataset's
data_path, the entry's config, its sampler and the seed, trains with early stopping on
the validation metric (RecBole's fit), tests the best checkpoint with RecBole's
evaluation and once more with each user's earlier items masked (the published
protocol), and appends one JSON line to
`<out>/quality.jsonl` right away; a (dataset, model, sampler, variant, seed) already
there under the plan's current budget is skipped, so an interrupted session resumes.
Until its line is written a run keeps its checkpoints in `<out>/unfinished/<run>/`, so an
interrupted run continues from the start of its last epoch (exactly: the plugin's resume).
Lines trained under another budget stay in the file and are left out of the tables.
`--jobs N` trains N runs at a time, each in its own process with CPUs / N threads.
`<out>/quality.md` (mean ± std over seeds of the test metrics) and, when matplotlib is
installed, `quality_ndcg.png` and `quality_diagnostics.png` are regenerated from the
JSONL at the end; with the default `--out`, the README's copy of the tables (between its
quality markers) too.
"""
from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402

from benchmarks.benchlib import describe, machine, read_jsonl, write_markdown  # noqa: E402

DEFAULT_CONFIG = os.path.join(REPO_ROOT, "benchmarks", "quality.yaml")
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results")
DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, "benchmarks", "data")
JSONL = "quality.jsonl"
UNFINISHED = "unfinished"  # <out>/unfinished/<run>/: a run's checkpoints until its line is written
PLOT_NDCG, PLOT_DIAGNOSTICS = "quality_ndcg.png", "quality_diagnostics.png"
KEY_FIELDS = ("dataset", "model", "sampler", "variant", "seed")
REFERENCE = "uniform"  # the row the NDCG@10 ratio is taken against
SAMPLER_ORDER = ["none", "uniform", "popularity", "dns", "genni", "divns", "mdcns"]
MODEL_ORDER = ["SASRec", "GRU4Rec"]  # the headline backbone first; others after, by name
TABLE_METRICS = [("ndcg@10", "NDCG@10"), ("hit@10", "HR@10"), ("ndcg@20", "NDCG@20"), ("hit@20", "HR@20")]
MASKED_METRICS = [("ndcg@10", "NDCG@10"), ("hit@10", "HR@10")]
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
        unknown = set(entry) - {"sampler", "variant", "models", "datasets", "seeds", "config"}
        if unknown:
            raise PlanError(f"{path}: runs[{i}] has unknown fields {sorted(unknown)}")
        for scope, known in (("models", plan["models"]), ("datasets", list(plan["datasets"])), ("seeds", plan["seeds"])):
            extra = set(entry.get(scope) or []) - set(known)
            if extra:
                raise PlanError(f"{path}: runs[{i}] names {scope} {sorted(extra)} not declared in {scope}")
    return plan


def planned_runs(plan: dict[str, Any]) -> list[Run]:
    """Every run of the plan, in order: seed, run entry, model, dataset (so a partial set
    holds the first seed of the first entries on every dataset)."""
    runs: list[Run] = []
    seen: set[tuple] = set()
    for seed in plan["seeds"]:
        for entry in plan["runs"]:
            for model in plan["models"]:
                for dataset in plan["datasets"]:
                    scopes = (("models", model), ("datasets", dataset), ("seeds", seed))
                    if any(entry.get(scope) and value not in entry[scope] for scope, value in scopes):
                        continue
                    run = Run(dataset, model, str(entry["sampler"]), str(entry.get("variant") or ""),
                              int(seed), dict(entry.get("config") or {}))
                    if run.key in seen:
                        raise PlanError(f"two run entries give the same run: {run.label}")
                    seen.add(run.key)
                    runs.append(run)
    return runs


def budget(run: Run, base_config: dict[str, Any]) -> dict[str, Any]:
    """The scalar keys a run's result depends on (backbone sizes, budget, the entry's keys)."""
    return {k: v for k, v in {**base_config, **run.config}.items() if isinstance(v, (bool, int, float, str))}


def current_rows(jsonl_path: str, plan: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """The JSONL rows of runs in `plan` trained under its budget (the latest line of each key),
    and the other lines, each with what set it apart (its differing keys, "not planned" or
    "repeated")."""
    planned = {run.key: budget(run, plan["base_config"]) for run in planned_runs(plan)}
    latest: dict[tuple, dict[str, Any]] = {}
    superseded: list[tuple[dict[str, Any], str]] = []
    for row in read_jsonl(jsonl_path):
        key = tuple(row[k] for k in KEY_FIELDS)
        if key not in planned:
            superseded.append((row, "not planned"))
            continue
        differing = [f"{k} {row['config'].get(k)}" for k, v in planned[key].items() if row["config"].get(k) != v]
        if differing:
            superseded.append((row, ", ".join(differing)))
        else:
            if key in latest:
                superseded.append((latest[key], "repeated"))
            latest[key] = row
    return list(latest.values()), superseded


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


def earlier_items(dataset: Any) -> csr_matrix:
    """[users, items]: the items of each user before their last interaction (the test target),
    which the published protocol of these benchmarks removes from the test ranking."""
    feat = dataset.inter_feat
    users = feat[dataset.uid_field].numpy()
    items = feat[dataset.iid_field].numpy()
    order = np.lexsort((feat[dataset.time_field].numpy(), users))
    users, items = users[order], items[order]
    earlier = np.r_[users[1:] == users[:-1], False]  # all but each user's last
    return csr_matrix((np.ones(int(earlier.sum()), dtype=bool), (users[earlier], items[earlier])),
                      shape=(dataset.user_num, dataset.item_num))


@torch.no_grad()
def ranking_metrics(model: Any, data: Any, topk: list[int], exclude: Optional[csr_matrix] = None) -> dict[str, float]:
    """Hit@k and NDCG@k of a full-sort evaluation loader, ranking every item but the padding
    id and, with `exclude`, each user's row of it (strictly higher scores rank first)."""
    model.eval()
    uid_field, iid_field = data._dataset.uid_field, data._dataset.iid_field
    sums = {f"{name}@{k}": 0.0 for k in topk for name in ("hit", "ndcg")}
    count = 0
    for interaction, *_ in data:
        interaction = interaction.to(model.device)
        scores = model.full_sort_predict(interaction).view(len(interaction), -1)
        scores[:, 0] = -torch.inf
        if exclude is not None:
            r, c = exclude[interaction[uid_field].cpu().numpy()].nonzero()
            scores[torch.as_tensor(r, device=scores.device), torch.as_tensor(c, device=scores.device)] = -torch.inf
        target = scores.gather(1, interaction[iid_field].unsqueeze(1))
        rank = (scores > target).sum(1)
        for k in topk:
            hit = rank < k
            sums[f"hit@{k}"] += hit.sum().item()
            sums[f"ndcg@{k}"] += (hit / torch.log2(rank + 2.0)).sum().item()
        count += len(interaction)
    return {name: total / count for name, total in sums.items()}


def run_folder(run: Run, base_config: dict[str, Any], root: str) -> str:
    """Where `run` keeps its checkpoints and per-epoch record until its line is written:
    named by its key and a digest of its budget, so a changed plan never resumes an old state."""
    digest = hashlib.sha1(json.dumps(budget(run, base_config), sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(root, "-".join(str(part) for part in run.key if part != "") + f"-{digest}")


def _write_json(path: str, value: Any) -> None:
    """`value` to `path` atomically (a kill never leaves half a file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


def execute(run: Run, base_config: dict[str, Any], data_path: str, folder: str) -> dict[str, Any]:
    """Train, validate and test one run; its JSON line (without machine and timestamp).

    Checkpoints and the per-epoch record live in `folder`: a run interrupted there resumes
    from the training state of its last epoch start (the plugin's exact resume), so a long
    run can be finished over several sessions; `resumed_from` lists where it did."""
    from recbole.utils import init_seed

    from recbole_mdcns.config import Config
    from recbole_mdcns import build_experiment

    record_path = os.path.join(folder, "epochs.json")
    config = Config(model=run.model, dataset=run.dataset, config_dict={
        **base_config, "data_path": data_path, **run.config,
        "sampler": run.sampler, "seed": run.seed, "checkpoint_dir": folder})
    init_seed(config["seed"], config["reproducibility"])
    built = build_experiment(config)
    dataset, trainer, train_data, valid_data, test_data = (
        built.dataset, built.trainer, built.train_data, built.valid_data, built.test_data)

    epochs: list[dict[str, Any]] = []
    resumed_from: list[int] = []
    states = glob.glob(os.path.join(folder, "*-resume.pth"))
    if states:
        trainer.resume_checkpoint(max(states, key=os.path.getmtime))
        record = {"per_epoch": [], "resumed_from": []}  # none yet when killed before epoch 0's validation
        if os.path.exists(record_path):
            with open(record_path) as f:
                record = json.load(f)
        epochs = [e for e in record["per_epoch"] if e["epoch"] < trainer.start_epoch]
        resumed_from = record["resumed_from"] + [trainer.start_epoch]
        print(f"{run.label}: resumed at epoch {trainer.start_epoch}", flush=True)
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
            _write_json(record_path, {"per_epoch": epochs, "resumed_from": resumed_from})
            print(f"{run.label}: epoch {epoch_idx} trained in {epochs[-1]['train_seconds']:.1f} s, "
                  f"valid {config['valid_metric']} {valid_score:.4f}", flush=True)

    trainer._train_epoch = timed_train_epoch  # times training alone, not validation
    _, best_valid = trainer.fit(train_data, valid_data, saved=True, verbose=False, callback_fn=callback)
    test = trainer.evaluate(test_data, load_best_model=True)
    test_masked = ranking_metrics(trainer.model, test_data, config["topk"], earlier_items(dataset))
    return {
        "dataset": run.dataset, "model": run.model, "sampler": run.sampler, "variant": run.variant,
        "seed": run.seed,
        "best_valid": {k: float(v) for k, v in (best_valid or {}).items()},
        "test": {k: float(v) for k, v in test.items()},
        "test_masked": test_masked,
        "threads": torch.get_num_threads(),
        "epochs_run": len(epochs),
        "seconds_per_epoch": statistics.mean(e["train_seconds"] for e in epochs) if epochs else None,
        "resumed_from": resumed_from,
        "per_epoch": epochs,
        "config": plain(dict(config.final_config_dict)),
    }


# ----- results ---------------------------------------------------------------------
def _model_order(model: str) -> tuple:
    return (MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER), model)


def _row_order(sampler: str, variant: str) -> tuple:
    name = sampler.lower()
    rank = SAMPLER_ORDER.index(name) if name in SAMPLER_ORDER else len(SAMPLER_ORDER)
    return (rank, name, variant != "", variant)


def grouped(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[tuple[str, str], list[dict[str, Any]]]]:
    """(dataset, model) -> (sampler, variant) -> rows sorted by seed, in a fixed order
    whatever the order of `rows`."""
    groups: dict[tuple[str, str], dict[tuple[str, str], list[dict[str, Any]]]] = {}
    for row in sorted(rows, key=lambda r: (r["dataset"], _model_order(r["model"]), _row_order(r["sampler"], r["variant"]),
                                           r["seed"])):
        groups.setdefault((row["dataset"], row["model"]), {}).setdefault((row["sampler"], row["variant"]), []).append(row)
    return groups


def append_row(jsonl_path: str, row: dict[str, Any]) -> None:
    """Append one JSON line, locked against the other workers of a `--jobs` run."""
    with open(jsonl_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(row) + "\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def published_range(published: dict[str, Any], dataset: str, model: str, row: str) -> Optional[tuple[float, float]]:
    """The plan's published masked NDCG@10 of a row as (low, high); None where there is none."""
    value = published.get(dataset, {}).get(model, {}).get(row)
    if value is None:
        return None
    return (float(value[0]), float(value[-1])) if isinstance(value, list) else (float(value), float(value))


def _format_range(bounds: Optional[tuple[float, float]]) -> str:
    if bounds is None:
        return "–"
    low, high = bounds
    return f"{low:.4f}" if low == high else f"{low:.4f}-{high:.4f}"


def render(results: list[dict[str, Any]], superseded: Optional[list[tuple[dict[str, Any], str]]] = None,
           published: Optional[dict[str, dict[str, Any]]] = None, planned: Optional[int] = None) -> str:
    """The markdown tables of `results`: one per dataset and model, a row per sampler and
    variant, beside the `published` masked NDCG@10 (dataset -> model -> row name -> value or
    [low, high]); then the `superseded` lines, one table row each; then how many of the
    `planned` runs the tables hold, and the machines."""
    groups = grouped(results)
    published = published or {}
    lines = [
        "# Quality: test metrics per sampler",
        "",
        "Leave-one-out (RecBole `eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user,",
        "mode: full}`), ranking over all items; early stopping on valid NDCG@10, test with the best",
        "checkpoint. Mean ± standard deviation over seeds; HR is RecBole's Hit. The first four",
        "metrics are RecBole's, which ranks a user's earlier items too (it masks none for sequential",
        "models); `masked` ranks without them, the protocol of the published reference points.",
        "`published` is the masked NDCG@10 reported for that training on the same files (the plan's",
        f"`published`). `ratio` is the mean test NDCG@10 over that of the `{REFERENCE}` row; `s/epoch`",
        "is training time alone, per machine (listed at the end; a row's seeds may come from",
        "different machines). `at cap` counts the runs that the epoch cap ended before early stopping",
        "did (their best valid epoch among the last few): their figures may be lower bounds. Written",
        "by `benchmarks/quality.py` from `quality.jsonl`.",
    ]
    if not groups:
        lines += ["", "No results yet."]
    every_row = results + [row for row, _ in superseded or []]
    machines = {name: chr(ord("A") + i) for i, name in enumerate(sorted({_machine_name(r) for r in every_row}))}
    sharing: dict[str, set[str]] = {}  # machine -> how runs shared it, where a line records it
    for r in every_row:
        if r.get("concurrent_runs"):
            alone = r["concurrent_runs"] == 1
            sharing.setdefault(_machine_name(r), set()).add(
                ("1 run alone" if alone else f"{r['concurrent_runs']} runs at a time")
                + f", {r['threads']} CPU thread(s)" + ("" if alone else " each"))
    for (dataset, model), rows in groups.items():
        reference = next((runs for (s, v), runs in rows.items() if s.lower() == REFERENCE and not v), None)
        ref_mean = statistics.mean(r["test"][RATIO_METRIC] for r in reference) if reference else None
        lines += ["", f"## {dataset}, {model}", "",
                  "| sampler | " + " | ".join(f"test {title}" for _, title in TABLE_METRICS)
                  + " | " + " | ".join(f"masked {title}" for _, title in MASKED_METRICS)
                  + f" | published | ratio to {REFERENCE} | runs | epochs | at cap | s/epoch |",
                  "|---|" + "---:|" * (len(TABLE_METRICS) + len(MASKED_METRICS) + 6)]
        for (sampler, variant), runs in rows.items():
            cells = [_mean_std([r["test"][m] for r in runs if m in r["test"]]) for m, _ in TABLE_METRICS]
            cells += [_mean_std([r["test_masked"][m] for r in runs if m in r.get("test_masked", {})])
                      for m, _ in MASKED_METRICS]
            ours = [r["test"][RATIO_METRIC] for r in runs if RATIO_METRIC in r["test"]]
            ratio = f"{statistics.mean(ours) / ref_mean:.3f}" if ours and ref_mean else "–"
            epochs = statistics.mean(r["epochs_run"] for r in runs)
            at_cap = sum(r["epochs_run"] == r.get("config", {}).get("epochs") for r in runs)
            speed = _speeds_by_machine(runs, machines)
            reported = _format_range(published_range(published, dataset, model, row_name(sampler, variant)))
            lines.append(f"| {row_name(sampler, variant)} | " + " | ".join(cells)
                         + f" | {reported} | {ratio} | {len(runs)} | {epochs:.1f} | {at_cap} | {speed} |")
    if superseded:
        lines += ["", "## Superseded lines", "",
                  "In `quality.jsonl` but not in the tables above: trained with other values of the plan's keys",
                  "(the run's values shown), no longer planned, or repeated by a later line.", "",
                  "| dataset | model | sampler | seed | trained with | test NDCG@10 | masked NDCG@10 | epochs |",
                  "|---|---|---|---:|---|---:|---:|---:|"]
        for row, why in sorted(superseded, key=lambda item: (item[0].get("timestamp", ""), item[1])):
            masked = row.get("test_masked", {}).get(RATIO_METRIC)
            lines.append(f"| {row['dataset']} | {row['model']} | {row_name(row['sampler'], row['variant'])} "
                         f"| {row['seed']} | {why} | {row['test'][RATIO_METRIC]:.4f} | "
                         f"{'–' if masked is None else f'{masked:.4f}'} | {row['epochs_run']} |")
    if planned is not None:
        lines += ["", f"Runs in the tables: {len(results)} of the plan's {planned}."]
    for name, letter in machines.items():
        shared = "; ".join(sorted(sharing.get(name, ())))
        lines += ["", f"Machine {letter}: {name}" + (f" ({shared})" if shared else "")]
    return "\n".join(lines) + "\n"


def render_plan(jsonl_path: str, plan: dict[str, Any]) -> str:
    """quality.md: the tables of the lines of `jsonl_path` that `plan` asks for (`render`)."""
    rows, superseded = current_rows(jsonl_path, plan)
    return render(rows, superseded, plan.get("published"), len(planned_runs(plan)))


def _machine_name(row: dict[str, Any]) -> str:
    """The machine a row was trained on."""
    return describe(row["machine"]) if row.get("machine") else "not recorded"


def _speeds_by_machine(runs: list[dict[str, Any]], machines: dict[str, str]) -> str:
    """Mean training seconds per epoch, one figure per machine: `30.5 (A); 4.1 (B)`."""
    by_machine: dict[str, list[float]] = {}
    for r in runs:
        if r.get("seconds_per_epoch") is not None:
            by_machine.setdefault(machines[_machine_name(r)], []).append(r["seconds_per_epoch"])
    return "; ".join(f"{statistics.mean(v):.1f} ({m})" for m, v in sorted(by_machine.items())) or "–"


README = os.path.join(REPO_ROOT, "README.md")
README_START = "<!-- quality tables: written by benchmarks/quality.py from benchmarks/results/quality.md -->"
README_END = "<!-- end of quality tables -->"


def sync_readme(readme_path: str, markdown: str) -> bool:
    """Copy `markdown`'s tables (from its first `## ` heading on, headings as `Title:` lines)
    between the README's two quality markers; False when the README has no markers."""
    with open(readme_path) as f:
        text = f.read()
    if README_START not in text or README_END not in text:
        return False
    body = markdown[markdown.index("\n## ") + 1:] if "\n## " in markdown else "No results yet.\n"
    body = "\n".join(f"{line[3:]}:" if line.startswith("## ") else line for line in body.splitlines())
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    with open(readme_path, "w") as f:
        f.write(f"{head}{README_START}\n{body}\n{README_END}{tail}")
    return True


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


def write_plots(out: str, results: list[dict[str, Any]], published: Optional[dict[str, Any]] = None) -> list[str]:
    """quality_ndcg.png (RecBole's and masked test NDCG@10, the published points) and
    quality_diagnostics.png; [] without matplotlib."""
    published = published or {}
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = grouped(results)
    if not groups:
        return []
    metadata = {"Software": None}  # no version stamp: the same results give the same files
    written = []

    panels = list(groups.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 0.6 * max(len(r) for _, r in panels)) * len(panels), 4.5),
                             squeeze=False)
    for ax, ((dataset, model), rows) in zip(axes[0], panels):
        names = [row_name(sampler, variant) for sampler, variant in rows]
        for offset, (metrics_key, label, color) in enumerate((("test", "RecBole (earlier items ranked)", "tab:blue"),
                                                        ("test_masked", "earlier items masked", "tab:orange"))):
            values = [[r[metrics_key][RATIO_METRIC] for r in runs if RATIO_METRIC in r.get(metrics_key, {})]
                      for runs in rows.values()]
            ax.bar([i + 0.4 * offset - 0.2 for i in range(len(names))],
                   [statistics.mean(v) if v else 0.0 for v in values], width=0.4, label=label, color=color,
                   yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in values], capsize=2)
        bounds = {i: published_range(published, dataset, model, name) for i, name in enumerate(names)}
        reported = {i: sum(b) / 2 for i, b in bounds.items() if b is not None}
        if reported:
            ax.plot([i + 0.2 for i in reported], list(reported.values()), "k_", markersize=14,
                    markeredgewidth=2, label="published (masked)")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.legend(fontsize=7)
        ax.set_title(f"{dataset}, {model}")
        ax.set_ylabel("test NDCG@10 (mean ± std over seeds)")
    fig.tight_layout()
    path = os.path.join(out, PLOT_NDCG)
    fig.savefig(path, dpi=100, metadata=metadata)
    plt.close(fig)
    written.append(path)

    # one colour per row name in every panel (20 distinct ones); a figure's second line is dashed
    names = list(dict.fromkeys(row_name(s, v) for _, rows in panels for s, v in rows))
    colors = {name: plt.get_cmap("tab20")(i % 20) for i, name in enumerate(names)}
    fig, axes = plt.subplots(len(panels), 3, figsize=(15, 3.8 * len(panels)), squeeze=False)
    for row_axes, ((dataset, model), rows) in zip(axes, panels):
        hard, divns, mdcns = row_axes
        for (sampler, variant), runs in rows.items():
            label = row_name(sampler, variant)
            epochs, values = _per_epoch_mean(runs, "neg_score")
            if epochs:
                hard.plot(epochs, values, marker=".", color=colors[label], label=label)
            figures = {"divns": (divns, ("diverse_distance", "hard_distance")),
                       "mdcns": (mdcns, ("divergence", "views_agree"))}.get(sampler.lower())
            for name, style in zip(figures[1] if figures else (), ("-", "--")):
                epochs, values = _per_epoch_mean(runs, name)
                if epochs:
                    figures[0].plot(epochs, values, style, marker=".", color=colors[label], label=f"{label} {name}")
        for ax, title in ((hard, "negative hardness (neg_score)"),
                          (divns, "DivNS: diverse vs hard distance"),
                          (mdcns, "MDCNS: divergence, views_agree")):
            ax.set_title(f"{dataset}, {model}: {title}", fontsize=9)
            ax.set_xlabel("epoch")
            if ax.lines:
                ax.legend(fontsize=6)
            else:
                ax.text(0.5, 0.5, "not in the plan", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    path = os.path.join(out, PLOT_DIAGNOSTICS)
    fig.savefig(path, dpi=100, metadata=metadata)
    plt.close(fig)
    written.append(path)
    return written


# ----- command line ----------------------------------------------------------------
def run_here(todo: list[Run], plan: dict[str, Any], out: str, jobs: int = 1) -> None:
    """Train the runs one after another in this process, appending each line as it ends
    and then removing the run's folder; `jobs`: how many runs share the machine meanwhile
    (recorded beside the timings). A run whose folder another process holds is skipped."""
    from tqdm import tqdm

    data_dir = _resolve(str(plan.get("data_dir", DEFAULT_DATA_DIR)))
    host = machine()
    progress = tqdm(todo, desc="quality runs", unit="run")
    for run in progress:
        progress.set_postfix_str(run.label)
        folder = run_folder(run, plan["base_config"], os.path.join(os.path.abspath(out), UNFINISHED))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress.write(f"{run.label}: another process is training it; skipped")
                continue
            data_path = dataset_location(run.dataset, plan["datasets"][run.dataset], data_dir)
            row = execute(run, plan["base_config"], data_path, folder)
            row.update(machine=host, concurrent_runs=jobs, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            append_row(os.path.join(out, JSONL), row)
            shutil.rmtree(folder)
        speed = row["seconds_per_epoch"] or 0.0
        progress.write(f"{run.label}: test ndcg@10 {row['test'].get(RATIO_METRIC, float('nan')):.4f} "
                       f"(masked {row['test_masked'].get(RATIO_METRIC, float('nan')):.4f}), "
                       f"{row['epochs_run']} epochs, {speed:.1f} s/epoch")


def run_in_workers(todo: list[Run], plan: dict[str, Any], args: argparse.Namespace) -> int:
    """Train the runs in `args.jobs` child processes at a time, one process per run, each
    with its share of the CPU threads; returns how many runs failed."""
    for name in {run.dataset for run in todo}:  # convert once, before the workers start
        dataset_location(name, plan["datasets"][name], _resolve(str(plan.get("data_dir", DEFAULT_DATA_DIR))))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    pending, active, failed = list(todo), [], 0
    while pending or active:
        while pending and len(active) < args.jobs:
            run = pending.pop(0)
            command = [sys.executable, os.path.abspath(__file__), "--config", args.config, "--out", args.out,
                       "--threads", str(threads), "--jobs", str(args.jobs), "--only-run", json.dumps(list(run.key))]
            active.append((run, subprocess.Popen(command)))
        time.sleep(1.0)
        for run, process in [(r, p) for r, p in active if p.poll() is not None]:
            active.remove((run, process))
            if process.returncode:
                failed += 1
                print(f"{run.label}: failed (exit {process.returncode}); it stays to do", flush=True)
    return failed


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the plan (default benchmarks/quality.yaml)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="results folder (default benchmarks/results)")
    parser.add_argument("--only-datasets", default=None, help="comma-separated dataset names")
    parser.add_argument("--only-samplers", default=None, help="comma-separated sampler names (any case)")
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

    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, JSONL)
    plan = load_plan(args.config)
    failed = 0
    if not args.render_only:
        done = {tuple(row[k] for k in KEY_FIELDS) for row in current_rows(jsonl, plan)[0]}
        todo = select(planned_runs(plan), done, args.only_datasets, args.only_samplers)
        if args.only_run is not None:
            todo = [run for run in todo if list(run.key) == json.loads(args.only_run)]
            run_here(todo, plan, args.out, args.jobs)
            return 0  # the parent renders
        if args.max_runs is not None:
            todo = todo[:args.max_runs]
        if args.dry_run:
            for run in todo:
                print(run.label + (f"  {json.dumps(run.config)}" if run.config else ""))
            print(f"{len(todo)} runs to do")
            return 0
        if args.jobs > 1:
            failed = run_in_workers(todo, plan, args)
        else:
            run_here(todo, plan, args.out)
    rows, _ = current_rows(jsonl, plan)
    markdown_path = write_markdown(args.out, "quality", lambda path: render_plan(path, plan))
    print(f"wrote {markdown_path}")
    if os.path.abspath(args.out) == DEFAULT_OUT:  # the committed results: keep the README's copy in step
        with open(markdown_path) as f:
            if sync_readme(README, f.read()):
                print(f"wrote {README} (its quality tables)")
    for path in write_plots(args.out, rows, plan.get("published")):
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
