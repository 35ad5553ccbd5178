"""Fixes that let RecBole 1.2.1 run on today's stack (numpy 2, torch >= 2.6).

`apply()` is idempotent and is called once when the package is imported. Each fix
states its cause. Nothing here changes `torch.load` for the rest of the process: the
plugin's own checkpoints are written in a form that loads with `weights_only=True`
(see `recbole_mdcns.checkpoint`).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

_APPLIED = False

# numpy 2 removed these aliases; RecBole's `Config.compatibility_settings` reads the
# first three and ray 2.6 reads `np.bool8`. Added only where missing, so numpy 1.26
# keeps its own objects.
_NUMPY_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
}


def _add_numpy_aliases() -> None:
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def _import_models_without_anomaly_detection() -> None:
    # recbole/model/sequential_recommender/sine.py calls
    # torch.autograd.set_detect_anomaly(True) at import time, which makes every
    # training run 1.3-1.5x slower. Import the model package once (as get_model
    # would) and switch the detector back off.
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(False)


def _silence_recbole_future_warnings() -> None:
    # RecBole 1.2.1's own code triggers FutureWarnings on every run (pandas chained
    # fillna in Dataset, torch.cuda.amp.GradScaler in Trainer). The versions they warn
    # about are pinned out (pandas<3) or still work; only warnings raised from
    # RecBole's modules are silenced.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")


def _ensure_dir(dir_path: str) -> None:
    """Create a directory unless it exists, race-free."""
    os.makedirs(dir_path, exist_ok=True)


def _race_free_ensure_dir() -> None:
    # RecBole's ensure_dir checks, then creates: the processes of a distributed run that
    # create the same checkpoint or log directory race, and the loser crashes with
    # FileExistsError. Replace it in every RecBole module that imported it by name.
    import recbole.data.dataset.dataset
    import recbole.data.utils
    import recbole.trainer.trainer
    import recbole.utils
    import recbole.utils.logger
    import recbole.utils.utils

    for module in (recbole.utils, recbole.utils.utils, recbole.utils.logger, recbole.trainer.trainer,
                   recbole.data.utils, recbole.data.dataset.dataset):
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = _ensure_dir


def apply() -> None:
    """Apply every fix once."""
    global _APPLIED
    if _APPLIED:
        return
    _add_numpy_aliases()
    _silence_recbole_future_warnings()
    _race_free_ensure_dir()
    _import_models_without_anomaly_detection()
    _APPLIED = True
