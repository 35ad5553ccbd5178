"""RecBole's Config plus the plugin's keys: sampler defaults and their validation.

Priority, lowest first: RecBole's own defaults, the plugin's shared sampler defaults
(`properties/sampler.yaml`), the chosen sampler's defaults (`properties/<name>.yaml`),
then the user's yaml files, config dict and `--key=value` command line, as in RecBole.
"""
from __future__ import annotations

import os

from recbole.config import Config as RecBoleConfig

from recbole_mdcns import compat
from recbole_mdcns.params import ConfigError, Param
from recbole_mdcns.samplers import sampler_class, sampler_names
from recbole_mdcns.scoring import backbone_for

DEFAULT_SAMPLER = "MDCNS"
PROPERTIES = os.path.join(os.path.dirname(os.path.realpath(__file__)), "properties")


def is_active(sampler) -> bool:
    """Whether a `sampler` value asks the plugin to train (anything but none)."""
    return sampler is not None and str(sampler).lower() != "none"


class Config(RecBoleConfig):
    """`recbole.config.Config` that knows the `sampler` key and the keys of each sampler."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        compat.apply()
        super().__init__(model, dataset, config_file_list, config_dict)
        self._validate()

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        sampler = self.external_config_dict.get("sampler", DEFAULT_SAMPLER)
        self.internal_config_dict["sampler"] = DEFAULT_SAMPLER
        if is_active(sampler):
            self._update_internal_config_dict(os.path.join(PROPERTIES, "sampler.yaml"))
            own = os.path.join(PROPERTIES, f"{str(sampler).lower()}.yaml")
            if os.path.isfile(own):
                self._update_internal_config_dict(own)

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

    def _validate(self) -> None:
        """Check every plugin key and cross-key constraint; raise one ConfigError listing all."""
        sampler = self.final_config_dict["sampler"]
        if not is_active(sampler):
            self.final_config_dict["sampler"] = "none"
            return
        try:
            cls = sampler_class(sampler)
        except ConfigError as error:
            raise ConfigError(error.problems) from None
        self.final_config_dict["sampler"] = cls.name
        problems = []
        try:
            backbone_for(self.model)
        except ConfigError as error:
            problems += error.problems
        problems += self._coerce(cls.all_params())
        if not problems:
            problems += cls.check_config(self)
        if problems:
            raise ConfigError(problems)

    def _coerce(self, params: tuple[Param, ...]) -> list[str]:
        problems = []
        for param in params:
            if param.key not in self.final_config_dict:
                problems.append(f"{param.key} is missing: must be {param.allowed()}")
                continue
            value, problem = param.coerce(self.final_config_dict[param.key])
            if problem:
                problems.append(problem)
            self.final_config_dict[param.key] = value
        return problems
