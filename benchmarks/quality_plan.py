"""The quality benchmark's plan: loading it, its runs in order, where their data and results
live, and each run's effective config (what decides whether a recorded run is still current).

A plan (yaml) declares `datasets` (name -> a text file converted once by
`recbole_mdcns.convert` into `data_dir`, default `benchmarks/data/`, or `{data_path: DIR}`
for RecBole atomic files already at `DIR/<name>/<name>.inter`), `models`, `runs` (entries
`{sampler, variant, models, datasets, seeds, config, first}`: `first` entries run, every
seed, before the others), `seeds`, `base_config` (the
backbone, budget and protocol shared by every run) and optionally `published` (reference
values shown beside the tables), `references` (the rows every row is compared with:
column title -> a row name, names of which the first in a table is taken, or sampler ->
either, each row then compared with its own sampler's) and `reuse`
(other plans' `quality.jsonl` files whose runs of the same key and effective config count
as this plan's: shown, not trained again), and `dataset_config` (dataset name -> keys over
base_config for that dataset's runs, below an entry's own `config`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "benchmarks", "quality.yaml")
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results")
DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, "benchmarks", "data")
ENTRY_FIELDS = {"sampler", "variant", "models", "datasets", "seeds", "config", "first"}
# keys the harness sets per run (over any value the plan gives them)
HARNESS_KEYS = ("data_path", "checkpoint_dir", "sampler", "seed")
# keys of the effective config that say where and how a run ran, not what it computes: left
# out of its signature, so that the same run on another machine or in another folder is the
# same run (the committed lines come from a CUDA machine and a CPU one, each with its own paths)
PLACE_KEYS = (
    "data_path", "checkpoint_dir",  # this machine's paths (the dataset is the run key's)
    "device", "use_gpu", "gpu_id",  # the device (CPU and GPU runs of a seed are told apart by `machine`)
    "local_rank", "nproc", "world_size", "offset", "ip", "port", "dist_backend", "single_spec",  # distribution
    "worker",  # data-loader processes
    "state", "show_progress", "log_wandb", "wandb_project",  # logging
    "save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path",  # RecBole's caches
)


class PlanError(ValueError):
    """A malformed plan."""


@dataclass
class Run:
    """One planned training run: a dataset, model, sampler (and row variant) and seed."""

    dataset: str
    model: str
    sampler: str
    variant: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict)  # its dataset_config keys, then its entry's config

    @property
    def key(self) -> tuple:
        return (self.dataset, self.model, self.sampler, self.variant, self.seed)

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.model} {row_name(self.sampler, self.variant)} seed {self.seed}"


def row_name(sampler: str, variant: str) -> str:
    """A table row's name: `DNS (M5)`, or the sampler alone."""
    return f"{sampler} ({variant})" if variant else sampler


def resolve(path: str) -> str:
    """`path`, relative ones taken from the repository root."""
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


def default_out(plan_path: str) -> str:
    """Where a plan's results go by default: `benchmarks/results/` for the committed plan,
    `<plan's folder>/<plan's name>_results/` for any other, so that it never overwrites them."""
    if os.path.abspath(plan_path) == DEFAULT_CONFIG:
        return DEFAULT_OUT
    stem = os.path.splitext(os.path.basename(plan_path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(plan_path)), f"{stem}_results")


