"""The quality benchmark's report: `quality.md` (a table per dataset and model, the
superseded lines, the machines) and its copy in benchmarks/README.md."""
from __future__ import annotations

import math
import os
import statistics
from typing import Any, Optional

from scipy.stats import ttest_rel

from benchmarks.benchlib import describe, mean_std, write_atomic
from benchmarks.quality_plan import REPO_ROOT, planned_runs, reference_names, row_name
from benchmarks.quality_results import Row, current_rows, grouped, published_range

# the rows each row's masked NDCG@10 is compared with (column title -> row name, names of which
# the first in a table is taken, or sampler -> either, each row then compared with its own
# sampler's); a plan's `references` replaces them
REFERENCES: dict[str, Any] = {"uniform": "uniform", "CE": "none"}
TABLE_METRICS = [("ndcg@10", "NDCG@10"), ("hit@10", "HR@10"), ("ndcg@20", "NDCG@20"), ("hit@20", "HR@20")]
MASKED_METRICS = [("ndcg@10", "NDCG@10"), ("hit@10", "HR@10")]
RATIO_METRIC = "ndcg@10"
README = os.path.join(REPO_ROOT, "benchmarks", "README.md")  # where the tables are copied


def readme_markers(source: str) -> tuple[str, str]:
    """The comment lines around the README's copy of the tables of `source`, a quality.md
    named relative to the repository (`benchmarks/results/quality.md`)."""
    return (f"<!-- quality tables: written by benchmarks/quality.py from {source} -->",
            f"<!-- end of quality tables: {source} -->")


def _format_range(bounds: Optional[tuple[float, float]]) -> str:
    if bounds is None:
        return "–"
    low, high = bounds
    return f"{low:.4f}" if low == high else f"{low:.4f}-{high:.4f}"


def ratio_cell(runs: list[Row], reference: Optional[list[Row]]) -> str:
    """The mean masked test NDCG@10 of `runs` over that of `reference` (masked: the one
    metric every protocol's line records alike), over the seeds both ran (all of each where
    they share none), with the p-value of a two-sided paired t-test over the shared seeds
    (from two on, and where the differences vary)."""
    if not reference or runs is reference:
        return "–" if not reference else "1.000"
    ours, theirs = _masked_by_seed(runs), _masked_by_seed(reference)
    seeds = sorted(ours.keys() & theirs.keys())
    if seeds:
        ours, theirs = {s: ours[s] for s in seeds}, {s: theirs[s] for s in seeds}
    if not ours or not theirs or statistics.mean(theirs.values()) == 0:
        return "–"
    cell = f"{statistics.mean(ours.values()) / statistics.mean(theirs.values()):.3f}"
    differences = [ours[s] - theirs[s] for s in seeds]
    if len(seeds) >= 2 and statistics.stdev(differences) > 1e-12:
        p = ttest_rel([ours[s] for s in seeds], [theirs[s] for s in seeds]).pvalue
        if math.isfinite(p):
            cell += f" (p {p:.2g})"
    return cell


def _masked_by_seed(runs: list[Row]) -> dict[int, float]:
    """Seed -> masked test RATIO_METRIC, for the runs that recorded it."""
    return {r["seed"]: r["test_masked"][RATIO_METRIC] for r in runs if RATIO_METRIC in r.get("test_masked", {})}


