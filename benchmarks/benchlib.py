"""What the benchmark scripts share: the machine record, JSONL reading and appending, atomic
writes, mean ± std, re-running a script in a fresh process, a tensor-size probe."""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def machine() -> dict[str, Any]:
    """What a measurement was taken on."""
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"arch": platform.machine(), "cpu_model": cpu_model or platform.processor(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def describe(m: dict[str, Any]) -> str:
    """One line naming a `machine()` record."""
    gpu = f", {m['cuda']}" if m.get("cuda") else ""
    cpu = m.get("cpu_model") or m.get("processor") or m.get("arch")
    return f"{cpu} ({m.get('arch')}), {m.get('cpu_count')} logical CPUs{gpu}, torch {m.get('torch')}"


def timestamp() -> str:
    """The local time of a measurement, as its JSON line records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every JSON line of `path` ([] when it does not exist)."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_jsonl(path: str, row: dict[str, Any]) -> None:
    """Append `row` as one JSON line, locked against other processes appending to `path`."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(row) + "\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file, so that a kill never leaves half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_markdown(out: str, name: str, render: Callable[[str], str]) -> str:
    """Write `<out>/<name>.md` rendered from `<out>/<name>.jsonl`; return its path."""
    path = os.path.join(out, f"{name}.md")
    write_atomic(path, render(os.path.join(out, f"{name}.jsonl")))
    return path


def mean_std(values: list[float]) -> str:
    """`mean ± std` to four decimals (std 0 for one value); `–` for none."""
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def fresh_command(script: str, *args: str) -> list[str]:
    """The command that runs `script` with `args` in a fresh Python process."""
    return [sys.executable, os.path.abspath(script), *args]


def run_fresh(script: str, *args: str) -> None:
    """Run `script` with `args` in a fresh Python process; raise if it fails."""
    subprocess.run(fresh_command(script, *args), check=True)


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def epoch_timer_parser(doc: str, name: str, repeats: int, out: str) -> argparse.ArgumentParser:
    """The options shared by the epoch-timing scripts (`speed.py`, `layout_cost.py`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=repeats, help=f"epochs timed per variant (default {repeats})")
    parser.add_argument("--only", type=str, default=None, help="comma-separated variant names")
    parser.add_argument("--out", type=str, default=out)
    parser.add_argument("--render-only", action="store_true", help=f"only regenerate {name}.md")
    parser.add_argument("--in-process", action="store_true", help="measure in this process (used per variant)")
    return parser


def selected_variants(parser: argparse.ArgumentParser, only: str | None, names: Iterable[str]) -> list[str]:
    """The variants `--only` names (default: every one), or the parser's one-line error
    naming the unknown ones and the known."""
    names = list(names)
    chosen = only.split(",") if only else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(names)}")
    return chosen


def machine_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """A table's closing `Machine: ...` lines, one per machine its rows ran on."""
    lines: list[str] = []
    for described in sorted({describe(row["machine"]) for row in rows}):
        lines += ["", f"Machine: {described}"]
    return lines