def load_plan(path: str) -> dict[str, Any]:
    """The plan of `path`, checked: required sections, entry fields, subsets of what is declared."""
    with open(path, encoding="utf-8") as f:
        plan = yaml.safe_load(f) or {}
    missing = [k for k in ("datasets", "models", "runs", "seeds", "base_config") if k not in plan]
    if missing:
        raise PlanError(f"{path}: missing {', '.join(missing)}")
    unknown_datasets = set(plan.get("dataset_config") or {}) - set(plan["datasets"])
    if unknown_datasets:
        raise PlanError(f"{path}: dataset_config names datasets {sorted(unknown_datasets)} not declared in datasets")
    entries = [e for e in plan["runs"] if isinstance(e, dict)]
    rows = {row_name(str(e["sampler"]), str(e.get("variant") or "")).lower() for e in entries}
    samplers = {str(e["sampler"]).lower() for e in entries if "sampler" in e}
    for title, names in (plan.get("references") or {}).items():
        by_sampler = reference_names(names)
        unknown = [n for named in by_sampler.values() for n in named if n.lower() not in rows]
        if unknown:
            raise PlanError(f"{path}: references {title!r} names rows {unknown} that no run entry gives")
        unknown = sorted(set(by_sampler) - samplers - {None})
        if unknown:
            raise PlanError(f"{path}: references {title!r} names samplers {unknown} that no run entry trains")
    for i, entry in enumerate(plan["runs"]):
        if not isinstance(entry, dict) or "sampler" not in entry:
            raise PlanError(f"{path}: runs[{i}] needs a sampler: {entry!r}")
        unknown = set(entry) - ENTRY_FIELDS
        if unknown:
            raise PlanError(f"{path}: runs[{i}] has unknown fields {sorted(unknown)}")
        if not isinstance(entry.get("first", False), bool):
            raise PlanError(f"{path}: runs[{i}] first = {entry['first']!r}: must be true or false")
        for scope, known in (("models", plan["models"]), ("datasets", list(plan["datasets"])), ("seeds", plan["seeds"])):
            extra = set(entry.get(scope) or []) - set(known)
            if extra:
                raise PlanError(f"{path}: runs[{i}] names {scope} {sorted(extra)} not declared in {scope}")
    return plan


def reference_names(names: Any) -> dict[Optional[str], list[str]]:
    """A `references` value as sampler (lower case; None: any sampler) -> row names, of which
    the first a table has is taken."""
    if isinstance(names, dict):
        return {str(sampler).lower(): [n] if isinstance(n, str) else list(n) for sampler, n in names.items()}
    return {None: [names] if isinstance(names, str) else list(names)}


def planned_runs(plan: dict[str, Any]) -> list[Run]:
    """Every run of the plan, in order: the entries marked `first` before the others, then
    seed, run entry, model, dataset (so a partial set holds every seed of the `first`
    entries, then the first seed of the first other entries, on every dataset)."""
    runs: list[Run] = []
    seen: set[tuple] = set()
    stages = [[e for e in plan["runs"] if e.get("first")], [e for e in plan["runs"] if not e.get("first")]]
    for entries, seed in ((entries, seed) for entries in stages for seed in plan["seeds"]):
        for entry in entries:
            for model in plan["models"]:
                for dataset in plan["datasets"]:
                    scopes = (("models", model), ("datasets", dataset), ("seeds", seed))
                    if any(entry.get(scope) and value not in entry[scope] for scope, value in scopes):
                        continue
                    keys = {**(plan.get("dataset_config") or {}).get(dataset, {}), **(entry.get("config") or {})}
                    run = Run(dataset, model, str(entry["sampler"]), str(entry.get("variant") or ""), int(seed), keys)
                    if run.key in seen:
                        raise PlanError(f"two run entries give the same run: {run.label}")
                    seen.add(run.key)
                    runs.append(run)
    return runs


def _split(option: Optional[str]) -> Optional[set[str]]:
    return {s.strip().lower() for s in option.split(",") if s.strip()} if option else None


def select(runs: list[Run], done: set[tuple], datasets: Optional[str] = None,
           samplers: Optional[str] = None, variants: Optional[str] = None) -> list[Run]:
    """The runs still to do, restricted to the comma-separated datasets, samplers and variants (any case)."""
    only = [(_split(datasets), "dataset"), (_split(samplers), "sampler"), (_split(variants), "variant")]
    return [
        run for run in runs
        if run.key not in done
        and all(names is None or getattr(run, field).lower() in names for names, field in only)
    ]


def conversion_dir(plan: dict[str, Any]) -> str:
    """Where the plan's text sources are converted to atomic files."""
    return resolve(str(plan.get("data_dir", DEFAULT_DATA_DIR)))


