"""recbole-mdcns: better training negatives for RecBole's sequential recommenders."""
try:
    import recbole  # noqa: F401
except ModuleNotFoundError:  # pip skips it on Python 3.12+: RecBole 1.2.1's ray pin has no wheels there
    raise ModuleNotFoundError("recbole is not installed: run `pip install --no-deps recbole==1.2.1` "
                              "(on Python 3.12+ pip cannot resolve its ray requirement, which the plugin never uses)") from None

from recbole_mdcns import compat  # noqa: E402

compat.apply()

from recbole_mdcns.config import Config, resolve_config_file  # noqa: E402
from recbole_mdcns.params import ConfigError  # noqa: E402
from recbole_mdcns.quick_start import (  # noqa: E402
    Experiment, build_experiment, build_sampler, build_trainer, load_data_and_model, objective_function, run_recbole_mdcns,
)
from recbole_mdcns.samplers import NegativeSampler, register, sampler_class, sampler_names  # noqa: E402
from recbole_mdcns.trainer import SampledTrainer  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "Config", "ConfigError", "resolve_config_file", "SampledTrainer", "NegativeSampler", "register", "sampler_class",
    "sampler_names", "build_sampler", "build_trainer", "build_experiment", "Experiment", "load_data_and_model",
    "run_recbole_mdcns", "objective_function",
]
