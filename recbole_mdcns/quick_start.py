"""Entry points with RecBole's signatures and return dicts."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from logging import getLogger
from typing import Any, Optional

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_environment, get_model, init_logger, init_seed, set_color

from recbole_mdcns import checkpoint
from recbole_mdcns.config import DEFAULT_SAMPLER, Config, is_active
from recbole_mdcns.history import LaterItems
from recbole_mdcns.params import ConfigError
from recbole_mdcns.samplers import NegativeSampler, sampler_class
from recbole_mdcns.scoring import backbone_for
from recbole_mdcns.trainer import SampledTrainer


def build_sampler(config: Config, dataset: Any) -> Optional[NegativeSampler]:
    """The configured sampler for a training dataset (None for `sampler: none`)."""
    if not is_active(config["sampler"]):
        return None
    return sampler_class(config["sampler"])(config, dataset)


def build_trainer(config: Any, model: Any, dataset: Any, sampler: Optional[str] = None, **keys: Any) -> SampledTrainer:
    """A trainer for a RecBole Config, model and training dataset built by your own code:
    `sampler` (default: the config's `sampler` key, else MDCNS) with `keys` over its
    defaults. Use it as RecBole's Trainer."""
    name = sampler or config["sampler"] or DEFAULT_SAMPLER
    if not is_active(name):
        return SampledTrainer(config, model, train_dataset=dataset)
    backbone_for(type(model).__name__)
    return SampledTrainer(config, model, sampler_class(name).build(config, dataset, **keys), dataset)


def _report_to_ray(test_result: dict[str, Any]) -> None:
    """Report to Ray Tune when the trial runs inside a Ray session. The plugin never
    imports ray itself: only a process that already did can be running under Ray."""
    if "ray" not in sys.modules:
        return
    from ray.air import session
    from ray.air._internal.session import _get_session  # ray<=2.6.3, as RecBole pins

    if _get_session() is not None:
        session.report(dict(test_result))


FILTER_KEYS = ("rm_dup_inter", "val_interval", "filter_inter_by_user_or_item", "user_inter_num_interval", "item_inter_num_interval")


def _load_data(config: Config):
    """RecBole's dataset and split, with a ConfigError where they leave nothing to train on."""
    try:
        dataset = create_dataset(config)
    except ValueError as error:
        if "is empty" not in str(error):
            raise
        filters = ", ".join(f"{key} = {config[key]!r}" for key in FILTER_KEYS if config[key] is not None)
        raise ConfigError([f"dataset {config['dataset']!r} is empty after RecBole's filtering ({filters}); loosen the filters"]) from None
    train_data, valid_data, test_data = data_preparation(config, dataset)
    splits = {"training": train_data, "validation": valid_data, "test": test_data}
    empty = [name for name, data in splits.items() if len(data._dataset) == 0]
    if empty:
        raise ConfigError(
            [f"dataset {config['dataset']!r} has no {' or '.join(empty)} rows after the split "
             f"{config['eval_args']['split']}: with leave-one-out a user needs 3 or more interactions "
             "(a training target, a validation one and a test one)"]
        )
    return dataset, train_data, valid_data, test_data


@dataclass
class Experiment:
    """Everything one run needs, built from a Config: `build_experiment(config)`."""

    config: Config
    dataset: Any  # the filtered dataset
    train_data: Any  # RecBole's training loader (`trainer.layout_rows(train_data)`: the rows an epoch steps through)
    valid_data: Any
    test_data: Any
    model: Any  # self: the model trained, evaluated and saved
    sampler: Optional[NegativeSampler]  # None for sampler: none
    trainer: SampledTrainer


def build_experiment(config: Config) -> Experiment:
    """config -> data -> model -> sampler -> trainer, as `run_recbole_mdcns` builds them
    (seeded as RecBole seeds them; the sampler's dataset checks run before the trainer
    exists, so a bad value writes nothing)."""
    dataset, train_data, valid_data, test_data = _load_data(config)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = _build_model(config, train_data)
    sampler = build_sampler(config, train_data._dataset)
    if sampler is not None:
        sampler.watch_false_negatives(LaterItems(config, dataset))
    trainer = SampledTrainer(config, model, sampler, train_data._dataset)
    return Experiment(config, dataset, train_data, valid_data, test_data, model, sampler, trainer)


class RecordedRunConfig(Config):
    """The Config of a recorded run: its own keys, never this process's command line."""

    def _load_cmd_line(self) -> dict[str, Any]:
        return {}


def _build_model(config: Config, train_data: Any) -> Any:
    """The configured RecBole model on its device, built on the training split."""
    return get_model(config["model"])(config, train_data._dataset).to(config["device"])


def _fit_and_test(run: Experiment, saved: bool, verbose: bool = True) -> dict[str, Any]:
    """Train, then test the best model (the last one when not `saved`): RecBole's result keys."""
    show = verbose and run.config["show_progress"]
    best_valid_score, best_valid_result = run.trainer.fit(
        run.train_data, run.valid_data, verbose=verbose, saved=saved, show_progress=show
    )
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": run.config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": run.trainer.evaluate(run.test_data, load_best_model=saved, show_progress=show),
    }


