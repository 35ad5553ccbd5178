"""recbole-mdcns: better training negatives for RecBole's sequential recommenders."""
from recbole_mdcns import compat

compat.apply()

from recbole_mdcns.config import Config  # noqa: E402
from recbole_mdcns.params import ConfigError  # noqa: E402
from recbole_mdcns.quick_start import (  # noqa: E402
    Experiment, build_experiment, build_sampler, build_trainer, load_data_and_model, objective_function, run_recbole_mdcns,
)
from recbole_mdcns.samplers import NegativeSampler, register, sampler_class, sampler_names  # noqa: E402
from recbole_mdcns.trainer import SampledTrainer  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "Config", "ConfigError", "SampledTrainer", "NegativeSampler", "register", "sampler_class",
    "sampler_names", "build_sampler", "build_trainer", "build_experiment", "Experiment", "load_data_and_model",
    "run_recbole_mdcns", "objective_function",
]
