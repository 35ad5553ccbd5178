"""benchmarks/quality.py end to end on the tiny dataset: run, resume, render; which lines are
current, where a plan's results go."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy.sparse import csr_matrix

from benchmarks import quality
from benchmarks.quality_plan import (
    DEFAULT_CONFIG, DEFAULT_OUT, PlanError, dataset_location, default_out, load_plan, planned_runs, select, signature)
from benchmarks.quality_report import ratio_cell, readme_markers, render, render_plan, sync_readme
from benchmarks.quality_results import JSONL, current_rows, row_key
from benchmarks.quality_run import UNFINISHED, earlier_items, ranking_metrics, run_folder
from conftest import write_tiny_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent


def _plan(data_root: Path) -> dict:
    return {
        "datasets": {"tiny": {"data_path": str(data_root)}},
        "models": ["SASRec"],
        "seeds": [2020],
        "base_config": {
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "metrics": ["Hit", "NDCG"], "topk": [10, 20], "valid_metric": "NDCG@10",
            "epochs": 1, "stopping_step": 1, "train_batch_size": 64, "eval_batch_size": 256,
            "hidden_size": 16, "embedding_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1,
            "num_layers": 1, "MAX_ITEM_LIST_LENGTH": 20, "show_progress": False, "log_wandb": False,
        },
        "published": {"tiny": {"SASRec": {"uniform": 0.05, "DNS (C10)": [0.01, 0.02]}}},
        "runs": [
            {"sampler": "uniform"},
            {"sampler": "DNS", "variant": "C10", "config": {"neg_candidate_num": 10}},
        ],
    }


def test_run_resume_render(tmp_path, capsys):
    data_root = write_tiny_dataset(tmp_path / "data")
    config = tmp_path / "quality.yaml"
    config.write_text(yaml.safe_dump(_plan(data_root)))
    out = tmp_path / "results"
    args = ["--config", str(config), "--out", str(out)]

    assert quality.main(args + ["--dry-run"]) == 0
    assert "2 runs to do" in capsys.readouterr().out
    assert not (out / "quality.jsonl").exists()

    assert quality.main(args) == 0
    rows = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert [(r["sampler"], r["variant"]) for r in rows] == [("uniform", ""), ("DNS", "C10")]
    for row in rows:
        for name in ("dataset", "model", "seed", "best_valid", "test", "epochs_run", "seconds_per_epoch",
                     "per_epoch", "config", "machine", "timestamp"):
            assert name in row, name
        assert row["epochs_run"] == 1 and row["seconds_per_epoch"] > 0
        assert {"ndcg@10", "hit@10", "ndcg@20", "hit@20"} <= set(row["test"])
        assert set(row["test_masked"]) == {"ndcg@10", "hit@10", "ndcg@20", "hit@20"}
        assert row["per_epoch"][0]["valid_score"] is not None
        assert "neg_score" in row["per_epoch"][0]["diagnostics"]
        assert row["config"]["seed"] == 2020
    assert rows[1]["config"]["neg_candidate_num"] == 10
    json.dumps(rows)  # plain JSON throughout

    md = (out / "quality.md").read_text()
    assert "## tiny, SASRec" in md and "Runs in the tables: 2 of the plan's 2." in md
    table = {line.split(" | ")[0][2:]: line.split(" | ") for line in md.splitlines() if line.startswith("| ")}
    published = table["sampler"].index("published")
    assert table["uniform"][published] == "0.0500" and table["DNS (C10)"][published] == "0.0100-0.0200"

    before = (out / "quality.jsonl").read_text()
    assert quality.main(args) == 0  # resume: nothing left to do
    assert (out / "quality.jsonl").read_text() == before

    assert quality.main(args + ["--render-only"]) == 0
    first = (out / "quality.md").read_text()
    assert quality.main(args + ["--render-only"]) == 0
    assert (out / "quality.md").read_text() == first == md

    # the effective config decides: RecBole reads `mode: full` as `{valid: full, test: full}`
    plan = _plan(data_root)
    plan["base_config"]["eval_args"]["mode"] = {"valid": "full", "test": "full"}
    config.write_text(yaml.safe_dump(plan))
    assert quality.main(args + ["--dry-run"]) == 0
    assert "0 runs to do" in capsys.readouterr().out

    # a nested key: both runs to do again
    plan["base_config"]["topk"] = [5, 10, 20]
    config.write_text(yaml.safe_dump(plan))
    assert quality.main(args + ["--dry-run"]) == 0
    assert "2 runs to do" in capsys.readouterr().out
    assert quality.main(args + ["--render-only"]) == 0
    assert "| tiny | SASRec | uniform | 2020 | topk [10, 20] | " in (out / "quality.md").read_text()

    # another budget: the old lines stay in the file, are redone and are left out of the tables
    plan = _plan(data_root)
    plan["base_config"]["hidden_size"] = 8
    config.write_text(yaml.safe_dump(plan))
    assert quality.main(args + ["--dry-run"]) == 0
    assert "2 runs to do" in capsys.readouterr().out
    assert quality.main(args + ["--render-only"]) == 0
    md = (out / "quality.md").read_text()
    assert "## tiny, SASRec" not in md
    assert "| tiny | SASRec | uniform | 2020 | hidden_size 16 | " in md
    assert "| tiny | SASRec | DNS (C10) | 2020 | hidden_size 16 | " in md
    assert (out / "quality.jsonl").read_text() == before


def test_parallel_jobs(tmp_path):
    """--jobs 2: each run in its own process with half the threads, both lines appended."""
    data_root = write_tiny_dataset(tmp_path / "data")
    config = tmp_path / "quality.yaml"
    config.write_text(yaml.safe_dump(_plan(data_root)))
    out = tmp_path / "results"
    assert quality.main(["--config", str(config), "--out", str(out), "--jobs", "2", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert sorted((r["sampler"], r["threads"], r["concurrent_runs"]) for r in rows) == [("DNS", 1, 2), ("uniform", 1, 2)]
    md = (out / "quality.md").read_text()
    assert "| uniform | " in md and " (2 runs at a time, 1 CPU thread(s) each)" in md


def _row(seed: int, cuda, seconds: float, epochs_run: int = 3, cap: int = 10) -> dict:
    machine = {"arch": "x86_64", "cpu_model": "CPU", "cpu_count": 2, "torch": "2", "cuda": cuda}
    return {"dataset": "d", "model": "SASRec", "sampler": "uniform", "variant": "", "seed": seed,
            "test": {"ndcg@10": 0.1}, "test_masked": {}, "epochs_run": epochs_run, "seconds_per_epoch": seconds,
            "machine": machine, "threads": 1, "concurrent_runs": 2, "config": {"epochs": cap}}


def test_ratios_pair_the_seeds_in_a_t_test():
    def row(sampler, seed, ndcg, variant=""):  # the ratio is on the masked metric, the test one differs
        return {**_row(seed, None, 1.0), "sampler": sampler, "variant": variant,
                "test": {"ndcg@10": 0.5}, "test_masked": {"ndcg@10": ndcg}}

    uniform = [row("uniform", s, v) for s, v in ((1, 0.10), (2, 0.12), (3, 0.11))]
    dns = [row("DNS", s, v) for s, v in ((1, 0.20), (2, 0.25), (3, 0.21))]
    # differences 0.10, 0.13, 0.10: t = 11 with 2 degrees of freedom, p = 1 - t / sqrt(2 + t^2) = 0.0082
    assert ratio_cell(dns, uniform) == "2.000 (p 0.0082)"
    assert ratio_cell(dns[2:], uniform) == "1.909"  # one shared seed: the ratio on it, no test
    assert ratio_cell(dns[1:], uniform[:1]) == "2.300"  # no shared seed: all of each
    assert ratio_cell([row("DNS", s, v + 0.1) for s, v in ((1, 0.10), (2, 0.12))], uniform) == "1.909"  # no variance
    assert ratio_cell(dns, [row("uniform", 1, 0.0)]) == "–"
    assert ratio_cell(uniform, uniform) == "1.000" and ratio_cell(dns, None) == "–"
    md = render(uniform + dns, references={"uniform": "uniform", "DNS": ["GenNi", "DNS"]})
    assert "| ratio to uniform | ratio to DNS |" in md
    assert "| 2.000 (p 0.0082) | 1.000 | 3 |" in md
    # a reference per sampler: each row against its own sampler's
    dns_base = [row("DNS", s, v, "base") for s, v in ((1, 0.10), (2, 0.10), (3, 0.07))]
    md = render(uniform + dns + dns_base, references={"own": {"uniform": "uniform", "DNS": "DNS (base)"}})
    assert "| DNS | " in md and "| 2.000 (p 0.0082) | 3 |" not in md
    lines = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    assert " | 2.444 (p 0.014) | 3 |" in lines["| DNS"] and " | 1.000 | 3 |" in lines["| uniform"]


def test_runs_ended_by_the_epoch_cap_are_counted():
    md = render([_row(1, None, 1.0, epochs_run=4, cap=4), _row(2, None, 1.0, epochs_run=3, cap=4),
                         _row(3, None, 1.0, epochs_run=4, cap=4)])
    assert "| 3 | 3.7 | 2 | 1.0 (A) |" in md


def test_a_run_alone_is_named_so():
    md = render([{**_row(1, None, 1.0), "concurrent_runs": 1, "threads": 2}])
    assert "Machine A: CPU (x86_64), 2 logical CPUs, torch 2 (1 run alone, 2 CPU thread(s))" in md


def test_speed_is_reported_per_machine():
    md = render([_row(1, None, 30.0), _row(2, "GPU", 4.0), _row(3, "GPU", 6.0)])
    assert "| 3 | 3.0 | 0 | 5.0 (A); 30.0 (B) |" in md  # machines lettered by name
    assert "Machine A: CPU (x86_64), 2 logical CPUs, GPU, torch 2 (2 runs at a time, 1 CPU thread(s) each)" in md
    assert "Machine B: CPU (x86_64), 2 logical CPUs, torch 2 (2 runs" in md


@pytest.mark.parametrize("plan_path", sorted({DEFAULT_CONFIG, *map(str, (REPO_ROOT / "benchmarks").glob("*.yaml"))}))
def test_committed_tables_are_the_committed_lines_rendered(plan_path):
    """Each committed plan's quality.md is what the script writes from its committed quality.jsonl."""
    out = default_out(plan_path)
    source = os.path.relpath(os.path.join(out, "quality.md"), REPO_ROOT).replace(os.sep, "/")
    if readme_markers(source)[0] not in (REPO_ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8"):
        pytest.skip(f"{os.path.basename(plan_path)}: no committed results (benchmarks/README.md copies none)")
    with open(os.path.join(out, "quality.md"), encoding="utf-8") as f:
        assert f.read() == render_plan(os.path.join(out, JSONL), load_plan(plan_path))


def test_readme_copy_of_the_tables(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nintro\n")
    assert not sync_readme(str(readme), "# Quality\n\n## d, SASRec\n\n| a |\n", "a/quality.md")
    start, end = readme_markers("a/quality.md")
    other_start, other_end = readme_markers("b/quality.md")
    readme.write_text(f"intro\n{start}\nold\n{end}\n{other_start}\nother\n{other_end}\nafter\n")
    markdown = "# Quality\n\nprose\n\n## d, SASRec\n\n| a |\n|---|\n"
    assert sync_readme(str(readme), markdown, "a/quality.md")
    expected = f"intro\n{start}\nd, SASRec:\n\n| a |\n|---|\n{end}\n{other_start}\nother\n{other_end}\nafter\n"
    assert readme.read_text() == expected  # the other file's copy untouched
    assert sync_readme(str(readme), markdown, "a/quality.md") and readme.read_text() == expected  # idempotent


def test_plan_order_and_conversion(tmp_path):
    plan = {
        "datasets": {"small": "unused.txt", "big": "unused.txt"},
        "models": ["SASRec", "GRU4Rec"],
        "seeds": [1, 2],
        "base_config": {},
        "runs": [{"sampler": "uniform"}, {"sampler": "DNS", "models": ["SASRec"], "datasets": ["big"]},
                 {"sampler": "GenNi", "models": ["SASRec"], "datasets": ["big"], "seeds": [2]}],
    }
    runs = planned_runs(plan)
    assert [r.label for r in runs if r.sampler == "GenNi"] == ["big SASRec GenNi seed 2"]
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump({**plan, "runs": [{"sampler": "uniform", "seeds": [3]}]}))
    with pytest.raises(PlanError, match=r"seeds \[3\] not declared"):
        load_plan(str(plan_file))
    assert [r.label for r in runs[:6]] == [  # seed, then entry, then model, then dataset
        "small SASRec uniform seed 1", "big SASRec uniform seed 1", "small GRU4Rec uniform seed 1",
        "big GRU4Rec uniform seed 1", "big SASRec DNS seed 1", "small SASRec uniform seed 2"]
    assert [r.label for r in runs if r.sampler == "DNS"] == ["big SASRec DNS seed 1", "big SASRec DNS seed 2"]
    todo = select(runs, {runs[0].key}, datasets="SMALL", samplers="uniform")
    assert len(todo) == 3 and runs[0] not in todo
    named = {**plan, "runs": [plan["runs"][0], {**plan["runs"][1], "variant": "Top1"}]}
    assert [r.label for r in select(planned_runs(named), set(), variants="top1")] == [
        "big SASRec DNS (Top1) seed 1", "big SASRec DNS (Top1) seed 2"]
    # entries marked `first` run every seed (of theirs) before the other entries
    plan["runs"][1]["first"] = True
    plan["runs"][2]["first"] = True
    assert [r.label for r in planned_runs(plan)[:4]] == [
        "big SASRec DNS seed 1", "big SASRec DNS seed 2", "big SASRec GenNi seed 2", "small SASRec uniform seed 1"]
    plan_file.write_text(yaml.safe_dump({**plan, "runs": [{"sampler": "uniform", "first": "no"}]}))
    with pytest.raises(PlanError, match=r"first = 'no': must be true or false"):
        load_plan(str(plan_file))
    plan_file.write_text(yaml.safe_dump({**plan, "references": {"own": {"Uniform": "uniform", "MDCNS": "uniform"}}}))
    with pytest.raises(PlanError, match=r"names samplers \['mdcns'\] that no run entry trains"):
        load_plan(str(plan_file))

    source = tmp_path / "seq.txt"
    source.write_text("1 1 2 3 4\n2 2 3 4 5\n")
    data_dir = str(tmp_path / "data")
    assert dataset_location("seq", str(source), data_dir) == data_dir
    inter = os.path.join(data_dir, "seq", "seq.inter")
    assert open(inter).read().count("\n") == 9
    os.utime(inter, (0, 0))
    dataset_location("seq", str(source), data_dir)  # converted once
    assert os.path.getmtime(inter) == 0


def test_masked_ranking(tiny_config):
    """RecBole's own test metrics are recomputed exactly without a mask; the mask removes each
    user's earlier items (never the target unless it came before) and can only lift the target."""
    from recbole_mdcns.config import Config
    from recbole_mdcns import build_experiment

    config = Config(model="SASRec", config_dict={
        **tiny_config, "metrics": ["Hit", "NDCG"], "topk": [5, 10],
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}})
    run = build_experiment(config)
    dataset, model, trainer, test_data = run.dataset, run.model, run.trainer, run.test_data
    recbole = trainer.evaluate(test_data, load_best_model=False)
    ours = ranking_metrics(model, test_data, [5, 10])
    assert set(ours) == set(recbole)
    for name, value in recbole.items():
        assert ours[name] == pytest.approx(value, abs=1e-4), name

    earlier = earlier_items(dataset)
    inter = dataset.inter_feat
    for user in (1, 2, 17):  # every item before the test target, the user's first one included
        rows = (inter["user_id"] == user).nonzero().squeeze(1)
        last = rows[inter["timestamp"][rows].argmax()]
        sequence = inter["item_id_list"][last][: inter["item_length"][last]].tolist()  # every earlier item (length 20)
        assert set(earlier[user].indices.tolist()) == set(sequence)

    users = field_values(test_data, "user_id")
    targets = field_values(test_data, "item_id")
    only_targets = csr_matrix(([True] * len(users), (users, targets)), shape=earlier.shape)
    assert ranking_metrics(model, test_data, [10], only_targets)["hit@10"] == 0.0
    others = earlier.astype(int) - earlier.astype(int).multiply(only_targets.astype(int))
    lifted = ranking_metrics(model, test_data, [5, 10], others.astype(bool))
    assert all(lifted[name] >= ours[name] - 1e-9 for name in ours)
    assert lifted["ndcg@10"] > ours["ndcg@10"]


