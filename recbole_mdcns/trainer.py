"""The one Trainer subclass: RecBole's fit loop, with every model that trains in one step.

RecBole's fit loop, evaluation, early stopping, logging, tensorboard and progress bars
stay RecBole's. Overridden: the training epoch, whose step trains self and the models
the sampler co-trains (MDCNS's peer) together: one encoder pass each, the sampler's
loss, one backward, then for each model AMP unscaling, clipping and its optimiser's
step; the epoch's log line (the sampler's diagnostics beside the loss); and the
checkpoints, which hold every trained model and its optimiser.

Two checkpoint files, both plain and weights_only-loadable: RecBole's best model
(`saved_model_file`, written when validation improves) and the training state
(`resume_file`, written at the start of every epoch, when everything the epoch
depends on is settled: weights, optimiser, sampler state, early-stopping state and
every random generator). Resuming from the latter continues the run exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from recbole.data.dataset import Dataset
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.trainer.trainer import AbstractTrainer
from recbole.utils import get_gpu_usage, set_color
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils.clip_grad import clip_grad_norm_
from tqdm import tqdm

from recbole_mdcns import checkpoint
from recbole_mdcns.config import run_summary, startup_notes
from recbole_mdcns.evaluation import HistoryMask
from recbole_mdcns.history import add_target_index, is_longest_prefix, longest_prefix_dataset
from recbole_mdcns.layout import check_layout
from recbole_mdcns.losses import full_softmax_loss
from recbole_mdcns.parallel import DISTRIBUTED_KEYS, arm_gradient_sync, distributed
from recbole_mdcns.params import ConfigError
from recbole_mdcns.samplers.base import CoTrained, NegativeSampler
from recbole_mdcns.scoring import encode_batch

SELF = "self"  # the name of the model the user asked for among the trained models


@dataclass
class TrainedModel:
    """A model the trainer steps: self, or one a sampler co-trains."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    clip_grad_norm: Optional[dict[str, Any]]
    wrapper: Optional[DistributedDataParallel]  # DDP, in a multi-process run


class _DeviceAwareDistributed(AbstractTrainer):
    """RecBole's AbstractTrainer set-up, with a DDP wrapper that also works on CPU.

    RecBole's builds DistributedDataParallel(model, device_ids=[local_rank]), which only
    CUDA modules accept. Placed between Trainer and AbstractTrainer in SampledTrainer's
    MRO, this __init__ is what Trainer.__init__'s super() call runs.
    """

    def __init__(self, config: Any, model: torch.nn.Module):
        self.config = config
        self.model = model
        if not config["single_spec"]:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.distributed_model = distributed(self.model, config)


