"""Converting benchmark text files into RecBole atomic files."""
from __future__ import annotations

import os

import pytest

from recbole_mdcns.config import Config
from recbole_mdcns.convert import ConvertError, convert, main
from recbole.data import create_dataset, data_preparation

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "seqrec", "s3rec_5core")


def test_sequence_file_becomes_positions(tmp_path):
    src = tmp_path / "seq.txt"
    src.write_text("1 10 11 12\n2 11 13\n\n3 10 12 13 14\n")
    counts = convert(str(src), "toy", str(tmp_path / "out"))
    assert (counts.users, counts.items, counts.interactions) == (3, 5, 9)
    lines = (tmp_path / "out" / "toy" / "toy.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert lines[1:4] == ["1\t10\t0", "1\t11\t1", "1\t12\t2"] and lines[4:6] == ["2\t11\t0", "2\t13\t1"]


def test_interaction_file_with_and_without_timestamps(tmp_path):
    src = tmp_path / "inter.txt"
    src.write_text("u1 a 100\nu2 b 5\nu1 c 200\n")
    convert(str(src), "stamped", str(tmp_path), fmt="interactions")
    assert (tmp_path / "stamped" / "stamped.inter").read_text().splitlines()[1:] == ["u1\ta\t100", "u2\tb\t5", "u1\tc\t200"]
    src.write_text("u1 a\nu2 b\nu1 c\n")
    convert(str(src), "ordered", str(tmp_path), fmt="interactions")
    assert (tmp_path / "ordered" / "ordered.inter").read_text().splitlines()[1:] == ["u1\ta\t0", "u2\tb\t0", "u1\tc\t1"]


@pytest.mark.parametrize(
    "fmt, text, message",
    [
        ("sequence", "1 2 3\n7\n", "seq.txt:2: a user with no items: '7'"),
        ("interactions", "1 2 3\n1 2 3 4\n", "seq.txt:2: expected 'user item \\[timestamp\\]', got '1 2 3 4'"),
        ("interactions", "1 2 noon\n", "seq.txt:1: timestamp 'noon' is not a number"),
    ],
)
def test_malformed_lines_name_line_and_content(tmp_path, fmt, text, message):
    src = tmp_path / "seq.txt"
    src.write_text(text)
    with pytest.raises(ConvertError, match=message):
        convert(str(src), "bad", str(tmp_path), fmt=fmt)
    assert not (tmp_path / "bad").exists()


def test_never_overwrites_without_force(tmp_path, capsys):
    src = tmp_path / "seq.txt"
    src.write_text("1 10 11\n")
    assert main([str(src), "--dataset", "toy", "--out", str(tmp_path)]) == 0
    assert main([str(src), "--dataset", "toy", "--out", str(tmp_path)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([str(src), "--dataset", "toy", "--out", str(tmp_path), "--force"]) == 0


def test_two_processes_converting_at_once_both_succeed(tmp_path, monkeypatch):
    """Parallel benchmark workers may convert the same dataset at the same moment: a second
    process renaming its file into place between our write and our rename must not break us."""
    src = tmp_path / "seq.txt"
    src.write_text("1 10 11 12\n2 11 13\n")
    real_replace, real_getpid = os.replace, os.getpid

    def replace_after_another_process(tmp, target):
        monkeypatch.setattr(os, "replace", real_replace)
        monkeypatch.setattr(os, "getpid", lambda: real_getpid() + 1)
        convert(str(src), "toy", str(tmp_path), force=True)  # the other worker, first to finish
        real_replace(tmp, target)

    monkeypatch.setattr(os, "replace", replace_after_another_process)
    counts = convert(str(src), "toy", str(tmp_path))
    assert (counts.users, counts.interactions) == (2, 5)
    assert sorted(os.listdir(tmp_path / "toy")) == ["toy.inter"]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "seq.txt"
    src.write_text("1 10 11 12\n")
    monkeypatch.setattr(os, "replace", lambda tmp, target: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        convert(str(src), "toy", str(tmp_path))
    assert os.listdir(tmp_path / "toy") == []


def test_recbole_reads_the_output_with_leave_one_out(tmp_path):
    src = tmp_path / "seq.txt"
    src.write_text("".join(f"{u} " + " ".join(str((u * 7 + k) % 30 + 1) for k in range(6)) + "\n" for u in range(1, 21)))
    convert(str(src), "toy", str(tmp_path))
    config = Config("SASRec", "toy", config_dict={"data_path": str(tmp_path), "sampler": "none",
                                                  "load_col": {"inter": ["user_id", "item_id", "timestamp"]}})
    dataset = create_dataset(config)
    assert (dataset.user_num - 1, dataset.inter_num) == (20, 120)
    train, valid, test = data_preparation(config, dataset)
    assert len(valid._dataset) == len(test._dataset) == 20  # the last two items of each user
    assert len(train._dataset) == 20 * 3  # prefixes of lengths 1..3 predict items 2..4


def test_the_command_line_writes_the_keys_that_train_on_the_output(tmp_path, monkeypatch, capsys):
    src = tmp_path / "seq.txt"
    src.write_text("".join(f"{u} " + " ".join(str((u * 7 + k) % 30 + 1) for k in range(6)) + "\n" for u in range(1, 21)))
    monkeypatch.chdir(tmp_path)
    assert main([str(src), "--dataset", "toy", "--out", "data"]) == 0
    run_config = os.path.join("data", "toy", "toy.yaml")
    assert f"--config_files={run_config}" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "data")  # the data_path it holds is absolute
    config = Config("SASRec", config_file_list=[os.path.join("toy", "toy.yaml")], config_dict={"sampler": "none"})
    dataset = create_dataset(config)
    assert (config["dataset"], dataset.user_num - 1, dataset.inter_num) == ("toy", 20, 120)
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}


@pytest.mark.skipif(not os.path.isfile(os.path.join(SHARED, "Beauty.txt")), reason="../shared data not present")
def test_beauty_reproduces_the_published_counts(tmp_path):
    counts = convert(os.path.join(SHARED, "Beauty.txt"), "Beauty", str(tmp_path))
    assert (counts.users, counts.items, counts.interactions) == (22363, 12101, 198502)