def field_values(data, field: str) -> list[int]:
    return [int(v) for interaction, *_ in data for v in interaction[field]]


class Killed(Exception):
    """Stands for the process being killed."""


@pytest.mark.parametrize("killed_in", [0, 2])
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch, killed_in):
    """Killed during an epoch (its training state already written): the next invocation goes
    on from that epoch and writes the line of the uninterrupted run, then removes the run's folder."""
    from recbole_mdcns.trainer import SampledTrainer

    plan = _plan(write_tiny_dataset(tmp_path / "data"))
    plan["base_config"].update(epochs=3, stopping_step=3)
    plan["runs"] = [{"sampler": "DNS", "variant": "C10", "config": {"neg_candidate_num": 10}}]
    config = tmp_path / "quality.yaml"
    config.write_text(yaml.safe_dump(plan))
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    assert quality.main(["--config", str(config), "--out", str(whole)]) == 0

    train_epoch = SampledTrainer._train_epoch

    def killed(self, train_data, epoch_idx, *args, **kwargs):
        loss = train_epoch(self, train_data, epoch_idx, *args, **kwargs)
        if epoch_idx == killed_in:
            raise Killed
        return loss

    monkeypatch.setattr(SampledTrainer, "_train_epoch", killed)
    with pytest.raises(Killed):
        quality.main(["--config", str(config), "--out", str(pieces)])
    assert not (pieces / "quality.jsonl").exists()
    (folder,) = (pieces / UNFINISHED).iterdir()
    record = folder / "epochs.json"
    recorded = json.loads(record.read_text())["per_epoch"] if record.exists() else []
    assert [e["epoch"] for e in recorded] == list(range(killed_in))

    monkeypatch.setattr(SampledTrainer, "_train_epoch", train_epoch)
    assert quality.main(["--config", str(config), "--out", str(pieces)]) == 0
    (expected,) = [json.loads(line) for line in (whole / "quality.jsonl").read_text().splitlines()]
    (resumed,) = [json.loads(line) for line in (pieces / "quality.jsonl").read_text().splitlines()]
    assert expected["resumed_from"] == [] and resumed["resumed_from"] == [killed_in]
    for name in ("best_valid", "test", "test_masked", "epochs_run"):
        assert resumed[name] == expected[name], name
    assert ([(e["epoch"], e["valid_score"], e["diagnostics"]) for e in resumed["per_epoch"]]
            == [(e["epoch"], e["valid_score"], e["diagnostics"]) for e in expected["per_epoch"]])
    assert list((pieces / UNFINISHED).iterdir()) == []


