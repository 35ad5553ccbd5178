"""RecBole's Config plus the plugin's keys: sampler defaults and their validation.

Priority, lowest first: RecBole's own defaults, the chosen sampler's declared defaults
(its `Param`s, shared keys included), then the user's yaml files, config dict and
`--key=value` command line, as in RecBole.
"""
from __future__ import annotations

import os
from importlib import resources
from typing import Any, Optional

import recbole
import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType, get_model

from recbole_mdcns.evaluation import EVAL_PARAMS, check_eval_mask
from recbole_mdcns.layout import LAYOUT_PARAMS, check_layout
from recbole_mdcns.parallel import DIST_BACKEND, dist_backend
from recbole_mdcns.params import ConfigError, Param, validate_params
from recbole_mdcns.samplers import SAMPLERS, sampler_class
from recbole_mdcns.samplers.base import (SHARED_PARAMS, closest_key_problem, key_prefixes, known_keys,
                                        other_samplers_keys, sampler_names)
from recbole_mdcns.scoring import backbone_for

DEFAULT_SAMPLER = "MDCNS"
RECBOLE_LEGACY_KEYS = {"neg_sampling"}  # RecBole's own (deprecated) key with a plugin prefix
RUN_PARAMS = EVAL_PARAMS + LAYOUT_PARAMS + (DIST_BACKEND,)  # the keys of every run, with a sampler or without
# RecBole's own keys whose wrong values would otherwise fail deep inside RecBole or torch
# (or, for epochs, train nothing); their defaults stay RecBole's
RECBOLE_PARAMS = (
    Param("learning_rate", float, None, "", minimum=0, minimum_exclusive=True),
    Param("epochs", int, None, "", minimum=1),
    Param("train_batch_size", int, None, "", minimum=1),
    Param("eval_batch_size", int, None, "", minimum=1),
    Param("stopping_step", int, None, "", minimum=0),
    Param("eval_step", int, None, "", minimum=0),  # 0: no validation while training
    Param("weight_decay", float, None, "", minimum=0),
    Param("seed", int, None, ""),
    Param("MAX_ITEM_LIST_LENGTH", int, None, "", minimum=1),
)
PRESETS = resources.files("recbole_mdcns") / "yaml"  # the configs installed with the package


def preset_names() -> list[str]:
    """The names `config_file_list` accepts beside paths: the yaml files shipped in the package."""
    return sorted(entry.name.removesuffix(".yaml") for entry in PRESETS.iterdir() if entry.name.endswith(".yaml"))


def resolve_config_file(file: str) -> str:
    """A config file's path: `file` itself where it exists, else the packaged preset of that
    name (`quick`), else a ConfigError naming both."""
    if os.path.isfile(file):
        return file
    if file in preset_names():
        return str(PRESETS / f"{file}.yaml")
    raise ConfigError([f"config file {file!r} not found: give a yaml file's path or a packaged config "
                       f"({', '.join(preset_names())})"])


def is_active(sampler: Any) -> bool:
    """Whether a `sampler` value asks the plugin to train (anything but none)."""
    return sampler is not None and str(sampler).lower() != "none"


def key_table() -> list[str]:
    """The README's key-table rows, from the declarations: `sampler`, the keys of every
    run, the keys shared by the samplers, then each registered sampler's own, in
    registration order."""
    choices = ", ".join(sampler_names()[1:])
    rows = [f"| all | `sampler` | `{DEFAULT_SAMPLER}` | {choices} (any case), or none for RecBole's own training |"]
    rows += [p.table_row("all") for p in RUN_PARAMS + SHARED_PARAMS]
    shared = {p.key for p in SHARED_PARAMS}
    for cls in SAMPLERS.values():
        rows += [p.table_row(cls.name) for p in cls.all_params() if p.key not in shared]
    return rows


def run_summary(config: Any, trained: list[str]) -> str:
    """The start-up line saying what the run trains: the models, the sampler or RecBole's
    loss, the negatives per row and the loss over them, the layout and the device."""
    models = " and ".join(trained)
    sampler = config["sampler"]
    if is_active(sampler):
        k = config["neg_num"]
        how = f"sampler {sampler}: {k} negative{'s' if k > 1 else ''} per row, neg_loss {config['neg_loss']}"
    else:
        how = f"RecBole's own training (loss_type {config['loss_type']})"
    layout = config["train_layout"] or "prefix"  # a RecBole Config has no train_layout
    return f"trains {models} with {how}; train_layout {layout}; device {config['device']}"


