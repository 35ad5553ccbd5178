"""The compatibility fixes hold after the package is imported, and change no more than they must."""
import subprocess
import sys

import numpy as np
import torch

import recbole_mdcns  # noqa: F401


def test_recbole_config_runs_on_this_numpy_without_adding_numpy_2s_removed_names(tiny_config):
    from recbole.config import Config

    config = Config("SASRec", config_dict={**tiny_config, "train_neg_sample_args": None})
    assert config["model"] == "SASRec" and np.float is np.float64 and np.unicode is np.str_
    if np.__version__ >= "2":
        assert "float_" not in np.__dict__ and "unicode_" not in np.__dict__ and "complex_" not in np.__dict__


def test_ray_reads_bool8():
    assert np.bool8 is np.bool_


def test_sine_import_leaves_anomaly_detection_off():
    from recbole.utils import get_model

    get_model("SINE")
    assert not torch.is_anomaly_enabled()


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_a_users_own_anomaly_detection_stays_on():
    code = "import torch; torch.autograd.set_detect_anomaly(True); import recbole_mdcns; print(torch.is_anomaly_enabled())"
    assert run_python(code) == "True"
    assert run_python("import torch, recbole_mdcns; print(torch.is_anomaly_enabled())") == "False"


def test_recbole_ensure_dir_tolerates_a_directory_created_meanwhile(tmp_path, monkeypatch):
    import recbole.trainer.trainer as trainer_module

    target = tmp_path / "made-by-another-rank"
    monkeypatch.setattr("os.path.exists", lambda path: False)  # as if checked before the other rank created it
    target.mkdir()
    trainer_module.ensure_dir(str(target))  # RecBole's own version raises FileExistsError here