def test_a_run_held_by_another_process_is_skipped(tmp_path):
    import fcntl

    plan = _plan(write_tiny_dataset(tmp_path / "data"))
    plan["runs"] = [{"sampler": "uniform"}]
    config = tmp_path / "quality.yaml"
    config.write_text(yaml.safe_dump(plan))
    out = tmp_path / "results"
    (run,) = planned_runs(plan)
    folder = Path(run_folder(run, signature(run, plan), str(out / UNFINISHED)))
    folder.mkdir(parents=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert quality.main(["--config", str(config), "--out", str(out)]) == 0
    assert not (out / "quality.jsonl").exists()
    assert quality.main(["--config", str(config), "--out", str(out)]) == 0
    assert len((out / "quality.jsonl").read_text().splitlines()) == 1


def test_a_run_recorded_by_another_process_after_listing_is_skipped(tmp_path, capsys):
    plan = _plan(write_tiny_dataset(tmp_path / "data"))
    plan["runs"] = [{"sampler": "uniform"}]
    out = tmp_path / "results"
    out.mkdir()
    (run,) = planned_runs(plan)
    (out / JSONL).write_text(json.dumps(_recorded(run, plan)) + "\n")  # another harness finished it
    quality.run_here([run], plan, str(out))
    assert "recorded meanwhile by another process; skipped" in capsys.readouterr().out
    assert len((out / JSONL).read_text().splitlines()) == 1
    assert not (out / UNFINISHED).exists()


def _recorded(run, plan: dict) -> dict:
    """A JSON line of `run` as if trained under `plan` (its config holds the run's signature)."""
    return {"dataset": run.dataset, "model": run.model, "sampler": run.sampler, "variant": run.variant,
            "seed": run.seed, "config": signature(run, plan)}


@pytest.mark.parametrize("change", ["eval_args", "topk", "mdcns_peer_config"])
def test_a_changed_nested_key_makes_its_runs_not_done(tmp_path, data_root, change):
    """Lines count as done only under the plan's effective config, nested keys included; the
    runs a change touches get another resume folder, the others keep theirs."""
    plan = _plan(data_root)
    plan["base_config"]["mdcns_peer_config"] = {"embedding_size": 16, "hidden_size": 16, "num_layers": 1}
    plan["runs"].append({"sampler": "MDCNS"})
    jsonl = tmp_path / JSONL
    jsonl.write_text("".join(json.dumps(_recorded(run, plan)) + "\n" for run in planned_runs(plan)))
    before = {run.key: run_folder(run, signature(run, plan), str(tmp_path)) for run in planned_runs(plan)}
    rows, superseded = current_rows(str(jsonl), plan)
    assert len(rows) == 3 and superseded == []

    changed = yaml.safe_load(yaml.safe_dump(plan))
    if change == "eval_args":  # every run
        changed["base_config"]["eval_args"]["mode"] = {"valid": "full", "test": "uni100"}
    elif change == "topk":  # every run
        changed["base_config"]["topk"] = [10, 50]
    else:  # only MDCNS's run: another peer for it alone
        changed["runs"][-1]["config"] = {"mdcns_peer_config": {"embedding_size": 16, "hidden_size": 32, "num_layers": 1}}
    affected = {run.key for run in planned_runs(plan) if change != "mdcns_peer_config" or run.sampler == "MDCNS"}
    rows, superseded = current_rows(str(jsonl), changed)
    assert {row_key(row) for row, _ in superseded} == affected
    assert all(why.startswith(change) for _, why in superseded)
    assert len(rows) == 3 - len(affected)
    for run in planned_runs(changed):
        moved = run_folder(run, signature(run, changed), str(tmp_path)) != before[run.key]
        assert moved == (run.key in affected), run.label


def test_a_dataset_config_lies_between_the_base_config_and_an_entry(data_root, tmp_path):
    plan = _plan(data_root)
    plan["dataset_config"] = {"tiny": {"stopping_step": 40, "neg_candidate_num": 3}}
    uniform, dns = planned_runs(plan)
    assert uniform.config["stopping_step"] == 40 and signature(uniform, plan)["stopping_step"] == 40
    assert dns.config["neg_candidate_num"] == plan["runs"][1]["config"]["neg_candidate_num"]  # the entry wins
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump({**plan, "dataset_config": {"elsewhere": {}}}))
    with pytest.raises(PlanError, match="elsewhere"):
        load_plan(str(plan_file))


