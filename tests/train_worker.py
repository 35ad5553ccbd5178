"""Train in a child process for the kill-and-resume tests.

    python train_worker.py CONFIG_JSON RESULT_JSON [--kill-epoch E] [--resume PATH]

With --kill-epoch, the process SIGKILLs itself on the second batch of epoch E (0-based).
"""
import argparse
import json
import os
import signal
import sys

sys.argv, argv = sys.argv[:1], sys.argv[1:]  # keep RecBole's Config away from these options

from recbole_mdcns import SampledTrainer, run_recbole_mdcns  # noqa: E402


def kill_on(epoch: int) -> None:
    train_epoch, step = SampledTrainer._train_epoch, SampledTrainer.train_step
    seen = {"epoch": -1, "batches": 0}

    def tracking_epoch(self, train_data, epoch_idx, *args, **kwargs):
        seen.update(epoch=epoch_idx, batches=0)
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

    def killing_step(self, *args, **kwargs):
        seen["batches"] += 1
        if seen["epoch"] == epoch and seen["batches"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, *args, **kwargs)

    SampledTrainer._train_epoch, SampledTrainer.train_step = tracking_epoch, killing_step


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("result")
    parser.add_argument("--kill-epoch", type=int, default=None)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)
    if args.kill_epoch is not None:
        kill_on(args.kill_epoch)
    with open(args.config) as f:
        config = json.load(f)
    result = run_recbole_mdcns(model=config.pop("model"), config_dict=config, resume=args.resume)
    with open(args.result, "w") as f:
        json.dump({k: result[k] for k in ("best_valid_score", "best_valid_result", "test_result")}, f, default=float)
