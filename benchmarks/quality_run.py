"""One run of the quality benchmark: train with early stopping, test the best checkpoint with
RecBole's metrics and with each user's earlier items masked, and record its JSON line.

Until its line is written a run keeps its checkpoints and per-epoch record in its folder
under `<out>/unfinished/`, named by its key and the digest of its signature (its effective
config, `quality_plan.signature`): an interrupted run resumes there from the start of its
last epoch (the plugin's exact resume), and a run whose plan changed starts afresh.
"""
from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import statistics
import time
from typing import Any, Optional

import numpy as np
import torch
from scipy.sparse import csr_matrix

from benchmarks.benchlib import append_jsonl, machine, timestamp, write_atomic
from benchmarks.quality_plan import Run, config_dict, differences, digest, plan_keys
from benchmarks.quality_results import JSONL

UNFINISHED = "unfinished"  # <out>/unfinished/<run>/: a run's checkpoints until its line is written
RECORD = "epochs.json"  # a run folder's per-epoch record, for a resumed run's line


def earlier_items(dataset: Any) -> csr_matrix:
    """[users, items]: the items of each user before their last interaction (the test target),
    which the published protocol of these benchmarks removes from the test ranking. After
    RecBole's split, `dataset.inter_feat` holds one row per target (a user's first item is
    never one), so the items are every row's prefix and every target but the user's last."""
    feat = dataset.inter_feat
    users = feat[dataset.uid_field].numpy()
    items = feat[dataset.iid_field].numpy()
    order = np.lexsort((feat[dataset.time_field].numpy(), users))
    not_last = np.zeros(len(users), dtype=bool)
    not_last[order[:-1]] = users[order[1:]] == users[order[:-1]]  # all but each user's last
    prefixes = feat[dataset.iid_field + dataset.config["LIST_SUFFIX"]].numpy()
    prefix_users = np.repeat(users, prefixes.shape[1])
    held = prefixes.reshape(-1) > 0
    rows = np.r_[users[not_last], prefix_users[held]]
    cols = np.r_[items[not_last], prefixes.reshape(-1)[held]]
    matrix = csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(dataset.user_num, dataset.item_num))
    matrix.sum_duplicates()
    return matrix


@torch.no_grad()
def ranking_metrics(model: Any, data: Any, topk: list[int], exclude: Optional[csr_matrix] = None) -> dict[str, float]:
    """Hit@k and NDCG@k of a full-sort evaluation loader, ranking every item but the padding
    id and, with `exclude`, each user's row of it (strictly higher scores rank first)."""
    model.eval()
    uid_field, iid_field = data._dataset.uid_field, data._dataset.iid_field
    sums = {f"{name}@{k}": 0.0 for k in topk for name in ("hit", "ndcg")}
    count = 0
    for interaction, *_ in data:
        interaction = interaction.to(model.device)
        scores = model.full_sort_predict(interaction).view(len(interaction), -1)
        scores[:, 0] = -torch.inf
        if exclude is not None:
            r, c = exclude[interaction[uid_field].cpu().numpy()].nonzero()
            scores[torch.as_tensor(r, device=scores.device), torch.as_tensor(c, device=scores.device)] = -torch.inf
        target = scores.gather(1, interaction[iid_field].unsqueeze(1))
        rank = (scores > target).sum(1)
        for k in topk:
            hit = rank < k
            sums[f"hit@{k}"] += hit.sum().item()
            sums[f"ndcg@{k}"] += (hit / torch.log2(rank + 2.0)).sum().item()
        count += len(interaction)
    return {name: total / count for name, total in sums.items()}


SIGNATURE_FILE = "signature.json"  # in a run's folder: the signature it was started under


def run_folder(run: Run, signature: dict[str, Any], root: str, required: tuple[str, ...] = ()) -> str:
    """Where `run` keeps its checkpoints and per-epoch record until its line is written:
    named by its key and a digest of its signature, so a changed config (a changed default
    included) never resumes an old state. A folder started under an earlier signature is
    taken up when that signature is this one but for keys the code gained since (the rule
    that lines follow, `differences`; `required`: the keys the plan sets)."""
    name = "-".join(str(part) for part in run.key if part != "")
    exact = os.path.join(root, f"{name}-{digest(signature)}")
    if os.path.isdir(exact):
        return exact
    for earlier in sorted(glob.glob(os.path.join(glob.escape(root), f"{glob.escape(name)}-*"))):
        stored = os.path.join(earlier, SIGNATURE_FILE)
        if os.path.exists(stored):
            with open(stored) as f:
                if not differences(signature, json.load(f), required):
                    return earlier
    return exact