def test_runs_recorded_by_another_plan_are_reused_when_their_config_agrees(tmp_path, data_root):
    plan = _plan(data_root)
    uniform, dns = planned_runs(plan)
    other = tmp_path / "other.jsonl"
    changed = _recorded(dns, plan)
    changed["config"]["neg_candidate_num"] = 7
    unplanned = {**_recorded(uniform, plan), "variant": "elsewhere"}
    other.write_text("".join(json.dumps(line) + "\n" for line in (_recorded(uniform, plan), changed, unplanned)))
    own = tmp_path / JSONL
    own.write_text("")
    assert current_rows(str(own), plan) == ([], [])
    rows, superseded = current_rows(str(own), {**plan, "reuse": [str(other)]})
    assert [row_key(row) for row in rows] == [uniform.key] and superseded == []  # the others are not this plan's


def test_a_changed_default_makes_its_runs_not_done(tmp_path, data_root, monkeypatch):
    """The whole effective config decides, keys the plan leaves at their defaults included: a
    line trained under another default of a key the plan never names is superseded (the key
    shown), and a changed default moves the runs it touches to another resume folder."""
    from recbole_mdcns.params import Param
    from recbole_mdcns.samplers.dns import DNSSampler

    plan = _plan(data_root)
    runs = planned_runs(plan)
    assert [run.sampler for run in runs] == ["uniform", "DNS"]
    plan_sets = set(plan["base_config"]) | {k for entry in plan["runs"] for k in entry.get("config", {})}
    assert not {"eval_step", "dns_top_m"} & plan_sets
    lines = [_recorded(run, plan) for run in runs]
    assert lines[0]["config"]["eval_step"] == 1 and lines[1]["config"]["dns_top_m"] == 1
    lines[0]["config"]["eval_step"] = 2  # RecBole's default when the line was written
    lines[1]["config"]["dns_top_m"] = 3  # the plugin's
    jsonl = tmp_path / JSONL
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows, superseded = current_rows(str(jsonl), plan)
    assert rows == [] and sorted(why for _, why in superseded) == ["dns_top_m 3", "eval_step 2"]

    before = {run.key: run_folder(run, signature(run, plan), str(tmp_path)) for run in runs}
    top_m = next(p for p in DNSSampler.params if p.key == "dns_top_m")
    monkeypatch.setattr(DNSSampler, "params", tuple(
        Param(p.key, p.kind, 3, p.doc, minimum=p.minimum) if p is top_m else p for p in DNSSampler.params))
    assert signature(runs[1], plan)["dns_top_m"] == 3  # the package's default changed
    moved = {run.sampler: run_folder(run, signature(run, plan), str(tmp_path)) != before[run.key] for run in runs}
    assert moved == {"uniform": False, "DNS": True}
    rows, superseded = current_rows(str(jsonl), plan)
    assert [row["sampler"] for row in rows] == ["DNS"]  # trained under that default: done
    assert [why for _, why in superseded] == ["eval_step 2"]