def load_data_and_model(model_file: str) -> tuple[Config, Any, Any, Any, Any, Any]:
    """`recbole.quick_start.load_data_and_model` for a checkpoint the plugin wrote (the
    best model or a resume state): (config, model, dataset, train_data, valid_data,
    test_data), the config rebuilt from the run's own keys, the model with its saved
    weights. The file is read with `torch.load(weights_only=True)`."""
    state = checkpoint.load(model_file, "cpu")
    if "run" not in state:
        raise ValueError(f"{model_file} was written by an older recbole-mdcns that did not record the run's keys")
    config = RecordedRunConfig(model=state["run"]["model"], dataset=state["run"]["dataset"],
                               config_dict=state["run"]["config_dict"])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset, train_data, valid_data, test_data = _load_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = _build_model(config, train_data)
    model.load_state_dict(state["state_dict"])
    model.load_other_parameter(state.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


def run_recbole_mdcns(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[list[str]] = None,
    config_dict: Optional[dict[str, Any]] = None,
    saved: bool = True,
    resume: Optional[str] = None,
    queue: Any = None,
) -> dict[str, Any]:
    """Train and test one model with the configured sampler, as `recbole.quick_start.run_recbole`.

    `resume`: a training state (`*-resume.pth`) to continue exactly, or a best-model checkpoint.
    `queue`: where rank 0 of a multi-process run puts its result.
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    run = build_experiment(config)
    logger.info(run.dataset)
    logger.info(run.model)
    if resume:
        run.trainer.resume_checkpoint(resume)
    result = {"sampler": config["sampler"], **_fit_and_test(run, saved)}

    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {result['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {result['test_result']}")
    if not config["single_spec"]:
        torch.distributed.destroy_process_group()
        if config["local_rank"] == 0 and queue is not None:
            queue.put(result)
    return result


def run(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[list[str]] = None,
    config_dict: Optional[dict[str, Any]] = None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
    resume: Optional[str] = None,
) -> Optional[dict[str, Any]]:
    """`run_recbole_mdcns` in `nproc` processes with torch.distributed, as `recbole.quick_start.run`
    (gloo on CPU, nccl on CUDA by default; `dist_backend` picks). Returns rank 0's result."""
    if nproc == 1 and world_size <= 0:
        return run_recbole_mdcns(model, dataset, config_file_list, config_dict, saved, resume)
    context = torch.multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    config_dict = {
        **(config_dict or {}),
        "world_size": nproc if world_size == -1 else world_size, "ip": ip, "port": port,
        "nproc": nproc, "offset": group_offset,
    }
    torch.multiprocessing.spawn(
        _run_rank, args=(model, dataset, config_file_list, config_dict, saved, resume, queue), nprocs=nproc, join=True
    )
    return None if queue.empty() else queue.get()


def _run_rank(rank: int, model, dataset, config_file_list, config_dict, saved, resume, queue) -> None:
    run_recbole_mdcns(model, dataset, config_file_list, {**config_dict, "local_rank": rank}, saved, resume, queue)


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
    run = build_experiment(config)
    result = {"model": config["model"], **_fit_and_test(run, saved, verbose=False)}
    _report_to_ray(result["test_result"])
    return result
