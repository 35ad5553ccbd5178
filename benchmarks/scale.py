"""Cost per training batch against catalogue size: N = 10^4, 10^5, 10^6 items.

    python benchmarks/scale.py                     # every sampler at every N
    python benchmarks/scale.py --sizes 10000 --samplers DNS,GenNi
    python benchmarks/scale.py --render-only       # rewrite scale.md and scale.png

A synthetic dataset per N (`generate`): USERS users whose sequence lengths are
5 + geometric (mean 10, at most 50), items drawn with power-law popularity
(p_i ~ 1 / i^ZIPF), and an `.item` file listing all N ids so that RecBole's catalogue
is N whatever the interactions. SASRec (hidden 64, 1 layer, length 20), batch 1024.

Each (sampler, N) runs in a fresh process: one warm-up step, then STEPS training
steps (encode, sample, loss, backward, optimiser step; MDCNS's peer included), and
reports the median seconds, the peak resident memory of a step above the memory
before it (the kernel's high-water mark, reset through /proc/self/clear_refs), and
the largest tensor any operation of a step created (a TorchDispatchMode records
every output), as a multiple of B*N: 1.0 or more means a [B, N] tensor. GenNi at
rho = 1 scores the whole catalogue by request, in row chunks within genni_memory_mb.
`CE` is RecBole's full softmax (`sampler: none`), beside uniform with K = 256 negatives and
sampled softmax, per row and shared by the batch, and the two configurations that came
nearest to CE on Beauty, both excluding only the target: 4,096 uniform negatives shared by
the batch, and DNS's ten of its top 20 of 100 with 4,096 mixed uniform ones. A measurement
that runs out of memory (torch's error, or the process killed) is recorded as that, not as
a crash of the script; so is a start-up refusal of a documented cap (GNNO's `gnno_graph_mb`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from benchmarks.benchlib import (  # noqa: E402
    LargestTensor, append_jsonl, describe, machine, read_jsonl, run_fresh, timestamp, write_markdown)

SIZES = (10_000, 100_000, 1_000_000)
USERS, ZIPF, BATCH, STEPS = 20_000, 1.1, 1024, 5
SAMPLERS: dict[str, dict[str, Any]] = {
    "uniform": {"sampler": "uniform"},
    "popularity": {"sampler": "popularity"},
    "DNS": {"sampler": "DNS"},
    "GenNi_rho1": {"sampler": "GenNi", "genni_item_ratio": 1.0, "genni_memory_mb": 256},
    "GenNi_rho0.01": {"sampler": "GenNi", "genni_item_ratio": 0.01},
    "DivNS": {"sampler": "DivNS"},
    "MDCNS": {"sampler": "MDCNS", "mdcns_peer_config": {"embedding_size": 64, "hidden_size": 64, "num_layers": 1}},
    "MixGCF": {"sampler": "MixGCF"},
    "AHNS": {"sampler": "AHNS"},
    "SRNS": {"sampler": "SRNS"},
    "AdaSIR": {"sampler": "AdaSIR"},
    "GNNO": {"sampler": "GNNO"},
    "uniform_k256_ssm": {"sampler": "uniform", "neg_num": 256, "neg_loss": "SSM", "neg_logq": True},
    "uniform_k256_ssm_shared": {"sampler": "uniform", "neg_num": 256, "neg_loss": "SSM", "neg_logq": True,
                                "neg_shared": True},
    # the configurations nearest to CE on Beauty (benchmarks/negatives.yaml)
    "uniform_k4096_ssm_shared_target": {"sampler": "uniform", "neg_num": 4096, "neg_loss": "SSM", "neg_logq": True,
                                        "neg_shared": True, "neg_exclude": "target"},
    "DNS_k10_ssm_mix4096_target": {"sampler": "DNS", "neg_num": 10, "dns_top_m": 20, "neg_loss": "SSM",
                                   "neg_mix_num": 4096, "neg_exclude": "target"},
    "CE": {"sampler": "none", "loss_type": "CE"},
}
CONFIG = {
    "hidden_size": 64, "inner_size": 128, "n_layers": 1, "n_heads": 2, "MAX_ITEM_LIST_LENGTH": 20,
    "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "train_batch_size": BATCH, "show_progress": False,
    "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]}, "state": "ERROR",
}


def generate(root: str, n_items: int, seed: int = 0) -> str:
    """Write the synthetic dataset `synthetic_<N>` under root (once); return its name."""
    name = f"synthetic_{n_items}"
    folder = os.path.join(root, name)
    if os.path.isfile(os.path.join(folder, f"{name}.inter")):
        return name
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths = np.minimum(5 + rng.geometric(1 / 10, USERS), 50)
    weights = 1.0 / np.arange(1, n_items + 1) ** ZIPF
    items = rng.choice(n_items, size=int(lengths.sum()), p=weights / weights.sum()) + 1
    users = np.repeat(np.arange(1, USERS + 1), lengths)
    stamps = np.concatenate([np.arange(n) for n in lengths])
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for u, i, t in zip(users, items, stamps))
    with open(os.path.join(folder, f"{name}.item"), "w") as f:
        f.write("item_id:token\n")
        f.writelines(f"{i}\n" for i in range(1, n_items + 1))
    return name


def _resident_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def held_mb(sampler: Any) -> float:
    """MB of the tensors a sampler holds between steps (exclusion sets, per-row state,
    GNNO's graph), found through the attributes of the plugin's own objects; each storage once."""
    import torch

    storages, todo, seen = {}, [sampler], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storages[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
        elif isinstance(obj, dict):
            todo += list(obj.values())
        elif isinstance(obj, (list, tuple)):
            todo += list(obj)
        elif type(obj).__module__.startswith("recbole_mdcns") and hasattr(obj, "__dict__"):
            todo += list(vars(obj).values())
    return sum(storages.values()) / 2**20


def measure(sampler: str, n_items: int, data_root: str) -> dict[str, Any]:
    """Time, peak memory and largest tensor of one training step (this process)."""
    from recbole_mdcns.config import Config
    from recbole_mdcns import ConfigError, build_experiment

    dataset = generate(data_root, n_items)
    data_root = os.path.abspath(data_root)
    with tempfile.TemporaryDirectory() as checkpoints:
        os.chdir(checkpoints)  # RecBole's log_tensorboard/ goes there, not into the repository
        config = Config("SASRec", dataset, config_dict={**CONFIG, **SAMPLERS[sampler], "data_path": data_root,
                                                        "checkpoint_dir": checkpoints})
        try:
            run = build_experiment(config)
        except ConfigError as error:  # a documented cap (GNNO's gnno_graph_mb): its message is the result
            return {"sampler": sampler, "n_items": n_items, "batch": BATCH, "refused": error.problems[0],
                    "machine": machine(), "timestamp": timestamp()}
        trainer, train_data = run.trainer, run.train_data
        batches = iter(train_data)
        for part in trainer.trained.values():  # the model and any co-trained one (MDCNS's peer)
            part.model.train()

        def step() -> None:  # as the trainer's epoch steps one batch: every trained model
            trainer.train_step(next(batches).to(trainer.device))

        seconds, peaks, largest = [], [], 0
        try:
            step()  # warm-up: allocator, optimiser state
            for _ in range(STEPS):
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the peak resident size (VmHWM)
                before = _resident_kb("VmRSS:")
                tracker = LargestTensor()
                start = time.perf_counter()
                with tracker:
                    step()
                seconds.append(time.perf_counter() - start)
                peaks.append((_resident_kb("VmHWM:") - before) / 1024)
                largest = max(largest, tracker.largest)
        except RuntimeError as error:  # torch's "not enough memory" / "DefaultCPUAllocator: can't allocate"
            if "memory" not in str(error).lower() and "allocate" not in str(error).lower():
                raise
            return out_of_memory(sampler, n_items, str(error).splitlines()[0])
    return {
        "sampler": sampler, "n_items": n_items, "batch": BATCH, "seconds": seconds,
        "median_seconds": statistics.median(seconds), "peak_mb": max(peaks),
        "largest_tensor": largest, "largest_over_BN": largest / (BATCH * n_items),
        "held_mb": held_mb(run.sampler) if run.sampler is not None else 0.0,
        "machine": machine(),
        "timestamp": timestamp(),
    }


def out_of_memory(sampler: str, n_items: int, why: str) -> dict[str, Any]:
    """The row of a measurement that did not fit in this machine's memory."""
    return {"sampler": sampler, "n_items": n_items, "batch": BATCH, "out_of_memory": why,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "machine": machine(), "timestamp": timestamp()}


def render(jsonl: str) -> str:
    """Markdown table of the latest line of each (sampler, N)."""
    latest = {(r["sampler"], r["n_items"]): r for r in read_jsonl(jsonl)}
    sizes = sorted({n for _, n in latest})
    lines = [
        "# Cost per training batch against catalogue size (SASRec, batch 1024, CPU)",
        "",
        "Median seconds of a training step; peak MB above the memory before the step; the largest",
        "tensor a step created, as a multiple of B*N (>= 1 would be a [B, N] tensor); the MB of",
        "tensors the sampler holds between steps (exclusion sets, per-row state, GNNO's graph;",
        "measured since the stateful samplers came, – before).",
        "",
        "| sampler | " + " | ".join(f"N={n:,} s / MB / max÷BN / held MB" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for sampler in SAMPLERS:
        cells = []
        for n in sizes:
            r = latest.get((sampler, n))
            if r is None:
                cells.append("–")
            elif "out_of_memory" in r:
                cells.append(f"out of memory ({r['memory_gb']:.0f} GB)")
            elif "refused" in r:
                cells.append("refused at start-up (cap)")
            else:
                held = f"{r['held_mb']:.0f}" if "held_mb" in r else "–"
                cells.append(f"{r['median_seconds']:.3f} / {r['peak_mb']:.0f} / {r['largest_over_BN']:.3f} / {held}")
        if any(c != "–" for c in cells):
            lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    refused = [f"Refused: {s} at N={n:,}: {r['refused']}" for (s, n), r in latest.items() if "refused" in r]
    lines += ["", *refused] if refused else []
    machines = {describe(r["machine"]) for r in latest.values()}
    lines += ["", "Machine: " + "; ".join(sorted(machines))] if machines else []
    return "\n".join(lines) + "\n"


def plot(jsonl: str, png: str) -> bool:
    """Seconds and peak memory per batch against N, one line per sampler; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latest = {(r["sampler"], r["n_items"]): r for r in read_jsonl(jsonl)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for sampler in SAMPLERS:
        points = sorted((n, r) for (s, n), r in latest.items()
                        if s == sampler and "out_of_memory" not in r and "refused" not in r)
        if points:
            axes[0].plot([n for n, _ in points], [r["median_seconds"] for _, r in points], marker="o", label=sampler)
            axes[1].plot([n for n, _ in points], [r["peak_mb"] for _, r in points], marker="o", label=sampler)
    for ax, label in zip(axes, ("seconds per batch", "peak MB per batch")):
        ax.set_xscale("log")
        ax.set_xlabel("items N")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110, metadata={"Software": None})
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=str, default=",".join(map(str, SIZES)), help="comma-separated N")
    parser.add_argument("--samplers", type=str, default=",".join(SAMPLERS), help="comma-separated samplers")
    parser.add_argument("--out", type=str, default=os.path.join(REPO_ROOT, "benchmarks", "results"))
    parser.add_argument("--data", type=str, default=os.path.join(REPO_ROOT, "benchmarks", "data"))
    parser.add_argument("--skip-done", action="store_true", help="skip (sampler, N) already measured")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)  # "sampler:N", one measurement
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from sys.argv
    args.out, args.data = os.path.abspath(args.out), os.path.abspath(args.data)  # a measurement changes folder
    jsonl = os.path.join(args.out, "scale.jsonl")
    os.makedirs(args.out, exist_ok=True)

    if args.child:
        sampler, n = args.child.rsplit(":", 1)
        row = measure(sampler, int(n), args.data)
        append_jsonl(jsonl, row)
        if "median_seconds" in row:
            print(f"{sampler} N={int(n):,}: {row['median_seconds']:.3f} s, {row['peak_mb']:.0f} MB, "
                  f"largest {row['largest_over_BN']:.3f} x BN", flush=True)
        else:
            print(f"{sampler} N={int(n):,}: {row.get('refused') or row['out_of_memory']}", flush=True)
        return
    if not args.render_only:
        done = {(r["sampler"], r["n_items"]) for r in read_jsonl(jsonl)} if args.skip_done else set()
        for n in map(int, args.sizes.split(",")):
            for sampler in args.samplers.split(","):
                if (sampler, n) in done:
                    continue
                try:
                    run_fresh(__file__, "--child", f"{sampler}:{n}", "--out", args.out, "--data", args.data)
                except subprocess.CalledProcessError as error:  # killed by the kernel's out-of-memory killer
                    if error.returncode not in (-9, 137):
                        raise
                    append_jsonl(jsonl, out_of_memory(sampler, n, "the process was killed (SIGKILL)"))
    path = write_markdown(args.out, "scale", render)
    plot(jsonl, os.path.join(args.out, "scale.png"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