class SampledTrainer(Trainer, _DeviceAwareDistributed):
    """RecBole's Trainer, training `model` with `sampler`'s negatives.

    With `sampler=None` it is RecBole's Trainer with the model's own loss (the
    reference runs), still writing the plugin's checkpoint format.
    """

    def __init__(self, config: Any, model: Any, sampler: Optional[NegativeSampler] = None,
                 train_dataset: Optional[Dataset] = None):
        """`train_dataset`: the training split, needed with `eval_mask` (the users' earlier items)."""
        super().__init__(config, model)
        masked = (config["eval_mask"] or "none") != "none"  # a RecBole Config has no eval_mask
        if masked and train_dataset is None:
            raise ValueError(f"eval_mask = {config['eval_mask']!r} needs the training dataset: "
                             "SampledTrainer(config, model, sampler, train_dataset)")
        self.history_mask = HistoryMask(config, train_dataset) if masked else None
        self.layout: str = config["train_layout"] or "prefix"  # a RecBole Config has no train_layout
        self.sampler = sampler
        co_trained = sampler.co_trained if sampler is not None else {}
        problems = check_layout(config, {"model": type(model).__name__, **{
            f"co-trained {name}": type(co.model).__name__ for name, co in co_trained.items()}})
        if problems:
            raise ConfigError(problems)
        self._layout_loader: Optional[tuple[Any, Any]] = None  # (a training loader, the layout's rows of it)
        if train_dataset is not None and self._reads_target_index():
            add_target_index(config, train_dataset)  # batches of it then carry their target index
        self.diagnostics: dict[str, float] = {}
        self._saving = False  # fit(saved=...)
        self._pending_rng: Optional[dict[str, Any]] = None  # restored at the next epoch's start
        self.saved_model_file = checkpoint.unique_path(self.saved_model_file)
        if not config["single_spec"]:  # rank 0 writes; every rank reads rank 0's files
            names = [self.saved_model_file]
            torch.distributed.broadcast_object_list(names, src=0)
            self.saved_model_file = names[0]
        self._log_startup(co_trained)
        # RecBole enables the scaler on CUDA only; torch's GradScaler also runs on CPU. One
        # scaler for the whole run (its scale adapts across steps), checkpointed with the rest.
        self.enable_scaler = bool(config["enable_scaler"])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.enable_scaler)
        self.co_trained: dict[str, TrainedModel] = {name: self._trained_model(co) for name, co in co_trained.items()}

    def _log_startup(self, co_trained: dict[str, CoTrained]) -> None:
        """The start-up lines: what trains, then the notes on the user's keys."""
        trained = [type(self.model).__name__] + [f"its {name} {type(co.model).__name__}" for name, co in co_trained.items()]
        config = self.sampler.config if self.sampler is not None else self.config
        notes = startup_notes(config) if self.sampler is not None else []
        for note in [run_summary(config, trained), *notes]:
            self.logger.info(set_color("recbole-mdcns", "blue") + f": {note}")

    def _trained_model(self, co: CoTrained) -> TrainedModel:
        """A co-trained model with its own optimiser (from its config) and, under DDP, its wrapper."""
        optimizer = self._build_optimizer(params=co.model.parameters(), learner=co.config["learner"],
                                          learning_rate=co.config["learning_rate"],
                                          weight_decay=co.config["weight_decay"])
        wrapper = None if self.config["single_spec"] else distributed(co.model, self.config)
        return TrainedModel(co.model, optimizer, co.config["clip_grad_norm"], wrapper)

    @property
    def trained(self) -> dict[str, TrainedModel]:
        """Every model this trainer steps, by name: self first, then the sampler's co-trained ones."""
        own = TrainedModel(self.model, self.optimizer, self.clip_grad_norm, getattr(self, "distributed_model", None))
        return {SELF: own, **self.co_trained}

    def train_step(self, interaction: Interaction, loss_func: Optional[Callable] = None) -> Union[float, tuple[float, ...]]:
        """One optimisation step of every trained model on one batch; returns the loss
        (or its parts) as numbers. `loss_func` replaces the model's own loss when there is
        no sampler (RecBole's `_train_epoch` argument)."""
        if loss_func is not None and self.sampler is not None:
            raise ValueError("loss_func: the loss is the sampler's while a sampler trains")
        scaler, trained = self.scaler, self.trained
        for part in trained.values():
            part.optimizer.zero_grad()
        sync_loss = sum(arm_gradient_sync(part.model, part.wrapper) for part in trained.values() if part.wrapper is not None)
        with torch.autocast(device_type=self.device.type, enabled=self.enable_amp):
            if self.sampler is None:
                losses = (loss_func or self._own_loss)(interaction)
            else:
                encoded = {name: encode_batch(part.model, interaction, self.layout) for name, part in trained.items()}
                losses = self.sampler.loss(encoded.pop(SELF), encoded)
        loss = sum(losses) if isinstance(losses, tuple) else losses
        self._check_nan(loss)
        scaler.scale(loss + sync_loss).backward()
        for part in trained.values():
            if part.clip_grad_norm:
                scaler.unscale_(part.optimizer)
                clip_grad_norm_(part.model.parameters(), **part.clip_grad_norm)
            scaler.step(part.optimizer)
        scaler.update()
        return tuple(p.item() for p in losses) if isinstance(losses, tuple) else losses.item()

    def _own_loss(self, interaction: Interaction) -> torch.Tensor:
        """The loss without a sampler: the model's own, or under train_layout: sequence
        RecBole's CE at every position."""
        if self.layout == "prefix":
            return self.model.calculate_loss(interaction)
        batch = encode_batch(self.model, interaction, self.layout)
        return full_softmax_loss(batch.seq_emb, batch.item_table, batch.pos_items)

    def fit(self, train_data: Any, valid_data: Any = None, verbose: bool = True, saved: bool = True,
            show_progress: bool = False, callback_fn: Optional[Callable] = None) -> tuple[float, dict]:
        self._saving = saved
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def layout_rows(self, train_data: Any) -> Any:
        """The loader an epoch steps through for RecBole's training loader `train_data`:
        its prefix rows with their target index (which the samplers' exclusion reads), or
        under train_layout: sequence a loader of each user's longest prefix (built once).
        Everything else (the evaluation's item counts, ...) keeps reading `train_data`."""
        if not self._reads_target_index():
            return train_data
        if self._layout_loader is not None and self._layout_loader[0] is train_data:
            return self._layout_loader[1]
        add_target_index(self.config, train_data._dataset)
        rows = train_data
        if self.layout == "sequence" and not is_longest_prefix(train_data._dataset):
            longest = longest_prefix_dataset(self.config, train_data._dataset)
            rows = type(train_data)(self.config, longest, train_data._sampler, shuffle=train_data.shuffle)
        self._layout_loader = (train_data, rows)
        return rows

    def _reads_target_index(self) -> bool:
        return self.sampler is not None or self.layout == "sequence"

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        train_data = self.layout_rows(train_data)
        generator = getattr(train_data, "generator", None)
        if self._pending_rng is not None:
            checkpoint.set_rng_state(self._pending_rng, generator)
            self._pending_rng = None
        if self._saving:
            self._save_training_state(epoch_idx, generator)
        for part in self.trained.values():
            part.model.train()
        if not self.config["single_spec"] and train_data.shuffle:
            train_data.sampler.set_epoch(epoch_idx)
        batches = tqdm(train_data, total=len(train_data), ncols=100,
                       desc=set_color(f"Train {epoch_idx:>5}", "pink")) if show_progress else train_data
        total = None
        for interaction in batches:
            losses = self.train_step(interaction.to(self.device), loss_func)
            total = losses if total is None else (
                tuple(map(sum, zip(total, losses))) if isinstance(losses, tuple) else total + losses)
            if self.gpu_available and show_progress:
                batches.set_postfix_str(set_color("GPU RAM: " + get_gpu_usage(self.device), "yellow"))
        if self.sampler is not None:
            self.sampler.on_epoch_end(epoch_idx)
            self.diagnostics = self.sampler.pop_diagnostics()
        return total

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self.history_mask is not None:
            self.history_mask.apply(interaction, scores, positive_u, positive_i)
        return interaction, scores, positive_u, positive_i

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        line = super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        if not self.diagnostics:
            return line
        extra = ", ".join(set_color(k, "blue") + f": {v:.4f}" for k, v in self.diagnostics.items())
        return line[:-1] + ", " + extra + "]"

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)
        for name, value in self.diagnostics.items():
            self.tensorboard.add_scalar(f"Sampler/{name}", value, epoch_idx)

    # ----- checkpoints -------------------------------------------------------------
    @property
    def resume_file(self) -> str:
        """The training state written at the start of each epoch (`--resume` takes it)."""
        return os.path.splitext(self.saved_model_file)[0] + "-resume.pth"

    def _is_writer(self) -> bool:
        return self.config["single_spec"] or self.config["local_rank"] == 0

    def _state(self, last_epoch: int) -> dict[str, Any]:
        return {
            "config": self.config.final_config_dict,
            "run": {"model": self.config["model"], "dataset": self.config["dataset"],
                    "config_dict": {k: v for k, v in self.config.external_config_dict.items()
                                    if k not in DISTRIBUTED_KEYS}},
            "epoch": last_epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            # self stays where RecBole keeps it (state_dict, optimizer); the others by name
            "co_trained": {name: {"state_dict": part.model.state_dict(), "optimizer": part.optimizer.state_dict()}
                           for name, part in self.co_trained.items()},
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict() if self.sampler is not None else {},
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self._is_writer():
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        checkpoint.save(self._state(epoch), path)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def _save_training_state(self, epoch_idx: int, loader_generator: Any) -> None:
        if not self._is_writer():
            return
        state = self._state(epoch_idx - 1)
        state.update(rng=checkpoint.rng_state(loader_generator), best_model_file=self.saved_model_file)
        first = not os.path.exists(self.resume_file)
        checkpoint.save(state, self.resume_file)
        if first:
            self.logger.info(set_color("Training state (for --resume)", "blue") + f": {self.resume_file}")

    def _load_model(self, path: str) -> dict[str, Any]:
        state = checkpoint.load(path, self.device)
        self.model.load_state_dict(state["state_dict"])
        self.model.load_other_parameter(state.get("other_parameter"))
        return state

    def resume_checkpoint(self, resume_file: Union[str, os.PathLike]) -> None:
        """Continue from a training state (exactly) or from a best-model checkpoint (RecBole's way)."""
        state = self._load_model(str(resume_file))
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state.get("best_valid_result")
        self.optimizer.load_state_dict(state["optimizer"])
        saved_models = state.get("co_trained", {})
        if set(saved_models) != set(self.co_trained):
            raise ValueError(f"{resume_file} holds the co-trained models {sorted(saved_models) or 'none'}, this run "
                             f"trains {sorted(self.co_trained) or 'none'}: resume it with the sampler that wrote it")
        for name, saved in saved_models.items():
            self.co_trained[name].model.load_state_dict(saved["state_dict"])
            self.co_trained[name].optimizer.load_state_dict(saved["optimizer"])
        if state.get("scaler"):  # empty when the scaler was off
            self.scaler.load_state_dict(state["scaler"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        if "rng" in state:
            self._pending_rng = state["rng"]
            self.saved_model_file = state["best_model_file"]
        else:
            self.saved_model_file = str(resume_file)
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data: Any, load_best_model: bool = True, model_file: Optional[str] = None,
                 show_progress: bool = False) -> Optional[dict]:
        if load_best_model and eval_data:
            if not self.config["single_spec"]:
                torch.distributed.barrier()  # rank 0 has finished writing
            path = model_file or self.saved_model_file
            self._load_model(path)
            self.logger.info(f"Loading model structure and parameters from {path}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
