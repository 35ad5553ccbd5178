"""Entry points with RecBole's signatures and return dicts."""
from __future__ import annotations

import sys
from logging import getLogger
from typing import Any, Optional

from recbole.data import create_dataset, data_preparation
from recbole.utils import get_environment, get_model, init_logger, init_seed, set_color

from recbole_mdcns.config import Config, is_active
from recbole_mdcns.samplers import NegativeSampler, sampler_class
from recbole_mdcns.trainer import SampledTrainer


def build_sampler(config: Config, dataset: Any) -> Optional[NegativeSampler]:
    """The configured sampler for a training dataset (None for `sampler: none`)."""
    if not is_active(config["sampler"]):
        return None
    return sampler_class(config["sampler"])(config, dataset)


def _prepare(config: Config):
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    sampler = build_sampler(config, train_data._dataset)  # dataset checks, before any training
    trainer = SampledTrainer(config, model, sampler)
    return dataset, model, trainer, (train_data, valid_data, test_data)


def run_recbole_mdcns(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[list[str]] = None,
    config_dict: Optional[dict[str, Any]] = None,
    saved: bool = True,
) -> dict[str, Any]:
    """Train and test one model with the configured sampler, as `recbole.quick_start.run_recbole`."""
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    dataset, model, trainer, (train_data, valid_data, test_data) = _prepare(config)
    logger.info(dataset)
    logger.info(model)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }


def objective_function(
    config_dict: Optional[dict[str, Any]] = None,
    config_file_list: Optional[list[str]] = None,
    saved: bool = True,
) -> dict[str, Any]:
    """The objective for `recbole.trainer.HyperTuning`, as `recbole.quick_start.objective_function`."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:  # each trial starts with fresh handlers, as in RecBole
        logger.removeHandler(handler)
    init_logger(config)
    _, _, trainer, (train_data, valid_data, test_data) = _prepare(config)
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, verbose=False, saved=saved)
    test_result = trainer.evaluate(test_data, load_best_model=saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