def dataset_location(name: str, spec: Any, data_dir: str, convert_now: bool = True) -> str:
    """The RecBole data_path holding `name/name.inter`, converting a text source once.

    `spec`: a text file (sequence format) or `{source: FILE, format: sequence|interactions}`
    to convert into `data_dir`, or `{data_path: DIR}` for atomic files already there."""
    if isinstance(spec, str):
        spec = {"source": spec}
    if not isinstance(spec, dict) or ("source" in spec) == ("data_path" in spec):
        raise PlanError(f"dataset {name}: give a source text file or a data_path, got {spec!r}")
    if "data_path" in spec:
        return resolve(str(spec["data_path"]))
    inter = os.path.join(data_dir, name, f"{name}.inter")
    if convert_now and not os.path.exists(inter):
        from recbole_mdcns.convert import convert

        counts = convert(resolve(str(spec["source"])), name, data_dir, spec.get("format", "sequence"))
        print(f"converted {name}: {counts.users} users, {counts.items} items, "
              f"{counts.interactions} interactions -> {inter}", flush=True)
    return data_dir


def config_dict(run: Run, base_config: dict[str, Any], data_path: str) -> dict[str, Any]:
    """The keys a run gives RecBole's Config: base_config, the dataset's data_path, the
    entry's config, then the run's sampler and seed."""
    return {**base_config, "data_path": data_path, **run.config, "sampler": run.sampler, "seed": run.seed}


def plan_keys(run: Run, base_config: dict[str, Any]) -> list[str]:
    """The config keys the plan chooses for `run` (base_config's, then its entry's), in that
    order, without those the harness sets per run."""
    return [k for k in {**base_config, **run.config} if k not in HARNESS_KEYS]


@functools.lru_cache(maxsize=None)
def _enum_names() -> dict[str, str]:
    """`ModelType.SEQUENTIAL` -> `SEQUENTIAL` for every member of RecBole's enums: lines
    written before `checkpoint.plain` stored an enum by name hold it as `str(member)`."""
    from enum import Enum

    from recbole.utils import enum_type

    return {f"{cls.__name__}.{member.name}": member.name for cls in vars(enum_type).values()
            if isinstance(cls, type) and issubclass(cls, Enum) and cls is not Enum for member in cls}


def normalised(value: Any) -> Any:
    """A config value as a JSON line holds it (lists for tuples, string keys), with RecBole's
    enum members by name whichever way the line wrote them."""
    from recbole_mdcns.checkpoint import plain

    enums = _enum_names()

    def by_name(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: by_name(x) for k, x in v.items()}
        if isinstance(v, list):
            return [by_name(x) for x in v]
        return enums.get(v, v) if isinstance(v, str) else v

    return by_name(json.loads(json.dumps(plain(value))))


def signature(run: Run, plan: dict[str, Any]) -> dict[str, Any]:
    """The run's whole effective config, nested keys whole, as RecBole's Config (with the
    plugin's keys and their defaults) makes it from the plan, and as a run's JSON line records
    it (`normalised`; `eval_args.mode: full` is `{valid: full, test: full}`), less `PLACE_KEYS`:
    a line that differs on any key of it is not this run (`differences`), and the digest of
    it names the run's resume folder. Builds the Config without loading data (RecBole's Config
    also reads `--key=value` from sys.argv: callers clear it first)."""
    from recbole_mdcns.config import Config

    class PlannedConfig(Config):
        def _dataset_problems(self) -> list[str]:
            return []  # a signature of a run whose data need not be converted yet

    location = dataset_location(run.dataset, plan["datasets"][run.dataset], conversion_dir(plan), convert_now=False)
    config = PlannedConfig(model=run.model, dataset=run.dataset,
                           config_dict=config_dict(run, plan["base_config"], location))
    effective = normalised(dict(config.final_config_dict))
    return {k: v for k, v in effective.items() if k not in PLACE_KEYS}


def differences(expected: dict[str, Any], recorded: dict[str, Any], required: tuple[str, ...] = ()) -> list[str]:
    """`key value` (the recorded value) for each key of a signature whose value in a line's
    `recorded` config differs, in the signature's order; [] when the line is a run of that
    signature. A key the line lacks (one the code gained after the line was written) is not
    held against it, unless it is one of `required` (the keys the plan sets: a line without
    one was not trained with the plan's value)."""
    return [f"{k} {recorded.get(k)}" for k, v in expected.items()
            if (k in recorded or k in required) and normalised(recorded.get(k)) != v]


def digest(values: dict[str, Any]) -> str:
    """A short digest of a signature (the resume folder's suffix)."""
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
