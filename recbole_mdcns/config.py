"""RecBole's Config plus the plugin's keys: sampler defaults and their validation.

Priority, lowest first: RecBole's own defaults, the chosen sampler's declared defaults
(its `Param`s, shared keys included), then the user's yaml files, config dict and
`--key=value` command line, as in RecBole.
"""
from __future__ import annotations

from typing import Any

import torch
from recbole.config import Config as RecBoleConfig

from recbole_mdcns.evaluation import EVAL_PARAMS, check_eval_mask
from recbole_mdcns.layout import LAYOUT_PARAMS, check_layout
from recbole_mdcns.params import ConfigError, validate_params
from recbole_mdcns.samplers import SAMPLERS, sampler_class
from recbole_mdcns.samplers.base import SHARED_PARAMS, closest_key_problem, key_prefixes, known_keys, sampler_names
from recbole_mdcns.scoring import backbone_for

DEFAULT_SAMPLER = "MDCNS"
RECBOLE_LEGACY_KEYS = {"neg_sampling"}  # RecBole's own (deprecated) key with a plugin prefix
RUN_PARAMS = EVAL_PARAMS + LAYOUT_PARAMS  # the keys of every run, with a sampler or without


def is_active(sampler) -> bool:
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


def startup_notes(config: Any) -> list[str]:
    """What a user should know before training starts, one line each: the default sampler
    trains a second model, which set keys go unused."""
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
    if "neg_candidate_num" in user_set and not cls.uses_candidate_pool:
        pools = ", ".join(c.name for c in SAMPLERS.values() if c.uses_candidate_pool)
        notes.append(f"neg_candidate_num = {user_set['neg_candidate_num']} is not used by {cls.name} "
                     f"(only {pools} score a candidate pool)")
    return notes


class Config(RecBoleConfig):
    """`recbole.config.Config` that knows the `sampler` key and the keys of each sampler."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        super().__init__(model, dataset, config_file_list, config_dict)
        self._validate()

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        sampler = self.external_config_dict.get("sampler", DEFAULT_SAMPLER)
        self.internal_config_dict["sampler"] = DEFAULT_SAMPLER
        self.internal_config_dict.update({p.key: p.default for p in RUN_PARAMS})
        if is_active(sampler) and str(sampler).lower() in SAMPLERS:  # an unknown one is reported by _validate
            self.internal_config_dict.update(SAMPLERS[str(sampler).lower()].defaults())

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
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

        RecBole hard-codes the NCCL backend, which needs GPUs. `dist_backend` (default:
        nccl where CUDA is available, gloo otherwise) picks it; gloo runs on CPU.
        """
        final = self.final_config_dict
        backend = final.get("dist_backend") or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend not in ("nccl", "gloo"):
            raise ConfigError([f"dist_backend = {backend!r}: must be one of nccl, gloo"])
        final["dist_backend"] = backend
        gpu_ids = [gpu for gpu in str(final["gpu_id"]).split(",") if gpu.strip()]
        if "local_rank" in final and backend == "nccl" and final["nproc"] > len(gpu_ids):
            raise ConfigError([f"nproc = {final['nproc']} with dist_backend = nccl needs one GPU per process, "
                               f"but gpu_id = {str(final['gpu_id'])!r} names {len(gpu_ids)}: list more GPUs in "
                               "gpu_id, or set dist_backend = gloo to train on CPU"])
        if "local_rank" not in final or backend == "nccl":
            return super()._init_device()
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
        problems = validate_params(self, RUN_PARAMS)
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
        try:
            cls = sampler_class(sampler)
        except ConfigError as error:
            raise ConfigError(error.problems) from None
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
