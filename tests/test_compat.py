"""The compatibility fixes hold after the package is imported."""
import numpy as np
import torch

import recbole_mdcns  # noqa: F401
from recbole_mdcns import compat


def test_numpy_aliases_exist_and_point_at_the_right_types():
    assert np.float_ is np.float64 and np.complex_ is np.complex128
    assert np.unicode_ is np.str_ and np.bool8 is np.bool_


def test_sine_import_leaves_anomaly_detection_off():
    from recbole.utils import get_model

    get_model("SINE")
    assert not torch.is_anomaly_enabled()


def test_apply_is_idempotent():
    compat.apply()
    compat.apply()
    assert not torch.is_anomaly_enabled()


def test_recbole_ensure_dir_tolerates_a_directory_created_meanwhile(tmp_path, monkeypatch):
    import recbole.trainer.trainer as trainer_module

    target = tmp_path / "made-by-another-rank"
    monkeypatch.setattr("os.path.exists", lambda path: False)  # as if checked before the other rank created it
    target.mkdir()
    trainer_module.ensure_dir(str(target))  # RecBole's own version raises FileExistsError here
