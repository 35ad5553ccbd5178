"""The README's first run, timed: the command under its "First run" heading, run as printed.

    python benchmarks/first_run.py                  # run it, append to first_run.jsonl
    python benchmarks/first_run.py --render-only    # rewrite first_run.md from first_run.jsonl

The command runs in a fresh process from an empty temporary folder (its log/, saved/ and
log_tensorboard/ land there), with the machine's default torch threads. Each run appends one
JSON line (the command, its wall seconds, the JSON line it printed, the Python and the
machine) to `<out>/first_run.jsonl`; `<out>/first_run.md` tables the latest run of each
Python version (run the script with each version's interpreter).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from benchmarks.benchlib import append_jsonl, describe, machine, read_jsonl, timestamp, write_markdown  # noqa: E402

SCRIPT = "run_recbole_mdcns.py"


def readme_command() -> list[str]:
    """The first `python run_recbole_mdcns.py ...` line under the README's "First run" heading."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        section = f.read().split("\n## First run")[1].split("\n## ")[0]
    line = next(line.strip() for line in section.splitlines() if line.strip().startswith(f"python {SCRIPT}"))
    return shlex.split(line)


def run() -> dict[str, Any]:
    command = readme_command()
    argv = [sys.executable, os.path.join(REPO_ROOT, SCRIPT), *command[2:]]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        out = subprocess.run(argv, cwd=folder, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
    return {"command": " ".join(command), "seconds": round(seconds, 1), "result": json.loads(out.stdout),
            "python": platform.python_version(), "machine": machine(),
            "torch_threads": __import__("torch").get_num_threads(), "time": timestamp()}


def render(path: str) -> str:
    latest = {row.get("python", "3.11.7"): row for row in read_jsonl(path)}  # lines before the field ran 3.11.7
    rows = [latest[version] for version in sorted(latest)]
    metrics = list(rows[0]["result"]["runs"][0]["test_result"])
    totals = ", ".join(f"{row['seconds']:.0f} s on Python {version}" for version, row in sorted(latest.items()))
    lines = [
        "# The README's first run",
        "",
        f"`{rows[0]['command']}`, from an empty folder, the machine's default torch threads; written by",
        "`benchmarks/first_run.py` from `first_run.jsonl` (the latest line of each Python). `seconds`:",
        f"each run's wall time, data loading included; the whole command took {totals}.",
        "",
        "| Python | torch | sampler | " + " | ".join(f"test {m}" for m in metrics) + " | seconds |",
        "|---|---|---|" + "---:|" * (len(metrics) + 1),
    ]
    for row in rows:
        for run in row["result"]["runs"]:
            lines.append(f"| {row.get('python', '3.11.7')} | {row['machine']['torch']} | {run['sampler']} | "
                         + " | ".join(f"{run['test_result'][m]:.4f}" for m in metrics) + f" | {run['seconds']:.0f} |")
    return "\n".join(lines + ["", f"Machine: {describe(rows[0]['machine'])}"]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "benchmarks", "results"))
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    if not args.render_only:
        append_jsonl(os.path.join(args.out, "first_run.jsonl"), run())
    print(write_markdown(args.out, "first_run", render))


if __name__ == "__main__":
    main()
