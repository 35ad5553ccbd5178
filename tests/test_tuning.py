"""Hyper-tuning with RecBole's HyperTuning, the drop-in API, and Ray staying optional."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import types

import pytest
import yaml

import recbole_mdcns.quick_start as quick_start
from recbole_mdcns import ConfigError, objective_function
from recbole_mdcns.config import Config
from recbole_mdcns.samplers import SAMPLERS
from recbole_mdcns.samplers.base import other_samplers_keys
from recbole_mdcns.tuning import HyperTuning, space_problems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tiny_yaml(tiny_config, tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**tiny_config, "model": "SASRec"}))
    return str(path)


def test_exhaustive_search_from_the_command_line(tiny_yaml, tmp_path):
    output = tmp_path / "tiny.result"
    cmd = hyper_command(tiny_yaml, os.path.join(ROOT, "yaml", "hyper", "tiny.hyper"), str(output))
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # the output file: per trial its params line, then "Valid result:" and "Test result:" lines
    trials = {}
    for block in output.read_text().strip().split("\n\n"):
        params, _, valid, _, test = block.strip().splitlines()
        trials[params] = (float(re.search(r"ndcg@10 : ([\d.]+)", valid).group(1)), test)
    assert len(trials) == 8  # 2 samplers x 2 x 2, each once
    # the printed best params are a trial with the best validation NDCG@10, and the printed
    # test result is that trial's
    best = ast.literal_eval(re.search(r"^best params: (\{.*\})$", out.stdout, flags=re.M).group(1))
    best_line = ", ".join(f"{key}:{value}" for key, value in sorted(best.items()))
    assert trials[best_line][0] == max(valid for valid, _ in trials.values())
    printed_test = out.stdout.split("test result of the best params:\n")[1].splitlines()[0]
    assert printed_test == trials[best_line][1]


def hyper_command(tiny_yaml: str, params_file: str, output: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "run_hyper_mdcns.py"), f"--config_files={tiny_yaml}",
            f"--params_file={params_file}", "--algo=exhaustive", f"--output_file={output}"]


@pytest.mark.parametrize("space, extra, error", [
    ("dns_top_m choice [1,2]\nneg_candidate_num choice [5,9]\n", [],
     "dns_top_m is tuned, but sampler MDCNS does not read it (only DNS): trials that differ only in it are the same"),
    ("sampler choice ['MDCNS']\nmdcns_tau choice [1,2]\n", ["--sampler=uniform"],
     "sampler is tuned by {space}, but --sampler=uniform on the command line sets it in every trial"),
    ("mdcns_tau choise [1,2]\n", [], "--params_file={space}: Illegal param type [choise]"),
    ("mdcns_tau choice [1,\n", [], "--params_file={space}: mdcns_tau choice [1, is not a list of values"),
    ("neg_num choice [0,1]\n", [], "neg_num = 0: must be an integer >= 1"),
    (None, [], "--params_file=missing.hyper: no such file"),
])
def test_a_space_whose_trials_fail_or_cannot_differ_is_one_line_before_any_trial(tiny_yaml, tmp_path, space, extra,
                                                                                  error):
    params_file = "missing.hyper"
    if space is not None:
        params_file = str(tmp_path / "space.hyper")
        (tmp_path / "space.hyper").write_text(space)
    output = tmp_path / "space.result"
    out = subprocess.run(hyper_command(tiny_yaml, params_file, str(output)) + extra, capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "error" in line or "exception" in line]
    assert len(errors) == 1 and errors[0].startswith("recbole-mdcns: error: " + error.format(space=params_file))
    assert "Traceback" not in out.stderr and "running parameters" not in out.stdout and not output.exists()


def test_a_command_line_sampler_may_repeat_the_tuned_one(tiny_yaml, tmp_path, monkeypatch):
    space = tmp_path / "space.hyper"
    space.write_text("sampler choice ['mdcns']\nmdcns_tau choice [1,2]\n")
    monkeypatch.setattr(sys, "argv", ["run_hyper_mdcns.py", "--sampler=MDCNS"])
    assert space_problems(str(space), [tiny_yaml]) == []
    monkeypatch.setattr(sys, "argv", ["run_hyper_mdcns.py", "--sampler=DNS"])
    assert space_problems(str(space), [tiny_yaml])[0].startswith("sampler is tuned by")


@pytest.mark.parametrize("params_file", sorted(os.listdir(os.path.join(ROOT, "yaml", "hyper"))))
def test_every_shipped_space_tunes_keys_its_samplers_read(params_file):
    with open(os.path.join(ROOT, "yaml", "hyper", params_file), encoding="utf-8") as f:
        lines = dict(line.split(" ", 1) for line in f.read().splitlines() if line.strip())
    samplers = ast.literal_eval(lines.pop("sampler").removeprefix("choice ").strip())
    for key in lines:
        assert any(key not in other_samplers_keys(sampler, [key]) for sampler in samplers), (params_file, key)


@pytest.mark.parametrize("algo", ["random", "bayes"])
def test_random_and_bayes_run_a_few_trials(tiny_yaml, tmp_path, algo):
    space = tmp_path / "space.hyper"
    space.write_text("sampler choice ['DNS','MDCNS']\nneg_candidate_num quniform 4,9,1\nmdcns_top_m quniform 1,3,1\n")
    tuning = HyperTuning(params_file=str(space), fixed_config_file_list=[tiny_yaml], algo=algo, max_evals=3)
    tuning.run()
    assert len(tuning.score_list) == 3  # every trial ran: quniform floats were accepted for integer keys
    assert tuning.best_result()["best_valid_score"] == max(r["best_valid_score"] for r in tuning.params2result.values())


@pytest.mark.parametrize("key", ["neg_candidate_num", "divns_runner_ups", "mdcns_top_m"])
def test_integer_keys_take_integral_floats_and_refuse_others(tiny_config, key):
    sampler = {"neg_candidate_num": "DNS", "divns_runner_ups": "DivNS", "mdcns_top_m": "MDCNS"}[key]
    config = Config("SASRec", config_dict={**tiny_config, "sampler": sampler, key: 3.0})
    assert config[key] == 3 and isinstance(config[key], int)
    with pytest.raises(ConfigError, match=f"{key} = 2.5: must be an integer"):
        Config("SASRec", config_dict={**tiny_config, "sampler": sampler, key: 2.5})


def test_a_first_trial_scoring_zero_is_not_lost(tmp_path):
    scores = iter([0.0, 0.5])  # smaller is better: the first trial is the best

    def objective(config_dict, config_file_list):
        return {"model": "SASRec", "best_valid_score": next(scores), "valid_score_bigger": False,
                "best_valid_result": {}, "test_result": {}}

    space = tmp_path / "space.hyper"
    space.write_text("x choice [1,2]\n")
    tuning = HyperTuning(objective, params_file=str(space), algo="exhaustive")
    tuning.run()
    assert tuning.best_score == 0.0
    first = next(iter(tuning.params2result))
    assert tuning.params2str(tuning.best_params) == first


def test_objective_never_imports_ray_and_reports_inside_a_ray_session(tiny_config, monkeypatch):
    objective_function({**tiny_config, "model": "SASRec", "sampler": "uniform"}, saved=False)
    assert "ray" not in sys.modules
    reported = []
    fake_session = types.SimpleNamespace(report=reported.append)
    fake_internal = types.SimpleNamespace(_get_session=lambda: object())
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))
    monkeypatch.setitem(sys.modules, "ray.air", types.SimpleNamespace(session=fake_session))
    monkeypatch.setitem(sys.modules, "ray.air._internal.session", fake_internal)
    quick_start._report_to_ray({"ndcg@10": 0.5})
    assert reported == [{"ndcg@10": 0.5}]


def test_readme_drop_in_examples_run_as_printed(temporary_cwd, capsys):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        section = f.read().split("## Use it from your own RecBole code")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 5
    # run from an empty temporary directory, as a user's own folder (the packaged `quick` config)
    # the sampler of one's own lives "in your own module": a fresh namespace; the other
    # examples build on each other in one session (block 3 on block 2, block 5 on block 1)
    own_module = next(i for i, block in enumerate(blocks) if "@register(" in block)
    registered = dict(SAMPLERS)
    session: dict = {}
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, "README.md", "exec"), {} if i == own_module else session)
            printed = capsys.readouterr().out
            assert ("print(" not in block) or printed.strip(), f"example {i + 1} prints nothing"
            if "Shifted" in block:
                assert "Shifted 3" in printed.splitlines()  # as the README's comment says
    finally:
        SAMPLERS.clear()  # the example's own sampler must not leak into other tests
        SAMPLERS.update(registered)
    assert session["sampler"].config["genni_alpha"] == 2.0