def test_what_a_line_lacks_or_where_it_ran_is_not_held_against_it(tmp_path, data_root):
    """A key an old line lacks (the code gained it later) and the machine's own keys (device,
    paths, ...) do not make a line stale, nor does an enum written as `ModelType.SEQUENTIAL`;
    a key the plan sets and the line lacks does. Where the data lie does not move the resume folder."""
    plan = _plan(data_root)
    uniform, dns = planned_runs(plan)
    old, other_machine, unset = _recorded(uniform, plan), _recorded(dns, plan), _recorded(dns, plan)
    assert old["config"]["MODEL_TYPE"] == "SEQUENTIAL" and "neg_exclude" in old["config"]
    del old["config"]["neg_exclude"]
    old["config"]["MODEL_TYPE"] = "ModelType.SEQUENTIAL"  # as lines before checkpoint.plain wrote it
    other_machine["config"].update(device="cuda", gpu_id="0", use_gpu=True, dist_backend="nccl", worker=0,
                                   data_path="/elsewhere/tiny", checkpoint_dir="/tmp/x", show_progress=True)
    del unset["config"]["neg_candidate_num"]  # the run's entry sets it
    jsonl = tmp_path / JSONL
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in (old, other_machine, unset)))
    rows, superseded = current_rows(str(jsonl), plan)
    assert rows == [old, other_machine]
    assert [(row_key(row), why) for row, why in superseded] == [(dns.key, "neg_candidate_num None")]

    moved = yaml.safe_load(yaml.safe_dump(plan))
    moved["datasets"]["tiny"] = {"data_path": str(tmp_path / "elsewhere")}
    for run in planned_runs(plan):
        assert signature(run, moved) == signature(run, plan)


