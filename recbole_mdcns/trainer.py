"""The one Trainer subclass: RecBole's fit loop with the sampler's loss per batch.

RecBole's `_train_epoch` already takes the per-batch loss as an argument, so the fit
loop, evaluation, early stopping, logging, tensorboard and progress bars stay
RecBole's. Overridden: the per-batch loss (through `_train_epoch`'s `loss_func`), the
epoch's log line (the sampler's diagnostics beside the loss) and the checkpoints.

Two checkpoint files, both plain and weights_only-loadable: RecBole's best model
(`saved_model_file`, written when validation improves) and the training state
(`resume_file`, written at the start of every epoch, when everything the epoch
depends on is settled: weights, optimiser, sampler state, early-stopping state and
every random generator). Resuming from the latter continues the run exactly.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.trainer.trainer import AbstractTrainer
from recbole.utils import set_color

from recbole_mdcns import checkpoint
from recbole_mdcns.parallel import distributed
from recbole_mdcns.samplers.base import Loss, NegativeSampler
from recbole_mdcns.scoring import encode_batch


class _DeviceAwareDistributed(AbstractTrainer):
    """RecBole's AbstractTrainer set-up, with a DDP wrapper that also works on CPU.

    RecBole's builds DistributedDataParallel(model, device_ids=[local_rank]), which only
    CUDA modules accept. Placed between Trainer and AbstractTrainer in SampledTrainer's
    MRO, this __init__ is what Trainer.__init__'s super() call runs.
    """

    def __init__(self, config, model):
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

    def __init__(self, config: Any, model: Any, sampler: Optional[NegativeSampler] = None):
        super().__init__(config, model)
        self.sampler = sampler
        self.diagnostics: dict[str, float] = {}
        self._saving = False  # fit(saved=...)
        self._pending_rng: Optional[dict[str, Any]] = None  # restored at the next epoch's start
        if not config["single_spec"]:  # rank 0 writes; every rank reads rank 0's files
            names = [self.saved_model_file]
            torch.distributed.broadcast_object_list(names, src=0)
            self.saved_model_file = names[0]
        if sampler is not None:
            sampler.attach(self)
            self.optimizer.register_step_post_hook(lambda *_: sampler.after_optimizer_step())

    def _sampled_loss(self, interaction: Interaction) -> Loss:
        return self.sampler.loss(encode_batch(self.model, interaction))

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._saving = saved
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        generator = getattr(train_data, "generator", None)
        if self._pending_rng is not None:
            checkpoint.set_rng_state(self._pending_rng, generator)
            self._pending_rng = None
        if self._saving:
            self._save_training_state(epoch_idx, generator)
        if self.sampler is None:
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        loss = super()._train_epoch(train_data, epoch_idx, self._sampled_loss, show_progress)
        self.sampler.on_epoch_end(epoch_idx)
        self.diagnostics = self.sampler.pop_diagnostics()
        return loss

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
                    "config_dict": self.config.external_config_dict},
            "epoch": last_epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
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

    def resume_checkpoint(self, resume_file):
        """Continue from a training state (exactly) or from a best-model checkpoint (RecBole's way)."""
        state = self._load_model(str(resume_file))
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state.get("best_valid_result")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        if "rng" in state:
            self._pending_rng = state["rng"]
            self.saved_model_file = state["best_model_file"]
        else:
            self.saved_model_file = str(resume_file)
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            if not self.config["single_spec"]:
                torch.distributed.barrier()  # rank 0 has finished writing
            path = model_file or self.saved_model_file
            self._load_model(path)
            self.logger.info(f"Loading model structure and parameters from {path}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