def startup_notes(config: Any) -> list[str]:
    """What a user should know before training starts, one line each: the default sampler
    trains a second model, which set keys go unused (RecBole's loss_type, other samplers'
    keys), a pairing measured to learn little."""
    sampler = config["sampler"]
    if not is_active(sampler):
        return []
    user_set = getattr(config, "external_config_dict", {})
    cls = sampler_class(sampler)
    notes = []
    if "sampler" not in user_set and cls.name == DEFAULT_SAMPLER:
        notes.append(f"sampler = {DEFAULT_SAMPLER} (the default): it trains a second model, the peer "
                     f"{config['mdcns_peer_model']}, beside {config['model']}; set sampler: uniform for one model")
    if config["loss_type"] is not None:
        notes.append(f"loss_type = {config['loss_type']} is not used: the sampler trains {config['model']} with "
                     f"neg_loss = {config['neg_loss']} over its negatives (sampler: none trains with loss_type)")
    for key, owners in other_samplers_keys(cls.name, user_set).items():
        notes.append(f"{key} = {user_set[key]!r} is not used by {cls.name} (only by {', '.join(owners)})")
    if config["neg_loss"] == "gBCE" and config["neg_shared"] is True and cls.can_share:
        notes.append("neg_loss = gBCE with neg_shared = true: each item is then a negative in only K / N of the "
                     "batches, too rarely for gBCE's summed negatives, and it learned little on LastFM "
                     "(benchmarks/README.md); gSASRec draws per row (neg_shared: false)")
    return notes


def _topk_problems(topk: Any) -> list[str]:
    ks = topk if isinstance(topk, list) else [topk]
    if all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks) and ks:
        return []
    return [f"topk = {topk!r}: must be a positive integer or a list of them"]


