"""The command line (`run_recbole_mdcns.py`, `python -m recbole_mdcns`): one line per mistake with
exit status 2 and nothing written, `--debug`'s traceback, `--baseline`'s comparison, the JSON line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from recbole_mdcns import ConfigError
from recbole_mdcns.cli import main

TINY_ARGS = ["--dataset=tiny", "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}", "--epochs=1",
             "--train_batch_size=64", "--neg_candidate_num=10", "--show_progress=False"]


def run_cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["run_recbole_mdcns.py", *args])
    return main()


MISTAKES = [
    (["--learning_rate=abc"], "learning_rate = 'abc': must be a number > 0"),
    (["--epochs=-1"], "epochs = -1: must be an integer >= 1"),
    (["--train_batch_size=0"], "train_batch_size = 0: must be an integer >= 1"),
    (["--train_batch_size=1.5"], "train_batch_size = 1.5: must be an integer >= 1"),
    (["--topk=abc"], "topk = 'abc': must be a positive integer or a list of them"),
    (["--topk=[10,0]"], "topk = [10, 0]: must be a positive integer or a list of them"),
    (["--dataset=doesnotexist"], "dataset = 'doesnotexist': no folder dataset/doesnotexist (data_path + dataset) and "
                                 "not a dataset RecBole downloads"),
    (["--dataset=tiny", "--data_path=/nonexistent"], "dataset = 'tiny': no folder /nonexistent/tiny (data_path + dataset)"),
    (["--model=Foo"], "model = 'Foo' is not a RecBole model"),
    (["--sampler=foo"], "sampler = 'foo' is unknown; valid samplers: none, AdaSIR, AHNS, DivNS, DNS"),
    (["--baseline=foo"], "sampler = 'foo' is unknown; valid samplers: none, AdaSIR, AHNS, DivNS, DNS"),
    (["--config_files=nope.yaml"], "config file 'nope.yaml' not found: give a yaml file's path or a packaged config (quick)"),
    (["--epochs", "5"], "'--epochs 5': write RecBole keys as --epochs=5"),
    (["-x"], "argument '-x': write RecBole keys as --key=value"),
    (["--nproc=abc"], "argument --nproc: invalid int value: 'abc'"),
    (["--epochs=2", "--epochs=3"], "--epochs=3: this key is given twice on the command line, with different values"),
    (["--resume=missing-resume.pth"], "--resume=missing-resume.pth: no such file"),
    (["--baseline=uniform", "--nproc=2"], "--baseline trains a second run in this process: drop --resume, --nproc"),
    (["--dns_top_m=0", "--sampler=DNS"], "dns_top_m = 0: must be an integer >= 1"),
    (["--mdcns_gama=1"], "mdcns_gama is not a recbole-mdcns key (did you mean mdcns_gamma?)"),
]


@pytest.mark.parametrize("args, message", MISTAKES, ids=lambda a: a if isinstance(a, str) else " ".join(a))
def test_each_mistake_is_one_line_and_exit_2_with_nothing_written(monkeypatch, capsys, temporary_cwd, args, message):
    assert run_cli(monkeypatch, *args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"recbole-mdcns: error: {err.split('error: ', 1)[1]}"
    assert err.count("\n") == 1 and message in err, err
    assert os.listdir(temporary_cwd) == []  # no log, checkpoint or tensorboard folder: nothing ran


def test_a_broken_yaml_file_names_its_line(monkeypatch, capsys, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: 2\nlearning_rate: [0.1\n")
    assert run_cli(monkeypatch, f"--config_files={broken}") == 2
    assert f"config file '{broken}' is not valid yaml at line 3" in capsys.readouterr().err


def test_a_mistake_found_after_the_data_loads_is_one_line_too(monkeypatch, capsys, data_root):
    args = [a for a in TINY_ARGS if not a.startswith("--neg_candidate_num")]
    assert run_cli(monkeypatch, *args, f"--data_path={data_root}", "--sampler=DNS", "--neg_candidate_num=500") == 2
    err = capsys.readouterr().err
    assert err.startswith("recbole-mdcns: error: neg_candidate_num = 500") and "Traceback" not in err


def test_a_config_file_names_the_dataset_and_the_model(monkeypatch, capsys, data_root, tmp_path):
    keys = tmp_path / "tiny.yaml"
    keys.write_text(f"dataset: tiny\nmodel: GRU4Rec\ndata_path: {data_root}\n")
    args = [a for a in TINY_ARGS if not a.startswith("--dataset")]
    assert run_cli(monkeypatch, *args, f"--config_files={keys}", "--sampler=uniform") == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["model"], result["dataset"]) == ("GRU4Rec", "tiny")


def test_a_config_file_that_is_not_text_is_one_line(monkeypatch, capsys, tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00dataset")
    assert run_cli(monkeypatch, f"--config_files={binary}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"config file '{binary}'" in err


def test_a_dataset_of_ones_own_without_its_timestamp_loaded_is_one_line(monkeypatch, capsys, data_root,
                                                                         temporary_cwd):
    args = [a for a in TINY_ARGS if not a.startswith("--load_col")]
    assert run_cli(monkeypatch, *args, f"--data_path={data_root}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("load_col = {'inter': ['user_id', 'item_id']}: sequential models need TIME_FIELD "
                                     "'timestamp' loaded") in err and "load_col: {inter: [user_id, item_id, timestamp]}" in err
    assert os.listdir(temporary_cwd) == []


@pytest.mark.parametrize("how", ["--debug", "environment"])
def test_debug_shows_the_traceback(monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("RECBOLE_MDCNS_DEBUG", "1")
    with pytest.raises(ConfigError, match="learning_rate = 'abc'"):
        run_cli(monkeypatch, "--learning_rate=abc", *(["--debug"] if how == "--debug" else []))


def test_baseline_reports_both_runs_side_by_side_and_as_json(monkeypatch, capsys, data_root):
    assert run_cli(monkeypatch, *TINY_ARGS, f"--data_path={data_root}", "--sampler=DNS", "--baseline=uniform") == 0
    out, err = capsys.readouterr()
    (line,) = out.splitlines()  # stdout is the one JSON line
    result = json.loads(line)
    assert (result["model"], result["dataset"]) == ("SASRec", "tiny")
    assert [r["sampler"] for r in result["runs"]] == ["DNS", "uniform"]
    for run in result["runs"]:
        assert set(run["test_result"]) == {"recall@10", "mrr@10", "ndcg@10", "hit@10", "precision@10"} and run["seconds"] > 0
    dns, uniform = result["runs"]
    table = err[err.index("SASRec on tiny, the same config and seed:"):]
    assert f"DNS      {dns['test_result']['recall@10']:.4f}" in table
    assert f"uniform  {uniform['test_result']['recall@10']:.4f}" in table


def test_the_start_up_lines_say_what_trains(monkeypatch, caplog, data_root):
    caplog.set_level("INFO")
    assert run_cli(monkeypatch, *TINY_ARGS, f"--data_path={data_root}", "--sampler=MDCNS", "--neg_num=2",
                   "--mdcns_top_m=2") == 0
    err = caplog.text
    assert ("trains SASRec and its peer GRU4Rec with sampler MDCNS: 2 negatives per row, neg_loss BPR; "
            "train_layout prefix; device cpu") in err
    assert err.count("loss_type = CE is not used: the sampler trains SASRec with neg_loss = BPR") == 1
    assert "use_gpu = False" in err


def test_python_dash_m_runs_from_any_folder_with_the_packaged_config(data_root, tmp_path):
    cmd = [sys.executable, "-m", "recbole_mdcns", "--config_files=quick", *TINY_ARGS, f"--data_path={data_root}",
           "--sampler=uniform"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = json.loads(out.stdout)["runs"]
    assert run["sampler"] == "uniform" and 0 <= run["test_result"]["ndcg@10"] <= 1
    assert "train_batch_size = 64" in out.stderr  # the command line over the packaged config


def test_the_script_exits_2_on_a_mistake(tmp_path):
    out = subprocess.run([sys.executable, str(REPO_ROOT / "run_recbole_mdcns.py"), "--epochs=-1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert (out.returncode, out.stdout, out.stderr) == (2, "", "recbole-mdcns: error: epochs = -1: must be an integer >= 1\n")
