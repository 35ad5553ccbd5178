"""What the benchmark scripts share: the machine record, JSONL reading, a tensor-size probe."""
from __future__ import annotations

import json
import os
import platform
from typing import Any, Callable

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


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every JSON line of `path` ([] when it does not exist)."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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


def write_markdown(out: str, name: str, render: Callable[[str], str]) -> str:
    """Write `<out>/<name>.md` rendered from `<out>/<name>.jsonl`; return its path."""
    path = os.path.join(out, f"{name}.md")
    with open(path, "w") as f:
        f.write(render(os.path.join(out, f"{name}.jsonl")))
    return path