class Config(RecBoleConfig):
    """`recbole.config.Config` that knows the `sampler` key and the keys of each sampler."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        super().__init__(model, dataset, config_file_list, config_dict)
        self._validate()

    def _load_config_files(self, file_list: Optional[list[str]]) -> dict[str, Any]:
        """RecBole's yaml loading, with the packaged presets by name and one-line errors."""
        loaded = {}
        for file in file_list or []:
            path = resolve_config_file(file)
            try:
                loaded.update(super()._load_config_files([path]))
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark is not None else ""
                raise ConfigError([f"config file {file!r} is not valid yaml{where}: {getattr(error, 'problem', error)}"]) from None
            except (TypeError, ValueError):  # a file that holds a list or a scalar, not keys
                raise ConfigError([f"config file {file!r} must hold `key: value` lines"]) from None
        return loaded

    def _load_cmd_line(self) -> dict[str, Any]:
        try:
            return super()._load_cmd_line()
        except SyntaxError as error:  # RecBole: "There are duplicate commend arg '--key=value' with different value."
            arg = str(error).split("'")[1] if str(error).count("'") >= 2 else str(error)
            raise ConfigError([f"{arg}: this key is given twice on the command line, with different values"]) from None

    def _get_model_and_dataset(self, model, dataset):
        name = self.external_config_dict.get("model") if model is None else model
        if name is None or (dataset is None and "dataset" not in self.external_config_dict):
            missing = "model" if name is None else "dataset"
            raise ConfigError([f"{missing} is not set: give it as an argument, in a config file or as --{missing}=..."])
        if isinstance(name, str):
            try:
                get_model(name)
            except (ValueError, ImportError):  # an unknown name makes RecBole import its optional model packages
                raise ConfigError([f"model = {name!r} is not a RecBole model (sequential ones: SASRec, GRU4Rec, "
                                   "NARM, ...; the README lists those the samplers support)"]) from None
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        sampler = self.external_config_dict.get("sampler", DEFAULT_SAMPLER)
        self.internal_config_dict["sampler"] = DEFAULT_SAMPLER
        self.internal_config_dict.update({p.key: p.default for p in RUN_PARAMS})
        if is_active(sampler) and str(sampler).lower() in SAMPLERS:  # an unknown one is reported by _validate
            self.internal_config_dict.update(SAMPLERS[str(sampler).lower()].defaults())

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        present = [param for param in RECBOLE_PARAMS if final.get(param.key) is not None]
        problems = validate_params(final, present) + _topk_problems(final.get("topk"))
        if problems:  # before RecBole reads them
            raise ConfigError(problems)
        user_set_neg_args = self.external_config_dict.get("train_neg_sample_args") is not None
        if is_active(final["sampler"]):
            if user_set_neg_args:
                raise ConfigError(
                    [
                        f"train_neg_sample_args = {final['train_neg_sample_args']!r}: must be unset "
                        f"when sampler = {final['sampler']!r} (the plugin draws the training "
                        "negatives; RecBole's own sampling is only used with sampler: none)"
                    ]
                )
            final["train_neg_sample_args"] = None
        elif final.get("loss_type") == "CE" and not user_set_neg_args:
            # stock RecBole refuses CE with its default uniform sampling; CE needs none
            final["train_neg_sample_args"] = None
        return final

    def _init_device(self):
        """RecBole's device set-up, plus torch.distributed over gloo on CPU.

        RecBole hard-codes the NCCL backend, which needs GPUs. `dist_backend` picks it (`auto`:
        nccl where CUDA is available, gloo otherwise); gloo runs on CPU.
        """
        final = self.final_config_dict
        backend = final["dist_backend"] = dist_backend(final.get("dist_backend", DIST_BACKEND.default))
        gpu_ids = [gpu for gpu in str(final["gpu_id"]).split(",") if gpu.strip()]
        if "local_rank" in final and backend == "nccl" and final["nproc"] > len(gpu_ids):
            raise ConfigError([f"nproc = {final['nproc']} with dist_backend = nccl needs one GPU per process, "
                               f"but gpu_id = {str(final['gpu_id'])!r} names {len(gpu_ids)}: list more GPUs in "
                               "gpu_id, or set dist_backend = gloo to train on CPU"])
        if "local_rank" not in final or backend == "nccl":
            super()._init_device()
            final["use_gpu"] = final["device"].type == "cuda"  # RecBole prints True on a CPU run
            return
        final["gpu_id"] = str(final["gpu_id"])
        torch.distributed.init_process_group(
            backend="gloo",
            rank=final["local_rank"] + final["offset"],
            world_size=final["world_size"],
            init_method=f"tcp://{final['ip']}:{final['port']}",
        )
        final.update(device=torch.device("cpu"), single_spec=False)
        if final["local_rank"] != 0:
            final.update(state="error", show_progress=False, verbose=False)

    def _validate(self) -> None:
        """Check every plugin key and cross-key constraint; raise one ConfigError listing all."""
        problems = validate_params(self, RUN_PARAMS) + (self._dataset_problems() or self._time_field_problems())
        problems = problems or check_eval_mask(self)
        sampler = self.final_config_dict["sampler"]
        if not is_active(sampler):
            self.final_config_dict["sampler"] = "none"
            if not problems and self["train_layout"] == "sequence":
                problems = check_layout(self, {"model": self.model}) + self._time_ordered()
                if self["loss_type"] != "CE":
                    problems.append(f"loss_type = {self['loss_type']!r}: with sampler none, train_layout = "
                                    "'sequence' trains RecBole's CE at every position; set loss_type CE")
            if problems:
                raise ConfigError(problems)
            return
        cls = sampler_class(sampler)
        self.final_config_dict["sampler"] = cls.name
        problems += self._typos()
        try:
            backbone_for(self.model)
        except ConfigError as error:
            problems += error.problems
        problems += cls.validate(self)
        if not problems:
            problems = check_layout(self, {"model": self.model, **cls.co_trained_models(self)}) + self._time_ordered()
        if problems:
            raise ConfigError(problems)

    def _dataset_problems(self) -> list[str]:
        """A dataset that is neither on disk nor one RecBole can download (its url list)."""
        path, name = self["data_path"], self["dataset"]
        parts = [f"{name}.{part}.inter" for part in self["benchmark_filename"] or []] or [f"{name}.inter"]
        if all(os.path.isfile(os.path.join(path, part)) for part in parts):
            return []
        if self["dataset_save_path"] and os.path.isfile(self["dataset_save_path"]):
            return []  # RecBole loads the saved dataset instead
        if not os.path.exists(path):
            with open(os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", "url.yaml")) as f:
                if name in yaml.safe_load(f):
                    return []  # RecBole downloads it
            return [f"dataset = {name!r}: no folder {path} (data_path + dataset) and not a dataset RecBole "
                    "downloads; put RecBole atomic files there (<dataset>.inter, ...) or set data_path "
                    "(ml-100k ships with RecBole)"]
        return [f"dataset = {name!r}: {path} has no {' or '.join(parts)} (RecBole's atomic interaction files)"]

    def _time_field_problems(self) -> list[str]:
        """RecBole orders a sequential model's interactions by TIME_FIELD, so `load_col` must
        load it (RecBole's default for any dataset but ml-100k loads user and item only).
        Pre-split files (`benchmark_filename`) and a saved dataset are not re-ordered."""
        time_field, load_col = self["TIME_FIELD"], self["load_col"]
        if (self["MODEL_TYPE"] != ModelType.SEQUENTIAL or time_field is None or not isinstance(load_col, dict)
                or self["benchmark_filename"]
                or (self["dataset_save_path"] and os.path.isfile(self["dataset_save_path"]))):
            return []
        inter = load_col.get("inter") or []
        if inter == "*" or time_field in inter:
            return []
        wanted = ", ".join([*inter, time_field] if inter else [self["USER_ID_FIELD"], self["ITEM_ID_FIELD"], time_field])
        return [f"load_col = {load_col!r}: sequential models need TIME_FIELD {time_field!r} loaded (RecBole orders "
                f"each user's interactions by it); add it: load_col: {{inter: [{wanted}]}}"]

    def _time_ordered(self) -> list[str]:
        """The samplers and the sequence layout read each user's training rows in time order."""
        order = self["eval_args"].get("order")
        if order == "TO":
            return []
        return [f"eval_args order = {order!r}: the negative samplers and train_layout read each user's training "
                "rows in time order; set eval_args order TO (RecBole's default for sequential models)"]

    def _typos(self) -> list[str]:
        """User keys with a plugin prefix that no sampler knows, with the closest known key."""
        known, prefixes = known_keys(), key_prefixes()
        problems = []
        for key in sorted(self.external_config_dict):
            if not key.startswith(prefixes) or key in known or key in RECBOLE_LEGACY_KEYS:
                continue
            if key in self.internal_config_dict:  # a RecBole or model key
                continue
            problems.append(closest_key_problem(key, known, "a recbole-mdcns key"))
        return problems
