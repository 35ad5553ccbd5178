"""Fixes that let RecBole 1.2.1 run on today's stack (numpy 2, torch >= 2.6).

`apply()` runs once when the package is imported. Each fix states its cause, and each
changes no more than it must; the README lists them ("What importing the plugin
changes"). Nothing here changes `torch.load` for the rest of the process: the plugin's
own checkpoints are written in a form that loads with `weights_only=True` (see
`recbole_mdcns.checkpoint`).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

_APPLIED = False


def _recbole_compatibility_settings(self) -> None:
    # RecBole's Config.compatibility_settings sets numpy's removed aliases (np.bool, np.int,
    # np.float, ...) for RecBole's own code, reading np.float_, np.complex_ and np.unicode_,
    # which numpy 2 removed. The same aliases, from names both numpy 1 and 2 have.
    for alias, value in {"bool": np.bool_, "int": np.int_, "float": np.float64, "complex": np.complex128,
                         "object": np.object_, "str": np.str_, "long": np.int_, "unicode": np.str_}.items():
        setattr(np, alias, value)


def _patch_recbole_config() -> None:
    from recbole.config import Config

    Config.compatibility_settings = _recbole_compatibility_settings


def _add_bool8_for_ray() -> None:
    # ray 2.6 (which `recbole.quick_start` imports) reads np.bool8, removed in numpy 2.
    # Added only where missing, so numpy 1.26 keeps its own.
    if "bool8" not in np.__dict__:
        np.bool8 = np.bool_


def _undo_recbole_anomaly_detection() -> None:
    # recbole/model/sequential_recommender/sine.py calls torch.autograd.set_detect_anomaly(True)
    # at import time, which makes every training run 1.3-1.5x slower. Import the model
    # package once (as get_model would) and switch the detector off only if that import
    # is what switched it on: a user's own set_detect_anomaly(True) stays.
    import sys

    if "recbole.model.sequential_recommender" in sys.modules:
        return  # imported before the plugin: whatever is set now is not ours to undo
    was_enabled = torch.is_anomaly_enabled()
    import recbole.model.sequential_recommender  # noqa: F401

    if not was_enabled:
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
    _undo_recbole_anomaly_detection()  # first: before anything else can import RecBole's models
    _patch_recbole_config()
    _add_bool8_for_ray()
    _silence_recbole_future_warnings()
    _race_free_ensure_dir()
    _APPLIED = True