def execute(run: Run, base_config: dict[str, Any], data_path: str, folder: str) -> dict[str, Any]:
    """Train, validate and test one run; its JSON line (without machine and timestamp).

    Checkpoints and the per-epoch record live in `folder`: a run interrupted there resumes
    from the training state of its last epoch start (the plugin's exact resume), so a long
    run can be finished over several sessions; `resumed_from` lists where it did."""
    from recbole.utils import init_seed

    from recbole_mdcns import build_experiment
    from recbole_mdcns.checkpoint import plain
    from recbole_mdcns.config import Config

    record_path = os.path.join(folder, RECORD)
    config = Config(model=run.model, dataset=run.dataset,
                    config_dict={**config_dict(run, base_config, data_path), "checkpoint_dir": folder})
    init_seed(config["seed"], config["reproducibility"])
    built = build_experiment(config)
    dataset, trainer, train_data, valid_data, test_data = (
        built.dataset, built.trainer, built.train_data, built.valid_data, built.test_data)

    epochs: list[dict[str, Any]] = []
    resumed_from: list[int] = []
    states = glob.glob(os.path.join(folder, "*-resume.pth"))
    if states:
        trainer.resume_checkpoint(max(states, key=os.path.getmtime))
        record = {"per_epoch": [], "resumed_from": []}  # none yet when killed before epoch 0's validation
        if os.path.exists(record_path):
            with open(record_path) as f:
                record = json.load(f)
        epochs = [e for e in record["per_epoch"] if e["epoch"] < trainer.start_epoch]
        resumed_from = record["resumed_from"] + [trainer.start_epoch]
        print(f"{run.label}: resumed at epoch {trainer.start_epoch}", flush=True)
    train_epoch = trainer._train_epoch

    def timed_train_epoch(data, epoch_idx, *args, **kwargs):
        start = time.perf_counter()
        loss = train_epoch(data, epoch_idx, *args, **kwargs)
        epochs.append({"epoch": epoch_idx, "train_seconds": time.perf_counter() - start,
                       "valid_score": None, "diagnostics": plain(dict(trainer.diagnostics))})
        return loss

    def callback(epoch_idx: int, valid_score: float) -> None:
        if epochs and epochs[-1]["epoch"] == epoch_idx:
            epochs[-1]["valid_score"] = plain(valid_score)
            write_atomic(record_path, json.dumps({"per_epoch": epochs, "resumed_from": resumed_from}))
            print(f"{run.label}: epoch {epoch_idx} trained in {epochs[-1]['train_seconds']:.1f} s, "
                  f"valid {config['valid_metric']} {valid_score:.4f}", flush=True)

    trainer._train_epoch = timed_train_epoch  # times training alone, not validation
    _, best_valid = trainer.fit(train_data, valid_data, saved=True, verbose=False, callback_fn=callback)
    test = trainer.evaluate(test_data, load_best_model=True)
    test_masked = ranking_metrics(trainer.model, test_data, config["topk"], earlier_items(dataset))
    return {
        "dataset": run.dataset, "model": run.model, "sampler": run.sampler, "variant": run.variant,
        "seed": run.seed,
        "best_valid": {k: float(v) for k, v in (best_valid or {}).items()},
        "test": {k: float(v) for k, v in test.items()},
        "test_masked": test_masked,
        "threads": torch.get_num_threads(),
        "epochs_run": len(epochs),
        "seconds_per_epoch": statistics.median(e["train_seconds"] for e in epochs) if epochs else None,
        "resumed_from": resumed_from,
        "per_epoch": epochs,
        "config": plain(dict(config.final_config_dict)),
    }


def run_and_record(run: Run, plan: dict[str, Any], signature: dict[str, Any], data_path: str, out: str,
                   jobs: int = 1) -> Optional[dict[str, Any]]:
    """Train `run` in its folder, append its line to `<out>/quality.jsonl` (with the machine,
    `jobs`: how many runs share it, and the time), then remove the folder; return the line,
    or None when another process holds the folder (that process is training the run)."""
    folder = run_folder(run, signature, os.path.join(os.path.abspath(out), UNFINISHED),
                        tuple(plan_keys(run, plan["base_config"])))
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(os.path.join(folder, SIGNATURE_FILE)):
        write_atomic(os.path.join(folder, SIGNATURE_FILE), json.dumps(signature, sort_keys=True))
    with open(os.path.join(folder, "lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        cwd = os.getcwd()
        os.chdir(folder)  # RecBole's log_tensorboard/ lands in the run's folder, removed with it
        try:
            row = execute(run, plan["base_config"], os.path.join(cwd, data_path), folder)
        finally:
            os.chdir(cwd)
        row.update(machine=machine(), concurrent_runs=jobs, timestamp=timestamp())
        append_jsonl(os.path.join(out, JSONL), row)
        shutil.rmtree(folder)
    return row