def _committed_files() -> dict[str, bytes]:
    paths = [os.path.join(DEFAULT_OUT, name) for name in sorted(os.listdir(DEFAULT_OUT))]
    paths = [p for p in paths if os.path.isfile(p)] + [str(REPO_ROOT / "README.md"), str(REPO_ROOT / "benchmarks" / "README.md")]
    return {path: Path(path).read_bytes() for path in paths}


def test_a_plan_of_ones_own_leaves_the_committed_results_alone(tmp_path):
    """A plan of one's own on one's own atomic dataset, run end to end with the default --out:
    its results go beside the plan, the committed ones and the README stay as they were."""
    committed = _committed_files()
    plan = _plan(write_tiny_dataset(tmp_path / "atomic"))
    plan["runs"] = [{"sampler": "uniform"}]
    config = tmp_path / "my_plan.yaml"
    config.write_text(yaml.safe_dump(plan))
    assert default_out(DEFAULT_CONFIG) == DEFAULT_OUT
    assert default_out(str(config)) == str(tmp_path / "my_plan_results")

    assert quality.main(["--config", str(config)]) == 0
    results = tmp_path / "my_plan_results"
    assert len((results / JSONL).read_text().splitlines()) == 1
    assert "Runs in the tables: 1 of the plan's 1." in (results / "quality.md").read_text()
    assert _committed_files() == committed


