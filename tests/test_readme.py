"""The READMEs quote the committed benchmark outputs and only them."""
from __future__ import annotations

import collections
import json
import os
import re

import pytest

from benchmarks.quality_report import readme_markers, sync_readme

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPY_START = re.escape(readme_markers("SOURCE")[0]).replace("SOURCE", r"(\S+)")  # a copy's opening marker


def read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


# benchmarks/results' tables, and the other plans' tables that benchmarks/README.md copies
RESULT_TABLES = [os.path.join(ROOT, "benchmarks", "results", name)
                 for name in sorted(os.listdir(os.path.join(ROOT, "benchmarks", "results"))) if name.endswith(".md")]
RESULT_TABLES += [os.path.join(ROOT, *source.split("/")) for source in re.findall(COPY_START, read("benchmarks", "README.md"))
                  if source != "benchmarks/results/quality.md"]


def test_readme_tables_are_the_committed_benchmark_outputs():
    quoted = set(read("README.md").splitlines()) | set(read("benchmarks", "README.md").splitlines())
    for path in RESULT_TABLES:
        with open(path, encoding="utf-8") as f:
            rows = [line for line in f.read().splitlines() if line.startswith("| ") and "---" not in line]
        assert rows and set(rows) <= quoted, path


def test_the_first_run_is_recorded_in_the_readme_beside_its_command():
    section = read("README.md").split("\n## First run")[1].split("\n## ")[0]
    rows = [line for line in read("benchmarks", "results", "first_run.md").splitlines() if line.startswith("| ")]
    assert rows and all(row in section for row in rows)


def test_the_readme_summary_quotes_only_committed_figures():
    summary = read("README.md").split("<!-- summary:")[1].split("\n\n")[0]
    committed = "\n".join(read(path) for path in RESULT_TABLES)
    figures = set(re.findall(r"\d+\.\d+", summary))
    assert len(figures) > 10
    assert {f for f in figures if f not in committed} <= MDCNS_PAPER_NDCG10 | {"0.0390"}, "not in a results file"


# MDCNS's paper (../shared/methods.md, Beauty, SASRec): uniform, DNS+, best other
# baseline, MDCNS, and the ablation; its protocol differs, so it is not in quality.yaml.
MDCNS_PAPER_NDCG10 = {"0.0347", "0.0425", "0.0497", "0.0685", "0.0573", "0.0510"}


FIGURE = r"\b0\.0\d{3}\b|\b(?:1\.\d|0\.[1-9])\d{2}\b"  # a metric (0.0241) or a ratio (0.968, 1.086)


@pytest.mark.parametrize("source", re.findall(COPY_START, read("benchmarks", "README.md")))
def test_each_reading_quotes_only_committed_figures(source):
    """Every metric (0.0xxx) and ratio (x.xxx) in the reading below a copied results table is
    in a committed results table, a plan's published anchors or the MDCNS paper."""
    reading = read("benchmarks", "README.md").split(readme_markers(source)[1])[1].split("\n### ")[0]
    plans = [os.path.join(ROOT, "benchmarks", name) for name in os.listdir(os.path.join(ROOT, "benchmarks"))
             if name.endswith(".yaml")]
    known = set(MDCNS_PAPER_NDCG10)
    for path in RESULT_TABLES + plans:
        with open(path, encoding="utf-8") as f:
            known |= set(re.findall(FIGURE, f.read()))
    quoted = set(re.findall(FIGURE, reading))
    assert quoted, "the reading quotes no figures"
    assert quoted <= known, sorted(quoted - known)


@pytest.mark.parametrize("source", re.findall(COPY_START, read("benchmarks", "README.md")))
def test_each_reading_quotes_no_single_seed_figure_of_a_row_with_several(source):
    """A figure of one seed of a row that ran several is not in the table, only in the JSONL:
    the reading quotes the row's mean instead (a paper's figure may coincide)."""
    reading = read("benchmarks", "README.md").split(readme_markers(source)[1])[1].split("\n### ")[0]
    lines = read(*os.path.dirname(source).split("/"), "quality.jsonl").splitlines()
    runs = [json.loads(line) for line in lines if line.strip()]
    seeds = collections.Counter((run["dataset"], run["model"], run["sampler"], run["variant"]) for run in runs)
    one_seed = {f"{value:.4f}" for run in runs if seeds[run["dataset"], run["model"], run["sampler"], run["variant"]] > 1
                for part in ("test", "test_masked") for value in run.get(part, {}).values()}
    table = set(re.findall(FIGURE, read(*source.split("/"))))
    quoted = set(re.findall(FIGURE, reading))
    assert not (quoted & one_seed) - table - MDCNS_PAPER_NDCG10, sorted((quoted & one_seed) - table)


def test_each_readme_copy_of_a_results_table_is_that_file_unchanged(tmp_path):
    """Every `quality tables` block of benchmarks/README.md is its quality.md as the harness copies it."""
    readme = tmp_path / "README.md"
    readme.write_text(read("benchmarks", "README.md"), encoding="utf-8")
    sources = re.findall(COPY_START, readme.read_text(encoding="utf-8"))
    assert len(sources) >= 4, sources
    for source in sources:
        assert sync_readme(str(readme), read(source), source), source
    assert readme.read_text(encoding="utf-8") == read("benchmarks", "README.md")
