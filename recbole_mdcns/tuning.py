"""RecBole's HyperTuning with the plugin's objective, its first-trial quirk fixed, and a
check of a params file before any trial."""
from __future__ import annotations

import ast
from typing import Any, Optional

from recbole.trainer import HyperTuning as RecBoleHyperTuning

from recbole_mdcns.config import Config
from recbole_mdcns.params import ConfigError
from recbole_mdcns.quick_start import objective_function
from recbole_mdcns.samplers import SAMPLERS
from recbole_mdcns.samplers.base import other_samplers_keys


def read_space(params_file: str) -> dict[str, tuple[str, str]]:
    """A params file's lines as RecBole reads them: name -> (kind, values)."""
    with open(params_file, encoding="utf-8") as f:
        words = [line.strip().split(" ") for line in f]
    return {w[0]: (w[1], "".join(w[2:])) for w in words if len(w) >= 3}


def space_problems(params_file: str, fixed_config_files: Optional[list[str]] = None) -> list[str]:
    """What makes a space's trials fail or not differ, before any trial trains: the fixed
    config with the space's first choices (the command line's keys too) is invalid; the
    command line's --sampler overrides a tuned `sampler` with another; a space that does not tune
    `sampler` tunes a key its sampler does not read."""
    space = read_space(params_file)
    choices = {}
    for name, (kind, values) in space.items():
        if kind == "choice":
            try:
                choices[name] = list(ast.literal_eval(values))
            except (ValueError, SyntaxError, TypeError):
                choices[name] = []
            if not choices[name]:
                return [f"--params_file={params_file}: {name} choice {values} is not a list of values"]
    config = Config(config_dict={name: values[0] for name, values in choices.items()},
                    config_file_list=fixed_config_files)
    if "sampler" in space:
        tuned = {str(name).lower() for name in choices.get("sampler", [])}
        if "sampler" in config.cmd_config_dict and tuned != {str(config.cmd_config_dict["sampler"]).lower()}:
            return [f"sampler is tuned by {params_file}, but --sampler={config.cmd_config_dict['sampler']} on the "
                    "command line sets it in every trial; drop one of them"]
        return []
    sampler = config["sampler"]
    problems = []
    for key, owners in other_samplers_keys(sampler, space).items():
        readers = "every sampler" if len(owners) == len(SAMPLERS) else f"only {', '.join(owners)}"
        problems.append(f"{key} is tuned, but sampler {sampler} does not read it ({readers}): trials that differ "
                        f"only in it are the same; tune it with a sampler that reads it (--sampler=NAME, or a line "
                        f"`sampler choice ['NAME']` in {params_file})")
    return problems


class HyperTuning(RecBoleHyperTuning):
    """`recbole.trainer.HyperTuning` whose best trial is the best of all trials.

    RecBole's `trial` tests `if not self.best_score`, so a best score of 0.0 counts as
    unset and the next trial replaces it even when worse. After each trial the best is
    recomputed here from every result (the first of equal scores wins).
    """

    def __init__(self, objective=objective_function, **kwargs: Any):
        try:
            super().__init__(objective, **kwargs)
        except (ValueError, SyntaxError, NameError) as error:  # RecBole's reading of the params file
            raise ConfigError([f"--params_file={kwargs.get('params_file')}: {error}"]) from None
        self._params_of: dict[str, dict[str, Any]] = {}

    def trial(self, params: dict[str, Any]) -> dict[str, Any]:
        outcome = super().trial(params)
        self._params_of[self.params2str(params)] = params
        results = self.params2result
        bigger = next(iter(results.values()))["valid_score_bigger"]
        sign = 1 if bigger else -1
        best = max(results, key=lambda name: sign * results[name]["best_valid_score"])
        self.best_score = results[best]["best_valid_score"]
        self.best_params = self._params_of[best]
        return outcome

    def best_result(self) -> dict[str, Any]:
        """The objective's result dict of the best trial."""
        return self.params2result[self.params2str(self.best_params)]