def test_a_plan_written_to_its_own_folder_syncs_its_readme_copy(tmp_path, data_root, monkeypatch):
    config = tmp_path / "plan.yaml"
    config.write_text(yaml.safe_dump(_plan(data_root)))
    start, end = readme_markers("plan_results/quality.md")  # named relative to the repository
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{start}\nold\n{end}\n")
    monkeypatch.setattr(quality, "README", str(readme))
    monkeypatch.setattr(quality, "REPO_ROOT", str(tmp_path))
    elsewhere = tmp_path / "results"
    assert quality.main(["--config", str(config), "--out", str(elsewhere), "--render-only"]) == 0
    assert "old" in readme.read_text()  # written elsewhere: no copy
    assert quality.main(["--config", str(config), "--render-only"]) == 0
    assert readme.read_text() == f"intro\n{start}\nNo results yet.\n{end}\n"
    readme.write_text(f"intro\n{start}\nold\n{end}\n")
    monkeypatch.setattr(quality, "REPO_ROOT", str(tmp_path / "elsewhere"))
    assert quality.main(["--config", str(config), "--render-only"]) == 0
    assert "old" in readme.read_text()  # results outside the repository: no copy


def test_the_example_plan(tmp_path, capsys):
    """benchmarks/example_plan.yaml loads, its runs' configs build, a dry run writes nothing."""
    example = str(REPO_ROOT / "benchmarks" / "example_plan.yaml")
    assert default_out(example) == str(REPO_ROOT / "benchmarks" / "example_plan_results")
    out = tmp_path / "example"
    assert quality.main(["--config", example, "--out", str(out), "--dry-run"]) == 0
    assert "4 runs to do" in capsys.readouterr().out
    assert not out.exists()


