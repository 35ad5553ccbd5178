"""The quality benchmark's results store: which JSON lines of `quality.jsonl` are the plan's
current runs and which are superseded, and the rows grouped as the tables and plots show them."""
from __future__ import annotations

from typing import Any, Optional

from benchmarks.benchlib import read_jsonl
from benchmarks.quality_plan import differences, plan_keys, planned_runs, resolve, signature

JSONL = "quality.jsonl"
KEY_FIELDS = ("dataset", "model", "sampler", "variant", "seed")
SAMPLER_ORDER = ["none", "uniform", "popularity", "dns", "genni", "divns", "mdcns"]
MODEL_ORDER = ["SASRec", "GRU4Rec"]  # the headline backbone first; others after, by name

Row = dict[str, Any]


def row_key(row: Row) -> tuple:
    """A line's run key (as `Run.key`)."""
    return tuple(row[k] for k in KEY_FIELDS)


def current_rows(jsonl_path: str, plan: dict[str, Any]) -> tuple[list[Row], list[tuple[Row, str]]]:
    """The lines of `jsonl_path` that are runs of `plan` as it stands (the latest line of each
    run whose recorded config agrees with the run's `signature`, its whole effective config,
    on every key the line records and every key the plan sets), and the other lines, each with
    what set it apart: its differing keys, "not planned" or "repeated".

    Before them come the current lines of the plan's `reuse` files (other plans' results):
    a run recorded there under the same key and effective config is the same run, so it is
    shown and not trained again; their other lines are not this plan's and are left out."""
    signatures = {run.key: (signature(run, plan), tuple(plan_keys(run, plan["base_config"])))
                  for run in planned_runs(plan)}
    latest: dict[tuple, Row] = {}
    for path in plan.get("reuse") or []:
        for row in read_jsonl(resolve(str(path))):
            key = row_key(row)
            if key in signatures and not differences(signatures[key][0], row["config"], signatures[key][1]):
                latest[key] = row
    superseded: list[tuple[Row, str]] = []
    for row in read_jsonl(jsonl_path):
        key = row_key(row)
        if key not in signatures:
            superseded.append((row, "not planned"))
            continue
        expected, required = signatures[key]
        differing = differences(expected, row["config"], required)
        if differing:
            superseded.append((row, ", ".join(differing)))
        else:
            if key in latest:
                superseded.append((latest[key], "repeated"))
            latest[key] = row
    return list(latest.values()), superseded


def _model_order(model: str) -> tuple:
    return (MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER), model)


def _row_order(sampler: str, variant: str) -> tuple:
    name = sampler.lower()
    rank = SAMPLER_ORDER.index(name) if name in SAMPLER_ORDER else len(SAMPLER_ORDER)
    return (rank, name, variant != "", variant)


def grouped(rows: list[Row]) -> dict[tuple[str, str], dict[tuple[str, str], list[Row]]]:
    """(dataset, model) -> (sampler, variant) -> rows sorted by seed, in a fixed order
    whatever the order of `rows`."""
    groups: dict[tuple[str, str], dict[tuple[str, str], list[Row]]] = {}
    for row in sorted(rows, key=lambda r: (r["dataset"], _model_order(r["model"]), _row_order(r["sampler"], r["variant"]),
                                           r["seed"])):
        groups.setdefault((row["dataset"], row["model"]), {}).setdefault((row["sampler"], row["variant"]), []).append(row)
    return groups


def published_range(published: dict[str, Any], dataset: str, model: str, row: str) -> Optional[tuple[float, float]]:
    """The plan's published masked NDCG@10 of a row as (low, high); None where there is none."""
    value = published.get(dataset, {}).get(model, {}).get(row)
    if value is None:
        return None
    return (float(value[0]), float(value[-1])) if isinstance(value, list) else (float(value), float(value))
