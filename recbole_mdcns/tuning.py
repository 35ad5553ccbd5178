"""RecBole's HyperTuning with the plugin's objective, and its first-trial quirk fixed."""
from __future__ import annotations

from typing import Any

from recbole.trainer import HyperTuning as RecBoleHyperTuning

from recbole_mdcns.quick_start import objective_function


class HyperTuning(RecBoleHyperTuning):
    """`recbole.trainer.HyperTuning` whose best trial is the best of all trials.

    RecBole's `trial` tests `if not self.best_score`, so a best score of 0.0 counts as
    unset and the next trial replaces it even when worse. After each trial the best is
    recomputed here from every result (the first of equal scores wins).
    """

    def __init__(self, objective=objective_function, **kwargs: Any):
        super().__init__(objective, **kwargs)
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