def test_a_run_folder_started_before_the_code_gained_a_key_is_taken_up(tmp_path):
    """A folder whose stored signature lacks a key the code gained since (at its default) is
    resumed; one whose stored signature differs on a key is not; a gained key the plan sets is
    held against it."""
    from benchmarks.quality_run import SIGNATURE_FILE

    plan = _plan(write_tiny_dataset(tmp_path / "data"))
    plan["runs"] = [{"sampler": "uniform"}]
    (run,) = planned_runs(plan)
    now = signature(run, plan)
    root = tmp_path / "unfinished"
    older = {k: v for k, v in now.items() if k != "eval_mask"}  # written before eval_mask existed
    folder = root / "tiny-SASRec-uniform-2020-0ld5161e"
    folder.mkdir(parents=True)
    (folder / SIGNATURE_FILE).write_text(json.dumps(older))
    assert run_folder(run, now, str(root)) == str(folder)
    assert run_folder(run, now, str(root), required=("eval_mask",)) != str(folder)
    (folder / SIGNATURE_FILE).write_text(json.dumps({**older, "learning_rate": 0.5}))
    assert run_folder(run, now, str(root)) != str(folder)


@pytest.mark.parametrize("script", ["speed.py", "layout_cost.py"])
def test_an_unknown_timing_variant_is_one_line_and_exit_2(script, tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    out = subprocess.run([sys.executable, str(path), "--only", "nope", "--out", str(tmp_path)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    assert "error: unknown variants ['nope']; known:" in out.stderr and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())