def render(results: list[Row], superseded: Optional[list[tuple[Row, str]]] = None,
           published: Optional[dict[str, dict[str, Any]]] = None, planned: Optional[int] = None,
           eval_mask: str = "none", references: Optional[dict[str, Any]] = None) -> str:
    """The markdown tables of `results`: one per dataset and model, a row per sampler and
    variant, beside the `published` masked NDCG@10 (dataset -> model -> row name -> value or
    [low, high]) and its ratio to each of the `references` rows (REFERENCES' format and
    default); then the `superseded` lines, one table row each; then how many of
    the `planned` runs the tables hold, and the machines. `eval_mask`: the plan's, which says
    what the first four metrics rank."""
    groups = grouped(results)
    published = published or {}
    references = {title: reference_names(names) for title, names in (references or REFERENCES).items()}
    compared = ", ".join(f"`{name}`" + ("" if sampler is None else f" for {sampler}")
                         for by_sampler in references.values() for sampler, names in by_sampler.items()
                         for name in names)
    first_four = (
        ["metrics are RecBole's, which ranks a user's earlier items too (it masks none for sequential",
         "models); `masked` ranks without them, the protocol of the published reference points."]
        if eval_mask == "none" else
        [f"metrics are the trainer's under the plan's `eval_mask: {eval_mask}`, which also chose the best",
         "checkpoint; `masked` re-ranks without each user's earlier items, the published protocol."])
    lines = [
        "# Quality: test metrics per sampler",
        "",
        "Leave-one-out (RecBole `eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user,",
        "mode: full}`), ranking over all items; early stopping on valid NDCG@10, test with the best",
        "checkpoint. Mean ± standard deviation over seeds; HR is RecBole's Hit. The first four",
        *first_four,
        "`published` is the masked NDCG@10 reported for that training on the same files (the plan's",
        "`published`). `ratio to` is the mean masked NDCG@10 over that of a reference row, with the p-value",
        "of a two-sided paired t-test over the seeds both rows ran (from two seeds on); the reference",
        f"rows: {compared} (of several named for one column and sampler, the first the table has). `s/epoch`",
        "is a run's median training time of an epoch, per machine (listed at the end; a row's seeds may come from",
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
        by_name = {row_name(s, v).lower(): runs for (s, v), runs in rows.items()}
        lines += ["", f"## {dataset}, {model}", "",
                  "| sampler | " + " | ".join(f"test {title}" for _, title in TABLE_METRICS)
                  + " | " + " | ".join(f"masked {title}" for _, title in MASKED_METRICS)
                  + " | published | " + " | ".join(f"ratio to {title}" for title in references)
                  + " | runs | epochs | at cap | s/epoch |",
                  "|---|" + "---:|" * (len(TABLE_METRICS) + len(MASKED_METRICS) + len(references) + 5)]
        for (sampler, variant), runs in rows.items():
            cells = [mean_std([r["test"][m] for r in runs if m in r["test"]]) for m, _ in TABLE_METRICS]
            cells += [mean_std([r["test_masked"][m] for r in runs if m in r.get("test_masked", {})])
                      for m, _ in MASKED_METRICS]
            ratios = " | ".join(ratio_cell(runs, _reference_runs(by_name, by_sampler, sampler))
                                for by_sampler in references.values())
            epochs = statistics.mean(r["epochs_run"] for r in runs)
            at_cap = sum(r["epochs_run"] == r.get("config", {}).get("epochs") for r in runs)
            speed = _speeds_by_machine(runs, machines)
            reported = _format_range(published_range(published, dataset, model, row_name(sampler, variant)))
            lines.append(f"| {row_name(sampler, variant)} | " + " | ".join(cells)
                         + f" | {reported} | {ratios} | {len(runs)} | {epochs:.1f} | {at_cap} | {speed} |")
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


def _reference_runs(by_name: dict[str, list[Row]], by_sampler: dict[Optional[str], list[str]],
                    sampler: str) -> Optional[list[Row]]:
    """The runs of the first of `sampler`'s (or any sampler's) reference rows a table has."""
    names = by_sampler.get(sampler.lower(), by_sampler.get(None, []))
    return next((by_name[n.lower()] for n in names if n.lower() in by_name), None)


def render_plan(jsonl_path: str, plan: dict[str, Any]) -> str:
    """quality.md: the tables of the lines of `jsonl_path` that `plan` asks for (`render`)."""
    rows, superseded = current_rows(jsonl_path, plan)
    return render(rows, superseded, plan.get("published"), len(planned_runs(plan)),
                  plan["base_config"].get("eval_mask") or "none", plan.get("references"))


def _machine_name(row: Row) -> str:
    """The machine a row was trained on."""
    return describe(row["machine"]) if row.get("machine") else "not recorded"


def seconds_per_epoch(row: Row) -> Optional[float]:
    """A run's median training seconds per epoch (robust to a pause of the machine), from its
    epochs where it recorded them, else the figure it recorded."""
    epochs = [e["train_seconds"] for e in row.get("per_epoch") or []]
    return statistics.median(epochs) if epochs else row.get("seconds_per_epoch")


def _speeds_by_machine(runs: list[Row], machines: dict[str, str]) -> str:
    """Mean over runs of their median training seconds per epoch, one figure per machine:
    `30.5 (A); 4.1 (B)`."""
    by_machine: dict[str, list[float]] = {}
    for r in runs:
        if seconds_per_epoch(r) is not None:
            by_machine.setdefault(machines[_machine_name(r)], []).append(seconds_per_epoch(r))
    return "; ".join(f"{statistics.mean(v):.1f} ({m})" for m, v in sorted(by_machine.items())) or "–"


def sync_readme(readme_path: str, markdown: str, source: str) -> bool:
    """Copy `markdown`'s tables (from its first `## ` heading on, headings as `Title:` lines)
    between the README's two markers for `source` (`readme_markers`; the file is rewritten
    only when that changes it); False when the README has no such markers."""
    with open(readme_path) as f:
        text = f.read()
    start, end = readme_markers(source)
    if start not in text or end not in text:
        return False
    body = markdown[markdown.index("\n## ") + 1:] if "\n## " in markdown else "No results yet.\n"
    body = "\n".join(f"{line[3:]}:" if line.startswith("## ") else line for line in body.splitlines())
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    synced = f"{head}{start}\n{body}\n{end}{tail}"
    if synced != text:
        write_atomic(readme_path, synced)
    return True

